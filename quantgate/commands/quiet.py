"""What the terminal shows: quantgate's own lines, not the libraries' progress bars and warnings.

Every command runs quiet unless `--verbose`: tqdm bars (model loading, lm-eval's request loops,
compressed-tensors' "Compressing model"), transformers' and lm-eval's log warnings and Python
warnings raised inside the libraries are off. quantgate's own output (print, the nightly's
progress bar, whose class sets `quantgate_own_bar`) is untouched. Environment variables alone do
not do it: lm-eval passes `disable=False` to its bars explicitly, so every tqdm bar is disabled
where it is made.
"""

from __future__ import annotations

import logging
import os
import warnings

LIBRARIES = ("transformers", "torch", "lm_eval", "compressed_tensors", "datasets", "accelerate", "mlflow", "evaluate")


def quiet_libraries() -> None:
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")  # mlflow sets its loggers' level when imported
    for name in LIBRARIES:
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="|".join(LIBRARIES))
    _disable_library_bars()


def _disable_library_bars() -> None:
    from tqdm import std

    made = std.tqdm.__init__
    if getattr(made, "quantgate_quiet", False):
        return

    def quiet(self, *args, **kwargs) -> None:  # noqa: ANN001, ANN002, ANN003  (tqdm's signature)
        if not getattr(self, "quantgate_own_bar", False):
            kwargs["disable"] = True
        made(self, *args, **kwargs)

    quiet.quantgate_quiet = True
    std.tqdm.__init__ = quiet
