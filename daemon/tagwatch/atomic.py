"""The one way tagwatch replaces a small file of its own: all of it or nothing, never half-written.

A hidden temporary file in the same folder receives the new content, gets its mode, is flushed and
fsynced, and is renamed over the target; then the folder is fsynced so the rename survives a power
cut.  Used for tag lists and overrides (``calibrate``), the daemon's state file and anything else we
write whole.  Photos are different: their write goes through exiftool and checks that nobody changed
the photo meanwhile (:meth:`tagwatch.metadata.KeywordWriter.apply`), but it ends with the same
:func:`fsync_folder`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path


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
