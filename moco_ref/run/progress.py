"""A one-line progress display for long work, on stderr.

On a terminal the line is redrawn in place; elsewhere (CI, a log file) a line
is printed per call (callers show progress every few steps, not every step).
"""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, label: str, stream=None, enabled: bool = True):
        self.total, self.label, self.enabled = total, label, enabled
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.count, self.start = 0, time.perf_counter()

    def show(self, count: int, **fields) -> None:
        """Shows ``count`` of ``total`` done, with ``fields`` (e.g. loss=...) after the bar."""
        self.count = count
        if not self.enabled:
            return
        width = 24
        done = int(width * self.count / max(self.total, 1))
        bar = "#" * done + "-" * (width - done)
        text = " ".join(f"{k} {v}" for k, v in fields.items())
        line = f"{self.label} [{bar}] {self.count}/{self.total} {text}"
        if self.tty:
            self.stream.write("\r" + line + "\033[K")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start
