"""A small progress bar for long CLI work: phase, bytes, rate and ETA on one line of stderr."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from shared.model.units import human_bytes


class Progress:
    """Redraws at most 10 times a second, only on a terminal; `done()` prints a summary line."""

    def __init__(
        self, label: str, total: int | None, *, unit: str = "bytes", stream: TextIO | None = None
    ) -> None:
        self.label, self.total, self.unit = label, total, unit
        self.stream = stream or sys.stderr
        self.count = 0
        self.started = time.monotonic()
        self._drawn = 0.0
        self._tty = self.stream.isatty()

    def _fmt(self, n: float) -> str:
        return human_bytes(n) if self.unit == "bytes" else f"{n:.0f} {self.unit}"

    def __call__(self, n: int) -> None:
        self.count += n
        now = time.monotonic()
        if self._tty and now - self._drawn >= 0.1:
            self._drawn = now
            self.stream.write("\r" + self.line(now) + "\x1b[K")
            self.stream.flush()

    def line(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-6)
        rate = self.count / elapsed
        text = f"{self.label}: {self._fmt(self.count)}"
        if self.total:
            pct = 100 * self.count / self.total
            eta = (self.total - self.count) / rate if rate > 0 else 0
            text += f" of {self._fmt(self.total)} ({pct:.0f}%), ETA {eta:.0f}s"
        return text + f", {self._fmt(rate)}/s"

    def done(self) -> None:
        end = "\r" if self._tty else ""
        self.stream.write(
            end + self.line(time.monotonic()) + ", done" + ("\x1b[K" if self._tty else "") + "\n"
        )
        self.stream.flush()
