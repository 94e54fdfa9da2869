"""A one-line progress display on stderr: counts, rate and time left, never a file name
(paths and URLs can name a person)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

_REDRAW_SECONDS = 0.2  # on a terminal
_LOG_SECONDS = 10.0  # when stderr is a file or a pipe (--progress): one line this often


def _clock(seconds: float) -> str:
    s = int(seconds + 0.5)
    h, rem = divmod(s, 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}" if h else f"{rem // 60}:{rem % 60:02d}"


class Progress:
    """``done/total``, errors, items per second over this run, and the ETA.

    On a terminal the line is redrawn in place; otherwise (``--progress`` into a log) a
    full line is printed every few seconds.
    """

    def __init__(self, total: int, already: int, *, enabled: bool,
                 stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.total, self.done, self.errors = total, already, 0
        self.enabled = enabled
        self.tty = self.stream.isatty()
        self.start = time.monotonic()
        self.processed = 0
        self._last = 0.0
        self._width = 0
        self._draw(self.start)  # at once: loading the models takes a few seconds

    def advance(self, ok: bool) -> None:
        self.done += 1
        self.processed += 1
        self.errors += not ok
        now = time.monotonic()
        if now - self._last >= (_REDRAW_SECONDS if self.tty else _LOG_SECONDS):
            self._draw(now)

    def line(self, now: float | None = None) -> str:
        elapsed = (now or time.monotonic()) - self.start
        rate = self.processed / elapsed if elapsed > 0 else 0.0
        left = self.total - self.done
        eta = _clock(left / rate) if rate > 0 else "?"
        pct = 100.0 * self.done / self.total if self.total else 100.0
        return (f"batch: {self.done}/{self.total} ({pct:.0f}%), {self.errors} error(s), "
                f"{rate:.2f} items/s, elapsed {_clock(elapsed)}, ETA {eta}")

    def _draw(self, now: float) -> None:
        if not self.enabled:
            return
        self._last = now
        text = self.line(now)
        if self.tty:
            self.stream.write("\r" + text.ljust(self._width))
            self._width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        """The final figures, and the cursor back at the start of a line."""
        if not self.enabled:
            return
        self._draw(time.monotonic())
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
