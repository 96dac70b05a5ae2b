"""Retry policy: which failures pass by themselves, and how long to wait before trying again.

(Named for what it decides; it was ``faults.py``.)

A full disk, an exceeded quota or a NAS that stops answering for a minute are not the photo's fault:
the same write works once space returns or the network is back, so those files are retried with a
growing pause instead of being marked failed (which would leave them untagged until they change).  A
corrupt or unreadable picture is the file's own problem and stays failed until the file changes.
"""

from __future__ import annotations

import errno
import os
import signal
import sqlite3
import time

# errno values that describe the storage, not the file
TRANSIENT_ERRNOS = frozenset({
    errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EAGAIN, errno.ETIMEDOUT, errno.ESTALE,
    errno.EHOSTDOWN, errno.EHOSTUNREACH, errno.ENETDOWN, errno.ENETUNREACH, errno.ECONNRESET,
})
# SQLite primary result codes of the same kind: BUSY, LOCKED, READONLY (a chmod, or a disk remounted
# read-only: the store reconnects once it is fixed), IOERR, FULL
_SQLITE_TRANSIENT = frozenset({5, 6, 8, 10, 13})
# Reasons that depend on who may read or write the file, not on its content: a chmod can cure them,
# so such a failure is retried when the file's attributes change.
_ACCESS_MARKERS = (os.strerror(errno.EACCES), os.strerror(errno.EPERM), "the file is read-only")

FIRST_DELAY_S = 1.0
MAX_DELAY_S = 300.0
# How long the daemon's photo batches wait for a database another program holds locked before the
# photos WAIT, said in one line ("photos are not tagged yet: database: database is locked"), and are
# retried with the backoff above.  A lock of another tagwatch (a command's write, the review page's
# correction, `scan` beside the daemon) or a checkpoint lasts milliseconds and passes within it
# without a word; one held longer (a backup script's BEGIN EXCLUSIVE, a `sqlite3` shell left in a
# transaction, a VACUUM) is said this long after a photo met it, not after SQLite's 30 s
# (store.LOCK_WAIT_S, which commands and the daemon's other writes keep: see docs/faults.md).
DATABASE_LOCK_WAIT_S = 5.0
QUIET_S = 5.0  # a file cut short that stays the same this long is not being written any more


# How exiftool.ExifToolFault's reasons begin (after "exiftool failed: "): its process ended under a
# command, or said nothing within its timeout.  Either is retried with a fresh exiftool
EXIFTOOL_ENDED = "the exiftool process ended while it worked on the file"
EXIFTOOL_HUNG = "no answer within"
# A photo on which exiftool ended this many times running, with exiftool working on other photos
# in between, is taken to be what kills it (a file that crashes it): failed as the file's fault
EXIFTOOL_TRIES = 3


def exiftool_fault(reason: str | None) -> str | None:
    """"ended" or "hung" where ``reason`` (a WAIT outcome's) is exiftool's own failure, else None."""
    text = reason or ""
    if f"exiftool failed: {EXIFTOOL_ENDED}" in text:
        return "ended"
    if f"exiftool failed: {EXIFTOOL_HUNG}" in text:
        return "hung"
    return None


# How a reason of the database's own begins (every photo's trouble alike: said once, see worker._shared)
DATABASE = "database: "


def database_fault(reason: str | None) -> bool:
    """Is ``reason`` (a WAIT outcome's, :func:`transient_reason`'s) the database's passing trouble
    rather than the photo's: a lock, a read-only or full database, its I/O error.  The one test the
    engine and the worker ask (a re-score stops only for a lock: :func:`sqlite_locked`)."""
    return (reason or "").startswith(DATABASE)


# SQLite's primary result codes for a lock another connection holds: BUSY (the database file's: a
# backup script's BEGIN EXCLUSIVE, another tagwatch's write) and LOCKED (a table's or the schema's, in
# a shared cache); their extended codes (BUSY_SNAPSHOT 517, LOCKED_SHAREDCACHE 262) add higher bits
_SQLITE_LOCK_CODES = frozenset({5, 6})


def sqlite_locked(exc: BaseException) -> bool:
    """Is ``exc`` SQLite's BUSY or LOCKED, any of their extended codes: another connection holds
    the lock a write needs?  The one test of it, by SQLite's result code: its words differ by code
    ("database table is locked: files" for LOCKED_SHAREDCACHE, where "is locked" ended the
    reason) and may by version.  Only an error that carries no code (one raised by hand) is
    judged by its words."""
    if not isinstance(exc, sqlite3.Error):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in _SQLITE_LOCK_CODES
    return "is locked" in str(exc)


class DatabaseReason(str):
    """A reason of the database's own (``database: …``, :func:`transient_reason`'s) that keeps what
    SQLite's code said of it, for :func:`database_locked`: a reason travels as text (an outcome's
    error, the worker's waiting list), and the text was read for it."""

    locked: bool = False

    def __new__(cls, text: str, locked: bool = False) -> DatabaseReason:
        reason = super().__new__(cls, text)
        reason.locked = locked
        return reason


def database_locked(reason: str | None) -> bool:
    """Is ``reason`` another program's lock on the database (SQLite's BUSY or LOCKED,
    :func:`sqlite_locked`): all or nothing, so that any write that passes shows it gone, where a
    full disk may take a small write and not a photo's.  A reason made of plain text (none made
    here) is judged by its words."""
    if isinstance(reason, DatabaseReason):
        return reason.locked
    return database_fault(reason) and "is locked" in (reason or "")


class TransientError(RuntimeError):
    """A problem of the disk or the network, not of the file; the message is the reason."""


def transient_reason(exc: BaseException) -> str | None:
    """The reason to retry later if ``exc`` is a passing storage problem, else None."""
    if isinstance(exc, TransientError):
        return str(exc)
    if isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS:
        return exc.strerror or os.strerror(exc.errno)
    if isinstance(exc, sqlite3.OperationalError):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None and code & 0xFF in _SQLITE_TRANSIENT:
            return DatabaseReason(f"{DATABASE}{exc}", sqlite_locked(exc))
    return None


def access_problem(reason: str | None) -> bool:
    """A recorded failure a change of permissions can cure (chmod, chown, a remount read-write)."""
    return bool(reason) and any(marker in reason for marker in _ACCESS_MARKERS)


def access_cured(reason: str | None, path: str, st: os.stat_result) -> bool:
    """A failure for want of permission that a chmod (or a remount) has since cured: the file is
    readable and has a write bit, and its folder takes new files.  A chmod leaves the size and the
    modification time alone, so without this such a file would stay failed until edited."""
    folder = os.path.dirname(path) or "."
    return (access_problem(reason) and bool(st.st_mode & 0o222) and os.access(path, os.R_OK)
            and os.access(folder, os.W_OK | os.X_OK))


# How a failure of tagwatch's own (an unexpected exception) begins: such a file is tried again at the
# next start or scan, where a fault of the file's waits for the file to change
INTERNAL_ERROR = "internal error, tried again at the next start or scan: "


def retried_anyway(reason: str | None, path: str, st: os.stat_result) -> bool:
    """A recorded failure to try again although the file did not change: tagwatch's own error (a
    bug, or the package upgraded under a running daemon: every photo it met failed for good with a
    TypeError), or a want of permission a chmod has cured (:func:`access_cured`)."""
    return (reason or "").startswith(INTERNAL_ERROR) or access_cured(reason, path, st)


class Backoff:
    """Per-key pauses that double from ``first`` up to ``cap`` seconds: quick to notice that space
    came back, yet a disk full for days costs one attempt per file every few minutes."""

    def __init__(self, first: float = FIRST_DELAY_S, cap: float = MAX_DELAY_S) -> None:
        self.first, self.cap = first, cap
        self._tries: dict[str, int] = {}

    def __contains__(self, key: str) -> bool:
        return key in self._tries

    def next(self, key: str) -> float:
        """The pause before the next attempt at ``key`` (which just failed again)."""
        tries = self._tries.get(key, 0)
        self._tries[key] = tries + 1
        return min(self.first * 2 ** tries, self.cap)

    def keys(self) -> list[str]:
        """Every key now waiting."""
        return list(self._tries)

    def tries(self, key: str) -> int:
        return self._tries.get(key, 0)

    def clear(self, key: str) -> None:
        self._tries.pop(key, None)


class StillWriting:
    """Is a file that looks cut short (a truncated or empty picture) probably still being written?

    Judged by watching it, not by counting attempts: yes while its size or modification time changes
    between looks, and until it has stayed the same for ``quiet`` seconds.  A copy over a slow share
    (1 MB every 0.7 s) grows for as long as it takes; a file really cut short is failed once it has
    sat unchanged for ``quiet`` seconds, and a later write retries it like any change.
    """

    def __init__(self, quiet: float = QUIET_S) -> None:
        self.quiet = quiet
        self._seen: dict[str, tuple[int, int, float]] = {}  # key -> size, mtime, since (monotonic)

    def __call__(self, key: str, st: os.stat_result) -> bool:
        now = time.monotonic()
        seen = self._seen.get(key)
        if seen is None or seen[:2] != (st.st_size, st.st_mtime_ns):
            self._seen[key] = (st.st_size, st.st_mtime_ns, now)
            return True
        if now - seen[2] < self.quiet:
            return True
        del self._seen[key]
        return False

    def __contains__(self, key: str) -> bool:
        return key in self._seen

    def keys(self) -> list[str]:
        """Every key being watched now (the worker forgets those under a deleted folder)."""
        return list(self._seen)

    def forget(self, key: str) -> None:
        self._seen.pop(key, None)


def killed_by(number: int) -> str:
    """How a child process (the model's, exiftool) ended by a signal, for a log line: SIGKILL is most
    often the kernel's out-of-memory killer, so the line says so."""
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = f"signal {number}"
    return f"killed by {name}" + (", perhaps out of memory" if name == "SIGKILL" else "")
