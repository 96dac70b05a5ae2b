"""A sidecar that holds tagwatch's keywords deleted (a person starting over, a cleanup script, a sync
tool that dropped it): the photo itself is unchanged, and was counted unchanged for ever, its
keywords never written again, while ``scan --dry-run`` said they were "(already in its sidecar)".
Now its keywords are written again, into a new sidecar, by the running daemon (it hears the
deletion) and by the next scan; keywords a person had put in that sidecar went with it and are not
put back.  Real files, real watchdog, the real CLI and daemon, exiftool reading back.

Every photo here is a copy of one of ``pair()``'s two pictures, whose vectors (and TAGS4's prompts')
one dry run cached (``conftest.config_with_vectors``); each test's database starts as a copy of that
one (``database_copy``), so no scan of theirs encodes anything (a model child importing torch: about
2 CPU-seconds a scan) and no test sees another's rows.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import (
    Daemon,
    config_with_vectors,
    database_copy,
    exif_keywords,
    noise_jpeg,
    wait_for,
    write_config,
)
from tagwatch.writeback import STALE_SAVE_NS
from test_shared_sidecar import TAGS4, cli, noise_png, pair

pytestmark = pytest.mark.xdist_group("sidecar-deleted")  # one worker builds `cached` once

SHARED = '[write]\ntarget = "sidecar"\nsidecar = "photo.xmp"\n'
OWN = '[write]\ntarget = "sidecar"\n'  # photo.jpg.xmp: each photo its own


def in_sidecar(path: Path) -> set[str]:
    """The keywords of a sidecar, as an app that reads it sees them (dc:subject)."""
    return set(exif_keywords(path)["xmp"]) if path.exists() else set()


def add_persons_keyword(side: Path, keyword: str) -> None:
    subprocess.run(["exiftool", "-q", "-overwrite_original", f"-XMP-dc:Subject+={keyword}", str(side)],
                   check=True)


def identity(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns, st.st_ctime_ns


@pytest.fixture(scope="module")
def cached(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> Path:
    """A config whose database holds the vectors of ``pair()``'s pictures (noise_jpeg seed 1,
    noise_png seed 2) and of TAGS4's prompts: each test copies it (``database_copy``)."""
    return config_with_vectors(tmp_path_factory.mktemp("sidecar-deleted"), tiny_checkpoint, fill=pair,
                               tags=TAGS4, top_k=3)


def test_the_daemon_writes_a_deleted_shared_sidecar_again_once_and_no_more(
        tmp_path: Path, tiny_checkpoint: Path, cached: Path,
        daemon_factory: Callable[[Path], Daemon]) -> None:
    """IMG_1.xmp, shared by IMG_1.jpg and IMG_1.png, deleted while the daemon runs: a new one with
    both photos' keywords of tagwatch's appears, without the keyword the person had put in the old
    one; one line says so.  tagwatch's own write of it (exiftool makes it by a rename) is heard by
    the watcher and does not start another; nor does an app saving it by a rename."""
    folder = tmp_path / "photos"
    folder.mkdir()
    jpg, png = noise_jpeg(folder / "IMG_1.jpg", seed=1), noise_png(folder / "IMG_1.png", seed=2)
    side = folder / "IMG_1.xmp"
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[folder], tags=TAGS4, top_k=3,
                          extra=SHARED)
    database_copy(cached, config.parent / "state")
    run = cli(config)
    assert run("scan", str(folder)).returncode == 0
    ours = in_sidecar(side)
    assert ours and ours <= set(TAGS4), ours
    add_persons_keyword(side, "Reise")  # the person's, in the sidecar
    assert "2 unchanged" in run("scan", str(folder)).stderr  # read again: nothing to write
    assert in_sidecar(side) == ours | {"Reise"}
    daemon = daemon_factory(config).start()
    daemon.wait_log("scan: 2 photos, 0 queued")

    mark = len(daemon.log())
    side.unlink()
    daemon.wait_log("is gone", since=mark)
    wait_for(lambda: in_sidecar(side) == ours)
    time.sleep(3)  # its own write heard, both photos looked at again: nothing more may happen
    log = daemon.log()[mark:]
    assert log.count("is gone") == 1, log
    line = next(line for line in log.splitlines() if "is gone" in line)
    said = f"{side}: the sidecar that held tagwatch's keywords of IMG_1.jpg and IMG_1.png is gone"
    assert said in line, line
    assert "declined" not in log and "taken out of it by a person" not in log, log
    assert in_sidecar(side) == ours  # the person's Reise went with the sidecar they deleted
    before = identity(side)
    time.sleep(2)
    assert identity(side) == before, "tagwatch wrote the sidecar again after its own write"

    # another app saves the sidecar by writing a copy and renaming it over: an edit, never a loss
    mark = len(daemon.log())
    copy = folder / ".IMG_1.xmp.tmp"
    copy.write_bytes(side.read_bytes())
    copy.replace(side)
    time.sleep(3)
    assert "is gone" not in daemon.log()[mark:]
    assert in_sidecar(side) == ours
    assert daemon.stop() == 0

    # deleted while the daemon is stopped: its start-up scan finds it gone
    side.unlink()
    mark = len(daemon.log())
    daemon.start()
    daemon.wait_log("is gone", since=mark)
    wait_for(lambda: in_sidecar(side) == ours)
    # the scan queues the photo it meets first; the other, sharing the sidecar, is queued too unless
    # the worker, tagging the first meanwhile, has written the sidecar anew before the walk reaches it
    assert re.search(r"scan: 2 photos, [12] queued", daemon.log()[mark:]), daemon.log()[mark:]
    assert daemon.stop() == 0
    assert exif_keywords(jpg)["iptc"] == []  # target sidecar: the JPEG itself untouched
    assert png.exists()


def test_a_sidecar_deleted_while_no_daemon_runs_is_written_again_by_the_next_scan(
        tmp_path: Path, tiny_checkpoint: Path, cached: Path) -> None:
    """Sidecars deleted with no daemon running: `scan --dry-run` says their photos would be written
    (it said "(already in its sidecar)"), `scan` writes tagwatch's keywords into new ones, and the
    next scan counts them unchanged.  A keyword of ours the person had taken out before stays out; the
    person's own keyword, deleted with the sidecar, is not put back."""
    folder = tmp_path / "photos"
    folder.mkdir()
    jpg = noise_jpeg(folder / "a.jpg", seed=1)
    noise_png(folder / "b.png", seed=2)
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[folder], tags=TAGS4, top_k=3, extra=OWN)
    database_copy(cached, config.parent / "state")
    # a correction of the person's adds Familie to b.png (the ledger's "user" keyword)
    (config.parent / "overrides.toml").write_text('[[override]]\npath = "b.png"\nadd = ["Familie"]\n',
                                                  encoding="utf-8")
    config.write_text(config.read_text(encoding="utf-8").replace(
        'tags = "tags.txt"\n', 'tags = "tags.txt"\noverrides = "overrides.toml"\n'), encoding="utf-8")
    run = cli(config)
    result = run("scan", str(folder))
    assert result.returncode == 0, result.stderr
    jpg_side, png_side = folder / "a.jpg.xmp", folder / "b.png.xmp"
    ours = {jpg_side: in_sidecar(jpg_side), png_side: in_sidecar(png_side) - {"Familie"}}
    assert all(len(k) == 3 for k in ours.values()) and "Familie" in in_sidecar(png_side), ours
    # the person takes one of ours out of b.png's sidecar and puts one of theirs in (later than a
    # save built from the version before tagwatch's write would be): instead of waiting those 10.5 s,
    # the database's record of when tagwatch wrote (the change time of what its write put in place)
    # is moved back by as much, which is all the 10.5 s changed for tagwatch
    with contextlib.closing(sqlite3.connect(config.parent / "state" / "tagwatch.db")) as db, db:
        assert db.execute("UPDATE files SET written_ns = written_ns - ? WHERE written_ns IS NOT NULL",
                          (STALE_SAVE_NS + 500_000_000,)).rowcount == 2
    out = sorted(ours[png_side])[0]
    subprocess.run(["exiftool", "-q", "-overwrite_original", f"-XMP-dc:Subject-={out}",
                    f"-XMP-lr:HierarchicalSubject-={out}", f"-XMP-digiKam:TagsList-={out}",
                    "-XMP-dc:Subject+=Reise", str(png_side)], check=True)
    result = run("scan", str(folder))
    assert result.returncode == 0, result.stderr
    assert in_sidecar(png_side) == ours[png_side] - {out} | {"Reise", "Familie"}

    jpg_side.unlink()
    png_side.unlink()
    dry = run("scan", "--dry-run", str(folder))
    assert dry.returncode == 0, dry.stderr
    assert "already in" not in dry.stdout, dry.stdout
    assert "2 tagged" in dry.stderr, dry.stderr
    assert not jpg_side.exists() and not png_side.exists()  # a dry run writes nothing

    result = run("scan", str(folder))
    assert result.returncode == 0, result.stderr
    assert "2 tagged" in result.stderr, result.stderr
    assert result.stderr.count("is gone") == 2, result.stderr
    assert in_sidecar(jpg_side) == ours[jpg_side]
    # still declined; Reise gone with the sidecar; the correction still asks for Familie
    assert in_sidecar(png_side) == ours[png_side] - {out} | {"Familie"}
    assert exif_keywords(jpg)["iptc"] == []

    again = run("scan", str(folder))
    assert "2 unchanged" in again.stderr, again.stderr
    dry = run("scan", "--dry-run", str(folder))
    assert dry.stdout.count("(already in its sidecar)") == 2, dry.stdout
    # the new sidecar is one tagwatch made: untag takes it away with its keywords
    assert run("untag", str(jpg)).returncode == 0
    assert not jpg_side.exists()


def test_a_jpegs_sidecar_deleted_under_target_both_is_written_again_though_the_jpeg_holds_them(
        tmp_path: Path, tiny_checkpoint: Path, cached: Path) -> None:
    """Target "both": the JPEG holds tagwatch's keywords itself too, so its deleted sidecar lacks
    nothing a read of the photo misses; the dry run said "(already in the file and its sidecar)"."""
    folder = tmp_path / "photos"
    folder.mkdir()
    jpg = noise_jpeg(folder / "a.jpg", seed=1)
    config = write_config(tmp_path / "conf", tiny_checkpoint, tags=TAGS4, top_k=3,
                          extra='[write]\ntarget = "both"\n')
    database_copy(cached, config.parent / "state")
    run = cli(config)
    assert run("scan", str(folder)).returncode == 0
    side = folder / "a.jpg.xmp"
    ours = in_sidecar(side)
    assert len(ours) == 3 and set(exif_keywords(jpg)["iptc"]) == ours
    side.unlink()
    dry = run("scan", "--dry-run", str(folder))
    assert "already in" not in dry.stdout and "1 tagged" in dry.stderr, dry.stdout + dry.stderr
    result = run("scan", str(folder))
    assert "is gone" in result.stderr and in_sidecar(side) == ours, result.stderr
    assert "1 unchanged" in run("scan", str(folder)).stderr


def test_a_jpeg_tagged_into_itself_is_no_lost_sidecar_once_the_target_becomes_sidecar(
        tmp_path: Path, tiny_checkpoint: Path, cached: Path) -> None:
    """A JPEG tagged under target "embedded" never had a sidecar: `target = "sidecar"` set later finds
    none, and none was lost (each photo of a library said "is gone" and was written again)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    jpg = noise_jpeg(folder / "a.jpg", seed=1)
    config = write_config(tmp_path / "conf", tiny_checkpoint, tags=TAGS4, top_k=3)
    database_copy(cached, config.parent / "state")
    run = cli(config)
    assert run("scan", str(folder)).returncode == 0
    assert len(exif_keywords(jpg)["iptc"]) == 3
    config.write_text(config.read_text(encoding="utf-8") + OWN, encoding="utf-8")
    result = run("scan", str(folder))
    assert "1 unchanged" in result.stderr and "is gone" not in result.stderr, result.stderr
    assert not (folder / "a.jpg.xmp").exists()
