"""Which photo a URL names: ``/photo/<root>/<path inside it>``, only inside the watched folders.

A URL never carries an absolute path: ``<root>`` is the watched folder's number and the rest a path
relative to it.  A path with ``..``, ``.`` or empty components, an absolute one, a hidden name, a
name that is not a photo, or one that reaches its file through a symbolic link (anywhere along the
way, the file itself included) names nothing: the page answers 404, the same as for a missing file,
so nothing outside the watched folders can be read or even probed.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

from ..formats import IMAGE_SUFFIXES


class PhotoRoots:
    def __init__(self, roots: Sequence[Path]) -> None:
        self.roots = tuple(str(r).rstrip("/") or "/" for r in roots)

    def resolve(self, index: int, relative: str) -> str | None:
        """The absolute path of a photo inside watched folder ``index``, or None (404)."""
        if not 0 <= index < len(self.roots) or not relative or "\0" in relative:
            return None
        parts = relative.split("/")
        if relative.startswith("/") or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
            return None
        if os.path.splitext(parts[-1])[1].lower() not in IMAGE_SUFFIXES:
            return None
        root = self.roots[index]
        path = os.path.join(root, *parts)
        try:
            if os.path.realpath(path) != path or not stat.S_ISREG(os.lstat(path).st_mode):
                return None  # a symbolic link somewhere on the way (or none of a file)
        except OSError:
            return None
        return path

    def locate(self, path: str) -> tuple[int, str] | None:
        """(root number, relative path) of an absolute path inside a watched folder, else None."""
        best: tuple[int, str] | None = None
        for index, root in enumerate(self.roots):
            if path.startswith(root + "/") and (best is None or len(root) > len(self.roots[best[0]])):
                best = (index, path[len(root) + 1:])
        return best

    def url(self, kind: str, path: str) -> str | None:
        """``/<kind>/<root>/<relative path, quoted>`` for a photo inside a watched folder."""
        where = self.locate(path)
        if where is None:
            return None
        return f"/{kind}/{where[0]}/{quote(where[1])}"

    def folder(self, value: str) -> str | None:
        """A folder filter ``<root>`` or ``<root>/<relative folder>`` as an absolute path, or None."""
        where = self.folder_parts(value)
        return None if where is None else os.path.join(self.roots[where[0]], *where[1])

    def folder_parts(self, value: str) -> tuple[int, list[str]] | None:
        """(root number, the folder names below it) of a folder filter, or None: the one parse that
        the grid, its folder links and its select share, so ``0/2019/`` and ``0/2019`` are one folder."""
        head, _, rest = value.strip("/").partition("/")
        if not head.isdigit() or not 0 <= int(head) < len(self.roots):
            return None
        parts = [p for p in rest.split("/") if p]
        if any(p in (".", "..") for p in parts):
            return None
        return int(head), parts

    def folder_crumbs(self, path: str) -> list[tuple[str, str]]:
        """(folder filter, name) of each folder from the watched one down to the one holding the photo
        at ``path``: the photo page links each level to the grid of that folder."""
        where = self.locate(path)
        if where is None:
            return []
        index, relative = where
        parts = relative.split("/")[:-1]
        return [(str(index), self.roots[index])] + [
            (f"{index}/{'/'.join(parts[:depth])}", parts[depth - 1]) for depth in range(1, len(parts) + 1)]
