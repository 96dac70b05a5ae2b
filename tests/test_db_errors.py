"""A database a command cannot use, damaged or on a full disk: every command says so in one line
naming the file (and, for damage, `tagwatch db rebuild`) and exits 2, never with a traceback."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Daemon, exif_keywords, noise_jpeg, status, tagwatch, wait_for, write_config
from tagwatch.store import Store
from test_faults import mount_tmpfs
from test_rebuild import damage, library

DAMAGED = ("the database is damaged ({}); `tagwatch db rebuild` keeps what can still be read and sets the "
           "damaged file aside")
COMMANDS = (["status"], ["status", "--json"], ["export"], ["scan", "{photo}"], ["untag", "{photo}"], ["run"])


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The command's only line on stderr (a line of progress before it is no second error)."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(lines) == 1, result.stderr
    assert result.stderr.rstrip().endswith(lines[0])
    return lines[0]


def run_each(config: Path, photo: Path) -> list[tuple[list[str], subprocess.CompletedProcess[str]]]:
    return [(args, tagwatch(*(a.format(photo=photo) for a in args), "--config", str(config)))
            for args in COMMANDS]


def test_every_command_says_a_damaged_database_in_one_line_naming_the_rebuild(
        tmp_path: Path, tiny_checkpoint: Path) -> None:
    """status, scan and export gave a 20-line traceback (sqlite3.DatabaseError: database disk image is
    malformed); only db check and run said it clearly."""
    photo = noise_jpeg(tmp_path / "photos" / "a.jpg", seed=1)
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[photo.parent])
    database = tmp_path / "conf" / "state" / "tagwatch.db"
    library(database)
    with sqlite3.connect(database) as db:
        count = db.execute("PRAGMA page_count").fetchone()[0]
    damage(database, *range(2, count + 1))  # all but the schema: whatever a command reads is damaged

    for args, result in run_each(config, photo):
        assert result.returncode == 2, (args, result.stderr)
        line = one_line(result)
        # run checks first with SQLite's quick check, whose report says more than "malformed"
        found = ".+" if args == ["run"] else r"database disk image is malformed"
        pattern = re.escape(f"tagwatch: error: {database}: " + DAMAGED.format("@@")).replace("@@", found)
        assert re.fullmatch(pattern, line), line


def test_a_file_that_is_no_database_any_more_names_the_rebuild_too(
        tmp_path: Path, tiny_checkpoint: Path) -> None:
    """Its header overwritten: the store cannot even open it ('cannot open database: file is not a
    database'), and that named no way out."""
    photo = noise_jpeg(tmp_path / "photos" / "a.jpg", seed=2)
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[photo.parent])
    database = tmp_path / "conf" / "state" / "tagwatch.db"
    library(database)
    damage(database, 1)
    for args, result in run_each(config, photo):
        assert result.returncode == 2, (args, result.stderr)
        assert one_line(result) == f"tagwatch: error: {database}: " + DAMAGED.format("file is not a database")

    rebuilt = tagwatch("db", "rebuild", "--config", str(config))
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "nothing readable: file is not a database" in rebuilt.stdout
    assert tagwatch("status", "--config", str(config)).returncode == 0  # a fresh, empty database


def fill(folder: Path) -> None:
    """Write until the disk holding ``folder`` has no block left."""
    with (folder / "filler.bin").open("wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


@pytest.fixture
def small(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs to fill, at ``tmp_path/small`` (the test is skipped where none can be
    mounted), unmounted after the test, its daemon stopped by then."""
    folder = tmp_path / "small"
    folder.mkdir()
    why = mount_tmpfs(folder)
    if why is not None:
        pytest.skip(why)
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def database_on(config: Path, database: Path) -> None:
    """Point ``config`` (as write_config wrote it) at ``database``."""
    config.write_text(config.read_text(encoding="utf-8").replace('"state/tagwatch.db"', f'"{database}"'),
                      encoding="utf-8")


class OnSmall:
    """A watched folder ``root`` and a config whose database is ``small/tagwatch.db``; the daemons
    started on it (:meth:`start`) log JSON into one file, read back by :meth:`lines`."""

    def __init__(self, tmp_path: Path, checkpoint: Path, small: Path) -> None:
        self.root = tmp_path / "photos"
        self.root.mkdir()
        self.config = write_config(tmp_path / "conf", checkpoint, watch=[self.root])
        self.database = small / "tagwatch.db"
        database_on(self.config, self.database)
        self.log = tmp_path / "daemon.log"
        self.daemons: list[Daemon] = []

    def start(self, *args: str) -> Daemon:
        """A daemon on it, ``--log-format json`` and ``args``; killed after the test if still running."""
        daemon = Daemon(self.config, self.log, args=["--log-format", "json", *args])
        self.daemons.append(daemon)
        return daemon.start()

    def lines(self) -> list[dict]:
        """Every record logged so far, by every daemon started on it."""
        text = self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def said(self) -> list[dict]:
        """Its WARNING and ERROR records, less the state file's own (it lives beside the database
        here, and says in its own line that it cannot be written)."""
        return [r for r in self.lines()
                if r["level"] in ("warning", "error") and ".state.json" not in r["message"]]


@pytest.fixture
def on_small(tmp_path: Path, tiny_checkpoint: Path, small: Path) -> Iterator[OnSmall]:
    """:class:`OnSmall`; its daemons killed where a failed test left one running, before ``small``
    is unmounted."""
    disk = OnSmall(tmp_path, tiny_checkpoint, small)
    yield disk
    for daemon in disk.daemons:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.kill()


def test_a_database_on_a_full_disk_is_one_line_saying_so_for_every_command(
        tmp_path: Path, tiny_checkpoint: Path, small: Path) -> None:
    """run died with a traceback (ENOSPC writing its lock file); the others said 'cannot open
    database: disk I/O error' (SQLite cannot make its -shm file), not that the disk is full.  A
    rebuild on a full disk set the database aside and then failed, leaving no database."""
    photo = noise_jpeg(tmp_path / "photos" / "a.jpg", seed=3)
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[photo.parent])
    database = small / "db" / "tagwatch.db"
    database_on(config, database)
    Store(database).close()
    before = database.read_bytes()
    fill(small)
    assert os.statvfs(small).f_bavail == 0
    expected = (f"tagwatch: error: {database}: no space left on device (0 KiB free in "
                f"{database.parent}); tagwatch keeps its database, its -wal, -shm and lock files there: "
                "free some space and run the command again")
    for args, result in [*run_each(config, photo),
                         (["db", "rebuild"], tagwatch("db", "rebuild", "--config", str(config)))]:
        assert result.returncode == 2, (args, result.stderr)
        assert one_line(result) == expected, args
    assert database.read_bytes() == before  # the rebuild put it back
    assert not list(database.parent.glob("*.damaged-*"))


def test_a_running_daemon_whose_database_disk_fills_says_it_once_and_goes_on(
        small: Path, on_small: OnSmall) -> None:
    """faults.md: a full disk under the database is one WARNING, tried again with no new line per
    attempt, and the photos are tagged once space returns.  With a photo to record as failed (cut
    short), each attempt logged 'batch failed' at ERROR and its 'skipped' line again (logged before
    its record, which failed)."""
    root, lines = on_small.root, on_small.lines
    daemon = on_small.start("-v")
    warm = noise_jpeg(root / "warm.jpg", seed=1)
    wait_for(lambda: len(exif_keywords(warm)["iptc"]) == 3)
    spare = small / "spare.bin"  # another program's file, deleted while the disk is full
    spare.write_bytes(b"\0" * 8192)
    fill(small)
    photo = noise_jpeg(root / "p.jpg", seed=2)
    bad = noise_jpeg(root / "bad.jpg", seed=3)  # cut short: a failure to record, on the full disk
    bad.write_bytes(bad.read_bytes()[:600])
    wait_for(lambda: any(r["event"] == "retrying" for r in lines()))
    # A little space comes free, enough for a small write and not for a photo's: that write
    # said "the database takes writes again", and the photos' next try "not tagged yet" again
    spare.unlink()
    tries = lambda: [r for r in lines() if "still not tagged (attempt" in r["message"]]  # noqa: E731
    wait_for(lambda: len(tries()) >= 2 * 2)  # two attempts, each failing again, after the space came
    said = [r for r in lines() if r["level"] != "debug"]
    retrying = [r for r in said if r["event"] == "retrying"]
    assert len(retrying) == 1 and "disk is full" in str(retrying[0]["reason"]), retrying
    assert not [r for r in said if "takes writes again" in r["message"]], said
    assert not [r for r in said if r["level"] == "error" or r.get("path") in (str(photo), str(bad))], said
    (small / "filler.bin").unlink()
    wait_for(lambda: len(exif_keywords(photo)["iptc"]) == 3)
    wait_for(lambda: [r for r in lines() if r.get("path") == str(bad) and r["event"] == "skipped"])
    assert len([r for r in lines() if r.get("path") == str(bad)]) == 1  # said once, once recorded
    said = [r["message"] for r in lines() if r["level"] != "debug"]
    assert len([m for m in said if m.startswith("photos are not tagged yet")]) == 1, said
    assert len([m for m in said if "the database takes writes again" in m]) == 1, said  # once back
    assert daemon.stop() == 0


def test_a_photo_deleted_while_the_database_disk_is_full_is_recorded_gone_once_space_returns(
        small: Path, on_small: OnSmall) -> None:
    """A deletion the full database could not record was logged at ERROR ('its deletion not
    recorded: OperationalError: database or disk is full'), one line per photo, and dropped: once
    space returned, `tagwatch status` still counted the photo tagged, and export listed it.  Now
    it waits as photos do, said in one WARNING while it lasts, and is recorded once space returns."""
    root, config, lines, said = on_small.root, on_small.config, on_small.lines, on_small.said
    daemon = on_small.start()
    photos = [noise_jpeg(root / f"{name}.jpg", seed=seed) for seed, name in enumerate("abc", 1)]
    wait_for(lambda: all(len(exif_keywords(p)["iptc"]) == 3 for p in photos))
    wait_for(lambda: status(config)["tagged"] == 3)
    fill(small)
    for photo in photos[1:]:
        photo.unlink()
    wait_for(said)
    assert [r["level"] for r in said()] == ["warning"], said()
    assert said()[0]["event"] == "retrying" and "disk is full" in str(said()[0]["reason"]), said()
    (small / "filler.bin").unlink()
    wait_for(lambda: status(config)["deleted"] == 2)
    assert status(config)["tagged"] == 1
    assert len(said()) == 1, said()  # no line per photo, nor per attempt
    # a deletion's line is held 2 s for a folder's deletion to take it up (docs/faults.md)
    gone = [str(p) for p in photos[1:]]
    wait_for(lambda: sorted(r["path"] for r in lines() if r["event"] == "deleted") == gone)
    assert len([r for r in lines() if "takes writes again" in r["message"]]) == 1
    assert daemon.stop() == 0


def test_photos_renamed_while_the_database_disk_is_full_keep_their_records_once_space_returns(
        small: Path, on_small: OnSmall) -> None:
    """A rename the full database could not record was logged at ERROR ('its rename to … not
    recorded: OperationalError: database or disk is full') and dropped: the old name stayed recorded
    and listed, the new one was tagged as a new photo.  Now renames wait as deletions do, in the
    order they happened (a -> a2 -> a3, then a new photo at a, which must not take a's record), said
    in the one WARNING, and are recorded as moves once space returns: the records (their ids, so
    their ledgers and corrections) follow, nothing is tagged again."""
    root, config, database = on_small.root, on_small.config, on_small.database
    lines, said = on_small.lines, on_small.said
    (root / "sub").mkdir()
    daemon = on_small.start("-v")
    a, b, c = (noise_jpeg(root / f"{name}.jpg", seed=seed) for seed, name in enumerate("abc", 1))
    wait_for(lambda: status(config)["tagged"] == 3)
    keywords = {p.name: exif_keywords(p)["iptc"] for p in (a, b, c)}
    assert all(len(k) == 3 for k in keywords.values())

    def rows() -> dict[str, tuple[int, str]]:
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
            found = db.execute("SELECT id, path, state FROM files").fetchall()
        return {path: (id_, state) for id_, path, state in found}

    ids = {Path(path).name: id_ for path, (id_, _) in rows().items()}
    fill(small)
    a.rename(root / "a2.jpg")
    (root / "a2.jpg").rename(root / "a3.jpg")
    b.rename(root / "sub" / "b.jpg")
    wait_for(said)
    new_a = noise_jpeg(a, seed=4)  # another photo at the old name, while the renames wait
    wait_for(lambda: any(r["message"].startswith(f"{new_a}: waits for the rename") for r in lines()))
    assert rows()[str(a)] == (ids["a.jpg"], "done")  # not recorded yet, and not taken by the new photo
    (small / "filler.bin").unlink()
    # the same records under the new names, and one of its own for the new photo
    now = {str(root / "a3.jpg"): (ids["a.jpg"], "done"), str(c): (ids["c.jpg"], "done"),
           str(root / "sub" / "b.jpg"): (ids["b.jpg"], "done")}
    wait_for(lambda: {p: r for p, r in rows().items() if p in now} == now
             and rows().get(str(new_a), (0, ""))[1] == "done")
    assert str(root / "a2.jpg") not in rows() and str(b) not in rows()
    assert rows()[str(new_a)][0] not in ids.values()  # a record of its own
    assert [r["level"] for r in said()] == ["warning"], said()  # no line per photo, nor per attempt
    assert said()[0]["event"] == "retrying" and "disk is full" in str(said()[0]["reason"]), said()
    moves = [(r["from"], r["path"]) for r in lines() if r["event"] == "moved"]
    assert moves == [(str(a), str(root / "a2.jpg")), (str(root / "a2.jpg"), str(root / "a3.jpg")),
                     (str(b), str(root / "sub" / "b.jpg"))], moves
    tagged = [r["path"] for r in lines() if r["event"] == "tagged"]
    assert sorted(tagged) == sorted([str(a), str(b), str(c), str(new_a)]), tagged  # the new photo alone
    assert exif_keywords(root / "a3.jpg")["iptc"] == keywords["a.jpg"]
    assert exif_keywords(root / "sub" / "b.jpg")["iptc"] == keywords["b.jpg"]
    assert status(config)["tagged"] == 4
    assert len([r for r in lines() if "takes writes again" in r["message"]]) == 1
    assert daemon.stop() == 0


def test_renames_still_waiting_as_the_daemon_stops_are_said_and_found_by_the_next_start(
        small: Path, on_small: OnSmall) -> None:
    """Worker._last_try's decision (docs/faults.md): a daemon stopped while renames wait for its full
    database says so in one line and keeps them nowhere else; the next start's scan records the
    photo moved under its own name as moved, and sees the one renamed as gone and new, tagged from
    the vector kept by its content: nothing is encoded again."""
    root, config, lines = on_small.root, on_small.config, on_small.lines
    (root / "sub").mkdir()
    daemon = on_small.start()
    a, b = noise_jpeg(root / "a.jpg", seed=1), noise_jpeg(root / "b.jpg", seed=2)
    wait_for(lambda: status(config)["tagged"] == 2)
    encoded = status(config)["encoded"]
    fill(small)
    a.rename(root / "a3.jpg")
    b.rename(root / "sub" / "b.jpg")
    wait_for(lambda: [r for r in lines() if r["event"] == "retrying"])
    daemon.stop()
    stops = [r for r in lines() if "not recorded as tagwatch stops" in r["message"]]
    assert len(stops) == 1 and stops[0]["level"] == "warning", stops
    said = stops[0]["message"]  # one line, naming the reason and what the next start does
    assert "\n" not in said and "full" in said, said
    assert "a correction naming its old name follows it" in said, said
    # counted as said: "1 rename" or "2 renames" (the second may not have reached the worker
    # by the stop), never "1 renames and 0 deletions"
    assert re.match(r"(1 rename|2 renames) not recorded as tagwatch stops: ", said), said
    (small / "filler.bin").unlink()
    mark = len(lines())
    daemon = on_small.start()
    wait_for(lambda: status(config)["tagged"] == 2 and status(config)["deleted"] == 1)
    # its line is held 2 s for a folder's deletion to take it up (docs/faults.md)
    wait_for(lambda: [r for r in lines()[mark:] if r["event"] == "deleted"])
    after = lines()[mark:]
    assert [(r["from"], r["path"]) for r in after if r["event"] == "moved"] == [
        (str(b), str(root / "sub" / "b.jpg"))]
    assert [r["path"] for r in after if r["event"] == "deleted"] == [str(a)]
    assert status(config)["encoded"] == encoded
    assert daemon.stop() == 0
