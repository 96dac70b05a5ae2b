"""5,000 photos dropped at once into the running daemon's folder: every one tagged from its events,
and the daemon's memory does not grow with the burst.

Half the photos are written elsewhere and renamed in one after another as fast as the file system
allows (a camera import's final move), the other half are written in place at the same time (a copy
tool writing straight into the folder), so the watcher sees a storm of create, modify, close and move
events while the worker is busy.  The periodic rescan is off: anything the events lost stays untagged.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import TAGS, Daemon, noise_jpeg, status, wait_for, write_config
from procstats import status_mb

N = 5_000
# What the burst may add to the daemon's peak RSS.  The queue holds paths (5,000 short strings with
# their dict and heap entries: ~2 MB) and watchdog's event objects (as many again); the worker holds
# one batch (32 photos read and decoded: under 10 MB with this model).  Decoded images kept for the
# whole burst would take 5,000 x 64 x 64 x 3 float32 = 245 MB, their file bytes ~10 MB per 1,000.
GROWTH_LIMIT_MB = 64


def tagged_in_store(database: Path) -> int:
    db = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        return db.execute("SELECT COUNT(*) FROM files WHERE state = 'done'").fetchone()[0]
    finally:
        db.close()


@pytest.mark.slow
def test_five_thousand_photos_at_once_are_all_tagged_in_bounded_memory(
        tmp_path: Path, tiny_checkpoint: Path) -> None:
    root, staging = tmp_path / "photos", tmp_path / "staging"
    moved, direct = root / "moved", root / "direct"
    for folder in (moved, direct, staging):
        folder.mkdir(parents=True)
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[root], top_k=len(TAGS),
                          extra="[schedule]\nrescan = 0")
    config.write_text(config.read_text(encoding="utf-8").replace("size = 8", "size = 32"), encoding="utf-8")
    database = tmp_path / "conf" / "state" / "tagwatch.db"
    half = N // 2
    for i in range(half):
        noise_jpeg(staging / f"m{i:05d}.jpg", seed=i, size=(64, 48))
    daemon = Daemon(config, tmp_path / "daemon.log").start()
    try:
        assert daemon.proc is not None
        noise_jpeg(root / "first.jpg", seed=N, size=(64, 48))  # the model's first batch, before measuring
        wait_for(lambda: tagged_in_store(database) == 1, timeout=120)
        before = status_mb(daemon.proc.pid)["VmHWM"]  # the peak: all it ever held, not only what it holds now
        mark = len(daemon.log())

        def write_in_place() -> None:
            for i in range(half, N):
                noise_jpeg(direct / f"d{i:05d}.jpg", seed=i, size=(64, 48))

        started = time.monotonic()
        writer = threading.Thread(target=write_in_place)
        writer.start()
        for path in sorted(staging.iterdir()):
            path.rename(moved / path.name)
        writer.join()
        dropped = time.monotonic() - started
        wait_for(lambda: tagged_in_store(database) == N + 1, timeout=600, interval=1)
        took = time.monotonic() - started
        growth = status_mb(daemon.proc.pid)["VmHWM"] - before
        report = status(config)
    finally:
        assert daemon.stop() == 0
    print(f"\n{N} photos dropped in {dropped:.1f} s, all tagged {took:.0f} s after the first "
          f"({N / took:.0f}/s); peak RSS {before:.0f} MB before, +{growth:.1f} MB after")

    assert (report["tagged"], report["failed"], report["pending"]) == (N + 1, 0, 0)
    assert "scan:" not in daemon.log()[mark:]  # the events alone brought every photo
    out = subprocess.run(["exiftool", "-j", "-charset", "iptc=UTF8", "-IPTC:Keywords", "-r", str(root)],
                         check=True, capture_output=True, text=True).stdout
    keywords = {Path(r["SourceFile"]).name: sorted(r.get("Keywords", [])) for r in json.loads(out)}
    assert len(keywords) == N + 1
    assert [name for name, found in keywords.items() if found != sorted(TAGS)] == []
    assert growth < GROWTH_LIMIT_MB
