"""Telling image formats apart, and the content key of each: what makes renames free.

The content key hashes only the bytes that carry the picture, so editing metadata (by us or any
other app), renaming, moving or copying a photo keeps its key, and the cached vector is found again
without decoding a pixel.  Formats are told apart by their magic numbers, never by the file name:
JPEG/MPO, PNG, WebP, TIFF, HEIC/HEIF and camera RAW.  Only JPEG gets keywords written into the file,
and only under a JPEG name (:func:`embeddable`); every other file is tagged through an XMP sidecar.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

from PIL import Image

from . import logs

# Files the daemon tags.  MPO (multi-picture JPEG) is a JPEG whose first image is the picture.
JPEG_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".mpo"})
# Camera RAWs: the ones LibRaw (rawpy) decodes whose bytes image_format knows, current cameras' first;
# the TIFF-based ones are told by their sensor data, IIQ by Phase One's block, the others by magic.
_RAW_SUFFIXES = frozenset({".dng", ".cr2", ".cr3", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".orf", ".rw2",
                           ".rwl", ".raf", ".pef", ".srw", ".iiq", ".3fr", ".fff", ".erf", ".mef", ".mos",
                           ".kdc", ".dcr"})
_OTHER_SUFFIXES = frozenset({".png", ".webp", ".tif", ".tiff", ".heic", ".heif", ".hif"})
IMAGE_SUFFIXES = JPEG_SUFFIXES | _OTHER_SUFFIXES | _RAW_SUFFIXES
# Pictures tagwatch does not read: a scan counts those it passes over, so that they are not missed
# (camera RAWs in containers of their own that image_format does not know: Sigma X3F, Canon CRW,
# Minolta MRW).
UNREAD_IMAGE_SUFFIXES = frozenset({".avif", ".gif", ".bmp", ".jxl", ".psd", ".svg", ".x3f", ".crw", ".mrw"})
# The names under which keywords may go into the file itself, when its bytes are a JPEG too
# (:func:`embeddable`); all other files get an XMP sidecar.
EMBEDDABLE_SUFFIXES = JPEG_SUFFIXES

_KEY_BYTES = 16  # 128 bits of SHA-256: collisions are out of reach for any photo library
# One domain per format, so that keys of different formats can never collide.
_JPEG_DOMAIN = b"tagwatch-jpeg-v1\0"
_PNG_DOMAIN = b"tagwatch-png-v1\0"
_WEBP_DOMAIN = b"tagwatch-webp-v1\0"
_TIFF_DOMAIN = b"tagwatch-tiff-v1\0"
_DNG_DOMAIN = b"tagwatch-dng-v1\0"
_HEIF_DOMAIN = b"tagwatch-heif-v1\0"
_RAW_DOMAIN = b"tagwatch-raw-file-v1\0"
# The next marker inside entropy-coded data: 0xFF followed by anything but a stuffed zero, a restart
# marker (RST0-7, part of the scan) or another 0xFF (a fill byte before the marker).
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})


class ImageError(ValueError):
    """The bytes are not a usable image; the message is the reason, for one log line."""


class IncompleteImage(ImageError):
    """The file ends before its format says it should (truncated, or empty): most likely a copy
    still in progress, which the daemon waits for instead of failing at once."""


class UnsettledRaw(IncompleteImage):
    """A RAW whose sensor data runs past the end of the file where its maker's byte counts may say
    more than the file holds (:func:`_loose_byte_counts`): a copy in progress, or the whole file.
    Waited for like any file cut short, then keyed as it is once it has stopped growing."""


def _is_metadata_segment(marker: int) -> bool:
    """APP0-APP15 (EXIF, XMP, IPTC, ICC, MPF, …) and COM carry no pixels."""
    return 0xE0 <= marker <= 0xEF or marker == 0xFE


def _cut(data: bytes, where: str) -> ImageError:
    """A JPEG whose segments run past its end: still being copied, or cut short (tried again once it
    changes), unless it ends with its end-of-image marker, when it is complete and damaged inside
    (corrupt picture data from a failing card): "truncated" sent a person to send it again."""
    if data.endswith(b"\xff\xd9"):
        return ImageError(f"corrupt JPEG ({where}, though the file ends with its end-of-image marker)")
    return IncompleteImage(f"truncated JPEG ({where})")


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
            raise _cut(data, "no end-of-image marker")
        if view[pos] != 0xFF:
            # Junk between segments: decoders (libjpeg, Pillow) skip to the next marker; so do we.
            pos = data.find(b"\xff", pos)
            if pos < 0:
                raise _cut(data, "no end-of-image marker")
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
            raise _cut(data, "no end-of-image marker")
        end = pos + 2 + int.from_bytes(view[pos + 2:pos + 4], "big")
        if end > size or end < pos + 4:
            raise _cut(data, f"segment at byte {pos} runs past the end of the file")
        if not _is_metadata_segment(marker):
            digest.update(view[pos:end])
        pos = end
        if marker == 0xDA:  # SOS: entropy-coded data follows until the next real marker
            scans += 1
            found = _NEXT_MARKER.search(data, pos)
            if found is None:
                raise _cut(data, "no end-of-image marker")
            digest.update(view[pos:found.start()])
            pos = found.start()


def _name(kind: bytes) -> str:
    """A chunk or box type for a log line: 'IDAT', 'mdat'."""
    return repr(kind.decode("latin-1"))


# --- Telling formats apart ------------------------------------------------------------------------

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TIFF_HEADERS = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")  # classic TIFF and BigTIFF, both byte orders
# TIFF-structured RAWs with a magic number of their own: Olympus ORF and Panasonic RW2.
_TIFF_LIKE_RAW_HEADERS = (b"IIRO", b"IIRS", b"MMOR", b"IIU\0")
_HEVC_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"})
# Phase One IIQ: a TIFF whose first 32 bytes hold the start of Phase One's own block, where the
# sensor data is (its IFDs hold only a preview): its byte-order mark, then "Raw" in that order
# (LibRaw's parse_phase_one checks both; a plain TIFF's pixels may begin with IIII after the header).
_PHASE_ONE = ((b"IIII", 5, b"waR"), (b"MMMM", 4, b"Raw"))
_CFA, _LINEAR_RAW = 32803, 34892  # PhotometricInterpretation of undemosaiced sensor data
_DNG_VERSION = 50706


def _phase_one(head: bytes) -> bool:
    """Phase One's block begins in the first 32 bytes (:data:`_PHASE_ONE`)."""
    for mark, at, signature in _PHASE_ONE:
        i = head.find(mark, 0, 32)
        if i >= 0 and head[i + at:i + at + 3] == signature:
            return True
    return False


def image_format(data: bytes) -> str:
    """The format of an image file's bytes, from its magic numbers (never from its name).

    One of ``jpeg``, ``png``, ``webp``, ``tiff``, ``heif``, ``dng`` or ``raw`` (any other camera RAW).
    A TIFF-structured file counts as RAW when it is a DNG, a CR2, a Phase One IIQ, or holds sensor (CFA
    or linear raw) data in any of its IFDs, which is how NEF, NRW, ARW, PEF, SRW, 3FR, ERF and the
    other TIFF-based RAWs look.  An empty file says so, as the pipeline does (``export`` named one
    "not an image format tagwatch reads" where ``scan`` and ``status`` said "empty file (0 bytes)").
    """
    if not data:
        raise ImageError("empty file (0 bytes)")
    kind = announced_format(data)
    if kind == "tiff":
        if bytes(data[8:10]) == b"CR":  # Canon CR2: a TIFF with its own signature after the header
            return "raw"
        if _phase_one(bytes(data[:40])):
            return "raw"
        ifds = _tiff_ifds(data, "TIFF")
        if _DNG_VERSION in ifds[0].entries:
            return "dng"
        if any(set(ifd.uints(262)) & {_CFA, _LINEAR_RAW} for ifd in ifds):
            return "raw"
    if kind is not None:
        return kind
    if bytes(data[4:8]) == b"ftyp":
        _ftyp_brands(data)  # a box cut short says so
        raise ImageError("not an image format tagwatch reads (an ISO media file, but not HEIC or CR3)")
    raise ImageError("not an image format tagwatch reads")


def announced_format(data: bytes) -> str | None:
    """The format a file's first bytes announce by their magic number alone (no structure is read):
    ``jpeg``, ``png``, ``webp``, ``tiff`` (TIFF, DNG and the TIFF-based RAWs), ``heif``, ``raw``, or
    None for bytes that are no image tagwatch reads.  Enough to choose where keywords go (from a
    file's first bytes); what the pixels are is :func:`image_format`'s to say, from this."""
    head = bytes(data[:16])
    if head.startswith(b"\xff\xd8"):
        return "jpeg"
    if head.startswith(_PNG_SIGNATURE):
        return "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith(b"FUJIFILMCCD-RAW") or head[:4] in _TIFF_LIKE_RAW_HEADERS:
        return "raw"
    if head[:4] in _TIFF_HEADERS:
        return "tiff"
    if head[4:8] == b"ftyp":
        try:
            brands = _ftyp_brands(data)
        except ImageError:  # an ftyp box longer than the bytes given: no image tagwatch knows
            return None
        if b"crx " in brands:  # Canon CR3
            return "raw"
        if brands & _HEVC_BRANDS:
            return "heif"
    return None


_HEAD_BYTES = 512  # the longest ftyp box of a real HEIC or CR3 is well under this


def embeddable(path: Path) -> bool:
    """Whether keywords may be written into the file itself: a JPEG by its name *and* its bytes.

    The pixels are read by the bytes (:func:`image_format`), so where keywords go follows them too: a
    PNG saved as ``shot.jpg`` (screenshots, graphics) is a PNG and gets a sidecar like any PNG; so do
    WebP, TIFF, HEIC and RAW under a JPEG name.  A JPEG under another name (``photo.png``) gets a
    sidecar as well, never a rewrite: exiftool picks its writer by the name and refuses bytes that
    say otherwise ("Not a valid PNG (looks more like a JPEG)"), and a JPEG kept under a PNG name
    would still mislead every app that trusts the name.  Bytes that are no image at all (a text file
    named ``.jpg``), or a file whose first bytes cannot be read, are judged by the name: the decoder
    or exiftool then says why, as before.
    """
    if path.suffix.lower() not in EMBEDDABLE_SUFFIXES:
        return False
    try:  # non-blocking: a FIFO put where the photo was must not hang the writer
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return True
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return True
        head = os.read(fd, _HEAD_BYTES)
    except OSError:
        return True
    finally:
        os.close(fd)
    return announced_format(head) in ("jpeg", None)


def content_key(data: bytes, *, settled: bool = False) -> bytes:
    """The content key of an image file's bytes: hashes what carries the picture, never metadata.

    Per format (the domain prefix differs for each, so keys never collide across formats):

    * JPEG/MPO: :func:`jpeg_key`, the first picture's tables and scans.
    * PNG: :func:`png_key`, the critical chunks, ``tRNS`` and the APNG frame chunks.
    * WebP: :func:`webp_key`, the bitstream, alpha and animation chunks.
    * TIFF and DNG: :func:`tiff_key`, every IFD's image data and the tags that say how to decode it.
    * HEIC/HEIF: :func:`heif_key`, every image item's coded data and decoding properties.
    * Other camera RAWs: :func:`raw_key`, the whole file (``settled``: see there).

    An EXIF orientation other than 1 (JPEG, PNG, WebP, TIFF, DNG) is part of the key: the photo is
    shown turned, and CLIP sees a turned photo differently.  HEIC carries its rotation in boxes the
    key hashes; other RAWs are hashed whole.  None of them decodes a pixel, so keying stays as cheap
    as reading the file.
    """
    kind = image_format(data)
    keyers = {"jpeg": jpeg_key, "png": png_key, "webp": webp_key, "tiff": tiff_key, "dng": tiff_key,
              "heif": heif_key}
    key = keyers[kind](data) if kind in keyers else raw_key(data, settled=settled)
    turn = _exif_orientation(data) if kind in ("jpeg", "png", "webp", "tiff", "dng") else 1
    if turn == 1:
        return key
    # The same pixels shown sideways are another picture to CLIP (it is not rotation-invariant),
    # so a rotation set in a viewer that only edits the EXIF tag must find a vector of its own.
    return hashlib.sha256(b"tagwatch-orientation-v1\0" + bytes([turn]) + key).digest()[:_KEY_BYTES]


def _exif_orientation(data: bytes) -> int:
    """The EXIF orientation (1-8; 1 when absent or unreadable), read without decoding pixels."""
    try:
        with logs.quiet(), Image.open(BytesIO(data)) as image:  # decoding reports Pillow's complaints
            value = image.getexif().get(0x0112, 1)
    except Exception:  # a damaged EXIF block: the picture is shown as stored
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


# --- PNG ------------------------------------------------------------------------------------------

# Ancillary chunks that change the decoded picture: transparency and the APNG frames.
_PNG_PIXEL_ANCILLARY = frozenset({b"tRNS", b"acTL", b"fcTL", b"fdAT"})


def png_key(data: bytes) -> bytes:
    """Key of a PNG: its critical chunks (IHDR, PLTE, IDAT), ``tRNS`` and the APNG frame chunks.

    IDAT is hashed as one stream, so re-splitting it into chunks of another size keeps the key.
    Skipped: text (tEXt, zTXt, iTXt), eXIf, tIME, pHYs, bKGD (alpha is composited on white, never on
    bKGD), private chunks, and colour management (iCCP, sRGB, gAMA, cHRM, cICP, sBIT, mDCv, cLLi):
    :func:`prepare` feeds the stored values to the model without colour management, exactly as for
    JPEG, whose ICC profile (APP2) is skipped too, so a profile edit does not change the model's input.
    The EXIF orientation is not hashed here; :func:`content_key` adds it for every format.
    """
    view = memoryview(data)
    size = len(view)
    if bytes(view[:8]) != _PNG_SIGNATURE:
        raise ImageError("not a PNG file (no PNG signature)")
    digest = hashlib.sha256(_PNG_DOMAIN)
    pos, in_idat, has_pixels = 8, False, False
    while True:
        if pos + 12 > size:
            raise IncompleteImage("truncated PNG (no IEND chunk)")
        length = int.from_bytes(view[pos:pos + 4], "big")
        kind = bytes(view[pos + 4:pos + 8])
        end = pos + 12 + length
        if end > size:
            raise IncompleteImage(f"truncated PNG ({_name(kind)} chunk at byte {pos} runs past the end)")
        if kind == b"IEND":
            if not has_pixels:
                raise ImageError("PNG holds no image data (no IDAT chunk)")
            return digest.digest()[:_KEY_BYTES]
        payload = view[pos + 8:end - 4]
        if kind == b"IDAT":
            if not in_idat:
                digest.update(b"IDAT")
            in_idat = has_pixels = True
            digest.update(payload)
        else:
            in_idat = False
            if 0x41 <= kind[0] <= 0x5A or kind in _PNG_PIXEL_ANCILLARY:  # upper case first letter: critical
                digest.update(kind + length.to_bytes(4, "big"))
                digest.update(payload)
        pos = end


# --- WebP -----------------------------------------------------------------------------------------

_WEBP_PIXEL_CHUNKS = frozenset({b"VP8 ", b"VP8L", b"ALPH", b"ANIM", b"ANMF"})
_WEBP_ANIMATION_FLAG = 0x02


def webp_key(data: bytes) -> bytes:
    """Key of a WebP: its VP8/VP8L bitstream, ALPH, ANIM and ANMF chunks (and, when animated, the canvas).

    Skipped: EXIF, XMP, ICCP, unknown chunks and the RIFF size.  VP8X is skipped for a still picture,
    because a metadata editor adds it when it puts EXIF or XMP into a simple WebP, and its flags record
    which metadata is present; an animation always has VP8X, and its canvas size is hashed.
    """
    view = memoryview(data)
    size = len(view)
    if size < 12 or bytes(view[:4]) != b"RIFF" or bytes(view[8:12]) != b"WEBP":
        raise ImageError("not a WebP file (no RIFF WEBP header)")
    riff_end = 8 + int.from_bytes(view[4:8], "little")
    if riff_end > size:
        raise IncompleteImage("truncated WebP (the file is shorter than its RIFF header says)")
    digest = hashlib.sha256(_WEBP_DOMAIN)
    pos, has_pixels = 12, False
    while pos + 8 <= riff_end:
        kind = bytes(view[pos:pos + 4])
        length = int.from_bytes(view[pos + 4:pos + 8], "little")
        end = pos + 8 + length
        if end > riff_end:
            raise IncompleteImage(f"truncated WebP ({_name(kind)} chunk at byte {pos} runs past the end)")
        payload = view[pos + 8:end]
        if kind in _WEBP_PIXEL_CHUNKS:
            has_pixels = has_pixels or kind in (b"VP8 ", b"VP8L", b"ANMF")
            digest.update(kind + length.to_bytes(4, "little"))
            digest.update(payload)
        elif kind == b"VP8X" and length >= 10 and payload[0] & _WEBP_ANIMATION_FLAG:
            digest.update(b"VP8X" + bytes(payload[4:10]))  # canvas width and height
        pos = end + (length & 1)  # chunks are padded to an even size
    if not has_pixels:
        raise ImageError("WebP holds no image data (no VP8, VP8L or ANMF chunk)")
    return digest.digest()[:_KEY_BYTES]


# --- TIFF, DNG and the TIFF-structured RAWs -------------------------------------------------------

_TIFF_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4,
                    16: 8, 17: 8, 18: 8}
_TIFF_UINT_FORMATS = {1: "B", 3: "H", 4: "I", 13: "I", 16: "Q", 18: "Q"}
_MAX_IFDS = 64  # more is a loop or a hostile file; real files have a handful
_SUB_IFDS = 330
# Where an IFD's pixel data lies: strips, tiles, and old-style JPEG streams (previews, thumbnails).
_TIFF_DATA_TAGS = ((273, 279), (324, 325), (513, 514))
# Tags that say how to decode an IFD's data: layout, compression, samples, palette, JPEG tables, the
# YCbCr set-up, and for DNG the CFA pattern, linearisation, black and white levels, active area,
# default crop and opcode lists.  Orientation, colour profiles, EXIF, XMP, IPTC and maker notes are
# metadata, as in JPEG.
_TIFF_DECODING_TAGS = frozenset({
    254, 256, 257, 258, 259, 262, 266, 277, 278, 284, 317, 320, 322, 323, 338, 339, 347,
    529, 530, 531, 532, 33421, 33422,
    50710, 50711, 50712, 50713, 50714, 50715, 50716, 50717, 50718, 50719, 50720, 50829, 50830,
    51008, 51009, 51022,
})


@dataclass
class _Ifd:
    """One TIFF image file directory: tag → (type, count, offset of the value's bytes)."""

    data: bytes = field(repr=False)
    order: str  # struct's byte order: "<" or ">"
    label: str  # the format, for error messages
    entries: dict[int, tuple[int, int, int]]

    def value(self, tag: int) -> bytes:
        kind, count, at = self.entries[tag]
        end = at + _TIFF_TYPE_SIZES.get(kind, 1) * count
        if end > len(self.data):
            raise IncompleteImage(
                f"truncated {self.label} (tag {tag} at byte {at} runs past the end of the file)")
        return self.data[at:end]

    def uints(self, tag: int) -> list[int]:
        """The unsigned integer values of ``tag`` ([] when absent or not an integer type)."""
        if tag not in self.entries or self.entries[tag][0] not in _TIFF_UINT_FORMATS:
            return []
        kind, count, _ = self.entries[tag]
        return list(struct.unpack(f"{self.order}{count}{_TIFF_UINT_FORMATS[kind]}", self.value(tag)))

    def check(self) -> None:
        """Refuse an IFD with a value past the end of the file: a file cut short (or damaged)."""
        for tag in self.entries:
            self.value(tag)

    def blocks(self) -> Iterator[tuple[int, int]]:
        """(offset, length) of each strip, tile or JPEG stream, checked to lie inside the file."""
        for offsets_tag, counts_tag in _TIFF_DATA_TAGS:
            offsets, counts = self.uints(offsets_tag), self.uints(counts_tag)
            if len(offsets) != len(counts):
                raise ImageError(f"damaged {self.label} (tag {offsets_tag} and tag {counts_tag} disagree)")
            for offset, count in zip(offsets, counts, strict=True):
                if offset + count > len(self.data):
                    where = f"image data at byte {offset} runs past the end"
                    raise IncompleteImage(f"truncated {self.label} ({where})")
                yield offset, count


def _tiff_ifds(data: bytes, label: str) -> list[_Ifd]:
    """Every IFD of a TIFF-structured file: the IFD0 chain and, recursively, their SubIFDs.

    EXIF, GPS and maker-note IFDs are metadata and not followed.
    """
    if len(data) < 16:
        raise IncompleteImage(f"truncated {label} (no complete header)")
    order = "<" if data[:2] == b"II" else ">"
    big = struct.unpack_from(f"{order}H", data, 2)[0] == 43
    queue = [struct.unpack_from(order + ("Q" if big else "I"), data, 8 if big else 4)[0]]
    seen: set[int] = set()
    ifds: list[_Ifd] = []
    while queue and len(ifds) < _MAX_IFDS:
        offset = queue.pop(0)
        if offset == 0 or offset in seen:
            continue
        seen.add(offset)
        ifd, following = _read_ifd(data, order, offset, big, label)
        ifds.append(ifd)
        queue.extend(ifd.uints(_SUB_IFDS))
        queue.append(following)
    if not ifds:
        raise ImageError(f"damaged {label} (no image file directory)")
    return ifds


def _read_ifd(data: bytes, order: str, offset: int, big: bool, label: str) -> tuple[_Ifd, int]:
    """One IFD at ``offset`` and the offset of the next one in its chain."""
    count_format, entry_size, inline, pointer = ("Q", 20, 8, "Q") if big else ("H", 12, 4, "I")
    head = struct.calcsize(count_format)
    if offset + head > len(data):
        raise IncompleteImage(f"truncated {label} (image file directory at byte {offset} is missing)")
    count = struct.unpack_from(f"{order}{count_format}", data, offset)[0]
    table_end = offset + head + count * entry_size
    if table_end + struct.calcsize(pointer) > len(data):
        raise IncompleteImage(f"truncated {label} (image file directory at byte {offset} runs past the end)")
    entries: dict[int, tuple[int, int, int]] = {}
    for pos in range(offset + head, table_end, entry_size):
        tag, kind = struct.unpack_from(f"{order}HH", data, pos)
        number = struct.unpack_from(f"{order}{pointer}", data, pos + 4)[0]
        value_at = pos + 4 + struct.calcsize(pointer)
        if _TIFF_TYPE_SIZES.get(kind, 1) * number <= inline:  # small values sit in the entry itself
            entries[tag] = (kind, number, value_at)
        else:
            entries[tag] = (kind, number, struct.unpack_from(f"{order}{pointer}", data, value_at)[0])
    following = struct.unpack_from(f"{order}{pointer}", data, table_end)[0]
    return _Ifd(data, order, label, entries), following


def tiff_key(data: bytes) -> bytes:
    """Key of a TIFF or DNG: per IFD (IFD0 chain and SubIFDs), the decoding tags and the image data.

    Hashed: each strip, tile and JPEG stream (so a DNG's raw data and its embedded previews) and the
    tags that say how to decode them (:data:`_TIFF_DECODING_TAGS`).  Offsets are not hashed, so a
    metadata editor that rewrites the file and moves the data keeps the key.  Skipped: everything
    else, EXIF/GPS IFDs, XMP, IPTC, ICC, maker notes (and with them DNG private data) and Orientation.
    """
    kind = image_format(data)
    label = kind.upper()
    if kind not in ("tiff", "dng"):
        raise ImageError(f"not a TIFF file ({kind})")
    digest = hashlib.sha256(_DNG_DOMAIN if kind == "dng" else _TIFF_DOMAIN)
    total = 0
    for ifd in _tiff_ifds(data, label):
        ifd.check()
        digest.update(b"IFD")
        for tag in sorted(_TIFF_DECODING_TAGS & ifd.entries.keys()):
            kind_code, count, _ = ifd.entries[tag]
            digest.update(struct.pack(">HHQ", tag, kind_code, count))
            digest.update(ifd.value(tag))
        for offset, length in ifd.blocks():
            digest.update(length.to_bytes(8, "big"))
            digest.update(memoryview(data)[offset:offset + length])
            total += length
    if not total:
        raise ImageError(f"{label} holds no image data (no strips or tiles)")
    return digest.digest()[:_KEY_BYTES]


# --- ISO base media files: HEIC/HEIF and CR3 ------------------------------------------------------

def _boxes(data: bytes, start: int, end: int, label: str) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, box end) of each box in ``data[start:end]``."""
    pos = start
    while pos < end:
        if pos + 8 > end:
            raise IncompleteImage(f"truncated {label} (box header at byte {pos} runs past the end)")
        size, kind, header = int.from_bytes(data[pos:pos + 4], "big"), bytes(data[pos + 4:pos + 8]), 8
        if size == 1:
            if pos + 16 > end:
                raise IncompleteImage(f"truncated {label} (box header at byte {pos} runs past the end)")
            size, header = int.from_bytes(data[pos + 8:pos + 16], "big"), 16
        elif size == 0:  # the last box, to the end of its parent
            size = end - pos
        if size < header or pos + size > end:
            raise IncompleteImage(f"truncated {label} ({_name(kind)} box at byte {pos} runs past the end)")
        yield kind, pos + header, pos + size
        pos += size


def _ftyp_brands(data: bytes) -> set[bytes]:
    size = int.from_bytes(data[:4], "big")
    if size < 16 or size > len(data):
        raise IncompleteImage("truncated ISO media file (the ftyp box runs past the end)")
    brands = {bytes(data[8:12])}
    brands.update(bytes(data[pos:pos + 4]) for pos in range(16, size - 3, 4))
    return brands


class _Cursor:
    """Big-endian integers read from ``data[pos:end]``, refusing to run past ``end``."""

    def __init__(self, data: bytes, pos: int, end: int, what: str) -> None:
        self.data, self.pos, self.end, self.what = data, pos, end, what

    def uint(self, size: int) -> int:
        if self.pos + size > self.end:
            raise ImageError(f"damaged HEIF (the {self.what} box is shorter than its table)")
        value = int.from_bytes(self.data[self.pos:self.pos + size], "big")
        self.pos += size
        return value

    def fourcc(self) -> bytes:
        self.uint(4)
        return bytes(self.data[self.pos - 4:self.pos])


# HEIF items that hold metadata rather than pixels, and the reference that ties them to the picture.
_HEIF_METADATA_ITEMS = frozenset({b"Exif", b"mime", b"uri "})
_HEIF_METADATA_REFERENCES = frozenset({b"cdsc"})
_Location = tuple[int, int, list[tuple[int, int]]]  # construction method, base offset, extents


def heif_key(data: bytes) -> bytes:
    """Key of a HEIC/HEIF: every image item's coded data and properties, the references between them.

    Hashed, per item that is not metadata (so the primary picture, grid tiles, alpha and depth planes,
    thumbnails): its type, its data (wherever ``iloc`` puts it, so moved data keeps the key), and its
    properties (decoder configuration, size, rotation and mirroring, clean aperture, nclx colour),
    plus the primary item and the ``iref`` references between items.  Skipped: Exif and XMP items,
    the ``cdsc`` references that attach them, and ICC profiles (``colr`` of type prof/rICC), which
    :func:`prepare` does not apply.
    """
    if image_format(data) != "heif":
        raise ImageError("not a HEIC file (no HEVC brand in its ftyp box)")
    meta = next(((s, e) for kind, s, e in _boxes(data, 0, len(data), "HEIF") if kind == b"meta"), None)
    if meta is None:
        raise ImageError("HEIF holds no image (no meta box)")
    boxes = {kind: (s, e) for kind, s, e in _boxes(data, meta[0] + 4, meta[1], "HEIF")}
    missing = {b"pitm", b"iinf", b"iloc"} - boxes.keys()
    if missing:
        raise ImageError(f"damaged HEIF (no {b', '.join(sorted(missing)).decode()} box)")
    digest = hashlib.sha256(_HEIF_DOMAIN)
    digest.update(_heif_primary(data, *boxes[b"pitm"]).to_bytes(4, "big"))
    locations = _heif_locations(data, *boxes[b"iloc"])
    properties, associations = _heif_properties(data, boxes.get(b"iprp"))
    total = 0
    for item, kind in sorted(_heif_item_types(data, *boxes[b"iinf"]).items()):
        if kind in _HEIF_METADATA_ITEMS:
            continue
        digest.update(item.to_bytes(4, "big") + kind)
        for index in associations.get(item, []):
            if 0 < index <= len(properties) and not _is_icc_profile(properties[index - 1]):
                digest.update(properties[index - 1])
        for chunk in _heif_item_data(data, locations.get(item), boxes.get(b"idat")):
            digest.update(len(chunk).to_bytes(8, "big"))
            digest.update(chunk)
            total += len(chunk)
    if not total:
        raise ImageError("HEIF holds no image data")
    for kind, source, targets in _heif_references(data, boxes.get(b"iref")):
        if kind not in _HEIF_METADATA_REFERENCES:
            digest.update(kind + struct.pack(f">{len(targets) + 1}I", source, *targets))
    return digest.digest()[:_KEY_BYTES]


def _heif_primary(data: bytes, start: int, end: int) -> int:
    cursor = _Cursor(data, start, end, "pitm")
    return cursor.uint(2) if cursor.uint(4) >> 24 == 0 else cursor.uint(4)


def _heif_item_types(data: bytes, start: int, end: int) -> dict[int, bytes]:
    """item ID → item type (``hvc1``, ``grid``, ``Exif``, ``mime``, …) from ``iinf``."""
    cursor = _Cursor(data, start, end, "iinf")
    cursor.uint(2 if cursor.uint(4) >> 24 == 0 else 4)  # entry count: the boxes that follow say it too
    types: dict[int, bytes] = {}
    for kind, s, e in _boxes(data, cursor.pos, end, "HEIF"):
        if kind != b"infe":
            continue
        cursor = _Cursor(data, s, e, "infe")
        entry_version = cursor.uint(4) >> 24
        item = cursor.uint(2 if entry_version < 3 else 4)
        cursor.uint(2)  # protection index
        types[item] = cursor.fourcc() if entry_version >= 2 else b"\0\0\0\0"
    return types


def _heif_locations(data: bytes, start: int, end: int) -> dict[int, _Location]:
    """item ID → where its data lies, from ``iloc`` (versions 0, 1 and 2)."""
    cursor = _Cursor(data, start, end, "iloc")
    version = cursor.uint(4) >> 24
    sizes = cursor.uint(2)
    offset_size, length_size, base_size = sizes >> 12, (sizes >> 8) & 15, (sizes >> 4) & 15
    index_size = sizes & 15 if version in (1, 2) else 0
    locations: dict[int, _Location] = {}
    for _ in range(cursor.uint(2 if version < 2 else 4)):
        item = cursor.uint(2 if version < 2 else 4)
        method = cursor.uint(2) & 15 if version in (1, 2) else 0
        cursor.uint(2)  # data reference index: 0, this file
        base = cursor.uint(base_size)
        extents = []
        for _ in range(cursor.uint(2)):
            cursor.uint(index_size)
            extents.append((cursor.uint(offset_size), cursor.uint(length_size)))
        locations[item] = (method, base, extents)
    return locations


def _heif_item_data(data: bytes, location: _Location | None, idat: tuple[int, int] | None) -> Iterator[bytes]:
    """The bytes of one item's extents, in the file (method 0) or in ``idat`` (method 1)."""
    if location is None:
        return
    method, base, extents = location
    for offset, length in extents:
        if method == 2:  # data built from another item: hashing the recipe is enough
            yield struct.pack(">QQ", offset, length)
            continue
        low, high = (0, len(data)) if method == 0 else (idat if idat else (0, 0))
        begin = low + base + offset
        finish = high if length == 0 else begin + length
        if finish > high:
            raise IncompleteImage(f"truncated HEIF (item data at byte {begin} runs past the end)")
        yield bytes(data[begin:finish])


def _heif_properties(data: bytes, iprp: tuple[int, int] | None) -> tuple[list[bytes], dict[int, list[int]]]:
    """The property boxes of ``ipco`` (type + payload, in order) and item ID → its 1-based indices."""
    properties: list[bytes] = []
    associations: dict[int, list[int]] = {}
    if iprp is None:
        return properties, associations
    for kind, s, e in _boxes(data, iprp[0], iprp[1], "HEIF"):
        if kind == b"ipco":
            properties.extend(kind + bytes(data[ps:pe]) for kind, ps, pe in _boxes(data, s, e, "HEIF"))
        elif kind == b"ipma":
            cursor = _Cursor(data, s, e, "ipma")
            version_flags = cursor.uint(4)
            wide_ids, wide_indices = version_flags >> 24 >= 1, version_flags & 1
            for _ in range(cursor.uint(4)):
                item = cursor.uint(4 if wide_ids else 2)
                indices = [cursor.uint(2 if wide_indices else 1) for _ in range(cursor.uint(1))]
                mask = 0x7FFF if wide_indices else 0x7F  # the top bit says "essential"
                associations.setdefault(item, []).extend(index & mask for index in indices)
    return properties, associations


def _is_icc_profile(prop: bytes) -> bool:
    return prop[:4] == b"colr" and prop[4:8] in (b"prof", b"rICC")


def _heif_references(data: bytes, iref: tuple[int, int] | None) -> list[tuple[bytes, int, list[int]]]:
    """(type, from item, to items) of each ``iref`` entry."""
    if iref is None:
        return []
    width = 2 if _Cursor(data, iref[0], iref[1], "iref").uint(4) >> 24 == 0 else 4
    references = []
    for kind, s, e in _boxes(data, iref[0] + 4, iref[1], "HEIF"):
        cursor = _Cursor(data, s, e, "iref")
        source = cursor.uint(width)
        references.append((kind, source, [cursor.uint(width) for _ in range(cursor.uint(2))]))
    return references


# --- Other camera RAWs ----------------------------------------------------------------------------

def raw_key(data: bytes, *, settled: bool = False) -> bytes:
    """Key of a camera RAW other than DNG (CR2, CR3, NEF, ARW, ORF, RW2, RAF, IIQ, 3FR…): the whole file.

    Each maker keeps its sensor data somewhere of its own (maker-note offsets, RW2's tag 0x118,
    CR3 tracks, RAF's CFA block, Sony's encrypted SR2 area), so a key built from the standard
    structure could miss the pixels and let two shots share a key.  Hashing everything is exact, and
    cheap next to reading the file.  It is safe because tagwatch never writes into RAW files (they get
    sidecars) and raw editors keep their edits in sidecars or catalogues too.  What a metadata edit
    written into the RAW by another app costs: a new key, so one decode of the embedded preview and
    one model run for that photo, which is then tagged again as if new.

    The file's own structure is checked first, so a RAW still being copied is reported as truncated:
    keyed while it grows, it would get a new key with every chunk written, and the record of the
    keywords tagwatch wrote into its sidecar would be dropped at each one.  ``settled``: the file has
    stopped growing (see :func:`_check_raw_structure`).
    """
    if image_format(data) != "raw":
        raise ImageError("not a camera RAW file")
    _check_raw_structure(data, settled)
    digest = hashlib.sha256(_RAW_DOMAIN)
    digest.update(data)
    return digest.digest()[:_KEY_BYTES]


def _check_raw_structure(data: bytes, settled: bool = False) -> None:
    """Refuse a RAW whose container says it is longer than the file (a copy still in progress).

    A TIFF-like RAW's strips and tiles must end inside the file: cameras write the IFDs and the
    preview first and the sensor data last, so a RAW being written by tethering or a slow copy has a
    complete structure and preview long before its sensor data ends.  The one leniency is for makers
    whose byte counts may say more than the file holds (:func:`_loose_byte_counts`): their sensor
    data need only start inside the file, and only once it has stopped growing (``settled``, judged by
    the caller: :class:`tagwatch.retry.StillWriting`); until then it is :class:`UnsettledRaw`.
    """
    if data[:15] == b"FUJIFILMCCD-RAW":
        if len(data) < 108:
            raise IncompleteImage("truncated RAW (no complete RAF header)")
        for at in (84, 92, 100):  # JPEG preview, CFA header and CFA data: offset, length
            offset, length = struct.unpack_from(">II", data, at)
            if length and offset >= len(data):
                raise IncompleteImage(f"truncated RAW (data at byte {offset} is past the end)")
        return
    if data[4:8] == b"ftyp":
        for _ in _boxes(data, 0, len(data), "RAW"):
            pass
        return
    ifds = _tiff_ifds(data, "RAW")
    loose = _loose_byte_counts(data, ifds)
    for ifd in ifds:
        for tags in _TIFF_DATA_TAGS:
            for offset, length in zip(*(ifd.uints(tag) for tag in tags), strict=False):
                if not length or offset + length <= len(data):
                    continue
                if offset >= len(data):
                    raise IncompleteImage(f"truncated RAW (image data at byte {offset} is past the end)")
                if not loose:
                    raise IncompleteImage(f"truncated RAW (image data at byte {offset} runs past the end)")
                if not settled:
                    raise UnsettledRaw(f"truncated RAW (image data at byte {offset} runs past the end, "
                                       "which its maker's byte counts may do: keyed once it stops growing)")


def _loose_byte_counts(data: bytes, ifds: list[_Ifd]) -> bool:
    """Is this a RAW whose strip byte counts may say more than the file holds?  Panasonic's (RW2,
    and Leica's RWL made alike) may hold the uncompressed size there, and Hasselblad's 3FR is as
    loose: exiftool's validator leaves exactly these out of its "runs past end of file" check."""
    if data[:4] == b"IIU\0":
        return True
    return 271 in ifds[0].entries and ifds[0].value(271).startswith(b"Hasselblad")  # Make
