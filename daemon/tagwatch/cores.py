"""How many cores this process may run on: what the decode threads and the ONNX tower's parts are sized by."""

from __future__ import annotations

import os


def usable() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one: a container's or
    ``taskset``'s share, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)
