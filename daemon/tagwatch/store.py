"""SQLite: the file table, vectors and captions by content key and model, text vectors, the keyword ledger.

All SQL lives here.  The database runs in WAL mode so ``tagwatch status`` can read while the daemon
writes, and every schema change is a numbered migration so an old database upgrades in place.  The
numbers alone do not say what a database holds: branches merged into main renumbered their steps
(see ``_STEPS``), so each step is run only where its effect is missing.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import write_atomic
from .retry import sqlite_locked

log = logging.getLogger(__name__)

# Vectors are stored as float16: half the disk of float32 and cosine scores within ~1e-3 of it.
# Scoring always reads this stored form, so a fresh encode and a retag give identical tags.
VECTOR_DTYPE = np.dtype("<f2")

PENDING, DONE, FAILED, DELETED = "pending", "done", "failed", "deleted"
UNTAGGED = "untagged"  # `tagwatch untag` took our keywords out: the daemon leaves it alone
# Ledger actions: a keyword tagwatch put into the file, or a person's keyword "overwrite" took out
ADDED, REMOVED = "added", "removed"
USER = "user"  # written because an override asked for it: the person's, never removed by tagwatch
# A keyword tagwatch wrote that a person (or another program) then took out of the file: never
# written into this photo again, and no longer ours (sync and untag leave it alone)
DECLINED = "declined"
# A keyword of ours that a write of tagwatch's took out again (sync: no longer predicted; a correction;
# a place the photo is no longer at).  Its ``written`` is the change time of the version that write put
# in place (the file system's clock, as ``files.written_ns``), so that a save made within seconds after
# it, built from the version before it, is told from a person putting the keyword back.
WITHDRAWN = "withdrawn"


def utf8_name(path: str) -> bool:
    """Can the store (and exiftool's argument pipe) hold ``path``?  A name decoded with surrogate
    escapes (an old card's Latin-1 bytes) cannot: it is never recorded, and SQLite cannot even be
    asked about it (``UnicodeEncodeError``)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_MIGRATIONS: list[str] = [
    # 1: the initial schema
    """
    CREATE TABLE files (
        id INTEGER PRIMARY KEY,
        path TEXT NOT NULL UNIQUE,
        key BLOB,
        size INTEGER,
        mtime_ns INTEGER,
        state TEXT NOT NULL,
        error TEXT,
        tags TEXT,
        tagged_with TEXT,
        updated REAL NOT NULL
    );
    CREATE INDEX files_key ON files(key);
    CREATE INDEX files_state ON files(state);
    CREATE TABLE image_vectors (
        key BLOB NOT NULL,
        model TEXT NOT NULL,
        vector BLOB NOT NULL,
        PRIMARY KEY (key, model)
    ) WITHOUT ROWID;
    CREATE TABLE text_vectors (
        model TEXT NOT NULL,
        prompt TEXT NOT NULL,
        vector BLOB NOT NULL,
        PRIMARY KEY (model, prompt)
    ) WITHOUT ROWID;
    CREATE TABLE ledger (
        file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
        keyword TEXT NOT NULL,
        written REAL NOT NULL,
        PRIMARY KEY (file_id, keyword)
    ) WITHOUT ROWID;
    CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
    INSERT INTO counters VALUES ('encoded', 0);
    """,
    # 2: the ledger also remembers a person's keywords that overwrite mode removed, for untag
    """
    ALTER TABLE ledger ADD COLUMN action TEXT NOT NULL DEFAULT 'added';
    """,
    # 3: the hierarchical paths a keyword was written under (rich tag lists' parents), newline-separated;
    # NULL: the keyword itself.  untag and sync remove exactly these spellings.
    """
    ALTER TABLE ledger ADD COLUMN paths TEXT;
    CREATE INDEX ledger_paths ON ledger(file_id) WHERE paths IS NOT NULL;
    """,
    # 4: places.  The gazetteer's answer for a point, keyed by its coordinates (1e-5 degrees, ~1 m)
    # and the gazetteer's version: a GPS edit, a retag or a restart never loads the gazetteer for a
    # point it has seen.  ``located``: the coordinates each file had when last written and the place
    # keywords it was given.  ``filled``: single-value fields tagwatch filled because they were empty
    # (IPTC/XMP City...): the values that are ours (a JSON list; two while a write is in flight) and
    # what the field held before (NULL: absent), so untag puts it back exactly.
    """
    CREATE TABLE places (
        lat INTEGER NOT NULL,
        lon INTEGER NOT NULL,
        source TEXT NOT NULL,
        country TEXT,
        region TEXT,
        locality TEXT,
        distance REAL,
        PRIMARY KEY (lat, lon, source)
    ) WITHOUT ROWID;
    CREATE TABLE located (
        file_id INTEGER PRIMARY KEY REFERENCES files(id) ON DELETE CASCADE,
        lat REAL,
        lon REAL,
        keywords TEXT NOT NULL
    );
    CREATE TABLE filled (
        file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
        field TEXT NOT NULL,
        ours TEXT NOT NULL,
        previous TEXT,
        written REAL NOT NULL,
        PRIMARY KEY (file_id, field)
    ) WITHOUT ROWID;
    """,
    # 5: a person's removals.  ``ledger.pending``: a keyword recorded ahead of a write that has not
    # been recorded done (a crash may have stopped it before the file changed), so its absence from
    # the file says nothing about a person; rows of files left pending count as such.
    # ``files.written_ns``: the change time (st_ctime_ns, the file system's clock) of the version
    # tagwatch last added keywords to, to tell a save built from the version before it.
    """
    ALTER TABLE ledger ADD COLUMN pending INTEGER NOT NULL DEFAULT 0;
    UPDATE ledger SET pending = 1
      WHERE action = 'added' AND file_id IN (SELECT id FROM files WHERE state = 'pending');
    ALTER TABLE files ADD COLUMN written_ns INTEGER;
    """,
    # 6: captions, by content key and captioner (its model and decoding settings), like vectors; the
    # ``captioned`` counter counts captions generated, as ``encoded`` counts images encoded
    """
    CREATE TABLE captions (
        key BLOB NOT NULL,
        captioner TEXT NOT NULL,
        caption TEXT NOT NULL,
        PRIMARY KEY (key, captioner)
    ) WITHOUT ROWID;
    INSERT INTO counters VALUES ('captioned', 0);
    """,
    # 7: ``files.found``: a digest of the metadata of the version tagwatch found before its first
    # write into the file (see original.header_digest), to tell that version sent again (a drop
    # folder's re-delivery, a restore from a backup) from a person taking our keywords out
    """
    ALTER TABLE files ADD COLUMN found BLOB;
    """,
    # 8: ``files.tagged``: when tagwatch last wrote keywords into the file (or its sidecar), else when
    # it first tagged it: the review page's "recently tagged", which a re-check that writes nothing
    # (``updated`` moves at each) leaves where it was.  A tagged file's last write, else its last change.
    """
    ALTER TABLE files ADD COLUMN tagged REAL;
    UPDATE files SET tagged = COALESCE(written_ns / 1e9, updated) WHERE state = 'done';
    """,
]
SCHEMA_VERSION = len(_MIGRATIONS)


def _tables(db: sqlite3.Connection) -> set[str]:
    return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {r[1] for r in db.execute(f"PRAGMA table_info({table})")}


# Each migration's name (for the log) and how to tell its effect is already in a database.  A
# user_version says which numbered steps ran, but not always which steps: builds of main numbered
# them differently before branches were merged.  Every numbering main ever had:
#   1..3 as now (5511b57, the first release, is 3);
#   4 = captions (the captions branch, f3edf05..0cd6c3e, before places was merged into it);
#   4 = places, 5 = captions (5537e5d..715c6b3, e.g. 1e9a1f6);
#   4 = places, 5 = a person's removals (main before 9350658 merged the captions branch);
#   4 = places, 5 = removals, 6 = captions, 7 = found (9350658 on).
# Every step's SQL was the same in each numbering.  So a database at schema 5 may hold captions and
# lack the removals' columns, and one at 4 may hold captions and lack places: each step runs where
# its effect is missing and is skipped where it is present, whatever the number says.
_STEPS: list[tuple[str, Callable[[sqlite3.Connection], bool]]] = [
    ("the initial schema", lambda db: "files" in _tables(db)),
    ("the ledger's removed keywords", lambda db: "action" in _columns(db, "ledger")),
    ("the ledger's hierarchical paths", lambda db: "paths" in _columns(db, "ledger")),
    ("places", lambda db: {"places", "located", "filled"} <= _tables(db)),
    ("a person's removals", lambda db: "pending" in _columns(db, "ledger")
     and "written_ns" in _columns(db, "files")),
    ("captions", lambda db: "captions" in _tables(db)),
    ("the found digest", lambda db: "found" in _columns(db, "files")),
    ("the time a file was tagged", lambda db: "tagged" in _columns(db, "files")),
]
assert len(_STEPS) == SCHEMA_VERSION


# Telling a database restored from an older copy (see Store._notice_restore).  Rows of ``counters``:
# the database's identity (a random number given at its first write), its generation (one more at
# every write transaction; the mark beside the database follows it at the first write of each
# connection, every MARK_EVERY_S while it writes, and at the close of one that wrote), when
# tagwatch found it older than the one it last used (ns, this machine's clock), and when
# the daemon had checked every photo of its watched folders again after that (see
# Store.restore_checked).
_IDENTITY, _GENERATION, _RESTORED, _CHECKED = "identity", "generation", "restored", "restore-checked"
# Also a row per ``[write] hierarchy_prefix`` tagwatch ever wrote hierarchical paths under, named
# this and the prefix (value: when first recorded, ns): the ledger keeps a keyword's path without the
# prefix, so these say under which prefixes a path of a ledger keyword is tagwatch's (see
# Store.record_prefix; ``db rebuild`` carries them over with the other counters)
_PREFIX = "hierarchy-prefix:"
MARK_EVERY_S = 600.0
NOTICE_WAIT_S = 1.0  # how long recording a restore found at the start waits for another's lock


@dataclass(frozen=True)
class Mark:
    """The database tagwatch last used at a path, and how far it had got (its generation)."""

    identity: int
    generation: int


def last_used_path(database: Path) -> Path:
    """Where the :class:`Mark` of ``database`` is kept: beside it, as its lock and state file are, and
    outside it, so that an older copy of the database put in its place finds a newer mark."""
    return database.with_name(database.name + ".last-used")


def _read_mark(path: Path) -> Mark | None:
    """The mark at ``path``; None if there is none (or it is unreadable: then no restore is told)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Mark(int(data["identity"]), int(data["generation"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def restore_day(found_ns: int) -> str:
    """When a restore was found (ns, this machine's clock), as its lines say it: ``2026-12-06 21:40``."""
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(found_ns / 1e9))


def restore_warning(database: Path, found_ns: int | None = None, unrecorded: str = "") -> str:
    """The WARNING (event ``database-restored``) that says ``database`` is older than the one
    tagwatch last used at its path, decided here for both its sayers: the connection that finds it
    (``found_ns`` None: found now; :meth:`Store._notice_restore`) and the daemon's start, where a
    command found it before (``found_ns``: when), whose own copy of the sentence had drifted from
    this one (it left out what becomes of the keywords).  ``unrecorded``: why it is not recorded
    yet, where so."""
    if found_ns is None:
        found, then = "is older than the one tagwatch last used here", "now"
    else:
        found = (f"was found older than the one tagwatch last used here on {restore_day(found_ns)}, "
                 "before this start")
        then = "then"
    return (f"{database}: this database {found} (restored from a backup?): it does not know what "
            "tagwatch did after that copy was taken. Keywords of tagwatch's missing from photos changed "
            f"before {then} are not taken for a person's removal: they are written again where still "
            "predicted (one a person took out after that copy was taken comes back once); `tagwatch "
            f"status` says it until the daemon has checked the watched folders again{unrecorded}")


class StoreError(RuntimeError):
    """The database cannot be used; the message says why."""


# How long a write waits for another connection's write lock (SQLite's busy timeout) before it fails
# with "database is locked": a command run by a person (``untag``, ``scan``, the review page) waits
# out whatever another tagwatch or a backup holds for this long rather than fail.  The daemon's photo
# batches wait less (see :meth:`Store.lock_wait` and ``retry.DATABASE_LOCK_WAIT_S``): for them a
# lock is a passing fault, retried with a backoff, and said as soon as it is not a short one.
LOCK_WAIT_S = 30.0


_SQLITE_READONLY = 8


def _read_only(exc: sqlite3.Error) -> bool:
    """SQLite's "attempt to write a readonly database", any of its extended codes."""
    return (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF == _SQLITE_READONLY


def _counters(db: sqlite3.Connection, *names: str) -> dict[str, int]:
    """The ``counters`` rows named (those present): the one reader of the identity, the generation
    and the restore's times, so that the close, a write and the restore's checks read them alike."""
    marks = ", ".join("?" for _ in names)
    return dict(db.execute(f"SELECT name, value FROM counters WHERE name IN ({marks})", names).fetchall())


def _unchecked(values: Mapping[str, int]) -> int | None:
    """When the database was found restored (``counters``' rows as :func:`_counters` reads them),
    while no check of every watched photo has been recorded since; else None."""
    restored, checked = values.get(_RESTORED), values.get(_CHECKED)
    return None if restored is None or (checked is not None and checked >= restored) else int(restored)


def _busy_timeout(db: sqlite3.Connection, seconds: float) -> None:
    """Set how long ``db``'s writes wait for another connection's lock (SQLite's busy timeout)."""
    db.execute(f"PRAGMA busy_timeout = {round(seconds * 1000)}")


def private_folder(path: Path) -> None:
    """Create ``path`` and every missing parent readable by this user only (0700, as the XDG base
    directory spec asks: they hold photo paths); folders that exist keep their modes."""
    missing: list[Path] = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        with suppress(FileExistsError):
            folder.mkdir(mode=0o700)


@dataclass(frozen=True)
class FileRow:
    id: int
    path: str
    key: bytes | None
    size: int | None
    mtime_ns: int | None
    state: str
    error: str | None
    tags: tuple[str, ...] | None  # keywords last predicted, best first; None if never tagged
    tagged_with: str | None  # fingerprint of the tag list and settings that predicted them
    updated: float | None = None  # when the row last changed (seconds since the epoch)
    written_ns: int | None = None  # st_ctime_ns of the version tagwatch last added keywords to
    found: bytes | None = None  # the metadata digest of the version before tagwatch's first write
    tagged: float | None = None  # when tagwatch last wrote keywords into it, else first tagged it


@dataclass(frozen=True)
class Twin:
    """Another file recorded with the same picture, and the keywords tagwatch added to it."""

    id: int
    path: str
    size: int | None  # as last recorded: the version tagwatch wrote (or found holding its keywords)
    ledger: dict[str, tuple[str, ...]]  # keyword → the hierarchical paths written (itself when flat)


@dataclass(frozen=True)
class Located:
    """A file's coordinates when tagwatch last wrote it (None: it had none) and its place keywords."""

    lat: float | None
    lon: float | None
    keywords: tuple[str, ...]


NOWHERE = ("", "", "", -1.0)  # a cached answer "no place within reach" (country "" )


def _e5(degrees: float) -> int:
    return round(degrees * 100_000)


def _tags(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(t for t in text.split("\n") if t)


def _row(r: sqlite3.Row) -> FileRow:
    return FileRow(r["id"], r["path"], r["key"], r["size"], r["mtime_ns"], r["state"], r["error"],
                   _tags(r["tags"]), r["tagged_with"], r["updated"], r["written_ns"], r["found"],
                   r["tagged"])


def _blob(vector: np.ndarray) -> bytes:
    return np.asarray(vector, VECTOR_DTYPE).tobytes()


def _vector(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, VECTOR_DTYPE)


def stored_form(vector: np.ndarray) -> np.ndarray:
    """``vector`` as the store would give it back (scoring always uses this form)."""
    return _vector(_blob(vector))


def _paths(keyword: str, paths: Sequence[str] | None) -> str | None:
    """The ledger's form of the paths a keyword is written under: NULL for the keyword itself."""
    if not paths or list(paths) == [keyword]:
        return None
    return "\n".join(dict.fromkeys(paths))


def inside(path: str, folders: Collection[str]) -> bool:
    """Is ``path`` inside one of ``folders``?  The rule the store's folder queries follow too
    (:meth:`Store.files_under`, the re-score's ``tagged_files``): ``tags suggest`` counts by it, the
    watcher and a file moved in by it."""
    return any(path.startswith(folder.rstrip("/") + "/") for folder in folders)


def _located(row: Sequence[Any]) -> Located:
    """A ``located`` table row (file id, lat, lon, keywords) as :class:`Located`."""
    return Located(row[1], row[2], _tags(row[3]) or ())


def _under(folder: str) -> tuple[str, str]:
    """Bounds of every path inside ``folder`` for an index range scan (``/`` sorts before ``0``)."""
    prefix = folder.rstrip("/") + "/"
    return prefix, prefix[:-1] + "0"


class Store:
    """One SQLite connection shared by the daemon's threads behind a lock."""

    def __init__(self, path: Path, *, restore_told: bool = False) -> None:
        """``restore_told``: another connection of this process (the daemon's, for the review page it
        hosts) says a restore this one finds; this one says it at DEBUG, or the daemon's log said it
        twice (see :meth:`_notice_restore`)."""
        self.path = path
        self._restore_told = restore_told
        self._lock = threading.RLock()
        self._reopen = False  # a write found the database read-only: reconnect before the next one
        self._marked: float | None = None  # when this connection last advanced the mark (monotonic)
        self._waits = threading.local()  # a thread's own lock wait, where it set one (lock_wait)
        self._restore_pending: tuple[int, int] | None = None  # found, not yet recorded: (ns, generation)
        # Called after each write transaction commits, on the thread that wrote, outside the store's
        # lock, told whether it recorded a photo tagged or failed (see transaction's ``settles``):
        # the daemon's worker says there, first, that the database takes writes again (before the
        # lines of the photos the write was for) and sends what waited for it
        self.on_commit: Callable[[bool], None] | None = None
        self._settles = False  # the open transaction records a photo tagged or failed
        self.restore_said = False  # this connection found the database restored, and said so
        private_folder(path.parent)
        try:
            self._db = self._connect()
            new = self._db.execute("PRAGMA user_version").fetchone()[0] == 0
            self._migrate()
        except sqlite3.DatabaseError as exc:
            hint = (" (SQLite needs to write beside it even to read it: check the permissions of the file "
                    "and its folder, and that the disk is mounted read-write)") if _read_only(exc) else ""
            raise StoreError(f"{path}: cannot open database: {exc}{hint}") from None
        if not new:  # a database made now is older than nothing
            self._notice_restore()

    def _connect(self) -> sqlite3.Connection:
        old_umask = os.umask(0o077)  # database, WAL and SHM files are the user's alone
        try:
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                                 timeout=LOCK_WAIT_S)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            return db
        finally:
            os.umask(old_umask)

    def writable(self) -> str | None:
        """None if the database takes writes; else SQLite's reason.  SQLite opens a file it may not
        write read-only without a word, and then fails every write: the daemon asks at start.  A
        database another program holds locked is writable: asked without waiting for the lock (the
        start waited 30 s), and not said to be read-only (the photos' writes say the lock)."""
        with self._lock:
            try:
                version = self._db.execute("PRAGMA user_version").fetchone()[0]
                _busy_timeout(self._db, 0)
                self._db.execute(f"PRAGMA user_version = {int(version)}")  # a write of the same value
            except sqlite3.OperationalError as exc:
                self._reopen = _read_only(exc)
                return None if sqlite_locked(exc) else str(exc)
            finally:
                with suppress(sqlite3.Error):
                    _busy_timeout(self._db, LOCK_WAIT_S)
        return None

    @contextmanager
    def lock_wait(self, seconds: float) -> Iterator[None]:
        """Within this block, the calling thread's writes wait at most ``seconds`` for another
        connection's lock (instead of :data:`LOCK_WAIT_S`) before failing with "database is locked".
        The connection is shared by the daemon's threads behind one lock, so the wait is set for each
        write transaction of this thread (two pragmas, microseconds) and put back after it; reads,
        which WAL never makes wait for a writer, keep the connection's own."""
        before = getattr(self._waits, "seconds", None)
        self._waits.seconds = seconds
        try:
            yield
        finally:
            self._waits.seconds = before

    def _migrate(self) -> None:
        """Bring the schema up to this tagwatch's, one transaction per step, by what the database
        holds: a step whose effect is there is skipped, a missing one runs even below the number
        (see ``_STEPS``), so a database from any earlier build of main opens with nothing lost."""
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.path}: database schema {version} is newer than this tagwatch "
                             f"({SCHEMA_VERSION}); upgrade tagwatch")
        if version == SCHEMA_VERSION:
            return
        ran: list[str] = []
        found: list[str] = []  # steps above the number whose effect was there already
        current = version
        with self._lock:
            for number, (sql, (name, present)) in enumerate(zip(_MIGRATIONS, _STEPS, strict=True), 1):
                try:  # executescript commits on its own; each migration is one transaction
                    if present(self._db):
                        if number > current:  # a write too: it meets a backup's lock as a step does
                            self._db.execute(f"PRAGMA user_version = {number}")
                            found.append(f"{name} ({number})")
                            current = number
                        continue
                    self._db.executescript(
                        f"BEGIN; {sql}; PRAGMA user_version = {max(current, number)}; COMMIT;")
                except sqlite3.DatabaseError as exc:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    if sqlite_locked(exc):  # a backup's lock outlasted LOCK_WAIT_S: nothing is wrong with it
                        raise StoreError(
                            f"{self.path}: cannot migrate the database from schema {version} yet: "
                            f"another program holds it locked ({exc}); start again once it lets go "
                            f"(the service's Restart=on-failure does so every 10 s)") from None
                    raise StoreError(
                        f"{self.path}: cannot migrate the database from schema {version} "
                        f"(step {number}, {name}): {exc}; `tagwatch db rebuild` carries every "
                        f"readable row into a fresh database and keeps this file beside it") from None
                ran.append(f"{name} ({number})")
                current = max(current, number)
        if version:  # a new database is no news
            done = f"added {', '.join(ran)}" if ran else "nothing to add"
            there = (f"; already there: {', '.join(found)} (the build that wrote it numbered its "
                     f"steps differently)") if found else ""
            log.info("%s: database schema %d migrated to %d: %s%s", self.path, version, SCHEMA_VERSION,
                     done, there)

    @contextmanager
    def transaction(self, *, settles: bool = False) -> Iterator[sqlite3.Connection]:
        """One write transaction.  A connection that found the database read-only stays read-only
        (SQLite opened it so), so the next transaction after such an error reconnects: once the
        modes or the mount are fixed, writes work again without a restart.  ``settles``: it records
        a photo tagged or failed (told to :attr:`on_commit`: on a full disk a small write can pass
        while a photo's cannot, and is no sign that the photos can be tagged again)."""
        with self._lock:
            if self._db.in_transaction:  # nested: the outer transaction commits
                self._settles = self._settles or settles
                yield self._db
                return
            self._settles = settles
            if self._reopen:
                self._reopen = False
                self._db.close()
                self._db = self._connect()
            marking = self._marked is None or time.monotonic() - self._marked >= MARK_EVERY_S
            if marking:  # this commit reaches the disk before its mark is written (WAL syncs it)
                self._db.execute("PRAGMA synchronous=FULL")
            wait = getattr(self._waits, "seconds", None)  # this thread's, see lock_wait
            if wait is not None:
                _busy_timeout(self._db, wait)
            mark: Mark | None = None
            try:
                self._db.execute("BEGIN IMMEDIATE")
                pending = self._restore_pending
                try:
                    if pending is not None:  # a restore found under a backup's lock: before any write
                        self._record_restore(self._db, *pending)
                    yield self._db
                    mark = self._advance(self._db)  # every write: a copy taken before it is older
                except BaseException:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
                if pending is not None:
                    self._restore_pending = None
            except sqlite3.OperationalError as exc:
                self._reopen = _read_only(exc)
                raise
            finally:
                if marking:
                    with suppress(sqlite3.Error):
                        self._db.execute("PRAGMA synchronous=NORMAL")
                if wait is not None:
                    with suppress(sqlite3.Error):
                        _busy_timeout(self._db, LOCK_WAIT_S)
            if marking and mark is not None:
                self._put_mark(mark)
            settled = self._settles
        if self.on_commit is not None:
            self.on_commit(settled)

    @staticmethod
    def _advance(db: sqlite3.Connection) -> Mark:
        """One generation more (and an identity, where the database has none yet), in the caller's
        transaction: every write after it is newer than any copy taken before it."""
        db.execute("INSERT OR IGNORE INTO counters VALUES (?, ?)", (_IDENTITY, secrets.randbits(62)))
        db.execute("INSERT INTO counters VALUES (?, 1) ON CONFLICT(name) DO UPDATE SET value = value + 1",
                   (_GENERATION,))
        values = _counters(db, _IDENTITY, _GENERATION)
        return Mark(values[_IDENTITY], values[_GENERATION])

    def _put_mark(self, mark: Mark) -> None:
        """Say beside the database how far it has got.  Written only after the generation is on disk,
        so a crash or a power cut leaves the mark behind the database (a restore then goes unnoticed),
        never ahead of it (an ordinary start taken for a restore); no fsync of its own for the same reason."""
        self._marked = time.monotonic()
        text = json.dumps({"identity": mark.identity, "generation": mark.generation}) + "\n"
        try:
            write_atomic(last_used_path(self.path), text, mode=0o600, durable=False)
        except OSError as exc:
            log.debug("%s: not written: %s", last_used_path(self.path), exc)

    def _notice_restore(self) -> None:
        """A database older than the one tagwatch last used at this path (a backup restored over it)
        does not know what tagwatch did since that copy: the keywords sync or a correction took out of
        photos are still tagwatch's in its ledger, and would be taken for a person's removals.  Record
        when that was found (:meth:`restored_ns`; see Writeback._removed) and say so once; the mark
        then follows this database.  A database the mark does not name (another one, copied from
        another machine, or one no tagwatch with this mark ever wrote) is never taken for a restore."""
        mark = _read_mark(last_used_path(self.path))
        if mark is None:
            return
        try:
            with self._lock:
                values = _counters(self._db, _IDENTITY, _GENERATION)
        except sqlite3.DatabaseError:  # damaged: check() says so, with the way out
            return
        if values.get(_IDENTITY) != mark.identity or values.get(_GENERATION, 0) >= mark.generation:
            return
        unrecorded, found = "", time.time_ns()
        try:
            # the generation goes past the mark: noticed once.  A backup holding the database is
            # not waited for (status, export and explain answer under its lock; the daemon starts)
            with self.lock_wait(NOTICE_WAIT_S), self.transaction() as db:
                self._record_restore(db, found, mark.generation)
        except sqlite3.OperationalError as exc:
            # Kept here and recorded by this connection's first write, before it: the daemon's
            # rule (restored_ns) holds from its start, so no keyword of the restore's is declined
            # by a write made once the lock is gone; a command that writes nothing says it again
            self._restore_pending = (found, mark.generation)
            unrecorded = f" (not recorded yet: {exc}; recorded with this tagwatch's first write)"
        self.restore_said = True
        level = logging.DEBUG if self._restore_told else logging.WARNING
        log.log(level, "%s", restore_warning(self.path, unrecorded=unrecorded),
                extra={"event": "database-restored"})

    @staticmethod
    def _record_restore(db: sqlite3.Connection, found: int, generation: int) -> None:
        db.executemany("INSERT OR REPLACE INTO counters VALUES (?, ?)",
                       [(_RESTORED, found), (_GENERATION, generation)])

    def restored_ns(self) -> int | None:
        """When tagwatch found this database older than the one it last used (this machine's clock,
        ns); None if it never did.  Kept for the database's life: the rule it drives (a keyword of
        ours missing from a photo that last changed before then is no person's removal) holds for
        every photo not changed since, however late it is next looked at."""
        with self._lock:
            if self._restore_pending is not None:  # found at the start, not recorded yet (a lock)
                return self._restore_pending[0]
            r = self._db.execute("SELECT value FROM counters WHERE name = ?", (_RESTORED,)).fetchone()
        return None if r is None else int(r[0])

    def restore_unchecked(self) -> int | None:
        """:meth:`restored_ns` while the restore is still news: until the daemon has checked every
        photo of its watched folders again after it (:meth:`restore_checked`).  None once it has, or
        if the database was never found restored.  ``tagwatch status`` says the restore while this
        is not None; a year later it said it still, though nothing was left for it to tell."""
        with self._lock:
            values = _counters(self._db, _RESTORED, _CHECKED)
        if self._restore_pending is not None:  # found at the start, not recorded yet (a lock)
            values[_RESTORED] = self._restore_pending[0]
        return _unchecked(values)

    def restore_checked(self, since_ns: int) -> int | None:
        """Record that every photo of the watched folders was compared with its record, and every
        one found changed was tagged, failed or found gone, in a pass that began at ``since_ns``
        (this machine's clock).  Of a restore found before that pass, nothing is left to say: what
        the older copy did not know showed in the photos changed since that copy was taken, and the
        pass settled each of them (their keywords written again or forgotten, see Writeback._removed).
        Returns when the database was found restored where this ends its note, else None (it was
        found after the pass began, or its note had ended already)."""
        with self.transaction() as db:
            restored = _unchecked(_counters(db, _RESTORED, _CHECKED))
            if restored is None or restored > since_ns:
                return None
            db.execute("INSERT OR REPLACE INTO counters VALUES (?, ?)", (_CHECKED, time.time_ns()))
        return restored

    def check(self) -> None:
        """Raise StoreError if SQLite finds damage (a power cut on a disk that lies about fsync, a
        bad sector): better one clear message at start than a failed batch on every photo."""
        try:
            with self._lock:
                problems = [r[0] for r in self._db.execute("PRAGMA quick_check(5)")]
        except sqlite3.DatabaseError as exc:
            problems = [str(exc)]
        if problems != ["ok"]:
            found = " ".join("; ".join(problems).split())[:200]  # SQLite's report spans lines
            raise StoreError(f"{self.path}: the database is damaged ({found}); "
                             f"`tagwatch db rebuild` keeps what can still be read and sets the damaged "
                             f"file aside")

    def close(self) -> None:
        """A connection that wrote ends with the mark at the database's generation, which its every
        write advanced: a copy taken before its last write is older.  Read, not written, so a backup
        holding the database neither holds the close (SIGTERM waited SQLite's 30 s for a write) nor
        keeps the mark behind (a copy taken earlier in the run, restored, went unnoticed: user round
        xZ #1); the database's files are made durable first, so the mark never leads them."""
        with self._lock:
            if self._marked is not None:
                self._marked = None
                try:
                    values = _counters(self._db, _IDENTITY, _GENERATION)
                    mark = Mark(values[_IDENTITY], values[_GENERATION])
                    for name in (f"{self.path}-wal", str(self.path)):
                        with suppress(FileNotFoundError), open(name, "rb") as f:
                            os.fsync(f.fileno())
                except (sqlite3.Error, OSError, KeyError) as exc:
                    log.info("%s: the mark of how far this database got is not moved at the close: %s; "
                             "a copy taken since it was last moved would not be told from it", self.path, exc)
                else:
                    self._put_mark(mark)
            self._db.close()

    # -- files ---------------------------------------------------------------------------------

    def file(self, path: str) -> FileRow | None:
        return self.files([path]).get(path)  # a name not valid UTF-8 is never recorded (see _each)

    def files_under(self, folder: str) -> dict[str, FileRow]:
        low, high = _under(folder)
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM files WHERE path >= ? AND path < ? AND state != ?", (low, high, DELETED))
            return {r["path"]: _row(r) for r in rows}

    def files(self, paths: Iterable[str]) -> dict[str, FileRow]:
        return {path: _row(r) for path, r in self._each("SELECT * FROM files WHERE path = ?", paths).items()}

    def _each(self, sql: str, items: Iterable[Any], *extra: Any) -> dict[Any, sqlite3.Row]:
        """Run a one-row primary-key SELECT per distinct item (bound first, then ``extra``).  A path
        that is not valid UTF-8 (an old card's Latin-1 name) cannot be recorded, so none is found:
        binding it crashed `scan` of its folder with a traceback."""
        found: dict[Any, sqlite3.Row] = {}
        with self._lock:
            for item in dict.fromkeys(items):
                try:
                    r = self._db.execute(sql, (item, *extra)).fetchone()
                except UnicodeEncodeError:
                    continue
                if r is not None:
                    found[item] = r
        return found

    def record_file(self, path: str, *, key: bytes | None, size: int | None, mtime_ns: int | None,
                    state: str, error: str | None = None) -> int:
        """Insert or update the row for ``path``; a changed key forgets the old prediction, the
        ledger, the fields filled and the place given: they belong to a (path, content) pair.
        Another photo renamed or saved over a tagged one must not inherit its record of "ours", or
        sync would take the new photo's own keywords out where they equal one of the old photo's
        tags.  (A person's edit of the pixels of a tagged photo makes our keywords in it the
        person's from then on: never removed.)"""
        with self.transaction(settles=state in (DONE, FAILED)) as db:
            old = db.execute("SELECT id, key FROM files WHERE path = ?", (path,)).fetchone()
            if old is not None and key is not None and old["key"] is not None and old["key"] != key:
                for table in ("ledger", "filled", "located"):  # all of it about the picture that was there
                    db.execute(f"DELETE FROM {table} WHERE file_id = ?", (old["id"],))
            db.execute(
                """INSERT INTO files (path, key, size, mtime_ns, state, error, updated)
                   VALUES (?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT(path) DO UPDATE SET
                     tags = CASE WHEN files.key IS excluded.key THEN files.tags END,
                     tagged_with = CASE WHEN files.key IS excluded.key THEN files.tagged_with END,
                     found = CASE WHEN excluded.key IS NULL OR files.key IS excluded.key
                                  THEN files.found END,
                     tagged = CASE WHEN excluded.key IS NULL OR files.key IS excluded.key
                                   THEN files.tagged END,
                     key = COALESCE(excluded.key, files.key), size = excluded.size,
                     mtime_ns = excluded.mtime_ns, state = excluded.state, error = excluded.error,
                     updated = excluded.updated""",
                (path, key, size, mtime_ns, state, error, time.time()))
            return db.execute("SELECT id FROM files WHERE path = ?", (path,)).fetchone()[0]

    def record_tagged(self, file_id: int, tags: list[str], fingerprint: str, size: int,
                      mtime_ns: int, written_ns: int | None = None, wrote: bool = False) -> None:
        """The file now carries its predicted tags (best first), as of this size and mtime;
        ``written_ns``: the change time of this write (None: it added no keyword; the last one's stays);
        ``wrote``: this write changed its keywords (``tagged`` moves; else only at its first tagging)."""
        now = time.time()
        with self.transaction() as db:
            db.execute("UPDATE files SET tags = ?, tagged_with = ?, size = ?, mtime_ns = ?, state = ?, "
                       "error = NULL, updated = ?, written_ns = COALESCE(?, written_ns), "
                       "tagged = CASE WHEN ? OR tagged IS NULL THEN ? ELSE tagged END WHERE id = ?",
                       ("\n".join(tags), fingerprint, size, mtime_ns, DONE, now, written_ns, wrote, now,
                        file_id))

    def set_found(self, file_id: int, digest: bytes) -> None:
        """Remember the version tagwatch found before its first write (kept across later writes)."""
        with self.transaction() as db:
            db.execute("UPDATE files SET found = COALESCE(found, ?) WHERE id = ?", (digest, file_id))

    def update_predictions(self, predictions: list[tuple[int, list[str]]], fingerprint: str) -> None:
        """Re-scored files whose tag set did not change: nothing to write, remember the new list."""
        with self.transaction() as db:
            db.executemany("UPDATE files SET tags = ?, tagged_with = ? WHERE id = ?",
                           [("\n".join(tags), fingerprint, file_id) for file_id, tags in predictions])

    def add_ledger(self, file_id: int, keywords: list[str], action: str = ADDED,
                   paths: Mapping[str, Sequence[str]] | None = None) -> None:
        """Record keywords tagwatch adds to a file (or, with REMOVED, a person's keywords it takes
        out), before the write: a crash must not lose them.  ``paths``: the hierarchical paths a
        keyword is written under, where that is not the keyword itself.  Keywords added are pending
        until :meth:`confirm_ledger` (the write recorded done)."""
        now = time.time()
        paths = paths or {}
        with self.transaction() as db:
            db.executemany("INSERT OR REPLACE INTO ledger (file_id, keyword, written, action, paths, "
                           "pending) VALUES (?, ?, ?, ?, ?, ?)",
                           [(file_id, k, now, action, _paths(k, paths.get(k)), int(action == ADDED))
                            for k in keywords])

    def confirm_ledger(self, file_id: int, keywords: Iterable[str]) -> None:
        """Keywords of ours the file was found to hold after a write recorded done: no longer pending."""
        with self.transaction() as db:
            db.executemany("UPDATE ledger SET pending = 0 WHERE file_id = ? AND keyword = ? AND action = ?",
                           [(file_id, k, ADDED) for k in keywords])

    def withdraw(self, file_id: int, keywords: Iterable[str], changed_ns: int | None) -> None:
        """Keywords of ours a write took out of the file (``changed_ns``: the change time of the
        version it put in place): kept as withdrawn, or forgotten where that time is unknown or
        tagwatch had not added them (a correction's own keyword)."""
        keywords = list(keywords)
        with self.transaction() as db:
            if changed_ns is not None:
                db.executemany("UPDATE ledger SET action = ?, written = ?, pending = 0 "
                               "WHERE file_id = ? AND keyword = ? AND action = ? AND pending = 0",
                               [(WITHDRAWN, changed_ns / 1e9, file_id, k, ADDED) for k in keywords])
            db.executemany("DELETE FROM ledger WHERE file_id = ? AND keyword = ? AND action != ?",
                           [(file_id, k, WITHDRAWN) for k in keywords])

    def last_withdrawn(self, file_id: int) -> tuple[dict[str, tuple[str, ...]], int | None]:
        """The keywords of ours the latest withdrawing write took out (→ the hierarchical paths they
        were written under), and the change time (ns) of the version it put in place."""
        with self._lock:
            rows = self._db.execute(
                "SELECT keyword, paths, written FROM ledger WHERE file_id = ? AND action = ? AND written = "
                "(SELECT MAX(written) FROM ledger WHERE file_id = ? AND action = ?)",
                (file_id, WITHDRAWN, file_id, WITHDRAWN)).fetchall()
        if not rows:
            return {}, None
        return ({r[0]: tuple(r[1].split("\n")) if r[1] else (r[0],) for r in rows}, round(rows[0][2] * 1e9))

    def reclaim(self, file_id: int, keywords: Iterable[str]) -> None:
        """Withdrawn keywords found back in the file from a save built from before their withdrawal:
        ours again (written, so not pending), for the decision that took them out to take them out again."""
        now = time.time()
        with self.transaction() as db:
            db.executemany("UPDATE ledger SET action = ?, written = ?, pending = 0 WHERE file_id = ? "
                           "AND keyword = ? AND action = ?",
                           [(ADDED, now, file_id, k, WITHDRAWN) for k in keywords])

    def pending_ledger(self, file_id: int) -> set[str]:
        """Keywords of ours recorded ahead of a write not yet recorded done (maybe never written)."""
        with self._lock:
            return {r[0] for r in self._db.execute(
                "SELECT keyword FROM ledger WHERE file_id = ? AND action = ? AND pending = 1",
                (file_id, ADDED))}

    def last_written(self, file_id: int) -> set[str]:
        """The keywords of ours the latest recorded write put in (those sharing the newest time)."""
        with self._lock:
            return {r[0] for r in self._db.execute(
                "SELECT keyword FROM ledger WHERE file_id = ? AND action = ? AND pending = 0 AND written = "
                "(SELECT MAX(written) FROM ledger WHERE file_id = ? AND action = ? AND pending = 0)",
                (file_id, ADDED, file_id, ADDED))}

    def decline(self, file_id: int, keywords: Iterable[str]) -> None:
        """Keywords of ours a person took out of the file: no longer ours, never written into it again."""
        now = time.time()
        with self.transaction() as db:
            db.executemany("INSERT OR REPLACE INTO ledger (file_id, keyword, written, action, paths, "
                           "pending) VALUES (?, ?, ?, ?, NULL, 0)",
                           [(file_id, k, now, DECLINED) for k in keywords])

    def sidecar_lost(self, file_ids: Iterable[int], records: str) -> list[int]:
        """The sidecar holding these tagged files' keywords is gone (a person deleted it): each is
        recorded pending, its keywords of ours pending too, as ahead of a write not yet done, so that
        the next write puts those still predicted into a new sidecar (and forgets the others) and
        none is taken for one a person took out; the records of fields filled in that sidecar
        (names starting ``records``) go with it, so that untag gives back none of what the deleted
        sidecar held.  The ids of the files so recorded (those that were tagged)."""
        marked: list[int] = []
        with self.transaction() as db:
            for file_id in file_ids:
                if db.execute("UPDATE files SET state = ?, updated = ? WHERE id = ? AND state = ?",
                              (PENDING, time.time(), file_id, DONE)).rowcount == 0:
                    continue
                db.execute("UPDATE ledger SET pending = 1 WHERE file_id = ? AND action = ?", (file_id, ADDED))
                db.execute("DELETE FROM filled WHERE file_id = ? AND substr(field, 1, ?) = ?",
                           (file_id, len(records), records))
                marked.append(file_id)
        return marked

    def set_ledger_paths(self, file_id: int, paths: Mapping[str, Sequence[str]]) -> None:
        """Keywords that stay ours but are now written under other hierarchical paths."""
        with self.transaction() as db:
            db.executemany("UPDATE ledger SET paths = ? WHERE file_id = ? AND keyword = ?",
                           [(_paths(k, p), file_id, k) for k, p in paths.items()])

    def record_prefix(self, prefix: str) -> None:
        """Remember that tagwatch writes hierarchical paths under ``prefix`` (``[write]
        hierarchy_prefix``; "" for none), before any such write: once the setting changes, the paths
        it wrote under this one are still found its own, moved to the new prefix and taken out by
        untag (:meth:`prefixes`).  Kept for good: a prefix used once may be in a photo untouched since."""
        with self.transaction() as db:
            db.execute("INSERT OR IGNORE INTO counters VALUES (?, ?)", (_PREFIX + prefix, time.time_ns()))

    def prefixes(self) -> list[str]:
        """Every hierarchy prefix tagwatch recorded writing paths under (:meth:`record_prefix`),
        oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT name FROM counters WHERE substr(name, 1, ?) = ? "
                                    "ORDER BY value, name", (len(_PREFIX), _PREFIX)).fetchall()
        return [r[0][len(_PREFIX):] for r in rows]

    def ledger_paths(self, file_id: int, action: str = ADDED) -> dict[str, tuple[str, ...]]:
        """keyword → the hierarchical paths tagwatch wrote it under, for keywords not written flat
        (with USER: those an override asked for, whose path is the list's and follows it)."""
        with self._lock:
            rows = self._db.execute("SELECT keyword, paths FROM ledger WHERE file_id = ? AND action = ? "
                                    "AND paths IS NOT NULL", (file_id, action)).fetchall()
        return {r[0]: tuple(r[1].split("\n")) for r in rows}

    def has_ledger_paths(self) -> bool:
        """Did tagwatch ever write a keyword under a parent (a partial index makes this instant)?"""
        with self._lock:
            return self._db.execute("SELECT 1 FROM ledger WHERE paths IS NOT NULL LIMIT 1").fetchone() \
                is not None

    def stale_paths(self, paths: Mapping[str, str]) -> set[int]:
        """Files holding a keyword of ours under another hierarchical path than ``paths`` (every
        keyword of the tag list → its path) gives it: a parent edit must rewrite them."""
        with self.transaction() as db:
            db.execute("CREATE TEMP TABLE IF NOT EXISTS wanted_paths (keyword TEXT PRIMARY KEY, path TEXT)")
            db.execute("DELETE FROM wanted_paths")
            db.executemany("INSERT INTO wanted_paths VALUES (?, ?)", paths.items())
            rows = db.execute(
                """SELECT DISTINCT l.file_id FROM ledger l JOIN wanted_paths w ON w.keyword = l.keyword
                   WHERE l.action = ? AND COALESCE(l.paths, l.keyword) != w.path""", (ADDED,)).fetchall()
            db.execute("DELETE FROM wanted_paths")
        return {r[0] for r in rows}

    def corrections_paths(self) -> list[tuple[int, str, tuple[str, ...]]]:
        """(file id, keyword, paths written under) of every keyword a correction added: the list's
        path, which follows a parent edit (compared in Python: the list spells it in its own case)."""
        with self._lock:
            rows = self._db.execute("SELECT file_id, keyword, paths FROM ledger WHERE action = ?",
                                    (USER,)).fetchall()
        return [(r[0], r[1], tuple(r[2].split("\n")) if r[2] else (r[1],)) for r in rows]

    def remove_ledger(self, file_id: int, keywords: list[str]) -> None:
        """Forget keywords: recorded ahead of a write that did not happen, or no longer in the file."""
        with self.transaction() as db:
            db.executemany("DELETE FROM ledger WHERE file_id = ? AND keyword = ?",
                           [(file_id, k) for k in keywords])

    def mark_deleted(self, path: str) -> bool:
        """The file is gone (its vector stays cached by content key); False if it was unknown."""
        with self.transaction() as db:
            return db.execute("UPDATE files SET state = ?, updated = ? WHERE path = ? AND state != ?",
                              (DELETED, time.time(), path, DELETED)).rowcount > 0

    def mark_deleted_under(self, folder: str) -> int:
        """A folder is gone: every record under it is.  Returns how many were not deleted already
        (the photos whose records went with it, for its line)."""
        low, high = _under(folder)
        with self.transaction() as db:
            live = db.execute("SELECT COUNT(*) FROM files WHERE path >= ? AND path < ? AND state != ?",
                              (low, high, DELETED)).fetchone()[0]
            db.execute("UPDATE files SET state = ?, updated = ? WHERE path >= ? AND path < ?",
                       (DELETED, time.time(), low, high))
        return live

    def move(self, src: str, dst: str) -> bool:
        """A file was renamed: its row (vector link, tags, ledger) follows it.  False if unknown.

        A row already marked deleted does not follow: the file that moved is a new one.
        """
        with self.transaction() as db:
            if db.execute("SELECT 1 FROM files WHERE path = ? AND state != ?",
                          (src, DELETED)).fetchone() is None:
                return False
            db.execute("DELETE FROM files WHERE path = ?", (dst,))
            db.execute("UPDATE files SET path = ?, updated = ? WHERE path = ?", (dst, time.time(), src))
            return True

    def move_tree(self, src: str, dst: str) -> int:
        """A folder was renamed: every row under it follows."""
        low, high = _under(src)
        moved = 0
        with self.transaction() as db:
            rows = db.execute("SELECT path FROM files WHERE path >= ? AND path < ? AND state != ?",
                              (low, high, DELETED)).fetchall()
            for (path,) in rows:
                new = dst.rstrip("/") + path[len(src.rstrip("/")):]
                db.execute("DELETE FROM files WHERE path = ?", (new,))
                db.execute("UPDATE files SET path = ?, updated = ? WHERE path = ?", (new, time.time(), path))
                moved += 1
        return moved

    def tagged_files(self, model: str, folders: Sequence[str] = ()) -> list[tuple[FileRow, np.ndarray]]:
        """Every live file with a cached vector for ``model`` (inside ``folders``, when given): what a
        retag re-scores.  Files whose keywords could not be written are among them: the tag list may
        have been what failed."""
        bounds = [_under(folder) for folder in folders]
        inside = " OR ".join("(f.path >= ? AND f.path < ?)" for _ in bounds)
        with self._lock:
            rows = self._db.execute(
                f"""SELECT f.*, v.vector FROM files f JOIN image_vectors v ON v.key = f.key AND v.model = ?
                    WHERE f.state IN (?, ?) {f"AND ({inside})" if inside else ""} ORDER BY f.id""",
                (model, DONE, FAILED, *(b for pair in bounds for b in pair))).fetchall()
        return [(_row(r), _vector(r["vector"])) for r in rows]

    def unvectored(self, model: str, folders: Sequence[str] = ()) -> list[str]:
        """Live files recorded tagged whose picture has no cached vector for ``model`` (inside
        ``folders``, when given): a ``db rebuild`` lost it, or the config names another model.  A
        re-score cannot judge them and the reconcile scan finds them unchanged, so without this
        they were never encoded again (and sync left their old keywords in).  One query: a daemon
        restarted on an intact library pays one index probe per file, no look-up per path."""
        bounds = [_under(folder) for folder in folders]
        inside = " OR ".join("(f.path >= ? AND f.path < ?)" for _ in bounds)
        with self._lock:
            rows = self._db.execute(
                f"""SELECT f.path FROM files f WHERE f.state = ? AND f.key IS NOT NULL
                    AND NOT EXISTS (SELECT 1 FROM image_vectors v WHERE v.key = f.key AND v.model = ?)
                    {f"AND ({inside})" if inside else ""} ORDER BY f.id""",
                (DONE, model, *(b for pair in bounds for b in pair))).fetchall()
        return [r[0] for r in rows]

    def vectored(self, keys: Iterable[bytes], model: str) -> set[bytes]:
        """Which of ``keys`` have a cached vector for ``model``: a batch's question, asked in chunks
        of one query each (no vector is read)."""
        wanted = list(dict.fromkeys(keys))
        found: set[bytes] = set()
        with self._lock:
            for start in range(0, len(wanted), 500):
                part = wanted[start:start + 500]
                marks = ", ".join("?" * len(part))
                found.update(r[0] for r in self._db.execute(
                    f"SELECT key FROM image_vectors WHERE model = ? AND key IN ({marks})", (model, *part)))
        return found

    def ledger(self, file_id: int, action: str = ADDED) -> list[str]:
        """Keywords tagwatch added to the file (or, with REMOVED, took out of it), oldest first."""
        with self._lock:
            return [r[0] for r in self._db.execute(
                "SELECT keyword FROM ledger WHERE file_id = ? AND action = ? ORDER BY written, keyword",
                (file_id, action))]

    def paths_of_picture(self, key: bytes, path: str, *, deleted: bool = True) -> list[str]:
        """The other files recorded with the picture ``key``, deleted ones included unless
        ``deleted`` is False, latest first."""
        with self._lock:
            rows = self._db.execute("SELECT path FROM files WHERE key = ? AND path != ? "
                                    "AND (? OR state != ?) ORDER BY updated DESC",
                                    (key, path, deleted, DELETED)).fetchall()
        return [r[0] for r in rows]

    def same_picture(self, key: bytes, path: str) -> tuple[list[Twin], set[str]]:
        """The other files recorded with the picture ``key`` whose ledgers list keywords tagwatch added
        (deleted ones included: a move by copy-then-delete leaves the original's row deleted), and
        the keywords any file with that picture records as a person's (an override's, one overwrite
        took out, one a person took out).  Files still there come first, the latest first: a copy is
        said to be of the file a person can look at, not of a path the picture was moved away from."""
        with self._lock:
            rows = self._db.execute(
                "SELECT f.id, f.path, f.size, l.keyword, l.action, l.paths FROM files f JOIN ledger l "
                "ON l.file_id = f.id WHERE f.key = ? AND f.path != ? "
                "ORDER BY f.state = ?, f.updated DESC, f.id, l.written, l.keyword",
                (key, path, DELETED)).fetchall()
        twins: dict[int, Twin] = {}
        for r in rows:
            if r[4] == ADDED:
                paths = tuple(r[5].split("\n")) if r[5] else (r[3],)
                twins.setdefault(r[0], Twin(r[0], r[1], r[2], {})).ledger[r[3]] = paths
        return list(twins.values()), {r[3] for r in rows if r[4] not in (ADDED, WITHDRAWN)}

    # -- places --------------------------------------------------------------------------------

    def place(self, lat: float, lon: float, source: str) -> tuple[str, str, str, float] | None:
        """The cached gazetteer answer for a point: (country, region, locality, km), :data:`NOWHERE`
        for "no place within reach", None if this point was never looked up with ``source``."""
        with self._lock:
            r = self._db.execute("SELECT country, region, locality, distance FROM places "
                                 "WHERE lat = ? AND lon = ? AND source = ?",
                                 (_e5(lat), _e5(lon), source)).fetchone()
        if r is None:
            return None
        return NOWHERE if r[0] is None else (r[0], r[1], r[2], r[3])

    def put_place(self, lat: float, lon: float, source: str,
                  place: tuple[str, str, str, float] | None) -> None:
        country, region, locality, distance = place or (None, None, None, None)
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO places VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (_e5(lat), _e5(lon), source, country, region, locality, distance))

    def located(self, file_ids: Iterable[int]) -> dict[int, Located]:
        """Each file's last coordinates and place keywords, where recorded."""
        found = self._each("SELECT * FROM located WHERE file_id = ?", file_ids)
        return {file_id: _located(r) for file_id, r in found.items()}

    def placed(self) -> dict[int, Located]:
        """Every live tagged file's last coordinates and place keywords, where it had coordinates:
        one query for a re-score's look at them all (one per file held the lock for 100,000)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT l.* FROM located l JOIN files f ON f.id = l.file_id "
                "WHERE f.state = ? AND l.lat IS NOT NULL", (DONE,)).fetchall()
        return {r[0]: _located(r) for r in rows}

    def maybe_located(self) -> set[int]:
        """Live files that had coordinates when last written, or were never looked at for them."""
        with self._lock:
            rows = self._db.execute(
                "SELECT f.id FROM files f LEFT JOIN located l ON l.file_id = f.id "
                "WHERE f.state = ? AND (l.file_id IS NULL OR l.lat IS NOT NULL)", (DONE,)).fetchall()
        return {r[0] for r in rows}

    def set_located(self, file_id: int, lat: float | None, lon: float | None,
                    keywords: Sequence[str]) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO located VALUES (?, ?, ?, ?)",
                       (file_id, lat, lon, "\n".join(keywords)))

    def filled(self, file_id: int) -> dict[str, tuple[tuple[str, ...], str | None]]:
        """field → (values that are ours, what the field held before we filled it; None: absent)."""
        with self._lock:
            rows = self._db.execute("SELECT field, ours, previous FROM filled WHERE file_id = ?",
                                    (file_id,)).fetchall()
        return {r[0]: (tuple(json.loads(r[1])), r[2]) for r in rows}

    def set_filled(self, file_id: int, fields: Mapping[str, tuple[Sequence[str], str | None] | None]) -> None:
        """Record fields tagwatch fills (ahead of the write, like the ledger); None forgets a field."""
        now = time.time()
        with self.transaction() as db:
            for name, value in fields.items():
                if value is None:
                    db.execute("DELETE FROM filled WHERE file_id = ? AND field = ?", (file_id, name))
                else:
                    db.execute("INSERT OR REPLACE INTO filled VALUES (?, ?, ?, ?, ?)",
                               (file_id, name, json.dumps(list(value[0]), ensure_ascii=False), value[1], now))

    # -- vectors -------------------------------------------------------------------------------

    def image_vectors(self, keys: Iterable[bytes], model: str) -> dict[bytes, np.ndarray]:
        rows = self._each("SELECT vector FROM image_vectors WHERE key = ? AND model = ?", keys, model)
        return {key: _vector(r[0]) for key, r in rows.items()}

    def put_image_vectors(self, vectors: dict[bytes, np.ndarray], model: str) -> None:
        """Store freshly encoded vectors and count the encodings (``status``'s ``encoded``)."""
        with self.transaction() as db:
            db.executemany("INSERT OR REPLACE INTO image_vectors (key, model, vector) VALUES (?, ?, ?)",
                           [(k, model, _blob(v)) for k, v in vectors.items()])
            db.execute("UPDATE counters SET value = value + ? WHERE name = 'encoded'", (len(vectors),))

    def text_vectors(self, prompts: Iterable[str], model: str) -> dict[str, np.ndarray]:
        rows = self._each("SELECT vector FROM text_vectors WHERE prompt = ? AND model = ?", prompts, model)
        return {prompt: _vector(r[0]) for prompt, r in rows.items()}

    def put_text_vectors(self, vectors: dict[str, np.ndarray], model: str) -> None:
        with self.transaction() as db:
            db.executemany("INSERT OR REPLACE INTO text_vectors (model, prompt, vector) VALUES (?, ?, ?)",
                           [(model, p, _blob(v)) for p, v in vectors.items()])

    # -- captions ------------------------------------------------------------------------------

    def captions(self, keys: Iterable[bytes], captioner: str) -> dict[bytes, str]:
        rows = self._each("SELECT caption FROM captions WHERE key = ? AND captioner = ?", keys, captioner)
        return {key: r[0] for key, r in rows.items()}

    def put_captions(self, captions: Mapping[bytes, str], captioner: str) -> None:
        """Store freshly generated captions and count them (``status``'s ``captioned``)."""
        with self.transaction() as db:
            db.executemany("INSERT OR REPLACE INTO captions (key, captioner, caption) VALUES (?, ?, ?)",
                           [(k, captioner, c) for k, c in captions.items()])
            db.execute("UPDATE counters SET value = value + ? WHERE name = 'captioned'", (len(captions),))

    # -- status --------------------------------------------------------------------------------

    def stats(self, model: str) -> dict[str, int]:
        """The counters ``tagwatch status`` shows.  Keywords are counted in the files on record now:
        a deleted photo's ledger is kept, for a copy of it to take up (see :meth:`same_picture`), and
        is not counted (it made a library moved to a new disk count each keyword twice)."""
        with self._lock:
            db = self._db
            states = dict(db.execute("SELECT state, COUNT(*) FROM files GROUP BY state").fetchall())
            cached = db.execute("SELECT COUNT(*) FROM image_vectors WHERE model = ?", (model,)).fetchone()[0]
            encoded = db.execute("SELECT value FROM counters WHERE name = 'encoded'").fetchone()[0]
            captioned = db.execute("SELECT value FROM counters WHERE name = 'captioned'").fetchone()[0]
            actions = dict(db.execute(  # one pass over the ledger (status asks every 10 s)
                "SELECT l.action, COUNT(*) FROM ledger l JOIN files f ON f.id = l.file_id WHERE f.state != ? "
                "GROUP BY l.action", (DELETED,)).fetchall())
            written, declined = actions.get(ADDED, 0), actions.get(DECLINED, 0)
        return {
            "files": sum(n for s, n in states.items() if s != DELETED),
            "tagged": states.get(DONE, 0),
            "pending": states.get(PENDING, 0),
            "failed": states.get(FAILED, 0),
            "deleted": states.get(DELETED, 0),
            "untagged": states.get(UNTAGGED, 0),
            "vectors": cached,
            "encoded": encoded,
            "captioned": captioned,
            "keywords_written": written,
            "keywords_declined": declined,  # taken out of their photo by a person, never written again
        }

    def failures(self, limit: int = 20) -> list[tuple[str, str]]:
        with self._lock:
            rows = self._db.execute("SELECT path, error FROM files WHERE state = ? "
                                    "ORDER BY updated DESC LIMIT ?", (FAILED, limit))
            return [(r[0], r[1]) for r in rows]

    # -- the review page -----------------------------------------------------------------------

    def browse(self, folders: Sequence[str], *, state: str | None = None, tag: str | None = None,
               recent: bool = False, limit: int = 60, offset: int = 0) -> tuple[list[FileRow], int]:
        """One page of the live files inside ``folders`` (by path, or most recently tagged first with
        ``recent``: keywords written, or first tagged, not a re-check that wrote nothing), and how many
        there are in all; ``tag``: only files whose last prediction holds that keyword."""
        where, args = self._browse_where(folders, state, tag)
        order = "COALESCE(tagged, updated) DESC, id DESC" if recent else "path"
        with self._lock:
            total = self._db.execute(f"SELECT COUNT(*) FROM files WHERE {where}", args).fetchone()[0]
            rows = self._db.execute(f"SELECT * FROM files WHERE {where} ORDER BY {order} LIMIT ? OFFSET ?",
                                    (*args, limit, offset)).fetchall()
        return [_row(r) for r in rows], total

    def browse_vectors(self, folders: Sequence[str], model: str, *, tag: str | None = None
                       ) -> list[tuple[FileRow, np.ndarray]]:
        """The tagged files inside ``folders`` with their cached vectors (scores across the library)."""
        where, args = self._browse_where(folders, DONE, tag, "f.")
        with self._lock:
            rows = self._db.execute(
                f"""SELECT f.*, v.vector FROM files f JOIN image_vectors v ON v.key = f.key AND v.model = ?
                    WHERE {where} ORDER BY f.path""", (model, *args)).fetchall()
        return [(_row(r), _vector(r["vector"])) for r in rows]

    @staticmethod
    def _browse_where(folders: Sequence[str], state: str | None, tag: str | None,
                      prefix: str = "") -> tuple[str, list[Any]]:
        ranges = [_under(folder) for folder in folders]
        clauses = [f"{prefix}state != ?", "(" + (" OR ".join(f"({prefix}path >= ? AND {prefix}path < ?)"
                                                          for _ in ranges) or "0") + ")"]
        args: list[Any] = [DELETED, *(bound for pair in ranges for bound in pair)]
        if state is not None:
            clauses.append(f"{prefix}state = ?")
            args.append(state)
        if tag is not None:  # and not taken out of the file by a person since
            clauses.append(f"instr(char(10) || {prefix}tags || char(10), char(10) || ? || char(10)) > 0")
            clauses.append(f"NOT EXISTS (SELECT 1 FROM ledger d WHERE d.file_id = {prefix or 'files.'}id "
                           "AND d.keyword = ? AND d.action = ?)")
            args += [tag, tag, DECLINED]
        return " AND ".join(clauses), args

    def stamp(self) -> tuple[int, float]:
        """Changes whenever a file row is added, removed or rewritten (caches of the review page)."""
        with self._lock:
            count, latest = self._db.execute("SELECT COUNT(*), MAX(updated) FROM files").fetchone()
        return count, latest or 0.0

    def ledgers(self, file_ids: Iterable[int]) -> dict[int, dict[str, str]]:
        """file id → keyword → ledger action (ADDED, REMOVED, USER, DECLINED, WITHDRAWN), for many
        files at once."""
        found: dict[int, dict[str, str]] = {}
        with self._lock:
            for file_id in dict.fromkeys(file_ids):
                rows = self._db.execute("SELECT keyword, action FROM ledger WHERE file_id = ?", (file_id,))
                found[file_id] = {r[0]: r[1] for r in rows}
        return found

    def declined_pairs(self) -> set[tuple[int, str]]:
        """(file id, keyword) of every keyword a person took out of a file (few: one per removal)."""
        with self._lock:
            return {(r[0], r[1]) for r in self._db.execute(
                "SELECT file_id, keyword FROM ledger WHERE action = ?", (DECLINED,))}

    def declined(self, keys: Mapping[str, bytes | None]) -> dict[str, list[str]]:
        """path → the keywords a person took out of it, for files whose recorded picture is still
        ``keys[path]`` (the ledger belongs to the picture it was recorded with; a photo saved over or
        renamed onto a tagged one inherits none of it)."""
        rows = self.files(keys)
        mine = {path: row.id for path, row in rows.items() if row.key is not None and row.key == keys[path]}
        ledgers = self.ledgers(mine.values())
        return {path: [k for k, action in ledgers[file_id].items() if action == DECLINED]
                for path, file_id in mine.items()}

    def ledger_history(self, file_id: int) -> list[tuple[str, str, float, tuple[str, ...]]]:
        """Every ledger entry of a file, oldest first: (keyword, action, when, hierarchical paths)."""
        with self._lock:
            rows = self._db.execute("SELECT keyword, action, written, paths FROM ledger WHERE file_id = ? "
                                    "ORDER BY written, keyword", (file_id,)).fetchall()
        return [(r[0], r[1], r[2], tuple(r[3].split("\n")) if r[3] else ()) for r in rows]
