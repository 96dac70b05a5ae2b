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
from pathlib import Path

from .store import Store

log = logging.getLogger(__name__)

# Parents before children, so the ledger's file ids exist when its rows arrive.
TABLES = ("files", "ledger", "filled", "located", "places", "image_vectors", "text_vectors", "captions",
          "counters")


def _salvage(damaged: sqlite3.Connection, table: str) -> tuple[list[str], list[tuple], str | None]:
    """Rows of ``table`` up to the first unreadable page, and the error that stopped the read."""
    rows: list[tuple] = []
    columns: list[str] = []
    try:
        if damaged.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                           (table,)).fetchone() is None:
            return [], [], None  # a table an older schema did not have

        cursor = damaged.execute(f"SELECT * FROM {table}")  # fixed names, never input
        columns = [c[0] for c in cursor.description]
        while batch := cursor.fetchmany(1000):
            rows += batch
    except sqlite3.DatabaseError as exc:
        return (columns if rows else []), rows, str(exc)
    return columns, rows, None


def rebuild(path: Path) -> tuple[Path, dict[str, int], list[str]]:
    """Move ``path`` aside and build a new database from its readable rows.

    Returns the damaged copy's path, the rows carried over per table, and what could not be read.
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
        for table in TABLES:
            columns, rows, error = _salvage(damaged, table)
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
            for table in ("ledger", "filled", "located"):
                db.execute(f"DELETE FROM {table} WHERE file_id NOT IN (SELECT id FROM files)")
    except sqlite3.DatabaseError as exc:  # not even the schema is readable: start empty
        problems.append(f"nothing readable: {exc}")
    finally:
        store.close()
    return aside, counts, problems
