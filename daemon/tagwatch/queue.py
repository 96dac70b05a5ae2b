"""The queue between noticing files and tagging them: debounce, dedupe, batches, renames, deletions.

It holds paths, never pixels: a burst of 10,000 new files costs 10,000 short strings, while decoded
images exist only for the batch in hand.  Renames and deletions travel through the same queue as
operations (:class:`Move`, :class:`Delete`), so the store sees them in the order they happened
relative to tagging.  Nothing here knows what a photo is: the watcher puts paths in, the worker
takes batches out.
"""

from __future__ import annotations

import heapq
import itertools
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .store import inside


@dataclass(frozen=True)
class Move:
    src: str
    dst: str
    is_dir: bool = False


@dataclass(frozen=True)
class Delete:
    path: str
    is_dir: bool = False


@dataclass(frozen=True)
class HalfMove(Move):
    """A move inotify reported only the first half of: the photo left ``src`` for a folder made a
    moment before (``mkdir 2025/06 && mv IMG_1017.HEIC 2025/06/``: a sorting script, Nextcloud's
    "sort by month"), which was not watched yet when the photo arrived, and turned up in that
    folder's walk; or for another watched root, whose own watch reported it moved in from nowhere
    (``mv ~/Inbox/IMG_1.jpg ~/Archive/``: see :class:`tagwatch.watcher._Handler`).  The watcher pairs
    it by name alone, where nothing is recorded: ``dst`` and ``also`` are every photo of that name
    found in new folders, or moved in from nowhere, since (phones reuse names: two
    ``IMG_0001.HEIC`` sorted into two new folders in one burst).  Applied, it is the move to the one
    with the size and modification time recorded for ``src``, as the start-up scan pairs a move made
    while no one watched, and ``src`` deleted if none has them
    (:meth:`tagwatch.writeback.Writeback.apply_ops`).  Before, the photo was logged "deleted", its
    sidecar left behind with its keywords and a second one made at the new place.  Here with the
    other ops, not in the watcher: the store's side applies it and imports nothing of watchdog.

    With ``is_dir``, a folder moved to another watched root (``mv ~/Inbox/2026-12-wedding
    ~/Archive/``), paired by the folder's name with the folders moved in from nowhere since: applied,
    the move of every record under ``src`` to the candidate where the photos found at their places
    have the sizes and times recorded, nothing being recorded there yet; the deletion of the photos
    recorded under ``src`` if none has (:meth:`tagwatch.writeback.Writeback._folder_moved_here`)."""

    also: tuple[str, ...] = ()

    @property
    def candidates(self) -> tuple[str, ...]:
        """Where the photo may be now, the latest found first."""
        return (self.dst, *self.also)


Op = Move | Delete  # a HalfMove is a Move: where it is not known to be one, it is the move it names


def heads(op: Op) -> tuple[str, ...]:
    """The paths ``op`` names: a move's two (a half-seen move's every candidate), a deletion's one."""
    if isinstance(op, HalfMove):
        return (op.src, *op.candidates)
    return (op.src, op.dst) if isinstance(op, Move) else (op.path,)


def replaced(op: Op) -> bool:
    """Is ``op`` a deletion of a path that is there again: a replace, not a deletion?  A polling
    observer sees an atomic replace as delete + create, and an exchange of names (tagwatch's own
    write, see :mod:`tagwatch.atomic`) reports the photo moved to a hidden name.  Its record stays
    (:meth:`~tagwatch.writeback.Writeback.apply_ops`), so does its place among the photos waiting
    for the database or the model (``tagwatch.worker._follow``), and the status is not told it gone
    (``Worker._handle``)."""
    return isinstance(op, Delete) and os.path.lexists(op.path)


def named(op: Op, paths: Iterable[str]) -> list[str]:
    """Those of ``paths`` that ``op`` moves or deletes: its photo's, or those inside its folder
    (:func:`~tagwatch.store.inside`).  The queue's paths follow it (:meth:`BatchQueue.op`), and so do
    the worker's lists of photos waiting for the database or the model."""
    old = op.src if isinstance(op, Move) else op.path
    return [path for path in paths if path == old or (op.is_dir and inside(path, [old]))]


def renamed(op: Move, path: str) -> str:
    """The name ``op`` gives ``path`` (one of :func:`named`'s: a folder's move renames what is in it)."""
    return op.dst + path[len(op.src):]


def touches(op: Op, path: str) -> bool:
    """Does ``path`` fall under ``op``: one of its :func:`heads`, or inside one where it is a folder's?"""
    names = heads(op)
    if path in names:
        return True
    return op.is_dir and path.startswith(tuple(name.rstrip("/") + "/" for name in names))


def overlaps(first: Op, second: Op) -> bool:
    """Do two ops name a path in common (or one inside the other's folder)?  Only such ops must be
    applied in the order they happened: a rename ``a -> b`` then ``b -> c``, a rename then a
    deletion of the same photo, a photo renamed away and another one's rename to its old name."""
    return any(touches(first, path) for path in heads(second)) or any(
        touches(second, path) for path in heads(first))


@dataclass
class Batch:
    ops: list[Op] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.ops or self.paths)


# A backlog's batch on a CPU.  Measured on a 2-core EPYC (ViT-B-32-256 int8, 2 threads, CPU time per
# photo): batches of 4, 8 and 16 cost 46-54 ms, 32 cost 60-62 ms and 64 cost 67-69 ms (the activations of
# a large batch fall out of the caches).  And the smaller the batch, the sooner the writes of the first
# one start and the less is left to write after the last encode.  The fixed costs of a batch (a round
# trip to the model's child, one SQLite transaction) are under a millisecond a photo at 16.
BACKLOG_BATCH = 16


TAIL_BATCH = 4  # the smallest batch a backlog's first and last batches are cut down to


def backlog_take(left: int, backlog: int, first: bool = False) -> int:
    """How many of the ``left`` photos of a backlog the next batch takes: ``backlog``, but the last
    two batches' worth go in halves down to :data:`TAIL_BATCH` and the first batch is half one.
    A batch is written only after all of it is encoded: small last batches leave a few photos, not a
    backlog's batch, to write once the encoder is done, and a small first one starts the encoder as
    soon as the model is loaded rather than when a whole batch is decoded."""
    least = min(TAIL_BATCH, backlog)
    take = backlog if left > 2 * backlog else max(least, -(-left // 2))
    if first:
        take = min(take, max(least, backlog // 2))
    if left - take < least and left <= backlog:
        return left  # never a batch under TAIL_BATCH after it
    return take


def backlog_batch(size: int, device: str) -> int:
    """The batch a backlog is handed out in: :data:`BACKLOG_BATCH` on a CPU; elsewhere (a GPU, which
    wants large batches and has not been measured here) the configured ``size``."""
    return BACKLOG_BATCH if device.startswith("cpu") else max(size, BACKLOG_BATCH)


class BatchQueue:
    """Deduplicating, debouncing, bounded queue of paths that hands out batches.

    ``put`` (re)starts a path's settle time: a file still being written keeps receiving events and
    is not handed out until they stop.  ``get`` returns ``size`` ready paths at once; fewer when no
    other file is still settling (a lone dropped photo goes straight through) or once the oldest
    ready path has waited ``max_wait`` seconds for company.  ``size`` and ``max_wait`` are about
    latency; a backlog (more than ``size`` ready or still settling: the start-up scan, a folder
    copied or moved in, its photos' events arriving over some milliseconds) is handed out ``backlog``
    at a time whatever ``size`` is (:func:`backlog_batch`; its first batch and its last ones smaller,
    as a scan's: :func:`backlog_take`): throughput is the
    encoder's, and the engine keeps the next batches decoded meanwhile.  Where ``size`` is the larger
    (the default 32 on a CPU), a batch never exceeds ``backlog`` and goes as soon as it has that many.
    """

    def __init__(self, size: int, max_wait: float, settle: float, maxsize: int = 100_000,
                 backlog: int = BACKLOG_BATCH) -> None:
        self.size, self.max_wait, self.settle, self.maxsize = size, max_wait, settle, maxsize
        self.backlog = backlog
        self._due: dict[str, float] = {}  # waiting to settle: path → due time
        self._heap: list[tuple[float, int, str]] = []
        self._ready: OrderedDict[str, float] = OrderedDict()  # settled: path → time it became ready
        self._ops: list[Op] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._closed = False
        self._woken = False
        self._bursting = False  # the last batch handed out was a backlog's: the next is not its first
        # told each rename or deletion queued, once the paths it names are moved or taken out: the
        # worker's count of the photos waiting for the database follows them at once
        # (Worker._database_follows)
        self.on_op: Callable[[Op], None] | None = None

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

    def hurry(self, paths: Iterable[str]) -> None:
        """Make those of ``paths`` still waiting out a delay due now (photos backing off from a
        trouble that has passed); a path not queued (in a batch now, or gone) is left alone."""
        now = time.monotonic()
        with self._cond:
            for path in paths:
                if path in self._due:
                    self._due[path] = now
                    heapq.heappush(self._heap, (now, next(self._seq), path))
            self._cond.notify_all()

    def op(self, operation: Op) -> None:
        """Queue a rename or deletion; a queued path that moved is queued under its new name, and
        one deleted is queued no more.  :attr:`on_op` is told after, outside the queue's lock."""
        with self._cond:
            self._follow(operation, self._named(operation))
            self._ops.append(operation)
            self._cond.notify_all()
        if self.on_op is not None:
            self.on_op(operation)

    def follow(self, operation: Op) -> None:
        """Move or take out again, as :meth:`op` did, the paths queued now that ``operation`` names
        and that are gone from disk: photos a batch that held them (a locked database's wait) put
        back in the queue after ``operation`` moved or took them out.  They were tried at their
        old name, and counted waiting by `tagwatch status` meanwhile; a photo there again (a new
        one saved under the name) stays."""
        with self._cond:
            named = self._named(operation)
        gone = [path for path in named if not os.path.lexists(path)]  # not under the queue's lock
        with self._cond:
            self._follow(operation, gone)
            self._cond.notify_all()

    def _named(self, operation: Op) -> list[str]:
        """The paths queued that ``operation`` moves or deletes (a folder's: those inside it)."""
        return named(operation, itertools.chain(self._due, self._ready))

    def _follow(self, operation: Op, paths: Iterable[str]) -> None:
        """Queue those of ``paths`` still queued under their new name (a move), or no more (a
        deletion).  Under the queue's lock."""
        for path in paths:
            for pending in (self._due, self._ready):
                if path not in pending:
                    continue
                value = pending.pop(path)
                if isinstance(operation, Move):
                    new = renamed(operation, path)
                    pending[new] = value
                    if pending is self._due:
                        heapq.heappush(self._heap, (value, next(self._seq), new))

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
                full = min(self.size, self.backlog)  # a backlog's batch is full too, if smaller
                # More than a batch ready or still settling (a folder copied or moved in, arriving
                # over a few milliseconds or seconds): a backlog, handed out a backlog's batch at a
                # time; waiting for the rest of it is bounded by max_wait like any batch's.
                # Its batches start and end small as a scan's do (:func:`backlog_take`): the encoder
                # starts sooner and less is left to write after its last batch.
                left = len(self._ready) + len(self._due)
                burst = left > full
                take = backlog_take(left, self.backlog, first=not self._bursting) if burst else full
                if self._ops or len(self._ready) >= take or lone_or_waited:
                    batch = Batch(self._ops, [])
                    self._ops = []
                    limit = take if burst else self.size
                    while self._ready and len(batch.paths) < limit:
                        batch.paths.append(self._ready.popitem(last=False)[0])
                    self._bursting = burst and bool(self._ready or self._due)  # a next burst starts small
                    self._cond.notify_all()  # room for blocked producers
                    return batch
                if self._woken or (deadline is not None and now >= deadline):
                    self._woken = False
                    return Batch()
                wake_at = [t for t in (deadline, oldest + self.max_wait if oldest is not None else None,
                                       self._heap[0][0] if self._heap else None) if t is not None]
                self._cond.wait(max(0.0, min(wake_at) - now) if wake_at else None)
