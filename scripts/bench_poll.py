#!/usr/bin/env python3
"""tagwatch's polling benchmark: what a polled root (``watch = [{path = ..., poll = true}]``, a NAS
share) of N photos costs.  Not a test: it asserts no duration.

    .venv/bin/python scripts/bench_poll.py                    # 200,000 files, both parts
    .venv/bin/python scripts/bench_poll.py --count 20000      # a first look
    .venv/bin/python scripts/bench_poll.py --part snapshot    # (a) alone, in seconds
    git archive 7bccca4 daemon | tar -x -C /tmp/before       # tagwatch before light snapshots ...
    .venv/bin/python scripts/bench_poll.py --before /tmp/before/daemon   # ... run beside it in (b)

The tree: N files in folders of 100 (year/month/day, ~2,000 folders for 200,000), each a copy of one
tiny real JPEG (629 bytes; its own inode, as every photo has: the diff pairs moves by inode), made
once under ``--tree`` and reused.  Polling reads no file, it lstat()s each one, so a 20 MB photo costs
what a 629-byte one does.

(a) snapshot: one snapshot of the tree taken as the daemon's polling observer takes it (lstat, not
    following links), for each snapshot kind: watchdog's ``DirectorySnapshot`` and tagwatch's
    ``LightSnapshot``; wall and CPU seconds (best of ``--repeat``), the Python memory it holds
    (tracemalloc, in a separate run: tracing slows the walk), and the diff of two snapshots of the
    unchanged tree (what every idle poll does).
(b) daemon: ``tagwatch run`` polling the tree every ``--interval``, idle after it settled: its RSS and
    its CPU seconds per minute (the daemon and its children).  So that the daemon does not tag N photos
    first (hours), the files are excluded by name (``exclude = ["IMG_*"]``): the start-up scan passes
    them over, while the polling observer still lstat()s every one of them each poll (watchdog
    snapshots the whole root; the filter applies to its events), which is the cost measured here.  A
    library tagged for real also holds its N records in the database file, not in the daemon's memory.
    The model is the tests' tiny shapes-clip (nothing is downloaded).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "daemon"))

from watchdog.utils.dirsnapshot import DirectorySnapshot, DirectorySnapshotDiff  # noqa: E402

from procstats import descendants, process_cpu_s, status_mb  # noqa: E402
from tagwatch.polling import LightSnapshot, light_diff  # noqa: E402
from tagwatch.precision import cpu_facts  # noqa: E402

PER_FOLDER = 100
# An 8x8 grey baseline JPEG: a real photo file, as small as one gets.
TINY_JPEG_SIZE = (8, 8)
SNAPSHOTS: dict[str, tuple[Callable[..., Any], Callable[..., Any]]] = {
    "watchdog": (lambda root: DirectorySnapshot(root, recursive=True, stat=os.lstat, listdir=os.scandir),
                 DirectorySnapshotDiff),
    "light": (lambda root: LightSnapshot(root), light_diff),
}


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def tiny_jpeg() -> bytes:
    from io import BytesIO

    from PIL import Image

    out = BytesIO()
    Image.new("RGB", TINY_JPEG_SIZE, (128, 128, 128)).save(out, "JPEG", quality=50)
    return out.getvalue()


def ensure_tree(base: Path, count: int) -> Path:
    """``base``/photos-N: N copies of a tiny JPEG in folders of 100, year/month/day; made once."""
    root = base / f"photos-{count}"
    done = base / f".photos-{count}.complete"
    if done.exists():
        return root
    if root.exists():
        shutil.rmtree(root)
    say(f"making {count} files in {root}")
    data = tiny_jpeg()
    for n in range(count):
        folder_index, i = divmod(n, PER_FOLDER)
        year, day_index = divmod(folder_index, 336)
        folder = root / f"{2000 + year}" / f"{day_index // 28 + 1:02d}" / f"{day_index % 28 + 1:02d}"
        if i == 0:
            folder.mkdir(parents=True, exist_ok=True)
        (folder / f"IMG_{n:06d}.jpg").write_bytes(data)
    done.touch()
    return root


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(work: Callable[[], Any]) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), cpu_seconds()
    result = work()
    return result, time.perf_counter() - wall, cpu_seconds() - cpu


def bench_snapshot(root: Path, kind: str, repeat: int) -> dict[str, Any]:
    """(a) for one snapshot kind: the best of ``repeat`` snapshots and diffs, and the memory held."""
    take, diff = SNAPSHOTS[kind]
    walls, cpus, diff_walls, diff_cpus = [], [], [], []
    previous = take(str(root))  # the first walk also warms the kernel's inode cache, as every poll finds it
    entries = len(previous.paths)
    for _ in range(repeat):
        snapshot, wall, cpu = timed(lambda: take(str(root)))
        walls.append(wall)
        cpus.append(cpu)
        changes, wall, cpu = timed(partial(diff, previous, snapshot))
        diff_walls.append(wall)
        diff_cpus.append(cpu)
        if len(changes):
            raise RuntimeError(f"{kind}: the unchanged tree gave {changes!r}")
        previous = snapshot
    del previous, snapshot
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    held = take(str(root))
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del held
    gc.collect()
    return {
        "kind": kind, "entries": entries,
        "snapshot_wall_s": round(min(walls), 3), "snapshot_cpu_s": round(min(cpus), 3),
        "diff_wall_s": round(min(diff_walls), 3), "diff_cpu_s": round(min(diff_cpus), 3),
        "held_mb": round((after - before) / 1e6, 1),
        "bytes_per_entry": round((after - before) / max(entries, 1)),
    }


# -- (b) a real daemon ------------------------------------------------------------------------------

def _tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and every process under it."""
    total = 0.0
    for p in [pid, *descendants(pid)]:
        with contextlib.suppress(OSError):
            total += process_cpu_s(p)
    return total


def bench_daemon(root: Path, snapshot: str, code: Path, interval: float, settle: float,
                 measure: float) -> dict[str, Any]:
    """(b) ``tagwatch run`` (the package in the folder ``code``) polling ``root``: RSS and CPU per
    minute once it has settled."""
    work = Path(tempfile.mkdtemp(prefix="bench-poll-", dir=root.parent))
    try:
        (work / "tags.txt").write_text("circle\nsquare\ntriangle\n", encoding="utf-8")
        data = REPO / "tests" / "data"
        lines = [
            f'watch = [{{path = {json.dumps(str(root))}, poll = true}}]',
            f'poll_interval = "{interval:g}s"',
            'exclude = ["IMG_*"]',
            'tags = "tags.txt"',
            'database = "state/tagwatch.db"',
            "[model]",
            f"name = {json.dumps(str(data / 'shapes-clip.json'))}",
            f"pretrained = {json.dumps(str(data / 'shapes-clip.safetensors'))}",
            "[schedule]",
            "rescan = 0",
        ]
        config = work / "config.toml"
        config.write_text("\n".join(lines) + "\n", encoding="utf-8")
        env = dict(os.environ, PYTHONPATH=str(code))
        log_path = work / "daemon.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "tagwatch", "run", "--config", str(config)],
                                    stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        try:
            deadline = time.monotonic() + 600
            while "tagwatch is running" not in log_path.read_text(errors="replace"):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the daemon did not start:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.5)
            say(f"daemon running ({snapshot} snapshot); settling {settle:g} s")
            time.sleep(settle)
            cpu, wall = _tree_cpu(proc.pid), time.monotonic()
            rss: list[float] = []
            while time.monotonic() - wall < measure:
                time.sleep(1)
                rss.append(status_mb(proc.pid).get("VmRSS", 0.0))
            cpu = _tree_cpu(proc.pid) - cpu
            wall = time.monotonic() - wall
            if proc.poll() is not None:
                raise RuntimeError(f"the daemon ended:\n{log_path.read_text()[-3000:]}")
            return {
                "kind": snapshot, "interval_s": interval, "measured_s": round(wall),
                "rss_mb": round(max(rss), 1), "rss_min_mb": round(min(rss), 1),
                "cpu_s_per_min": round(cpu / wall * 60, 2), "core_percent": round(cpu / wall * 100, 2),
            }
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200_000, help="files in the tree (default 200,000)")
    parser.add_argument("--tree", type=Path, default=Path(tempfile.gettempdir()) / "tagwatch-bench-poll",
                        help="where the tree is made and kept (default: %(default)s)")
    parser.add_argument("--part", choices=("snapshot", "daemon", "both"), default="both")
    parser.add_argument("--kinds", default="watchdog,light", help="snapshot kinds, comma-separated")
    parser.add_argument("--repeat", type=int, default=3, help="snapshots timed per kind (the best is shown)")
    parser.add_argument("--interval", type=float, default=30.0, help="the daemon's poll_interval, seconds")
    parser.add_argument("--settle", type=float, default=90.0, help="seconds between the start and measuring")
    parser.add_argument("--measure", type=float, default=180.0, help="seconds of idle measured")
    parser.add_argument("--before", type=Path, metavar="DIR",
                        help="the daemon/ folder of tagwatch before light snapshots (e.g. from `git archive "
                             "7bccca4 daemon`): (b) runs it as 'watchdog' beside this one")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures here")
    args = parser.parse_args(argv)
    kinds = [k for k in args.kinds.split(",") if k]
    root = ensure_tree(args.tree, args.count)
    facts = {"cpu": cpu_facts()[0], "cores": os.cpu_count(), "python": sys.version.split()[0],
             "files": args.count, "tree": str(root)}
    snapshots = [bench_snapshot(root, kind, args.repeat) for kind in kinds] if args.part != "daemon" else []
    codes = {"light": REPO / "daemon", **({"watchdog": args.before} if args.before else {})}
    daemons = ([bench_daemon(root, kind, codes[kind], args.interval, args.settle, args.measure)
                for kind in kinds if kind in codes] if args.part != "snapshot" else [])
    print(f"{args.count:,} files on {facts['cpu']} ({facts['cores']} cores), Python {facts['python']}")
    if snapshots:
        print(f"\n(a) one snapshot of the tree ({snapshots[0]['entries']:,} entries), best of {args.repeat}")
        print(f"{'snapshot':<10} {'wall s':>8} {'CPU s':>8} {'diff wall s':>12} {'diff CPU s':>11} "
              f"{'held MB':>8} {'B/entry':>8}")
        for row in snapshots:
            print(f"{row['kind']:<10} {row['snapshot_wall_s']:>8} {row['snapshot_cpu_s']:>8} "
                  f"{row['diff_wall_s']:>12} {row['diff_cpu_s']:>11} {row['held_mb']:>8} "
                  f"{row['bytes_per_entry']:>8}")
    if daemons:
        print(f"\n(b) tagwatch run, idle, polling every {args.interval:g} s")
        print(f"{'snapshot':<10} {'RSS MB low-high':>16} {'CPU s/min':>10} {'% of a core':>12} "
              f"{'measured s':>11}")
        for row in daemons:
            rss = f"{row['rss_min_mb']:.0f}-{row['rss_mb']:.0f}"
            print(f"{row['kind']:<10} {rss:>16} {row['cpu_s_per_min']:>10} "
                  f"{row['core_percent']:>12} {row['measured_s']:>11}")
    if args.json:
        args.json.write_text(json.dumps({"machine": facts, "snapshot": snapshots, "daemon": daemons},
                                        indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
