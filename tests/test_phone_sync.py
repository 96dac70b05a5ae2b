"""A family's phone photos synced to a server (Syncthing, Nextcloud): HEIC, PNG and WebP carry their
keywords in a sidecar tagwatch makes (``IMG_1003.HEIC.xmp``), phones reuse names (``IMG_1003.HEIC``
deleted, a new picture later under that name), and every stray ``.xmp`` is copied to every phone.

Real files (HEIC through pillow-heif, PNG), the shapes model, real SQLite and exiftool reading back.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pillow_heif
import pytest

import synthetic
from conftest import SHAPES_CHECKPOINT, SHAPES_CONFIG, Env
from tagwatch.config import TaggingConfig, WriteConfig
from tagwatch.outcomes import Status
from tagwatch.writeback import tagged_line

pillow_heif.register_heif_opener()
SHAPES = ["red", "green", "blue", "yellow", "purple", "orange", "circle", "square", "triangle", "star"]


def shapes_env(tmp_path: Path, write: WriteConfig | None = None) -> Env:
    """The daemon's pipeline in-process with the shapes model at its trained threshold."""
    env = Env(tmp_path, SHAPES_CHECKPOINT, TaggingConfig(threshold=0.36, top_k=5), write, model=SHAPES_CONFIG)
    env.use(SHAPES)
    return env


def photo(path: Path, colour: str, shape: str, seed: int) -> Path:
    """A phone picture of a ``colour`` ``shape`` (HEIC, PNG or JPEG by the name)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".heic": "HEIF", ".png": "PNG"}.get(path.suffix.lower(), "JPEG")
    synthetic.make_photo(colour, shape, seed).save(path, fmt)
    return path


def subject(side: Path) -> set[str]:
    """The sidecar's dc:subject as exiftool reads it (empty where there is no sidecar)."""
    if not side.exists():
        return set()
    out = subprocess.run(["exiftool", "-j", "-XMP-dc:Subject", str(side)], check=True, capture_output=True,
                         text=True).stdout
    value = json.loads(out)[0].get("Subject", [])
    return {str(v) for v in (value if isinstance(value, list) else [value])}


def test_untag_removes_the_sidecar_tagwatch_made_and_keeps_one_a_person_added_to(tmp_path: Path) -> None:
    """`untag` left an empty XMP packet beside every HEIC, PNG and WebP tagwatch had tagged."""
    env = shapes_env(tmp_path)
    try:
        plain = photo(tmp_path / "phone" / "IMG_1007.HEIC", "purple", "square", 9007)
        added = photo(tmp_path / "phone" / "Screenshot_1.png", "yellow", "circle", 9008)
        before = sorted(p.name for p in plain.parent.iterdir())
        assert env.run(plain, added) == {"IMG_1007.HEIC": Status.TAGGED, "Screenshot_1.png": Status.TAGGED}
        subprocess.run(["exiftool", "-q", "-overwrite_original", "-XMP-dc:Subject+=Urlaub", f"{added}.xmp"],
                       check=True)
        assert env.pipeline.untag(str(plain)).status == Status.UNTAGGED
        assert env.pipeline.untag(str(added)).status == Status.UNTAGGED
        assert sorted(p.name for p in plain.parent.iterdir()) == sorted([*before, "Screenshot_1.png.xmp"])
        assert subject(Path(f"{added}.xmp")) == {"Urlaub"}
    finally:
        env.close()


def test_untag_of_a_photo_shared_sidecar_goes_with_the_last_photo(tmp_path: Path) -> None:
    """A HEIC and a JPEG of one stem share IMG_2100.xmp (``sidecar = "photo.xmp"``): the first untag
    leaves the other's keywords in it, the second removes the file tagwatch made."""
    env = shapes_env(tmp_path, WriteConfig(target="sidecar", sidecar="photo.xmp"))
    try:
        heic = photo(tmp_path / "iphone" / "IMG_2100.HEIC", "red", "circle", 2100)
        jpg = photo(tmp_path / "iphone" / "IMG_2100.JPG", "blue", "star", 2101)
        side = tmp_path / "iphone" / "IMG_2100.xmp"
        assert env.run(jpg, heic) == {"IMG_2100.JPG": Status.TAGGED, "IMG_2100.HEIC": Status.TAGGED}
        assert env.pipeline.untag(str(jpg)).status == Status.UNTAGGED
        assert subject(side) == {"red", "circle"}
        assert env.pipeline.untag(str(heic)).status == Status.UNTAGGED
        assert not side.exists()
    finally:
        env.close()


def test_keywords_already_there_are_said_where_they_are_and_the_photo_checked(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """`tagged …/IMG_2100.HEIC: red, circle (already in the file)` for a HEIC whose keywords are only
    in the sidecar it shares with IMG_2100.JPG, and the scan counted it unchanged."""
    env = shapes_env(tmp_path, WriteConfig(target="sidecar", sidecar="photo.xmp"))
    try:
        jpg = photo(tmp_path / "iphone" / "IMG_2100.JPG", "red", "circle", 2100)
        heic = photo(tmp_path / "iphone" / "IMG_2100.HEIC", "red", "circle", 2102)  # the same subject
        with caplog.at_level("INFO", logger="tagwatch"):
            outcomes = {Path(o.path).name: o for o in env.pipeline.process([str(jpg)])}
            outcomes |= {Path(o.path).name: o for o in env.pipeline.process([str(heic)])}
        assert outcomes["IMG_2100.JPG"].wrote and not outcomes["IMG_2100.HEIC"].wrote  # scan: 1 unchanged
        lines = [r.getMessage() for r in caplog.records if str(heic) in r.getMessage()]
        said = f"checked {heic}: red, circle (already in the sidecar it shares with IMG_2100.JPG)"
        assert said in lines, lines
    finally:
        env.close()


def test_the_line_says_where_the_keywords_are() -> None:
    """The words follow the file the keywords are in; the verb follows the scan's count."""
    line = tagged_line("/p/IMG_1.HEIC", ["blue"], [], [], 0.36, wrote=False, where="its sidecar")
    assert line == "checked /p/IMG_1.HEIC: blue (already in its sidecar)"
    line = tagged_line("/p/a.png", ["circle", "red"], [], [], 0.36, wrote=True, theirs=["red"],
                       where="its sidecar")
    assert line == "tagged /p/a.png: circle; already in its sidecar: red"
    line = tagged_line("/p/a.jpg", ["circle"], [], [], 0.36, wrote=False, rewrote=True)
    assert line == "tagged /p/a.jpg: circle (already in the file; fields brought up to date)"
