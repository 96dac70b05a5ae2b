"""Content keys (metadata-blind, pixel-sensitive) and decoding that matches open_clip exactly.

JPEG, PNG, WebP, TIFF, HEIC and DNG files are real ones made here (Pillow, pillow-heif, and a DNG
written by hand that LibRaw reads); metadata edits are exiftool's own.
"""

from __future__ import annotations

import contextlib
import shutil
import struct
import sys
import zlib
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import corpus_files, noise_jpeg
from tagwatch.config import DEFAULT_MAX_MEGAPIXELS
from tagwatch.formats import (
    EMBEDDABLE_SUFFIXES,
    IMAGE_SUFFIXES,
    JPEG_SUFFIXES,
    ImageError,
    IncompleteImage,
    UnsettledRaw,
    content_key,
    image_format,
    jpeg_key,
    png_key,
    raw_key,
)
from tagwatch.imaging import Preprocess, load_rgb, prepare, to_array
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
    with pytest.raises(ImageError, match="not an image format tagwatch reads"):
        content_key(b"hello, I am text\n")
    with pytest.raises(ImageError, match="truncated PNG"):
        content_key(b"\x89PNG\r\n\x1a\n a PNG cut short")
    with pytest.raises(ImageError, match="not a JPEG"):
        jpeg_key(b"")


def test_a_complete_jpeg_with_damaged_picture_data_is_corrupt_not_truncated() -> None:
    """Bytes flipped inside the scan (a failing card) made a marker whose length ran past the end:
    "truncated", which sends a photographer to send the file again, and waits for a copy that is
    over.  A file ending with its end-of-image marker is complete: corrupt, and no wait."""
    good = noise_jpeg(Path("/tmp") / "tagwatch-test-good.jpg", seed=4).read_bytes()
    sos = good.index(b"\xff\xda")
    damaged = bytearray(good)
    damaged[sos + 400:sos + 404] = b"\xff\xc4\xff\xf0"  # a table segment 65,520 bytes long, mid-scan
    corrupt = r"^corrupt JPEG \(segment at byte \d+ runs past the end of the file, though the file ends"
    with pytest.raises(ImageError, match=corrupt) as caught:
        content_key(bytes(damaged))
    assert not isinstance(caught.value, IncompleteImage)
    with pytest.raises(IncompleteImage, match=r"^truncated JPEG"):  # the same cut short: still copying
        content_key(bytes(damaged[:len(damaged) // 2]))


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow on two corpus files (the CLI logs it)
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


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_a_rotation_set_in_exif_only_is_a_new_key(tmp_path: Path, exiftool: ExifTool, suffix: str) -> None:
    """Viewers rotate by editing the orientation tag alone; CLIP must see the photo as now shown."""
    photo = tmp_path / f"p{suffix}"
    Image.open(noise_jpeg(tmp_path / "src.jpg", seed=9)).save(photo)
    upright = content_key(photo.read_bytes())
    exiftool.execute("-overwrite_original", "-n", "-EXIF:Orientation=6", str(photo))
    turned = content_key(photo.read_bytes())
    assert turned != upright
    exiftool.execute("-overwrite_original", "-EXIF:Artist=Someone", "-XMP-dc:Subject+=x", str(photo))
    assert content_key(photo.read_bytes()) == turned  # other metadata edits still keep it
    exiftool.execute("-overwrite_original", "-n", "-EXIF:Orientation=1", str(photo))
    assert content_key(photo.read_bytes()) == upright


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


# --- Formats tagged through XMP sidecars: PNG, WebP, TIFF, HEIC/HEIF and camera RAW ----------------

SPEC = Preprocess(64, CLIP_MEAN, CLIP_STD)
SIDECAR_FORMATS = ["png", "webp", "tiff", "heic", "dng"]


def red_picture(seed: int, size: tuple[int, int] = (96, 64)) -> Image.Image:
    """Smooth random blobs, strongly red: every seed is a different picture, each one mostly red."""
    small = np.random.default_rng(seed).integers(0, 64, (6, 8, 3), dtype=np.uint8)
    small[..., 0] = 255 - small[..., 0] // 2
    return Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)


def tiff_bytes(ifds: list[tuple[dict[int, tuple[int, object]], bytes]], camera_layout: bool = False) -> bytes:
    """A little-endian TIFF written by hand: IFD0 from ``ifds[0]``, the others as its SubIFDs.

    Each IFD is ``({tag: (type, values)}, image data)``; strip offset and byte count are filled in.
    Types: 1 BYTE (values as bytes), 2 ASCII (a str), 3 SHORT, 4 LONG, 5 RATIONAL, 10 SRATIONAL.
    The image data comes first, unless ``camera_layout``: then the IFDs come first, then the
    SubIFDs' data (the preview), then IFD0's (the sensor data), as cameras write their RAWs.
    """
    formats = {1: "B", 3: "H", 4: "I", 5: "II", 10: "ii"}
    out = bytearray(b"II*\0\0\0\0\0")
    strips = []
    for _, data in ifds:
        strips.append(len(out))
        out += data + b"\0" * (len(data) % 2)

    def directory(entries: dict[int, tuple[int, object]], start: int) -> bytes:
        table, extra = bytearray(struct.pack("<H", len(entries))), bytearray()
        extra_at = start + 2 + 12 * len(entries) + 4
        for tag, (kind, values) in sorted(entries.items()):
            if kind == 2:
                raw = str(values).encode() + b"\0"
            elif kind == 1:
                raw = bytes(values)  # type: ignore[arg-type]
            else:
                raw = struct.pack("<" + formats[kind][0] * len(values), *values)  # type: ignore[arg-type]
            count = len(raw) // {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 10: 8}[kind]
            if len(raw) <= 4:
                table += struct.pack("<HHI", tag, kind, count) + raw.ljust(4, b"\0")
            else:
                table += struct.pack("<HHII", tag, kind, count, extra_at + len(extra))
                extra += raw + b"\0" * (len(raw) % 2)
        return bytes(table + b"\0\0\0\0" + extra)

    def tagged(index: int, strip: int, subs: list[int]) -> dict[int, tuple[int, object]]:
        entries, data = ifds[index]
        return {**entries, 273: (4, [strip]), 279: (4, [len(data)]), **({330: (4, subs)} if subs else {})}

    if camera_layout:  # directories' sizes do not depend on the offsets they hold: place, then fill in
        dummies = [0] * (len(ifds) - 1)
        at = [8]
        for index in range(len(ifds)):
            at.append(at[-1] + len(directory(tagged(index, 0, dummies if index == 0 else []), 0)))
        strips, end = [0] * len(ifds), at[-1]
        for index in [*range(1, len(ifds)), 0]:
            strips[index], end = end, end + len(ifds[index][1]) + len(ifds[index][1]) % 2
        out = bytearray(b"II*\0" + struct.pack("<I", 8))
        for index in range(len(ifds)):
            out += directory(tagged(index, strips[index], at[1:-1] if index == 0 else []), at[index])
        for index in [*range(1, len(ifds)), 0]:
            out += ifds[index][1] + b"\0" * (len(ifds[index][1]) % 2)
        return bytes(out)
    subs = []
    for index, strip in list(enumerate(strips))[1:]:
        subs.append(len(out))
        out += directory(tagged(index, strip, []), len(out))
    out[4:8] = struct.pack("<I", len(out))
    out += directory(tagged(0, strips[0], subs), len(out))
    return bytes(out)


def dng_bytes(picture: Image.Image, preview: Image.Image | None = None, orientation: int = 1,
              bitmap: bool = False, preview_exif: Image.Exif | None = None, camera_layout: bool = False,
              make: str = "Tagwatch") -> bytes:
    """A real DNG that LibRaw reads: 16-bit RGGB sensor data sampled from ``picture``, and optionally
    a preview in a SubIFD, the way cameras and Adobe's converter store one: JPEG (with EXIF of its
    own first if given, as camera previews have it), or 8-bit RGB.  ``camera_layout``: see
    :func:`tiff_bytes`; ``make``: the Make tag."""
    rgb = np.asarray(picture, np.uint16) * 257
    height, width, _ = rgb.shape
    cfa = np.empty((height, width), "<u2")
    cfa[0::2, 0::2], cfa[0::2, 1::2] = rgb[0::2, 0::2, 0], rgb[0::2, 1::2, 1]
    cfa[1::2, 0::2], cfa[1::2, 1::2] = rgb[1::2, 0::2, 1], rgb[1::2, 1::2, 2]
    identity = [1, 1, 0, 1, 0, 1, 0, 1, 1, 1, 0, 1, 0, 1, 0, 1, 1, 1]
    raw_ifd = {254: (4, [0]), 256: (4, [width]), 257: (4, [height]), 258: (3, [16]), 259: (3, [1]),
               262: (3, [32803]), 271: (2, make), 272: (2, "Test"), 274: (3, [orientation]),
               277: (3, [1]), 278: (4, [height]), 284: (3, [1]), 33421: (3, [2, 2]), 33422: (1, b"\0\1\1\2"),
               50706: (1, b"\1\4\0\0"), 50708: (2, "Tagwatch Test"), 50717: (4, [65535]),
               50721: (10, identity), 50728: (5, [1, 1, 1, 1, 1, 1]), 50778: (3, [21])}
    ifds = [(raw_ifd, cfa.tobytes())]
    if preview is not None:
        jpeg = BytesIO()
        preview.save(jpeg, "JPEG", quality=90, exif=preview_exif or Image.Exif())
        if preview_exif is not None:  # drop the JFIF APP0 that Pillow writes before the EXIF APP1
            written = jpeg.getvalue()
            jpeg = BytesIO(written[:2] + written[4 + int.from_bytes(written[4:6], "big"):])
        coding = {259: (3, [1]), 262: (3, [2])} if bitmap else {259: (3, [7]), 262: (3, [6])}
        ifds.append(({254: (4, [1]), 256: (4, [preview.width]), 257: (4, [preview.height]),
                      258: (3, [8, 8, 8]), 277: (3, [3]), 278: (4, [preview.height]), 284: (3, [1]),
                      **coding}, preview.tobytes() if bitmap else jpeg.getvalue()))
    return tiff_bytes(ifds, camera_layout)


def camera_raw_bytes(picture: Image.Image, make: str = "Tagwatch", header: bytes = b"II*\0") -> bytes:
    """A TIFF-based RAW that is not a DNG (as NEF, ARW, PEF and SRW are; ``header`` b"IIU\\0" for a
    Panasonic RW2), laid out as cameras write one: IFDs, then the JPEG preview, then the sensor data
    (LibRaw decodes it)."""
    dng = dng_bytes(picture, picture, camera_layout=True, make=make)
    return header + dng[4:].replace(struct.pack("<HHI", 50706, 1, 4), struct.pack("<HHI", 65000, 1, 4))


def encode(picture: Image.Image, fmt: str, **options: object) -> bytes:
    """``picture`` as a file of format ``fmt``, written by Pillow, pillow-heif or :func:`dng_bytes`."""
    if fmt == "dng":
        return dng_bytes(picture, picture, **options)  # type: ignore[arg-type]
    if fmt == "heic":
        import pillow_heif

        pillow_heif.register_heif_opener()
        options.setdefault("quality", 90)
    if fmt == "webp":
        options.setdefault("quality", 90)
    buffer = BytesIO()
    picture.save(buffer, {"tiff": "TIFF", "png": "PNG", "webp": "WEBP", "heic": "HEIF"}[fmt], **options)
    return buffer.getvalue()


def colour_means(array: np.ndarray) -> np.ndarray:
    """Mean R, G, B in 0-1 of a prepared CHW array, un-normalised."""
    std, mean = (np.asarray(v, np.float32).reshape(3, 1, 1) for v in (CLIP_STD, CLIP_MEAN))
    return (array * std + mean).reshape(3, -1).mean(axis=1)


def test_suffixes_name_every_tagged_format() -> None:
    assert EMBEDDABLE_SUFFIXES == JPEG_SUFFIXES <= IMAGE_SUFFIXES
    assert {".png", ".webp", ".tif", ".tiff", ".heic", ".heif", ".dng", ".cr2", ".cr3", ".nef", ".arw",
            ".orf", ".rw2", ".raf", ".pef", ".srw", ".nrw", ".rwl", ".iiq", ".3fr", ".fff", ".erf",
            } <= IMAGE_SUFFIXES
    assert all(s == s.lower() and s.startswith(".") for s in IMAGE_SUFFIXES)


@pytest.mark.parametrize("fmt", SIDECAR_FORMATS)
def test_key_ignores_a_metadata_edit_and_follows_the_pixels(fmt: str, tmp_path: Path,
                                                             exiftool: ExifTool) -> None:
    photo = tmp_path / f"a.{fmt}"
    photo.write_bytes(encode(red_picture(1), fmt))
    key = content_key(photo.read_bytes())
    exiftool.execute("-overwrite_original", "-XMP-dc:Subject=x", "-EXIF:Artist=Someone", str(photo))
    edited = photo.read_bytes()
    assert b"Someone" in edited and content_key(edited) == key
    changed = red_picture(1)
    changed.paste((0, 255, 0), (40, 24, 56, 40))
    assert content_key(encode(changed, fmt)) != key
    assert content_key(encode(red_picture(2), fmt)) != key


def test_png_key_skips_text_and_profile_chunks_and_is_blind_to_idat_splits(tmp_path: Path) -> None:
    from PIL import PngImagePlugin

    data = encode(red_picture(3), "png")
    text = PngImagePlugin.PngInfo()
    text.add_text("Comment", "tagged elsewhere")
    text.add_itxt("XML:com.adobe.xmp", "<x:xmpmeta/>")
    tagged = encode(red_picture(3), "png", pnginfo=text, icc_profile=b"not really a profile")
    assert tagged != data and png_key(tagged) == png_key(data) == content_key(data)
    # the same compressed stream cut into two IDAT chunks is the same picture
    start = data.index(b"IDAT") - 4
    length = int.from_bytes(data[start:start + 4], "big")
    stream, rest = data[start + 8:start + 8 + length], data[start + 12 + length:]

    split = data[:start] + png_chunk(b"IDAT", stream[:10]) + png_chunk(b"IDAT", stream[10:]) + rest
    assert np.array_equal(np.asarray(Image.open(BytesIO(split))), np.asarray(Image.open(BytesIO(data))))
    assert png_key(split) == png_key(data)


def test_colour_profile_edits_keep_the_key(tmp_path: Path, exiftool: ExifTool) -> None:
    from PIL import ImageCms

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    (tmp_path / "srgb.icc").write_bytes(srgb)
    for fmt in ("png", "webp", "tiff", "dng"):  # prepare() does not colour-manage, so neither does the key
        photo = tmp_path / f"a.{fmt}"
        photo.write_bytes(encode(red_picture(11), fmt))
        original = photo.read_bytes()
        exiftool.execute("-overwrite_original", f"-ICC_Profile<={tmp_path / 'srgb.icc'}", str(photo))
        assert "sRGB built-in" in exiftool.execute("-s3", "-ProfileDescription", str(photo))[0], fmt
        assert content_key(photo.read_bytes()) == content_key(original), fmt
    # exiftool 12 does not write HEIC profiles: edit the one pillow-heif stored (a colr box) in place
    heic = encode(red_picture(11), "heic", icc_profile=srgb)
    at = heic.index(srgb) + 100
    edited = heic[:at] + bytes([heic[at] ^ 0xFF]) + heic[at + 1:]
    assert content_key(edited) == content_key(heic)
    assert np.array_equal(np.asarray(load_rgb(edited, 8)), np.asarray(load_rgb(heic, 8)))


def test_keys_of_different_formats_never_meet() -> None:
    picture = red_picture(4)
    keys = {content_key(encode(picture, fmt, **({"lossless": True} if fmt == "webp" else {})))
            for fmt in SIDECAR_FORMATS}
    assert len(keys) == len(SIDECAR_FORMATS)
    formats = {image_format(encode(picture, fmt)) for fmt in SIDECAR_FORMATS}
    assert formats == {"png", "webp", "tiff", "heif", "dng"}


@pytest.mark.parametrize("fmt", SIDECAR_FORMATS)
def test_prepare_decodes_every_format_like_the_jpeg(fmt: str, tmp_path: Path) -> None:
    jpeg = noise_jpeg(tmp_path / "a.jpg", seed=8, size=(96, 64)).read_bytes()
    ours = prepare(encode(red_picture(5), fmt), SPEC)
    assert ours.shape == prepare(jpeg, SPEC).shape == (3, 64, 64) and ours.dtype == np.float32
    red, green, blue = colour_means(ours)
    assert red > 0.75 and green < 0.3 and blue < 0.3, (red, green, blue)


@pytest.mark.parametrize("fmt", ["png", "webp", "tiff"])
def test_exif_orientation_turns_non_jpeg_formats_upright(fmt: str) -> None:
    upright = Image.new("RGB", (96, 64), (0, 0, 255))
    upright.paste((255, 0, 0), (0, 0, 48, 64))  # red on the left as the photo is seen
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    options = {"lossless": True} if fmt == "webp" else {}
    decoded = np.asarray(load_rgb(encode(stored, fmt, exif=exif, **options), 32))
    assert decoded.shape == (64, 96, 3)
    assert tuple(decoded[32, 10]) == (255, 0, 0) and tuple(decoded[32, 85]) == (0, 0, 255)


@pytest.mark.parametrize(("orientation", "turn"), [(6, Image.Transpose.ROTATE_270),
                                                    (8, Image.Transpose.ROTATE_90),
                                                    (3, Image.Transpose.ROTATE_180)])
def test_raw_is_turned_upright_from_its_preview_and_from_the_sensor(orientation: int,
                                                                    turn: Image.Transpose) -> None:
    stored = Image.new("RGB", (96, 64), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 48, 32))  # red top-left quadrant, as the sensor recorded it
    expected = stored.transpose(turn)  # as the photo is seen
    from_preview = load_rgb(dng_bytes(stored, stored, orientation), 16)  # preview turned by us
    from_sensor = load_rgb(dng_bytes(stored, None, orientation), 16)  # half-size demosaic, LibRaw's turn
    assert from_preview.size == (expected.width // 4, expected.height // 4)  # preview, draft-decoded
    assert from_sensor.size == (expected.width // 2, expected.height // 2)
    from_bitmap = load_rgb(dng_bytes(stored, stored, orientation, bitmap=True), 16)  # turned by the flip
    assert from_bitmap.size == expected.size
    contrary = Image.Exif()
    contrary[0x0112] = 2  # the preview's own EXIF disagrees with the RAW: the RAW's flip wins
    from_own_exif = load_rgb(dng_bytes(stored, stored, orientation, preview_exif=contrary), 16)
    checked = [from_preview, from_sensor, from_bitmap, from_own_exif]
    if orientation != 3:  # a camera that stored its preview upright already: its aspect says so
        checked.append(load_rgb(dng_bytes(stored, expected, orientation), 16))
    for image in checked:
        assert reddest_quadrant(np.asarray(image)) == reddest_quadrant(np.asarray(expected))


def reddest_quadrant(image: np.ndarray) -> int:
    """0-3 for top-left, top-right, bottom-left, bottom-right."""
    h, w, _ = image.shape
    redness = [image[y * h // 2:(y + 1) * h // 2, x * w // 2:(x + 1) * w // 2, 0].mean()
               - image[y * h // 2:(y + 1) * h // 2, x * w // 2:(x + 1) * w // 2, 2].mean()
               for y in (0, 1) for x in (0, 1)]
    return int(np.argmax(redness))


def test_raw_without_a_large_enough_preview_is_demosaiced() -> None:
    picture = red_picture(6, size=(192, 128))
    small = picture.resize((48, 32))
    assert load_rgb(dng_bytes(picture, small), 16).size == (24, 16)  # preview, draft-decoded
    assert load_rgb(dng_bytes(picture, small), 40).size == (96, 64)  # thumbnail too small: half-size raw
    red, green, blue = colour_means(prepare(dng_bytes(picture), SPEC))
    assert red > 0.75 and red > 2 * max(green, blue), (red, green, blue)
    data = dng_bytes(picture, small)
    sof = data.index(b"\xff\xc0")  # the preview's frame header, made to claim 65000 x 65000 pixels
    bomb = data[:sof + 5] + struct.pack(">HH", 65000, 65000) + data[sof + 9:]
    assert load_rgb(bomb, 16).size == (96, 64)  # a preview Pillow refuses: decoded from the sensor data


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_16bit(array: np.ndarray) -> bytes:
    """A 16-bit PNG (grey or RGB) written by hand: Pillow cannot write 16-bit colour."""
    height, width = array.shape[:2]
    header = struct.pack(">IIBBBBB", width, height, 16, 2 if array.ndim == 3 else 0, 0, 0, 0)
    rows = zlib.compress(b"".join(b"\0" + row.astype(">u2").tobytes() for row in array))
    chunks = png_chunk(b"IHDR", header) + png_chunk(b"IDAT", rows) + png_chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def test_deep_cmyk_transparent_and_multi_frame_files_decode_as_seen() -> None:
    def mean(data: bytes) -> tuple[int, ...]:
        return tuple(round(v) for v in np.asarray(load_rgb(data, 8)).reshape(-1, 3).mean(axis=0))

    deep_red = np.zeros((8, 8, 3), np.uint16)
    deep_red[..., 0] = 60000
    grey = np.full((8, 8), 40000, np.uint16)  # 40000 / 257 ≈ 156
    rgb16_tiff = tiff_bytes([({256: (4, [8]), 257: (4, [8]), 258: (3, [16, 16, 16]), 259: (3, [1]),
                               262: (3, [2]), 277: (3, [3]), 278: (4, [8]), 284: (3, [1])},
                              deep_red.astype("<u2").tobytes())])
    assert mean(png_16bit(deep_red)) == mean(rgb16_tiff) == (234, 0, 0)  # Pillow keeps the high byte
    assert mean(png_16bit(grey)) == mean(encode(Image.fromarray(grey), "tiff")) == (156, 156, 156)
    assert mean(encode(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "tiff")) == (255, 0, 0)
    clear = Image.new("RGBA", (8, 8), (0, 0, 0, 0))  # transparent black shows as the white page
    assert mean(encode(clear, "png")) == mean(encode(clear, "webp", lossless=True)) == (255, 255, 255)
    assert mean(encode(clear, "tiff")) == mean(encode(clear, "heic")) == (255, 255, 255)
    palette = Image.new("P", (8, 8), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0])
    assert mean(encode(palette, "png", transparency=0)) == (255, 255, 255)
    frames = [Image.new("RGB", (8, 8), (255, 0, 0)), Image.new("RGB", (8, 8), (0, 0, 255))]
    for fmt in ("png", "webp", "tiff"):
        options = {"lossless": True} if fmt == "webp" else {}
        red, green, blue = mean(encode(frames[0], fmt, save_all=True, append_images=frames[1:], **options))
        assert red > 250 and green < 5 and blue < 5, fmt


@pytest.mark.parametrize("fmt", SIDECAR_FORMATS)
def test_truncated_files_raise_a_reason(fmt: str) -> None:
    data = encode(red_picture(7), fmt)
    for cut in (len(data) // 2, len(data) - 10):
        with pytest.raises(ImageError, match=r"^truncated"):
            content_key(data[:cut])
    with pytest.raises(ImageError):
        prepare(data[: len(data) // 2], SPEC)


def test_files_without_pixels_say_so() -> None:
    png = encode(red_picture(12), "png")
    idat = png.index(b"IDAT") - 4
    no_idat = png[:idat] + png[idat + 12 + int.from_bytes(png[idat:idat + 4], "big"):]
    with pytest.raises(ImageError, match="PNG holds no image data"):
        content_key(no_idat)
    xmp = b"XMP " + struct.pack("<I", 6) + b"<x:x/>"
    with pytest.raises(ImageError, match="WebP holds no image data"):
        content_key(b"RIFF" + struct.pack("<I", 4 + len(xmp)) + b"WEBP" + xmp)


def test_unknown_bytes_and_decompression_bombs_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    for data in (b"hello, I am text\n", b"\0\0\0\x18ftypavif\0\0\0\0avifmif1", b"GIF89a"):
        with pytest.raises(ImageError, match="not an image format tagwatch reads"):
            content_key(data)
        with pytest.raises(ImageError, match="not an image format tagwatch reads"):
            prepare(data, SPEC)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    for data in (encode(red_picture(8), "png"), encode(red_picture(8), "heic"),
                 dng_bytes(red_picture(8), red_picture(8)), dng_bytes(red_picture(8))):
        with pytest.raises(ImageError, match=r"^refused: .*decompression bomb"):
            prepare(data, SPEC)


def test_other_camera_raws_are_keyed_by_the_whole_file_and_checked_for_truncation() -> None:
    # A TIFF-structured RAW that is not a DNG (as NEF, ARW, PEF and SRW are): CFA data, no DNGVersion.
    dng = dng_bytes(red_picture(9))
    nef_like = dng.replace(struct.pack("<HHI", 50706, 1, 4), struct.pack("<HHI", 65000, 1, 4))
    assert image_format(dng) == "dng" and image_format(nef_like) == "raw"
    assert content_key(nef_like) == raw_key(nef_like) != content_key(nef_like + b"\0")
    red, green, blue = colour_means(prepare(nef_like, SPEC))  # LibRaw demosaics it like a DNG
    assert red > 0.75 and red > 2 * max(green, blue), (red, green, blue)
    with pytest.raises(ImageError, match=r"^truncated"):
        content_key(nef_like[:100])
    cr3 = b"\0\0\0\x18ftypcrx \0\0\0\1crx isom" + b"\0\0\0\x10moov\0\0\0\0\0\0\0\0" + b"\0\0\1\0mdat"
    assert image_format(cr3) == "raw"
    with pytest.raises(ImageError, match=r"^truncated RAW \('mdat' box"):
        content_key(cr3)
    complete = cr3[:-8] + b"\0\0\0\x10mdat" + b"\0" * 8
    assert len(content_key(complete)) == 16
    with pytest.raises(ImageError, match=r"^cannot decode RAW: "):
        prepare(complete, SPEC)  # boxes in order, but no picture LibRaw can find
    raf = b"FUJIFILMCCD-RAW 0201FF383501".ljust(84, b"\0") + struct.pack(">6I", 108, 10, 118, 4, 5000, 100)
    with pytest.raises(ImageError, match=r"^truncated RAW"):
        content_key(raf + b"\0" * 200)
    for header in (b"IIRO", b"IIRS", b"MMOR", b"IIU\0"):  # Olympus ORF, Panasonic RW2
        assert image_format(header + b"\0" * 12) == "raw"
    # Phase One IIQ: a TIFF whose IFD holds only an RGB preview, with Phase One's block (its byte
    # order mark, then "Raw" in that order) right after the header, where LibRaw and exiftool look;
    # the same TIFF without it stays a TIFF, and so does one whose pixels merely begin with IIII.
    pixels = np.asarray(red_picture(3).convert("RGB")).tobytes()
    rgb = {256: (4, [96]), 257: (4, [64]), 258: (3, [8, 8, 8]), 259: (3, [1]), 262: (3, [2]),
           277: (3, [3]), 278: (4, [64])}
    assert image_format(tiff_bytes([(rgb, pixels)])) == "tiff"
    assert image_format(tiff_bytes([(rgb, b"IIII\x01\0\0\0" + pixels)])) == "tiff"
    for block in (b"IIII\x01waR", b"MMMMRaw\x01"):
        iiq = tiff_bytes([(rgb, block + b"\0" * 8 + pixels)])
        assert image_format(iiq) == "raw" and content_key(iiq) == raw_key(iiq)


def test_a_camera_raw_whose_sensor_data_does_not_end_inside_the_file_is_cut_short() -> None:
    """Issue: a RAW laid out as cameras write one (IFDs, preview, then the sensor data) passed the
    check while its sensor data only began inside the file, so a RAW tethered in chunks was keyed
    (and tagged from its preview) at every chunk, each one a new key."""
    arw = camera_raw_bytes(red_picture(14, (120, 80)))
    assert image_format(arw) == "raw" and len(raw_key(arw)) == 16
    red, green, blue = colour_means(prepare(arw, SPEC))
    assert red > 0.75 and red > 2 * max(green, blue), (red, green, blue)
    sensor_at = len(arw) - 120 * 80 * 2
    for cut in (sensor_at + 1, (sensor_at + len(arw)) // 2, len(arw) - 1):
        with pytest.raises(IncompleteImage, match=r"^truncated RAW .* runs past the end"):
            content_key(arw[:cut])
        with pytest.raises(IncompleteImage) as caught:  # such a RAW is cut short however long it sat
            content_key(arw[:cut], settled=True)
        assert not isinstance(caught.value, UnsettledRaw)
    # Panasonic's byte counts may be the uncompressed size, and Hasselblad's are as loose: waited
    # for while the file grows, keyed as it is once it has stopped
    for loose in (camera_raw_bytes(red_picture(14, (120, 80)), header=b"IIU\0"),
                  camera_raw_bytes(red_picture(14, (120, 80)), make="Hasselblad")):
        short = loose[:len(loose) - 100]
        with pytest.raises(UnsettledRaw, match=r"^truncated RAW .* keyed once it stops growing"):
            content_key(short)
        assert content_key(short, settled=True) == raw_key(short, settled=True)
        with pytest.raises(IncompleteImage, match=r"is past the end"):  # no sensor data at all
            content_key(loose[:sensor_at], settled=True)


def test_a_missing_decoder_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from tagwatch import imaging

    heic, dng = encode(red_picture(10), "heic"), dng_bytes(red_picture(10))
    for module, function, data, reason in [
        ("rawpy", imaging._rawpy, dng, "camera RAW support needs rawpy"),
        ("pillow_heif", imaging._enable_heif, heic, "HEIC support needs pillow-heif"),
    ]:
        function.cache_clear()
        with monkeypatch.context() as patch:
            patch.setitem(sys.modules, module, None)
            with pytest.raises(ImageError, match=f"^{reason}"):
                prepare(data, SPEC)
            content_key(data)  # keying needs no decoder
        function.cache_clear()


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's TIFF reader warns about the damage too
def test_damaged_files_raise_only_image_errors() -> None:
    """The pipeline keys files catching ImageError alone: no parser may raise anything else."""
    rng = np.random.default_rng(13)
    dng = dng_bytes(red_picture(13))
    nef_like = dng.replace(struct.pack("<HHI", 50706, 1, 4), struct.pack("<HHI", 1, 1, 4))
    samples = [encode(red_picture(13), fmt) for fmt in SIDECAR_FORMATS] + [nef_like]
    for data in samples:
        for _ in range(40):
            damaged = bytearray(data[: int(rng.integers(len(data) // 2, len(data) + 1))])
            for at in rng.integers(0, min(len(damaged), 512), int(rng.integers(1, 6))):
                damaged[at] = int(rng.integers(0, 256))
            for step in (content_key, lambda d: prepare(d, SPEC)):
                with contextlib.suppress(ImageError):
                    step(bytes(damaged))


def test_extreme_aspect_ratios_are_refused_not_blown_up(monkeypatch: pytest.MonkeyPatch) -> None:
    # The daemon's default pixel limit (180 MP), as every command sets it: the strip would grow to
    # 64 x 1.92 million pixels (123 MP, under that limit) after resizing its short side.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", int(DEFAULT_MAX_MEGAPIXELS * 1_000_000))
    strip = encode(Image.new("RGB", (1, 30000), (255, 0, 0)), "png")
    with pytest.raises(ImageError, match=r"^refused: a 1 x 30000 picture would grow"):
        prepare(strip, SPEC)
    # A thin picture that stays small when grown is a picture like any other.
    narrow = encode(Image.new("RGB", (8, 3000), (255, 0, 0)), "png")
    assert prepare(narrow, SPEC).shape == (3, SPEC.size, SPEC.size)
