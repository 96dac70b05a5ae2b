"""The version of a photo tagwatch found before its first write, recognised when it comes back.

A drop folder's photographer sends the same photo again, straight from the camera, over the one
tagwatch tagged; a person restores it from a backup.  Either way the file holds the same picture
and none of tagwatch's keywords, which is also what a person taking them out in another app leaves,
and that must never be undone.  What tells them apart is the metadata: the version sent again has
the bytes tagwatch found, while a person's edit (exiftool, Lightroom, digiKam) rewrites the
metadata it leaves behind (tagwatch's own write left its mark there too: an IPTC record version, a
character set, an XMP packet).  The pixels are compared by the content key already
(:mod:`tagwatch.formats`), so a digest of what comes before them is enough: a JPEG's segments up to
its first scan, a few kilobytes to a few hundred, read without reading the picture.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

_LIMIT = 16 * 1024 * 1024  # an extended XMP can run to megabytes; past this, nothing is said
_SOS, _SOI = 0xDA, b"\xff\xd8"


def header_digest(path: Path) -> bytes | None:
    """A digest of a JPEG's bytes before its first scan (every APPn and COM segment, the tables and
    the frame header), or None where there is none to take (not a JPEG, cut short, unreadable)."""
    digest = hashlib.blake2b(digest_size=16)
    try:
        with path.open("rb") as f:
            if f.read(2) != _SOI:
                return None
            digest.update(_SOI)
            read = 2
            while read < _LIMIT:
                head = f.read(4)
                if len(head) < 4 or head[0] != 0xFF:
                    return None  # junk between segments: too odd to vouch for
                digest.update(head)
                if head[1] == _SOS:
                    return digest.digest()
                length = int.from_bytes(head[2:4], "big")
                if length < 2:
                    return None
                body = f.read(length - 2)
                if len(body) < length - 2:
                    return None
                digest.update(body)
                read += 2 + length
    except OSError:
        return None
    return None
