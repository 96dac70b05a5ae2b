"""Content keys (metadata-blind, pixel-sensitive) and decoding that matches open_clip exactly."""

from __future__ import annotations

import shutil
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import corpus_files, noise_jpeg
from tagwatch.imaging import ImageError, Preprocess, content_key, jpeg_key, load_rgb, prepare, to_array
from tagwatch.metadata import ExifTool

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@pytest.fixture(scope="module")
def exiftool() -> ExifTool:
    tool = ExifTool()
    yield tool
    tool.close()


def test_metadata_edits_rename_and_copy_keep_the_key(tmp_path: Path, exiftool: ExifTool) -> None:
    photo = noise_jpeg(tmp_path / "a.jpg", seed=1)
    key = content_key(photo.read_bytes())
    exiftool.execute("-overwrite_original", "-IPTC:Keywords+=beach", "-XMP-dc:Subject+=日本語",
                     "-EXIF:Artist=Someone", "-Comment=a comment", str(photo))
    edited = photo.read_bytes()
    assert b"beach" in edited and content_key(edited) == key
    moved = tmp_path / "sub" / "renamed.JPG"
    moved.parent.mkdir()
    shutil.move(photo, moved)
    assert content_key(moved.read_bytes()) == key


def test_pixel_changes_change_the_key(tmp_path: Path) -> None:
    photo = noise_jpeg(tmp_path / "a.jpg", seed=1)
    key = content_key(photo.read_bytes())
    image = Image.open(photo)
    image.load()
    image.putpixel((10, 10), (255, 0, 0))
    image.save(tmp_path / "b.jpg", quality=90)
    assert content_key((tmp_path / "b.jpg").read_bytes()) != key
    assert content_key(noise_jpeg(tmp_path / "c.jpg", seed=2).read_bytes()) != key


def test_trailer_after_eoi_is_not_part_of_the_key(tmp_path: Path) -> None:
    data = noise_jpeg(tmp_path / "a.jpg", seed=3).read_bytes()
    assert jpeg_key(data + b"\xff\xd8 a second picture of an MPO") == jpeg_key(data)


def test_bad_files_raise_a_reason() -> None:
    good = noise_jpeg(Path("/tmp") / "tagwatch-test-good.jpg", seed=4).read_bytes()
    with pytest.raises(ImageError, match="truncated JPEG"):
        content_key(good[: len(good) // 2])
    with pytest.raises(ImageError, match="not a JPEG"):
        jpeg_key(b"hello, I am text\n")
    with pytest.raises(ImageError, match="not a JPEG"):
        content_key(b"\x89PNG\r\n\x1a\n a PNG is not tagged yet")
    with pytest.raises(ImageError, match="not a JPEG"):
        jpeg_key(b"")


def test_every_corpus_file_keeps_its_key_through_a_metadata_edit(tmp_path: Path, exiftool: ExifTool) -> None:
    keyed = 0
    for source in corpus_files():
        data = source.read_bytes()
        try:
            key = content_key(data)
        except ImageError as exc:
            assert "truncated" in str(exc), source  # the corpus's one broken file
            continue
        copy = tmp_path / source.name
        copy.write_bytes(data)
        exiftool.execute("-overwrite_original", "-m", "-XMP-dc:Subject+=tagwatch test",
                         "-IPTC:Keywords+=tagwatch test", str(copy))
        assert copy.read_bytes() != data, source
        assert content_key(copy.read_bytes()) == key, source
        keyed += 1
    assert keyed >= 60


def test_preprocessing_matches_open_clip(tmp_path: Path) -> None:
    from open_clip.transform import image_transform

    image = Image.open(noise_jpeg(tmp_path / "a.jpg", seed=5, size=(333, 250))).convert("RGB")
    reference = image_transform(64, is_train=False, mean=CLIP_MEAN, std=CLIP_STD)(image).numpy()
    ours = to_array(image, Preprocess(64, CLIP_MEAN, CLIP_STD))
    assert ours.shape == reference.shape == (3, 64, 64)
    assert np.abs(ours - reference).max() < 1e-5
    tall = image.transpose(Image.Transpose.ROTATE_90)
    reference = image_transform(64, is_train=False, mean=CLIP_MEAN, std=CLIP_STD)(tall).numpy()
    assert np.abs(to_array(tall, Preprocess(64, CLIP_MEAN, CLIP_STD)) - reference).max() < 1e-5


def test_large_jpeg_decodes_at_reduced_scale(tmp_path: Path) -> None:
    data = noise_jpeg(tmp_path / "big.jpg", seed=6, size=(2400, 1600)).read_bytes()
    image = load_rgb(data, 224)
    assert min(image.size) >= 224 and image.size[0] < 2400  # DCT scaling, not a full decode
    full = Image.open(BytesIO(data)).convert("RGB")
    spec = Preprocess(224, CLIP_MEAN, CLIP_STD)
    # draft decoding changes the input by far less than one grey level on average
    assert np.abs(prepare(data, spec) - to_array(full, spec)).mean() < 0.02


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    upright = Image.open(noise_jpeg(tmp_path / "upright.jpg", seed=7, size=(320, 200))).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what a camera held sideways records
    stored.save(tmp_path / "rotated.jpg", quality=95, exif=exif)
    decoded = load_rgb((tmp_path / "rotated.jpg").read_bytes(), 64)  # draft-decoded at 1/2 scale
    assert decoded.size == (160, 100)  # landscape again, as the photo is seen
    expected = upright.resize(decoded.size, Image.Resampling.BICUBIC)
    difference = np.abs(np.asarray(decoded, np.float32) - np.asarray(expected, np.float32)).mean()
    assert difference < 4.0
