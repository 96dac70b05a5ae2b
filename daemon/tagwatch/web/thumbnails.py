"""Small upright JPEGs of the photos, made once with Pillow and cached by content key.

The cache key is the photo's content key (the bytes that carry the picture, EXIF orientation
included), so a rename, a move or a keyword write never makes a thumbnail again, and an edit of the
pixels or a turn in a viewer always does.  Decoding goes through :func:`tagwatch.imaging.load_rgb`,
the same upright decode the model sees: EXIF orientation for JPEG, PNG, WebP and TIFF, HEIC's own
rotation, RAW through its preview, JPEG draft mode for speed.  Files are written atomically, 0600 in a
0700 folder of the data folder.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

from PIL import Image

from .. import logs
from ..formats import ImageError, content_key
from ..imaging import load_rgb
from ..store import FileRow, private_folder

SIZES = {"thumb": 360, "preview": 1600}  # longest side in pixels: the grid, the photo page
QUALITY = 82


class Thumbnails:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, path: str, row: FileRow | None, kind: str) -> Path:
        """The cached JPEG for ``path`` at size ``kind``, made now if missing.

        ``row`` gives the content key while the file's size and mtime are those recorded; otherwise
        the key is computed from the file.  Raises ImageError (or OSError) for a photo that cannot be
        decoded.
        """
        side = SIZES[kind]
        data: bytes | None = None
        st = os.stat(path)
        recorded = row is not None and (row.size, row.mtime_ns) == (st.st_size, st.st_mtime_ns)
        if row is not None and row.key is not None and recorded:
            key = row.key
        else:
            data = Path(path).read_bytes()
            key = content_key(data)
        name = f"{key.hex()}-{side}.jpg"
        target = self.folder / name[:2] / name
        if target.exists():
            return target
        with self._lock_for(name):
            if target.exists():  # made by another request meanwhile
                return target
            if data is None:
                data = Path(path).read_bytes()
            with logs.quiet():  # the photo's tagging logged Pillow's warnings about it already
                image = load_rgb(data, side)
            image.thumbnail((side, side), Image.Resampling.LANCZOS)
            private_folder(target.parent)
            temp = target.with_name(f".{name}.{os.getpid()}.{threading.get_ident()}.tmp")
            try:
                fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as handle:
                    image.save(handle, "JPEG", quality=QUALITY, optimize=True)
                os.replace(temp, target)
            except BaseException:
                with contextlib.suppress(OSError):
                    temp.unlink()
                raise
        return target

    def _lock_for(self, name: str) -> threading.Lock:
        with self._guard:
            if len(self._locks) > 1024:
                self._locks = {k: v for k, v in self._locks.items() if v.locked()}
            return self._locks.setdefault(name, threading.Lock())


__all__ = ["SIZES", "ImageError", "Thumbnails"]
