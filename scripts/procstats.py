"""What /proc says of a process and those under it: CPU time, memory, descendants.

Shared by the benchmarks (bench.py, bench_poll.py), and light: no tagwatch, torch or watchdog import,
so a benchmark of a polled root's memory can use it without loading a model's libraries.
"""

from __future__ import annotations

import os
from pathlib import Path


def process_cpu_s(pid: int | None) -> float:
    """CPU seconds used so far by process ``pid`` (0 for none): its utime and stime, its ended
    children not counted."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def status_mb(pid: int) -> dict[str, float]:
    """VmHWM (peak) and VmRSS (now) of one process, MB; empty once it has ended."""
    values = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return values
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmHWM", "VmRSS"):
            values[name] = int(rest.split()[0]) / 1024
    return values


def descendants(pid: int) -> list[int]:
    """Every process under ``pid`` (the encoder child, exiftool), by the kernel's per-thread lists."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = list(Path(f"/proc/{parent}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            found += children
            todo += children
    return found
