"""Faults of the machine, not of the photo (xQ #2, #4, #5, #6): an exiftool child killed or silent, the
encoder child killed while it loads, a batch held by a silent exiftool, and a damaged JPEG's log lines.

Real processes and signals throughout: the real exiftool stopped and killed under a command, a stand-in
named ``exiftool`` first on PATH that kills itself (and its real exiftool) on a given photo, the encoder
child killed with its load request in its pipe, real JPEGs read back with exiftool.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import json
import logging
import os
import signal
import sqlite3
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import (
    TINY_CONFIG,
    Daemon,
    exif_keywords,
    exiftool_stand_in,
    noise_jpeg,
    status,
    tagwatch,
    wait_for,
    write_config,
)
from tagwatch.config import ModelConfig
from tagwatch.encoder import LazyModel, ModelKilled
from tagwatch.exiftool import ExifTool, ExifToolFault
from tagwatch.model import ModelError
from tagwatch.retry import DATABASE_LOCK_WAIT_S, EXIFTOOL_TRIES, transient_reason
from tagwatch.store import LOCK_WAIT_S


def _state(pid: int) -> str:
    """The process's state letter (T: stopped), or "" once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


def _queued(fd: int) -> int:
    """Bytes written into a pipe and not yet read by the process at the other end."""
    count = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, count)
    return count[0]


def _kill_under_command(pid: int, pipe: int, call: Callable[[], object]) -> BaseException | None:
    """Stop ``pid``, run ``call`` on a thread until its request lies whole in ``pipe`` (the child's
    stdin), then SIGKILL the child, as the OOM killer would; what ``call`` raised, if anything."""
    os.kill(pid, signal.SIGSTOP)
    wait_for(lambda: _state(pid) == "T")
    raised: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:  # handed to the test's thread
            raised.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    try:
        wait_for(lambda: _queued(pipe) > 0)
        os.kill(pid, signal.SIGKILL)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
        worker.join(timeout=120)
    assert not worker.is_alive()
    return raised[0] if raised else None


# -- #2: exiftool killed or silent under a command -------------------------------------------------

def test_an_exiftool_killed_under_a_command_is_a_passing_fault_and_the_next_gets_a_fresh_one(
        tmp_path: Path) -> None:
    photo = noise_jpeg(tmp_path / "p.jpg", seed=1)
    exiftool = ExifTool()
    try:
        exiftool.execute("-ver")
        pid, proc = exiftool.pid, exiftool._proc
        assert pid is not None and proc is not None and proc.stdin is not None
        exc = _kill_under_command(pid, proc.stdin.fileno(), lambda: exiftool.execute("-j", str(photo)))
        assert isinstance(exc, ExifToolFault), exc
        reason = transient_reason(exc)  # retried by the worker, not recorded as the photo's failure
        assert reason is not None and "killed by SIGKILL" in reason and "ended while it worked" in reason
        out, _ = exiftool.execute("-j", str(photo))  # a new exiftool answers
        assert json.loads(out)[0]["SourceFile"] == str(photo) and exiftool.pid not in (None, pid)
    finally:
        exiftool.close()


def test_a_silent_exiftool_is_said_once_then_stopped_and_the_photo_waits(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A stuck share: exiftool says nothing (SIGSTOP here).  One line says so before the timeout ends
    it; the photo's write is a passing fault; the next command gets a fresh exiftool."""
    photo = noise_jpeg(tmp_path / "p.jpg", seed=2)
    exiftool = ExifTool(timeout=3, notice=1)
    try:
        exiftool.execute("-ver")
        pid = exiftool.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        with caplog.at_level(logging.WARNING, logger="tagwatch.exiftool"), \
                pytest.raises(ExifToolFault) as silent:
            exiftool.execute("-j", str(photo))
        assert transient_reason(silent.value) is not None and "no answer within 3 s" in str(silent.value)
        said = [r.getMessage() for r in caplog.records if r.name == "tagwatch.exiftool"]
        assert len(said) == 1 and "has not answered" in said[0] and str(photo) in said[0]
        assert _state(pid) in ("", "Z")  # stopped for good, not left behind
        out, _ = exiftool.execute("-j", str(photo))
        assert json.loads(out)[0]["SourceFile"] == str(photo)
    finally:
        exiftool.close()


# The stand-in's input (conftest.exiftool_stand_in): on a command naming a photo whose name holds
# "crash" it kills the real exiftool and itself (SIGKILL), once for a "crashonce" photo, always for others
STAND_IN = """for line in sys.stdin.buffer:
    if b"crash" in line and (b"crashonce" not in line or not os.path.exists({flag!r})):
        if b"crashonce" in line:
            open({flag!r}, "w").close()
        real.kill()
        os.kill(os.getpid(), signal.SIGKILL)
    real.stdin.write(line)
    real.stdin.flush()
"""


def test_a_photo_whose_exiftool_is_killed_is_tagged_and_one_that_kills_it_each_time_fails_once(
        tmp_path: Path, tiny_checkpoint: Path) -> None:
    """exiftool killed under a photo's write: the photo waits and is tagged with a fresh exiftool (it
    was failed for good, no retry on SIGHUP or restart).  A photo that kills it every time is failed
    as the file's fault after EXIFTOOL_TRIES tries, with one line saying so."""
    bin_dir = tmp_path / "bin"
    exiftool_stand_in(bin_dir, STAND_IN.format(flag=str(tmp_path / "crashed-once")))
    photos = tmp_path / "photos"
    photos.mkdir()
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[photos])
    daemon = Daemon(config, tmp_path / "daemon.log", {"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    daemon.start()
    try:
        once = noise_jpeg(photos / "crashonce.jpg", seed=3)
        always = noise_jpeg(photos / "crashalways.jpg", seed=4)
        plain = noise_jpeg(photos / "plain.jpg", seed=5)
        wait_for(lambda: exif_keywords(once)["iptc"] and exif_keywords(plain)["iptc"])
        log = daemon.wait_log(f"{always}: skipped: keywords not written: exiftool failed on this file "
                              f"{EXIFTOOL_TRIES} times running")
        failed = tagwatch("status", "--failed", "--config", str(config))
        assert failed.returncode == 0, failed.stderr
    finally:
        daemon.stop()
    assert (tmp_path / "crashed-once").exists()  # it was killed under crashonce.jpg, then tagged
    assert f"{once}: not tagged yet: keywords not written: exiftool failed: the exiftool process ended" in log
    assert "killed by SIGKILL" in log
    assert str(once) not in failed.stdout and str(plain) not in failed.stdout
    assert f"{always}: keywords not written: exiftool failed on this file" in failed.stdout
    assert exif_keywords(always) == {"iptc": [], "xmp": []}  # untouched
    assert log.count(f"{always}: skipped:") == 1 and "Traceback" not in log


# The stand-in's input: exiftool's new copy of a photo in a folder named "trip" goes where none can be
# made, so exiftool says "Error creating ..." and the photo waits as for a full disk, for as long as it
# is there
NO_ROOM = """after_o = False
for line in sys.stdin.buffer:
    if after_o and b"/trip/" in line:
        line = b"/dev/null/no-room.jpg\\n"
    after_o = line == b"-o\\n"
    real.stdin.write(line)
    real.stdin.flush()
"""


def test_a_waiting_photo_in_a_folder_moved_away_and_back_starts_its_backoff_afresh(
        tmp_path: Path, tiny_checkpoint: Path) -> None:
    """A photo backing off (its disk full) in a folder moved out of the watched folder and put back
    (from the trash): the worker forgot only the folder's own path, so the photo went on from its
    old attempt, with no "not tagged yet" line and a pause that had grown (up to 5 minutes)."""
    bin_dir = tmp_path / "bin"
    exiftool_stand_in(bin_dir, NO_ROOM)
    root = tmp_path / "photos"
    (root / "trip").mkdir(parents=True)
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[root])
    # -v: the "still not tagged (attempt N)" lines, which a photo that went on from its old attempt logs
    daemon = Daemon(config, tmp_path / "daemon.log", {"PATH": f"{bin_dir}:{os.environ['PATH']}"}, args=["-v"])
    daemon.start()
    try:
        photo = noise_jpeg(root / "trip" / "full.jpg", seed=6)
        daemon.wait_log(f"{photo}: not tagged yet: ")
        # its third attempt: queued again to wait 4 s, and moved away meanwhile with its folder
        daemon.wait_log(f"{photo}: still not tagged (attempt 3)")
        moved_at = time.time()
        os.rename(root / "trip", tmp_path / "trash")
        # the queue dropped it (its folder's deletion queued) before the folder is put back
        wait_for(lambda: (lambda s: s["queue"] == 0 and s["started"] + s["uptime_s"] > moved_at + 0.1)(
            status(config)["daemon"]))
        mark = len(daemon.log())
        os.rename(tmp_path / "trash", root / "trip")
        wait_for(lambda: f"{photo}: not tagged yet: " in daemon.log()[mark:]
                 or f"{photo}: still not tagged" in daemon.log()[mark:])
        log = daemon.log()[mark:]
    finally:
        daemon.stop()
    assert f"{photo}: still not tagged" not in log, log
    said = [line for line in log.splitlines() if f"{photo}: not tagged yet: " in line]
    assert said and "trying again in 1 s" in said[0], log  # said again, and tried again soon


# -- #5: the encoder child killed while it loads -------------------------------------------------------

def test_an_encoder_killed_while_loading_is_a_passing_fault_and_a_bad_checkpoint_is_not(
        tmp_path: Path, tiny_checkpoint: Path) -> None:
    lazy = LazyModel(ModelConfig(name=str(TINY_CONFIG), pretrained=str(tiny_checkpoint)))
    try:
        encoder = lazy.get()
        encoder.close()
        encoder.validate()  # a fresh child, torch imported, the weights not loaded yet
        pid, proc = encoder.pid, encoder._proc
        assert pid is not None and proc is not None and proc.stdin is not None
        exc = _kill_under_command(pid, proc.stdin.fileno(), encoder.load)
        assert isinstance(exc, ModelKilled), exc  # an OOM kill: the host's, photos wait and retry
        reason = transient_reason(exc)
        assert reason is not None and reason.startswith("model: ") and "killed by SIGKILL" in reason
        assert "perhaps out of memory" in reason
        encoder.load()  # and the next try loads
        assert encoder.loaded
    finally:
        lazy.close()
    bad = tmp_path / "clip.pt"
    bad.write_bytes(b"this is not a checkpoint\n")
    broken = LazyModel(ModelConfig(name=str(TINY_CONFIG), pretrained=str(bad)))
    try:
        with pytest.raises(ModelError) as failed:
            broken.get()
        assert not isinstance(failed.value, ModelKilled) and transient_reason(failed.value) is None
    finally:
        broken.close()


# -- #6: a damaged JPEG's log lines ---------------------------------------------------------------

def _with_app1(source: bytes, segment: bytes, declared: int | None = None) -> bytes:
    """``source`` with an APP1 segment put first, its length field ``declared`` (or its true one)."""
    length = len(segment) + 2 if declared is None else declared
    return source[:2] + b"\xff\xe1" + struct.pack(">H", length) + segment + source[2:]


def test_a_damaged_jpeg_costs_one_warning_line(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """The repro's APP1 whose declared length overruns its data (Pillow: two "Skipping tag", one
    "Corrupt EXIF data", then the decode fails) is one WARNING line, the skip with its reason; a
    photo whose Exif IFD is cut short but which decodes is one line too, naming the damage."""
    photos = tmp_path / "photos"
    photos.mkdir()
    clean = noise_jpeg(tmp_path / "clean.jpg", seed=6).read_bytes()
    overrun = photos / "badapp1.jpg"
    overrun.write_bytes(_with_app1(clean, b"Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08" + b"\xff" * 50, 200))
    cut = photos / "cutifd.jpg"  # three entries declared, one whose data lies past the end, then cut
    entry = struct.pack(">HHII", 0x010F, 2, 1000, 5000)
    tiff = b"MM\x00\x2a\x00\x00\x00\x08\x00\x03" + entry + b"\x01\x10\x00"
    cut.write_bytes(_with_app1(clean, b"Exif\x00\x00" + tiff))
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[photos])
    result = tagwatch("scan", "--config", str(config), str(photos))
    warnings = [line for line in result.stderr.splitlines() if " WARNING " in line]
    assert [line for line in warnings if "badapp1.jpg" in line] == [
        next(line for line in warnings if f"{overrun}: skipped: cannot decode" in line)], result.stderr
    (damaged,) = [line for line in warnings if "cutifd.jpg" in line]
    assert f"{cut}: Corrupt EXIF data." in damaged, result.stderr
    assert exif_keywords(cut)["iptc"] and not exif_keywords(overrun)["iptc"]


# -- #4: photos held by a locked database are counted, and the resume line counts them ------------

def waiting(config: Path) -> object:
    """What `tagwatch status --json` says the running daemon has waiting."""
    return status(config).get("daemon", {}).get("queue")  # type: ignore[attr-defined]


LOCKED = "photos are not tagged yet: database: database is locked"
RESUMED = "the database takes writes again; the {} photos that waited for it are tried now"
# `tagwatch status` while they wait: no time from the rate measured before the lock (xZ #7)
UNKNOWN = "time to clear the queue unknown while photos wait for the database (database is locked)"


def said_by_status(config: Path) -> str:
    """What `tagwatch status` prints."""
    return tagwatch("status", "--config", str(config)).stdout
# From the moment a batch meets the lock (its "storing" line) to the line saying it: the wait, and
# room for a busy 2-core box.  Below SQLite's 30 s busy timeout, which the daemon said it after.
SAID_WITHIN_S = DATABASE_LOCK_WAIT_S + 10


def test_photos_held_by_a_locked_database_count_as_waiting_and_the_resume_line_counts_them(
        tmp_path: Path, tiny_checkpoint: Path) -> None:
    """A backup script holds the database (BEGIN EXCLUSIVE): `status` counted 0 waiting for as long
    as the photos were held in a batch, and the line when it took writes again said "1 waiting
    photos" for 3.  The daemon said the lock only after SQLite's 30 s busy timeout: now within
    DATABASE_LOCK_WAIT_S of the batch meeting it.  A short lock (another tagwatch's write) met by a
    batch passes without a line, the photo tagged."""
    photos = tmp_path / "photos"
    photos.mkdir()
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[photos])
    daemon = Daemon(config, tmp_path / "daemon.log", args=["-v"])  # -v: the batch's "storing" line
    daemon.start()
    early = noise_jpeg(tmp_path / "early" / "e.jpg", seed=9)
    stage = tmp_path / "stage"
    made = [noise_jpeg(stage / f"p{i}.jpg", seed=10 + i) for i in range(3)]
    holder = sqlite3.connect(tmp_path / "conf" / "state" / "tagwatch.db", isolation_level=None, timeout=60)
    try:
        daemon.wait_log("scan: ")
        # A short lock: held a second while the batch waits to store its vector, then let go
        mark = len(daemon.log())
        holder.execute("BEGIN EXCLUSIVE")
        os.rename(early.parent, photos / "early")
        daemon.wait_log("storing ", since=mark)
        time.sleep(1.0)  # the other writer's second (a correction, a command), well within the wait
        holder.execute("COMMIT")
        wait_for(lambda: exif_keywords(photos / "early" / "e.jpg")["iptc"])
        assert "not tagged yet" not in daemon.log()[mark:], daemon.log()[mark:]

        mark = len(daemon.log())
        holder.execute("BEGIN EXCLUSIVE")
        os.rename(stage, photos / "new")  # one move: the three arrive together
        wait_for(lambda: waiting(config) == 3)  # held in a batch, waiting
        met = len(daemon.wait_log("storing 3 vectors", since=mark))
        daemon.wait_log(LOCKED, since=met, timeout=SAID_WITHIN_S)  # said within seconds, not after 30 s
        assert waiting(config) == 3  # back in the queue, backing off
        # a rate was measured (the early photo): it said "the queue is cleared in about 0m04s"
        wait_for(lambda: UNKNOWN in said_by_status(config))
        holder.execute("COMMIT")
        new = [photos / "new" / p.name for p in made]
        wait_for(lambda: all(exif_keywords(p)["iptc"] for p in new))
        wait_for(lambda: waiting(config) == 0)
        # said before the photos it announces are tagged: it came after their "tagged" lines (xZ #8)
        log = daemon.wait_log(RESUMED.format(3), since=mark)
        resumed = log.index(RESUMED.format(3), mark)
        assert all(log.index(f"tagged {p}", mark) > resumed for p in new), log[mark:]
        assert daemon.log()[mark:].count(LOCKED) == 1  # one line for the three, not one per attempt
        # their vectors, made before the lock, are cached once it is gone: tried again, the photos
        # took them from the engine's memory and were tagged, and none was ever stored (export left
        # them out as "not encoded yet", every re-score encoded them again)
        counts = status(config)
        assert (counts["files"], counts["vectors"]) == (4, 4), counts
    finally:
        holder.close()
        daemon.stop()


def test_photos_deleted_or_moved_while_they_wait_for_a_locked_database_are_counted_as_they_are_now(
        tmp_path: Path, tiny_checkpoint: Path) -> None:
    """A backup script holds the database (BEGIN EXCLUSIVE) while five photos wait for it; one is
    deleted, a folder holding two others is removed (``rm -r``) and one is renamed.  The line once
    it was let go counted the photos gone, and the deletions as photos; now `tagwatch status` counts
    the two photos left waiting, the renamed one at its new name, and the line counts those two,
    which are tagged, the renamed one at its new name, without a word of the others."""
    photos = tmp_path / "photos"
    photos.mkdir()
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[photos])
    daemon = Daemon(config, tmp_path / "daemon.log")
    daemon.start()
    stage = tmp_path / "stage"
    made = [noise_jpeg(stage / f"p{i}.jpg", seed=20 + i) for i in range(3)]
    made += [noise_jpeg(stage / "old" / f"o{i}.jpg", seed=30 + i) for i in range(2)]
    holder = sqlite3.connect(tmp_path / "conf" / "state" / "tagwatch.db", isolation_level=None, timeout=60)
    try:
        daemon.wait_log("scan: ")
        mark = len(daemon.log())
        holder.execute("BEGIN EXCLUSIVE")
        os.rename(stage, photos / "new")
        daemon.wait_log(LOCKED, since=mark, timeout=SAID_WITHIN_S)
        wait_for(lambda: waiting(config) == 5)
        new = photos / "new"
        (new / "p0.jpg").unlink()
        subprocess.run(["rm", "-r", str(new / "old")], check=True)
        os.rename(new / "p1.jpg", new / "renamed.jpg")
        wait_for(lambda: waiting(config) == 2)  # p2, and p1 at its new name
        holder.execute("COMMIT")
        left = [new / "renamed.jpg", new / "p2.jpg"]
        wait_for(lambda: all(exif_keywords(p)["iptc"] for p in left))
        wait_for(lambda: waiting(config) == 0)
        log = daemon.wait_log(RESUMED.format(2), since=mark)[mark:]
    finally:
        holder.close()
        daemon.stop()
    assert log.count("takes writes again") == 1, log
    assert not [line for line in log.splitlines() if any(
        name in line for name in ("p0.jpg", "p1.jpg", "o0.jpg", "o1.jpg")) and " DEBUG " not in line
                and "deleted before it could be tagged" not in line], log
    assert " ERROR " not in log, log
    assert status(config)["files"] == 2


# A tag-list edit, and a start, while a backup holds the database for minutes: the re-score waits
# whole, said in one line, and resumes by itself once the database takes writes again
RESCORE_WAITS = "the tag list's re-score waits: database: database is locked"
RESCORE_STATUS = "re-score  {} re-score waits for the database (database is locked); the photos keep"
OLD_TAGS, NEW_TAGS = ["beach", "forest", "mountain"], ["city street", "snow field", "harbour"]


def _sync_config(tmp_path: Path, tiny_checkpoint: Path, photos: Path, lock_wait: str | None = None) -> Path:
    """Sync mode: a tag taken out of the list comes out of the photos, so the old list's keywords
    left in a photo are a re-score that did not happen.  ``lock_wait``: the config's
    ``database_lock_wait`` (5 s by default), how long each try waits under the backup's lock."""
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[photos], tags=OLD_TAGS, top_k=2)
    text = config.read_text(encoding="utf-8").replace("[tagging]", '[tagging]\nmode = "sync"')
    config.write_text((f'database_lock_wait = "{lock_wait}"\n' if lock_wait else "") + text, encoding="utf-8")
    return config


def _rescored(paths: list[Path]) -> bool:
    """Every photo carries keywords of the new list and none of the old one."""
    keywords = [set(exif_keywords(p)["iptc"]) for p in paths]
    return all(k & set(NEW_TAGS) and not k & set(OLD_TAGS) for k in keywords)


def _said(log: str) -> list[str]:
    """The log's lines at INFO and above but the photos' own "tagged …" (a daemon run with -v logs
    DEBUG too)."""
    return [line for line in log.splitlines() if " INFO tagged " not in line
            and any(f" {level} " in line for level in ("INFO", "WARNING", "ERROR"))]


def test_a_tag_list_edited_while_a_backup_holds_the_database_is_applied_once_it_is_let_go(
        tmp_path: Path, tiny_checkpoint: Path) -> None:
    """A nightly backup holds the database (BEGIN EXCLUSIVE) and the user edits the tag list: the
    re-score waited SQLite's 30 s for each changed photo in turn, the daemon deaf meanwhile, and a
    reload that met the lock ended in "batch failed", the photos left with the old list's keywords.
    Now one line says the re-score waits for the database, `status` answers and counts no photo
    failed, and once the lock is let go every photo carries the new list's keywords only.  With an
    overrides file (the review page's), each retry re-read both files, said "overrides …: 1 rule"
    again and encoded the new prompts again: now a retry resumes the re-score alone, and the one
    WARNING is all that is said between the list's edit and its "re-scored" line (the overrides,
    unchanged, are not said again at all)."""
    photos = tmp_path / "photos"
    made = [noise_jpeg(photos / f"p{i}.jpg", seed=30 + i) for i in range(3)]
    config = _sync_config(tmp_path, tiny_checkpoint, photos, lock_wait="1s")  # three tries: 1 s each, not 5
    config.write_text(config.read_text(encoding="utf-8").replace(
        'tags = "tags.txt"\n', 'tags = "tags.txt"\noverrides = "overrides.toml"\n'), encoding="utf-8")
    (tmp_path / "conf" / "overrides.toml").write_text(
        '[[override]]\npath = "/nowhere/x.jpg"\nadd = ["x"]\n', encoding="utf-8")
    daemon = Daemon(config, tmp_path / "daemon.log", args=["-v"])
    daemon.start()
    holder = sqlite3.connect(tmp_path / "conf" / "state" / "tagwatch.db", isolation_level=None, timeout=60)
    try:
        wait_for(lambda: all(set(exif_keywords(p)["iptc"]) & set(OLD_TAGS) for p in made))
        mark = len(daemon.log())
        holder.execute("BEGIN EXCLUSIVE")
        (tmp_path / "conf" / "tags.txt").write_text("\n".join(NEW_TAGS) + "\n", encoding="utf-8")
        daemon.wait_log(RESCORE_WAITS, since=mark)
        assert status(config).get("failed") == 0  # answers while the lock lasts; no photo failed
        wait_for(lambda: RESCORE_STATUS.format("the tag list's") in said_by_status(config))  # nothing said it
        assert all(set(exif_keywords(p)["iptc"]) & set(OLD_TAGS) for p in made)  # nothing half done
        daemon.wait_log("re-score still waits (attempt 3)", since=mark)  # retried twice under the lock
        holder.execute("COMMIT")
        wait_for(lambda: _rescored(made))
        daemon.wait_log("re-scored 3 photos, rewrote", since=mark)
        log = daemon.log()[mark:]
        said = _said(log)
        # the one WARNING, the re-score's line (not the unchanged overrides' "1 rule": said at the start)
        assert len(said) == 2, said
        assert RESCORE_WAITS in said[0], said
        listed = f"tag list {tmp_path / 'conf' / 'tags.txt'}: 3 tags (3 new prompt vectors); re-scored 3"
        assert listed in said[1], said
        assert status(config).get("failed") == 0
        # a correction on the review page (an overrides edit) under the lock: its re-score waits too
        holder.execute("BEGIN EXCLUSIVE")
        (tmp_path / "conf" / "overrides.toml").write_text(
            f'[[override]]\npath = "{made[0]}"\nadd = ["lighthouse"]\n', encoding="utf-8")
        corrections = RESCORE_STATUS.format("the overrides' (the review page's corrections)")
        wait_for(lambda: corrections in said_by_status(config))
        holder.execute("COMMIT")
        wait_for(lambda: "lighthouse" in exif_keywords(made[0])["iptc"])
        wait_for(lambda: "re-score" not in said_by_status(config))
    finally:
        holder.close()
        daemon.stop()


def test_a_daemon_that_wrote_ends_promptly_on_sigterm_under_a_backups_lock_and_is_no_restore_next(
        tmp_path: Path, tiny_checkpoint: Path) -> None:
    """A reboot during the nightly backup: the daemon has tagged photos, the backup holds the
    database, SIGTERM.  Its close waited SQLite's 30 s to advance the mark that tells a restored
    database (systemd waited on it); now it reads the database's generation, which its every write
    advanced, into the mark and exits at once.  Started again once the lock is let go, the database
    is not taken for one restored from a backup (the mark equals its generation, never ahead of it)."""
    photos = tmp_path / "photos"
    made = [noise_jpeg(photos / f"p{i}.jpg", seed=50 + i) for i in range(2)]
    config = _sync_config(tmp_path, tiny_checkpoint, photos)
    daemon = Daemon(config, tmp_path / "daemon.log")
    daemon.start()
    holder = sqlite3.connect(tmp_path / "conf" / "state" / "tagwatch.db", isolation_level=None, timeout=60)
    try:
        wait_for(lambda: all(set(exif_keywords(p)["iptc"]) & set(OLD_TAGS) for p in made))  # it wrote
        holder.execute("BEGIN EXCLUSIVE")
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGTERM)
        # well within the 30 s it waited (LOCK_WAIT_S): TimeoutExpired before
        assert daemon.proc.wait(timeout=LOCK_WAIT_S / 2) == 0
        generation = holder.execute("SELECT value FROM counters WHERE name = 'generation'").fetchone()[0]
        kept = json.loads((tmp_path / "conf" / "state" / "tagwatch.db.last-used").read_text(encoding="utf-8"))
        assert kept["generation"] == generation  # the mark moved to where the database got, not left behind
        holder.execute("COMMIT")
        mark = len(daemon.log())
        daemon.start()
        (tmp_path / "conf" / "tags.txt").write_text("\n".join(NEW_TAGS) + "\n", encoding="utf-8")
        wait_for(lambda: _rescored(made))  # it writes: the start's check of the mark is long done
        log = daemon.log()[mark:]
        assert "restored from a backup" not in log and " WARNING " not in log, log
        assert status(config).get("restored") is None
    finally:
        holder.close()
        daemon.stop()


def test_a_daemon_started_while_a_backup_holds_the_database_starts_and_catches_up_once_it_is_let_go(
        tmp_path: Path, tiny_checkpoint: Path) -> None:
    """Started at boot while a backup holds the database, with a tag list edited since it last ran
    and a photo added: the start failed on the lock (the re-score's write) and the daemon exited.
    Now it starts, says that the re-score and the new photo wait for the database, ends at once on
    SIGTERM meanwhile, and, started again, catches up once the lock is let go."""
    photos = tmp_path / "photos"
    first = noise_jpeg(photos / "first.jpg", seed=40)
    config = _sync_config(tmp_path, tiny_checkpoint, photos, lock_wait="1s")  # each try: 1 s, not 5
    daemon = Daemon(config, tmp_path / "daemon.log")
    daemon.start()
    wait_for(lambda: set(exif_keywords(first)["iptc"]) & set(OLD_TAGS))
    assert daemon.stop() == 0
    (tmp_path / "conf" / "tags.txt").write_text("\n".join(NEW_TAGS) + "\n", encoding="utf-8")
    added = noise_jpeg(photos / "added.jpg", seed=41)
    holder = sqlite3.connect(tmp_path / "conf" / "state" / "tagwatch.db", isolation_level=None, timeout=60)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        mark = len(daemon.log())
        daemon.start()  # "tagwatch is running", under the lock
        daemon.wait_log(RESCORE_WAITS, since=mark)
        daemon.wait_log(LOCKED, since=mark)  # the added photo waits too
        assert status(config).get("failed") == 0
        assert daemon.stop() == 0  # SIGTERM ends it while the lock lasts
        mark = len(daemon.log())
        daemon.start()
        daemon.wait_log(RESCORE_WAITS, since=mark)
        holder.execute("COMMIT")
        wait_for(lambda: _rescored([first, added]))
        log = daemon.log()
        assert "batch failed" not in log and " ERROR " not in log, log
        assert status(config).get("failed") == 0
    finally:
        holder.close()
        daemon.stop()
