"""Progress a person can read: a bar with rate and ETA on a terminal, a log line now and then
elsewhere (a service's journal, a file, a pipe), so a long ``scan`` is never silent.

The bar is tqdm's (it is already installed with open_clip); the plain lines are our own, written
through logging so they come out in the log's format (text or JSON, event "progress").
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import IO, Any

log = logging.getLogger("tagwatch")

EVERY_S = 30.0  # seconds between two plain progress lines
UNSIZED = (80, 24)  # columns, rows of the bar on a terminal that reports its size as 0x0


def duration(seconds: float) -> str:
    """``3m07s``, ``2h05m``, ``4d3h``: as precise as a person wants for that length."""
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def eta(remaining: float, per_second: float) -> str:
    """``about 3m07s left``, or what is known when no rate is measured yet."""
    if remaining <= 0:
        return "none left"
    if per_second <= 0:
        return "time left unknown until the first is done"
    return f"about {duration(remaining / per_second)} left"


def write(text: str, file: IO[str] | None = None) -> None:
    """Print a line of output (stdout by default) above any bar on the terminal, not through it."""
    out = file or sys.stdout
    bars = sys.modules.get("tqdm")  # imported with the first bar (0.02 s): without one, a plain line
    if bars is not None:
        bars.tqdm.write(text, file=out)
    else:
        out.write(text + "\n")
    out.flush()


class Progress:
    """Counts work done out of ``total``; draws a bar on a terminal, else logs a line at most every
    ``every`` seconds with the count, the rate and the time left."""

    def __init__(self, total: int | None, what: str, unit: str = "photo", *, stream: IO[str] | None = None,
                 every: float = EVERY_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.what, self.unit, self.every, self.clock = total, what, unit, every, clock
        self.done = 0
        self.started = self.last = clock()
        stream = stream or sys.stderr
        self.bar: Any = None
        self._redirect = contextlib.ExitStack()
        if stream.isatty() and total != 0:
            try:  # ``script``, serial consoles and exec terminals report 0 columns and 0 rows
                size = os.get_terminal_size(stream.fileno())
                sized = size.columns > 0 and size.lines > 0
            except (OSError, ValueError):
                sized = False
            from tqdm import tqdm  # here: it costs every command's start 0.02 s otherwise

            # tqdm takes rows-1 from the terminal and draws nothing at all when that is below 1, so an
            # unsized terminal gets a fixed 80x24 bar (\r redraws, which script and consoles show too)
            self.bar = tqdm(total=total, desc=what, unit=unit, file=stream, dynamic_ncols=sized,
                            ncols=None if sized else UNSIZED[0], nrows=None if sized else UNSIZED[1],
                            mininterval=0.5, smoothing=0.1)
            from tqdm.contrib.logging import logging_redirect_tqdm  # here: it imports asyncio (0.02 s)

            self._redirect.enter_context(logging_redirect_tqdm())  # log lines above the bar, not through it

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def expect(self, total: int | None) -> None:
        """The total, once it is known (None: unknown, so no time left is shown)."""
        self.total = total
        if self.bar is not None:
            self.bar.total = total
            self.bar.refresh()

    def advance(self, count: int = 1) -> None:
        self.done += count
        if self.bar is not None:
            self.bar.update(count)
            return
        now = self.clock()
        if now - self.last >= self.every and (self.total is None or self.done < self.total):
            self.last = now
            log.info("%s", self.line(now), extra={"event": "progress"})

    def line(self, now: float) -> str:
        """``scan: 120/500 photos (24%), 4.1/s, about 1m33s left``"""
        rate = self.done / max(now - self.started, 1e-9)
        if self.total is None:
            return f"{self.what}: {self.done} {self.unit}s, {rate:.1f}/s"
        percent = 100 * self.done // max(self.total, 1)
        return (f"{self.what}: {self.done}/{self.total} {self.unit}s ({percent}%), {rate:.1f}/s, "
                f"{eta(self.total - self.done, rate)}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self._redirect.close()
