"""Progress lines for long work (training, recording, evaluation): done/total, rate, elapsed and
ETA, on one carriage-return line on a terminal, one line per update in a log."""

from __future__ import annotations

import sys
import time
from typing import Callable, TextIO


def duration_text(seconds: float) -> str:
    """12s, 3m05s, 1h02m."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    def __init__(
        self,
        label: str,
        total: int,
        unit: str = "it",
        first: int = 0,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ):
        self.label, self.total, self.unit, self.first = label, total, unit, first
        self._stream, self._clock = stream, clock
        self.start = clock()
        self.last_line = ""

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stderr  # looked up per write: redirections made later apply

    def line(self, done: int, extra: str = "") -> str:
        elapsed = self._clock() - self.start
        rate = (done - self.first) / elapsed if elapsed > 0 else 0.0
        eta = duration_text((self.total - done) / rate) if rate > 0 else "?"
        shown = f"{rate:.2f} {self.unit}/s" if rate >= 0.1 or rate == 0 else f"{1 / rate:.1f} s/{self.unit}"
        parts = [
            f"{self.label} {done}/{self.total}",
            *([extra] if extra else []),
            shown,
            f"elapsed {duration_text(elapsed)}",
            f"ETA {eta}",
        ]
        return " | ".join(parts)

    def update(self, done: int, extra: str = "") -> None:
        self.last_line = self.line(done, extra)
        stream = self.stream
        tty = getattr(stream, "isatty", lambda: False)()
        stream.write(("\r" + self.last_line + "\033[K") if tty else self.last_line + "\n")
        stream.flush()

    def close(self) -> None:
        if getattr(self.stream, "isatty", lambda: False)():
            self.stream.write("\n")
