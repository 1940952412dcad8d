"""`python -m quantgate`: the same as the `quantgate` command, exit status included."""

import sys

from quantgate.cli import main

if __name__ == "__main__":
    sys.exit(main())
