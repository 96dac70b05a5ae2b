"""What happened to each file: the :class:`Status` of an :class:`Outcome`, and recording a file that
could not be used.

Every stage that gives up on a file says so through these: the worker schedules retries by status,
``tagwatch status`` counts them, ``scan`` prints them.  A failure is logged with the file and the
reason on one line, and recorded in the store so it is not tried again until the file changes.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from enum import StrEnum

from .store import FAILED, Store

log = logging.getLogger(__name__)


class Status(StrEnum):
    """How one file's turn ended."""

    TAGGED = "tagged"  # keywords decided and written (or already in the file)
    UNCHANGED = "unchanged"  # nothing to do: tagged with this tag list, failed before, or set aside
    FAILED = "failed"  # unusable until it changes (recorded, with the reason)
    GONE = "gone"  # vanished before it could be handled
    RETRY = "retry"  # try again soon: still being written, or changed under our write
    WAIT = "wait"  # a passing disk or network problem: try again after a pause (see retry.Backoff)
    UNTAGGED = "untagged"  # `tagwatch untag` took our keywords out


@dataclass
class Outcome:
    path: str
    status: Status
    tags: list[tuple[str, float]] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    error: str | None = None
    wrote: bool = False  # the file was rewritten (keywords added, taken out or re-spelled)
    places: list[str] = field(default_factory=list)  # a dry run's: the place keywords it would carry
    overridden: list[str] = field(default_factory=list)  # predictions an override removes (took out)
    dropping: list[str] = field(default_factory=list)  # a dry run's: ours sync mode takes out, unpredicted
    overwriting: list[str] = field(default_factory=list)  # a dry run's: a person's overwrite takes out
    where: str = "the file"  # a dry run's: where its keywords are (wording.held_in): "its sidecar" for a HEIC


def record_failure(store: Store, path: str, st: os.stat_result | None, reason: str, dry_run: bool = False,
                   key: bytes | None = None) -> Outcome:
    """Record ``path`` failed (unless a dry run) and log why it cannot be used: recorded first, so
    that a store that cannot take the record (its disk full) logs no line at each attempt."""
    if not dry_run:
        store.record_file(path, key=key, size=st.st_size if st else None,
                          mtime_ns=st.st_mtime_ns if st else None, state=FAILED, error=reason)
    log.warning("%s: skipped: %s", path, reason, extra={"event": "skipped", "path": path, "reason": reason})
    return Outcome(path, Status.FAILED, error=reason)


def record_gone(store: Store, path: str, reason: str) -> Outcome:
    """Log and record that ``path`` vanished before we were done with it: deleted, or renamed (an
    ingest script's rename a moment after the drop), when the new name is tagged: news, not a
    warning, which sent a person looking for a photo that was tagged under its new name."""
    log.info("%s: gone: %s (deleted or renamed)", path, reason, extra={"event": "gone", "path": path,
                                                                       "reason": reason})
    store.mark_deleted(path)
    return Outcome(path, Status.GONE, error=reason)
