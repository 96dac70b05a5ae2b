"""SIGKILL of the daemon while it writes a large JPEG: the photo is always whole, old or new.

Each round drops a fresh multi-megabyte photo into the watched folder and kills ``tagwatch run``
either the moment its temporary file appears (exiftool mid-write), a few milliseconds later, or at a
random moment after the drop, then inspects the folder before restarting.  The restart's scan must
remove what the killed writer left and finish the work.
"""

from __future__ import annotations

import random
import sqlite3
import time
from pathlib import Path

import numpy as np
from PIL import Image

from conftest import TAGS, Daemon, exif_keywords, wait_for, write_config
from tagwatch.keys import jpeg_key
from tagwatch.metadata import is_temp_file

ROUNDS = 8


def big_jpeg(path: Path, seed: int) -> bytes:
    """A 3000x2000 photo of fine noise (several MB: exiftool takes a while to copy it)."""
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (2000, 3000, 3), dtype=np.uint8)).save(path, quality=92)
    return path.read_bytes()


def temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if is_temp_file(p.name))


def whole(path: Path, original: bytes, expected: list[str]) -> str:
    """'old' (byte-identical), 'new' (same pixels, every keyword in IPTC and XMP) or why neither."""
    data = path.read_bytes()
    if data == original:
        return "old"
    if jpeg_key(data) != jpeg_key(original):
        return "pixels differ"
    found = exif_keywords(path)
    if sorted(found["iptc"]) == sorted(found["xmp"]) == sorted(expected):
        return "new"
    return f"partial keywords {found}"


def test_sigkill_during_writes_never_leaves_a_partial_photo(tmp_path: Path, tiny_checkpoint: Path) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    staging = tmp_path / "staging"
    staging.mkdir()
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[root], top_k=len(TAGS))
    daemon = Daemon(config, tmp_path / "daemon.log")
    rng = random.Random(20261123)
    originals: dict[Path, bytes] = {}
    seen: list[str] = []
    mid_write = 0
    for i in range(ROUNDS):
        daemon.start()
        staged = staging / f"big{i}.jpg"
        original = big_jpeg(staged, seed=i)
        target = root / staged.name
        staged.rename(target)  # appears whole, as a camera import's final rename does
        originals[target] = original
        if i % 3 == 2:
            time.sleep(rng.uniform(0.0, 1.5))  # anywhere: decode, encode, commit or write
        else:
            wait_for(lambda: temps(root), timeout=30, interval=0.001)
            time.sleep(rng.choice([0.0, rng.uniform(0.0, 0.05)]))
        daemon.kill()
        mid_write += bool(temps(root))  # killed with a temporary file in place
        for path, data in originals.items():
            state = whole(path, data, TAGS)
            assert state in ("old", "new"), (path.name, state)
            seen.append(state)
    daemon.start()
    try:
        for path, data in originals.items():
            wait_for(lambda p=path, d=data: whole(p, d, TAGS) == "new", timeout=60)
        assert temps(root) == []
        assert sorted(p.name for p in root.iterdir()) == sorted(p.name for p in originals)
    finally:
        assert daemon.stop() == 0
    db = sqlite3.connect(tmp_path / "conf" / "state" / "tagwatch.db")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert db.execute("SELECT COUNT(*) FROM files WHERE state = 'done'").fetchone()[0] == ROUNDS
    db.close()
    assert mid_write and "old" in seen  # the kills did land mid-write, before the rename
