"""Image bytes → content key, and image bytes → the model's input array.

The content key is what makes renames free: it hashes only the bytes that carry the picture, so
editing metadata (by us or any other app), renaming, moving or copying a photo keeps its key, and the
cached vector is found again without decoding a pixel.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from dataclasses import dataclass
from io import BytesIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Files the daemon tags.  MPO (multi-picture JPEG) is a JPEG whose first image is the picture.
JPEG_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".mpo"})

_KEY_BYTES = 16  # 128 bits of SHA-256: collisions are out of reach for any photo library
_JPEG_DOMAIN = b"tagwatch-jpeg-v1\0"
# The next marker inside entropy-coded data: 0xFF followed by anything but a stuffed zero, a restart
# marker (RST0-7, part of the scan) or another 0xFF (a fill byte before the marker).
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})


class ImageError(ValueError):
    """The bytes are not a usable image; the message is the reason, for one log line."""


def _is_metadata_segment(marker: int) -> bool:
    """APP0-APP15 (EXIF, XMP, IPTC, ICC, MPF, …) and COM carry no pixels."""
    return 0xE0 <= marker <= 0xEF or marker == 0xFE


def jpeg_key(data: bytes) -> bytes:
    """Key of a JPEG: every segment that defines pixels, from SOI to the first image's EOI.

    Hashed: quantisation and Huffman tables, the frame header, restart intervals, every scan header
    and the entropy-coded data of every scan up to EOI.  Skipped: APPn and COM segments wherever they
    sit, and anything after EOI (an MPO's second picture, a trailer).  So metadata edits never change
    the key, while any change to the decoded picture does.
    """
    view = memoryview(data)
    size = len(view)
    digest = hashlib.sha256(_JPEG_DOMAIN)
    if size < 4 or view[0] != 0xFF or view[1] != 0xD8:
        raise ImageError("not a JPEG file (no start-of-image marker)")
    pos = 2
    scans = 0
    while True:
        if pos + 2 > size:
            raise ImageError("truncated JPEG (no end-of-image marker)")
        if view[pos] != 0xFF:
            # Junk between segments: decoders (libjpeg, Pillow) skip to the next marker; so do we.
            pos = data.find(b"\xff", pos)
            if pos < 0:
                raise ImageError("truncated JPEG (no end-of-image marker)")
            continue
        marker = view[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == 0xD9:  # EOI
            if not scans:
                raise ImageError("JPEG holds no image data (end-of-image before any scan)")
            digest.update(view[pos:pos + 2])
            return digest.digest()[:_KEY_BYTES]
        if marker in _STANDALONE:
            digest.update(view[pos:pos + 2])
            pos += 2
            continue
        if pos + 4 > size:
            raise ImageError("truncated JPEG (no end-of-image marker)")
        end = pos + 2 + int.from_bytes(view[pos + 2:pos + 4], "big")
        if end > size or end < pos + 4:
            raise ImageError(f"truncated JPEG (segment at byte {pos} runs past the end of the file)")
        if not _is_metadata_segment(marker):
            digest.update(view[pos:end])
        pos = end
        if marker == 0xDA:  # SOS: entropy-coded data follows until the next real marker
            scans += 1
            found = _NEXT_MARKER.search(data, pos)
            if found is None:
                raise ImageError("truncated JPEG (no end-of-image marker)")
            digest.update(view[pos:found.start()])
            pos = found.start()


def content_key(data: bytes) -> bytes:
    """The content key of an image file's bytes.

    JPEG (and MPO, whose first picture is a JPEG) is the only format tagged so far, keyed by
    :func:`jpeg_key`.  Other formats are refused here; when they are added (with XMP sidecars) their
    key will be the hash of their pixel-carrying chunks (PNG IDAT, WebP VP8/VP8L/ALPH) or, for formats
    without such a stream, of the decoded pixels, so that the key stays blind to metadata.
    """
    return jpeg_key(data)


@dataclass(frozen=True)
class Preprocess:
    """How a model wants its input: open_clip's inference transform, as plain numbers."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"


def _open(data: bytes) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError("not an image Pillow can read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"refused: {exc}") from None


def load_rgb(data: bytes, min_side: int) -> Image.Image:
    """Decode to upright RGB, letting JPEG decode at a reduced scale no smaller than ``min_side``.

    JPEG draft mode decodes at 1/2, 1/4 or 1/8 scale in the DCT, several times faster than a full
    decode, and the shorter side stays at least ``min_side`` so the later resize only shrinks.
    """
    image = _open(data)
    try:
        image.draft("RGB", (min_side, min_side))
        image = ImageOps.exif_transpose(image)
        image.load()
        return image.convert("RGB") if image.mode != "RGB" else image
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"cannot decode: {exc}") from None
    except Exception as exc:  # Pillow plugins and EXIF parsing raise whatever odd files provoke
        raise ImageError(f"cannot decode: {type(exc).__name__}: {exc}") from None


def to_array(image: Image.Image, spec: Preprocess) -> np.ndarray:
    """Resize, crop and normalise exactly like open_clip's inference transform; returns CHW float32."""
    resample = Image.Resampling.BILINEAR if spec.interpolation == "bilinear" else Image.Resampling.BICUBIC
    width, height = image.size
    side = spec.size
    if spec.resize_mode == "squash":
        image = image.resize((side, side), resample)
    elif spec.resize_mode == "shortest":
        # torchvision.Resize(int): the short side becomes `side`, the long side is truncated.
        new = (side, int(side * height / width)) if width <= height else (int(side * width / height), side)
        if new != image.size:
            image = image.resize(new, resample)
        left = round((new[0] - side) / 2.0)
        top = round((new[1] - side) / 2.0)
        image = image.crop((left, top, left + side, top + side))
    else:
        raise ImageError(f"resize mode {spec.resize_mode!r} is not supported")
    array = np.asarray(image, dtype=np.float32) * (1.0 / 255.0)
    array = (array - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def prepare(data: bytes, spec: Preprocess) -> np.ndarray:
    """Bytes of an image file → the model's input array (the decode pool's unit of work)."""
    return to_array(load_rgb(data, spec.size), spec)
