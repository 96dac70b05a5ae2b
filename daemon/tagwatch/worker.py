"""The local engine's driver: the thread that takes batches off the queue and hands them to the
:class:`~tagwatch.engine.Engine`, which runs the stages overlapped; and the state of what it retries
(files still being written, files waiting for a disk to recover).

A photo queued again while a batch in flight holds it goes back to the queue to wait for that batch
(:data:`HELD_DELAY`); the others of its batch go on.  Renames and deletions are applied here, in queue
order: first the batches in flight that hold a path an operation names are finished
(``Engine.wait_clear``), so the store sees them in the order they happened relative to tagging.  A
tag-list reload waits for every batch in flight (its re-score writes files too); one that finds the
database unable to take writes (a backup's lock) is run again later, backing off as a photo does
(:meth:`Worker.rescore_waits`).  Outcomes come back
from the engine's threads, so the retry state is locked.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from .engine import Engine
from .outcomes import Outcome, Status, record_failure
from .pipeline import Pipeline
from .queue import Batch, BatchQueue, Delete, Move, Op
from .retry import (
    DATABASE_LOCK_WAIT_S,
    EXIFTOOL_TRIES,
    Backoff,
    StillWriting,
    database_fault,
    database_locked,
    exiftool_fault,
    transient_reason,
)

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


def _names(op: Op) -> Callable[[str], bool]:
    """Does a path in flight fall under ``op`` (a moved or deleted file, or a file in such a folder)?"""
    heads = [op.src, op.dst] if isinstance(op, Move) else [op.path]
    prefixes = tuple(h.rstrip("/") + "/" for h in heads) if op.is_dir else ()
    return lambda path: path in heads or (bool(prefixes) and path.startswith(prefixes))


class Worker(threading.Thread):
    """The thread that feeds the engine batches from the queue and settles what they return."""

    def __init__(self, queue: BatchQueue, pipeline: Pipeline, reload: Callable[[], None],
                 observe: Callable[[list[Outcome]], None] | None = None,
                 resume: Callable[[], None] | None = None) -> None:
        super().__init__(name="tagwatch-worker", daemon=True)
        self.queue, self.pipeline, self._reload = queue, pipeline, reload
        # a re-score that met a locked database is resumed with this alone (the daemon's: the re-score
        # from where it stopped), not the whole reload: the list is read, said and encoded once
        self._resume = resume or reload
        self._observe = observe  # told every batch's outcomes: the counters `status` shows
        self._backoff = Backoff()  # files waiting for a passing disk or network problem to pass
        self._writing = StillWriting()  # files that look cut short: still being copied?
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
        self._database_waited: tuple[str, set[str]] | None = None  # (its reason, the photos)
        # deletions the database could not record for that trouble: path → (due, monotonic; the op),
        # applied again as the queue's are, backing off as a photo does (_deletion_waits)
        self._deletions: dict[str, tuple[float, Delete]] = {}
        self._deleting = Backoff()
        pipeline.store.on_commit = self._database_back
        self._when_settled: list[Callable[[], None]] = []  # told once nothing is queued or in flight
        self.batches = 0
        self.idle = threading.Event()
        # photo batches wait DATABASE_LOCK_WAIT_S for a locked database, then WAIT (said at once)
        self.engine = Engine(pipeline, on_idle=queue.wake, lock_wait_s=DATABASE_LOCK_WAIT_S)

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
            waits = {"photos": self._database_waited[0]} if self._database_waited is not None else {}
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
                for op in self._due_deletions():
                    self.queue.op(op)  # applied in queue order with the ops that came meanwhile
                deferred = self.pipeline.take_deferred()
                if deferred:
                    self._guard(lambda d=deferred: self._settle(d))
                batch = self.queue.get(timeout=1.0)
                if batch is None:
                    return
                if not batch:
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

    def _reloading(self, call: Callable[[], None]) -> None:
        """The reload (or the resumed re-score), its writes waiting as a photo batch's for a database
        another program holds locked (DATABASE_LOCK_WAIT_S, not SQLite's 30 s for each changed photo
        in turn); one that meets it is resumed later (:meth:`rescore_waits`)."""
        with self.pipeline.store.lock_wait(DATABASE_LOCK_WAIT_S):
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
        for op in batch.ops:
            with self._retry_lock:  # a photo gone from its path starts afresh wherever it went
                self._faults.pop(op.src if isinstance(op, Move) else op.path, None)
                self._requeued.discard(op.src if isinstance(op, Move) else op.path)
                if isinstance(op, Delete):
                    self._backoff.clear(op.path)
            self.engine.wait_clear(_names(op))
        waiting: list[tuple[Delete, str]] = []  # deletions the database could not take now
        paths = batch.paths + self.pipeline.apply(batch.ops, waiting)
        self._deletions_applied(batch.ops, waiting)
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
        with self.pipeline.store.lock_wait(DATABASE_LOCK_WAIT_S):
            try:
                self.engine.submit(paths, self._settle, wait_for_writers=self._still_writing)
            except Exception as exc:  # selecting failed (the database): file by file, nothing else running
                self.engine.drain()
                self._settle(self._one_by_one(paths, exc))

    def _deletions_applied(self, ops: list[Op], waiting: list[tuple[Delete, str]]) -> None:
        """Settle the deletions of a batch's ops: those the database could not record (its disk
        full) wait (:meth:`_deletion_waits`); one that waited and is recorded now waits no more."""
        failed = {op.path for op, _ in waiting}
        for op in ops:
            if isinstance(op, Delete) and op.path not in failed:
                self._deletion_recorded(op.path)
        for op, reason in waiting:
            self._deletion_waits(op, reason)

    def _deletion_waits(self, op: Delete, reason: str) -> None:
        """A deletion the database could not take (its disk full, a backup's lock) is applied again
        after 1, 2, 4 … s up to the backoff's cap, or as soon as a photo's write shows the database
        takes writes again: it was logged at ERROR for each photo and dropped, the photo left
        recorded as if it were there.  The database's trouble is said once while it lasts, with the
        photos waiting on it: a deletion joins their line, or says it where none waits."""
        with self._database_lock:
            said = self._joins_database_trouble(op.path, reason)
            delay = self._deleting.next(op.path)
            self._deletions[op.path] = (time.monotonic() + delay, op)
            tries = self._deleting.tries(op.path)
        if said:
            log.debug("%s: its deletion still not recorded (attempt %d): %s", op.path, tries, reason)
        else:
            log.warning("deleted photos are not recorded as deleted yet: %s; they wait, and are tried "
                        "again, backing off to once every %g s, until it works", reason, self._deleting.cap,
                        extra={"event": "retrying", "reason": reason})

    def _deletion_recorded(self, path: str) -> None:
        """A deletion that waited for the database is recorded: it waits no more; where it was the
        last of what waited (no photo waits), the database's trouble is over, and said so."""
        with self._database_lock:
            if path not in self._deleting:
                return
            self._deleting.clear(path)
            self._deletions.pop(path, None)
            waited = self._database_waited
            if waited is None or path not in waited[1]:
                return
            waited[1].discard(path)
            if waited[1]:
                return  # photos still wait: a small write can pass on a full disk where theirs cannot
            self._database_waited = None
        log.info("the database takes writes again; the deletions that waited for it are recorded")

    def _due_deletions(self) -> list[Delete]:
        """The waiting deletions due to be applied again (:meth:`_deletion_waits`), taken."""
        with self._database_lock:
            now = time.monotonic()
            due = [op for at, op in self._deletions.values() if at <= now]
            for op in due:
                del self._deletions[op.path]
        return due

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
                    log.info("the model loads again; the %d photos that waited for it are tried now",
                             len(waited))
                    for other in waited:
                        if other != path and other in self._backoff:
                            self.queue.put(other, delay=0.0, force=True)

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

    def _joins_database_trouble(self, path: str, reason: str) -> bool:
        """Count ``path`` (a photo's, or a deletion's) as waiting on the database's trouble, which
        ``reason`` begins where none lasts; was it said already?  Under ``_database_lock``."""
        said = self._database_waited is not None
        if self._database_waited is None:
            self._database_waited = (reason, set())
        self._database_waited[1].add(path)
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
            if not settled and not database_locked(waited[0] if waited else self._rescore_reason):
                return
            self._database_waited = None
            if self._rescore_at is not None:
                self._rescore_at = time.monotonic()
                self.queue.wake()
            if self._deletions:  # the deletions that waited are applied now too
                now = time.monotonic()
                self._deletions = {path: (now, op) for path, (_, op) in self._deletions.items()}
                self.queue.wake()
            if waited is None:
                return
            log.info("the database takes writes again; the %d photos that waited for it are tried now",
                     len(waited[1]))
            self.queue.hurry(waited[1])

    def _guard(self, work: Callable[[], None]) -> None:
        """Nothing that goes wrong in one batch may stop the daemon."""
        try:
            work()
        except Exception as exc:  # the daemon must survive anything one batch does
            log.error("batch failed: %s: %s", type(exc).__name__, exc,
                      exc_info=log.isEnabledFor(logging.DEBUG))
