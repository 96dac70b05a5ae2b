"""``tagwatch db check|rebuild``: check the database, or rebuild a damaged one from what is readable.

Also the one line any command says when its database is damaged (:func:`database_trouble`).
"""

from __future__ import annotations

import argparse
import sqlite3
from pathlib import Path

from ..config import load_config
from ..status import running_daemon
from ..store import Store, StoreError
from .common import UsageError, load
from .progress import Progress

# SQLite's primary result codes: the file is damaged, or is no database at all
_CORRUPT, _NOTADB = 11, 26


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
    names ``tagwatch db rebuild``, another operational error (locked) is SQLite's words after the
    file's name; None for anything else."""
    cause = exc.__context__ if isinstance(exc, StoreError) else exc  # the store's own words otherwise
    database = _database(args)
    if not isinstance(cause, sqlite3.DatabaseError) or database is None:
        return None
    code = (getattr(cause, "sqlite_errorcode", None) or 0) & 0xFF
    if code in (_CORRUPT, _NOTADB) or "malformed" in str(cause):
        return (f"{database}: the database is damaged ({cause}); `tagwatch db rebuild` keeps what can "
                f"still be read and sets the damaged file aside")
    if isinstance(exc, StoreError) or not isinstance(cause, sqlite3.OperationalError):
        return None  # the store's own words; a programming error keeps its traceback
    return f"{database}: {cause}"


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
