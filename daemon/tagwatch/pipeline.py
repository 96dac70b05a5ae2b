"""One batch from paths to tagged files: the stages composed, in order, for the local engine.

    stat + is it settled? → read and key → cached vectors (and captions) → decode + encode (and
    caption) the misses → store → scores, caption keywords → tags (after overrides) → plan, record
    ahead, write, record done

The stages live in their own modules, as plain functions and classes with no threads
(:mod:`tagwatch.vectors`, :mod:`tagwatch.captions`, :mod:`tagwatch.tagger`, :mod:`tagwatch.writeback`);
this module wires them
for one batch, keeps the tag list in use, and turns whatever a stage raises for one file into that
file's :class:`~tagwatch.outcomes.Outcome`.  The decode pool is the only concurrency here, handed to
the stages as a ``map``; the thread that feeds batches is :mod:`tagwatch.worker`.  Whether a file
needs work at all is decided in one place, :func:`tagwatch.freshness.is_settled`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import stat
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import numpy as np

from . import listcache, logs, shared
from .captions import FINGERPRINT as CAPTIONS_FINGERPRINT
from .captions import Captions, Reading, caption
from .captions import from_config as captions_from_config
from .casefold import fold, folded
from .config import Config, PlacesConfig, TaggingConfig
from .formats import ImageError, IncompleteImage, UnsettledRaw
from .freshness import LostOnce, is_settled, is_unchanged
from .geotag import Places
from .imaging import Preprocess
from .metadata import KeywordWriter
from .outcomes import Outcome, Status, record_failure
from .overrides import (
    NO_OVERRIDE,
    Override,
    Overrides,
    OverridesError,
    follow_moves,
    follows,
    forget_deleted,
    forgets,
    load_overrides,
    names_files,
)
from .queue import Op
from .retry import INTERNAL_ERROR, TRANSIENT_ERRNOS, sqlite_locked, transient_reason
from .store import ADDED, DECLINED, DELETED, DONE, FAILED, USER, FileRow, Store, utf8_name
from .tagger import Expansion, TagMatrix, predict, thresholds
from .vectors import FileVanished, Photo, ReadFailed, VectorCache, decode_each, encode, read_key, text_vectors
from .vocabulary import Vocabulary
from .wording import counted
from .writeback import TagRules, Writeback, WriteJob, corrected, known_paths

if TYPE_CHECKING:
    from .encoder import LazyModel

log = logging.getLogger(__name__)

_PLACES = "places="  # the fingerprint's part for the [places] settings (last: the stale check reads it)
_MODE = "mode="  # the fingerprint's part for [tagging] mode: a file written under another is looked at
# the fingerprint's part for [write] hierarchy_prefix, where one is set (quoted: a prefix may hold '|',
# which separates the parts): a file written under another may hold our paths under that one
_PREFIX = "prefix="


def _prefix_written(tagged_with: str | None) -> str | None:
    """The hierarchy prefix's part of a file's recorded fingerprint, None where it has none."""
    return next((part for part in (tagged_with or "").split("|") if part.startswith(_PREFIX)), None)


NOT_UTF8 = "the file name is not valid UTF-8; rename the file"  # why such a photo is skipped


def listed_with(tagged_with: str | None) -> str | None:
    """The tag list's :meth:`Vocabulary.fingerprint` within a file's recorded fingerprint (its first
    part, see :meth:`Pipeline._refresh_fingerprint`): the review page's tag page tells by it which
    photos a re-score with the list as it is now has not reached yet."""
    return tagged_with.split("|", 1)[0] if tagged_with else None


def not_utf8_names(paths: Iterable[str]) -> list[str]:
    """Those of ``paths`` every command refuses, :data:`NOT_UTF8` their reason: the daemon and
    ``scan`` skip them here (:meth:`Pipeline.select`), ``export`` leaves them out by the same rule.
    ``isprintable`` first, as it is quick and no name decoded with surrogate escapes passes it."""
    return [p for p in paths if not p.isprintable() and not utf8_name(p)]


def _read(photo: Photo) -> ImageError | ReadFailed | None:
    """:func:`read_key` for a pool's ``map``: the problem instead of raising it."""
    try:
        read_key(photo)
    except (ImageError, ReadFailed) as exc:
        return exc
    return None


# -- the config's tag list and overrides, loaded one way for every caller -------------------------

def load_tag_list(config: Config, *, quiet: bool = False) -> Vocabulary:
    """The config's tag list, placed in WordNet as ``[tagging] expand`` asks (parsed once, then read
    back from the data folder while nothing it depends on changes: :mod:`tagwatch.listcache`), its
    warnings logged (unless ``quiet``: a caller that reloads it often and leaves the warnings to the
    daemon)."""
    vocabulary = listcache.load(config.tags, config.tagging, config.database.parent)
    for warning in () if quiet else vocabulary.warnings:
        log.warning("%s", warning)
    return vocabulary


def load_config_overrides(config: Config, *, quiet: bool = False, watching: bool = True) -> Overrides:
    """The config's overrides: none when it names no file, none (with a warning) while the named file
    does not exist yet; their warnings logged unless ``quiet``.  A file not there yet is news only
    to the daemon (``watching``), which takes it up once the review page creates it; to a one-shot
    command it is a debug line (a warning there repeated itself on every command)."""
    if config.overrides is None:
        return Overrides()
    overrides = load_overrides(config.overrides, config.watch)
    level = logging.WARNING if watching or os.path.lexists(config.overrides) else logging.DEBUG
    for warning in () if quiet else overrides.warnings:
        log.log(level, "%s", warning)
    return overrides


def pipeline_for(config: Config, store: Store, writer: KeywordWriter | None, *,
                 adopt: Callable[[Pipeline, Vocabulary], object] | None = None,
                 model: LazyModel | None = None, reader: KeywordWriter | None = None) -> Pipeline:
    """A pipeline with the config's model, overrides and tag list: what the commands and the review
    page (applying corrections with no daemon running) use.  ``adopt`` takes the tag list into the
    pipeline (default :meth:`Pipeline.use_vocabulary`; the commands draw a progress bar while its
    new prompts are encoded).  The model's child starts only if prompts need encoding.  ``model``
    replaces the config's child (the Ray engine's stations, with the same face).  ``reader``: what
    reads photos' metadata without a ``writer`` (a dry run's places)."""
    from .encoder import LazyModel  # at run time only: the stages never need the child's handle

    pipeline = Pipeline(store, model or LazyModel(config.model), writer, config.tagging, places=config.places,
                        reader=reader)
    try:
        pipeline.use_captions(captions_from_config(config, store, pipeline.model))
        pipeline.use_overrides(load_config_overrides(config, watching=False))
        vocabulary = load_tag_list(config)
        if adopt is None:
            pipeline.use_vocabulary(vocabulary)
        else:
            adopt(pipeline, vocabulary)
    except BaseException:
        pipeline.close()
        raise
    return pipeline


class Pipeline:
    """Turns paths into tagged files; the only place that encodes images or writes keywords."""

    def __init__(self, store: Store, model: LazyModel, writer: KeywordWriter | None,
                 tagging: TaggingConfig, decode_threads: int = 2, places: PlacesConfig | None = None,
                 reader: KeywordWriter | None = None) -> None:
        self.store, self.model, self.writer, self.tagging = store, model, writer, tagging
        # GPS → place keywords (off unless given: the daemon and the CLI pass the config's [places]);
        # the writeback runs it between reading a file's metadata and planning its write
        self.places = Places(places or PlacesConfig(enabled=False), store)
        self.vocabulary: Vocabulary | None = None
        self.tags: TagMatrix | None = None
        self.thresholds = np.zeros(0, np.float32)  # per tag, in tag order
        self._own_thresholds = False  # some tag has a threshold of its own (the log line of no tag says so)
        self.overrides = Overrides()
        self.fingerprint = ""
        self.cache = VectorCache(store, model.identity)
        self.captions: Captions | None = None  # open vocabulary, with [captions] enabled (use_captions)
        self.writeback = Writeback(store, writer, self.places, reader=reader)
        self._paths: dict[str, str] = {}  # keyword → hierarchical path, every tag and level above one
        self.expansion = Expansion()  # the levels above each tag that a prediction also writes
        self._pool = ThreadPoolExecutor(decode_threads, thread_name_prefix="tagwatch-decode")
        # RAWs whose sensor data runs past their end, seen to stop growing: path -> (size, mtime_ns)
        # then; the next read keys them as they are (formats.UnsettledRaw)
        self._stopped: dict[str, tuple[int, int]] = {}
        self.roots: tuple[str, ...] = ()  # set by the daemon: files must lie inside, reached directly
        self._deferred: list[Outcome] = []  # WAIT outcomes of a retag, for the worker to schedule

    def use_captions(self, captions: Captions | None) -> None:
        """Caption photos and add the caption's confirmed words to their keywords (None: stop)."""
        if self.captions is not None and self.captions is not captions:
            self.captions.close()
        self.captions = self.writeback.captions = captions
        if captions is not None and self.vocabulary is not None:
            captions.use_vocabulary(self.vocabulary)
        self._refresh_fingerprint()

    def close(self) -> None:
        """Stop the decode pool and the models' child processes (the pipeline is their only user)."""
        self._pool.shutdown(wait=True)
        self.model.close()
        if self.captions is not None:
            self.captions.close()

    def confine(self, roots: Iterable[Path]) -> None:
        """Tag and re-score only files inside ``roots`` (real paths) reached without passing a
        symbolic link: a folder link inside a watched root may point anywhere, and nothing outside is
        ours to write (a systemd unit lets the daemon write only there).  Photos a ``tagwatch scan``
        tagged elsewhere are brought up to date by the next scan of them."""
        self.roots = self.writeback.watched = tuple(str(r).rstrip("/") for r in roots)

    def _outside(self, path: str) -> bool:
        parent = os.path.dirname(path)
        inside = any(path.startswith(root + "/") for root in self.roots)
        return not inside or os.path.realpath(parent) != parent

    def take_deferred(self) -> list[Outcome]:
        """Files a retag could not write for a passing reason (a full disk): the caller retries them."""
        deferred, self._deferred = self._deferred, []
        return deferred

    # -- vocabulary ----------------------------------------------------------------------------

    def use_vocabulary(self, vocabulary: Vocabulary, tagging: TaggingConfig | None = None,
                       advance: Callable[[int], None] = lambda count: None) -> int:
        """Adopt a tag list, encoding only prompts without a cached text vector; returns how many
        (``advance`` is told as each part of them is encoded)."""
        tagging = tagging or self.tagging
        vectors, encoded = text_vectors(self.store, self.model, vocabulary.prompts(), advance)
        self.vocabulary, self.tagging = vocabulary, tagging
        self.tags = TagMatrix.build(vocabulary, vectors)
        self.thresholds = thresholds(vocabulary, tagging.threshold)
        self._own_thresholds = any(t.threshold not in (None, tagging.threshold) for t in vocabulary.tags)
        self._paths = vocabulary.hierarchy()
        self.expansion = Expansion.of(vocabulary, tagging)
        if self.captions is not None:
            self.captions.use_vocabulary(vocabulary)
        self._refresh_fingerprint()
        return encoded

    def text_vectors(self, prompts: Sequence[str]) -> dict[str, np.ndarray]:
        """The tagging model's text vectors of ``prompts``, from the store or encoded and stored."""
        return text_vectors(self.store, self.model, prompts)[0]

    def read_captions(self, photos: Sequence[tuple[str | None, np.ndarray | None]]) -> list[Reading | None]:
        """Each (caption, image vector)'s open-vocabulary keywords; None where captions are off or the
        photo has no caption."""
        out: list[Reading | None] = [None] * len(photos)
        if self.captions is None:
            return out
        known = [(n, text, vector) for n, (text, vector) in enumerate(photos)
                 if text is not None and vector is not None]
        readings = self.captions.readings([(text, vector) for _, text, vector in known],
                                          self.tagging.templates[0], self.text_vectors)
        for (n, _, _), reading in zip(known, readings, strict=True):
            out[n] = reading
        return out

    def use_overrides(self, overrides: Overrides) -> None:
        """Adopt an overrides file; the next ``retag`` re-applies it from cached vectors."""
        self.overrides = overrides
        self._refresh_fingerprint()

    def _refresh_fingerprint(self) -> None:
        if self.vocabulary is None:
            return
        # the tag list's first: listed_with reads it
        parts = [self.vocabulary.fingerprint(), f"{self.tagging.threshold:.6f}", str(self.tagging.top_k),
                 f"{_MODE}{self.tagging.mode}", self.model.identity]
        if self.prefix:  # none: the fingerprint of before the prefix was part of it
            parts.append(self._prefix_part(self.prefix))
        if self.expansion.levels:  # what expansion adds (none: the fingerprint of before expansion)
            parts.append(hashlib.sha256(repr(sorted(self.expansion.levels.items())).encode()).hexdigest()[:16])
        if self.overrides.rules:
            parts.append(self.overrides.fingerprint())
        if self.captions is not None:
            parts.append(self.captions.fingerprint())
        if self.places.enabled:
            parts.append(f"{_PLACES}{self.places.fingerprint}")
        self.fingerprint = "|".join(parts)

    @property
    def prefix(self) -> str:
        """The ``[write] hierarchy_prefix`` paths are written under ("" for none, and with no writer)."""
        reader = self.writeback.reader
        return reader.forms.prefix if reader is not None else ""

    @staticmethod
    def _prefix_part(prefix: str) -> str:
        return f"{_PREFIX}{quote(prefix, safe='')}"

    def use_prefix(self, prefix: str) -> None:
        """Write hierarchical paths under ``prefix`` from now on (the daemon's config reload): the
        next :meth:`retag` moves tagwatch's paths under the prefix of before to it
        (:meth:`_prefix_stale`)."""
        self.writeback.use_prefix(prefix)
        self._refresh_fingerprint()

    def _prefix_stale(self, rows: Sequence[FileRow]) -> set[int]:
        """Files last written under another hierarchy prefix than the one in use (their fingerprint
        says, none in it: no prefix) that hold keywords of tagwatch's or a correction's: their paths
        are moved to it even where their keywords stay the same.  None while the store recorded no
        other prefix (:meth:`Store.prefixes`): there is nothing to move then."""
        reader = self.writeback.reader
        if reader is None or not reader.forms.former:
            return set()
        current = self._prefix_part(self.prefix) if self.prefix else None
        other = [r for r in rows if _prefix_written(r.tagged_with) != current]
        return {r.id for r in other if self.store.ledger(r.id) or self.store.ledger(r.id, USER)}

    @property
    def rules(self) -> TagRules:
        """What a write needs of the tag list and settings in use."""
        return TagRules(self.tagging.mode, self.tagging.threshold, self._paths, self.fingerprint,
                        self.expansion.levels, own_thresholds=self._own_thresholds)

    def decide(self, path: str, tags: list[tuple[str, float]]) -> tuple[list[tuple[str, float]], Override]:
        """Predictions → what ``path`` should carry, after its overrides."""
        return corrected(self.overrides.for_path(path), tags)

    # -- one batch -----------------------------------------------------------------------------

    def select(self, paths: Iterable[str], *, dry_run: bool = False, retry_failed: bool = False,
               watched: bool = False) -> tuple[list[Photo], list[Outcome]]:
        """The first stage, on the store's side: which of ``paths`` need reading, as :class:`Photo`
        (stat taken), and the outcome of each that does not (settled, vanished, not a regular file,
        a name the store cannot hold).  Both engines start here.  ``watched``: files that look cut
        short are waited for (see :meth:`bad_file`), so none is taken as it is before it was seen to
        stop growing."""
        paths = list(dict.fromkeys(paths))
        outcomes: list[Outcome] = []
        unnamed = not_utf8_names(paths)
        for path in unnamed:  # the store keys files by UTF-8 path; such a name cannot be recorded
            reason = NOT_UTF8
            # a `skipped` event, as any other's; its path with the bytes UTF-8 lacks as \xff, unquoted
            said = path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            log.warning("%s: skipped: %s", logs.shown(path), reason,
                        extra={"event": "skipped", "path": said, "reason": reason})
            outcomes.append(Outcome(path, Status.FAILED, error=reason))
        paths = [p for p in paths if p not in unnamed]
        rows = self.store.files(paths)
        # the keys with a cached vector: a photo recorded tagged without one is not settled (freshness)
        vectored = self.store.vectored([r.key for r in rows.values() if r.state == DONE and r.key],
                                       self.cache.model_id)
        photos: list[Photo] = []
        reader = self.writeback.reader  # the dry run's too: it names the sidecar a scan would write
        # asked by is_settled, and below of a photo not settled: answered once (LostOnce)
        lost = LostOnce(partial(shared.sidecar_lost, reader, self.store)) if reader is not None else None
        for path in paths:
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                outcomes.append(self.writeback.gone(path, "file vanished before it could be read"))
                continue
            except OSError as exc:
                if exc.errno in TRANSIENT_ERRNOS:
                    outcomes.append(Outcome(path, Status.WAIT, error=f"cannot read: {exc.strerror}"))
                else:
                    outcomes.append(record_failure(self.store, path, None, f"cannot read: {exc.strerror}",
                                                   dry_run))
                continue
            if not stat.S_ISREG(st.st_mode) or (self.roots and self._outside(path)):
                reason = ("a symbolic link (not followed)" if stat.S_ISLNK(st.st_mode)
                          else "not a regular file" if not stat.S_ISREG(st.st_mode)
                          else "reached through a symbolic link to a folder (not followed)")
                outcomes.append(record_failure(self.store, path, st, reason, dry_run))
                continue
            row = rows.get(path)
            # `scan --take-over`: a photo tagged already may hold keywords of the list to take over
            if not self.writeback.take_over and is_settled(
                    row, path, st, fingerprint=self.fingerprint, retry_failed=retry_failed,
                    recorded=self.store.files, vectored=vectored, lost=lost):
                assert row is not None
                outcomes.append(self._settled(row, dry_run))
                continue
            if lost is not None and row is not None and not dry_run and self.writer is not None and (
                    lost(row, None)):
                self.writeback.sidecar_gone(row)  # its keywords go into a new one, not taken for declined
            stopped = self._stopped.pop(path, None)
            photos.append(Photo(path, st, settled=not watched or stopped == (st.st_size, st.st_mtime_ns)))
        return photos, outcomes

    def _settled(self, row: FileRow, dry_run: bool) -> Outcome:
        """A file with nothing to do; in a dry run, a tagged one's keywords and places as recorded
        (what it carries: their scores are not kept), so the dry run shows every photo's tags."""
        if row.state == FAILED:
            return Outcome(row.path, Status.UNCHANGED, error=row.error)
        if not dry_run or row.state != DONE or row.tags is None:
            return Outcome(row.path, Status.UNCHANGED)
        located = self.store.located([row.id]).get(row.id) if self.places.enabled else None
        # predicted, and kept out of the file
        declined = self.overrides.for_path(row.path).kept_out(self.store.ledger(row.id, DECLINED))
        tags = [(tag, math.nan) for tag in row.tags if fold(tag) not in declined]
        places = [k for k in (located.keywords if located else []) if fold(k) not in declined]
        # where they are, said of a photo carrying some (reading a JPEG's first bytes: not for none)
        where = self.writeback.where_keywords(row.path) if tags or places else "the file"
        return Outcome(row.path, Status.UNCHANGED, tags, places=places, where=where)

    def process(self, paths: Iterable[str], *, dry_run: bool = False, retry_failed: bool = False,
                wait_for_writers: Callable[[str, os.stat_result], bool] | None = None) -> list[Outcome]:
        """Tag ``paths`` (files); unchanged files already tagged with this tag list are skipped.

        ``retry_failed`` (``scan``: a person asked) retries files that failed before even if
        unchanged, and tags files that ``untag`` set aside.  ``wait_for_writers(path, stat)`` is
        asked about a truncated or empty file, which may still be being copied: True answers RETRY
        (the daemon queues it again) instead of failing it (see ``retry.StillWriting``).

        The stages one after the other, in this thread (and the decode pool): ``explain``, a
        re-score's changed files, the worker's file-by-file fallback, the tests.  The daemon and
        ``scan`` run the same stages overlapped (:class:`tagwatch.engine.Engine`).
        """
        assert self.tags is not None, "use_vocabulary() first"
        photos, outcomes = self.select(paths, dry_run=dry_run, retry_failed=retry_failed,
                                       watched=wait_for_writers is not None)
        for photo, problem in zip(photos, self._pool.map(_read, photos), strict=True):
            if problem is not None:
                outcomes.append(self.bad_file(photo, problem, dry_run, wait_for_writers))
        photos = [p for p in photos if p.key is not None]
        # Files whose vectors are cached go first, without the model: after a restart (a crash, a
        # reboot) they get their keywords while the model, seconds to import and load, is not yet
        # needed; it is loaded only for the rest.
        cached = set(self.cache.get({p.key for p in photos if p.key}))
        if self.captions is not None:  # and captioned
            cached &= set(self.captions.cache.get(cached))
        for group in ([p for p in photos if p.key in cached], [p for p in photos if p.key not in cached]):
            if group:
                self._tag(group, outcomes, dry_run)
        if not dry_run:
            self.remember_failures(outcomes)
        return outcomes

    def _tag(self, photos: list[Photo], outcomes: list[Outcome], dry_run: bool) -> None:
        """Vectors → predictions → keywords written and recorded, for files whose key is known."""
        assert self.tags is not None
        self._fill_vectors(photos, outcomes, dry_run)
        photos = [p for p in photos if p.vector is not None]
        if not photos:
            return
        readings = self.read_captions([(p.caption, p.vector) for p in photos])
        judged = self.judge(photos, readings, dry_run=dry_run)
        for photo, (tags, override), reading in zip(photos, judged, readings, strict=True):
            if dry_run:
                job = WriteJob(photo.path, photo.key, photo.stat, tags, override)
                outcomes.append(self.writeback.preview(job, self.rules))
            else:
                outcomes.append(self._finish(photo.path, photo.key, photo.stat, tags, override, reading))

    def judge(self, photos: Sequence[Photo], readings: Sequence[Reading | None] = (), *, dry_run: bool = False
              ) -> list[tuple[list[tuple[str, float]], Override]]:
        """Photos with vectors → what each should carry (scores, top-k, the confirmed caption keywords
        of its reading where ``readings`` has one, then its overrides)."""
        assert self.tags is not None
        if not dry_run:
            self._follow_moved(photos)
        predictions = self._expand([(p.path, p.key) for p in photos], predict(
            np.stack([p.vector for p in photos]), self.tags, self.thresholds, self.tagging.top_k))
        said = list(readings) or [None] * len(photos)
        return [self.decide(photo.path, predicted + (reading.keywords if reading else []))
                for photo, predicted, reading in zip(photos, predictions, said, strict=True)]

    def _expand(self, photos: Sequence[tuple[str, bytes | None]],
                predictions: list[list[tuple[str, float]]]) -> list[list[tuple[str, float]]]:
        """Each photo's (path, content key) predictions with the levels they imply, but none implied
        only by a tag a person took out of that photo: their red gives it no "colour"."""
        if not self.expansion.levels:
            return predictions
        declined = self.store.declined(dict(photos))
        return [self.expansion(predicted, self.overrides.for_path(path).kept_out(declined.get(path, ())))
                for (path, _), predicted in zip(photos, predictions, strict=True)]

    def _follow_moved(self, photos: Sequence[Photo]) -> None:
        """A photo moved where no rename ties it to its record (to another disk: a copy, then a
        delete; from one watched folder to another where the watcher could not pair the halves its
        two watches saw, see :class:`tagwatch.watcher._Handler`; or while no daemon ran) arrives as
        a deletion and a new file: a correction's rule naming a file of the same picture that is no
        longer on disk follows it here, before it is judged, as a rename's rule does.  A copy (the
        original still there) gets no rule."""
        if self.overrides.source is None or not names_files(self.overrides):
            return
        fresh = [p for p in photos if p.key is not None]
        rows = self.store.files(p.path for p in fresh)
        moves: list[tuple[str, str, bool]] = []
        replaced: list[str] = []
        for photo in fresh:
            row = rows.get(photo.path)
            if row is not None and row.state != DELETED:
                continue  # known here: not a photo that arrived from elsewhere
            if row is not None and row.key != photo.key:
                replaced.append(photo.path)  # another picture where a deleted photo was
            assert photo.key is not None
            for old in self.store.paths_of_picture(photo.key, photo.path):
                if not os.path.lexists(old) and follows(self.overrides, [(old, photo.path, False)]):
                    moves.append((old, photo.path, False))
                    break
        if replaced and forgets(self.overrides, replaced):
            self._forget(replaced)
        if moves:
            self._follow(moves)

    def _forget(self, paths: list[str]) -> None:
        """A correction is of the photo it was made on: a rule naming exactly a deleted photo, where
        another picture now arrives under its name (a camera's DSC_0100.jpg again), is taken out of
        the overrides file before that picture is judged, or it would get the old one's keywords (a
        person's name on someone else) as the person's, never taken out again."""
        source = self.overrides.source
        try:
            overrides, gone = forget_deleted(self.overrides, paths)
        except (OSError, OverridesError) as exc:
            log.warning("%s: a rule naming a deleted photo still names its path, where another picture "
                        "now is (%s); edit it by hand", source, getattr(exc, "strerror", None) or exc)
            return
        for rule in gone:
            said = "; ".join(f"{what} {', '.join(words)}" for what, words in (("add", rule.add),
                                                                            ("remove", rule.remove)) if words)
            log.info("%s: the rule for %s (%s) went with the deleted photo: another picture is there now",
                     source, rule.pattern, said, extra={"event": "rule-removed", "path": rule.pattern})
        if gone:
            self.use_overrides(overrides)

    def _finish(self, path: str, key: bytes | None, st: os.stat_result, tags: list[tuple[str, float]],
                override: Override = NO_OVERRIDE, reading: Reading | None = None, rescore: bool = False
                ) -> Outcome:
        """Write the predicted keywords (after overrides), with the caption's, and record the result."""
        job = WriteJob(path, key, st, tags, override, reading=reading, rescore=rescore)
        return self.writeback.finish(job, self.rules)

    def vector_for(self, path: str) -> np.ndarray:
        """The image vector of one file, from the cache or freshly encoded (``tagwatch explain``)."""
        vectors, errors = self.vectors_for([path])
        if path not in vectors:
            raise ImageError(errors.get(path, "could not be encoded"))
        return vectors[path]

    def vectors_for(self, paths: Sequence[str], batch_size: int = 32,
                    captions: dict[str, str] | None = None, keys: dict[str, bytes] | None = None
                    ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        """Image vectors of files, from the cache or freshly encoded and cached, ``batch_size`` at a
        time; records no file state and writes nothing (``explain``, ``calibrate``, evaluation).

        Returns the vectors by path and, for files that could not be used, the reason; with captions
        on, ``captions`` receives each photo's caption (cached, or generated and cached); ``keys``
        receives the content key of each photo with a vector (copies share one: ``calibrate``
        counts a picture once).
        """
        vectors: dict[str, np.ndarray] = {}
        errors: dict[str, str] = {}
        paths = list(dict.fromkeys(paths))
        for start in range(0, len(paths), batch_size):
            photos: list[Photo] = []
            for path in paths[start:start + batch_size]:
                try:
                    photos.append(Photo(path, os.stat(path)))
                except OSError as exc:
                    errors[path] = f"cannot read: {exc.strerror}"
                    log.warning("%s: skipped: %s", path, errors[path])
            for photo, problem in zip(photos, self._pool.map(_read, photos), strict=True):
                if problem is not None:
                    log.warning("%s: skipped: %s", photo.path, problem)
                    errors[photo.path] = str(problem)
            photos = [p for p in photos if p.key is not None]
            outcomes: list[Outcome] = []  # _fill_vectors logs each file it cannot use
            self._fill_vectors(photos, outcomes, dry_run=True, caption=captions is not None)
            errors.update((o.path, o.error or o.status) for o in outcomes)
            vectors.update((p.path, p.vector) for p in photos if p.vector is not None)
            if keys is not None:
                keys.update((p.path, p.key) for p in photos if p.vector is not None and p.key is not None)
            if captions is not None:
                captions.update((p.path, p.caption) for p in photos if p.caption is not None)
        return vectors, errors

    def _fill_vectors(self, photos: list[Photo], outcomes: list[Outcome], dry_run: bool,
                      caption: bool = True) -> None:
        """Cached vectors (and captions, unless not ``caption``) by key; decode and encode (and
        caption) the misses once per distinct key, and cache them."""
        keys = [p.key for p in photos if p.key]
        cached = self.cache.get(keys)
        captioning = caption and self.captions is not None
        captions = self.captions.cache.get(keys) if captioning and self.captions is not None else {}
        uncaptioned = {k for k in keys if k not in captions} if captioning else set()
        misses: dict[bytes, Photo] = {}
        for photo in photos:
            if photo.key in cached and photo.key not in uncaptioned:
                photo.data = None
            elif photo.key is not None:
                misses.setdefault(photo.key, photo)
        if misses:
            fresh = self._encode_misses(misses, cached, uncaptioned, captions, photos, outcomes, dry_run)
            if fresh:
                log.debug("storing %d vectors", len(fresh))
                cached.update(self.cache.put(fresh))  # score the stored form
        for photo in photos:
            if photo.key is not None:
                photo.vector, photo.caption = cached.get(photo.key), captions.get(photo.key)

    def _encode_misses(self, misses: dict[bytes, Photo], cached: Mapping[bytes, np.ndarray],
                       uncaptioned: set[bytes], captions: dict[bytes, str], photos: list[Photo],
                       outcomes: list[Outcome], dry_run: bool) -> dict[bytes, np.ndarray]:
        """Decode the misses for each model that needs them, caption the uncaptioned ones (caching the
        captions in ``captions``' place), encode the rest; returns the fresh vectors to store.  The
        tagging model is loaded only if some vector is missing (or it is the captioner too)."""
        to_caption = [k for k in misses if k in uncaptioned]
        shared = self.captions is not None and self.captions.shared
        to_encode = [k for k in misses if k not in cached and not (shared and k in uncaptioned)]
        with contextlib.ExitStack() as held:
            model = held.enter_context(self.model.using()) if to_encode or (shared and to_caption) else None
            captioner = None
            if to_caption:
                assert self.captions is not None
                captioner = model if shared else held.enter_context(self.captions.model.using())
            # One decode per preprocessing: the captioner's may differ from the tagging model's
            wanted: dict[Preprocess, list[bytes]] = {}
            if captioner is not None:
                wanted.setdefault(captioner.preprocess, []).extend(to_caption)
            if model is not None:
                wanted.setdefault(model.preprocess, []).extend(k for k in to_encode if k not in to_caption
                                                               or captioner is None
                                                               or captioner.preprocess != model.preprocess)
            arrays: dict[Preprocess, dict[bytes, np.ndarray]] = {}
            failed: set[bytes] = set()
            for n, (spec, spec_keys) in enumerate(wanted.items()):
                spec_keys = [k for k in dict.fromkeys(spec_keys) if k not in failed]
                log.debug("decoding %s", counted(len(spec_keys), "photo"))
                decoded = decode_each([misses[k] for k in spec_keys], spec, self._pool.map,
                                      keep=n < len(wanted) - 1)
                arrays[spec] = {}
                for key, result in zip(spec_keys, decoded, strict=True):
                    if isinstance(result, ImageError):
                        failed.add(key)
                        for photo in photos:
                            if photo.key == key:
                                outcomes.append(self.bad_file(photo, result, dry_run))
                                photo.key = None
                    else:
                        arrays[spec][key] = result
            for photo in misses.values():
                photo.data = None
            fresh: dict[bytes, np.ndarray] = {}
            if captioner is not None:
                assert self.captions is not None
                ready = arrays[captioner.preprocess]
                todo = [k for k in to_caption if k in ready]
                if todo:
                    log.debug("captioning %s", counted(len(todo), "photo"))
                    vectors, texts = caption(captioner, [ready[k] for k in todo],
                                             self.captions.cfg.max_tokens)
                    found = dict(zip(todo, texts, strict=True))
                    self.captions.cache.put(found)
                    captions.update(found)
                    if shared:  # the same pass gave the vectors
                        fresh.update((k, v) for k, v in zip(todo, vectors, strict=True) if k not in cached)
            if model is not None:
                ready = arrays[model.preprocess]
                todo = [k for k in to_encode if k in ready and k not in fresh]
                if todo:
                    log.debug("encoding %s", counted(len(todo), "photo"))
                    fresh.update(zip(todo, encode(model, [ready[k] for k in todo]), strict=True))
        return fresh

    def bad_file(self, photo: Photo, problem: ImageError | ReadFailed, dry_run: bool,
                 wait_for_writers: Callable[[str, os.stat_result], bool] | None = None) -> Outcome:
        """A file we could not use: retry if it is probably still being written, else record why.

        A RAW whose maker's byte counts may overshoot (:class:`UnsettledRaw`) is waited for alike;
        once it has stopped growing it is tried again at once, to be keyed as it is."""
        reason = str(problem)
        if wait_for_writers is not None and isinstance(problem, IncompleteImage):
            if wait_for_writers(photo.path, photo.stat):
                return Outcome(photo.path, Status.RETRY, error=reason)
            if isinstance(problem, UnsettledRaw) and not photo.settled:
                self._stopped[photo.path] = (photo.stat.st_size, photo.stat.st_mtime_ns)
                return Outcome(photo.path, Status.RETRY, error=reason)
        if isinstance(problem, ReadFailed) and problem.transient:
            return Outcome(photo.path, Status.WAIT, error=reason)
        if isinstance(problem, FileVanished):
            return self.writeback.gone(photo.path, reason)
        return record_failure(self.store, photo.path, photo.stat, reason, dry_run, photo.key)

    def give_up(self, path: str, exc: BaseException) -> Outcome:
        """Record that ``path`` could not be processed at all (an unexpected error: a bug, or the
        package upgraded under a running daemon), so this run does not loop on it; unlike a fault of
        the file's, it is tried again at the next start or scan (see freshness.is_settled)."""
        try:
            st: os.stat_result | None = os.lstat(path)
        except OSError:
            st = None
        return record_failure(self.store, path, st, f"{INTERNAL_ERROR}{type(exc).__name__}: {exc}")

    # -- tag-list edits ------------------------------------------------------------------------

    def _corrections_stale(self) -> set[int]:
        """Files holding a keyword a correction added under another path than the list now gives it
        (see :meth:`Writeback.plan_ahead`): a parent edit moves it as it moves ours."""
        added = self.store.corrections_paths()
        wanted = known_paths(self._paths, {keyword for _, keyword, _ in added})
        return {file_id for file_id, keyword, paths in added if paths != (wanted.get(keyword, keyword),)}

    def _paths_stale(self, stale: set[int], rows: Iterable[FileRow]) -> set[int]:
        """``stale`` (files :meth:`Store.stale_paths` and :meth:`_corrections_stale` name: a keyword
        under another path than the list gives it) less those of ``rows`` whose keywords are under
        the list's paths less the levels their correction rejects, as the write puts them
        (:func:`known_paths` with the removals): left so, a photo with a level rejected was read
        again at every re-scoring, for no change."""
        out = set(stale)
        for row in rows:
            removes = self.overrides.for_path(row.path).removes() if row.id in stale else set()
            if removes and not any(self._moved_paths(row.id, action, removes) for action in (ADDED, USER)):
                out.discard(row.id)
        return out

    def _moved_paths(self, file_id: int, action: str, removes: set[str]) -> bool:
        """Is a keyword of ``file_id``'s ledger (``action``: ours, or a correction's) under another
        path than the list gives it less the levels ``removes`` names?  ``stale_paths``' test for
        ours (the list's keywords, spelt exactly), ``_corrections_stale``'s for a correction's."""
        keywords = self.store.ledger(file_id, action)
        written = self.store.ledger_paths(file_id, action)
        wanted = known_paths(self._paths, keywords, removes)
        return any(written.get(k, (k,)) != (wanted.get(k, k),) for k in keywords
                   if action != ADDED or k in self._paths)

    # A re-scoring tells ``observe`` of the files it wrote or tried this many at a time: status showed
    # "0 tagged, 0 photos/min" for the 140 s a tag-list edit took to rewrite 6,093 photos, then all at once
    OBSERVED_EVERY = 50

    def retag(self, observe: Callable[[list[Outcome]], None] | None = None,
              queue_unvectored: bool = False, resumed: bool = False) -> tuple[int, int]:
        """Re-score every cached file tagged with an older tag list (inside the folders given to
        :meth:`confine`, if any); no image is encoded.

        Only files whose tag set changed are written, and files whose keywords could not be written
        before (a tag exiftool could not write makes every photo predicted with it fail; once the
        tag is fixed they must not wait for an edit of their own).  ``observe`` is told the outcome
        of each file written or tried (the daemon counts them in its status, as it counts any
        tagging; a deferred one is told when the worker retries it).  Returns (files re-scored,
        files written).

        Tagged files with no cached vector of the model in use (a ``db rebuild`` lost it, the config
        names another model) cannot be re-scored, and one line says how many, instead of leaving
        their old keywords in silently.  With ``queue_unvectored`` (the daemon, whose worker takes
        :meth:`take_deferred`) they are handed on to be encoded again; this runs at every start too,
        so a restart encodes them.  Elsewhere (the review page with no daemon running) nothing
        would take them, and the line says when they will be: the line said "queued" there.

        A write that meets another program's lock on the database raises: the photos not reached
        wait untried, and a re-score run again later starts where this one stopped (the photos it
        re-scored carry the new fingerprint); ``resumed``: this is that run, whose photos with no
        cached vector were said and handed on by the first (only reads come before that, which a
        lock does not stop).  A photo whose own disk fails for a while waits in
        :meth:`take_deferred`, as a photo of a batch does, and so does one that meets the
        database's other passing faults (an I/O error of a damaged page that only its rows touch).
        """
        assert self.tags is not None and self.vocabulary is not None
        rows = [(r, v) for r, v in self.store.tagged_files(self.model.identity, self.roots)
                if r.tagged_with != self.fingerprint]
        lost = [] if resumed else self.store.unvectored(self.model.identity, self.roots)
        if lost:
            then = ("queued to be encoded and tagged again" if queue_unvectored else
                    "encoded and tagged again when the daemon next starts, or by `tagwatch scan` of them")
            log.info("%s tagged before %s no cached vector of model %s (lost in a `db rebuild`, or the "
                     "model changed): not re-scored; %s", counted(len(lost), "photo"),
                     "has" if len(lost) == 1 else "have", self.model.identity, then)
            if queue_unvectored:
                self._deferred += [Outcome(path, Status.RETRY, error="no cached vector: to be encoded again")
                                   for path in lost]
        written = 0
        tried: list[Outcome] = []
        chunk = 4096
        # Files holding one of our keywords under a path its parent no longer gives it
        stale = (self.store.stale_paths(self._paths) | self._corrections_stale() if rows and (
            any(tag.parents for tag in self.vocabulary.tags) or self.store.has_ledger_paths()) else set())
        if stale and self.overrides.rules:  # a level a correction rejects is in none of its paths
            stale = self._paths_stale(stale, (r for r, _ in rows))
        if rows and self.places.enabled:
            stale |= self._places_stale([r for r, _ in rows]) | self._places_corrected([r for r, _ in rows])
        if rows and (self.captions is not None or self.tagging.mode != "append"):
            stale |= self._captions_stale([r for r, _ in rows])
        if rows:
            stale |= self._prefix_stale([r for r, _ in rows])
        other_mode = self._other_mode([r for r, _ in rows]) if self.tagging.mode != "append" else set()
        uncaptioned: list[str] = []
        try:  # the photos tried are counted however it ends: a write outside the photo's try (a
            # vanished file's, the chunk's unchanged photos') that meets the lock raises too
            for start in range(0, len(rows), chunk):
                part = rows[start:start + chunk]
                same: list[tuple[int, list[str]]] = []
                for (row, _), wanted in zip(part, self._wanted(part), strict=True):
                    if wanted is None:
                        uncaptioned.append(row.path)  # captions were turned on: its pixels are needed
                        continue
                    tags, override, reading = wanted
                    keywords = [k for k, _ in tags]
                    if row.state == FAILED and row.tagged_with is not None and row.id not in stale and (
                            set(keywords) == set(row.tags or ())):
                        # failed with these very keywords (see remember_failures): the file's own fault,
                        # which a re-score cannot cure; tried again when the file or its keywords change
                        same.append((row.id, keywords))
                        continue
                    # An override may have to take out or adopt a keyword of ours the set does not show,
                    # or write one a person had taken out of the file
                    touches_ours = bool(override) and bool(
                        folded((*override.add, *override.remove))
                        & folded(self.store.ledger(row.id))
                        or folded(override.add) & folded(self.store.ledger(row.id, DECLINED)))
                    moded = row.id in other_mode and self._mode_rewrites(row, keywords)
                    # append mode takes no keyword out: a set that only lost some (a tag deleted from the
                    # list) changes no file, and reading thousands of them to find that took 35 s
                    kept = set(keywords) <= set(row.tags or ()) if self.tagging.mode == "append" else \
                        set(keywords) == set(row.tags or ())
                    if row.state == DONE and kept and row.id not in stale and not touches_ours and not moded:
                        same.append((row.id, keywords))
                        continue
                    try:
                        st = os.lstat(row.path)
                    except FileNotFoundError:
                        self.writeback.gone(row.path, "file vanished")
                        continue
                    except OSError as exc:
                        log.warning("%s: skipped: cannot read: %s", row.path, exc.strerror)
                        continue
                    try:
                        if is_unchanged(row, st):
                            outcome = self._finish(row.path, row.key, st, tags, override, reading,
                                                   rescore=True)
                        else:  # changed on disk since we last saw it: treat it as new
                            outcome = self.process([row.path])[0]
                    except Exception as exc:  # a passing fault of this file's disk: this file waits
                        passing = transient_reason(exc)
                        if passing is None or sqlite_locked(exc):
                            # Another program's lock (a backup's) is every photo's: the re-score stops
                            # here, untried photos untouched (each waited out the lock in turn), and the
                            # daemon runs it again later (Worker.rescore_waits); the photos re-scored so
                            # far carry the new fingerprint and are not selected again.  The database's
                            # other passing faults (an I/O error of one damaged page, a full disk) wait
                            # per photo as any photo's: one stopping all held every photo after it
                            raise
                        outcome = Outcome(row.path, Status.WAIT, error=passing)
                    written += outcome.status == Status.TAGGED and outcome.wrote
                    if outcome.status == Status.WAIT:
                        self._deferred.append(outcome)
                    else:
                        self.remember_failures([outcome])
                        tried.append(outcome)
                    if observe is not None and len(tried) >= self.OBSERVED_EVERY:  # status moves as it goes
                        observe(tried)
                        tried = []
                self.store.update_predictions(same, self.fingerprint)
            # Captions just turned on: these need their pixels again, so they go through the queue in
            # ordinary batches (the worker queues RETRY outcomes) instead of holding up this re-scoring.
            self._deferred += [Outcome(path, Status.RETRY, error="to be captioned") for path in uncaptioned]
        finally:
            if observe is not None and tried:
                observe(tried)
        return len(rows), written

    def _wanted(self, part: Sequence[tuple[FileRow, np.ndarray]]
                ) -> list[tuple[list[tuple[str, float]], Override, Reading | None] | None]:
        """What each recorded file with its cached vector should carry now (tags after overrides, the
        override, the caption's reading); None where captions are on and it has none yet."""
        assert self.tags is not None
        predictions = self._expand([(r.path, r.key) for r, _ in part], predict(
            np.stack([v for _, v in part]), self.tags, self.thresholds, self.tagging.top_k))
        captions = self.captions.cache.get(r.key for r, _ in part if r.key) if self.captions else {}
        readings = self.read_captions([(captions.get(r.key) if r.key else None, v) for r, v in part])
        wanted: list[tuple[list[tuple[str, float]], Override, Reading | None] | None] = []
        for (row, _), predicted, reading in zip(part, predictions, readings, strict=True):
            if self.captions is not None and reading is None:
                wanted.append(None)
                continue
            tags, override = self.decide(row.path, predicted + (reading.keywords if reading else []))
            wanted.append((tags, override, reading))
        return wanted

    def remember_failures(self, outcomes: Iterable[Outcome]) -> None:
        """Stamp each file that just failed, and has a cached vector, with the tag list and settings
        it failed under and the keywords it was to get.  :meth:`retag` tries a failed file again
        only where those keywords change (a tag exiftool could not write fails every photo given
        it, until the list is fixed), not at every save of an unchanged list, SIGHUP and start:
        a PNG named .jpg, or a hard-linked pair, was tried and reported again at each."""
        failed = [o.path for o in outcomes if o.status == Status.FAILED]
        if not failed or self.tags is None:
            return
        rows = [r for r in self.store.files(failed).values()
                if r.state == FAILED and r.key is not None and r.tagged_with != self.fingerprint]
        vectors = self.cache.get({r.key for r in rows if r.key is not None}) if rows else {}
        part = [(r, vectors[r.key]) for r in rows if r.key in vectors]
        if not part:
            return
        self.store.update_predictions([(row.id, [k for k, _ in wanted[0]])
                                       for (row, _), wanted in zip(part, self._wanted(part), strict=True)
                                       if wanted is not None], self.fingerprint)

    def _other_mode(self, rows: Sequence[FileRow]) -> set[int]:
        """Files written under another ``[tagging] mode`` than the one in use, as their fingerprint
        says (one recorded before the mode was part of it is taken as written under this one)."""
        current = f"{_MODE}{self.tagging.mode}"
        return {r.id for r in rows if _MODE in (r.tagged_with or "")
                and current not in (r.tagged_with or "").split("|")}

    def _mode_rewrites(self, row: FileRow, keywords: list[str]) -> bool:
        """Must a file written under another mode be rewritten under this one, its predictions the
        same?  sync: where the ledger holds keywords of ours no longer predicted, which it takes
        out; overwrite: always (only the file says which of a person's keywords it holds)."""
        if self.tagging.mode == "overwrite":
            return True
        return self.tagging.mode == "sync" and bool(set(self.store.ledger(row.id)) - set(keywords))

    def _captions_stale(self, rows: Sequence[FileRow]) -> set[int]:
        """Files tagged under other ``[captions]`` settings: rewritten even where their keywords stay
        the same, since their description may have to come (or go).  With captions turned off, those
        tagged with them on: sync and overwrite take our description out, as our caption keywords."""
        if self.captions is None:
            return {r.id for r in rows if f"|{CAPTIONS_FINGERPRINT}" in (r.tagged_with or "")}
        current = self.captions.fingerprint()
        return {r.id for r in rows if current not in (r.tagged_with or "")}

    def _places_stale(self, rows: Sequence[FileRow]) -> set[int]:
        """Files whose places were decided under other ``[places]`` settings (or never: tagged before
        places existed) and that have, or may have, coordinates: their GPS is read again."""
        current = f"{_PLACES}{self.places.fingerprint}"
        changed = {r.id for r in rows if not (r.tagged_with or "").endswith(current)}
        return changed & self.store.maybe_located() if changed else set()

    def _places_corrected(self, rows: Sequence[FileRow]) -> set[int]:
        """Files whose place keywords as last written are not those their corrections leave now
        (:meth:`Places.outdated`): a ✕ on a place, or its ↺, changes no predicted tag, and the
        re-score it starts rewrote nothing ("re-scored 13 photos, rewrote 0").  Only files that had
        coordinates are looked at, all read in one query."""
        placed = self.store.placed()
        return {r.id for r in rows if r.id in placed
                and self.places.outdated(placed[r.id], self.overrides.for_path(r.path).removes())}

    # -- untag, renames and deletions ----------------------------------------------------------

    def untag(self, path: str) -> Outcome:
        """Take out exactly the keywords tagwatch added; see :meth:`Writeback.untag`."""
        return self.writeback.untag(path)

    def apply(self, ops: Sequence[Op], waiting: list[tuple[Op, str]] | None = None) -> list[str]:
        """Apply renames and deletions to the store, and renames to the overrides' rules naming one
        file; returns moved paths the store did not know.  A rule follows a half-seen move only to
        the photo it was (a correction of a photo gone never names another picture of its name).
        ``waiting``: see :meth:`Writeback.apply_ops`."""
        unknown, applied = self.writeback.apply_ops(ops, waiting)
        moves = [(op.src, op.dst, op.is_dir) for op in applied]
        if moves and self.overrides.source is not None and follows(self.overrides, moves):
            self._follow(moves)
        return unknown

    def _follow(self, moves: list[tuple[str, str, bool]]) -> None:
        """A correction of one photo (the review page keys it by the photo's path) must not be lost
        when the photo is renamed: its rule is moved along in the overrides file, and used at once."""
        source = self.overrides.source
        try:
            overrides, moved = follow_moves(self.overrides, moves)
        except (OSError, OverridesError) as exc:
            log.warning("%s: a rule naming a renamed photo still names its old path (%s); edit it by hand",
                        source, getattr(exc, "strerror", None) or exc)
            return
        for old, new in moved:
            log.info("%s: the rule for %s now names %s (renamed)", source, old, new,
                     extra={"event": "rule-moved", "path": new, "from": old})
        if moved:
            self.use_overrides(overrides)
