"""The batching queue, and the worker that runs key → cache → decode → encode → tag → write.

The queue holds paths, never pixels: a burst of 10,000 new files costs 10,000 short strings, while
decoded images exist only for the batch in hand.  Renames and deletions travel through the same
queue as operations, so the store sees them in the order they happened relative to tagging.
"""

from __future__ import annotations

import glob
import hashlib
import heapq
import itertools
import logging
import os
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import TaggingConfig
from .faults import TRANSIENT_ERRNOS, Backoff, access_cured, transient_reason
from .imaging import prepare
from .keys import ImageError, content_key
from .metadata import FileChanged, KeywordWriter, MetadataError
from .model import LazyModel
from .overrides import NO_OVERRIDE, Override, Overrides
from .store import DELETED, DONE, FAILED, PENDING, REMOVED, UNTAGGED, USER, FileRow, Store
from .tagger import Expansion, TagMatrix, predict, thresholds
from .vocabulary import Vocabulary

log = logging.getLogger(__name__)

# Outcome statuses
TAGGED, UNCHANGED, FAILED_, GONE, RETRY = "tagged", "unchanged", "failed", "gone", "retry"
UNTAGGED_ = "untagged"
WAIT = "wait"  # a passing disk or network problem: try again after a pause (see faults.Backoff)
_RECENT_S = 2.0  # a truncated file younger than this is probably still being written
_MAX_RETRIES = 5


@dataclass(frozen=True)
class Move:
    src: str
    dst: str
    is_dir: bool = False


@dataclass(frozen=True)
class Delete:
    path: str
    is_dir: bool = False


Op = Move | Delete


@dataclass
class Batch:
    ops: list[Op] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.ops or self.paths)


class BatchQueue:
    """Deduplicating, debouncing, bounded queue of paths that hands out batches.

    ``put`` (re)starts a path's settle time: a file still being written keeps receiving events and
    is not handed out until they stop.  ``get`` returns ``size`` ready paths at once; fewer when no
    other file is still settling (a lone dropped photo goes straight through) or once the oldest
    ready path has waited ``max_wait`` seconds for company.
    """

    def __init__(self, size: int, max_wait: float, settle: float, maxsize: int = 100_000) -> None:
        self.size, self.max_wait, self.settle, self.maxsize = size, max_wait, settle, maxsize
        self._due: dict[str, float] = {}  # waiting to settle: path → due time
        self._heap: list[tuple[float, int, str]] = []
        self._ready: OrderedDict[str, float] = OrderedDict()  # settled: path → time it became ready
        self._ops: list[Op] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._closed = False
        self._woken = False

    def __len__(self) -> int:
        with self._cond:
            return len(self._due) + len(self._ready)

    def put(self, path: str, delay: float | None = None, force: bool = False) -> None:
        """Queue ``path`` to be processed once ``delay`` (default: the settle time) has passed quietly.

        A full queue makes producers wait; ``force`` (the worker re-queueing, which must never wait
        on itself) goes over the bound.
        """
        due = time.monotonic() + (self.settle if delay is None else delay)
        with self._cond:
            while (not force and len(self._due) + len(self._ready) >= self.maxsize and path not in self._due
                   and path not in self._ready and not self._closed):
                self._cond.wait()
            if self._closed:
                return
            self._ready.pop(path, None)
            self._due[path] = due
            heapq.heappush(self._heap, (due, next(self._seq), path))
            self._cond.notify_all()

    def op(self, operation: Op) -> None:
        """Queue a rename or deletion; a queued path that moved is queued under its new name."""
        with self._cond:
            if isinstance(operation, Move):
                for pending in (self._due, self._ready):
                    for path in [p for p in pending if p == operation.src or (
                            operation.is_dir and p.startswith(operation.src.rstrip("/") + "/"))]:
                        value = pending.pop(path)
                        new = operation.dst + path[len(operation.src):]
                        pending[new] = value
                        if pending is self._due:
                            heapq.heappush(self._heap, (value, next(self._seq), new))
            else:
                for pending in (self._due, self._ready):
                    for path in [p for p in pending if p == operation.path or (
                            operation.is_dir and p.startswith(operation.path.rstrip("/") + "/"))]:
                        del pending[path]
            self._ops.append(operation)
            self._cond.notify_all()

    def wake(self) -> None:
        """Make a waiting ``get`` return now (an empty batch) so the worker can look at its flags."""
        with self._cond:
            self._woken = True
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _promote(self, now: float) -> None:
        while self._heap and self._heap[0][0] <= now:
            due, _, path = heapq.heappop(self._heap)
            if self._due.get(path) == due:
                del self._due[path]
                self._ready[path] = due

    def get(self, timeout: float | None = None) -> Batch | None:
        """The next batch; an empty one on timeout or wake; None once closed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if self._closed:
                    return None
                now = time.monotonic()
                self._promote(now)
                oldest = next(iter(self._ready.values()), None)
                lone_or_waited = oldest is not None and (not self._due or now >= oldest + self.max_wait)
                if self._ops or len(self._ready) >= self.size or lone_or_waited:
                    batch = Batch(self._ops, [])
                    self._ops = []
                    while self._ready and len(batch.paths) < self.size:
                        batch.paths.append(self._ready.popitem(last=False)[0])
                    self._cond.notify_all()  # room for blocked producers
                    return batch
                if self._woken or (deadline is not None and now >= deadline):
                    self._woken = False
                    return Batch()
                wake_at = [t for t in (deadline, oldest + self.max_wait if oldest is not None else None,
                                       self._heap[0][0] if self._heap else None) if t is not None]
                self._cond.wait(max(0.0, min(wake_at) - now) if wake_at else None)


@dataclass
class Outcome:
    path: str
    status: str
    tags: list[tuple[str, float]] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class _Item:
    path: str
    stat: os.stat_result
    row: FileRow | None
    data: bytes | None = None
    key: bytes | None = None
    vector: np.ndarray | None = None
    transient: bool = False  # the read failed for a reason of the storage, not of the file


def _utf8(path: str) -> bool:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _same_stat(row: FileRow | None, st: os.stat_result) -> bool:
    return row is not None and (row.size, row.mtime_ns) == (st.st_size, st.st_mtime_ns)


class Pipeline:
    """Turns paths into tagged files; the only place that encodes images or writes keywords."""

    def __init__(self, store: Store, model: LazyModel, writer: KeywordWriter | None,
                 tagging: TaggingConfig, decode_threads: int = 2) -> None:
        self.store, self.model, self.writer, self.tagging = store, model, writer, tagging
        self.vocabulary: Vocabulary | None = None
        self.tags: TagMatrix | None = None
        self.thresholds = np.zeros(0, np.float32)  # per tag, in tag order
        self.overrides = Overrides()
        self.fingerprint = ""
        self._paths: dict[str, str] = {}  # keyword → hierarchical path, every tag and level above one
        self.expansion = Expansion()
        self._pool = ThreadPoolExecutor(decode_threads, thread_name_prefix="tagwatch-decode")
        self._retries: dict[str, int] = {}
        self.roots: tuple[str, ...] = ()  # set by the daemon: files must lie inside, reached directly
        self._deferred: list[Outcome] = []  # WAIT outcomes of a retag, for the worker to schedule

    def close(self) -> None:
        """Stop the decode pool and the model's child process (the pipeline is its only user)."""
        self._pool.shutdown(wait=True)
        self.model.close()

    def confine(self, roots: Iterable[Path]) -> None:
        """Tag only files inside ``roots`` (real paths) reached without passing a symbolic link: a
        folder link inside a watched root may point anywhere, and nothing outside is ours to write."""
        self.roots = tuple(str(r).rstrip("/") for r in roots)

    def _outside(self, path: str) -> bool:
        parent = os.path.dirname(path)
        inside = any(path.startswith(root + "/") for root in self.roots)
        return not inside or os.path.realpath(parent) != parent

    def take_deferred(self) -> list[Outcome]:
        """Files a retag could not write for a passing reason (a full disk): the caller retries them."""
        deferred, self._deferred = self._deferred, []
        return deferred

    # -- vocabulary ----------------------------------------------------------------------------

    def use_vocabulary(self, vocabulary: Vocabulary, tagging: TaggingConfig | None = None) -> int:
        """Adopt a tag list, encoding only prompts without a cached text vector; returns how many."""
        tagging = tagging or self.tagging
        prompts = vocabulary.prompts()
        vectors = self.store.text_vectors(prompts, self.model.identity)
        missing = [p for p in prompts if p not in vectors]
        if missing:
            with self.model.using() as model:
                encoded = model.encode_texts(missing)
            self.store.put_text_vectors(dict(zip(missing, encoded, strict=True)), self.model.identity)
            vectors.update(self.store.text_vectors(missing, self.model.identity))
        self.vocabulary, self.tagging = vocabulary, tagging
        self.tags = TagMatrix.build(vocabulary, vectors)
        self.thresholds = thresholds(vocabulary, tagging.threshold)
        self._paths = vocabulary.hierarchy()
        self.expansion = Expansion.of(vocabulary, tagging)
        self._refresh_fingerprint()
        return len(missing)

    def use_overrides(self, overrides: Overrides) -> None:
        """Adopt an overrides file; the next ``retag`` re-applies it from cached vectors."""
        self.overrides = overrides
        self._refresh_fingerprint()

    def _refresh_fingerprint(self) -> None:
        if self.vocabulary is None:
            return
        parts = [self.vocabulary.fingerprint(), f"{self.tagging.threshold:.6f}", str(self.tagging.top_k),
                 self.model.identity]
        if self.expansion.levels:  # what expansion adds (none: the fingerprint of before expansion)
            parts.append(hashlib.sha256(repr(sorted(self.expansion.levels.items())).encode()).hexdigest()[:16])
        if self.overrides.rules:
            parts.append(self.overrides.fingerprint())
        self.fingerprint = "|".join(parts)

    def decide(self, path: str, tags: list[tuple[str, float]]) -> tuple[list[tuple[str, float]], Override]:
        """Predictions → what ``path`` should carry, after its overrides."""
        override = self.overrides.for_path(path)
        return (override.apply(tags) if override else tags), override

    # -- one batch -----------------------------------------------------------------------------

    def process(self, paths: Iterable[str], *, dry_run: bool = False, retry_failed: bool = False,
                wait_for_writers: bool = False) -> list[Outcome]:
        """Tag ``paths`` (files); unchanged files already tagged with this tag list are skipped.

        ``retry_failed`` (``scan``: a person asked) retries files that failed before even if
        unchanged, and tags files that ``untag`` set aside;
        ``wait_for_writers`` answers RETRY for a truncated file modified in the last seconds, which
        is probably still being copied (the daemon queues it again instead of failing it).
        """
        assert self.tags is not None, "use_vocabulary() first"
        paths = list(dict.fromkeys(paths))
        outcomes: list[Outcome] = []
        unnamed = [p for p in paths if not p.isprintable() and not _utf8(p)]
        for path in unnamed:  # the store keys files by UTF-8 path; such a name cannot be recorded
            reason = "the file name is not valid UTF-8; rename the file"
            log.warning("%s: skipped: %s", ascii(path), reason)
            outcomes.append(Outcome(path, FAILED_, error=reason))
        paths = [p for p in paths if p not in unnamed]
        rows = self.store.files(paths)
        items: list[_Item] = []
        for path in paths:
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                outcomes.append(self._gone(path, "file vanished before it could be read"))
                continue
            except OSError as exc:
                if exc.errno in TRANSIENT_ERRNOS:
                    outcomes.append(Outcome(path, WAIT, error=f"cannot read: {exc.strerror}"))
                else:
                    outcomes.append(self._fail(path, None, f"cannot read: {exc.strerror}", dry_run))
                continue
            if not stat.S_ISREG(st.st_mode) or (self.roots and self._outside(path)):
                reason = ("a symbolic link (not followed)" if stat.S_ISLNK(st.st_mode)
                          else "not a regular file" if not stat.S_ISREG(st.st_mode)
                          else "reached through a symbolic link to a folder (not followed)")
                outcomes.append(self._fail(path, st, reason, dry_run))
                continue
            row = rows.get(path)
            if row is not None and row.state == UNTAGGED and not retry_failed:
                outcomes.append(Outcome(path, UNCHANGED))  # `tagwatch untag` asked us to leave it
                continue
            # A failure for want of permission is tried again once a chmod has cured it (the daemon
            # hears of it as an attribute event); any other stays failed until the file changes.
            if _same_stat(row, st) and row is not None and (
                    (row.state == DONE and row.tagged_with == self.fingerprint)
                    or (row.state == FAILED and not retry_failed and not access_cured(row.error, path, st))):
                outcomes.append(Outcome(path, UNCHANGED, error=row.error if row.state == FAILED else None))
                continue
            items.append(_Item(path, st, row))

        for item, error in zip(items, self._pool.map(self._read_key, items), strict=True):
            if error is not None:
                outcomes.append(self._bad_file(item, error, dry_run, wait_for_writers))
        items = [i for i in items if i.key is not None]
        # Files whose vectors are cached go first, without the model: after a restart (a crash, a
        # reboot) they get their keywords while the model, seconds to import and load, is not yet
        # needed; it is loaded only for the rest.
        cached = self.store.image_vectors({i.key for i in items if i.key}, self.model.identity)
        for group in ([i for i in items if i.key in cached], [i for i in items if i.key not in cached]):
            if group:
                self._tag(group, outcomes, dry_run)
        return outcomes

    def _tag(self, items: list[_Item], outcomes: list[Outcome], dry_run: bool) -> None:
        """Vectors → predictions → keywords written and recorded, for files whose key is known."""
        assert self.tags is not None
        self._fill_vectors(items, outcomes, dry_run)
        items = [i for i in items if i.vector is not None]
        if not items:
            return
        predictions = predict(np.stack([i.vector for i in items]), self.tags,
                              self.thresholds, self.tagging.top_k, self.expansion)
        for item, predicted in zip(items, predictions, strict=True):
            tags, override = self.decide(item.path, predicted)
            if dry_run:
                outcomes.append(Outcome(item.path, TAGGED, tags))
            else:
                outcomes.append(self._finish(item.path, item.key, item.stat, tags, override))

    def vector_for(self, path: str) -> np.ndarray:
        """The image vector of one file, from the cache or freshly encoded (``tagwatch explain``)."""
        vectors, errors = self.vectors_for([path])
        if path not in vectors:
            raise ImageError(errors.get(path, "could not be encoded"))
        return vectors[path]

    def vectors_for(self, paths: Sequence[str], batch_size: int = 32) -> tuple[dict[str, np.ndarray],
                                                                               dict[str, str]]:
        """Image vectors of files, from the cache or freshly encoded and cached, ``batch_size`` at a
        time; records no file state and writes nothing (``explain``, ``calibrate``, evaluation).

        Returns the vectors by path and, for files that could not be used, the reason.
        """
        vectors: dict[str, np.ndarray] = {}
        errors: dict[str, str] = {}
        paths = list(dict.fromkeys(paths))
        for start in range(0, len(paths), batch_size):
            items: list[_Item] = []
            for path in paths[start:start + batch_size]:
                try:
                    items.append(_Item(path, os.stat(path), None))
                except OSError as exc:
                    errors[path] = f"cannot read: {exc.strerror}"
                    log.warning("%s: skipped: %s", path, errors[path])
            for item, error in zip(items, self._pool.map(self._read_key, items), strict=True):
                if error is not None:
                    log.warning("%s: skipped: %s", item.path, error)
                    errors[item.path] = error
            items = [i for i in items if i.key is not None]
            outcomes: list[Outcome] = []  # _fill_vectors logs each file it cannot use
            self._fill_vectors(items, outcomes, dry_run=True)
            errors.update((o.path, o.error or o.status) for o in outcomes)
            vectors.update((i.path, i.vector) for i in items if i.vector is not None)
        return vectors, errors

    def _read_key(self, item: _Item) -> str | None:
        """Read the file and compute its content key (runs in the decode pool)."""
        try:
            with open(item.path, "rb") as handle:
                item.data = handle.read()
        except FileNotFoundError:
            return "file vanished before it could be read"
        except OSError as exc:
            item.transient = exc.errno in TRANSIENT_ERRNOS
            return f"cannot read: {exc.strerror}"
        if not item.data:
            return "empty file (0 bytes)"
        try:
            item.key = content_key(item.data)
        except ImageError as exc:
            item.data = None
            return str(exc)
        return None

    def _fill_vectors(self, items: list[_Item], outcomes: list[Outcome], dry_run: bool) -> None:
        """Cached vectors by key; decode and encode the misses once per distinct key."""
        model_id = self.model.identity
        cached = self.store.image_vectors((i.key for i in items if i.key), model_id)
        misses: dict[bytes, _Item] = {}
        for item in items:
            if item.key in cached:
                item.vector, item.data = cached[item.key], None
            else:
                misses.setdefault(item.key, item)
        if misses:
            with self.model.using() as model:
                spec = model.preprocess

                def decode(item: _Item) -> np.ndarray | str:
                    try:
                        assert item.data is not None
                        return prepare(item.data, spec)
                    except ImageError as exc:
                        return str(exc)
                    except Exception as exc:  # a decoder bug on one odd file is that file's problem
                        return f"cannot decode: {type(exc).__name__}: {exc}"
                    finally:
                        item.data = None

                arrays: dict[bytes, np.ndarray] = {}
                log.debug("decoding %d photos", len(misses))
                for key, result in zip(misses, self._pool.map(decode, misses.values()), strict=True):
                    if isinstance(result, str):
                        for item in items:
                            if item.key == key:
                                outcomes.append(self._bad_file(item, result, dry_run))
                                item.key = None
                    else:
                        arrays[key] = result
                if arrays:
                    log.debug("encoding %d photos", len(arrays))
                    encoded = model.encode_images(np.stack(list(arrays.values())))
                    log.debug("storing %d vectors", len(arrays))
                    self.store.put_image_vectors(dict(zip(arrays, encoded, strict=True)), model_id)
                    cached.update(self.store.image_vectors(arrays, model_id))  # score the stored form
        for item in items:
            if item.key is not None:
                item.vector = cached.get(item.key)

    def _finish(self, path: str, key: bytes | None, st: os.stat_result,
                tags: list[tuple[str, float]], override: Override = NO_OVERRIDE) -> Outcome:
        """Write the predicted keywords (after overrides) and record the result."""
        keywords = [k for k, _ in tags]
        added: list[str] = []
        mode = self.tagging.mode
        row = self.store.file(path)
        owned = self.store.ledger(row.id) if row is not None else []
        owned_paths = self.store.ledger_paths(row.id) if row is not None else {}
        plan = None
        # Without a prediction there is something to do only to our own keywords: sync drops them,
        # an override withdraws one, a parent edit moves one.  Overwrite with nothing predicted would
        # wipe a person's keywords over a threshold typo.
        ours_to_fix = owned and mode != "overwrite" and (
            mode == "sync" or any(k in owned for k in override.remove)
            or any(k in self._paths and owned_paths.get(k, (k,)) != (self._paths[k],) for k in owned))
        if self.writer is not None and (keywords or ours_to_fix):
            written_ahead: list[str] = []
            file_id: int | None = None
            try:
                plan = self.writer.plan(
                    Path(path), keywords, before=st, mode=mode, owned=owned, owned_paths=owned_paths,
                    paths={k: self._paths[k] for k in (*keywords, *owned) if k in self._paths},
                    withdraw=override.remove)
                if plan.changes:
                    mine = [k for k in plan.ours if k not in override.add]  # an override's are the user's
                    # Pending until recorded done, ledger written ahead: a crash mid-write leaves the
                    # file to the next scan and never makes tagwatch forget a keyword it put in (nor,
                    # for a keyword whose parent changed, the path it was written under before).
                    log.debug("%s: recording its keywords ahead of the write", path)
                    with self.store.transaction():
                        file_id = self.store.record_file(path, key=key, size=st.st_size,
                                                         mtime_ns=st.st_mtime_ns, state=PENDING)
                        self.store.add_ledger(file_id, mine, paths=plan.paths)
                        self.store.add_ledger(file_id, plan.dropped, REMOVED)
                        self.store.set_ledger_paths(file_id, {
                            k: (*owned_paths.get(k, (k,)), *plan.paths[k]) for k in plan.respelled})
                    written_ahead = mine + plan.dropped
                    log.debug("%s: writing keywords", path)
                    self.writer.apply(plan)
                    self.store.remove_ledger(file_id, plan.removed)
                    added = plan.ours
                st = os.lstat(path)
            except (MetadataError, OSError) as exc:
                if file_id is not None and written_ahead:  # the file is as it was
                    self.store.remove_ledger(file_id, written_ahead)
                if isinstance(exc, FileChanged):
                    return Outcome(path, RETRY, tags, error=str(exc))
                passing = transient_reason(exc)
                if passing is not None:  # the photo is as it was; the same write can work later
                    return Outcome(path, WAIT, tags, error=f"keywords not written: {passing}")
                if not os.path.lexists(path):
                    return self._gone(path, "file vanished before its keywords were written")
                reason = str(exc) if isinstance(exc, MetadataError) else exc.strerror
                return self._fail(path, st, f"keywords not written: {reason}", False, key)
        log.debug("%s: recording it tagged", path)
        with self.store.transaction():
            file_id = self.store.record_file(path, key=key, size=st.st_size, mtime_ns=st.st_mtime_ns,
                                             state=DONE)
            self.store.record_tagged(file_id, keywords, self.fingerprint, st.st_size, st.st_mtime_ns)
            if plan is not None:
                self.store.set_ledger_paths(file_id, {k: plan.paths[k] for k in plan.respelled})
                self.store.add_ledger(file_id, [k for k in override.add if k in plan.ours or k in owned],
                                      USER)
        self._retries.pop(path, None)
        fields = {"event": "tagged", "path": path, "tags": keywords}
        if added:
            log.info("tagged %s: %s", path, ", ".join(keywords), extra=fields)
        else:
            log.info("tagged %s: %s (already in the file)", path, ", ".join(keywords) or "no tag above "
                     f"threshold {self.tagging.threshold}", extra=fields)
        return Outcome(path, TAGGED, tags, added)

    def _bad_file(self, item: _Item, reason: str, dry_run: bool, wait_for_writers: bool = False) -> Outcome:
        """A file we could not use: retry if it is probably still being written, else record why."""
        if (wait_for_writers and reason.startswith(("truncated", "empty"))
                and time.time() - item.stat.st_mtime < _RECENT_S):
            tries = self._retries[item.path] = self._retries.get(item.path, 0) + 1
            if tries <= _MAX_RETRIES:
                return Outcome(item.path, RETRY, error=reason)
        if item.transient:
            return Outcome(item.path, WAIT, error=reason)
        if reason.startswith("file vanished"):
            return self._gone(item.path, reason)
        return self._fail(item.path, item.stat, reason, dry_run, item.key)

    def give_up(self, path: str, reason: str) -> Outcome:
        """Record that ``path`` could not be processed at all (an unexpected error), so it is not
        retried until it changes."""
        try:
            st: os.stat_result | None = os.lstat(path)
        except OSError:
            st = None
        return self._fail(path, st, reason, False)

    def _fail(self, path: str, st: os.stat_result | None, reason: str, dry_run: bool,
              key: bytes | None = None) -> Outcome:
        self._retries.pop(path, None)
        log.warning("%s: skipped: %s", path, reason,
                    extra={"event": "skipped", "path": path, "reason": reason})
        if not dry_run:
            self.store.record_file(path, key=key, size=st.st_size if st else None,
                                   mtime_ns=st.st_mtime_ns if st else None, state=FAILED, error=reason)
        return Outcome(path, FAILED_, error=reason)

    def _gone(self, path: str, reason: str) -> Outcome:
        self._retries.pop(path, None)
        log.warning("%s: skipped: %s", path, reason, extra={"event": "gone", "path": path, "reason": reason})
        self.store.mark_deleted(path)
        return Outcome(path, GONE, error=reason)

    # -- tag-list edits ------------------------------------------------------------------------

    def retag(self) -> tuple[int, int]:
        """Re-score every cached file tagged with an older tag list; no image is encoded.

        Only files whose tag set changed are written.  Returns (files re-scored, files written).
        """
        assert self.tags is not None and self.vocabulary is not None
        rows = [(r, v) for r, v in self.store.tagged_files(self.model.identity)
                if r.tagged_with != self.fingerprint]
        written = 0
        chunk = 4096
        # Files holding one of our keywords under a path its parent no longer gives it
        stale = (self.store.stale_paths(self._paths) if rows and (
            any(tag.parents for tag in self.vocabulary.tags) or self.store.has_ledger_paths()) else set())
        for start in range(0, len(rows), chunk):
            part = rows[start:start + chunk]
            predictions = predict(np.stack([v for _, v in part]), self.tags,
                                  self.thresholds, self.tagging.top_k, self.expansion)
            same: list[tuple[int, list[str]]] = []
            for (row, _), predicted in zip(part, predictions, strict=True):
                tags, override = self.decide(row.path, predicted)
                keywords = [k for k, _ in tags]
                # An override may have to take out or adopt a keyword of ours the set does not show
                touches_ours = bool(override) and bool(
                    {*override.add, *override.remove} & set(self.store.ledger(row.id)))
                if set(keywords) == set(row.tags or ()) and row.id not in stale and not touches_ours:
                    same.append((row.id, keywords))
                    continue
                try:
                    st = os.lstat(row.path)
                except FileNotFoundError:
                    self._gone(row.path, "file vanished")
                    continue
                except OSError as exc:
                    log.warning("%s: skipped: cannot read: %s", row.path, exc.strerror)
                    continue
                if _same_stat(row, st):
                    outcome = self._finish(row.path, row.key, st, tags, override)
                else:  # changed on disk since we last saw it: treat it as new
                    outcome = self.process([row.path])[0]
                written += outcome.status == TAGGED and bool(outcome.added)
                if outcome.status == WAIT:
                    self._deferred.append(outcome)
            self.store.update_predictions(same, self.fingerprint)
        return len(rows), written

    # -- untag ---------------------------------------------------------------------------------

    def untag(self, path: str) -> Outcome:
        """Take out exactly the keywords tagwatch added (and put back what overwrite took out); the
        daemon then leaves the file alone until ``scan`` names it again."""
        assert self.writer is not None
        row = self.store.file(path)
        if row is None or row.state == DELETED:
            return Outcome(path, UNCHANGED, error="tagwatch has no record of this file")
        if row.state == UNTAGGED and not self.store.ledger(row.id) and not self.store.ledger(row.id, REMOVED):
            return Outcome(path, UNCHANGED, error="already untagged")
        owned, dropped = self.store.ledger(row.id), self.store.ledger(row.id, REMOVED)
        self.store.record_file(path, key=row.key, size=row.size, mtime_ns=row.mtime_ns, state=UNTAGGED)
        try:
            plan = self.writer.plan_untag(Path(path), owned, dropped, self.store.ledger_paths(row.id))
            self.writer.apply(plan)
            st = os.lstat(path)
        except (MetadataError, OSError) as exc:
            reason = str(exc) if isinstance(exc, MetadataError) else exc.strerror
            log.warning("%s: not untagged: %s", path, reason)
            return Outcome(path, FAILED_, error=reason)
        self.store.remove_ledger(row.id, owned + dropped)
        self.store.record_file(path, key=row.key, size=st.st_size, mtime_ns=st.st_mtime_ns, state=UNTAGGED)
        log.info("untagged %s: removed %s%s", path, ", ".join(plan.removed) or "nothing",
                 f"; restored {', '.join(plan.restored)}" if plan.restored else "")
        return Outcome(path, UNTAGGED_, added=plan.restored)

    # -- renames and deletions -----------------------------------------------------------------

    def apply(self, ops: Sequence[Op]) -> list[str]:
        """Apply renames and deletions to the store; returns moved paths the store did not know."""
        unknown: list[str] = []
        for op in ops:
            if isinstance(op, Delete):
                if os.path.lexists(op.path):  # replaced since (a polling observer sees our own atomic
                    continue                  # replace as delete + create): the row and ledger stay
                if op.is_dir:
                    self.store.mark_deleted_under(op.path)
                elif self.store.mark_deleted(op.path):
                    log.info("%s: deleted", op.path, extra={"event": "deleted", "path": op.path})
                else:
                    log.info("%s: skipped: deleted before it could be tagged", op.path)
            elif op.is_dir:
                self.store.move_tree(op.src, op.dst)
            else:
                self._move_sidecar(op.src, op.dst)
                if not self.store.move(op.src, op.dst):
                    unknown.append(op.dst)
                else:
                    log.info("moved %s -> %s", op.src, op.dst,
                             extra={"event": "moved", "path": op.dst, "from": op.src})
        return unknown

    def _move_sidecar(self, src: str, dst: str) -> None:
        """A photo renamed by a file manager leaves its sidecar behind; take it along, unless the
        new name already has one or other files still share it (``photo.xmp`` of a RAW+JPEG pair)."""
        if self.writer is None:
            return
        old, new = self.writer.sidecar_for(Path(src)), self.writer.sidecar_for(Path(dst))
        if old == new or not old.is_file() or old.is_symlink() or os.path.lexists(new):
            return
        if old.name != Path(src).name + ".xmp" and any(
                p.suffix.lower() != ".xmp" for p in old.parent.glob(glob.escape(old.stem) + ".*")):
            return
        try:
            os.rename(old, new)
            log.info("moved sidecar %s -> %s", old, new)
        except OSError as exc:
            log.warning("%s: sidecar not moved with its photo: %s", old, exc.strerror)


class Worker(threading.Thread):
    """The single thread that runs the pipeline, so each file is handled by one writer at a time."""

    def __init__(self, queue: BatchQueue, pipeline: Pipeline, reload: Callable[[], None],
                 observe: Callable[[list[Outcome]], None] | None = None) -> None:
        super().__init__(name="tagwatch-worker", daemon=True)
        self.queue, self.pipeline, self._reload = queue, pipeline, reload
        self._observe = observe  # told every batch's outcomes: the counters `status` shows
        self._backoff = Backoff()  # files waiting for a passing disk or network problem to pass
        self._reload_requested = threading.Event()
        self.batches = 0
        self.idle = threading.Event()

    def request_reload(self) -> None:
        self._reload_requested.set()
        self.queue.wake()

    def run(self) -> None:
        while True:
            if self._reload_requested.is_set():
                self._reload_requested.clear()
                self._guard(self._reload)
            deferred = self.pipeline.take_deferred()
            if deferred:
                self._guard(lambda d=deferred: self._settle(d))
            batch = self.queue.get(timeout=1.0)
            if batch is None:
                return
            if not batch:
                self.idle.set()
                continue
            self.idle.clear()
            self._guard(lambda b=batch: self._handle(b))
            self.batches += 1

    def _handle(self, batch: Batch) -> None:
        for op in batch.ops:
            if isinstance(op, Delete):
                self._backoff.clear(op.path)
        paths = batch.paths + self.pipeline.apply(batch.ops)
        if not paths:
            return
        try:
            outcomes = self.pipeline.process(paths, wait_for_writers=True)
        except Exception as exc:
            outcomes = self._one_by_one(paths, exc)
        self._settle(outcomes)

    def _one_by_one(self, paths: list[str], exc: Exception) -> list[Outcome]:
        """After a batch raised: a passing problem (the database's disk is full) puts every file back
        to wait; anything else is retried file by file, so one bad file costs only its own tags."""
        passing = transient_reason(exc)
        if passing is not None:
            return [Outcome(path, WAIT, error=passing) for path in paths]
        if len(paths) == 1:
            return [self.pipeline.give_up(paths[0], f"{type(exc).__name__}: {exc}")]
        log.warning("batch of %d failed (%s: %s); taking its files one by one", len(paths),
                    type(exc).__name__, exc)
        outcomes: list[Outcome] = []
        for path in paths:
            try:
                outcomes += self.pipeline.process([path], wait_for_writers=True)
            except Exception as err:
                passing = transient_reason(err)
                outcomes.append(Outcome(path, WAIT, error=passing) if passing is not None
                                else self.pipeline.give_up(path, f"{type(err).__name__}: {err}"))
        return outcomes

    def _settle(self, outcomes: list[Outcome]) -> None:
        """Count the outcomes and queue again what must be retried: RETRY at once, WAIT after a pause
        that grows while the problem lasts (reported once per file, not once per attempt)."""
        if self._observe is not None:
            self._observe(outcomes)
        for outcome in outcomes:
            path = outcome.path
            if outcome.status == RETRY:
                self.queue.put(path, force=True)  # never wait on the queue only we drain
            elif outcome.status == WAIT:
                first = path not in self._backoff
                delay = self._backoff.next(path)
                if first:
                    log.warning("%s: not tagged yet: %s; trying again in %g s, backing off to once every "
                                "%g s, until it works", path, outcome.error, delay, self._backoff.cap,
                                extra={"event": "retrying", "path": path, "reason": outcome.error})
                else:
                    log.debug("%s: still not tagged (attempt %d): %s", path, self._backoff.tries(path),
                              outcome.error)
                self.queue.put(path, delay=delay, force=True)
            elif path in self._backoff:
                self._backoff.clear(path)

    def _guard(self, work: Callable[[], None]) -> None:
        """Nothing that goes wrong in one batch may stop the daemon."""
        try:
            work()
        except Exception as exc:  # the daemon must survive anything one batch does
            log.error("batch failed: %s: %s", type(exc).__name__, exc,
                      exc_info=log.isEnabledFor(logging.DEBUG))
