"""Image bytes → the model's input array: decode upright, resize and normalise like open_clip.

JPEG decodes in draft mode (a reduced-scale DCT) when the picture is much larger than the model's
input; HEIC goes through pillow-heif and camera RAW through rawpy (its embedded preview when large
enough).  Every failure is an :class:`ImageError` whose message is the reason, for one log line.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
from dataclasses import dataclass
from io import BytesIO
from types import ModuleType
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from . import logs
from .formats import ImageError, image_format


@dataclass(frozen=True)
class Preprocess:
    """How a model wants its input: open_clip's inference transform, as plain numbers."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"


# --- Decoding -------------------------------------------------------------------------------------

# The Pillow plugin for each sniffed format, so that no other plugin gets a say (JPEG's opens MPO).
_PILLOW_FORMATS = {
    "jpeg": ["JPEG"], "png": ["PNG"], "webp": ["WEBP"], "tiff": ["TIFF"], "heif": ["HEIF"],
}
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
# EXIF orientation → the turn that shows the picture upright (what ImageOps.exif_transpose does).
_ORIENTATION_TURNS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# LibRaw's (dcraw's) flip → EXIF orientation.  Flip bits: 2 flips rows, 1 flips columns, 4 then
# transposes; so 6 (rows, transpose) is 90° clockwise like EXIF 6, 5 is 90° anticlockwise (EXIF 8).
_FLIP_ORIENTATION = {0: 1, 1: 2, 2: 4, 3: 3, 4: 5, 5: 8, 6: 6, 7: 7}
_WHITE = (255, 255, 255, 255)


@functools.cache
def _enable_heif() -> None:
    """Teach Pillow HEIC/HEIF once, on the first such file (pillow-heif registers a plugin)."""
    try:
        import pillow_heif
    except ImportError:
        raise ImageError("HEIC support needs pillow-heif (pip install pillow-heif)") from None
    pillow_heif.register_heif_opener()


@functools.cache
def _rawpy() -> ModuleType:
    try:
        import rawpy
    except ImportError:
        raise ImageError("camera RAW support needs rawpy (pip install rawpy)") from None
    return rawpy


# Pillow's warnings about a file it still decodes whole: nothing for the user to do, so logged at debug.
# "Tag data larger than file. Skipping tag 65504" is a step of its EXIF reader, said once per tag before
# the "Corrupt EXIF data" that sums the damage up: three WARNING lines for one file (xQ #6)
_MINOR_WARNINGS = ("appears to be a malformed MPO file", "Skipping tag")


def judge_warning(category: type[Warning], text: str) -> int | None:
    """The level of a warning Pillow raises while decoding a photo (see :func:`decoding`): damage it
    worked around (a corrupt EXIF block) is worth a warning, a harmless oddity only a debug line, and
    its decompression-bomb warning nothing, as :func:`_open` refuses such a picture itself."""
    if issubclass(category, Image.DecompressionBombWarning):
        return None
    return logging.DEBUG if any(minor in text for minor in _MINOR_WARNINGS) else logging.WARNING


def decoding(path: str) -> contextlib.AbstractContextManager[None]:
    """Pillow's warnings while this thread decodes ``path`` become one log line naming it."""
    return logs.about(path, judge_warning)


def _open(data: bytes, formats: list[str] | None = None) -> Image.Image:
    """Open without decoding; a picture over the pixel limit is refused here, where Pillow only warns
    (up to twice the limit).  Checked on the size, not by making the warning an error: that takes
    ``warnings.catch_warnings``, which is process-wide and would garble other threads' warnings."""
    try:
        image = Image.open(BytesIO(data), formats=formats)
    except UnidentifiedImageError:
        raise ImageError("not an image Pillow can read") from None
    except Image.DecompressionBombError as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        raise _bomb(int(found.group(1))) if found else ImageError(f"refused: {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"cannot decode: {exc}") from None
    _check_pixels(image.width * image.height)
    return image


def set_pixel_limit(megapixels: float) -> None:
    """The ``max_megapixels`` setting: Pillow's bomb limit, which this module makes a hard refusal
    (Pillow itself only warns up to twice the limit).  Process-wide, like Pillow's own."""
    Image.MAX_IMAGE_PIXELS = int(megapixels * 1_000_000)


def _bomb(count: int) -> ImageError:
    limit = Image.MAX_IMAGE_PIXELS or 0
    return ImageError(f"refused: {count / 1e6:.1f} megapixels, over the limit of {limit / 1e6:g} "
                      f"(max_megapixels); could be a decompression bomb, so it was not decoded")


def _check_pixels(count: int) -> None:
    """The pixel limit, for pictures that do not pass through Image.open."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit and count > limit:
        raise _bomb(count)


# The most pixels a resize may grow a picture to.  Only a strip narrower than the model's input grows
# (a 1 x 30000 PNG becomes 224 x 6.7 million); the pixel limit cannot catch it, as it is set for
# cameras (180 MP, over 500 MB of RGB), and whatever the limit is, the crop keeps side x side of it.
MAX_GROWN_PIXELS = 16_000_000


def _check_growth(size: tuple[int, int], new: tuple[int, int]) -> None:
    """Refuse a resize that would blow a thin strip up into a huge picture (memory, not a photo)."""
    count = new[0] * new[1]
    if count > size[0] * size[1] and count > MAX_GROWN_PIXELS:
        raise ImageError(f"refused: a {size[0]} x {size[1]} picture would grow to {new[0]} x {new[1]} "
                         f"({count / 1e6:.0f} megapixels) to fit the model; too thin to be a photo")
    _check_pixels(count)


def load_rgb(data: bytes, min_side: int) -> Image.Image:
    """Decode to upright 8-bit RGB, letting JPEG decode at a reduced scale no smaller than ``min_side``.

    JPEG draft mode decodes at 1/2, 1/4 or 1/8 scale in the DCT, several times faster than a full
    decode, and the shorter side stays at least ``min_side`` so the later resize only shrinks.  Every
    format is upright: EXIF orientation for JPEG, PNG, WebP and TIFF, ``irot``/``imir`` for HEIC
    (whose EXIF orientation pillow-heif rightly ignores), LibRaw's flip for RAW.  A multi-frame file
    (MPO, animated PNG/WebP, multi-page TIFF, HEIF with several images) gives its first or primary
    picture.  See :func:`_to_rgb` for alpha, 16-bit and CMYK.
    """
    kind = image_format(data)
    if kind in ("dng", "raw"):
        return _load_raw(data, min_side)
    if kind == "heif":
        _enable_heif()
    return _decode(_open(data, _PILLOW_FORMATS[kind]), min_side)


def _decode(image: Image.Image, min_side: int, upright: bool = True) -> Image.Image:
    """Decode the opened ``image`` to RGB, turned upright by its EXIF orientation unless told not to."""
    try:
        image.draft("RGB", (min_side, min_side))  # only JPEG decodes at a reduced scale; others ignore it
        if upright:
            image = ImageOps.exif_transpose(image)
        image.load()
        return _to_rgb(image)
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"cannot decode: {exc}") from None
    except Exception as exc:  # Pillow plugins and EXIF parsing raise whatever odd files provoke
        raise ImageError(f"cannot decode: {type(exc).__name__}: {exc}") from None


def _to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB as a viewer shows it.

    16-bit and 32-bit integer greys (Pillow's I;16 and I modes, from 16-bit PNG and TIFF) are scaled
    from 0-65535, float greys (F) from 0-1; Pillow's plain ``convert`` would clip them to white.
    16-bit colour PNG/TIFF already arrive as 8-bit RGB(A).  Alpha is composited on white: transparent
    pixels often hold black or leftovers of the encoder, which would mislead the model, and white is
    the page most viewers and the web show them on.  CMYK, YCbCr, palette and the rest go through
    Pillow's conversion.
    """
    if image.mode == "F":
        image = Image.fromarray((np.clip(np.asarray(image), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))
    elif image.mode.startswith("I"):
        grey = (np.asarray(image).astype(np.int64).clip(0, 65535) + 128) // 257
        image = Image.fromarray(grey.astype(np.uint8))
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        page = Image.new("RGBA", rgba.size, _WHITE)
        page.alpha_composite(rgba)
        return page.convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def _load_raw(data: bytes, min_side: int) -> Image.Image:
    """A camera RAW: its embedded JPEG preview when one is large enough, else a half-size demosaic.

    The preview is what the camera made of the picture and decodes in milliseconds (draft mode
    included); LibRaw's ``half_size`` demosaic (one pixel per 2x2 sensor block, camera white balance)
    is the fallback for files without a usable preview (none, a damaged one, or only a thumbnail
    smaller than the model's input).
    """
    rawpy = _rawpy()
    try:
        with rawpy.imread(BytesIO(data)) as raw:
            with contextlib.suppress(ImageError):  # a damaged preview: the sensor data may still be fine
                preview = _raw_preview(raw, min_side)
                if preview is not None:
                    return preview
            sizes = raw.sizes
            _check_pixels((sizes.width // 2) * (sizes.height // 2))
            pixels = raw.postprocess(half_size=True, use_camera_wb=True, output_bps=8)  # applies the flip
    except rawpy.LibRawError as exc:
        reason = exc.args[0] if exc.args else b""  # LibRaw's messages are bytes
        reason = reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)
        raise ImageError(f"cannot decode RAW: {reason or type(exc).__name__}") from None
    return Image.fromarray(pixels)


def _raw_preview(raw: Any, min_side: int) -> Image.Image | None:
    """The upright embedded preview, or None when there is none at least ``min_side`` on its short side.

    It is turned by the RAW's flip, the orientation LibRaw's own demosaic and raw converters use, and
    not by the preview's EXIF (LibRaw even adds an EXIF block of its own to a preview that has none).
    A quarter turn is skipped when the preview already has the upright aspect: some cameras store it
    turned.
    """
    rawpy = _rawpy()
    try:
        thumb = raw.extract_thumb()
    except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
        return None
    if thumb.format == rawpy.ThumbFormat.JPEG:
        image = _open(thumb.data, _PILLOW_FORMATS["jpeg"])
    elif thumb.format == rawpy.ThumbFormat.BITMAP:
        _check_pixels(thumb.data.shape[0] * thumb.data.shape[1])
        image = Image.fromarray(thumb.data)
    else:
        return None
    if min(image.size) < min_side:
        return None
    sizes = raw.sizes
    orientation = _FLIP_ORIENTATION.get(sizes.flip, 1)
    if orientation in (5, 6, 7, 8) and (image.width > image.height) != (sizes.width > sizes.height):
        orientation = 1
    image = _decode(image, min_side, upright=False)
    return image.transpose(_ORIENTATION_TURNS[orientation]) if orientation in _ORIENTATION_TURNS else image


def to_pixels(image: Image.Image, spec: Preprocess) -> np.ndarray:
    """Resize and crop exactly like open_clip's inference transform; returns HWC uint8.

    A quarter of the float32 array's size: the local engine keeps a few batches decoded ahead of the
    encoder, and sends them to it, in this form; :func:`normalize` makes the model's input of them."""
    resample = Image.Resampling.BILINEAR if spec.interpolation == "bilinear" else Image.Resampling.BICUBIC
    width, height = image.size
    side = spec.size
    if spec.resize_mode == "squash":
        image = image.resize((side, side), resample)
    elif spec.resize_mode == "shortest":
        # torchvision.Resize(int): the short side becomes `side`, the long side is truncated.
        new = (side, int(side * height / width)) if width <= height else (int(side * width / height), side)
        _check_growth(image.size, new)
        if new != image.size:
            image = image.resize(new, resample)
        left = round((new[0] - side) / 2.0)
        top = round((new[1] - side) / 2.0)
        image = image.crop((left, top, left + side, top + side))
    else:
        raise ImageError(f"resize mode {spec.resize_mode!r} is not supported")
    return np.asarray(image, dtype=np.uint8)


def normalize(pixels: np.ndarray, spec: Preprocess) -> np.ndarray:
    """HWC (or NHWC) uint8 pixels → CHW (NCHW) float32, normalised like open_clip's transform."""
    array = pixels.astype(np.float32) * (1.0 / 255.0)
    array = (array - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    return np.ascontiguousarray(np.moveaxis(array, -1, -3))


def to_array(image: Image.Image, spec: Preprocess) -> np.ndarray:
    """Resize, crop and normalise exactly like open_clip's inference transform; returns CHW float32."""
    return normalize(to_pixels(image, spec), spec)


def prepare_pixels(data: bytes, spec: Preprocess) -> np.ndarray:
    """Bytes of an image file → the model's input as HWC uint8 pixels (the decode pool's unit of work)."""
    return to_pixels(load_rgb(data, spec.size), spec)


def prepare(data: bytes, spec: Preprocess) -> np.ndarray:
    """Bytes of an image file → the model's input array, CHW float32."""
    return to_array(load_rgb(data, spec.size), spec)
