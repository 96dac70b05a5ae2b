"""Coming back from damage a sysadmin meets (report xQ): a `db rebuild` that lost image vectors, a
model changed in the config, a writer killed with `kill -9` whose temporary file a restart must clean.
Real parts throughout: real databases damaged page by page and rebuilt by the command, real JPEGs,
exiftool reading back, a daemon as a subprocess, a real zombie process."""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import synthetic
from conftest import (
    SHAPES_CHECKPOINT,
    SHAPES_CONFIG,
    Daemon,
    exif_keywords,
    noise_jpeg,
    status,
    tagwatch,
    wait_for,
    write_config,
)
from tagwatch.config import load_config
from tagwatch.metadata import is_stale_temp_file
from tagwatch.web.corrections import apply_now

TAGS = ["red", "green", "blue", "yellow", "purple", "orange",
        "square", "triangle", "star", "circle", "horizontal bar", "vertical bar"]
PHOTOS = 48


def blue_library(folder: Path) -> list[Path]:
    """Blue shapes the test model knows: every photo is given ``blue``, so any of them whose vector a
    rebuild loses is one sync must still take ``blue`` out of."""
    folder.mkdir(parents=True, exist_ok=True)
    photos = []
    for i in range(PHOTOS):
        shape = synthetic.SHAPES[i % len(synthetic.SHAPES)]
        photo = folder / f"blue-{shape.replace(' ', '_')}-{i:03}.jpg"
        synthetic.make_photo("blue", shape, 4400000 + i, (320, 240)).save(photo, quality=90)
        photos.append(photo)
    return photos


def sync_config(folder: Path, library: Path, checkpoint: Path = SHAPES_CHECKPOINT,
                model: Path = SHAPES_CONFIG) -> Path:
    """The report's settings: the shapes model, threshold 0.36, sync mode, no expansion."""
    config = write_config(folder, checkpoint, watch=[library], tags=TAGS, threshold=0.36, top_k=5,
                          model=model)
    text = config.read_text(encoding="utf-8").replace(
        "[tagging]\n", '[tagging]\nmode = "sync"\nexpand = "none"\n')
    config.write_text(text, encoding="utf-8")
    return config


def lose_vectors(database: Path) -> int:
    """The report's damage: the vectors table's last page overwritten with noise, then the real
    `tagwatch db rebuild`; returns how many photos lost their vector."""
    with sqlite3.connect(database) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        before = db.execute("SELECT COUNT(*) FROM image_vectors").fetchone()[0]
        page = db.execute("SELECT max(pageno) FROM dbstat WHERE name = 'image_vectors'").fetchone()[0]
        size = db.execute("PRAGMA page_size").fetchone()[0]
    with database.open("r+b") as handle:
        handle.seek((page - 1) * size)
        handle.write(os.urandom(size))
    rebuilt = tagwatch("db", "rebuild", "--config", str(database.parent.parent / "config.toml"))
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "photos whose vectors were lost are encoded again" in rebuilt.stdout
    with sqlite3.connect(database) as db:
        after = db.execute("SELECT COUNT(*) FROM image_vectors").fetchone()[0]
    assert 0 < before - after < before
    return before - after


def carrying(photos: list[Path], keyword: str) -> list[str]:
    """The photos whose IPTC Keywords or XMP dc:subject hold ``keyword``, as exiftool reads them (one
    exiftool for all of them: two per photo made each poll of 48 photos cost seconds)."""
    command = ["exiftool", "-j", "-q", "-charset", "iptc=UTF8", "-IPTC:Keywords", "-XMP-dc:Subject"]
    out = subprocess.run([*command, *map(str, photos)], capture_output=True, text=True, check=False).stdout
    found = {Path(row["SourceFile"]).name: row for row in json.loads(out or "[]")}

    def values(row: dict[str, object], name: str) -> set[str]:
        value = row.get(name, [])
        return {str(v) for v in (value if isinstance(value, list) else [value])}

    return [p.name for p in photos
            if keyword in values(row := found.get(p.name, {}), "Keywords") | values(row, "Subject")]


def settles(daemon: Daemon, check: Callable[[], object]) -> None:
    """:func:`wait_for`, the daemon's log in the message if it never holds."""
    try:
        wait_for(check)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the daemon's log:\n{daemon.log()[-6000:]}") from None


def test_sync_takes_a_removed_tag_out_of_photos_whose_vectors_a_rebuild_lost(tmp_path: Path) -> None:
    """The report's case: after a rebuild lost some vectors, `blue` taken out of the list.  The
    re-score judged only the photos with a vector and the rest kept tagwatch's `blue` for good; no
    restart or scan encoded them again.  Now the daemon's start queues them (one line says how many)
    and they are encoded and written under the edited list."""
    library = tmp_path / "lib"
    photos = blue_library(library)
    config = sync_config(tmp_path / "conf", library)
    scanned = tagwatch("scan", str(library), "--config", str(config))
    assert scanned.returncode == 0, scanned.stderr
    assert len(carrying(photos, "blue")) == PHOTOS
    lost = lose_vectors(tmp_path / "conf" / "state" / "tagwatch.db")

    tags = tmp_path / "conf" / "tags.txt"
    edited = tmp_path / "conf" / "tags.new"
    edited.write_text("\n".join(t for t in TAGS if t != "blue") + "\n", encoding="utf-8")
    edited.rename(tags)

    daemon = Daemon(config, tmp_path / "daemon.log")
    try:
        daemon.start()
        settles(daemon, lambda: not carrying(photos, "blue"))
        settles(daemon, lambda: status(config)["vectors"] == PHOTOS)
        log = daemon.log()
        assert (f"{lost} photos tagged before have no cached vector of model shapes-clip" in log
                or f"{lost} photo tagged before has no cached vector of model shapes-clip" in log), log
        restart = len(daemon.log())
        assert daemon.stop() == 0
        daemon.start().wait_log("scan: ", since=restart)
        assert "no cached vector" not in daemon.log()[restart:]  # an intact library: nothing to say
    finally:
        daemon.stop()
    assert not carrying(photos, "blue")
    assert all(exif_keywords(p)["iptc"] for p in photos)  # its shape stays


def test_scan_encodes_again_photos_whose_vectors_a_rebuild_lost(tmp_path: Path) -> None:
    """`scan` of the folder after the rebuild said "60 unchanged" and left the vectors lost (the
    rebuild promised they are encoded again): a photo recorded tagged without a vector is not settled."""
    library = tmp_path / "lib"
    blue_library(library)
    config = sync_config(tmp_path / "conf", library)
    assert tagwatch("scan", str(library), "--config", str(config)).returncode == 0
    lose_vectors(tmp_path / "conf" / "state" / "tagwatch.db")
    assert status(config)["vectors"] < PHOTOS
    again = tagwatch("scan", str(library), "--config", str(config))
    assert again.returncode == 0, again.stderr
    assert status(config)["vectors"] == PHOTOS


def test_a_model_changed_in_the_config_encodes_every_tagged_photo_again(
        tmp_path: Path, tiny_checkpoint: Path) -> None:
    """A config that names another model: the start found every photo unchanged and the re-score
    found no vector of the new model, so nothing was ever encoded with it.  The same path as a lost
    vector covers it: the start queues them all, and the next start, on a library now intact, has
    nothing to encode."""
    library = tmp_path / "lib"
    blue_library(library)
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[library], tags=TAGS)
    assert tagwatch("scan", str(library), "--config", str(config)).returncode == 0
    sync_config(tmp_path / "conf", library)  # the same config, now naming the shapes model
    daemon = Daemon(config, tmp_path / "daemon.log")
    try:
        log = daemon.start().log()
        assert f"{PHOTOS} photos tagged before have no cached vector of model shapes-clip" in log, log
        settles(daemon, lambda: status(config)["vectors"] == PHOTOS)
        settles(daemon, lambda: status(config)["encoded"] >= 2 * PHOTOS)
        restart = len(daemon.log())
        assert daemon.stop() == 0
        log = daemon.start().wait_log("scan: ", since=restart)[restart:]
        assert "no cached vector" not in log and f"scan: {PHOTOS} photos, 0 queued" in log, log
    finally:
        daemon.stop()


def state_of(pid: int) -> str:
    """The process's state letter as Linux's /proc shows it (``Z``: a zombie)."""
    return Path(f"/proc/{pid}/stat").read_bytes().rpartition(b")")[2].split()[0].decode()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a zombie is read from /proc here")
def test_a_restart_removes_the_temporary_file_of_a_killed_writer_not_yet_reaped(
        tmp_path: Path, tiny_checkpoint: Path) -> None:
    """`kill -9` of the daemon mid-write and a restart within the second its parent takes to reap it:
    the killed writer was still a zombie, `kill(pid, 0)` answered for it, and the start-up scan kept
    its `.PID-N.tagwatch-tmp` (a hidden full copy of a photo) until the next start.  A real zombie
    here: a child killed and not waited for."""
    library = tmp_path / "lib"
    photo = noise_jpeg(library / "photo.jpg", seed=31)
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        left = library / f".{writer.pid}-64.tagwatch-tmp"
        left.write_bytes(photo.read_bytes())  # what a write killed midway leaves: a copy of the photo
        assert not is_stale_temp_file(left.name)  # its writer runs: perhaps a write in flight
        os.kill(writer.pid, signal.SIGKILL)
        wait_for(lambda: state_of(writer.pid) == "Z")  # killed, and not reaped: this test never waits

        config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[library])
        daemon = Daemon(config, tmp_path / "daemon.log")
        try:
            log = daemon.start().wait_log("scan: ")
        finally:
            daemon.stop()
        assert state_of(writer.pid) == "Z"  # still a zombie all along
        assert not left.exists(), log
        assert f"{left}: removed a temporary file left by an interrupted write" in log
        assert photo.exists() and exif_keywords(photo)["iptc"]
    finally:
        writer.kill()
        writer.wait()


def test_the_review_page_with_no_daemon_does_not_say_photos_were_queued_to_be_encoded(
        tmp_path: Path, tiny_checkpoint: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The review page applies a correction itself when no daemon runs (``apply_now``).  After a model
    change it logged "queued to be encoded and tagged again" and nothing was queued or encoded: it
    says when they will be, and the daemon's start, which does encode them, still says "queued"."""
    library = tmp_path / "lib"
    blue_library(library)
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[library], tags=TAGS)
    assert tagwatch("scan", str(library), "--config", str(config)).returncode == 0
    sync_config(tmp_path / "conf", library)  # the same config, now naming the shapes model
    with caplog.at_level(logging.INFO, logger="tagwatch.pipeline"):
        apply_now(load_config(config))
    said = [r.getMessage() for r in caplog.records if "no cached vector" in r.getMessage()]
    assert len(said) == 1, said
    assert said[0].startswith(f"{PHOTOS} photos tagged before have no cached vector of model shapes-clip")
    assert "queued" not in said[0]
    assert "when the daemon next starts, or by `tagwatch scan` of them" in said[0]
    assert status(config)["vectors"] < PHOTOS  # nothing was encoded: the line is the truth
