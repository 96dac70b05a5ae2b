"""``tagwatch db check|rebuild``: check the database, or rebuild a damaged one from what is readable."""

from __future__ import annotations

import argparse

from ..status import running_daemon
from ..store import Store
from .common import UsageError, load
from .progress import Progress


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


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    db = sub.add_parser("db", parents=[common], help="check the database, or rebuild a damaged one")
    db.add_argument("action", choices=["check", "rebuild"])
    db.set_defaults(func=db_func)
