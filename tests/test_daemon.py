"""``tagwatch run`` end to end: a real subprocess, a real watchdog observer, real JPEGs, exiftool."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import (
    TAGS,
    Daemon,
    cmdline,
    exif_keywords,
    noise_jpeg,
    status,
    tagwatch,
    wait_for,
    write_config,
)
from procstats import children
from tagwatch import logs
from tagwatch.formats import jpeg_key
from tagwatch.metadata import is_temp_file
from tagwatch.pipeline import NOT_UTF8

# One daemon for the module (a module-scoped fixture) is built on each pytest-xdist worker that runs
# one of the module's tests: keep them on one worker (scripts/test: --dist loadgroup), built once
pytestmark = pytest.mark.xdist_group("daemon")


def tagged_with(path: Path, expected: list[str]) -> bool:
    found = exif_keywords(path)
    return sorted(found["iptc"]) == sorted(expected) and sorted(found["xmp"]) == sorted(expected)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> Daemon:
    """One daemon for the tests below; each works in its own subfolder of the watched root."""
    base = tmp_path_factory.mktemp("daemon")
    root = base / "photos"
    for sub in ("drop", "other", "bad", "retag", "scope", "card"):  # watched before files are dropped in
        (root / sub).mkdir(parents=True)
    # every tag, always; a photo cut short fails after 2 s unchanged, not 5 (test_bad_files_…)
    config = write_config(base / "conf", tiny_checkpoint, watch=[root], top_k=10, quiet_ms=2000)
    daemon = Daemon(config, base / "daemon.log").start()
    daemon.root = root  # type: ignore[attr-defined]
    yield daemon
    assert daemon.stop() == 0
    assert "stopped" in daemon.log()


def test_dropped_photo_gets_keywords_and_renames_never_re_encode(running: Daemon) -> None:
    root: Path = running.root  # type: ignore[attr-defined]
    before = status(running.config)["encoded"]
    source = noise_jpeg(root.parent / "outside.jpg", seed=11)
    photo = root / "drop" / "photo.jpg"
    shutil.copyfile(source, photo)  # a user drops a photo into the watched folder
    wait_for(lambda: tagged_with(photo, TAGS))
    assert set(exif_keywords(photo)["iptc"]) >= {"Ünïcödé tag", "日本語"}  # non-ASCII exact
    assert status(running.config)["encoded"] == before + 1

    moved = root / "other" / "moved.jpg"
    mark = len(running.log())
    os.rename(photo, moved)  # rename and move to another watched subfolder
    running.wait_log(f"moved {photo} -> {moved}", since=mark)
    checked = (status(running.config)["daemon"] or {}).get("unchanged_since_start", 0)
    mark = len(running.log())
    subprocess.run(["exiftool", "-q", "-overwrite_original", "-XMP-dc:Title=Holiday", "-EXIF:Artist=Me",
                    str(moved)], check=True)  # another app edits its metadata
    # checked, found holding its keywords, and left as it was: counted, no log line (no news)
    wait_for(lambda: (status(running.config)["daemon"] or {}).get("unchanged_since_start", 0) > checked)
    assert f"tagged {moved}" not in running.log()[mark:]
    assert status(running.config)["encoded"] == before + 1
    assert tagged_with(moved, TAGS)

    noise_jpeg(moved, seed=12)  # new pixels (the old keywords are gone with the old file)
    wait_for(lambda: status(running.config)["encoded"] == before + 2)
    wait_for(lambda: tagged_with(moved, TAGS))


def test_bad_files_are_logged_once_and_the_daemon_keeps_going(running: Daemon) -> None:
    root: Path = running.root  # type: ignore[attr-defined]
    folder = root / "bad"
    good_bytes = noise_jpeg(root.parent / "good-source.jpg", seed=21).read_bytes()
    mark = len(running.log())
    truncated = folder / "truncated.jpg"
    truncated.write_bytes(good_bytes[: len(good_bytes) // 2])
    empty = folder / "empty.jpg"
    empty.write_bytes(b"")
    text = folder / "notes.jpg"
    text.write_text("shopping list, not a photo\n")
    fleeting = folder / "fleeting.jpg"
    fleeting.write_bytes(good_bytes)
    fleeting.unlink()  # deleted before the worker got to it
    good = folder / "good.jpg"
    good.write_bytes(good_bytes)
    wait_for(lambda: tagged_with(good, TAGS))
    expected = {
        truncated: "truncated JPEG (no end-of-image marker)",
        empty: "empty file (0 bytes)",
        text: "not an image format tagwatch reads",
        fleeting: "deleted before it could be tagged",
    }
    for path, reason in expected.items():
        running.wait_log(f"{path}: skipped: {reason}", since=mark)
    time.sleep(1.0)  # time for any repeated complaint to show up
    log = running.log()[mark:]
    for path in expected:
        assert log.count(f"{path}: skipped") == 1, log
    assert running.proc is not None and running.proc.poll() is None


def test_a_photo_renamed_as_its_not_utf8_skip_line_advises_is_tagged_at_once(running: Daemon) -> None:
    """xV #2: a photo whose name is not valid UTF-8 (an old card reader's Latin-1) is skipped, "the
    file name is not valid UTF-8; rename the file".  Renamed so, it logged "ERROR batch failed:
    UnicodeEncodeError" and was tagged only after a restart; deleting one logged the same.  Renamed
    (itself, or its folder), it is tagged at once with a photo dropped beside it; a tagged photo
    renamed to such a name is skipped, saying so once.  Nothing fails."""
    folder: Path = running.root / "card"  # type: ignore[attr-defined]

    def named(name: bytes) -> Path:
        return Path(os.fsdecode(bytes(folder) + b"/" + name))

    def skipped(path: Path) -> str:
        return f"{logs.shown(str(path))}: skipped: {NOT_UTF8}"

    mark = len(running.log())
    card, doomed, trip = (noise_jpeg(named(name), seed=31 + i) for i, name in
                          enumerate([b"gelb \xfc.jpg", b"weg \xe9.jpg", b"urlaub \xe9/strand.jpg"]))
    for path in (card, doomed, trip):
        running.wait_log(skipped(path), since=mark)
    renamed, trip_renamed = folder / "gelb.jpg", folder / "urlaub"
    os.rename(card, renamed)  # as advised
    beside = noise_jpeg(folder / "beside.jpg", seed=34)
    doomed.unlink()
    os.rename(trip.parent, trip_renamed)
    wait_for(lambda: all(tagged_with(p, TAGS) for p in (renamed, beside, trip_renamed / "strand.jpg")))
    away = named(b"gelb \xe9.jpg")
    os.rename(renamed, away)  # a tagged photo renamed to such a name
    running.wait_log(skipped(away), since=mark)
    after = noise_jpeg(folder / "after.jpg", seed=35)  # through the queue behind anything still due
    wait_for(lambda: tagged_with(after, TAGS))
    log = running.log()[mark:]
    assert "ERROR" not in log and "Traceback" not in log, log
    for path in (card, doomed, trip, away):
        assert log.count(f"{logs.shown(str(path))}: skipped") == 1, log


def test_a_photo_written_slowly_is_tagged_once_complete(running: Daemon) -> None:
    root: Path = running.root  # type: ignore[attr-defined]
    data = noise_jpeg(root.parent / "slow-source.jpg", seed=31, size=(640, 480)).read_bytes()
    photo = root / "slow.jpg"
    mark = len(running.log())
    with photo.open("wb") as handle:
        for start in range(0, len(data), len(data) // 4 + 1):
            handle.write(data[start:start + len(data) // 4 + 1])
            handle.flush()
            time.sleep(0.1)  # well inside the 300 ms settle time
    wait_for(lambda: tagged_with(photo, TAGS))
    assert f"{photo}: skipped" not in running.log()[mark:]


def test_tag_list_edit_retags_without_encoding_any_image(running: Daemon) -> None:
    root: Path = running.root  # type: ignore[attr-defined]
    folder = root / "retag"
    photos = [noise_jpeg(folder / f"r{i}.jpg", seed=40 + i) for i in range(3)]
    for photo in photos:
        wait_for(lambda p=photo: tagged_with(p, TAGS))
    before = status(running.config)["encoded"]
    tags_file = running.config.parent / "tags.txt"
    # put back afterwards: the list the module's other tests expect of this daemon, whatever their order
    with running.restoring(tags_file, f": {len(TAGS)} tags ("):
        mark = len(running.log())
        tags_file.write_text("\n".join([*TAGS, "harbour"]) + "\n", encoding="utf-8")  # edited while running
        running.wait_log("(1 new prompt vector)", since=mark)
        for photo in photos:
            wait_for(lambda p=photo: tagged_with(p, [*TAGS, "harbour"]))
        assert status(running.config)["encoded"] == before

        mark = len(running.log())
        tags_file.write_text("beach\n" + "x" * 65 + "\n", encoding="utf-8")  # a broken edit
        running.wait_log("keeping the previous one", since=mark)
        assert f"{tags_file}:2: keyword" in running.log()[mark:]
        noise_jpeg(folder / "after.jpg", seed=49)  # tagged with the last good list
        wait_for(lambda: tagged_with(folder / "after.jpg", [*TAGS, "harbour"]))


def test_a_tag_list_edit_leaves_photos_outside_the_watched_folders_to_the_next_scan(running: Daemon) -> None:
    """The daemon writes only in its watched folders (a systemd unit lets it write nowhere else): a
    photo that `tagwatch scan` tagged elsewhere is neither re-scored nor rewritten by a tag-list edit;
    the next scan of it brings it up to date."""
    root: Path = running.root  # type: ignore[attr-defined]
    elsewhere = noise_jpeg(root.parent / "elsewhere" / "e.jpg", seed=51)
    scanned = tagwatch("scan", "--config", str(running.config), str(elsewhere.parent))
    assert scanned.returncode == 0, scanned.stderr
    assert tagged_with(elsewhere, TAGS)
    inside = noise_jpeg(root / "scope" / "in.jpg", seed=52)
    wait_for(lambda: tagged_with(inside, TAGS))
    before = elsewhere.read_bytes()
    tags_file = running.config.parent / "tags.txt"
    with running.restoring(tags_file, f": {len(TAGS)} tags ("):
        mark = len(running.log())
        tags_file.write_text("\n".join([*TAGS, "harbour"]) + "\n", encoding="utf-8")
        running.wait_log(f": {len(TAGS) + 1} tags (", since=mark)
        wait_for(lambda: tagged_with(inside, [*TAGS, "harbour"]))
        assert elsewhere.read_bytes() == before
        assert str(elsewhere) not in running.log()[mark:]

        scanned = tagwatch("scan", "--config", str(running.config), str(elsewhere.parent))
        assert scanned.returncode == 0, scanned.stderr
        assert tagged_with(elsewhere, [*TAGS, "harbour"])


@pytest.mark.slow
def test_sigkill_mid_burst_then_restart_finishes_the_work(tmp_path: Path, tiny_checkpoint: Path) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[root], top_k=len(TAGS))
    daemon = Daemon(config, tmp_path / "daemon.log").start()
    try:
        burst = [noise_jpeg(root / "burst" / f"b{i:02d}.jpg", seed=100 + i, size=(1600, 1200))
                 for i in range(24)]
        daemon.wait_log("tagged ")
        daemon.kill()  # SIGKILL while the burst is being tagged
        # while it is down: new photos, a deletion and a rename
        added = [noise_jpeg(root / "later" / f"l{i}.jpg", seed=200 + i) for i in range(3)]
        renamed = root / "burst" / "renamed.jpg"
        os.rename(burst[0], renamed)
        burst[1].unlink()
        survivors = [renamed, *burst[2:], *added]

        daemon.start()
        for photo in survivors:
            wait_for(lambda p=photo: tagged_with(p, TAGS))
        for photo in survivors:  # no half-written file: every one is a whole, valid JPEG
            jpeg_key(photo.read_bytes())
        leftovers = [p for p in root.rglob(".*") if is_temp_file(p.name)]
        assert leftovers == []
        report = status(config)
        # every distinct picture was encoded at most once (b01 may have gone before its turn)
        assert 26 <= report["encoded"] <= 27
        assert report["tagged"] == len(survivors)

        mark = len(daemon.log())
        text = config.read_text().replace("top_k = 6", "top_k = 2")
        config.write_text(text)
        daemon.signal(signal.SIGHUP)  # reload the config: top_k applies at once
        daemon.wait_log("tag list", since=mark)
        noise_jpeg(root / "after-hup.jpg", seed=300)
        wait_for(lambda: len(exif_keywords(root / "after-hup.jpg")["iptc"]) == 2)
    finally:
        code = daemon.stop()
    assert code == 0


def test_a_folder_moved_while_the_daemon_was_stopped_is_logged_as_moved(tmp_path: Path,
                                                                        tiny_checkpoint: Path) -> None:
    """A library reorganised with the daemon stopped: the start-up scan logged each photo of the moved
    folder as "a copy of" some other file with the picture and then as "deleted" (24,000 photos: 2,375
    such copies named after unrelated photos, 2,500 deletions).  A photo found under a new name with
    the size and time of a recorded one that is gone was moved: one "moved" line, its record and
    ledger follow it (untag still takes tagwatch's keywords out), nothing is encoded."""
    root = tmp_path / "photos"
    album = root / "2019" / "wedding"
    photos = [noise_jpeg(album / f"IMG_{i}.jpg", seed=400 + i) for i in range(3)]
    kept = noise_jpeg(root / "kept.jpg", seed=410)
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[root])
    daemon = Daemon(config, tmp_path / "daemon.log").start()
    try:
        for photo in [*photos, kept]:
            wait_for(lambda p=photo: len(exif_keywords(p)["iptc"]) == 3)
    finally:
        assert daemon.stop() == 0
    encoded = status(config)["encoded"]
    moved_to = root / "2018" / "wedding (moved)"
    moved_to.parent.mkdir()
    os.rename(album, moved_to)
    copied = Path(shutil.copy2(kept, root / "2018" / "kept.jpg"))  # a copy keeps its name and time too
    mark = len(daemon.log())
    daemon.start()
    try:
        log = daemon.wait_log("scan: ", since=mark)
        wait_for(lambda: len(exif_keywords(copied)["iptc"]) == 3)
        # each move is applied (and said) by the worker in queue order, the copy tagged beside them:
        # the last "moved" line came after the copy's keywords on a busy machine (CI, 2026-12-06)
        for photo in photos:
            daemon.wait_log(f"moved {photo} -> {moved_to / photo.name}", since=mark)
        log = daemon.log()[mark:]
    finally:
        assert daemon.stop() == 0
    for photo in photos:
        assert f"moved {photo} -> {moved_to / photo.name}" in log, log
        assert f"{photo}: deleted" not in log
    assert "a copy of" not in log.replace(f"{copied}, a copy of {kept}", ""), log
    assert "5 photos, 1 queued, 0 gone, 3 moved" in log, log
    assert status(config)["encoded"] == encoded  # nothing encoded again
    untag = tagwatch("untag", "--config", str(config), str(moved_to / photos[0].name))
    assert untag.returncode == 0, untag.stderr
    assert exif_keywords(moved_to / photos[0].name)["iptc"] == []


def test_a_polled_folder_is_tagged_and_its_own_writes_keep_the_ledger(tmp_path: Path,
                                                                       tiny_checkpoint: Path) -> None:
    """A network mount (`poll = true`) gets no inotify events: the polling observer finds the photo.
    Our own atomic replace, seen only through directory snapshots, must neither re-encode the photo
    nor cost the ledger: `untag` still removes every keyword we wrote."""
    root = tmp_path / "nas"
    root.mkdir()
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[root])
    config.write_text(config.read_text().replace(
        f'watch = ["{root}"]', f'watch = [{{path = "{root}", poll = true}}]\npoll_interval = "0.5s"', 1))
    daemon = Daemon(config, tmp_path / "daemon.log").start()
    try:
        assert f"watching {root}: polling every 0.5 s (poll = true)" in daemon.log()
        photo = noise_jpeg(root / "a.jpg", seed=71)
        wait_for(lambda: len(exif_keywords(photo)["iptc"]) == 3)
        time.sleep(2)  # several polls after our own write
        assert status(config)["encoded"] == 1
    finally:
        assert daemon.stop() == 0
    untag = subprocess.run([sys.executable, "-m", "tagwatch", "untag", str(photo), "--config", str(config)],
                           capture_output=True, text=True, timeout=120)
    assert untag.returncode == 0, untag.stderr
    assert exif_keywords(photo)["iptc"] == []  # the ledger still knew every keyword as ours


def _exiftool_children(pid: int) -> list[int]:
    """The running exiftool processes started by process ``pid``."""
    return [c for c in children(pid) if "exiftool" in cmdline(c) and "-stay_open" in cmdline(c)]


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc")
def test_exiftool_is_warmed_up_before_the_first_photo_arrives(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """At its start the daemon has exiftool write into a scrap photo of its own (Perl's start and its
    writing code compiled then, not in the first dropped photo's write); no scrap is left behind."""
    root, scratch = tmp_path / "photos", tmp_path / "tmp"
    root.mkdir()
    scratch.mkdir()
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[root], top_k=len(TAGS))
    daemon = Daemon(config, tmp_path / "daemon.log", env={"TMPDIR": str(scratch)}).start()
    try:
        assert daemon.proc is not None
        # the scrap is written in the data folder (the daemon may write nothing else), then removed
        warm_up = config.parent / "state" / "exiftool-warm-up"
        wait_for(lambda: _exiftool_children(daemon.proc.pid) and warm_up.is_dir()
                 and not any(warm_up.iterdir()))
        assert "tagged " not in daemon.log()  # no photo of the user's was written to warm it up
        photo = noise_jpeg(root / "first.jpg", seed=7)
        wait_for(lambda: tagged_with(photo, TAGS))
    finally:
        assert daemon.stop() == 0
    assert not any(scratch.iterdir()) and not any(warm_up.iterdir())
