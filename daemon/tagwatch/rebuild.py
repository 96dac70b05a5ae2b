"""`tagwatch db rebuild`: a fresh database from whatever rows of a damaged one can still be read.

(Named for the command it implements; it was ``repair.py``.)  The database is a cache plus the
ledger.  Vectors can always be recomputed (at the cost of encoding again); the ledger cannot, since
it is the only record of which keywords are ours, so every readable ledger row is carried over.  The
damaged file is kept beside the new one, never deleted.  This module moves files; the SQL that
copies the rows is :meth:`Store.salvage_from`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from .store import Store


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
    store = Store(path)
    try:
        counts, problems = store.salvage_from(aside, expect, advance)
    finally:
        store.close()
    return aside, counts, problems
