"""`python -m quantgate`: the same as the `quantgate` command."""

from quantgate.cli import main

if __name__ == "__main__":
    main()
