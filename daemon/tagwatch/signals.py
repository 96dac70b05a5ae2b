"""The daemon's signals acted on by a thread of their own, never in a signal handler.

A Python signal handler runs in the main thread between two of its steps, wherever it is. One that
set a ``threading.Event`` (SIGTERM's stop) deadlocked where the main thread held that Event's lock in
its own ``wait``: the daemon never stopped, and systemd killed it at ``TimeoutStopSec`` (a fresh-clone
CI run met it, after a SIGCONT woke the main thread just as SIGTERM came).  Here the handlers do
nothing: Python writes each signal's number into a pipe (:func:`signal.set_wakeup_fd`, which takes no
lock), and a thread reading the pipe calls what the signal asks for.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Mapping


def _caught(number: int, frame: object) -> None:
    """A handler that only catches: what the signal asks for is done by :class:`SignalThread`."""


class SignalThread:
    """Each of ``actions``' signals caught, and its action called in the thread ``name``."""

    def __init__(self, actions: Mapping[int, Callable[[], None]], name: str = "tagwatch-signals") -> None:
        self._actions = dict(actions)
        self._name = name
        self._thread: threading.Thread | None = None
        self._fds: tuple[int, int] | None = None
        self._previous_fd = -1

    def start(self) -> None:
        """Catch the signals from now on (the main thread only, as Python requires)."""
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)  # set_wakeup_fd's condition: a full pipe drops, never blocks
        self._fds = read_fd, write_fd
        self._previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        for number in self._actions:
            signal.signal(number, _caught)
        self._thread = threading.Thread(target=self._run, args=(read_fd,), name=self._name, daemon=True)
        self._thread.start()

    def _run(self, read_fd: int) -> None:
        while True:
            try:
                numbers = os.read(read_fd, 64)
            except OSError:  # closed by stop()
                return
            if not numbers:
                return
            for number in numbers:  # the same signal twice in a row: its action twice, as a handler's
                action = self._actions.get(number)
                if action is not None:
                    action()

    def stop(self) -> None:
        """Stop acting on the signals: back to what was there before :meth:`start`, but caught."""
        if self._fds is None:
            return
        signal.set_wakeup_fd(self._previous_fd)
        read_fd, write_fd = self._fds
        self._fds = None
        os.close(write_fd)  # the reader sees the end of the pipe
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        with contextlib.suppress(OSError):
            os.close(read_fd)
