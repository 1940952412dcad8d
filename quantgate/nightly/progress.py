"""Progress of a nightly: a bar in a terminal, one plain line per step in CI logs.

Every step prints one line either way (`[3/30] 12.4s eval w2a16-g32 × toolcall: measured`); in a
terminal a tqdm bar below the lines shows how far the nightly is.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self.total, self.done = total, 0
        self.stream = stream or sys.stdout
        self.start = time.perf_counter()
        self.bar = None
        if self.stream.isatty():
            from tqdm import tqdm

            class Bar(tqdm):
                quantgate_own_bar = True  # the libraries' bars are off unless --verbose; this one is not

            self.bar = Bar(
                total=total, file=self.stream, unit="step", leave=False, dynamic_ncols=True, disable=False
            )

    def step(self, message: str) -> None:
        self.done += 1
        line = f"[{self.done}/{self.total}] {time.perf_counter() - self.start:7.1f}s {message}"
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
            self.bar.update(1)
        else:
            print(line, file=self.stream, flush=True)

    def note(self, message: str) -> None:
        """A line that is not a step (a warning, where something went)."""
        if self.bar is not None:
            self.bar.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
