"""The SQLite store and the scoring rules, on their own."""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import Daemon, noise_jpeg, status, tagwatch, wait_for, write_config
from tagwatch.cli import status as status_command
from tagwatch.config import Config
from tagwatch.rebuild import rebuild
from tagwatch.store import DELETED, DONE, PENDING, REMOVED, SCHEMA_VERSION, Store, restore_warning
from tagwatch.tagger import TagMatrix, normalize, predict, select
from tagwatch.vocabulary import parse_tag_list


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "data" / "tw.db")
    yield store
    store.close()


def test_database_is_private_versioned_and_in_wal_mode(tmp_path: Path, store: Store) -> None:
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700
    db = sqlite3.connect(store.path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    store.close()
    Store(store.path).close()  # reopening an up-to-date database migrates nothing


def test_a_version_1_database_upgrades_keeping_its_ledger(tmp_path: Path) -> None:
    from tagwatch.store import _MIGRATIONS

    path = tmp_path / "tw.db"
    db = sqlite3.connect(path)
    db.executescript(_MIGRATIONS[0] + "PRAGMA user_version = 1;")
    db.execute("INSERT INTO files (id, path, state, updated) VALUES (1, '/p/a.jpg', 'done', 0)")
    db.execute("INSERT INTO ledger (file_id, keyword, written) VALUES (1, 'beach', 0)")
    db.commit()
    db.close()
    store = Store(path)
    assert store.ledger(1) == ["beach"] and store.ledger(1, REMOVED) == []
    store.add_ledger(1, ["Anna"], REMOVED)
    assert store.ledger(1, REMOVED) == ["Anna"] and store.stats("m")["keywords_written"] == 1
    store.close()


def test_a_migration_that_cannot_run_names_its_step_and_the_way_out(tmp_path: Path) -> None:
    """A step that fails leaves the steps before it done and says which step, and what to do."""
    from tagwatch.store import _MIGRATIONS, StoreError

    path = tmp_path / "tw.db"
    db = sqlite3.connect(path)
    db.executescript("".join(_MIGRATIONS[:3]) + "PRAGMA user_version = 3;"
                     "CREATE TABLE places (lat INTEGER);")  # a half of step 4 no build ever left
    db.close()
    with pytest.raises(StoreError, match=r"from schema 3 \(step 4, places\): table places already "
                                         r"exists; `tagwatch db rebuild`"):
        Store(path)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 3  # step 4's transaction rolled back
    db.close()


def test_a_migration_step_found_done_under_a_backups_lock_says_the_lock(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A step whose effect is in the database already (a build that numbered its steps otherwise)
    only writes its number: that write met a backup's lock outside the step's try, and the start
    ended in "cannot open database: database is locked", not in the lock's own message."""
    from tagwatch import store as store_module
    from tagwatch.store import StoreError

    path = tmp_path / "tw.db"
    Store(path).close()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION - 1}")  # the last step's effect is there
    db.close()
    monkeypatch.setattr(store_module, "LOCK_WAIT_S", 0.1)  # SQLite's wait, not the test's 30 s
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        with pytest.raises(StoreError, match="another program holds it locked"):
            Store(path)
    finally:
        holder.close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tw.db"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(Exception, match="newer than this tagwatch"):
        Store(path)


def test_vectors_of_two_models_never_mix(store: Store) -> None:
    key = b"k" * 16
    store.put_image_vectors({key: np.ones(4, np.float32)}, "model-a")
    assert store.image_vectors([key], "model-b") == {}
    assert np.allclose(store.image_vectors([key], "model-a")[key], 1.0)
    store.put_text_vectors({"a photo of a dog.": np.ones(4)}, "model-a")
    assert store.text_vectors(["a photo of a dog."], "model-b") == {}
    assert store.stats("model-a")["encoded"] == 1


def test_moves_carry_the_row_and_the_ledger(store: Store) -> None:
    file_id = store.record_file("/p/a.jpg", key=b"k" * 16, size=1, mtime_ns=2, state=DONE)
    store.add_ledger(file_id, ["beach"])
    assert store.move("/p/a.jpg", "/p/sub/b.jpg")
    row = store.file("/p/sub/b.jpg")
    assert row is not None and row.id == file_id and store.file("/p/a.jpg") is None
    assert store.ledger(file_id) == ["beach"]
    assert not store.move("/p/unknown.jpg", "/p/x.jpg")
    assert store.move_tree("/p/sub", "/q") == 1
    assert store.file("/q/b.jpg") is not None
    assert store.mark_deleted("/q/b.jpg") and store.file("/q/b.jpg").state == DELETED
    assert store.files_under("/q") == {}


def test_a_deleted_row_does_not_follow_a_new_file_moved_from_its_path(store: Store) -> None:
    """Delete a.jpg, then an app saves a new a.jpg and renames it: the new file is unknown, not
    the old one's tags under a new name (which would leave it untagged)."""
    store.record_file("/p/a.jpg", key=b"k" * 16, size=1, mtime_ns=2, state=DONE)
    store.record_file("/p/live.jpg", key=b"l" * 16, size=1, mtime_ns=2, state=DONE)
    store.mark_deleted("/p/a.jpg")
    assert not store.move("/p/a.jpg", "/p/b.jpg")
    assert store.file("/p/b.jpg") is None
    store.record_file("/q/live.jpg", key=b"m" * 16, size=1, mtime_ns=2, state=DONE)
    store.mark_deleted("/p/live.jpg")
    assert store.move_tree("/p", "/q") == 0  # a deleted row never replaces a live one
    assert store.file("/q/live.jpg").key == b"m" * 16


def test_prefix_queries_do_not_leak_into_sibling_folders(store: Store) -> None:
    for path in ("/p/a.jpg", "/p/sub/b.jpg", "/p-other/c.jpg", "/p0/d.jpg"):
        store.record_file(path, key=None, size=1, mtime_ns=1, state=DONE)
    assert sorted(store.files_under("/p")) == ["/p/a.jpg", "/p/sub/b.jpg"]


def test_select_threshold_top_k_and_order() -> None:
    scores = np.array([[0.1, 0.5, 0.3, 0.26, 0.2], [0.9, 0.1, 0.1, 0.1, 0.1]], np.float32)
    assert select(scores, 0.25, 10) == [[1, 2, 3], [0]]
    assert select(scores, 0.25, 2) == [[1, 2], [0]]
    assert select(scores, 0.95, 3) == [[], []]
    assert select(scores, -1.0, 1) == [[1], [0]]
    # top_k 0: no cap, every tag above its threshold (rtag's output), with one threshold or per tag
    assert select(scores, -1.0, 0) == [[1, 2, 3, 4, 0], [0, 1, 2, 3, 4]]
    assert select(scores, np.array([0.25, 0.6, 0.25, 0.25, 0.1], np.float32), 0) == [[2, 3, 4], [0]]
    assert select(np.zeros((2, 0), np.float32), 0.25, 0) == [[], []]  # an empty list


def test_a_photos_scores_and_tags_are_the_same_whatever_it_is_scored_with() -> None:
    """A library re-scored in chunks, a daemon batch, `explain` of one photo: the float32 product
    rounded differently per batch size (15% of scores moved by an ulp), so a photo at a threshold
    could be tagged in one and not the other (report xN #5)."""
    rng = np.random.default_rng(5)
    images = rng.standard_normal((300, 512)).astype(np.float16)  # stored vectors are float16
    tags = TagMatrix(tuple(f"t{i}" for i in range(200)), normalize(rng.standard_normal((200, 512))))
    whole = tags.scores(images)
    assert whole.dtype == np.float32
    for size in (1, 2, 3, 8, 100):
        parts = np.concatenate([tags.scores(images[s:s + size]) for s in range(0, len(images), size)])
        assert np.array_equal(parts, whole)
    # each photo's best tag with its threshold one float32 step below its score: tagged, alone or not
    best = whole.argmax(axis=1)
    limits = np.full(len(tags.keywords), 1.0, np.float32)
    for photo in range(0, len(images), 40):
        limits[:] = 1.0
        limits[best[photo]] = np.nextafter(whole[photo, best[photo]], np.float32(-1))
        expected = [(f"t{best[photo]}", float(whole[photo, best[photo]]))]
        assert predict(images[photo], tags, limits, 10)[0] == expected
        assert predict(images, tags, limits, 10)[photo] == expected


def test_tag_vectors_average_their_prompts() -> None:
    vocabulary = parse_tag_list("dog\ncat\n", ("a {}", "the {}"), Path("t"))
    vectors = {"a dog": np.array([1.0, 0.0, 0.0]), "the dog": np.array([0.0, 1.0, 0.0]),
               "a cat": np.array([0.0, 0.0, 2.0]), "the cat": np.array([0.0, 0.0, 1.0])}
    tags = TagMatrix.build(vocabulary, vectors)
    assert np.allclose(tags.vectors[0], normalize(np.array([1.0, 1.0, 0.0])))
    assert np.allclose(tags.vectors[1], [0.0, 0.0, 1.0])
    result = predict(np.array([[3.0, 3.0, 0.1]]), tags, threshold=0.5, top_k=5)
    assert [k for k, _ in result[0]] == ["dog"]
    assert result[0][0][1] == pytest.approx(float(normalize(np.array([3.0, 3.0, 0.1])) @ tags.vectors[0]))


def test_a_damaged_database_is_refused_clearly_and_rebuilt(tmp_path: Path, tiny_checkpoint: Path) -> None:
    photos = tmp_path / "photos"
    for i in range(40):
        noise_jpeg(photos / f"{i:02}.jpg", seed=500 + i)
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[photos])
    assert tagwatch("scan", str(photos), "--config", str(config)).returncode == 0
    database = tmp_path / "conf" / "state" / "tagwatch.db"
    with sqlite3.connect(database) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
    with database.open("r+b") as handle:  # a bad sector: garbage over some pages past the schema
        for page in range(2, pages, 3):  # from each page's start: its header, never unused space
            handle.seek(page * page_size)
            handle.write(os.urandom(200))

    refused = tagwatch("run", "--config", str(config))
    assert refused.returncode == 2
    [line] = refused.stderr.strip().splitlines()
    assert "the database is damaged" in line and "tagwatch db rebuild" in line and str(database) in line
    assert tagwatch("db", "check", "--config", str(config)).returncode == 2

    rebuilt = tagwatch("db", "rebuild", "--config", str(config))
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "carried over:" in rebuilt.stdout
    assert list(database.parent.glob("tagwatch.db.damaged-*"))  # never deleted
    assert tagwatch("db", "check", "--config", str(config)).stdout.strip() == f"{database}: ok"
    with sqlite3.connect(database) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    scanned = tagwatch("scan", str(photos), "--config", str(config))
    assert scanned.returncode == 0 and RESTORED not in scanned.stderr  # rebuilt, not an older copy
    assert status(config)["tagged"] == 40  # what was lost is tagged again


RESTORED = "older than the one tagwatch last used here (restored from a backup?)"


def _start(path: Path, caplog: pytest.LogCaptureFixture, write: str = "") -> bool:
    """Open the database as a command does (recording ``write``, where given) and close it: was it
    taken for an older copy than the one last used here?"""
    caplog.clear()
    with caplog.at_level("WARNING", logger="tagwatch"):
        store = Store(path)
    try:
        if write:
            store.record_file(write, key=b"k", size=1, mtime_ns=1, state=PENDING)
        return RESTORED in caplog.text
    finally:
        store.close()


def _online_backup(path: Path, backup: Path) -> None:
    """A consistent snapshot of the live database at ``path`` into ``backup`` (sqlite3's .backup)."""
    live, copy = sqlite3.connect(path), sqlite3.connect(backup)
    try:
        live.backup(copy)
    finally:
        live.close()
        copy.close()


def _put_in_place(copy: Path, path: Path) -> None:
    """A database file copied over the one at ``path`` (its log removed, as service.md says)."""
    shutil.copy(copy, path)
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _restore_an_older_copy(path: Path, backup: Path) -> None:
    """A backup of the database at ``path`` taken, one write made after it (a `scan` of another
    folder), and the backup put back: a database older than the one tagwatch last used."""
    _online_backup(path, backup)
    store = Store(path)
    try:
        store.record_file("/elsewhere/x.jpg", key=b"k", size=1, mtime_ns=1, state=PENDING)
    finally:
        store.close()
    _put_in_place(backup, path)


def test_an_older_copy_of_the_database_is_told_from_a_start_a_crash_a_rebuild_and_a_move(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """xX #2: tagwatch notices (one WARNING, recorded) a database older than the one it last used,
    even a backup taken while it ran; an ordinary start, a crash, `db rebuild`, the database moved
    to another machine (or folder), and a database from before this change are never taken for one."""
    path = tmp_path / "data" / "tw.db"
    assert not _start(path, caplog, write="/p/a.jpg")  # a new database
    report, _ = status_command.status(Config(database=path), identity="m")
    assert report["restored"] is None and report["restore_checked"] is None  # no claim: it said false
    assert not _start(path, caplog, write="/p/b.jpg")  # an ordinary start, twice
    assert not _start(path, caplog)

    # A crash: killed after its writes, never closed
    crash = ("import os; from pathlib import Path; from tagwatch.store import Store, PENDING; "
             f"s = Store(Path({str(path)!r})); "
             "s.record_file('/p/c.jpg', key=b'k', size=1, mtime_ns=1, state=PENDING); os._exit(9)")
    assert subprocess.run([sys.executable, "-c", crash]).returncode == 9
    assert not _start(path, caplog, write="/p/d.jpg")

    # A backup taken while a command runs, restored after it wrote more: noticed, once
    backup = tmp_path / "backup.db"
    store = Store(path)
    try:
        store.record_file("/p/e.jpg", key=b"k", size=1, mtime_ns=1, state=PENDING)
        _online_backup(path, backup)  # sqlite3's .backup: a consistent snapshot of the live database
        store.record_file("/p/f.jpg", key=b"k", size=1, mtime_ns=1, state=PENDING)
    finally:
        store.close()
    _put_in_place(backup, path)
    assert _start(path, caplog)
    report, _ = status_command.status(Config(database=path), identity="m")  # tagwatch status says so
    assert report["restored"] is not None and report["files"] == 5  # as of the backup: no f.jpg
    assert "found older than the one last used here on " in status_command.render(report, [])
    assert not _start(path, caplog, write="/p/g.jpg")  # the mark follows the restored database

    # The daemon's check of every watched photo ends the note (see the daemon's test below): only a
    # pass begun after the restore was found; when it was found is kept, for Writeback's rule
    store = Store(path)
    try:
        found = store.restored_ns()
        assert found is not None
        assert store.restore_checked(found - 1) is None and store.restore_unchecked() == found
        assert store.restore_checked(found) == found and store.restore_unchecked() is None
        assert store.restore_checked(found) is None  # ended once
        assert store.restored_ns() == found
        _online_backup(path, backup)  # another backup, restored after more writes: said again
    finally:
        store.close()
    assert not _start(path, caplog, write="/p/g2.jpg")
    _put_in_place(backup, path)
    assert _start(path, caplog)
    report, _ = status_command.status(Config(database=path), identity="m")
    assert report["restored"] > found / 1e9 and not report["restore_checked"]
    assert "found older than the one last used here on " in status_command.render(report, [])

    # A restore found while a backup holds the database (xZ #2, #4): the start does not wait for the
    # lock to record it; it is known at once (status says it; Writeback's rule holds, so no keyword
    # of the restore's is declined once the lock is gone) and recorded by the first write, before it
    store = Store(path)
    try:
        store.record_file("/p/g3.jpg", key=b"k", size=1, mtime_ns=1, state=PENDING)
        _online_backup(path, backup)
        store.record_file("/p/g4.jpg", key=b"k", size=1, mtime_ns=1, state=PENDING)
    finally:
        store.close()
    _put_in_place(backup, path)
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        caplog.clear()
        with caplog.at_level("WARNING", logger="tagwatch"):
            store = Store(path)
        try:
            assert caplog.text.count(RESTORED) == 1 and "not recorded yet: database is locked" in caplog.text
            pending = store.restored_ns()
            assert pending is not None and pending > report["restored"] * 1e9
            assert store.restore_unchecked() == pending
            report, _ = status_command.status(Config(database=path), identity="m")  # another process
            assert "found older than the one last used here on " in status_command.render(report, [])
            holder.execute("COMMIT")
            store.record_file("/p/g5.jpg", key=b"k", size=1, mtime_ns=1, state=PENDING)
        finally:
            store.close()
    finally:
        holder.close()
    store = Store(path)
    try:
        assert store.restored_ns() == pending  # recorded by the first write
    finally:
        store.close()
    assert not _start(path, caplog)  # noticed once: the next start is an ordinary one

    # A copy taken while tagwatch ran, which wrote more before it was stopped during another backup's
    # lock (xZ #1): its close could not write, the mark stayed behind, and the copy, restored, went
    # unnoticed.  Every write advances the generation; the close reads it into the mark.
    store = Store(path)
    try:
        store.record_file("/p/g6.jpg", key=b"k", size=1, mtime_ns=1, state=PENDING)
        _online_backup(path, backup)
        store.record_file("/p/g7.jpg", key=b"k", size=1, mtime_ns=1, state=PENDING)  # within the 10 min
        holder = sqlite3.connect(path, isolation_level=None)
        try:
            holder.execute("BEGIN EXCLUSIVE")
            store.close()  # the stop, under the lock
        finally:
            holder.close()
    except BaseException:
        store.close()
        raise
    _put_in_place(backup, path)
    assert _start(path, caplog)

    # db rebuild carries every readable row into a new file: not an older copy
    rebuild(path)
    assert not _start(path, caplog, write="/p/h.jpg")

    # The database copied to another machine (or folder) that used another database, and one made
    # before this change (no identity): neither is the database last used there
    elsewhere = tmp_path / "other" / "tw.db"
    assert not _start(elsewhere, caplog, write="/q/a.jpg")
    assert not _start(elsewhere, caplog, write="/q/b.jpg")
    _put_in_place(backup, elsewhere)
    assert not _start(elsewhere, caplog, write="/q/c.jpg")
    db = sqlite3.connect(backup)
    db.execute("DELETE FROM counters WHERE name IN ('identity', 'generation')")
    db.commit()
    db.close()
    _put_in_place(backup, path)
    assert not _start(path, caplog)


def test_a_database_another_program_holds_locked_is_not_read_only_and_a_short_wait_is_this_threads(
        tmp_path: Path) -> None:
    """A backup script holds the database (BEGIN EXCLUSIVE) as the daemon starts: its check that the
    database can be written waited SQLite's 30 s, then said "database is locked" as a read-only
    database's reason (check the permissions).  A thread's lock_wait (the daemon's photo batches)
    fails its writes within its own wait, and the connection's wait is put back for the others."""
    path = tmp_path / "tw.db"
    store = Store(path)
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        store.record_file("/p/a.jpg", key=b"k", size=1, mtime_ns=1, state=PENDING)
        holder.execute("BEGIN EXCLUSIVE")
        assert store.writable() is None  # locked, not read-only: asked without waiting for the lock
        with store.lock_wait(0.05), pytest.raises(sqlite3.OperationalError, match="database is locked"):
            store.record_file("/p/b.jpg", key=b"k", size=1, mtime_ns=1, state=PENDING)
        assert store.file("/p/a.jpg") is not None  # reading never waits for the lock (WAL)
        holder.execute("COMMIT")
        with store.transaction() as db:
            assert db.execute("PRAGMA busy_timeout").fetchone()[0] == 30_000  # the others' wait, put back
        assert store.file("/p/b.jpg") is None
    finally:
        holder.close()
        store.close()


def test_the_daemons_start_words_a_restore_a_command_found_as_the_command_did_after_its_opening(
        tmp_path: Path) -> None:
    """The daemon's start said a restore a command had found in a copy of the store's sentence of
    its own, which had drifted from it (it left out that the keywords are written again).  One
    function words both now: they differ in their opening alone, and in no test's assertion."""
    database = tmp_path / "tagwatch.db"
    now, then = restore_warning(database), restore_warning(database, 1_765_000_000 * 10**9)
    assert now.startswith(f"{database}: this database is older") and RESTORED in now
    assert "was found older than the one tagwatch last used here on " in then and RESTORED not in then

    def rest(line: str) -> str:
        return line.split("(restored from a backup?)")[1].replace("before then", "before now")

    assert rest(now) == rest(then) and "written again where still predicted" in rest(then)
    assert restore_warning(database, unrecorded=" (not recorded yet: x)").endswith("(not recorded yet: x)")


def test_status_says_a_restored_database_until_the_daemon_has_checked_the_watched_folders_again(
        tmp_path: Path, tiny_checkpoint: Path) -> None:
    """A backup of the database put back: `tagwatch status` said "found older than the one last used
    here on …" for the database's whole life, a year later still.  Now it says it until the daemon
    has checked every watched photo again since (the photos that copy did not know are settled then,
    one line says so), and not after, the daemon stopped or not.  When it was found stays recorded
    (`restored` in --json): Writeback's rule still needs it for a photo not changed since."""
    photos = tmp_path / "photos"
    for i in range(2):
        noise_jpeg(photos / f"p{i}.jpg", seed=60 + i)
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[photos])
    database = tmp_path / "conf" / "state" / "tagwatch.db"
    daemon = Daemon(config, tmp_path / "daemon.log")
    daemon.start()
    try:
        wait_for(lambda: status(config)["tagged"] == 2)
        backup = tmp_path / "backup.db"
        _online_backup(database, backup)  # sqlite3's .backup, as service.md says, while the daemon runs
        later = noise_jpeg(photos / "later.jpg", seed=70)  # tagged after the copy: it does not know it
        wait_for(lambda: status(config)["tagged"] == 3)
    finally:
        daemon.stop()
    _put_in_place(backup, database)

    said = tagwatch("status", "--config", str(config))
    assert RESTORED in said.stderr  # the first command to open it notices it, once
    note, until = "found older than the one last used here on ", "said until the daemon has checked"
    assert note in said.stdout and until in said.stdout
    assert note in tagwatch("status", "--config", str(config)).stdout  # every time, until then

    mark = len(daemon.log())
    daemon.start()
    try:
        log = daemon.wait_log("every photo in the watched folders checked again since the database was found")
        assert note not in tagwatch("status", "--config", str(config)).stdout
        # the photo the copy did not know was looked at first (its scan queued it)
        checked = log.index("every photo in the watched folders", mark)
        assert "1 queued" in log[mark:checked] and f"{later}" in log[mark:checked], log[mark:]
    finally:
        daemon.stop()
    assert note not in tagwatch("status", "--config", str(config)).stdout
    report = status(config)
    assert report["restored"] is not None and report["restore_checked"] is True
    # found and said by the first command; the daemon's start said it again, for its log (xZ #9)
    started = daemon.log()[mark:]
    assert RESTORED not in started and started.count("was found older than the one tagwatch last used") == 1


def test_a_restore_a_command_found_is_logged_at_the_start_and_its_note_ends_after_a_start_under_a_lock(
        tmp_path: Path, tiny_checkpoint: Path) -> None:
    """A backup put back, `tagwatch status` run first (it finds the restore and says it on its own
    terminal), then the daemon started while the nightly backup holds the database.  The daemon's
    log had nothing of the restore (xZ #9): now its start says it, with its event.  Its start-up scan
    found every photo as the copy knew it, so the check was settled at once, under the lock: its
    record waited 30 s for the lock and was dropped, and `tagwatch status` kept the note until the
    next start (xZ #6).  Now the record waits the lock out, and the note ends once it is let go."""
    photos = tmp_path / "photos"
    for i in range(2):
        noise_jpeg(photos / f"p{i}.jpg", seed=80 + i)
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[photos])
    # the check's record under the lock waits 1 s before it says so, not 5
    config.write_text('database_lock_wait = "1s"\n' + config.read_text(encoding="utf-8"), encoding="utf-8")
    database = tmp_path / "conf" / "state" / "tagwatch.db"
    daemon = Daemon(config, tmp_path / "daemon.log", args=["-v"])  # -v: the check's record's lines
    daemon.start()
    try:
        wait_for(lambda: status(config)["tagged"] == 2)
    finally:
        daemon.stop()
    _restore_an_older_copy(database, tmp_path / "backup.db")
    note = "found older than the one last used here on "
    said = tagwatch("status", "--config", str(config))
    assert RESTORED in said.stderr and note in said.stdout  # found, said and recorded by the command

    holder = sqlite3.connect(database, isolation_level=None, timeout=60)
    mark = len(daemon.log())
    try:
        holder.execute("BEGIN EXCLUSIVE")
        daemon.start()
        log = daemon.wait_log("the restore's check not recorded", since=mark)  # it met the lock
        start = log[mark:]
        assert " WARNING " in start and "was found older than the one tagwatch last used here on " in start
        assert note in tagwatch("status", "--config", str(config)).stdout  # not checked while locked
        holder.execute("COMMIT")
        daemon.wait_log("every photo in the watched folders checked again since the database was found",
                        since=mark)
        assert note not in tagwatch("status", "--config", str(config)).stdout
        assert status(config)["restore_checked"] is True
        assert daemon.log()[mark:].count("older than the one tagwatch last used here") == 1  # said once
    finally:
        holder.close()
        daemon.stop()


def test_a_daemon_started_on_a_restored_database_under_a_lock_says_the_restore_once_with_its_page(
        tmp_path: Path, tiny_checkpoint: Path) -> None:
    """A backup put back, and the daemon, which hosts the review page ([web]), started while the
    nightly backup holds the database: its start finds the restore and cannot record it yet.  The
    page opened a connection of its own, found it again and said the WARNING a second time in the
    daemon's log.  Now the daemon's log says it once; a command (`tagwatch status`) still says it on
    its own terminal until it is recorded."""
    photos = tmp_path / "photos"
    noise_jpeg(photos / "p0.jpg", seed=90)
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[photos],
                          extra="[web]\nenabled = true\nport = 0\n")
    database = tmp_path / "conf" / "state" / "tagwatch.db"
    daemon = Daemon(config, tmp_path / "daemon.log")
    daemon.start()
    try:
        wait_for(lambda: status(config)["tagged"] == 1)
    finally:
        daemon.stop()
    _restore_an_older_copy(database, tmp_path / "backup.db")

    holder = sqlite3.connect(database, isolation_level=None, timeout=60)
    mark = len(daemon.log())
    try:
        holder.execute("BEGIN EXCLUSIVE")
        daemon.start()
        daemon.wait_log("review page on ", since=mark)  # the page's connection is open
        assert RESTORED in tagwatch("status", "--config", str(config)).stderr  # its terminal: not recorded
        holder.execute("COMMIT")
        daemon.wait_log("every photo in the watched folders checked again since the database was found",
                        since=mark)
        log = daemon.log()[mark:]
        assert log.count(RESTORED) == 1, log  # the daemon's start said it; its page did not again
        assert RESTORED not in tagwatch("status", "--config", str(config)).stderr  # recorded now
    finally:
        holder.close()
        daemon.stop()
