"""How this process uses the machine's cores: how many it may run on (what the decode threads and the
ONNX tower's parts are sized by), and which of its threads give way when they are all busy."""

from __future__ import annotations

import contextlib
import os
import sys
import threading

# How much nicer than the rest of the process the decode threads run.  Decoding is the one stage with
# threads to spare: at equal priority its two threads took the cores from the encoder's child and the
# keyword writer, and a scan of 200 photos ended with those two, which take one batch at a time, behind
# and the cores 1.7 busy of 2 (a 2-core Xeon, docs/speed.md).  10 is what the systemd unit gives the
# whole daemon.
DECODE_NICENESS = 10


def usable() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one: a container's or
    ``taskset``'s share, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def give_way(steps: int = DECODE_NICENESS) -> None:
    """Make the calling thread ``steps`` nicer than it is (at most 19), for good: only a privileged
    process may make a thread less nice again, and threads and processes started from it inherit
    its niceness, so call this only in a thread that starts nothing.  Linux only: there each
    thread has its own niceness; elsewhere the call would name a whole process."""
    if sys.platform != "linux":
        return
    thread = threading.get_native_id()
    with contextlib.suppress(OSError):  # a sandbox that forbids it: the thread runs as it was
        os.setpriority(os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + steps))
