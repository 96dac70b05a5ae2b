"""Is there anything to do for a file?  The one rule, used by the pipeline, the reconcile scan and
``export``.

A file is unchanged when its size and modification time are those the store recorded: its content
key, and everything derived from it, still hold.  Any write to a file (ours included: the key
survives it, see :mod:`tagwatch.formats`) changes the modification time, so a changed file is read
again, which costs a read and a hash, never an encode when the pixels are the same.
"""

from __future__ import annotations

import os

from .retry import access_cured
from .store import DONE, FAILED, UNTAGGED, FileRow


def is_unchanged(row: FileRow | None, st: os.stat_result) -> bool:
    """The file on disk is the one the store recorded (same size and modification time)."""
    return row is not None and (row.size, row.mtime_ns) == (st.st_size, st.st_mtime_ns)


def is_settled(row: FileRow | None, path: str, st: os.stat_result, *, fingerprint: str | None = None,
               retry_failed: bool = False) -> bool:
    """Nothing to do for ``path``: `tagwatch untag` set it aside, or it is unchanged and either tagged
    (with the tag list ``fingerprint`` when given) or failed for a reason a chmod has not cured.

    ``retry_failed`` (``scan``: a person asked) takes failed and set-aside files up again.  A failure
    for want of permission is tried again once a chmod has cured it (the daemon hears of it as an
    attribute event); any other stays failed until the file changes.
    """
    if row is None:
        return False
    if row.state == UNTAGGED:
        return not retry_failed
    if not is_unchanged(row, st):
        return False
    if row.state == DONE:
        return fingerprint is None or row.tagged_with == fingerprint
    if row.state == FAILED:
        return not retry_failed and not access_cured(row.error, path, st)
    return False
