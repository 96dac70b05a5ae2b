"""`tagwatch db rebuild`: a fresh database from whatever rows of a damaged one can still be read.

The database is a cache plus the ledger.  Vectors can always be recomputed (at the cost of encoding
again); the ledger cannot, since it is the only record of which keywords are ours, so every readable
ledger row is carried over.  The damaged file is kept beside the new one, never deleted.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from .store import Store

log = logging.getLogger(__name__)

# Parents before children, so the ledger's file ids exist when its rows arrive.
TABLES = ("files", "ledger", "image_vectors", "text_vectors", "counters")


def _salvage(damaged: sqlite3.Connection, table: str, advance: Callable[[int], None] = lambda count: None
             ) -> tuple[list[str], list[tuple], str | None]:
    """Rows of ``table`` up to the first unreadable page, and the error that stopped the read."""
    rows: list[tuple] = []
    try:
        cursor = damaged.execute(f"SELECT * FROM {table}")  # fixed names, never input
        columns = [c[0] for c in cursor.description]
        while batch := cursor.fetchmany(1000):
            rows += batch
            advance(len(batch))
    except sqlite3.DatabaseError as exc:
        return (columns if rows else []), rows, str(exc)
    return columns, rows, None


def _count(damaged: sqlite3.Connection) -> int | None:
    """How many rows the tables claim to hold (for a progress bar), or None if that is unreadable."""
    try:
        return sum(damaged.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in TABLES)
    except sqlite3.DatabaseError:
        return None


def rebuild(path: Path, expect: Callable[[int | None], None] = lambda total: None,
            advance: Callable[[int], None] = lambda count: None) -> tuple[Path, dict[str, int], list[str]]:
    """Move ``path`` aside and build a new database from its readable rows.

    Returns the damaged copy's path, the rows carried over per table, and what could not be read.
    ``expect`` is told how many rows there seem to be, ``advance`` of each thousand read.
    """
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    os.replace(path, aside)
    for suffix in ("-wal", "-shm"):  # the log belongs to the damaged file: keep them together
        if Path(f"{path}{suffix}").exists():
            os.replace(f"{path}{suffix}", f"{aside}{suffix}")
    counts: dict[str, int] = {}
    problems: list[str] = []
    store = Store(path)
    try:
        damaged = sqlite3.connect(f"file:{aside}?mode=ro", uri=True)
        expect(_count(damaged))
        for table in TABLES:
            columns, rows, error = _salvage(damaged, table, advance)
            if error:
                problems.append(f"{table}: {error} after {len(rows)} rows")
            if rows:
                marks = ", ".join("?" * len(columns))
                with store.transaction() as db:
                    verb = "REPLACE" if table == "counters" else "IGNORE"  # keep the old tallies
                    db.executemany(f"INSERT OR {verb} INTO {table} ({', '.join(columns)}) "
                                   f"VALUES ({marks})", rows)
            counts[table] = len(rows)
        damaged.close()
        with store.transaction() as db:  # a ledger row whose file row was lost has no file to name
            db.execute("DELETE FROM ledger WHERE file_id NOT IN (SELECT id FROM files)")
    except sqlite3.DatabaseError as exc:  # not even the schema is readable: start empty
        problems.append(f"nothing readable: {exc}")
    finally:
        store.close()
    return aside, counts, problems
