"""The local engine: the stages of tagging run at once, each in its own thread, bounded queues between.

    driver ──► decode pool ──────────► encode ──────► store + score ──► write
    (select:   (read + key, cached?,   (the model's   (vectors into     (plan + ledger ahead,
    stat,      decode to pixels),      child)         SQLite, tags)     write, record done)
    settled?)  a few batches ahead

The driver is the thread that calls :meth:`Engine.submit` (the daemon's worker, or ``scan``): it
selects a batch's photos (:meth:`Pipeline.select <tagwatch.pipeline.Pipeline.select>`) and hands each
to the decode pool, which reads it, computes its key, looks the key up in the vector cache and decodes a miss
(while other batches are in flight, the decoding itself in threads that do nothing else, at a lower
priority: :func:`cores.give_way`).
One thread per later stage takes batches in order: the encode thread sends the pixels of batch N+1 to
the model's child while the store thread saves batch N's vectors and scores them and the write thread
writes batch N-1's keywords.  So the cores are never idle waiting on one stage: the decode threads and
exiftool run while the child encodes.  The stage functions are the pipeline's (``select``,
``bad_file``, ``judge``, ``give_up``), :mod:`tagwatch.vectors`' and :mod:`tagwatch.writeback`'s, as
the Ray engine composes them; this module only wires them.

What stays as it was with one batch at a time:

- **one writer per file**: a path stays *in flight* from admission until its outcome; a batch naming a
  path in flight waits for it (:meth:`submit`), and writes happen in one thread, in order.  The
  daemon's worker also waits for in-flight paths that a rename or deletion names before applying it
  (:meth:`wait_clear`), so the store sees moves in the order they happened relative to tagging;
- **the ledger-first write protocol** and its debug lines (``decoding N photos`` when a batch is handed
  to the decode pool, ``encoding``, ``storing``, and the write's per-file lines);
- **bounded memory**: at most :data:`AHEAD_PHOTOS` photos between admission and the end of their
  encode, kept as uint8 pixels (a 256 px photo is 192 KiB); file bytes live only inside one decode
  task; the stages after the encoder hold vectors and tags, two batches each at most; the encode
  thread keeps the vectors of its last few batches (:class:`_Recent`), so that a picture is encoded
  once even where its copy came in a later batch than it, before its vector was stored;
- **a failure costs only its files**: a problem with one file is that file's outcome; a batch the
  model fails on is encoded again one photo at a time; a passing storage problem (a full disk) makes
  its files WAIT; nothing a batch does stops a thread.

Outcomes reach ``done`` (given with each batch) from the engine's threads, one call at a time, once
per batch (a batch whose cached photos go ahead of its misses reports in two parts).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from . import cores
from .formats import ImageError
from .imaging import Preprocess
from .outcomes import Outcome, Status
from .pipeline import Pipeline
from .retry import database_fault, transient_reason
from .store import stored_form
from .vectors import Photo, ReadFailed, decode, encode, read_key
from .wording import counted
from .writeback import WriteJob

if TYPE_CHECKING:
    from .encoder import EncoderProcess

log = logging.getLogger(__name__)

# Photos admitted and not yet encoded: one batch in the encoder, the next decoded and waiting, more
# being read.  uint8 pixels of a 256 px model take 192 KiB each (25 MiB for 128); decoding ahead this far
# also lets the first photos decode while the model's child imports torch and loads (seconds).
AHEAD_PHOTOS = 128
STAGE_QUEUE = 2  # batches waiting before the store and the write stages (vectors and tags: small)
_STOP = None

Done = Callable[[list[Outcome]], None]


@dataclass
class _Front:
    """What the decode pool made of one photo."""

    problem: ImageError | ReadFailed | None = None
    pixels: np.ndarray | None = None
    spec: Preprocess | None = None  # the input spec the pixels were made for


@dataclass
class _Lot:
    """One batch on its way through the stages."""

    photos: list[Photo]
    done: Done
    dry_run: bool = False
    wait_for_writers: Callable[[str, os.stat_result], bool] | None = None
    outcomes: list[Outcome] = field(default_factory=list)
    fronts: list[Future[_Front]] = field(default_factory=list)
    fresh: dict[bytes, np.ndarray] = field(default_factory=dict)  # encoded, not yet stored
    reused: dict[bytes, np.ndarray] = field(default_factory=dict)  # encoded for an earlier batch
    jobs: list[WriteJob] = field(default_factory=list)
    charged: int = 0  # photos it counts against AHEAD_PHOTOS until encoded

    def part(self, photos: list[Photo]) -> _Lot:
        """The same batch's ``photos``, going ahead on their own (cached while the model loads)."""
        return _Lot(photos, self.done, self.dry_run, self.wait_for_writers)


class _Recent:
    """The vectors the encode stage made lately, by the model that made them (its identity and
    precision) and content key, in their stored form: a copy of a picture in a later batch takes its
    original's vector here instead of being encoded again.  The cache cannot give it: the copy's
    decode task looked the key up before the original's batch was through the store stage (a copy
    dropped in with its original: 12 photos and a ``cp -r`` of them, 17 encodes for 12 pictures).
    Only the encode thread uses it: no lock.

    How many it keeps follows the engine's own bounds, so that no copy finds its original gone: a
    copy's lookup missed only while the original's batch was not stored, so the batches encoded
    after the original's and before the copy's are those waiting for the store stage then (at most
    :data:`STAGE_QUEUE`, and one the encode thread holds) and those not yet encoded then (fewer than
    the engine's ``ahead`` photos); with the original's own batch, ``ahead`` photos and
    ``STAGE_QUEUE + 2`` of the largest batch seen (192 vectors of 1 KiB for a CPU's batches of 16 and
    ViT-B).  Oldest first out, in the order they were encoded: the order that bound counts in."""

    def __init__(self, ahead: int) -> None:
        self.ahead = ahead
        self.room = ahead
        self._vectors: OrderedDict[tuple[str, str, bytes], np.ndarray] = OrderedDict()

    def take(self, model: EncoderProcess, key: bytes) -> np.ndarray | None:
        """The stored form of the vector ``model`` made for ``key`` lately, if it did."""
        return self._vectors.get((model.identity, model.precision, key))

    def keep(self, model: EncoderProcess, vectors: Mapping[bytes, np.ndarray], batch: int) -> None:
        """Remember what ``model`` just encoded for a batch of ``batch`` photos; forget the oldest."""
        self.room = max(self.room, self.ahead + (STAGE_QUEUE + 2) * batch)
        for key, vector in vectors.items():
            self._vectors[model.identity, model.precision, key] = stored_form(vector)
        while len(self._vectors) > self.room:
            self._vectors.popitem(last=False)


def _decodes_while_loading(decode_threads: int) -> threading.BoundedSemaphore | None:
    """How many photos decode at once while the model's child loads, where that must be fewer than
    ``decode_threads``: the load (importing torch, the tower, the first batch: over a second of one
    core) is what the first photos wait for, and on a machine with no more cores than decode threads
    the decodes took its core.  A cold daemon on a 2-core Xeon, 60 photos dropped in: the model loaded
    1.40-1.57 s after the start with one decode at a time, 1.30-1.89 s with two, and all 60 were tagged
    in 3.22 s on average against 3.40 (twelve alternated pairs, docs/speed.md).  None: no limit (a
    spare core for the child)."""
    share = max(1, cores.usable() - 1)
    return threading.BoundedSemaphore(share) if share < decode_threads else None


class Engine:
    """Runs batches through the pipeline's stages concurrently (see the module's docstring)."""

    def __init__(self, pipeline: Pipeline, *, ahead: int = AHEAD_PHOTOS, decode_threads: int = 2,
                 on_idle: Callable[[], None] | None = None, lock_wait_s: float | None = None) -> None:
        self.pipeline, self.ahead = pipeline, max(1, ahead)
        self._on_idle = on_idle  # told whenever the last batch in flight is done
        # how long the stages' writes wait for a database another program holds locked (None: the
        # store's own; the daemon's: retry.DATABASE_LOCK_WAIT_S, see Store.lock_wait)
        self._lock_wait_s = lock_wait_s
        self._pool = ThreadPoolExecutor(decode_threads, thread_name_prefix="tagwatch-read")
        # A backlog's pixels are decoded in threads that do only that, at a lower priority
        # (cores.give_way, see _decode): a thread once made nicer stays so, and the model's child is
        # started from a reading thread.
        self._decoders = ThreadPoolExecutor(decode_threads, thread_name_prefix="tagwatch-decode",
                                            initializer=cores.give_way)
        self._while_loading = _decodes_while_loading(decode_threads)
        self._recent = _Recent(self.ahead)  # the encode thread's own
        self._cond = threading.Condition()
        self._inflight: dict[str, int] = {}  # path → batches holding it (one, but for a racing caller)
        # path → batches holding it whose ``done`` has not had its outcome yet: a path is let go
        # (_inflight) once its outcome is known, and handed over at its batch's end (wait_clear)
        self._unreported: dict[str, int] = {}
        self._unencoded = 0  # photos charged against ``ahead``
        self._lots = 0  # batches submitted and not yet reported
        self._done_lock = threading.Lock()  # ``done`` callbacks one at a time
        self._encode_q: queue.Queue[_Lot | None] = queue.Queue()  # bounded by ``ahead``
        self._store_q: queue.Queue[_Lot | None] = queue.Queue(STAGE_QUEUE)
        self._write_q: queue.Queue[_Lot | None] = queue.Queue(STAGE_QUEUE)
        self._threads = [threading.Thread(target=self._loop, args=args, name=f"tagwatch-{name}", daemon=True)
                         for name, args in (("encode", (self._encode_q, self._encode_stage, self._store_q)),
                                            ("store", (self._store_q, self._store_stage, self._write_q)),
                                            ("write", (self._write_q, self._write_stage, None)))]
        for thread in self._threads:
            thread.start()
        self._closed = False
        self._stopping = False  # the stop is on its way through the stages

    # -- the driver's side --------------------------------------------------------------------------

    def submit(self, paths: Sequence[str], done: Done, *, dry_run: bool = False, retry_failed: bool = False,
               wait_for_writers: Callable[[str, os.stat_result], bool] | None = None) -> None:
        """Start tagging ``paths``; ``done`` gets their outcomes.  Waits while one of them is still in
        flight from an earlier batch, and while the decode pool is :data:`AHEAD_PHOTOS` ahead of the
        encoder.  What selecting raises (the database is unreadable) is raised here, nothing started."""
        paths = list(dict.fromkeys(paths))
        if self.pipeline.captions is not None:
            self._sequential(paths, done, dry_run, retry_failed, wait_for_writers)
            return
        with self._cond:
            self._cond.wait_for(lambda: self._unencoded < self.ahead
                                and not any(p in self._inflight for p in paths))
            for path in paths:
                self._inflight[path] = self._inflight.get(path, 0) + 1
                self._unreported[path] = self._unreported.get(path, 0) + 1
            self._lots += 1
        try:
            photos, outcomes = self.pipeline.select(paths, dry_run=dry_run, retry_failed=retry_failed,
                                                    watched=wait_for_writers is not None)
        except BaseException:
            with self._cond:
                self._release(paths)
                self._release(paths, self._unreported)
                self._lots -= 1
                self._cond.notify_all()
            raise
        lot = _Lot(photos, done, dry_run, wait_for_writers, outcomes)
        with self._cond:
            self._release([o.path for o in outcomes])
            taken = {photo.path for photo in photos} | {o.path for o in outcomes}
            self._release([path for path in paths if path not in taken], self._unreported)
            lot.charged = len(photos)
            self._unencoded += lot.charged
        if not photos:
            self._report(lot)
            return
        log.debug("decoding %s", counted(len(photos), "photo"))
        lot.fronts = [self._pool.submit(self._front, photo) for photo in photos]
        self._encode_q.put(lot)

    def _sequential(self, paths: list[str], done: Done, dry_run: bool, retry_failed: bool,
                    wait_for_writers: Callable[[str, os.stat_result], bool] | None) -> None:
        """Captions on: the batch runs through the pipeline's own one-stage path, which has the caption
        stage (a separate captioner's second decode, the caption cache, the description); these
        overlapped stages do not have it yet.  Done before ``submit`` returns, after any batch in
        flight (none is, while captions stay on)."""
        self.drain()
        outcomes = self.pipeline.process(paths, dry_run=dry_run, retry_failed=retry_failed,
                                         wait_for_writers=wait_for_writers)
        with self._done_lock:
            done(outcomes)
        if self._on_idle is not None:
            self._on_idle()

    def in_flight(self, paths: Sequence[str]) -> set[str]:
        """Which of ``paths`` a batch submitted earlier still holds (``submit`` would wait for them)."""
        with self._cond:
            return {path for path in paths if path in self._inflight}

    def held(self) -> int:
        """Photos submitted and not yet settled: waiting as much as the queue's (``tagwatch status``
        counts both; while a locked database or a silent exiftool holds a batch, only these wait)."""
        with self._cond:
            return len(self._inflight)

    def wait_clear(self, touches: Callable[[str], bool]) -> None:
        """Wait until no path in flight is one ``touches`` names (a rename's source, a deleted folder's
        files): their batches finish first, their outcomes handed to their ``done``, then the caller
        applies its change.  Not only their outcomes known: a photo whose outcome made it wait for
        the database joined its waiting list after a deletion of it had been followed there, and
        was counted as waiting once deleted (Worker._database_follows)."""
        with self._cond:
            self._cond.wait_for(lambda: not any(touches(p) for p in self._unreported))

    def drain(self) -> None:
        """Wait until every batch submitted has been reported."""
        with self._cond:
            self._cond.wait_for(lambda: self._lots == 0)

    @property
    def busy(self) -> bool:
        with self._cond:
            return self._lots > 0

    def close(self) -> None:
        """Finish every batch in flight, then stop the threads.  A close that a Ctrl-C interrupted
        while it waited can be called again and goes on waiting: returning at once, it let the
        caller close the store and exiftool under batches still being written."""
        if self._closed:
            return
        self.drain()
        if not self._stopping:
            self._stopping = True
            self._encode_q.put(_STOP)
        for thread in self._threads:
            thread.join()
        self._pool.shutdown(wait=True)
        self._decoders.shutdown(wait=True)
        self._closed = True

    # -- bookkeeping ----------------------------------------------------------------------------------

    def _release(self, paths: Sequence[str], counts: dict[str, int] | None = None) -> None:
        """(under ``_cond``) These paths' outcomes are known: other batches may take them.  Or, with
        ``counts`` the ``_unreported``, handed over."""
        counts = self._inflight if counts is None else counts
        for path in paths:
            count = counts.get(path, 0) - 1
            if count > 0:
                counts[path] = count
            else:
                counts.pop(path, None)

    def _settle(self, lot: _Lot, outcome: Outcome) -> None:
        lot.outcomes.append(outcome)
        with self._cond:
            self._release([outcome.path])
            self._cond.notify_all()

    def _uncharge(self, lot: _Lot) -> None:
        with self._cond:
            self._unencoded -= lot.charged
            lot.charged = 0
            self._cond.notify_all()

    def _report(self, lot: _Lot) -> None:
        """Hand the batch's (or a part's) outcomes to its ``done``; it is through every stage."""
        self._uncharge(lot)
        settled = {o.path for o in lot.outcomes}
        for photo in lot.photos:  # a safety net: a stage that lost a photo must not hold its path
            if photo.path not in settled:
                log.error("%s: lost between the stages; it will be tried again at the next scan", photo.path)
                lot.outcomes.append(Outcome(photo.path, Status.FAILED, error="lost between the stages"))
        try:
            with self._done_lock:
                lot.done(lot.outcomes)
        except Exception as exc:  # the caller's bookkeeping must not stop a stage
            log.error("reporting a batch failed: %s: %s", type(exc).__name__, exc,
                      exc_info=log.isEnabledFor(logging.DEBUG))
        with self._cond:
            self._release([p.path for p in lot.photos if p.path not in settled])
            self._release([o.path for o in lot.outcomes], self._unreported)
            self._lots -= 1
            idle = self._lots == 0
            self._cond.notify_all()
        if idle and self._on_idle is not None:
            self._on_idle()

    def _give_up(self, lot: _Lot, photos: Sequence[Photo], exc: BaseException) -> None:
        """A stage failed on these photos as a whole: a passing storage problem makes them wait,
        anything else is recorded as each file's failure (so one bad batch never loops)."""
        passing = transient_reason(exc)
        for photo in photos:
            if passing is not None:
                outcome = Outcome(photo.path, Status.WAIT, error=passing)
            else:
                try:
                    outcome = self.pipeline.give_up(photo.path, exc)
                except Exception as err:  # the store itself is failing: say so, keep going
                    log.error("%s: cannot record its failure: %s", photo.path, err)
                    outcome = Outcome(photo.path, Status.FAILED, error=str(exc))
            self._settle(lot, outcome)

    # -- the stages -----------------------------------------------------------------------------------

    def _loop(self, inbox: queue.Queue[_Lot | None], stage: Callable[[_Lot], None],
              outbox: queue.Queue[_Lot | None] | None) -> None:
        with (contextlib.nullcontext() if self._lock_wait_s is None
              else self.pipeline.store.lock_wait(self._lock_wait_s)):
            self._stages(inbox, stage, outbox)

    def _stages(self, inbox: queue.Queue[_Lot | None], stage: Callable[[_Lot], None],
                outbox: queue.Queue[_Lot | None] | None) -> None:
        while True:
            lot = inbox.get()
            if lot is _STOP:
                if outbox is not None:
                    outbox.put(_STOP)
                return
            try:
                stage(lot)
            except Exception as exc:  # a bug in a stage: this batch's unsettled files fail, the rest go on
                # a passing storage problem (the database's disk full) is said once by the retry
                # policy, not as an error at each attempt (faults.md: no new line per attempt)
                level = logging.DEBUG if transient_reason(exc) is not None else logging.ERROR
                log.log(level, "batch failed: %s: %s", type(exc).__name__, exc,
                        exc_info=log.isEnabledFor(logging.DEBUG))
                settled = {o.path for o in lot.outcomes}
                self._give_up(lot, [p for p in lot.photos if p.path not in settled], exc)
                lot.jobs = []
                if outbox is not None:
                    outbox.put(lot)  # to be reported in order, by the write stage
                else:
                    self._report(lot)
                continue
            if outbox is not None:
                outbox.put(lot)

    def _spec(self) -> Preprocess:
        """The model's input spec: remembered, or known once the model is loaded (waits for it)."""
        return self.pipeline.model.preprocess or self.pipeline.model.get().preprocess

    def _front(self, photo: Photo) -> _Front:
        """Decode pool: read and key one photo; take its vector from the cache, else decode it."""
        try:
            read_key(photo)
            assert photo.key is not None
            cached = self.pipeline.cache.get([photo.key]).get(photo.key)
            if cached is not None:
                photo.vector, photo.data = cached, None
                return _Front()
            self.pipeline.model.prefetch()  # it will be needed: load it while photos decode
            try:
                spec = self._spec()
            except Exception:  # the model cannot load: the encode stage meets the error and reports it
                return _Front()
            assert photo.data is not None
            gate = self._while_loading
            loading = gate is not None and not self.pipeline.model.loaded
            with gate if loading else contextlib.nullcontext():  # loading: leave the child a core
                pixels = self._decode(photo.data, spec, photo.path)
            return _Front(pixels=pixels, spec=spec)
        except (ImageError, ReadFailed) as exc:
            return _Front(problem=exc)
        finally:
            photo.data = None

    def _decode(self, data: bytes, spec: Preprocess, path: str) -> np.ndarray:
        """Decode where it gives way only to work of ours: while another batch is in flight (a
        backlog, whose encoder child and keyword writer take one batch at a time) in the threads at a
        lower priority; a photo with no other batch beside it (a lone drop) here, at the process's
        priority.  A thread's niceness weighs against every process on the machine, not only ours: a
        lone drop decoded given way took 1.8 s to its write beside four busy processes, 0.55 s
        decoded here (docs/speed.md).  ``_lots`` is read without the lock on purpose: it only picks
        the pool, and a stale count sends one photo to the other one."""
        if self._lots > 1:
            return self._decoders.submit(decode, data, spec, path).result()
        return decode(data, spec, path)

    def _encode_stage(self, lot: _Lot) -> None:
        """Wait for the batch's decodes, encode its misses (once per distinct key, and not again
        where the model encoded the key for an earlier batch)."""
        size = len(lot.photos)
        pending: list[tuple[Photo, _Front]] = []
        ready: list[Photo] = []
        for photo, future in zip(lot.photos, lot.fronts, strict=True):
            try:
                front = future.result()
            except Exception as exc:  # not the file's fault (the database is locked or full): WAIT or fail
                self._give_up(lot, [photo], exc)
                continue
            if front.problem is not None:
                self._settle(lot, self.pipeline.bad_file(photo, front.problem, lot.dry_run,
                                                         lot.wait_for_writers))
            elif photo.vector is not None:
                ready.append(photo)
            else:
                pending.append((photo, front))
        lot.fronts = []
        if ready and pending and not self.pipeline.model.loaded:
            # Cached photos go ahead while the model loads (after a restart: files left pending)
            ahead = lot.part(ready)
            with self._cond:
                self._lots += 1
            self._store_q.put(ahead)
            going = {id(p) for p in ready}
            lot.photos = [p for p in lot.photos if id(p) not in going]
        if pending:
            try:
                with self.pipeline.model.using() as model:
                    pending, reused = self._reuse(pending, model)
                    encoded = self._encode(lot, pending, model) if pending else {}
                    self._recent.keep(model, encoded, size)
                    lot.fresh, lot.reused = encoded, reused
            except Exception as exc:  # the model cannot load: every photo waiting for it
                self._give_up(lot, [p for p, _ in pending], exc)
        self._uncharge(lot)

    def _reuse(self, pending: list[tuple[Photo, _Front]], model: EncoderProcess
               ) -> tuple[list[tuple[Photo, _Front]], dict[bytes, np.ndarray]]:
        """Give the photos whose picture ``model`` encoded for an earlier batch that vector (they were
        decoded for nothing: their lookup came too early, see :class:`_Recent`); the others remain.
        Returns those others and the vectors given, stored with the batch's own where the store lacks
        them: the earlier batch may never have stored them (its store met a backup's lock, and its
        photos were tried again, taking their vectors here: they were tagged and never cached)."""
        left, reused = [], {}
        for photo, front in pending:
            assert photo.key is not None
            photo.vector = self._recent.take(model, photo.key)
            if photo.vector is None:
                left.append((photo, front))
            else:
                reused[photo.key] = photo.vector
        if reused:
            log.debug("%s encoded for an earlier batch", counted(len(pending) - len(left), "photo"))
        return left, reused

    def _encode(self, lot: _Lot, pending: list[tuple[Photo, _Front]],
                model: EncoderProcess) -> dict[bytes, np.ndarray]:
        """The misses' vectors by key; a batch the model fails on is tried again photo by photo, so
        one photo that kills the model (out of memory on a huge one) costs only that photo."""
        spec = model.preprocess
        pixels: dict[bytes, np.ndarray] = {}
        for photo, front in pending:
            assert photo.key is not None
            if front.spec != spec:  # decoded for a remembered spec the model no longer has
                front = self._front(photo)
                if front.problem is not None:
                    self._settle(lot, self.pipeline.bad_file(photo, front.problem, lot.dry_run))
                    continue
            if front.pixels is not None:
                pixels.setdefault(photo.key, front.pixels)
        if not pixels:
            return {}
        log.debug("encoding %s", counted(len(pixels), "photo"))
        try:
            return dict(zip(pixels, encode(model, list(pixels.values())), strict=True))
        except Exception as exc:
            if transient_reason(exc) is not None or len(pixels) == 1:
                self._give_up(lot, [p for p, _ in pending if p.key in pixels], exc)
                return {}
            log.warning("encoding a batch of %d failed (%s: %s); encoding its photos one by one", len(pixels),
                        type(exc).__name__, exc)
        vectors: dict[bytes, np.ndarray] = {}
        for key, one in pixels.items():
            try:
                vectors[key] = encode(model, [one])[0]
            except Exception as exc:
                self._give_up(lot, [p for p, _ in pending if p.key == key], exc)
        return vectors

    def _store_stage(self, lot: _Lot) -> None:
        """Save the fresh vectors, then score every photo that has one."""
        settled = {o.path for o in lot.outcomes}
        photos = [p for p in lot.photos if p.path not in settled]
        try:
            if lot.reused:  # stored by their earlier batch, unless its store failed (see _reuse)
                known = self.pipeline.cache.get(lot.reused)
                lot.fresh = {**{k: v for k, v in lot.reused.items() if k not in known}, **lot.fresh}
                lot.reused = {}
            if lot.fresh:
                log.debug("storing %d vectors", len(lot.fresh))
                stored = self.pipeline.cache.put(lot.fresh)  # scored in the stored form, as a retag is
                lot.fresh = {}
                for photo in photos:
                    if photo.vector is None and photo.key in stored:
                        photo.vector = stored[photo.key]
            scored = [p for p in photos if p.vector is not None]
            judged = self.pipeline.judge(scored, dry_run=lot.dry_run) if scored else []
            lot.jobs = [WriteJob(p.path, p.key, p.stat, tags, override)
                        for p, (tags, override) in zip(scored, judged, strict=True)]
        except Exception as exc:
            self._give_up(lot, photos, exc)
            lot.jobs = []

    def _write_stage(self, lot: _Lot) -> None:
        """Write each file's keywords (the ledger-first protocol), then report the batch.  Once one
        file found the database unable to take writes (locked by another program, full), the rest of
        the batch waits with it, untouched: each would have waited out the lock in turn, and a batch
        of 32 photos whose vectors were cached said a lock 32 waits late."""
        database: str | None = None  # the database's passing trouble, met by a file of this batch
        for job in lot.jobs:
            if lot.dry_run:
                outcome = self.pipeline.writeback.preview(job, self.pipeline.rules)
            elif database is not None:
                outcome = Outcome(job.path, Status.WAIT, error=database)
            else:
                try:
                    outcome = self.pipeline.writeback.finish(job, self.pipeline.rules)
                except Exception as exc:  # anything unforeseen costs this file only
                    passing = transient_reason(exc)
                    outcome = (Outcome(job.path, Status.WAIT, error=passing) if passing is not None
                               else self.pipeline.give_up(job.path, exc))
                if outcome.status == Status.WAIT and database_fault(outcome.error):
                    database = outcome.error
            self._settle(lot, outcome)
        lot.jobs = []
        self._report(lot)
