"""Replacing a file whole, and never a file we did not read.

Small files of our own (tag lists and overrides written by ``calibrate``, the daemon's state file, a
unit file) are replaced with :func:`write_atomic`: a hidden temporary file in the same folder
receives the new content, gets its mode, is flushed and fsynced, and is renamed over the target;
then the folder is fsynced so the rename survives a power cut.

Photos are different: a photo app may save a photo at any moment, also while tagwatch writes it.
Checking the file's stat and then renaming our new version over it leaves a window between the two
calls: a save landing there is replaced by a version built from the older file, and the person's
edit is gone (a black-box run with a photo app saving 1,283 times lost up to 3 edits that way).  No
stat check can close that window, so the rename itself must tell us what it replaced (:class:`Pin`):

- Linux ``renameat2(RENAME_EXCHANGE)`` swaps the two names in one step.  We then look at the file we
  swapped out.  If it is the version we read (same inode, which we hold open so it cannot be reused,
  same size and modification time), it is discarded and the write is done.  If it is not, a save
  landed first: we swap back, so the person's version is in place again, and nothing was lost.
- Where the call is missing (another OS) or the file system refuses it (EINVAL: some network and FUSE
  file systems), a stat check is followed by a plain rename.  Its residual race is the one above: a
  save landing in the microseconds between the check and the rename is replaced.  It is logged once
  per file system at INFO so a user can tell which protocol protects their photos.

Nothing here knows about photos or metadata; :mod:`tagwatch.metadata` builds the new version.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)

RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100
_MAX_SWAPS = 64  # each extra swap needs another save landing within microseconds: never seen
_UNSUPPORTED = (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP)


class Superseded(RuntimeError):
    """The file is no longer the version we read: another program saved it.  Nothing was replaced;
    the other program's version is in place."""


def _load_renameat2() -> object | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        function = libc.renameat2  # glibc >= 2.28, musl >= 1.2.3
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_renameat2 = _load_renameat2()
_told: set[int] = set()  # devices whose fallback has been logged


def exchange(a: Path, b: Path) -> bool:
    """Swap the names ``a`` and ``b`` atomically (both must exist); False where the platform or the
    file system cannot, and nothing happened.  Other failures raise OSError."""
    if _renameat2 is None:
        return False
    result = _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in _UNSUPPORTED:
        return False
    raise OSError(code, os.strerror(code), str(b))


def same_version(a: os.stat_result, b: os.stat_result) -> bool:
    """The same file (device and inode) with the same size and modification time."""
    return (a.st_dev, a.st_ino, a.st_size, a.st_mtime_ns) == (b.st_dev, b.st_ino, b.st_size, b.st_mtime_ns)


def _identity(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


class Pin:
    """The file at ``path`` held open from the moment it is checked to be the version ``read`` until
    it has been replaced: while we hold it its inode cannot be reused, so "same inode" stays proof
    that a file is the one we read.

    ``with Pin(path, read) as pin:`` raises :class:`Superseded` at once if the file is already
    another version; ``pin.fd`` reads the original (extended attributes, say); ``pin.replace(new)``
    puts ``new`` in its place.
    """

    def __init__(self, path: Path, read: os.stat_result) -> None:
        self.path, self.read = path, read
        self.fd = -1

    def __enter__(self) -> Pin:
        self.fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        if not same_version(os.fstat(self.fd), self.read):
            self.__exit__(None, None, None)
            raise Superseded(f"{self.path.name} changed since it was read")
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def replace(self, new: Path) -> os.stat_result:
        """Put ``new`` (same folder) at the pinned path if that still holds the version read; returns
        the stat of ``new`` as it now lies there.  :class:`Superseded` (``new`` discarded, the other
        program's version in place) if it does not."""
        ours = os.lstat(new)
        if not exchange(new, self.path):
            return self._check_and_rename(new, ours)
        out = os.lstat(new)  # what we swapped out
        if same_version(out, self.read):
            os.unlink(new)
            return ours  # a rename keeps size, modification time and inode
        log.debug("%s: another program saved it while we wrote it; putting its version back", self.path)
        self._put_back(new, {_identity(ours), _identity(out)})
        raise Superseded(f"{self.path.name} was saved by another program while its keywords were "
                         "being written; its version is kept")

    def _put_back(self, spare: Path, seen: set[tuple[int, int]]) -> None:
        """We swapped out a version another program had just saved: swap again until the newest
        version is in place.  After a swap, ``spare`` holds what was at the path just before; a file
        seen before (ours, or an older save) means nothing newer arrived, and it is discarded."""
        for _ in range(_MAX_SWAPS):
            try:
                swapped = exchange(spare, self.path)
            except FileNotFoundError:  # the path was deleted or moved away meanwhile: the save we
                swapped = False        # displaced must not be lost, put it back under its name
            if not swapped:
                try:
                    os.link(spare, self.path)
                except FileExistsError:
                    continue  # yet another save arrived: swap with it
                os.unlink(spare)
                return
            now = os.lstat(spare)
            if _identity(now) in seen:
                os.unlink(spare)
                return
            seen.add(_identity(now))
        kept = self.path.with_name(f"{self.path.stem} (saved during a tagwatch write){self.path.suffix}")
        os.replace(spare, kept)  # never seen in practice; keep the file rather than guess its place
        log.error("%s: another program saved it %d times during one write; one of its versions is "
                  "kept as %s", self.path, _MAX_SWAPS, kept.name)

    def _check_and_rename(self, new: Path, ours: os.stat_result) -> os.stat_result:
        """The fallback where exchanging names is impossible: check, then rename.  A save landing
        between the two calls is replaced (the residual race described in the module docstring)."""
        device = ours.st_dev
        if device not in _told:
            _told.add(device)
            log.info("%s: this system or file system cannot exchange two names atomically; a save by "
                     "another program in the microseconds before a write lands can be replaced",
                     self.path.parent)
        if not same_version(os.lstat(self.path), self.read):
            os.unlink(new)
            raise Superseded(f"{self.path.name} changed while its keywords were being written")
        os.replace(new, self.path)
        return ours


def create(new: Path, path: Path) -> os.stat_result:
    """Put a new file at ``path`` without replacing one that appeared meanwhile (:class:`Superseded`);
    returns its stat."""
    ours = os.lstat(new)
    try:
        os.link(new, path)
    except FileExistsError:
        raise Superseded(f"{path.name} was created by another program meanwhile") from None
    except OSError:  # file systems without hard links (FAT, some SMB mounts)
        if os.path.lexists(path):
            raise Superseded(f"{path.name} was created by another program meanwhile") from None
        os.replace(new, path)
        return ours
    os.unlink(new)
    return ours


@contextlib.contextmanager
def no_exchange() -> Iterator[None]:
    """Use the check-then-rename fallback, as on a system without ``renameat2`` (its tests)."""
    global _renameat2
    saved, _renameat2 = _renameat2, None
    try:
        yield
    finally:
        _renameat2 = saved


def fsync_folder(folder: Path | str) -> None:
    """Make a rename in ``folder`` durable; file systems that cannot sync a folder (some FUSE and
    network mounts answer EINVAL) have already done all they can."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def editing(path: Path) -> Iterator[None]:
    """Hold the edit of ``path`` (read, change, :func:`write_atomic`) alone among tagwatch's editors:
    the review page's requests run in threads at once, beside the daemon moving a correction along
    with its renamed photo, and each reads the whole file and writes it back, so an edit made between
    another's read and write was lost.  An exclusive ``flock`` on the file's folder (the file itself is
    replaced by each write, and may not exist yet): a lock of the open folder, nothing written."""
    fd = os.open(path.resolve().parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def write_atomic(path: Path, data: str | bytes, *, like: Path | None = None, mode: int | None = None,
                 durable: bool = True) -> None:
    """Replace ``path`` with ``data`` in one rename (a reader sees the old file or the new one).

    The new file keeps the mode of the one it replaces; a new file takes ``mode``, else that of
    ``like``, else 0600.  An explicit ``mode`` always wins.  A symbolic link has its target
    replaced.  ``durable=False`` skips the fsyncs, for a file rewritten every few seconds whose loss
    in a power cut costs nothing (the daemon's state file).
    """
    target = path.resolve()
    if mode is None:
        try:
            mode = (target if target.exists() or like is None else like).stat().st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o600
    fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            if durable:
                os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    if durable:
        fsync_folder(target.parent)
