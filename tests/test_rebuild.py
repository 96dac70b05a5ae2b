"""`tagwatch db rebuild` on really damaged files: pages of a real database overwritten with noise, as a
bad sector leaves them.  What SQLite itself can still read, row by row, is the measure: the rebuild
must keep every such row (the ledger above all: it alone says which keywords are tagwatch's) and say
per table what was lost."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sqlite3
from pathlib import Path

import numpy as np

from conftest import exif_keywords, noise_jpeg, tagwatch, write_config
from tagwatch.rebuild import rebuild
from tagwatch.store import DONE, Store

FILES = 400
KEYWORDS = ("beach", "sea", "sky")
MODEL = "test-model"


def library(database: Path) -> None:
    """A database as a tagged library leaves it, written through the store: a file row, three ledger
    rows and a vector (1 KiB: it spills onto an overflow page) for each of ``FILES`` photos."""
    store = Store(database)
    rng = np.random.default_rng(7)
    try:
        for i in range(FILES):
            path = f"/home/me/Pictures/{2000 + i % 20}/{i % 12 + 1:02}/IMG_{i:05}.jpg"
            key = hashlib.sha256(path.encode()).digest()[:16]
            file_id = store.record_file(path, key=key, size=1000 + i, mtime_ns=i, state=DONE)
            store.add_ledger(file_id, list(KEYWORDS))
            store.record_tagged(file_id, list(KEYWORDS), "fingerprint", 1000 + i, i)
            store.put_image_vectors({key: rng.standard_normal(512)}, MODEL)
    finally:
        store.close()
    with sqlite3.connect(database) as db:  # everything in the file itself, as after a clean stop
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def pages(database: Path, name: str, kind: str) -> list[int]:
    """The pages of b-tree ``name`` of one kind (leaf, overflow), in key order."""
    with sqlite3.connect(database) as db:
        return [r[0] for r in db.execute("SELECT pageno FROM dbstat WHERE name = ? AND pagetype = ? "
                                         "ORDER BY path", (name, kind))]


def damage(database: Path, *numbers: int) -> None:
    """Noise over whole pages (numbered from 1, as SQLite does): a bad sector."""
    with sqlite3.connect(database) as db:
        size = db.execute("PRAGMA page_size").fetchone()[0]
    with database.open("r+b") as handle:
        for number in numbers:
            handle.seek((number - 1) * size)
            handle.write(os.urandom(size))


def readable(database: Path, sql: str, keys: list[tuple]) -> set[tuple]:
    """The keys whose row SQLite can still read, each looked up alone."""
    found = set()
    db = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        for key in keys:
            try:
                if db.execute(sql, key).fetchone() is not None:
                    found.add(key)
            except sqlite3.DatabaseError:
                continue
    finally:
        db.close()
    return found


def test_rebuild_keeps_every_row_sqlite_can_still_read_round_damaged_pages(tmp_path: Path) -> None:
    """A page in the middle of the file table, of the ledger and of the vectors, and one vector's
    overflow page: a plain read of each table stops at its bad page (the rebuild kept 0 of 403 file
    rows and so none of the ledger).  Now each table is walked round its damage; a file row on a
    bad page is rebuilt from the table's indexes, so its ledger rows stay tagwatch's."""
    database = tmp_path / "state" / "tagwatch.db"
    library(database)
    pristine = tmp_path / "pristine.db"
    shutil.copy(database, pristine)
    with sqlite3.connect(pristine) as db:
        files = {r[0]: r[1:] for r in db.execute("SELECT id, path, key, state FROM files")}
        ledger = db.execute("SELECT file_id, keyword FROM ledger").fetchall()
        vectors = db.execute("SELECT key, model FROM image_vectors").fetchall()
    leaves = {name: pages(pristine, name, "leaf") for name in ("files", "ledger", "image_vectors")}
    overflow = pages(pristine, "image_vectors", "overflow")
    assert min(len(found) for found in leaves.values()) >= 3 and overflow
    bad_vector_leaf = leaves["image_vectors"][len(leaves["image_vectors"]) // 2]
    damage(database, leaves["files"][len(leaves["files"]) // 2], leaves["ledger"][len(leaves["ledger"]) // 2],
           bad_vector_leaf, overflow[len(overflow) // 4])

    files_ok = readable(database, "SELECT id FROM files WHERE id = ? LIMIT 1", [(i,) for i in files])
    ledger_ok = readable(database, "SELECT 1 FROM ledger WHERE file_id = ? AND keyword = ? LIMIT 1", ledger)
    vectors_ok = readable(database, "SELECT vector FROM image_vectors WHERE key = ? AND model = ? LIMIT 1",
                          vectors)
    assert len(files_ok) < FILES and len(ledger_ok) < len(ledger) and len(vectors_ok) < len(vectors) - 1

    aside, counts, problems = rebuild(database)
    assert aside.exists()
    assert counts["files"] == FILES and counts["ledger"] == len(ledger_ok)
    assert counts["image_vectors"] == len(vectors_ok)
    with sqlite3.connect(database) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert set(db.execute("SELECT file_id, keyword FROM ledger").fetchall()) == ledger_ok
        assert set(db.execute("SELECT key, model FROM image_vectors").fetchall()) == vectors_ok
        rows = {r[0]: r[1:] for r in db.execute("SELECT id, path, key, state, size FROM files")}
    rebuilt = set(files) - {i for (i,) in files_ok}
    assert {i: rows[i][:3] for i in rebuilt} == {i: files[i] for i in rebuilt}  # path, picture, state
    assert all(rows[i][3] is None for i in rebuilt)  # no size: the next scan reads them again
    assert all(rows[i][3] is not None for (i,) in files_ok)  # read whole

    assert problems[0] == (
        f"files: {len(rebuilt)} of {FILES} rows unreadable (1 damaged page); {len(rebuilt)} of them rebuilt "
        "from the table's indexes (path, picture and state: read again at the next scan, tagwatch's "
        "keywords in them still known)")
    # No index counts the ledger's rows or the vectors' while their table is damaged: estimated from
    # the rows on their readable pages
    ledger_line = re.fullmatch(r"ledger: about (\d+) rows unreadable \(1 damaged page\): tagwatch's "
                               r"keywords in those photos now count as a person's: untag leaves them in "
                               r"and sync never takes them out", problems[1])
    assert ledger_line, problems[1]
    assert abs(int(ledger_line[1]) - (len(ledger) - len(ledger_ok))) < len(ledger) / len(leaves["ledger"]) / 4
    assert re.fullmatch(r"image_vectors: about \d+ rows unreadable \(1 damaged page\): those photos are "
                        r"encoded again", problems[2]), problems[2]
    assert len(problems) == 3


def test_db_rebuild_keeps_the_ledger_of_photos_on_a_damaged_page_so_untag_still_works(
        tmp_path: Path, tiny_checkpoint: Path) -> None:
    """The reported case end to end: the first page of the file table damaged.  The rebuild carried
    over no file row, so no ledger row, and untag then left tagwatch's keywords in every photo
    ("nothing of tagwatch's in it")."""
    photos = tmp_path / "photos"
    for i in range(60):
        noise_jpeg(photos / f"holiday-{i:03}-a-long-name-as-cameras-and-exports-write-them.jpg", seed=700 + i)
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[photos])
    assert tagwatch("scan", str(photos), "--config", str(config)).returncode == 0
    database = tmp_path / "conf" / "state" / "tagwatch.db"
    with sqlite3.connect(database) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        paths = dict(db.execute("SELECT id, path FROM files").fetchall())
    first = pages(database, "files", "leaf")[0]
    damage(database, first)
    unreadable = set(paths) - {i for (i,) in readable(database, "SELECT id FROM files WHERE id = ? LIMIT 1",
                                                      [(i,) for i in paths])}
    assert unreadable
    photo = Path(paths[min(unreadable)])
    assert len(exif_keywords(photo)["iptc"]) == 3

    rebuilt = tagwatch("db", "rebuild", "--config", str(config))
    assert rebuilt.returncode == 0, rebuilt.stderr
    lines = rebuilt.stdout.splitlines()
    assert lines[1].startswith(f"carried over: {len(paths)} files, {3 * len(paths)} ledger, ")
    assert lines[2] == (f"files: {len(unreadable)} of {len(paths)} rows unreadable (1 damaged page); "
                        f"{len(unreadable)} of them rebuilt from the table's indexes (path, picture and "
                        "state: read again at the next scan, tagwatch's keywords in them still known)")

    untagged = tagwatch("untag", str(photo), "--config", str(config))
    assert untagged.returncode == 0, untagged.stderr
    assert exif_keywords(photo) == {"iptc": [], "xmp": []}  # tagwatch's, and known to be
