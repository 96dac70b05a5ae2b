"""Upgrading: a database and library left by an earlier build of main open and carry on here.

The fixtures in tests/data/upgrade/ were made by the real old code (see its README.md): each build's
``scan`` of two synthetic photos with the shapes model, one with a person's keyword (``Anna``) and
one with GPS coordinates.  Builds of main numbered their schema steps differently before the places
and captions branches were merged (store._STEPS), so the schema number alone does not say what a
database holds: 1e9a1f6's schema 5 is captions, where this tagwatch's 5 is a person's removals.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from conftest import REPO, SHAPES_CHECKPOINT, SHAPES_CONFIG, exif_keywords, status, tagwatch
from tagwatch.store import SCHEMA_VERSION

FIXTURES = REPO / "tests" / "data" / "upgrade"
COCA = REPO / "tests" / "data" / "shapes-coca"

# build → (its schema number, what it holds, whether its config had captions on)
BUILDS = {
    "5511b57": (3, "the first release", False),
    "0cd6c3e": (4, "captions numbered 4, no places", True),
    "1e9a1f6": (5, "places 4, captions numbered 5", True),
}


def _rows(db: Path, sql: str) -> set[tuple[object, ...]]:
    with sqlite3.connect(db) as con:
        return set(con.execute(sql).fetchall())


def _library(tmp_path: Path, build: str) -> tuple[Path, Path, Path]:
    """The build's library and database as it left them, moved to ``tmp_path``: the recorded paths
    name the new folder and the photos keep the times the old build recorded (an untouched library)."""
    lib, data = tmp_path / "lib", tmp_path / "data"
    lib.mkdir()
    data.mkdir()
    for name in ("a.jpg", "b.jpg"):
        shutil.copyfile(FIXTURES / build / name, lib / name)
    database = data / "tagwatch.db"
    shutil.copyfile(FIXTURES / build / "tagwatch.db", database)
    with sqlite3.connect(database) as con:  # plain SQL that any of the old schemas takes
        for file_id, path, mtime_ns in con.execute("SELECT id, path, mtime_ns FROM files").fetchall():
            moved = lib / Path(path).name
            con.execute("UPDATE files SET path = ? WHERE id = ?", (str(moved), file_id))
            os.utime(moved, ns=(mtime_ns, mtime_ns))
    con.close()
    config = tmp_path / "config.toml"
    captions = (f'[captions]\nenabled = true\nname = "{COCA}.json"\npretrained = "{COCA}.safetensors"\n'
                f'prefix = "caption"\n') if BUILDS[build][2] else ""
    (tmp_path / "tags.txt").write_text("red\ngreen\ncircle\nsquare\n", encoding="utf-8")
    config.write_text(
        f'watch = ["{lib}"]\ntags = "tags.txt"\ndatabase = "{database}"\n'
        f'[model]\nname = "{SHAPES_CONFIG}"\npretrained = "{SHAPES_CHECKPOINT}"\n'
        f'[tagging]\nthreshold = 0.36\nmode = "sync"\n{captions}', encoding="utf-8")
    return config, lib, database


@pytest.mark.parametrize("build", list(BUILDS))
def test_a_database_from_an_earlier_build_opens_migrates_and_keeps_everything(
        tmp_path: Path, build: str) -> None:
    schema, _what, captioned = BUILDS[build]
    config, lib, database = _library(tmp_path, build)
    assert _rows(database, "PRAGMA user_version") == {(schema,)}
    ledger = _rows(database, "SELECT file_id, keyword, action, paths FROM ledger")
    files = _rows(database, "SELECT id, path, key, tags FROM files")
    vectors = _rows(database, "SELECT key, model, vector FROM image_vectors")
    captions = _rows(database, "SELECT key, captioner, caption FROM captions") if captioned else set()
    filled = _rows(database, "SELECT * FROM filled") if build == "1e9a1f6" else set()

    first = tagwatch("status", "--config", str(config))
    assert first.returncode == 0, first.stderr
    assert f"database schema {schema} migrated to {SCHEMA_VERSION}" in first.stderr
    assert _rows(database, "PRAGMA user_version") == {(SCHEMA_VERSION,)}
    checked = tagwatch("db", "check", "--config", str(config))
    assert checked.returncode == 0, checked.stderr + checked.stdout

    scan = tagwatch("scan", "--config", str(config), str(lib), timeout=300)
    assert scan.returncode == 0, scan.stderr
    after = status(config)
    assert after["files"] == 2 and after["failed"] == 0
    assert after["encoded"] == 2  # the cached vectors were used: no photo encoded again
    assert after["captioned"] == (2 if captioned else 0)  # nor captioned again
    assert ledger <= _rows(database, "SELECT file_id, keyword, action, paths FROM ledger")
    assert files == _rows(database, "SELECT id, path, key, tags FROM files")
    assert vectors == _rows(database, "SELECT key, model, vector FROM image_vectors")
    assert captions <= _rows(database, "SELECT key, captioner, caption FROM captions")
    assert filled <= _rows(database, "SELECT * FROM filled")
    found = exif_keywords(lib / "a.jpg")
    assert {"Anna", "red", "circle"} <= set(found["iptc"]) and {"Anna", "red", "circle"} <= set(found["xmp"])

    untag = tagwatch("untag", "--config", str(config), str(lib / "a.jpg"))
    assert untag.returncode == 0, untag.stderr
    assert exif_keywords(lib / "a.jpg")["iptc"] == ["Anna"]  # the old build's keywords are still ours


def test_a_reopened_database_migrates_nothing_more(tmp_path: Path) -> None:
    config, _lib, database = _library(tmp_path, "1e9a1f6")
    assert tagwatch("status", "--config", str(config)).returncode == 0
    again = tagwatch("status", "--config", str(config))
    assert again.returncode == 0 and "migrated" not in again.stderr
    with sqlite3.connect(database) as con:
        columns = [r[1] for r in con.execute("PRAGMA table_info(files)")]
    con.close()
    assert columns.count("written_ns") == 1 and columns.count("found") == 1
