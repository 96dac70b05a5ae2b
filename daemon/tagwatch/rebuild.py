"""`tagwatch db rebuild`: a fresh database from every row of a damaged one that can still be read.

(Named for the command it implements; it was ``repair.py``.)  The database is a cache plus the
ledger.  Vectors can always be recomputed (at the cost of encoding again); the ledger cannot, since
it is the only record of which keywords are ours.  A plain ``SELECT *`` stops at the first damaged
page, and a bad sector then cost every row behind it (3 damaged pages of 71 lost all 403 file rows
and so the whole ledger with them).  So each table is walked in key order, and where a read stops
the walk looks for the first key after it that reads again, by seeks (never a scan across the bad
page), and goes on from there: a damaged page costs the rows on it.  A file row on a damaged page
whose path the table's unique index still holds is rebuilt from the indexes (path, picture, state),
so the ledger rows that name it are kept.  The damaged file is kept beside the new one, never
deleted.

The SQL that reads the damaged file lives here rather than in :mod:`tagwatch.store`: it is about
getting round damage in SQLite's b-trees, not about tagwatch's records.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .store import PENDING, Store

# Parents before children, so the ledger's file ids exist when its rows arrive.  ``filled`` is
# ledger too (what untag puts back into a location field or a description); ``located`` and
# ``places`` save a re-read of each photo's GPS and a gazetteer load, ``captions`` a captioning.
TABLES = ("files", "ledger", "filled", "located", "places", "image_vectors", "text_vectors",
          "captions", "counters")
FILE_TABLES = ("ledger", "filled", "located")  # rows that name a file by its id
PRECIOUS = ("ledger", "filled")  # what no scan can recompute: which keywords and values are ours

# What a lost row of each table costs, said after the count
_COST = {
    "files": "those photos are read and tagged again at the next scan",
    "ledger": ("tagwatch's keywords in those photos now count as a person's: untag leaves them in and "
               "sync never takes them out"),
    "filled": "untag leaves those filled fields (places, descriptions) as they are",
    "located": "those photos' coordinates are read again",
    "places": "those places are looked up again",
    "image_vectors": "those photos are encoded again",
    "text_vectors": "those prompts are encoded again",
    "captions": "those photos are captioned again",
    "counters": "that tally starts again from 0",
}

_CHUNK = 1000  # rows per insert (and per progress step)
_INT_MIN, _INT_MAX = -(2 ** 63), 2 ** 63 - 1
_BOTTOM: dict[str, Any] = {"int": _INT_MIN, "text": "", "blob": b""}  # before (nearly) every value


def rebuild(path: Path, expect: Callable[[int | None], None] = lambda total: None,
            advance: Callable[[int], None] = lambda count: None) -> tuple[Path, dict[str, int], list[str]]:
    """Move ``path`` aside and build a new database from its readable rows.

    Returns the damaged copy's path, the rows carried over per table, and one line per table that
    lost rows (how many, and what that costs; empty when nothing was lost).  ``expect`` is told how
    many rows there seem to be, ``advance`` of the rows read as they are.
    """
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    os.replace(path, aside)
    for suffix in ("-wal", "-shm"):  # the log belongs to the damaged file: keep them together
        if Path(f"{path}{suffix}").exists():
            os.replace(f"{path}{suffix}", f"{aside}{suffix}")
    try:
        store = Store(path)
        try:
            counts, problems = salvage(aside, store, expect, advance)
        finally:
            store.close()
    except BaseException:  # a full disk, Ctrl-C: the damaged file goes back, a rebuild can start again
        _put_back(path, aside)
        raise
    return aside, counts, problems


def _put_back(path: Path, aside: Path) -> None:
    """Remove the half-built database and put the one set aside back where it was: else the next
    rebuild would set the half-built one aside as the damaged file and salvage from it."""
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}{suffix}")
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{aside}{suffix}").exists():
            os.replace(f"{aside}{suffix}", f"{path}{suffix}")


def salvage(damaged: Path, store: Store, expect: Callable[[int | None], None] = lambda total: None,
            advance: Callable[[int], None] = lambda count: None) -> tuple[dict[str, int], list[str]]:
    """Copy every row of the database file ``damaged`` (opened read-only) that SQLite can still read
    into ``store``; returns the rows carried over per table and a line per table that lost rows.

    A ledger (or filled, located) row whose file row is lost is dropped: it has no file to name (and
    the foreign key would refuse it).  A table an older schema did not have is skipped.
    """
    counts: dict[str, int] = {}
    problems: list[str] = []
    try:
        source = sqlite3.connect(f"file:{damaged}?mode=ro", uri=True)
    except sqlite3.DatabaseError as exc:
        return counts, [f"nothing readable: {exc}"]
    try:
        source.execute("PRAGMA cell_size_check = ON")  # a damaged page refused, not misread
        try:
            tables = _tables(source)
        except sqlite3.DatabaseError as exc:  # not even the schema is readable: start empty
            return counts, [f"nothing readable: {exc}"]
        claimed = {table: _count(source, table) for table in tables}
        known = list(claimed.values())
        expect(None if None in known else sum(n for n in known if n is not None))
        pages = _damaged_pages(source)
        files_lost = False
        for table in tables:
            result = _Salvaged(table, claimed[table], *pages.get(table, (0, 0.0)))
            if table == "files":
                _salvage_files(source, store, result, advance)
                files_lost = result.read < (result.claimed or 0) or result.stretches > 0
            else:
                _salvage_table(source, store, result, advance)
            counts[table] = result.kept
            problems += result.lines(report_orphans=files_lost)
    finally:
        source.close()
    return counts, problems


@dataclass
class _Salvaged:
    """What one table's salvage read, kept and lost."""

    table: str
    claimed: int | None  # rows the damaged file says it holds (None: even the count is unreadable)
    damaged_pages: int = 0  # its pages SQLite finds damaged (dbstat)
    cells_per_page: float = 0.0  # rows per readable leaf page: an estimate of a damaged page's
    read: int = 0  # rows read whole (file rows rebuilt from the indexes not included)
    kept: int = 0  # rows carried over
    stretches: int = 0  # unreadable stretches the walk went round
    rebuilt: int = 0  # file rows rebuilt from the indexes
    orphans: int = 0  # rows dropped as the row of the file they name is lost
    orphan_files: int = 0
    error: str | None = None  # the first read error, for a table none of which was read

    def lines(self, report_orphans: bool) -> list[str]:
        """What this table lost, one line each; none when nothing was."""
        lines: list[str] = []
        damage = (f" ({self.damaged_pages} damaged page{'s' * (self.damaged_pages != 1)})"
                  if self.damaged_pages else "")
        if self.claimed is not None:
            unread = max(self.claimed - self.read, 0)
            counted = f"{unread} of {self.claimed} rows"
        elif self.damaged_pages and self.cells_per_page:
            unread = max(round(self.damaged_pages * self.cells_per_page), 1)
            counted = f"about {unread} rows"
        else:
            unread = int(self.stretches > 0 or self.error is not None)
            counted = "some rows"
        if unread:
            if self.table == "files" and self.rebuilt:
                lost = unread - self.rebuilt
                line = (f"files: {counted} unreadable{damage}; {self.rebuilt} of them rebuilt from the "
                        f"table's indexes (path, picture and state: read again at the next scan, "
                        f"tagwatch's keywords in them still known)")
                lines.append(line + (f"; {lost} lost: {_COST['files']}" if lost > 0 else ""))
            else:
                reason = f" ({self.error})" if self.read == 0 and self.error else ""
                lines.append(f"{self.table}: {counted} unreadable{damage}{reason}: {_COST[self.table]}")
        if self.orphans and report_orphans:
            photos = f"{self.orphan_files} photo{'s' * (self.orphan_files != 1)}"
            lines.append(f"{self.table}: {self.orphans} rows of {photos} whose record was lost dropped: "
                         f"{_COST[self.table]}")
        return lines


def _salvage_table(source: sqlite3.Connection, store: Store, result: _Salvaged,
                   advance: Callable[[int], None]) -> None:
    """Walk one table into ``store``; rows naming a file the new store lacks are counted, dropped."""
    table = result.table
    walk = _Walk(source, _table_order(source, table))
    columns = _columns(source, table)
    rows: Iterable[tuple] = walk.rows()
    if table in FILE_TABLES:
        with store.transaction() as db:
            files = {r[0] for r in db.execute("SELECT id FROM files")}
        at = columns.index("file_id")
        orphaned: set[int] = set()

        def named(rows: Iterable[tuple]) -> Iterator[tuple]:
            for row in rows:
                if row[at] in files:
                    yield row
                else:
                    result.orphans += 1
                    orphaned.add(row[at])
        rows = named(rows)
    result.kept = _insert(store, table, columns, rows, advance)
    result.read, result.stretches, result.error = walk.read, walk.stretches, walk.error
    if table in FILE_TABLES:
        result.orphan_files = len(orphaned)


def _salvage_files(source: sqlite3.Connection, store: Store, result: _Salvaged,
                   advance: Callable[[int], None]) -> None:
    """The file table, and then each file row the walk could not read: looked up by its id where an
    index names it (a stretch the walk went round may hold readable pages), else rebuilt from the
    indexes, which are b-trees of their own, usually undamaged where the table is."""
    columns = _columns(source, "files")
    walk = _Walk(source, _table_order(source, "files"))
    read: set[int] = set()
    at = columns.index("id")

    def noted(rows: Iterable[tuple]) -> Iterator[tuple]:
        for row in rows:
            read.add(row[at])
            yield row

    result.kept = _insert(store, "files", columns, noted(walk.rows()), advance)
    result.read, result.stretches, result.error = walk.read, walk.stretches, walk.error
    if not walk.stretches and (result.claimed is None or result.read >= result.claimed):
        return
    indexes = _file_indexes(source)
    paths = _indexed(source, "path", indexes) if "path" in indexes else {}
    missing = [file_id for file_id in paths if file_id not in read]
    found: list[tuple] = []
    for file_id in missing:
        with contextlib.suppress(sqlite3.DatabaseError):
            row = source.execute("SELECT * FROM files WHERE rowid = ?", (file_id,)).fetchone()
            if row is not None:
                found.append(row)
    result.kept += _insert(store, "files", columns, found, advance)
    result.read += len(found)
    looked_up = {row[at] for row in found}
    rest = [file_id for file_id in missing if file_id not in looked_up]
    if not rest:
        return
    states = _indexed(source, "state", indexes) if "state" in indexes else {}
    keys = _indexed(source, "key", indexes) if "key" in indexes else {}
    now = time.time()
    rebuilt = [(file_id, paths[file_id], keys.get(file_id), states.get(file_id, PENDING), now)
               for file_id in rest]
    result.rebuilt = _insert(store, "files", ["id", "path", "key", "state", "updated"], rebuilt, advance)
    result.kept += result.rebuilt


def _insert(store: Store, table: str, columns: list[str], rows: Iterable[tuple],
            advance: Callable[[int], None] = lambda count: None) -> int:
    """Insert ``rows`` in one transaction; returns how many went in (a duplicate is ignored)."""
    verb = "REPLACE" if table == "counters" else "IGNORE"  # counters: the old tallies, not the new 0s
    sql = (f"INSERT OR {verb} INTO {table} ({', '.join(columns)}) "  # fixed names, never input
           f"VALUES ({', '.join('?' * len(columns))})")
    with store.transaction() as db:
        before = db.total_changes
        chunk: list[tuple] = []
        for row in rows:
            chunk.append(row)
            if len(chunk) == _CHUNK:
                db.executemany(sql, chunk)
                advance(len(chunk))
                chunk = []
        if chunk:
            db.executemany(sql, chunk)
            advance(len(chunk))
        return db.total_changes - before


# -- the damaged file ------------------------------------------------------------------------------

def _tables(source: sqlite3.Connection) -> list[str]:
    """The salvaged tables the damaged file has (an older schema lacks the newer ones)."""
    have = {r[0] for r in source.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return [table for table in TABLES if table in have]


def _columns(source: sqlite3.Connection, table: str) -> list[str]:
    """The table's columns in ``SELECT *`` order (from the schema, which an older version shapes)."""
    return [r[1] for r in source.execute(f"PRAGMA table_info({table})")]


def _count(source: sqlite3.Connection, table: str) -> int | None:
    """How many rows ``table`` holds, or None if that is unreadable.  SQLite counts from the
    smallest index where there is one: the file table's count survives damage to the table."""
    try:
        return int(source.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    except sqlite3.DatabaseError:
        return None


def _damaged_pages(source: sqlite3.Connection) -> dict[str, tuple[int, float]]:
    """Per table: how many of its pages SQLite finds damaged, and the rows on its readable leaf
    pages on average (an estimate of what a damaged one held).  Empty where SQLite has no dbstat."""
    pages: dict[str, list[int]] = {}
    damaged: dict[str, int] = {}
    try:
        for name, kind, cells in source.execute("SELECT name, pagetype, ncell FROM dbstat"):
            if kind == "corrupted":
                damaged[name] = damaged.get(name, 0) + 1
            elif kind == "leaf":
                pages.setdefault(name, []).append(cells)
    except sqlite3.DatabaseError:
        return {}
    return {name: (n, sum(pages.get(name, [])) / max(len(pages.get(name, [])), 1))
            for name, n in damaged.items()}


def _file_indexes(source: sqlite3.Connection) -> dict[str, str]:
    """The file table's one-column indexes, by column (path: its UNIQUE one, key, state)."""
    found: dict[str, str] = {}
    for r in source.execute("PRAGMA index_list(files)"):
        columns = [c[2] for c in source.execute(f"PRAGMA index_info('{r[1]}')")]
        if len(columns) == 1 and r[4] == 0:  # not a partial index
            found[columns[0]] = r[1]
    return found


def _indexed(source: sqlite3.Connection, column: str, indexes: dict[str, str]) -> dict[int, Any]:
    """file id → ``column`` as the index on it holds it, from a walk of that index alone."""
    kind = {"path": "text", "state": "text"}.get(column, "blob")
    unique = column == "path"
    keys, kinds = ((column,), (kind,)) if unique else ((column, "rowid"), (kind, "int"))
    where = f"{column} IS NOT NULL"  # a NULL is no value to rebuild, and no key to walk by
    order = _Order(f"files INDEXED BY \"{indexes[column]}\"", keys, kinds, where)
    return {row[0]: row[1] for row in _Walk(source, order, f"rowid, {column}").rows()}


# -- walking a b-tree round its damage ------------------------------------------------------------

@dataclass(frozen=True)
class _Order:
    """A b-tree to walk: its source (a table, or a table ``INDEXED BY`` one of its indexes), the
    columns it is ordered by and their kinds (int, text, blob), and a condition on its rows."""

    source: str
    keys: tuple[str, ...]
    kinds: tuple[str, ...]
    where: str = "1"


def _table_order(source: sqlite3.Connection, table: str) -> _Order:
    """A table's b-tree order: its rowid, or for a WITHOUT ROWID table its primary key."""
    sql = source.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?",
                         (table,)).fetchone()[0]
    if "WITHOUT ROWID" not in " ".join(sql.upper().split()):
        return _Order(table, ("rowid",), ("int",))
    info = sorted((r[5], r[1], r[2].upper()) for r in source.execute(f"PRAGMA table_info({table})") if r[5])
    return _Order(table, tuple(name for _, name, _ in info), tuple(_kind(kind) for _, _, kind in info))


def _kind(declared: str) -> str:
    """int, text or blob: a column's type affinity by SQLite's rules for its declared type."""
    if "INT" in declared:
        return "int"
    return "text" if any(t in declared for t in ("CHAR", "CLOB", "TEXT")) else "blob"


class _Walk:
    """The rows of one b-tree in key order, round the pages SQLite cannot read.

    The rows after a position (a key, or the first columns of one) are read with one seek per key
    column (``k0 = ? AND k1 > ?``, then ``k0 > ?``), so a read starts on the page where the position
    falls and never crosses the pages before it.  Where a read stops, the first position after the
    last row read from which a read works again is searched for, column by column from the last
    (:func:`_first_readable`), and the walk goes on from there.
    """

    def __init__(self, source: sqlite3.Connection, order: _Order, columns: str = "*") -> None:
        self.source, self.order = source, order
        self._select = f"SELECT {', '.join(order.keys)}, {columns} FROM {order.source}"
        self.read = 0
        self.stretches = 0  # unreadable stretches gone round
        self.error: str | None = None  # what stopped the first read that stopped

    def rows(self) -> Iterator[tuple]:
        width = len(self.order.keys)
        position: tuple = ()
        while True:
            try:
                for row in self._after(position):
                    position = tuple(row[:width])
                    self.read += 1
                    yield tuple(row[width:])
                return
            except sqlite3.DatabaseError as exc:
                error = str(exc)
            # Python's sqlite3 steps to the next row before it hands one over, so the last row before
            # a damaged page goes with the error: read alone (LIMIT 1 stops at it), it is kept
            try:
                alone = next(self._after(position, " LIMIT 1"), None)
            except sqlite3.DatabaseError:
                alone = ()
            if alone is None:  # nothing after it: the error was past the last row
                return
            if alone:
                position = tuple(alone[:width])
                self.read += 1
                yield tuple(alone[width:])
                continue
            self.stretches += 1
            self.error = self.error or error
            resumed = self._resume(position)
            if resumed is None:
                return
            position = resumed
            if len(position) == width:  # a read goes on after the row found: that row itself, alone
                with contextlib.suppress(sqlite3.DatabaseError):
                    match = " AND ".join([self.order.where, *(f"{k} = ?" for k in self.order.keys)])
                    found = self.source.execute(f"{self._select} WHERE {match} LIMIT 1", position).fetchone()
                    if found is not None:
                        self.read += 1
                        yield tuple(found[width:])

    def _after(self, position: tuple, limit: str = "") -> Iterator[sqlite3.Row]:
        """The rows after ``position`` in key order (all of them for the empty position)."""
        keys, where = self.order.keys, self.order.where
        order = ", ".join(keys)
        if not position:
            yield from self.source.execute(f"{self._select} WHERE {where} ORDER BY {order}{limit}")
            return
        for level in reversed(range(len(position))):
            match = " AND ".join([where, *(f"{k} = ?" for k in keys[:level]), f"{keys[level]} > ?"])
            yield from self.source.execute(f"{self._select} WHERE {match} ORDER BY {order}{limit}",
                                           position[:level + 1])

    def _readable(self, position: tuple) -> bool:
        """Does a read from ``position`` get its first row (or find there is none)?"""
        try:
            next(self._after(position, " LIMIT 1"), None)
        except sqlite3.DatabaseError:
            return False
        return True

    def _resume(self, last: tuple) -> tuple | None:
        """The first position after ``last`` (where a read fails) from which a read works: in the
        same group of the columns before the last first, else in the next group up; None if
        nothing after ``last`` reads."""
        kinds = self.order.kinds
        if not last:
            last = (_BOTTOM[kinds[0]],)
        for level in reversed(range(len(last))):
            prefix = last[:level]
            value = _first_readable(lambda v, p=prefix: self._readable((*p, v)), kinds[level], last[level])
            if value is None:
                continue
            position = (*prefix, value)
            for deeper in range(level + 1, len(kinds)):  # the rows of that group a read would skip
                bottom = (*position, _BOTTOM[kinds[deeper]])
                if self._readable(bottom):
                    return bottom
                value = _first_readable(lambda v, p=position: self._readable((*p, v)), kinds[deeper],
                                        _BOTTOM[kinds[deeper]])
                if value is None:
                    break
                position = (*position, value)
            return position
        return None


def _first_readable(readable: Callable[[Any], bool], kind: str, after: Any) -> Any | None:
    """The first value after ``after`` (from which a read fails) that ``readable`` accepts: steps
    that double find one, the nearest first, then a bisection finds the first.  None if none does.

    Values are numbered in SQLite's order (:class:`_Digits`), so a step is arithmetic.  With two
    damaged stretches close together, the bisection may land past readable pages between them.
    """
    digits = _Digits.around(kind, after)
    start = digits.number(after)
    failing, step = start, 1
    while True:
        probe = min(start + step, digits.top)
        if readable(digits.value(probe)):
            break
        failing = probe
        if probe == digits.top:
            return None
        step *= 2
    while probe - failing > 1:
        middle = (failing + probe) // 2
        if readable(digits.value(middle)):
            probe = middle
        else:
            failing = middle
    return digits.value(probe)


@dataclass(frozen=True)
class _Digits:
    """The values of one kind as whole numbers in SQLite's order: an integer as itself, a text as
    ``width`` code points and a blob as ``width`` bytes (padded with zeros), most significant first.
    The top number is a value after (nearly) every other."""

    kind: str
    width: int

    @staticmethod
    def around(kind: str, value: Any) -> _Digits:
        size = len(value) if isinstance(value, str | bytes) else 0
        return _Digits(kind, max(size + 8, 24))

    @property
    def base(self) -> int:
        return 0x110000 if self.kind == "text" else 256

    @property
    def top(self) -> int:
        return _INT_MAX if self.kind == "int" else self.base ** self.width - 1

    def number(self, value: Any) -> int:
        if self.kind == "int":
            return int(value) if isinstance(value, int | float) else _INT_MIN
        if self.kind == "text":
            codes = [ord(c) for c in value] if isinstance(value, str) else []
        else:
            codes = list(value) if isinstance(value, bytes) else list(str(value).encode())
        codes = (codes + [0] * self.width)[:self.width]
        number = 0
        for code in codes:
            number = number * self.base + code
        return number

    def value(self, number: int) -> Any:
        if self.kind == "int":
            return number
        codes = []
        for _ in range(self.width):
            number, code = divmod(number, self.base)
            codes.append(code)
        codes.reverse()
        if self.kind == "blob":
            return bytes(codes).rstrip(b"\0")
        # UTF-16 surrogates are no characters (SQLite could not be given them): the next one instead
        return "".join(chr(0xE000 if 0xD800 <= c <= 0xDFFF else c) for c in codes).rstrip("\0")
