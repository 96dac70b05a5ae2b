"""``tagwatch db check|rebuild``: check the database, or rebuild a damaged one from what is readable.

Also the one line any command says when the database fails it (:func:`database_trouble`): damaged,
or on a full disk.
"""

from __future__ import annotations

import argparse
import errno
import os
import sqlite3
from pathlib import Path

from ..config import load_config
from ..status import running_daemon
from ..store import Store, StoreError
from .common import UsageError, load
from .progress import Progress

# SQLite's primary result codes: the file is damaged, or is no database at all; a disk is full, an
# I/O error (the -shm file cannot grow on a full disk), a file cannot be opened (nor created)
_CORRUPT, _NOTADB = 11, 26
_FULL, _IOERR, _CANTOPEN = 13, 10, 14
# Less free space than this beside the database, and SQLite's I/O error is the full disk: it needs
# a 32 KiB -shm file and room for the -wal before it can even read
_NEARLY_FULL = 1 << 20


def db_func(args: argparse.Namespace) -> int:
    from ..rebuild import PRECIOUS, rebuild

    config = load(args)
    database = config.database
    if not database.exists():
        raise UsageError(f"{database}: no database yet")
    if args.action == "check":
        store = Store(database)
        try:
            store.check()
        finally:
            store.close()
        print(f"{database}: ok")
        return 0
    pid = running_daemon(database)
    if pid is not None:
        raise UsageError(f"a tagwatch daemon (pid {pid}) is using {database}; stop it first")
    with Progress(None, "db rebuild", unit="row") as bar:
        aside, counts, problems = rebuild(database, bar.expect, bar.advance)
    print(f"rebuilt {database}; the previous file is kept as {aside}")  # damaged or not: rebuild is asked
    print("carried over: " + ", ".join(f"{n} {table}" for table, n in counts.items()))
    for problem in problems:  # one line per table that lost rows: how many, and what that costs
        print(problem)
    if not problems:
        print("nothing was lost")
    elif any(problem.split(":")[0] in (*PRECIOUS, "nothing readable") for problem in problems):
        print("the next `tagwatch run` (or `scan`) re-tags the photos and encodes again the vectors that "
              "were lost; the ledger rows lost cannot be recomputed (see above)")
    else:
        print("the next `tagwatch run` (or `scan`) re-tags what was lost; photos whose vectors were lost "
              "are encoded again")
    return 0


def database_trouble(args: argparse.Namespace, exc: BaseException) -> str | None:
    """The one line for an error a command met in its database and did not handle: a damaged file
    names ``tagwatch db rebuild``, a full disk says so (SQLite says "disk I/O error" when it cannot
    make its -shm file), another operational error (locked) is SQLite's words after the file's name;
    None for anything else."""
    cause = exc.__context__ if isinstance(exc, StoreError) else exc  # the store's own words otherwise
    database = _database(args)
    if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
        where = Path(cause.filename) if cause.filename else database
        return no_space(where, cause.errno, database) if where is not None else None
    if not isinstance(cause, sqlite3.DatabaseError) or database is None:
        return None
    code = (getattr(cause, "sqlite_errorcode", None) or 0) & 0xFF
    if code in (_CORRUPT, _NOTADB) or "malformed" in str(cause):
        return (f"{database}: the database is damaged ({cause}); `tagwatch db rebuild` keeps what can "
                f"still be read and sets the damaged file aside")
    if code == _FULL or (code in (_IOERR, _CANTOPEN) and _free(database.parent) < _NEARLY_FULL):
        return no_space(database, errno.ENOSPC)
    if isinstance(exc, StoreError) or not isinstance(cause, sqlite3.OperationalError):
        return None  # the store's own words; a programming error keeps its traceback
    return f"{database}: {cause}"


def no_space(path: Path, code: int, database: Path | None = None) -> str:
    """``path: no space left on device (4 KiB free in folder); ...`` (what is kept there, where
    ``path`` is beside the ``database``)."""
    folder = path.parent
    reason = os.strerror(code)
    reason = reason[:1].lower() + reason[1:]
    ours = ("tagwatch keeps its database, its -wal, -shm and lock files there: "
            if database is None or database.parent == folder else "")
    return (f"{path}: {reason} ({_free(folder) // 1024} KiB free in {folder}); {ours}free some space and "
            f"run the command again")


def _free(folder: Path) -> int:
    """Bytes free for this user in ``folder`` (a large number where that cannot be told)."""
    try:
        stats = os.statvfs(folder)
    except OSError:
        return 1 << 62
    return stats.f_bavail * stats.f_frsize


def _database(args: argparse.Namespace) -> Path | None:
    """The database the command used (its config was read once already), or None."""
    try:
        return load_config(Path(args.config) if getattr(args, "config", None) else None).database
    except Exception:  # the config that loaded a moment ago no longer does: name no file
        return None


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    db = sub.add_parser("db", parents=[common], help="check the database, or rebuild a damaged one")
    db.add_argument("action", choices=["check", "rebuild"])
    db.set_defaults(func=db_func)
