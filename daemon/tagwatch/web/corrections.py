"""A person's corrections, written into the files tagwatch already reads, then applied.

Rejecting one of our tags on a photo, or adding one, edits ``overrides.toml`` (the person owns those
keywords, as with any override: see :func:`tagwatch.overrides.correct`); setting a tag's threshold
edits the tag list exactly as ``tagwatch calibrate`` does (:func:`tagwatch.calibrate.save_thresholds`).
The files are the record: nothing of a correction lives only in the database.

Who then rewrites the photos: a running daemon watches both files and re-applies them from cached
vectors, like any edit.  With no daemon running, the page does the same itself (:class:`Applier`):
it takes the daemon's lock, so a daemon started meanwhile waits for it (and one that cannot get the
lock within half a second stops with "another tagwatch is running", which systemd's restart cures),
re-scores every cached photo with the new files and rewrites those whose keywords change, then lets
the lock go.  No image is ever encoded for a correction.
"""

from __future__ import annotations

import errno
import getpass
import logging
import os
import threading
import time
from pathlib import Path

from ..atomic import editing, write_atomic
from ..calibrate import CalibrationError, number, same_threshold, save_thresholds
from ..config import Config
from ..exiftool import MetadataError
from ..metadata import ExifTool, KeywordWriter
from ..overrides import OverridesError, correct
from ..pipeline import pipeline_for
from ..retry import Backoff, transient_reason
from ..scoring import tag_thresholds
from ..status import AlreadyRunning, hold_lock, running_daemon
from ..store import Store, StoreError
from ..vocabulary import Vocabulary, VocabularyError, read_list_file
from ..wording import counted

log = logging.getLogger(__name__)

OVERRIDES_HEADER = ("# Corrections: keywords to add to or remove from photos (see the overrides section of\n"
                    "# tagwatch's documentation).  The review page appends one rule per corrected photo.\n")


class CorrectionError(ValueError):
    """A correction could not be written; the message says why and what to do."""


SERVICE = ("if tagwatch runs as a systemd service whose unit an older tagwatch wrote, its sandbox keeps "
           "that folder read-only: run `tagwatch service install` again, then `systemctl --user "
           "daemon-reload` and restart it (docs/service.md, Upgrading)")


def unwritable(what: str, target: Path, exc: OSError) -> CorrectionError:
    """The refusal of a save the file system would not take, in one line: the file, the cause, what
    to do.  Under an older systemd unit (``ProtectSystem=strict`` without the config folder in
    ``ReadWritePaths``) every correction answered a bare "Internal Server Error", a traceback in the
    log, and the person could not tell that nothing had been saved."""
    folder = target.parent
    cause = (exc.strerror or str(exc)).lower() if exc.errno is None else os.strerror(exc.errno).lower()
    if exc.errno == errno.EROFS:
        todo = f"{SERVICE[0].upper()}{SERVICE[1:]}; else mount {folder} read-write"
    elif exc.errno in (errno.EACCES, errno.EPERM):
        todo = f"Let the user the review page runs as ({_user()}) write to {folder}; {SERVICE}"
    else:
        todo = "Fix that, then save it again"
    return CorrectionError(f"Nothing was saved: cannot write {what} {target}: {cause} (in its folder "
                           f"{folder}). {todo}.")


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a uid without a name (a container): the number says it
        return f"uid {os.getuid()}"


def write_correction(config: Config, path: str, keyword: str, action: str) -> Path:
    """Record ``action`` (add, remove, undo) of ``keyword`` for the photo at ``path`` in the
    overrides file; returns the file.  Creates the file (0600) when the config names one that does
    not exist yet."""
    target = config.overrides
    if target is None:
        where = config.source or "the config"
        raise CorrectionError(f"corrections are kept in an overrides file, and {where} names none: add "
                              f'overrides = "overrides.toml" to it (beside tags) and restart tagwatch')
    try:
        with editing(target):  # two corrections at once (the page's threads, a rename's rule) both stay
            text = (read_list_file(target, "overrides file", CorrectionError) if target.exists()
                    else OVERRIDES_HEADER)
            try:
                result = correct(text, target, config.watch, path, keyword, action)
            except (OverridesError, VocabularyError) as exc:
                raise CorrectionError(str(exc)) from None
            if result != text or not target.exists():
                write_atomic(target, result)  # a temporary file renamed over it: all of it, or nothing
    except OSError as exc:
        raise unwritable("the overrides file", target, exc) from None
    return target


def write_threshold(config: Config, vocabulary: Vocabulary, keyword: str, threshold: float) -> str:
    """A tag's threshold into the tag list, as ``tagwatch calibrate`` writes it; what to tell.

    The value the tag already has (:func:`tagwatch.calibrate.same_threshold`, the rule calibrate
    follows too) writes nothing: saving a tag that follows ``[tagging] threshold`` would otherwise
    pin today's global value into the list, and it would stop following the config.
    """
    if not -1.0 <= threshold <= 1.0:
        raise CorrectionError(f"a threshold is a cosine similarity in [-1, 1], got {threshold}")
    tag = vocabulary.tags[vocabulary.keywords.index(keyword)]
    in_use = float(tag_thresholds([tag], config.tagging.threshold)[0])
    if same_threshold(threshold, in_use):
        whose = (f"its own, in {config.tags.name}" if tag.threshold is not None
                 else "the global one, [tagging] threshold")
        return f"threshold of {keyword!r} unchanged: {number(in_use)} ({whose}); nothing written"
    try:
        return save_thresholds(config, vocabulary.keywords, {keyword: threshold})
    except CalibrationError as exc:
        raise CorrectionError(str(exc)) from None
    except OSError as exc:  # a plain list's threshold goes into a .toml beside it: the same folder
        raise unwritable("the tag list", config.tags, exc) from None


def apply_now(config: Config) -> tuple[int, int]:
    """Re-apply the tag list and overrides to every cached photo, as a daemon does after an edit
    (no image encoded; the model's child starts only for prompts never encoded).  The caller holds
    the daemon's lock.  Returns (photos re-scored, photos rewritten).  Every write waits
    ``config.database_lock_wait`` for another program's lock (a backup's: said soon, tried again later), the
    new prompts' vectors too: stored at the pipeline's start, they waited SQLite's 30 s each part."""
    store = Store(config.database)
    exiftool = ExifTool()
    try:
        with store.lock_wait(config.database_lock_wait):
            pipeline = pipeline_for(config, store, KeywordWriter(exiftool, config.write))
            try:
                pipeline.confine(config.watch)  # as the daemon: never a file reached through a folder link
                return pipeline.retag()
            finally:
                pipeline.close()
    finally:
        exiftool.close()
        store.close()


APPLY = "apply"  # the Applier's one key in its Backoff


class Applier:
    """Applies corrections when no daemon does, one run at a time, in a thread of its own (a POST
    answers at once; the photo page shows the correction as pending until exiftool reads it back)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._wanted = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tagwatch-web-apply", daemon=True)
        self.last_error: str | None = None
        self.runs = 0

    def start(self) -> None:
        self._thread.start()

    def request(self) -> None:
        self._wanted.set()

    def stop(self) -> None:
        self._stopped.set()
        self._wanted.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        backoff, again = Backoff(), None  # a passing fault (a backup's lock) is tried again by itself
        while True:
            self._wanted.wait(again)
            if self._stopped.is_set():
                return
            self._wanted.clear()
            again = None
            if running_daemon(self.config.database) is not None:
                continue  # the daemon watches the files and applies them itself
            try:
                fd = hold_lock(self.config.database)
            except AlreadyRunning:
                continue  # a daemon started meanwhile: it applies them at its start
            waited = backoff.tries(APPLY)  # tries that met a passing fault, this one's before it
            try:
                checked, written = apply_now(self.config)
                self.last_error = None
                backoff.clear(APPLY)
                log.info("review page: no daemon running, so applied the corrections itself: re-scored "
                         "%s, rewrote %d%s", counted(checked, "photo"), written,
                         f" (applied now, after {counted(waited, 'try', 'tries')} that had to wait)"
                         if waited else "")
            except Exception as exc:  # sorted below: a passing fault, ours to say, or a bug
                passing = transient_reason(exc)
                if passing is not None:  # another program holds the database, a disk full for now...
                    again = backoff.next(APPLY)
                    # the banner says when, not "in 256 s" for the whole pause
                    self.last_error = (f"{passing}; tried again by itself, next at "
                                       f"{time.strftime('%H:%M:%S', time.localtime(time.time() + again))}")
                    if not waited:  # said once while it lasts, as the daemon says it; and when it ends
                        log.warning("review page: corrections not applied yet: %s; tried again by itself, "
                                    "backing off to once every %g s, until they are", passing, backoff.cap)
                    else:
                        log.debug("review page: corrections still not applied (try %d): %s", waited + 1,
                                  passing)
                else:
                    backoff.clear(APPLY)  # the next passing fault is news again, its pauses short
                    if isinstance(exc, (StoreError, MetadataError, OverridesError, VocabularyError, OSError)):
                        self.last_error = str(exc)
                        log.error("review page: corrections not applied: %s", exc)
                    else:  # a bug here must not end the page's thread
                        self.last_error = f"{type(exc).__name__}: {exc}"
                        log.exception("review page: corrections not applied")
            finally:
                os.close(fd)
                self.runs += 1
