"""What /proc says of a process and those under it: CPU time, memory, children and descendants.

Shared by the benchmarks (bench.py, bench_poll.py, bench_ray.py) and the tests, and light: no tagwatch,
torch or watchdog import, so a benchmark of a polled root's memory can use it without loading a model's
libraries.
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


def status_kb(pid: int, fields: tuple[str, ...] = ("VmHWM", "VmRSS")) -> dict[str, int]:
    """Fields of one process's /proc status, in kB as the kernel writes them (KiB): VmHWM (peak), VmRSS
    (now), its parts RssAnon, RssFile, RssShmem; empty once it has ended."""
    values: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return values
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name in fields:
            values[name] = int(rest.split()[0])
    return values


def status_mb(pid: int, fields: tuple[str, ...] = ("VmHWM", "VmRSS")) -> dict[str, float]:
    """The same fields in MB; empty once the process has ended."""
    return {name: kb / 1024 for name, kb in status_kb(pid, fields).items()}


def children(pid: int, *, missing_ok: bool = False) -> list[int]:
    """Direct children of ``pid``, from every thread's list (a child belongs to the thread that forked it).

    Raises OSError once ``pid`` has ended (or a thread of it ends during the read), so a wait for its
    children to go does not take a parent that died for a childless one; with ``missing_ok`` those have
    none instead (a walk of a tree that changes while it is read)."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        if missing_ok:
            return []
        raise
    found: list[int] = []
    for task in tasks:
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            if not missing_ok:
                raise
    return found


def descendants(pid: int) -> list[int]:
    """Every process under ``pid`` (the encoder child, exiftool); one that ends during the walk has none."""
    found, todo = [], [pid]
    while todo:
        below = children(todo.pop(), missing_ok=True)
        found += below
        todo += below
    return found
