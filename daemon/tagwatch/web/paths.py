"""Which photo a URL names: ``/photo/<root>/<path inside it>``, only inside the watched folders.

A URL never carries an absolute path: ``<root>`` is the watched folder's number and the rest a path
relative to it.  A path with ``..``, ``.`` or empty components, an absolute one, a hidden name, a
name that is not a photo, or one that reaches its file through a symbolic link (anywhere along the
way, the file itself included) names nothing: the page answers 404, the same as for a missing file,
so nothing outside the watched folders can be read or even probed.  Which names are skipped (hidden
ones, the config's ``exclude``) is the daemon's own rule, :class:`~tagwatch.watcher.PathFilter`: the
page lists and opens no folder or photo the daemon would not look at.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

from ..watcher import PathFilter, linked_to


def real(path: str) -> bool:
    """Is ``path`` reached through no symbolic link, itself included?  The daemon follows none, so
    the page reads nothing through one (a link dropped into a shared folder could name any file):
    the watcher's own rule, :func:`~tagwatch.watcher.linked_to`."""
    return linked_to(path) is None


class PhotoRoots:
    def __init__(self, roots: Sequence[Path], exclude: Sequence[str] = ()) -> None:
        self.roots = tuple(str(r).rstrip("/") or "/" for r in roots)
        self.filter = PathFilter(roots, exclude)  # the daemon's rule: hidden names, `exclude`

    def resolve(self, index: int, relative: str) -> str | None:
        """The absolute path of a photo inside watched folder ``index``, or None (404)."""
        if not 0 <= index < len(self.roots) or not relative or "\0" in relative:
            return None
        parts = relative.split("/")
        if relative.startswith("/") or any(p in ("", ".", "..") for p in parts):
            return None
        root = self.roots[index]
        path = os.path.join(root, *parts)
        if not self.filter.wanted(path):  # hidden, excluded or not a photo: the daemon never sees it
            return None
        try:
            if not real(path) or not stat.S_ISREG(os.lstat(path).st_mode):
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
        the grid, its folder links and its select share, so ``0/2019/`` and ``0/2019`` are one folder.
        A hidden or excluded name is no folder of the page's (the daemon skips it); one reached through
        a symbolic link parses, and :func:`real` keeps the grid from listing anything through it, so it
        gets the answer a missing folder gets."""
        head, _, rest = value.strip("/").partition("/")
        # "²".isdigit() is true and int("²") raises: ASCII digits only, and a number of sane length
        if not (head.isascii() and head.isdigit()) or len(head) > 6 or not 0 <= int(head) < len(self.roots):
            return None
        parts = [p for p in rest.split("/") if p]
        if "\0" in rest or any(p in (".", "..") for p in parts):
            return None
        if parts and not self.filter.wanted_dir(os.path.join(self.roots[int(head)], *parts)):
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
