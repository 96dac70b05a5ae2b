"""The local engine's driver: the thread that takes batches off the queue and hands them to the
:class:`~tagwatch.engine.Engine`, which runs the stages overlapped; and the state of what it retries
(files still being written, files waiting for a disk to recover).

A photo queued again while a batch in flight holds it goes back to the queue to wait for that batch
(:data:`HELD_DELAY`); the others of its batch go on.  Renames and deletions are applied here, in queue
order: first the batches in flight that hold a path an operation names are finished
(``Engine.wait_clear``), so the store sees them in the order they happened relative to tagging.
Those the database cannot take now (its disk full, a backup's lock) wait and are applied again in
that order, with the later ops and photos that name their paths behind them
(:meth:`Worker._ops_wait`).  A tag-list reload waits for every batch in flight (its re-score writes
files too); one that finds the database unable to take writes (a backup's lock) is run again later,
backing off as a photo does (:meth:`Worker.rescore_waits`).  Outcomes come back from the engine's
threads, so the retry state is locked.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .engine import Engine
from .outcomes import Outcome, Status, record_failure
from .pipeline import Pipeline
from .queue import Batch, BatchQueue, Delete, Move, Op, named, renamed, replaced, touches
from .retry import (
    DATABASE_LOCK_WAIT_S,
    EXIFTOOL_TRIES,
    QUIET_S,
    Backoff,
    StillWriting,
    database_fault,
    database_locked,
    exiftool_fault,
    transient_reason,
)
from .store import inside
from .wording import counted

log = logging.getLogger(__name__)

# A photo queued again while a batch still tags it (its move in seen after the start-up scan found it,
# an app touching it after a copy) goes back to the queue for this long, as often as it takes, instead
# of holding the rest of its batch, and every batch behind it, until that batch is done: at a daemon's
# start that is the model's whole load.
HELD_DELAY = 0.25


def _shared(reason: str | None) -> str | None:
    """Which passing trouble every photo waits on alike, said once while it lasts rather than once
    per photo: the database's, or the model's (its process killed while loading)."""
    text = reason or ""
    return "database" if database_fault(reason) else "model" if text.startswith("model:") else None


def _key(op: Op) -> str:
    """The path an op is counted by among what waits for the database (a move by its photo's old one)."""
    return op.src if isinstance(op, Move) else op.path


def _follow(waiting: set[str], op: Op) -> None:
    """The photos of ``waiting`` (for the database, the model) that ``op`` deleted leave it, and
    those it moved wait under their new name, as the queue has them (:func:`~tagwatch.queue.named`,
    :func:`~tagwatch.queue.renamed`).  A deletion of a photo that is there again
    (:func:`~tagwatch.queue.replaced`: the exchange of names of tagwatch's own write, an atomic save
    seen by a polling observer) leaves it waiting."""
    if replaced(op):
        return
    there = named(op, waiting)
    waiting.difference_update(there)
    if isinstance(op, Move):
        waiting.update(renamed(op, key) for key in there)


@dataclass
class _DatabaseTrouble:
    """The database's passing trouble (a backup's lock, a full disk) while it lasts: its reason, the
    photos waiting for it, and the renames and deletions (by :func:`_key`) waiting to be recorded.
    Kept apart: a photo deleted while it waits leaves the first (:meth:`Worker._database_follows`),
    where its deletion, waiting too, is in the second until recorded; in one set, the line when the
    database took writes again counted the deleted photos, and renames and deletions as photos."""

    reason: str
    photos: set[str] = field(default_factory=set)
    ops: set[str] = field(default_factory=set)


def _tried_now(n: int) -> str:
    """The end of the line said when a trouble photos waited for is over: "the 3 photos that waited
    for it are tried now", "the 1 photo … is" (the model's line said "the 1 photos … are")."""
    return f"the {counted(n, 'photo')} that waited for it {'is' if n == 1 else 'are'} tried now"


class Worker(threading.Thread):
    """The thread that feeds the engine batches from the queue and settles what they return."""

    def __init__(self, queue: BatchQueue, pipeline: Pipeline, reload: Callable[[], None],
                 observe: Callable[[list[Outcome]], None] | None = None,
                 resume: Callable[[], None] | None = None,
                 gone: Callable[[str, bool], None] | None = None, quiet: float = QUIET_S,
                 lock_wait: float = DATABASE_LOCK_WAIT_S) -> None:
        super().__init__(name="tagwatch-worker", daemon=True)
        self.queue, self.pipeline, self._reload = queue, pipeline, reload
        # a re-score that met a locked database is resumed with this alone (the daemon's: the re-score
        # from where it stopped), not the whole reload: the list is read, said and encoded once
        self._resume = resume or reload
        self._observe = observe  # told every batch's outcomes: the counters `status` shows
        self._gone = gone  # told each deletion recorded (path, is_dir): a last error of it is resolved
        self._backoff = Backoff()  # files waiting for a passing disk or network problem to pass
        self._writing = StillWriting(quiet)  # files that look cut short: still being copied?
        self._trouble: dict[str, str] = {}  # "model" → its passing problem, while it lasts
        self._waited: dict[str, set[str]] = {}  # the photos that waited on it (the database's: below)
        self._faults: dict[str, tuple[int, int]] = {}  # photo → exiftool faults on it running, progress then
        # photos tagged so far under each watched folder: has exiftool worked on others beside a photo
        # since its fault?  Per folder, as a stuck share beside a local folder stalls only its own
        self._progress: dict[str, int] = {}
        self._retry_lock = threading.Lock()  # outcomes arrive from the engine's threads
        # photos put back in the queue while a batch held them: in both, and counted once by waiting()
        self._requeued: set[str] = set()
        self._reload_requested = threading.Event()
        # The database's trouble (a backup's lock), behind a lock of its own, taken last: the store's
        # commit hook (_database_back) takes it on whichever thread wrote, the retry lock held or not.
        # A reload whose re-score met it runs again at _rescore_at (monotonic), backing off as a
        # photo does (None: none waits); _database_waited: the photos that met it, while it lasts
        self._database_lock = threading.Lock()
        self._rescore = Backoff()
        self._rescore_at: float | None = None
        self._rescore_reason: str | None = None  # why it waits, until it is done (database_waits)
        self._database_waited: _DatabaseTrouble | None = None
        # renames and deletions the database could not record for that trouble, with its reason, in
        # the order they happened (this thread's alone), applied again at _ops_at (monotonic, under
        # _database_lock: _database_back sets it), backing off as a photo does (_ops_wait); and the
        # photos held back behind them (queued again, hurried once none of them names the photo)
        self._ops: list[tuple[Op, str]] = []
        self._ops_at: float | None = None
        self._ops_backoff = Backoff()
        self._behind: set[str] = set()
        pipeline.store.on_commit = self._database_back
        queue.on_op = self._database_follows
        self._when_settled: list[Callable[[], None]] = []  # told once nothing is queued or in flight
        self.batches = 0
        self.idle = threading.Event()
        # photo batches wait DATABASE_LOCK_WAIT_S (the config's database_lock_wait) for a locked
        # database, then WAIT (said at once); so do a re-score and the renames and deletions
        self._lock_wait = lock_wait
        self.engine = Engine(pipeline, on_idle=queue.wake, lock_wait_s=lock_wait)

    def waiting(self) -> int:
        """Photos waiting, as ``tagwatch status`` counts them: the queue's and those a batch holds (a
        locked database or a silent exiftool holds a batch), a photo in both counted once: one edited
        while its batch was held said "4 waiting" for 3."""
        with self._retry_lock:
            requeued = list(self._requeued)
        return len(self.queue) + self.engine.held() - len(self.engine.in_flight(requeued))

    def when_settled(self, call: Callable[[], None]) -> None:
        """Call ``call`` (on this thread) once every photo queued before now is settled: nothing in
        the queue, waiting out a backoff included, and no batch in flight.  Photos arriving all the
        while put it off, as they should: they are not settled either."""
        with self._retry_lock:
            self._when_settled.append(call)
        self.queue.wake()

    def database_waits(self) -> dict[str, str]:
        """What waits for the database's trouble now, with its reason: "photos" (in the queue, backing
        off) and "rescore" (a tag list's, or the overrides'), for ``tagwatch status``: it showed a
        time to clear the queue at the rate measured before the lock, and nothing of a re-score."""
        with self._database_lock:
            waits = {"photos": self._database_waited.reason} if self._database_waited is not None else {}
            if self._rescore_reason is not None:
                waits["rescore"] = self._rescore_reason
        return waits

    def request_reload(self) -> None:
        self._reload_requested.set()
        self.queue.wake()

    def run(self) -> None:
        try:
            while True:
                with self._database_lock:  # set by the engine's threads too (_database_back)
                    due = self._rescore_at is not None and time.monotonic() >= self._rescore_at
                    asked = self._reload_requested.is_set()
                    if asked or due:
                        self._rescore_at = None
                if asked or due:
                    # a reload asked for re-scores anyway: the waiting re-score is its
                    call = self._reload if asked else self._resume
                    self._reload_requested.clear()
                    self.engine.drain()  # a re-score writes files too: one writer per file
                    self._guard(lambda c=call: self._reloading(c))
                deferred = self.pipeline.take_deferred()
                if deferred:
                    self._guard(lambda d=deferred: self._settle(d))
                batch = self.queue.get(timeout=1.0)
                if batch is None:
                    return
                if not batch and not self._ops_due():
                    if not self.engine.busy:
                        self.idle.set()
                        # a waiting re-score is not settled: its photos keep the old list's keywords
                        if not len(self.queue) and "rescore" not in self.database_waits():
                            self._settled()
                    continue
                self.idle.clear()
                self._guard(lambda b=batch: self._handle(b))
                self.batches += 1
        finally:
            self.engine.close()  # finish the batches in flight
            self._guard(self._last_try)

    def _last_try(self) -> None:
        """The daemon stops while renames and deletions wait for the database: they are tried once
        more, in order, without waiting for a lock (a stop does not: see docs/faults.md), and what
        still cannot be recorded is said in one line.  They are kept nowhere else (the full disk is
        the database's, and holds the daemon's state file too): the next start's scan finds what
        they did as it finds what was done while no daemon watched.  A photo moved under its own
        name (into another folder) is recorded moved, as a rename seen live is, and a deleted one
        deleted.  One renamed is seen as gone and as a new photo: the old name's record is marked
        deleted, the new name tagged with the vector kept by its content (not encoded again),
        tagwatch's keywords in it recorded tagwatch's again (as a copy's: Writeback.adopt), and a
        correction naming its old name follows it (Pipeline._follow_moved); so does its sidecar
        where the scan finds its picture at that one new name (watcher.renamed_pictures), else it
        stays at the old name without tagwatch's keywords, and the new name gets one of its own."""
        if not self._ops:
            return
        waiting: list[tuple[Op, str]] = []
        with self.pipeline.store.lock_wait(0.0):
            self.pipeline.apply([op for op, _ in self._ops], waiting)
        self._ops = waiting
        renames = sum(isinstance(op, Move) for op, _ in waiting)
        if waiting:  # "1 rename", "2 renames and 1 deletion": the counts there are
            left = " and ".join(counted(n, noun) for n, noun in ((renames, "rename"),
                                                                 (len(waiting) - renames, "deletion")) if n)
            log.warning("%s not recorded as tagwatch stops: %s; the next start's scan finds them, a photo "
                        "renamed as deleted and new (a correction naming its old name follows it, and "
                        "so does its sidecar where its picture is at that one new name)", left,
                        waiting[0][1])

    def _reloading(self, call: Callable[[], None]) -> None:
        """The reload (or the resumed re-score), its writes waiting as a photo batch's for a database
        another program holds locked (DATABASE_LOCK_WAIT_S, not SQLite's 30 s for each changed photo
        in turn); one that meets it is resumed later (:meth:`rescore_waits`)."""
        with self.pipeline.store.lock_wait(self._lock_wait):
            try:
                call()
            except Exception as exc:
                if not self.rescore_waits(exc):
                    self._rescore_ended()  # otherwise: the next wait is news again
                    raise
                return
        self._rescore_ended()  # done: its own line ("re-scored N photos") says so

    def _rescore_ended(self) -> None:
        """No re-score waits any more.  Not before: while a resumed one tries again (a drain, then
        up to DATABASE_LOCK_WAIT_S), it still waits, and `tagwatch status` said nothing of it then."""
        with self._database_lock:
            self._rescore.clear("re-score")
            self._rescore_reason = None

    def rescore_waits(self, exc: BaseException) -> bool:
        """Where ``exc`` is the database's passing trouble (a backup script's lock, a full disk), the
        tag list's re-score that met it waits: run again after 1, 2, 4 … s up to the backoff's cap,
        or as soon as a photo's write shows the database takes writes again; said in one line while
        it lasts.  The re-score starts where it stopped (Pipeline.retag).  False for any other
        error, which is the caller's.  Also the daemon's start's, whose re-score met the lock."""
        reason = transient_reason(exc)
        if not database_fault(reason):
            return False
        with self._database_lock:  # the start asks on its own thread, before this one runs
            first = "re-score" not in self._rescore
            delay = self._rescore.next("re-score")
            self._rescore_at, self._rescore_reason = time.monotonic() + delay, reason
            tries, cap = self._rescore.tries("re-score"), self._rescore.cap
        if first:
            log.warning("the tag list's re-score waits: %s; the photos keep their keywords until it "
                        "resumes, by itself, once the database takes writes again (tried again backing "
                        "off to once every %g s)", reason, cap,
                        extra={"event": "retrying", "reason": reason})
        else:
            log.debug("the tag list's re-score still waits (attempt %d): %s", tries, reason)
        self.queue.wake()
        return True

    def _settled(self) -> None:
        """Everything queued is done (this thread takes batches: none is between the queue and the
        engine): tell those who asked (:meth:`when_settled`)."""
        with self._retry_lock:
            calls, self._when_settled = self._when_settled, []
        for call in calls:
            self._guard(call)

    def _still_writing(self, path: str, st: os.stat_result) -> bool:
        """``StillWriting``, asked from the engine's threads."""
        with self._retry_lock:
            return self._writing(path, st)

    def _handle(self, batch: Batch) -> None:
        # the renames and deletions that wait for the database go first when due: they happened first
        retried = self._ops_due()
        ops = [*(op for op, _ in self._ops), *batch.ops] if retried else batch.ops
        for op in ops:
            self.engine.wait_clear(lambda path, op=op: touches(op, path))
            self.queue.follow(op)  # the photos its batches put back in the queue meanwhile, too
            with self._retry_lock:  # a photo gone from its path starts afresh wherever it went
                self._forget(_key(op), op.is_dir)  # after its batches: what they left is forgotten too
                for waited in self._waited.values():  # the model's trouble: its photos are followed
                    _follow(waited, op)
            self._database_follows(op)
        # what still waits for the database after these: those that wait now, and the later ops
        # behind them (the retried ones are tried again, in order)
        waiting = [] if retried else list(self._ops)
        # a backup's lock is waited out as a photo batch's is, not SQLite's 30 s an op: one not
        # recorded waits, in order, instead of being lost
        with self.pipeline.store.lock_wait(self._lock_wait):
            paths = batch.paths + self.pipeline.apply(ops, waiting)
        self._ops_wait(waiting, retried)
        if self._gone is not None:  # not a photo replaced under its name (queue.replaced): still there
            unrecorded = {op for op, _ in waiting}
            for op in ops:
                if isinstance(op, Delete) and op not in unrecorded and not replaced(op):
                    self._gone(op.path, op.is_dir)
        paths = self._hold_behind(paths)
        held = self.engine.in_flight(paths)
        with self._retry_lock:  # taken off the queue: only the batch holds them, or the queue again
            self._requeued.difference_update(batch.paths)
            self._requeued.update(held)
        if held:  # queued again while a batch tags them: they wait for it, not the photos with them
            for path in held:
                self.queue.put(path, delay=HELD_DELAY, force=True)
            paths = [path for path in paths if path not in held]
        if not paths:
            return
        # selecting (and, with captions on, the whole batch) runs here: as short a wait as the stages'
        with self.pipeline.store.lock_wait(self._lock_wait):
            try:
                self.engine.submit(paths, self._settle, wait_for_writers=self._still_writing)
            except Exception as exc:  # selecting failed (the database): file by file, nothing else running
                self.engine.drain()
                self._settle(self._one_by_one(paths, exc))

    def _forget(self, path: str, is_dir: bool) -> None:
        """Drop what is kept for retrying the photo at ``path``, every photo under it where it is a
        folder's (:func:`~tagwatch.store.inside`: ``/a/b`` holds ``/a/b/x.jpg``, not ``/a/bc/x.jpg``):
        it was deleted or moved away, and the queue dropped or moved it (``BatchQueue.op``), so no outcome
        of it comes back to clear it.  Only the folder's own path was: a photo backing off in a
        folder put back (from the trash) went on from its old attempt, waiting up to 5 minutes,
        with no "not tagged yet" line, and a daemon running for months kept every such path.
        Under ``_retry_lock``."""
        def there(keys: Iterable[str]) -> list[str]:
            return [key for key in keys if key == path or inside(key, [path])] if is_dir else [path]

        for key in there(self._backoff.keys()):
            self._backoff.clear(key)
        for key in there(self._writing.keys()):
            self._writing.forget(key)
        for key in there(self._faults):
            self._faults.pop(key, None)
        self._requeued.difference_update(there(self._requeued))

    def _database_follows(self, op: Op) -> None:
        """The photos waiting for the database's trouble follow ``op`` (:func:`_follow`).  They
        stayed: "the 3 photos that waited for it are tried now" for the one left, the others gone,
        and the moved one, not hurried, waited out its backoff.  Asked as the op is queued
        (``BatchQueue.on_op``), and again once the batches that held its photos are done (a lock's
        wait): those joined the list as they came back.  A replaced photo stays: dropped, it took
        "the database takes writes again" from the photo whose write it was, when the exchange of
        names came before its record."""
        with self._database_lock:
            if self._database_waited is not None:
                _follow(self._database_waited.photos, op)

    def _ops_due(self) -> bool:
        """Are renames and deletions waiting for the database due to be tried again?"""
        with self._database_lock:
            return self._ops_at is not None and time.monotonic() >= self._ops_at

    def _ops_wait(self, waiting: list[tuple[Op, str]], retried: bool) -> None:
        """Settle a batch's renames and deletions: those the database could not record (its disk
        full, a backup's lock), and those behind them, wait (``waiting``: :meth:`Writeback.apply_ops`),
        and are applied again in the order they happened after 1, 2, 4 … s up to the backoff's cap,
        or as soon as a photo's write shows the database takes writes again (``retried``: this batch
        tried them).  Each was logged at ERROR and dropped: a deleted photo stayed recorded, a renamed
        one stayed recorded under its old name and was tagged again under its new one, its
        corrections and sidecar left behind.  The database's trouble is said once while it lasts,
        with the photos waiting on it: they join its line, or say it where none waits; once nothing
        of theirs waits any more, where they were the last to wait, that it is over."""
        before, self._ops = self._ops, waiting
        still = {_key(op) for op, _ in waiting}
        with self._database_lock:
            # those that met it now counted (again, where a write said it over and it came back: said
            # anew); not those that waited on untried, which a write meanwhile may have made due
            met = waiting if retried else waiting[len(before):]
            joined = [self._joins_database_trouble(_key(op), reason, op=True) for op, reason in met]
            said = not joined or joined[0]
            if waiting and (retried or not before):
                self._ops_at = time.monotonic() + self._ops_backoff.next("ops")
            elif not waiting:
                self._ops_at = None
                self._ops_backoff.clear("ops")
            tries = self._ops_backoff.tries("ops")
            over = False
            waited = self._database_waited
            if waited is not None and before:
                done = waited.ops & ({_key(op) for op, _ in before} - still)
                waited.ops.difference_update(done)
                # over where they were the last to wait: not while photos do (on a full disk a small
                # write can pass where a photo's cannot)
                over = bool(done) and not waited.ops and not waited.photos
                if over:
                    self._database_waited = None
            if waited is not None and not waited.photos and not waited.ops:
                # the photos that waited were deleted, and so recorded: nothing waits for it now, and
                # `tagwatch status` no longer says photos do
                self._database_waited = None
        if waiting and not said:
            reason = met[0][1]
            log.warning("renamed and deleted photos are not recorded yet: %s; they wait, and are tried again "
                        "in the order they happened, backing off to once every %g s, until it works",
                        reason, self._ops_backoff.cap, extra={"event": "retrying", "reason": reason})
        elif waiting and retried:
            log.debug("%d renames and deletions still not recorded (attempt %d): %s", len(waiting), tries,
                      waiting[0][1])
        if over:
            log.info("the database takes writes again; the renames and deletions that waited for it are "
                     "recorded")

    def _hold_behind(self, paths: list[str]) -> list[str]:
        """``paths`` less the photos a waiting rename or deletion names (:func:`~tagwatch.queue.touches`),
        which are queued again to wait for it; and, where none waits for them any more, the photos
        that waited, hurried.  A photo at a rename's new name tagged before the rename is recorded
        would be taken for a new one (encoded again, its corrections and ledger left under the old
        name); a new photo at its old name would take the record the rename is to carry."""
        named = lambda path: any(touches(op, path) for op, _ in self._ops)  # noqa: E731
        free = [path for path in self._behind if not named(path)]
        self._behind.difference_update(free)
        self.queue.hurry(free)
        held = [path for path in paths if named(path)]
        if held:
            with self._database_lock:
                delay = max(HELD_DELAY, (self._ops_at or 0.0) - time.monotonic() + HELD_DELAY)
            for path in held:
                log.debug("%s: waits for the rename or deletion before it to be recorded", path)
                self.queue.put(path, delay=delay, force=True)
            self._behind.update(held)
        return [path for path in paths if path not in held]

    def _one_by_one(self, paths: list[str], exc: Exception) -> list[Outcome]:
        """After a batch raised: a passing problem (the database's disk is full) puts every file back
        to wait; anything else is retried file by file, so one bad file costs only its own tags."""
        passing = transient_reason(exc)
        if passing is not None:
            return [Outcome(path, Status.WAIT, error=passing) for path in paths]
        if len(paths) == 1:
            return [self.pipeline.give_up(paths[0], exc)]
        log.warning("batch of %d failed (%s: %s); taking its files one by one", len(paths),
                    type(exc).__name__, exc)
        outcomes: list[Outcome] = []
        for path in paths:
            try:
                outcomes += self.pipeline.process([path], wait_for_writers=self._still_writing)
            except Exception as err:
                passing = transient_reason(err)
                outcomes.append(Outcome(path, Status.WAIT, error=passing) if passing is not None
                                else self.pipeline.give_up(path, err))
        return outcomes

    def _settle(self, outcomes: list[Outcome]) -> None:
        """Count the outcomes and queue again what must be retried: RETRY at once, WAIT after a pause
        that grows while the problem lasts (reported once per file, not once per attempt).  A file
        that failed is stamped with what it failed under, so a re-score does not try it again for
        nothing (see Pipeline.remember_failures)."""
        with self._retry_lock:
            outcomes = [self._bounded(o) for o in outcomes]
        if self._observe is not None:
            self._observe(outcomes)
        with self._retry_lock:
            self._retry(outcomes)
        try:
            self.pipeline.remember_failures(outcomes)
        except Exception as exc:  # the database busy, say: it costs one needless retry at a re-score
            log.debug("failures not stamped: %s: %s", type(exc).__name__, exc)

    def _bounded(self, outcome: Outcome) -> Outcome:
        """``outcome``, or a failure of the file where exiftool failed on this photo too often.

        A dead or silent exiftool is the machine's passing fault: the photo waits, and the next try
        gets a fresh exiftool.  But a file that makes exiftool crash would be tried for ever, so the
        photo on which it ended :data:`EXIFTOOL_TRIES` times running is failed as the file's fault,
        with a line that says so.  A silence counts against the photo only where exiftool tagged
        other photos since its last one: a stuck share silences it on every photo alike, and those
        wait, as for any passing fault of the network.  Other photos count only under the same
        watched folder: a local folder tagged on beside a stuck share failed the share's photos."""
        path = outcome.path
        kind = exiftool_fault(outcome.error) if outcome.status == Status.WAIT else None
        if kind is None:
            if outcome.status != Status.WAIT:  # settled, or to be taken afresh: no entry left behind
                self._faults.pop(path, None)
            if outcome.status == Status.TAGGED:
                root = self._root(path)
                self._progress[root] = self._progress.get(root, 0) + 1
            return outcome
        progress = self._progress.get(self._root(path), 0)
        count, seen = self._faults.get(path, (0, -1))
        if kind == "ended" or seen != progress:
            count += 1
        self._faults[path] = (count, progress)
        if count < EXIFTOOL_TRIES:
            return outcome
        self._faults.pop(path, None)
        self._backoff.clear(path)
        how = (outcome.error or "").removeprefix("keywords not written: ")
        reason = (f"keywords not written: exiftool failed on this file {count} times running, the last: "
                  f"{how}; taken as a fault of the file (one exiftool cannot handle), tried again once it "
                  "changes")
        try:
            st: os.stat_result | None = os.lstat(path)
        except OSError:
            st = None
        try:
            failed = record_failure(self.pipeline.store, path, st, reason)
        except Exception as exc:  # the store cannot take it now: the photo waits on
            log.debug("%s: failure not recorded: %s: %s", path, type(exc).__name__, exc)
            return outcome
        return Outcome(path, Status.FAILED, outcome.tags, error=failed.error)

    def _root(self, path: str) -> str:
        """The watched folder ``path`` is under (the longest), or its own folder outside them all."""
        under = [root for root in self.pipeline.roots if path.startswith(root + "/")]
        return max(under, key=len) if under else os.path.dirname(path)

    def _retry(self, outcomes: list[Outcome]) -> None:
        for outcome in outcomes:
            path = outcome.path
            if outcome.status != Status.RETRY:
                self._writing.forget(path)
            if outcome.status == Status.RETRY:
                self.queue.put(path, force=True)  # never wait on the queue only we drain
            elif outcome.status == Status.WAIT:
                first = path not in self._backoff
                delay = self._backoff.next(path)
                # The database's or the model's trouble is every photo's: said once while it lasts
                shared = _shared(outcome.error)
                if shared is None:
                    self.queue.put(path, delay=delay, force=True)
                said = shared is not None and self._waits_for(shared, path, outcome.error or "", delay)
                if shared is not None and not said:
                    log.warning("photos are not tagged yet: %s; they wait and are tried again, backing "
                                "off to once every %g s, until it works", outcome.error, self._backoff.cap,
                                extra={"event": "retrying", "reason": outcome.error})
                elif first and shared is None:
                    log.warning("%s: not tagged yet: %s; trying again in %g s, backing off to once every "
                                "%g s, until it works", path, outcome.error, delay, self._backoff.cap,
                                extra={"event": "retrying", "path": path, "reason": outcome.error})
                else:
                    log.debug("%s: still not tagged (attempt %d): %s", path, self._backoff.tries(path),
                              outcome.error)
            else:
                if path in self._backoff:
                    self._backoff.clear(path)
                if outcome.status in (Status.TAGGED, Status.FAILED, Status.GONE):
                    self._database_back()  # said at the write that showed it, as a rule: no-op then
                # a photo was encoded (the model's trouble is over): the photos that waited on it go
                # now.  Counted by the photos that waited on it, this one included: the backoff's
                # keys left at that moment said 1 for 3
                if "model" in self._trouble and outcome.status == Status.TAGGED:
                    del self._trouble["model"]
                    waited = self._waited.pop("model", set())
                    log.info("the model loads again; %s", _tried_now(len(waited)))
                    # as the database's: those still backing off in the queue, at the names they
                    # have now (a photo renamed while it waited had started afresh, not hurried)
                    self.queue.hurry(waited - {path})

    def _waits_for(self, shared: str, path: str, reason: str, delay: float) -> bool:
        """Queue ``path`` again in ``delay`` s, waiting on ``shared``'s trouble (the database's, the
        model's): was that trouble said already?  A photo waiting for the database is queued under
        the lock the store's commit hook takes, so that a write committed meanwhile either finds it
        queued, to hurry, or leaves the trouble to be said afresh (_database_back)."""
        if shared != "database":
            self._waited.setdefault(shared, set()).add(path)
            said = shared in self._trouble
            self._trouble.setdefault(shared, reason)
            self.queue.put(path, delay=delay, force=True)
            return said
        with self._database_lock:
            said = self._joins_database_trouble(path, reason)
            self.queue.put(path, delay=delay, force=True)
        return said

    def _joins_database_trouble(self, path: str, reason: str, op: bool = False) -> bool:
        """Count ``path`` (a photo's, or an ``op``'s: a rename's or deletion's) as waiting on the
        database's trouble, which ``reason`` begins where none lasts; was it said already?  Under
        ``_database_lock``."""
        said = self._database_waited is not None
        if self._database_waited is None:
            self._database_waited = _DatabaseTrouble(reason)
        (self._database_waited.ops if op else self._database_waited.photos).add(path)
        return said

    def _database_back(self, settled: bool = True) -> None:
        """The store committed a write (its hook, on the thread that wrote it; or a photo's outcome
        that showed it): the database takes writes again.  Said at once, before the "tagged" lines
        of the photos whose write this was: said once their batch was settled, it came after them
        (user round xZ #8).  The photos that waited for it are made due now, and so is a waiting
        re-score; the photos in the batch that wrote are in no queue, and are not tried twice.

        Any write shows a lock gone (all or nothing); other trouble (a full disk) only a write that
        ``settled`` a photo, tagged or failed: a little space come free took a photo's vectors and
        not its record, and "takes writes again" and "not tagged yet" took turns."""
        with self._database_lock:
            waited = self._database_waited
            if not settled and not database_locked(waited.reason if waited else self._rescore_reason):
                return
            if self._rescore_at is not None:
                self._rescore_at = time.monotonic()
                self.queue.wake()
            if self._ops_at is not None:  # the renames and deletions that waited are applied now too
                self._ops_at = time.monotonic()
                self.queue.wake()
            if waited is None or not waited.photos:
                # no photo waits (those that did were deleted): the renames and deletions that wait
                # say it once recorded (_ops_wait); they were counted "the 3 photos that waited"
                return
            self._database_waited = None
            log.info("the database takes writes again; %s", _tried_now(len(waited.photos)))
            self.queue.hurry(waited.photos)

    def _guard(self, work: Callable[[], None]) -> None:
        """Nothing that goes wrong in one batch may stop the daemon."""
        try:
            work()
        except Exception as exc:  # the daemon must survive anything one batch does
            log.error("batch failed: %s: %s", type(exc).__name__, exc,
                      exc_info=log.isEnabledFor(logging.DEBUG))
