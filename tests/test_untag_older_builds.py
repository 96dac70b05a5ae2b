"""untag of photos an older build wrote: the person's keywords come back, no field of ours stays.

A library tagged by an older tagwatch (5511b57, the first release: ledger rows, no field records) and
then rewritten by this one (the first start after the upgrade adds parent levels) must untag as a
library this build wrote alone does (report xP #2, #5).  The old build's output is recorded here as
its exact state (the photo's fields as exiftool reads them, its ledger rows, no ``filled`` record),
made with this build's own scan where it writes the same and the records 5511b57 never wrote
deleted; ``test_the_real_old_build`` runs 5511b57 itself where the repository's history has it.

Real parts: the trained shapes model, real JPEGs, real SQLite, the CLI as a user runs it, exiftool.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import synthetic
from conftest import REPO, SHAPES_CHECKPOINT, SHAPES_CONFIG, exiftool_read, tagwatch

OLD = "5511b57"  # the first release (schema 3), the build the upgrade report started from
FIELDS = ("IPTC:Keywords", "XMP-dc:Subject", "XMP-lr:HierarchicalSubject", "XMP-digiKam:TagsList")
RICH = """[[tag]]
keyword = "colour"
[[tag]]
keyword = "green"
parent = "colour"
[[tag]]
keyword = "shape"
[[tag]]
keyword = "circle"
parent = "shape"
"""


def fields(photo: Path) -> dict[str, list[str]]:
    """The photo's keyword fields as exiftool reads them (absent fields left out)."""
    out = exiftool_read("-j", "-G1", "-charset", "iptc=UTF8", *(f"-{f}" for f in FIELDS), str(photo))
    record = json.loads(out)[0]
    return {name: [str(v) for v in (value if isinstance(value, list) else [value])]
            for name, value in record.items() if name != "SourceFile"}


def library(root: Path, colour: str, shape: str, seed: int, tags: tuple[str, str], *,
            prefix: str = "", person: tuple[str, ...] = ("Anna",)) -> tuple[Path, Path]:
    """One photo of a ``colour`` ``shape`` the person tagged ``person`` (IPTC and dc:subject, as the
    report's), a tag list (file name, text) and an overwrite-mode config; (config, photo)."""
    (root / "lib").mkdir(parents=True)
    photo = root / "lib" / f"{colour}-{shape}.jpg"
    synthetic.make_photo(colour, shape, seed).save(photo, quality=90)
    subprocess.run(["exiftool", "-q", "-overwrite_original", *(f"-{f}+={k}" for k in person
                                                              for f in ("Keywords", "Subject")), str(photo)],
                   check=True)
    (root / tags[0]).write_text(tags[1], encoding="utf-8")
    config = root / "config.toml"
    config.write_text("\n".join([
        f"watch = [{json.dumps(str(root / 'lib'))}]", f"tags = {json.dumps(tags[0])}",
        f"database = {json.dumps(str(root / 'data' / 'tagwatch.db'))}",
        "[model]", f"name = {json.dumps(str(SHAPES_CONFIG))}",
        f"pretrained = {json.dumps(str(SHAPES_CHECKPOINT))}",
        "[tagging]", "threshold = 0.36", 'mode = "overwrite"',
        *(["[write]", f"hierarchy_prefix = {json.dumps(prefix)}"] if prefix else []), ""]), encoding="utf-8")
    return config, photo


def run(config: Path, *args: str) -> str:
    result = tagwatch(*args, "--config", str(config))
    assert result.returncode == 0, result.stderr
    return result.stderr


def as_old_build_wrote(config: Path, photo: Path) -> None:
    """What 5511b57's ``scan`` leaves: this build's scan with ``expand = "none"`` writes the same
    keywords and ledger rows (checked against the real old build by the tests below), and the field
    records it keeps, which 5511b57 never wrote, are deleted."""
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace("[tagging]\n", '[tagging]\nexpand = "none"\n'), encoding="utf-8")
    run(config, "scan", str(photo.parent))
    config.write_text(text, encoding="utf-8")  # the upgrade: same config, this build's defaults
    with sqlite3.connect(config.parent / "data" / "tagwatch.db") as db:
        db.execute("DELETE FROM filled")
    db.close()


def ledger(config: Path) -> list[tuple[str, str, str | None]]:
    """The ledger's rows (keyword, action, paths), as the old build's were read back by this one."""
    with sqlite3.connect(config.parent / "data" / "tagwatch.db") as db:
        rows = db.execute("SELECT keyword, action, paths FROM ledger ORDER BY keyword").fetchall()
    db.close()
    return rows


# What 5511b57 left, read back with exiftool and SQL (its database migrated by this build)
OLD_RICH = {"IPTC:Keywords": ["green", "circle"], "XMP-dc:Subject": ["green", "circle"],
            "XMP-lr:HierarchicalSubject": ["colour|green", "shape|circle"]}
OLD_RICH_LEDGER = [("Anna", "removed", None), ("circle", "added", "shape|circle"),
                   ("green", "added", "colour|green")]
OLD_PREFIXED = {"IPTC:Keywords": ["red", "star"], "XMP-dc:Subject": ["red", "star"],
                "XMP-lr:HierarchicalSubject": ["auto|red", "auto|star"]}
OLD_PREFIXED_LEDGER = [("Anna", "removed", None), ("red", "added", None), ("star", "added", None)]
ANNA = {"IPTC:Keywords": ["Anna"], "XMP-dc:Subject": ["Anna"]}


def upgrade_and_untag(config: Path, photo: Path) -> str:
    """The first start after the upgrade rewrites the photo (parent levels), then ``untag``."""
    assert "tagged" in run(config, "scan", str(photo.parent))
    assert fields(photo)["IPTC:Keywords"] == ["green", "circle", "colour", "shape"]
    return run(config, "untag", str(photo))


def test_untag_after_the_upgrade_rewrote_an_old_overwrite_gives_the_persons_keyword_back(
        tmp_path: Path) -> None:
    """Report xP #2: the new build's first write recorded the fields the old overwrite had emptied of
    Anna as created by tagwatch, and untag deleted them, Anna with them, logging 'restored Anna'."""
    config, photo = library(tmp_path, "green", "circle", 9950, ("tags.toml", RICH))
    as_old_build_wrote(config, photo)
    assert fields(photo) == OLD_RICH and ledger(config) == OLD_RICH_LEDGER
    assert "tagged" in run(config, "scan", str(photo.parent))  # the upgrade's first write
    # the flat fields overwrite took Anna out of were hers: recorded so, not as created by tagwatch
    held = '{"values": ["Anna"], "taken": ["Anna"]}'
    with sqlite3.connect(config.parent / "data" / "tagwatch.db") as db:
        assert db.execute("SELECT field, previous FROM filled ORDER BY field").fetchall() == [
            ("IPTC:Keywords", held), ("XMP-dc:Subject", held), ("XMP-lr:HierarchicalSubject", None)]
    db.close()
    log = run(config, "untag", str(photo))
    assert "restored Anna" in log
    assert fields(photo) == ANNA  # and no hierarchical field: the old build created it
    assert ledger(config) == []


def test_untag_gives_the_keyword_back_where_the_unfixed_build_recorded_the_field_as_created(
        tmp_path: Path) -> None:
    """A library already upgraded before this fix: the first write recorded IPTC Keywords and
    dc:subject as created (previous NULL, as in the report's r1 database); untag still puts Anna back
    into both, as the ledger's removed row says overwrite took her out of the photo."""
    config, photo = library(tmp_path, "green", "circle", 9950, ("tags.toml", RICH))
    as_old_build_wrote(config, photo)
    assert "tagged" in run(config, "scan", str(photo.parent))
    with sqlite3.connect(config.parent / "data" / "tagwatch.db") as db:
        db.execute("UPDATE filled SET previous = NULL")
        assert db.execute("SELECT field, ours, previous FROM filled ORDER BY field").fetchall() == [
            ("IPTC:Keywords", "[]", None), ("XMP-dc:Subject", "[]", None),
            ("XMP-lr:HierarchicalSubject", "[]", None)]
    db.close()
    assert "restored Anna" in run(config, "untag", str(photo))
    assert fields(photo) == ANNA


def test_untag_of_an_old_overwrite_leaves_no_persons_keyword_under_our_prefix(tmp_path: Path) -> None:
    """Report xP #5: the old build created lr:hierarchicalSubject (auto|red, auto|star) in a photo
    that had none; untag put Anna back there as auto|Anna, under tagwatch's tree."""
    config, photo = library(tmp_path, "red", "star", 9951, ("tags.txt", "red\nstar\n"), prefix="auto")
    as_old_build_wrote(config, photo)
    assert fields(photo) == OLD_PREFIXED and ledger(config) == OLD_PREFIXED_LEDGER
    assert "restored Anna" in run(config, "untag", str(photo))
    assert fields(photo) == ANNA


def test_untag_of_an_old_overwrite_files_the_keyword_flat_beside_the_persons_tree(tmp_path: Path) -> None:
    """Where the hierarchical field keeps a value of the person's (their people|Bob, written after the
    old build's overwrite), Anna joins it flat, as Lightroom files a flat keyword, not as auto|Anna."""
    config, photo = library(tmp_path, "red", "star", 9951, ("tags.txt", "red\nstar\n"), prefix="auto")
    as_old_build_wrote(config, photo)
    subprocess.run(["exiftool", "-q", "-overwrite_original", "-XMP-lr:HierarchicalSubject+=people|Bob",
                    str(photo)], check=True)
    run(config, "untag", str(photo))
    assert fields(photo) == {**ANNA, "XMP-lr:HierarchicalSubject": ["people|Bob", "Anna"]}


def old_build(folder: Path) -> Path:
    """5511b57's daemon package, from the repository's history; skips where it is not there (a
    shallow clone, an archive)."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", OLD, "daemon"], capture_output=True)
    if archive.returncode != 0:
        pytest.skip(f"the old build {OLD} is not in this repository's history")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(folder, filter="data")
    return folder / "daemon"


def old_scan(code: Path, config: Path, photo: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(code)}
    result = subprocess.run([sys.executable, "-m", "tagwatch", "--config", str(config), "scan",
                             str(photo.parent)], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr


def test_the_real_old_build(tmp_path: Path) -> None:
    """The report's two reproductions with 5511b57 itself: its state is the one recorded above, and
    this build's untag gives back exactly the person's keywords."""
    code = old_build(tmp_path / "old")
    config, photo = library(tmp_path / "rich", "green", "circle", 9950, ("tags.toml", RICH))
    old_scan(code, config, photo)
    assert fields(photo) == OLD_RICH and ledger(config) == OLD_RICH_LEDGER
    assert "restored Anna" in upgrade_and_untag(config, photo)
    assert fields(photo) == ANNA

    config, photo = library(tmp_path / "prefixed", "red", "star", 9951, ("tags.txt", "red\nstar\n"),
                            prefix="auto")
    old_scan(code, config, photo)
    assert fields(photo) == OLD_PREFIXED and ledger(config) == OLD_PREFIXED_LEDGER
    assert "restored Anna" in run(config, "untag", str(photo))
    assert fields(photo) == ANNA
