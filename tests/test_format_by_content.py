"""A picture whose name says another format (a screenshot saved as PNG under ``shot.jpg``, a JPEG
named ``.png``) is tagged the way its bytes call for, as a user runs ``scan`` (report xK defect 3).

Before, the name chose the write: the PNG named .jpg went to exiftool as a JPEG, which refused it
("Not a valid JPG (looks more like a PNG)"), so the photo got no keywords while ``--dry-run`` had
counted it tagged.  Read back with a separate exiftool.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from PIL import Image

from conftest import exif_keywords, tagwatch
from shapes_lab import Lab
from tagwatch.formats import announced_format, embeddable, image_format
from test_imaging import encode, red_picture


def test_a_png_named_jpg_and_a_jpeg_named_png_get_sidecars_as_the_dry_run_said(
        shapes_lab: Lab, tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    screenshot = drop / "screenshot.jpg"
    Image.open(shapes_lab.library / "red-circle.jpg").save(screenshot, "PNG")
    graphic = Path(shutil.copy(shapes_lab.library / "blue-square.jpg", drop / "graphic.png"))
    truth = {screenshot: {"red", "circle"}, graphic: {"blue", "square"}}
    before = {photo: photo.read_bytes() for photo in truth}

    dry = shapes_lab.run("scan", "--dry-run", str(drop))
    assert "scan: 2 photos: 2 tagged (dry run: no file written)" in dry.stderr, dry.stderr

    result = tagwatch("scan", str(drop), "--config", str(shapes_lab.config))
    assert result.returncode == 0, result.stderr
    assert "scan: 2 photos: 2 tagged" in result.stderr, result.stderr
    assert "Not a valid" not in result.stderr
    for photo, words in truth.items():
        assert photo.read_bytes() == before[photo]  # never rewritten under a name exiftool refuses
        assert set(exif_keywords(photo.with_name(photo.name + ".xmp"))["xmp"]) == words
        assert f"tagged {photo}: " in result.stderr
    failed = tagwatch("status", "--failed", "--config", str(shapes_lab.config))
    assert str(screenshot) not in failed.stdout and str(graphic) not in failed.stdout


def test_where_keywords_go_is_told_by_the_same_magic_numbers_that_decode_the_picture(tmp_path: Path) -> None:
    """``embeddable`` reads only a file's first bytes; they must name the format :func:`image_format`
    decodes (a DNG is a TIFF to the first bytes), or a PNG named .jpg would be written as a JPEG again."""
    jpeg = tmp_path / "photo.jpg"
    Image.new("RGB", (16, 12), (200, 30, 30)).save(jpeg, "JPEG")
    files = {"jpeg": jpeg.read_bytes(), **{fmt: encode(red_picture(7), fmt)
                                           for fmt in ("png", "webp", "tiff", "heic", "dng")}}
    for fmt, data in files.items():
        decoded = image_format(data)
        assert announced_format(data[:512]) == {"dng": "tiff"}.get(decoded, decoded), fmt
        named = tmp_path / f"{fmt}.jpg"
        named.write_bytes(data)
        assert embeddable(named) == (fmt == "jpeg"), fmt
        assert not embeddable(named.rename(tmp_path / f"{fmt}.png")), fmt
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo\n")
    assert embeddable(text)  # no image at all: the name decides, and the decoder refuses it first
