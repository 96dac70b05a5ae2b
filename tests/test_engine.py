"""The local engine runs the stages overlapped: what a user notices of it, with real parts.

A stage is held still for real by stopping its process (SIGSTOP on the exiftool that writes, or on the
model's child that encodes), never by a mock: the other stages must go on meanwhile, no file may be in
two batches at once, and a rename waits for the batch that holds its photo.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Env, exif_keywords, exiftool_stand_in, noise_jpeg, read_only_folder, wait_for
from tagwatch import cores
from tagwatch import worker as worker_module
from tagwatch.atomic import exchange
from tagwatch.config import TaggingConfig
from tagwatch.engine import Engine
from tagwatch.outcomes import Outcome, Status
from tagwatch.queue import Batch, BatchQueue, Delete, Move
from tagwatch.retry import EXIFTOOL_TRIES, database_fault, database_locked, sqlite_locked, transient_reason
from tagwatch.store import DELETED, DONE, FAILED
from tagwatch.worker import Worker


@pytest.fixture
def env(tmp_path: Path, tiny_checkpoint: Path) -> Iterator[Env]:
    env = Env(tmp_path, tiny_checkpoint, TaggingConfig(threshold=-1.0, top_k=3))
    yield env
    env.close()


@contextlib.contextmanager
def stopped(pid: int) -> Iterator[None]:
    """The process ``pid`` does nothing (SIGSTOP) until the block ends, whatever happens in it."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


class Collect:
    """A ``done`` for the engine: every outcome, by file name."""

    def __init__(self) -> None:
        self.outcomes: dict[str, Outcome] = {}
        self.lock = threading.Lock()

    def __call__(self, outcomes: list[Outcome]) -> None:
        with self.lock:
            self.outcomes.update((Path(o.path).name, o) for o in outcomes)

    def statuses(self) -> dict[str, str]:
        with self.lock:
            return {name: o.status for name, o in self.outcomes.items()}


def done_rows(env: Env) -> int:
    with env.store.transaction() as db:
        return db.execute("SELECT COUNT(*) FROM files WHERE state = ?", (DONE,)).fetchone()[0]


def test_the_next_batch_is_read_encoded_and_stored_while_a_write_is_stuck(env: Env, tmp_path: Path) -> None:
    first = [noise_jpeg(tmp_path / "in" / f"a{i}.jpg", seed=i) for i in range(3)]
    second = [noise_jpeg(tmp_path / "in" / f"b{i}.jpg", seed=10 + i) for i in range(3)]
    env.model.get()  # loaded, as in a running daemon
    env.exiftool.execute("-ver")  # started, so that it can be stopped
    assert env.exiftool._proc is not None
    collect = Collect()
    engine = Engine(env.pipeline)
    try:
        with stopped(env.exiftool._proc.pid):  # the first batch's first write hangs in exiftool
            engine.submit([str(p) for p in first], collect)
            engine.submit([str(p) for p in second], collect)
            # Both batches read, decoded, encoded and their vectors stored, with no photo written yet
            wait_for(lambda: env.encoded() == 6)
            assert done_rows(env) == 0 and not collect.outcomes
        engine.drain()
    finally:
        engine.close()
    assert collect.statuses() == {p.name: Status.TAGGED for p in first + second}
    assert all(len(exif_keywords(p)["iptc"]) == 3 for p in first + second)


def test_a_photo_in_flight_is_not_taken_by_a_second_batch_until_its_first_is_done(
        env: Env, tmp_path: Path) -> None:
    photo = noise_jpeg(tmp_path / "in" / "once.jpg", seed=1)
    env.model.get()
    env.exiftool.execute("-ver")
    assert env.exiftool._proc is not None
    collect, again = Collect(), Collect()
    engine = Engine(env.pipeline)
    try:
        with stopped(env.exiftool._proc.pid):
            engine.submit([str(photo)], collect)
            wait_for(lambda: env.encoded() == 1)  # in the write stage, which hangs
            second = threading.Thread(target=engine.submit, args=([str(photo)], again))
            second.start()  # the watcher saw the file again (an event of another app)
            second.join(timeout=0.5)
            assert second.is_alive()  # held back: one writer per file
        second.join(timeout=60)
        engine.drain()
    finally:
        engine.close()
    assert collect.statuses() == {"once.jpg": Status.TAGGED}
    assert again.statuses() == {"once.jpg": Status.UNCHANGED}  # admitted after the write: nothing to do
    assert env.encoded() == 1


def test_a_photo_queued_again_while_its_batch_is_in_flight_holds_up_no_other_photo(
        env: Env, tmp_path: Path) -> None:
    """The watcher can queue a photo again while a batch still tags it (its move in seen after the
    daemon's start-up scan found it, an app touching it after a copy).  It waits for that batch; the
    photos queued with it are read, encoded and stored meanwhile, not held until the batch is done
    (at a daemon's start that was the model's whole load)."""
    photo = noise_jpeg(tmp_path / "in" / "a.jpg", seed=1)
    others = [noise_jpeg(tmp_path / "in" / f"b{i}.jpg", seed=10 + i) for i in range(3)]
    env.model.get()
    env.exiftool.execute("-ver")
    assert env.exiftool._proc is not None
    queue = BatchQueue(size=8, max_wait=0.2, settle=0.1)  # what settles together goes together
    worker = Worker(queue, env.pipeline, reload=lambda: None)
    worker.start()
    try:
        with stopped(env.exiftool._proc.pid):  # a.jpg's write hangs: its batch stays in flight
            queue.put(str(photo))
            wait_for(lambda: env.encoded() == 1)
            for path in (photo, *others):  # a.jpg seen again, with three new photos
                queue.put(str(path))
            wait_for(lambda: env.encoded() == 4)  # the three encoded and stored
            assert done_rows(env) == 0  # while a.jpg's batch still waits on its write
        wait_for(lambda: done_rows(env) == 4 and not worker.engine.busy and not len(queue))
    finally:
        queue.close()
        worker.join(timeout=60)
    assert env.encoded() == 4  # a.jpg encoded once: taken again after its batch, it was unchanged
    assert all(len(exif_keywords(p)["iptc"]) == 3 for p in (photo, *others))


def test_a_rename_waits_for_the_batch_that_holds_its_photo(env: Env, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    photo, renamed = folder / "a.jpg", folder / "b.jpg"
    noise_jpeg(photo, seed=1)
    assert env.run(photo) == {"a.jpg": Status.TAGGED}
    queue = BatchQueue(size=8, max_wait=0, settle=0)
    worker = Worker(queue, env.pipeline, reload=lambda: None)
    worker.start()
    try:
        child = env.model.get().pid
        assert child is not None
        with stopped(child):  # the model's child hangs: the photo's batch stays in the encode stage
            noise_jpeg(photo, seed=2)  # edited: new pixels, to be tagged again
            queue.put(str(photo))
            wait_for(lambda: worker.engine.busy)
            photo.rename(renamed)
            queue.op(Move(str(photo), str(renamed)))
            wait_for(lambda: not queue._ops)  # the worker took the rename
            time.sleep(0.5)  # and would have applied it by now, were it not waiting
            # It holds the rename until the batch holding a.jpg is done
            assert env.store.file(str(renamed)) is None and env.store.file(str(photo)) is not None
        wait_for(lambda: (row := env.store.file(str(renamed))) is not None and row.state == DONE)
    finally:
        queue.close()
        worker.join(timeout=60)
    assert not worker.is_alive()
    assert len(exif_keywords(renamed)["iptc"]) == 3
    row = env.store.file(str(photo))
    assert row is None or row.state != DONE


def test_a_failure_in_one_stage_costs_only_its_files_and_the_engine_goes_on(env: Env, tmp_path: Path) -> None:
    good = [noise_jpeg(tmp_path / "in" / f"good{i}.jpg", seed=i) for i in range(3)]
    truncated = tmp_path / "in" / "truncated.jpg"
    truncated.write_bytes(noise_jpeg(tmp_path / "whole.jpg", seed=7).read_bytes()[:600])  # decode fails
    locked = noise_jpeg(tmp_path / "locked" / "locked.jpg", seed=8)  # its write fails
    later = noise_jpeg(tmp_path / "in" / "later.jpg", seed=9)
    collect = Collect()
    engine = Engine(env.pipeline)
    try:
        with read_only_folder(locked.parent):
            engine.submit([str(p) for p in (*good, truncated, locked)], collect)
            engine.drain()
        engine.submit([str(later)], collect)
        engine.drain()
    finally:
        engine.close()
    statuses = collect.statuses()
    assert statuses.pop("truncated.jpg") == Status.FAILED and statuses.pop("locked.jpg") == Status.FAILED
    assert statuses == {p.name: Status.TAGGED for p in (*good, later)}
    assert not exif_keywords(locked)["iptc"]


class DecodeSpy:
    """Wraps the engine's decode: counts the decodes running at once, apart while the model is loading
    and once it is loaded.  Each decode is held 50 ms (the photos are small) so that two decode threads
    free to run together do."""

    def __init__(self, real: object, model: object) -> None:
        self.real, self.model = real, model
        self.lock = threading.Lock()
        self.running = 0
        self.most = {False: 0, True: 0}  # loaded at the start of the decode → most at once
        self.count = {False: 0, True: 0}

    def __call__(self, *args: object) -> object:
        loaded = bool(self.model.loaded)  # type: ignore[attr-defined]
        with self.lock:
            self.running += 1
            self.count[loaded] += 1
            self.most[loaded] = max(self.most[loaded], self.running)
        try:
            time.sleep(0.05)
            return self.real(*args)  # type: ignore[operator]
        finally:
            with self.lock:
                self.running -= 1


def test_on_two_cores_photos_decode_one_at_a_time_while_the_model_loads(
        env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The model's child loading (torch, the tower) is what the first photos wait for; on a machine with
    no more cores than decode threads it gets one of its own, and both decode threads run once it is
    loaded.  The child is held still (SIGSTOP) while the first batch decodes, so that batch decodes
    while the model is surely loading."""
    import tagwatch.engine as engine_module

    env.model.get()  # its input spec known, as a daemon's is from its data folder
    env.model.end()  # ... and the model not loaded: the next photo starts its child again
    assert not env.model.loaded and env.model.preprocess is not None
    monkeypatch.setattr(engine_module.cores, "usable", lambda: 2)
    spy = DecodeSpy(engine_module.decode, env.model)
    monkeypatch.setattr(engine_module, "decode", spy)
    first = [noise_jpeg(tmp_path / "in" / f"a{i}.jpg", seed=i) for i in range(8)]
    second = [noise_jpeg(tmp_path / "in" / f"b{i}.jpg", seed=20 + i) for i in range(8)]
    collect = Collect()
    engine = Engine(env.pipeline)
    try:
        engine.submit([str(p) for p in first], collect)
        wait_for(lambda: env.model.encoder is not None and env.model.encoder.pid is not None)
        assert env.model.encoder is not None and env.model.encoder.pid is not None
        with stopped(env.model.encoder.pid):
            wait_for(lambda: spy.count[False] == len(first))
            assert not env.model.loaded
        engine.drain()
        engine.submit([str(p) for p in second], collect)
        engine.drain()
    finally:
        engine.close()
    assert set(collect.statuses().values()) == {Status.TAGGED} and len(collect.outcomes) == 16
    assert spy.count == {False: 8, True: 8}
    assert spy.most[False] == 1  # one decode at a time while the child loaded
    assert spy.most[True] == 2  # both threads once it was loaded


@pytest.mark.parametrize("dry_run", [False, True])
def test_copies_in_later_batches_than_their_originals_are_not_encoded_again(
        env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dry_run: bool) -> None:
    """12 new photos and a ``cp -r`` of them, one scan (xX #4): the copies' batches looked their keys
    up in the cache before the originals' batches had stored their vectors, and 17 pictures were
    encoded for 12.  The model's child is held still until every photo is decoded, so that every
    copy surely misses the cache: each copy must take its original's vector, not be encoded."""
    import tagwatch.engine as engine_module

    originals = [noise_jpeg(tmp_path / "a" / f"p{i}.jpg", seed=i) for i in range(12)]
    (tmp_path / "b").mkdir()
    copies = [Path(shutil.copyfile(p, tmp_path / "b" / f"copy{i}.jpg")) for i, p in enumerate(originals)]
    spy = DecodeSpy(engine_module.decode, env.model)
    monkeypatch.setattr(engine_module, "decode", spy)
    child = env.model.get().pid
    assert child is not None
    paths = [str(p) for p in originals + copies]
    collect = Collect()
    engine = Engine(env.pipeline)
    try:
        with stopped(child):  # the first batch waits in the encoder: nothing is stored meanwhile
            for start in range(0, len(paths), 4):  # the copies in the fourth to sixth batches
                engine.submit(paths[start:start + 4], collect, dry_run=dry_run)
            wait_for(lambda: sum(spy.count.values()) == 24)  # all decoded: no copy found cached
        engine.drain()
    finally:
        engine.close()
    assert env.encoded() == 12
    assert collect.statuses() == {p.name: Status.TAGGED for p in originals + copies}
    for original, copy in zip(originals, copies, strict=True):
        assert collect.outcomes[copy.name].tags == collect.outcomes[original.name].tags != []
        if not dry_run:
            assert exif_keywords(copy) == exif_keywords(original)


@pytest.mark.parametrize(("cores", "at_once"), [(1, 1), (2, 1), (3, None), (8, None)])
def test_decodes_are_held_back_during_a_load_only_where_the_child_would_have_no_core(
        monkeypatch: pytest.MonkeyPatch, cores: int, at_once: int | None) -> None:
    import tagwatch.engine as engine_module

    monkeypatch.setattr(engine_module.cores, "usable", lambda: cores)
    gate = engine_module._decodes_while_loading(2)
    if at_once is None:
        assert gate is None
    else:
        assert gate is not None
        taken = [gate.acquire(blocking=False) for _ in range(3)]
        assert taken.count(True) == at_once


@pytest.mark.skipif(sys.platform != "linux", reason="only Linux gives each thread its own niceness")
def test_a_backlog_decodes_at_a_lower_priority_than_the_model_and_exiftool_a_lone_photo_does_not(
        env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In a backlog, decoding, the stage with threads to spare, gives way to the model's child and
    exiftool, the serial stages (200 photos indexed ~4% sooner on two cores, docs/speed.md).  Those
    two keep the process's priority although the first photo starts them: a process started from a
    thread that gave way would inherit its niceness for good.  A lone photo has nothing of ours to
    give way to and decodes at the process's priority: niceness weighs against the whole machine, and
    a drop on a busy box waited seconds.  A fresh spawner, as in a process that has started no child
    yet: its thread is made by whichever thread first needs a child."""
    import tagwatch.engine as engine_module
    from tagwatch import exiftool, prestart

    env.model.get()  # its input spec known ...
    env.model.end()  # ... and no child: the first photo starts it
    spawner = exiftool._Spawner()
    monkeypatch.setattr(exiftool, "_spawner", spawner)
    monkeypatch.setattr(prestart, "_spawner", spawner)
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    lone = noise_jpeg(tmp_path / "in" / "lone.jpg", seed=99)
    first = [noise_jpeg(tmp_path / "in" / f"a{i}.jpg", seed=i) for i in range(3)]
    second = [noise_jpeg(tmp_path / "in" / f"b{i}.jpg", seed=10 + i) for i in range(3)]
    names = {p.read_bytes(): p.name for p in [lone, *first, *second]}
    niceness: dict[str, int] = {}
    second_decoded = threading.Event()
    real = engine_module.decode

    def decode(data: bytes, spec: object, path: str) -> object:
        niceness[names[data]] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        if all(p.name in niceness for p in second):
            second_decoded.set()
        return real(data, spec, path)  # type: ignore[arg-type]

    def first_done(outcomes: list[Outcome]) -> None:  # the first batch stays in flight meanwhile
        second_decoded.wait(timeout=60)
        collect(outcomes)

    monkeypatch.setattr(engine_module, "decode", decode)
    collect = Collect()
    engine = Engine(env.pipeline)
    try:
        engine.submit([str(lone)], collect)
        engine.drain()
        assert env.model.encoder is not None and env.model.encoder.pid is not None
        assert env.exiftool.pid is not None
        assert os.getpriority(os.PRIO_PROCESS, env.model.encoder.pid) == ours
        assert os.getpriority(os.PRIO_PROCESS, env.exiftool.pid) == ours
        engine.submit([str(p) for p in first], first_done)
        engine.submit([str(p) for p in second], collect)
        engine.drain()
    finally:
        engine.close()
    assert set(collect.statuses().values()) == {Status.TAGGED} and len(collect.outcomes) == 7
    assert niceness["lone.jpg"] == ours
    assert [niceness[p.name] for p in second] == [min(19, ours + cores.DECODE_NICENESS)] * 3
    assert all(len(exif_keywords(p)["iptc"]) == 3 for p in [lone, *first, *second])


# The stand-in's input (conftest.exiftool_stand_in): silent for good (a stuck share) from the first
# command that names a photo under a folder called "nas"
HANGS_ON_NAS = """for line in sys.stdin.buffer:
    if b"/nas/" in line:
        while True:
            time.sleep(60)
    real.stdin.write(line)
    real.stdin.flush()
"""


def test_a_stuck_share_beside_a_local_folder_keeps_its_photo_waiting_not_failed(
        env: Env, tmp_path: Path) -> None:
    """watch = [local folder, NAS]: the NAS stops answering while local photos keep being tagged.
    The NAS photo waits however often its silent exiftool is stopped (docs/faults.md); the local
    tagging counted as "exiftool worked on other photos" and failed it for good after 3 tries."""
    stand_in = exiftool_stand_in(tmp_path / "bin", HANGS_ON_NAS)
    env.exiftool.close()
    env.exiftool.executable, env.exiftool.timeout, env.exiftool.notice = str(stand_in), 1.5, 1.0
    local, nas = tmp_path / "local", tmp_path / "nas"
    env.pipeline.confine([local, nas])
    stuck = noise_jpeg(nas / "stuck.jpg", seed=1)
    queue = BatchQueue(size=8, max_wait=0, settle=0)
    seen: list[Outcome] = []
    made = [0]

    def observe(outcomes: list[Outcome]) -> None:
        """Each time the NAS photo waits, a new local photo arrives and is tagged before its retry."""
        seen.extend(outcomes)
        for outcome in outcomes:
            if outcome.path == str(stuck) and outcome.status == Status.WAIT:
                made[0] += 1
                queue.put(str(noise_jpeg(local / f"l{made[0]}.jpg", seed=100 + made[0])))

    worker = Worker(queue, env.pipeline, reload=lambda: None, observe=observe)
    worker.start()
    try:
        queue.put(str(stuck))
        waits = lambda: [o.status for o in seen if o.path == str(stuck)]  # noqa: E731
        wait_for(lambda: waits().count(Status.WAIT) > EXIFTOOL_TRIES or Status.FAILED in waits(),
                 timeout=120)
    finally:
        queue.close()
        worker.join(timeout=60)
    assert Status.FAILED not in waits(), [o.error for o in seen if o.path == str(stuck)]
    row = env.store.file(str(stuck))
    assert row is None or row.state != FAILED
    tagged = [o.path for o in seen if o.status == Status.TAGGED]
    assert len(tagged) >= EXIFTOOL_TRIES and all(p.startswith(str(local) + "/") for p in tagged)
    assert exif_keywords(local / "l1.jpg")["iptc"]


def test_a_photo_queued_again_while_its_batch_is_held_is_counted_once_as_waiting(
        env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A photo edited while a batch holds it (a locked database, a silent exiftool) goes back to the
    queue to wait for that batch: `tagwatch status` counted it in the queue and in the batch, "2
    waiting" for one photo."""
    monkeypatch.setattr(worker_module, "HELD_DELAY", 600.0)  # it stays queued while the test looks
    photo = noise_jpeg(tmp_path / "in" / "a.jpg", seed=1)
    env.model.get()
    env.exiftool.execute("-ver")
    assert env.exiftool._proc is not None
    queue = BatchQueue(size=8, max_wait=0, settle=0)
    worker = Worker(queue, env.pipeline, reload=lambda: None)
    worker.start()
    try:
        with stopped(env.exiftool._proc.pid):  # its write hangs: the batch holds it
            queue.put(str(photo))
            wait_for(lambda: worker.batches == 1 and worker.engine.held() == 1)
            assert worker.waiting() == 1
            queue.put(str(photo))  # edited meanwhile
            wait_for(lambda: worker.batches == 2)  # taken, found held, put back to wait for its batch
            assert len(queue) == 1 and worker.engine.held() == 1  # in both, what status added up
            assert worker.waiting() == 1
        wait_for(lambda: worker.engine.held() == 0)
        assert worker.waiting() == 1  # only queued now
    finally:
        queue.close()
        worker.join(timeout=60)
    assert len(exif_keywords(photo)["iptc"]) == 3


def test_a_batch_that_meets_a_locked_database_waits_whole_and_the_rest_is_not_tried(
        env: Env, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A backup script holds the database (BEGIN EXCLUSIVE) as a batch of photos whose vectors are
    cached reaches its writes: the first photo waits out the engine's lock wait, and the others
    wait with it, untried and untouched.  Each waited out the lock in turn: a batch of 32 said the
    lock 32 waits late.  Once the lock is let go, the same photos are tagged."""
    photos = [noise_jpeg(tmp_path / "in" / f"c{i}.jpg", seed=40 + i) for i in range(3)]
    names = [str(p) for p in photos]
    collect = Collect()
    holder = sqlite3.connect(env.store.path, isolation_level=None)
    engine = Engine(env.pipeline, lock_wait_s=0.2)  # the daemon's is DATABASE_LOCK_WAIT_S; a test's short
    try:
        engine.submit(names, Collect(), dry_run=True)  # the vectors cached, nothing written
        engine.drain()
        assert env.encoded() == 3
        holder.execute("BEGIN EXCLUSIVE")
        with caplog.at_level("DEBUG", logger="tagwatch"):
            engine.submit(names, collect)
            engine.drain()
        assert {o.status for o in collect.outcomes.values()} == {Status.WAIT}
        assert {o.error for o in collect.outcomes.values()} == {"database: database is locked"}
        lines = [r.getMessage() for r in caplog.records]
        tried = {line.split(":")[0] for line in lines if line.startswith(str(tmp_path))}
        assert len(tried) == 1, tried  # the first photo met the lock; the others waited untried
        assert not any(exif_keywords(p)["iptc"] for p in photos)
        holder.execute("COMMIT")
        engine.submit(names, collect)
        engine.drain()
    finally:
        holder.close()
        engine.close()
    assert collect.statuses() == {p.name: Status.TAGGED for p in photos}
    assert all(len(exif_keywords(p)["iptc"]) == 3 for p in photos)


def test_when_settled_is_told_once_the_photos_queued_before_it_are_settled_not_while_one_waits(
        env: Env, tmp_path: Path) -> None:
    """Worker.when_settled, which the restore's check waits on (every watched photo compared, then
    each one queued settled): with nothing queued it is told at once; while a photo waits out a
    backup's lock (BEGIN EXCLUSIVE), backing off in the queue, it is not, however often the photo is
    tried; once the lock is let go it is told after the photo is tagged, on the worker's thread."""
    photo = noise_jpeg(tmp_path / "in" / "a.jpg", seed=60)
    seen: list[Outcome] = []
    told: list[tuple[str, str | None]] = []  # (the thread, the photo's state then), per call

    def tell() -> None:
        row = env.store.file(str(photo))
        told.append((threading.current_thread().name, row and row.state))

    queue = BatchQueue(size=8, max_wait=0, settle=0)
    # each try's wait 0.2 s (the daemon's 5 s); a monkeypatched DATABASE_LOCK_WAIT_S never reached
    # the Worker, whose default was taken when it was defined, and these tests waited 5 s a try
    worker = Worker(queue, env.pipeline, reload=lambda: None, observe=seen.extend, lock_wait=0.2)
    holder = sqlite3.connect(env.store.path, isolation_level=None)
    worker.start()
    try:
        worker.when_settled(tell)
        wait_for(lambda: len(told) == 1)  # nothing queued: at once
        holder.execute("BEGIN EXCLUSIVE")
        queue.put(str(photo))
        wait_for(lambda: [o.status for o in seen].count(Status.WAIT) == 1)
        worker.when_settled(tell)
        wait_for(lambda: [o.status for o in seen].count(Status.WAIT) >= 2)  # tried again, still waits
        assert len(told) == 1
        holder.execute("COMMIT")
        wait_for(lambda: len(told) == 2)
    finally:
        holder.close()
        queue.close()
        worker.join(timeout=60)
    assert told == [("tagwatch-worker", None), ("tagwatch-worker", DONE)]  # told once it was tagged


def test_a_rescore_still_waits_for_the_database_while_its_retry_is_tried(env: Env) -> None:
    """A tag list's re-score met a backup's lock (BEGIN EXCLUSIVE) and is retried: `tagwatch status`
    has a line for it (Worker.database_waits), which went missing whenever `status` looked during a
    retry (up to 5 s of each, the lock still held); it ends once the re-score is done."""
    holder = sqlite3.connect(env.store.path, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        with env.store.lock_wait(0.05), pytest.raises(sqlite3.OperationalError) as met:
            env.store.record_file("/p/a.jpg", key=b"k", size=1, mtime_ns=1, state=DONE)
    finally:
        holder.close()
    trying, done = threading.Event(), threading.Event()

    def resume() -> None:  # the retry, held while the test looks
        trying.set()
        done.wait(60)

    queue = BatchQueue(size=8, max_wait=0, settle=0)
    worker = Worker(queue, env.pipeline, reload=lambda: None, resume=resume)
    assert worker.rescore_waits(met.value)  # as the daemon's start does, before the worker runs
    assert worker.database_waits() == {"rescore": "database: database is locked"}
    worker.start()
    try:
        wait_for(trying.is_set)  # its retry, after the backoff's first second
        assert worker.database_waits() == {"rescore": "database: database is locked"}
        done.set()
        wait_for(lambda: worker.database_waits() == {})
    finally:
        done.set()
        queue.close()
        worker.join(timeout=60)


def test_renames_and_a_deletion_that_meet_a_backups_lock_wait_and_are_recorded_in_order_once_it_is_let_go(
        env: Env, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A backup script holds the database (BEGIN EXCLUSIVE) while a photo is renamed twice (a -> a2
    -> a3) and another deleted: each op waited SQLite's 30 s on the worker's thread, then was logged
    at ERROR and lost (the rename's new name then tagged as a new photo).  Now they wait out the
    photos' lock wait, in the order they happened, the photo's event at its new name held behind
    its rename, said in one WARNING; once the lock is let go they are recorded: the record follows
    the photo, nothing is encoded again; the line then says that they are, not that photos
    waited."""
    a, b = (noise_jpeg(tmp_path / "in" / f"{name}.jpg", seed=70 + i) for i, name in enumerate("ab"))
    assert env.run(a, b) == {"a.jpg": Status.TAGGED, "b.jpg": Status.TAGGED}
    kept, encoded = env.store.file(str(a)), env.encoded()
    a2, a3 = a.with_name("a2.jpg"), a.with_name("a3.jpg")
    queue = BatchQueue(size=8, max_wait=0, settle=0)
    worker = Worker(queue, env.pipeline, reload=lambda: None, lock_wait=0.2)  # the daemon's 5 s
    holder = sqlite3.connect(env.store.path, isolation_level=None)
    caplog.clear()
    worker.start()
    try:
        with caplog.at_level("DEBUG", logger="tagwatch"):
            holder.execute("BEGIN EXCLUSIVE")
            a.rename(a2)
            queue.op(Move(str(a), str(a2)))
            a2.rename(a3)
            queue.op(Move(str(a2), str(a3)))
            queue.put(str(a3))  # an app touched it at its new name
            b.unlink()
            queue.op(Delete(str(b)))
            wait_for(lambda: any(r.getMessage() == f"{a3}: waits for the rename or deletion before it to be "
                                 "recorded" for r in caplog.records))
            assert env.store.file(str(a)) == kept and env.store.file(str(b)).state == DONE  # waiting
            holder.execute("COMMIT")
            settled = lambda: not len(queue) and worker.idle.is_set()  # noqa: E731
            wait_for(lambda: env.store.file(str(b)).state == DELETED and settled())
    finally:
        holder.close()
        queue.close()
        worker.join(timeout=60)
    row = env.store.file(str(a3))
    assert row is not None and (row.id, row.state) == (kept.id, DONE)
    assert env.store.file(str(a)) is None and env.store.file(str(a2)) is None
    assert env.encoded() == encoded
    said = [(r.levelname, getattr(r, "event", None)) for r in caplog.records if r.levelno >= logging.WARNING]
    assert said == [("WARNING", "retrying")], caplog.text
    moves = [(getattr(r, "from"), r.path) for r in caplog.records if getattr(r, "event", None) == "moved"]
    assert moves == [(str(a), str(a2)), (str(a2), str(a3))]
    assert not [r for r in caplog.records if getattr(r, "event", None) == "tagged"]
    # no photo waited for the lock: they were counted as photos ("the 3 photos that waited for it")
    assert [r.getMessage() for r in caplog.records if "takes writes again" in r.getMessage()] == [
        "the database takes writes again; the renames and deletions that waited for it are recorded"]


def test_a_deleted_folder_forgets_the_retry_state_of_every_photo_under_it_and_no_others(env: Env) -> None:
    """The worker's per-photo retry state (backoff, still-writing watch, exiftool faults, photos put
    back) is forgotten for every photo under a deleted or moved folder, with the separator: ``/p/20``
    holds ``/p/20/a.jpg``, not ``/p/2024/b.jpg``.  Only the folder's own path was: the daemon test
    (test_faults_machine) shows what a user saw of it; this one, each piece of state."""
    queue = BatchQueue(size=8, max_wait=0, settle=0)
    worker = Worker(queue, env.pipeline, reload=lambda: None)
    inside, deeper, sibling, moved = "/p/20/a.jpg", "/p/20/x/b.jpg", "/p/2024/b.jpg", "/q/c.jpg"
    stat = os.stat(__file__)
    try:
        for path in (inside, deeper, sibling, moved):
            worker._backoff.next(path)
            worker._writing(path, stat)
            worker._faults[path] = (1, 0)
            worker._requeued.add(path)
        worker._handle(Batch(ops=[Delete("/p/20/", is_dir=True), Move(moved, "/q/d.jpg")]))
        for path in (inside, deeper, moved):
            assert (path in worker._backoff, path in worker._writing, path in worker._faults,
                    path in worker._requeued) == (False, False, False, False), path
        assert sibling in worker._backoff and sibling in worker._writing
        assert sibling in worker._faults and sibling in worker._requeued
    finally:
        queue.close()
        worker.engine.close()


def test_only_a_photo_really_deleted_is_told_gone_not_one_replaced_under_its_name(
        env: Env, tmp_path: Path) -> None:
    """An atomic save seen by a polling observer (delete + create), or tagwatch's own exchange of
    names, reaches the worker as the photo's deletion.  `tagwatch status` was told it gone: the last
    error of a photo still there said "(photo gone since)", and its failure was forgotten.  Only the
    photo that is no longer there is told gone; the other is looked at again."""
    kept = noise_jpeg(tmp_path / "in" / "kept.jpg", seed=97)
    deleted = noise_jpeg(tmp_path / "in" / "deleted.jpg", seed=98)
    told: list[str] = []
    queue = BatchQueue(size=8, max_wait=0, settle=0)
    worker = Worker(queue, env.pipeline, reload=lambda: None, gone=lambda path, is_dir: told.append(path))
    deleted.unlink()
    try:
        worker._handle(Batch(ops=[Delete(str(kept)), Delete(str(deleted))]))
        worker.engine.drain()
    finally:
        queue.close()
        worker.engine.close()
    assert told == [str(deleted)]
    row = env.store.file(str(kept))
    assert row is not None and row.state == DONE  # looked at again, and tagged


def _waiting_for_database(worker: Worker) -> tuple[set[str], set[str]]:
    """The photos, and the renames' and deletions' paths, the worker counts as waiting for the
    database's trouble now (nothing where none lasts)."""
    with worker._database_lock:
        waited = worker._database_waited
        return (set(waited.photos), set(waited.ops)) if waited is not None else (set(), set())


@pytest.mark.parametrize("held", [False, True], ids=["backing-off", "held-in-their-batch"])
def test_photos_deleted_while_they_wait_for_a_locked_database_leave_its_waiting_list(
        env: Env, tmp_path: Path, caplog: pytest.LogCaptureFixture, held: bool) -> None:
    """A backup script holds the database (BEGIN EXCLUSIVE) while four photos wait for it, backing
    off in the queue or still held in the batch that met it (its lock wait, the daemon's 5 s); one
    is deleted, and a folder holding two others.  They stayed on the database's waiting list: the
    line once it was let go counted them, and the folder's deletion ("the 5 photos that waited for
    it" for 1).  Now only the photo still there is counted, waiting and tried; the deletions,
    which waited for the lock too, are recorded; nothing is said of the deleted photos but their
    deletion."""
    kept = noise_jpeg(tmp_path / "in" / "kept.jpg", seed=80)
    gone = noise_jpeg(tmp_path / "in" / "gone.jpg", seed=81)
    inner = [noise_jpeg(tmp_path / "in" / "sub" / f"s{i}.jpg", seed=82 + i) for i in range(2)]
    photos = [kept, gone, *inner]
    queue = BatchQueue(size=8, max_wait=0, settle=0)
    # held: the batch waits out the daemon's lock wait, while the deletions come
    worker = Worker(queue, env.pipeline, reload=lambda: None, lock_wait=5.0 if held else 0.2)
    holder = sqlite3.connect(env.store.path, isolation_level=None)
    worker.start()
    try:
        with caplog.at_level("DEBUG", logger="tagwatch"):
            holder.execute("BEGIN EXCLUSIVE")
            for photo in photos:
                queue.put(str(photo))
            if held:
                wait_for(lambda: worker.engine.held() == 4)
            else:
                wait_for(lambda: _waiting_for_database(worker)[0] == {str(p) for p in photos})
            gone.unlink()
            queue.op(Delete(str(gone)))
            shutil.rmtree(tmp_path / "in" / "sub")
            queue.op(Delete(str(tmp_path / "in" / "sub"), is_dir=True))
            # the deletions met the lock too, and wait, in order: the photos gone leave the list
            wait_for(lambda: len(worker._ops) == 2)
            assert _waiting_for_database(worker) == (
                {str(kept)}, {str(gone), str(tmp_path / "in" / "sub")})
            assert worker.waiting() == 1  # `tagwatch status`'s "queue 1 waiting"
            holder.execute("COMMIT")
            wait_for(lambda: env.store.file(str(kept)) is not None
                     and env.store.file(str(kept)).state == DONE)
            wait_for(lambda: not worker._ops and not len(queue) and worker.idle.is_set())
            # the deletion's line
            wait_for(lambda: "deleted before it could be tagged" in caplog.text)
    finally:
        holder.close()
        queue.close()
        worker.join(timeout=60)
    assert _waiting_for_database(worker) == (set(), set()) and worker.waiting() == 0
    lines = [r.getMessage() for r in caplog.records if "takes writes again" in r.getMessage()]
    assert lines == ["the database takes writes again; the 1 photo that waited for it is tried now"]
    # nothing tried, nothing said of them but the deletion of the one deleted itself (never tagged,
    # none is recorded)
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO
            and any(str(p) in r.getMessage() for p in (gone, *inner))]
    assert said == [f"{gone}: skipped: deleted before it could be tagged"], caplog.text
    assert [env.store.file(str(p)) for p in (gone, *inner)] == [None] * 3
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_a_photo_replaced_by_an_exchange_of_names_while_it_waits_for_the_database_stays_on_its_list(
        env: Env, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A photo waits for a read-only or locked database when a new version takes its name by an
    exchange of names (tagwatch's own write does so, atomic.py; inotify reports the old version
    moved to the hidden name, which the watcher queues as the photo's deletion).  The photo left the
    database's waiting list as if deleted: once the database took writes again, its tagging said
    nothing of it ("the database takes writes again" missing, a CI failure of test_reliability's
    read-only database).  Now a deletion of a photo that is still there leaves it waiting, and the
    line counts it."""
    photo = noise_jpeg(tmp_path / "in" / "p.jpg", seed=90)
    queue = BatchQueue(size=8, max_wait=0, settle=0)
    worker = Worker(queue, env.pipeline, reload=lambda: None, lock_wait=0.2)
    holder = sqlite3.connect(env.store.path, isolation_level=None)
    worker.start()
    try:
        with caplog.at_level("DEBUG", logger="tagwatch"):
            holder.execute("BEGIN EXCLUSIVE")
            queue.put(str(photo))
            wait_for(lambda: _waiting_for_database(worker)[0] == {str(photo)})
            hidden = photo.with_name(".p.jpg.new")
            noise_jpeg(hidden, seed=91)
            assert exchange(hidden, photo)  # the new version in place, the old one at the hidden name
            hidden.unlink()
            queue.op(Delete(str(photo)))  # what the watcher makes of the old version's move away
            wait_for(lambda: not worker._ops and worker.idle.is_set())
            assert _waiting_for_database(worker)[0] == {str(photo)}
            holder.execute("COMMIT")
            wait_for(lambda: env.store.file(str(photo)) is not None
                     and env.store.file(str(photo)).state == DONE)
    finally:
        holder.close()
        queue.close()
        worker.join(timeout=60)
    lines = [r.getMessage() for r in caplog.records if "takes writes again" in r.getMessage()]
    assert lines == ["the database takes writes again; the 1 photo that waited for it is tried now"]
    assert exif_keywords(photo)["iptc"]
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_a_photo_renamed_while_it_waits_for_the_model_is_counted_and_hurried_at_its_new_name(
        env: Env, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Two photos wait for the model (its child was killed while loading, as the OOM killer does:
    the outcome the engine hands over is given here), one of them backing off for 32 s by now; it
    is renamed.  It left the model's waiting list: once the model loaded again the line said "the
    1 photo that waited for it", and the renamed photo, not hurried, waited out its backoff.  Now
    it is counted, at its new name, and tagged there."""
    a, b = (noise_jpeg(tmp_path / "in" / f"{name}.jpg", seed=95 + i) for i, name in enumerate("ab"))
    killed = ("model: the encoder process was killed while loading the model (killed by SIGKILL, "
              "perhaps out of memory); it is started again")
    queue = BatchQueue(size=8, max_wait=0, settle=0)
    worker = Worker(queue, env.pipeline, reload=lambda: None)
    with caplog.at_level("INFO", logger="tagwatch"):
        for _ in range(6):  # its sixth attempt: queued again to wait 32 s
            worker._settle([Outcome(str(a), Status.WAIT, error=killed)])
        worker._settle([Outcome(str(b), Status.WAIT, error=killed)])  # tried again in 1 s
        a2 = a.rename(a.with_name("a2.jpg"))
        queue.op(Move(str(a), str(a2)))  # what the watcher makes of it
        worker.start()
        try:
            done = lambda path: (row := env.store.file(str(path))) is not None and row.state == DONE  # noqa: E731
            wait_for(lambda: done(a2) and done(b), timeout=20)  # well within a's 32 s
        finally:
            queue.close()
            worker.join(timeout=60)
    lines = [r.getMessage() for r in caplog.records if "loads again" in r.getMessage()]
    assert lines == ["the model loads again; the 2 photos that waited for it are tried now"]
    assert exif_keywords(a2)["iptc"] and env.store.file(str(a)) is None


def _raised(db: sqlite3.Connection, sql: str) -> sqlite3.Error:
    """What SQLite raised for ``sql`` on ``db`` (the test fails where it raised nothing)."""
    with pytest.raises(sqlite3.Error) as raised:
        db.execute(sql).fetchall()
    return raised.value


def _shared_cache_lock(path: Path) -> sqlite3.Error:
    """SQLite's own LOCKED_SHAREDCACHE (262): a table another connection of the same shared cache is
    writing, read.  Its words do not end "is locked": "database table is locked: t"."""
    uri = f"file:{path}?cache=shared"
    writer = sqlite3.connect(uri, uri=True, isolation_level=None)
    reader = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=0)
    try:
        writer.execute("CREATE TABLE IF NOT EXISTS t (x)")
        writer.execute("BEGIN")
        writer.execute("INSERT INTO t VALUES (1)")
        return _raised(reader, "SELECT * FROM t")
    finally:
        writer.execute("ROLLBACK")
        reader.close()
        writer.close()


def test_a_database_lock_is_known_by_sqlites_result_code_not_by_its_words(tmp_path: Path) -> None:
    """Another program's lock on the database (SQLite's BUSY or LOCKED, any extended code) is told
    by the code SQLite raised it with (sqlite_locked, the one test of it): the worker read the
    reason's words ("… is locked" at the end), which SQLite words otherwise for other kinds of
    lock, and which a later SQLite may change.  Real errors, raised by SQLite: a backup's BEGIN
    EXCLUSIVE (BUSY), a shared cache's table lock (LOCKED_SHAREDCACHE, "database table is locked:
    t"), a read-only database (a passing trouble, no lock).  Only an error with no code is told by
    its words."""
    path = tmp_path / "x.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        busy = _raised(sqlite3.connect(path, isolation_level=None, timeout=0), "INSERT INTO t VALUES (1)")
    finally:
        holder.execute("COMMIT")
        holder.close()
    table = _shared_cache_lock(path)
    read_only = _raised(sqlite3.connect(f"file:{path}?mode=ro", uri=True), "INSERT INTO t VALUES (1)")
    assert [(str(e), e.sqlite_errorname) for e in (busy, table, read_only)] == [  # type: ignore[attr-defined]
        ("database is locked", "SQLITE_BUSY"), ("database table is locked: t", "SQLITE_LOCKED_SHAREDCACHE"),
        ("attempt to write a readonly database", "SQLITE_READONLY")]
    assert [sqlite_locked(e) for e in (busy, table, read_only)] == [True, True, False]
    reasons = [transient_reason(e) for e in (busy, table, read_only)]
    assert all(database_fault(r) for r in reasons), reasons  # the database's trouble, every photo's
    assert reasons[1] == "database: database table is locked: t"  # the same words in its lines
    assert [database_locked(r) for r in reasons] == [True, True, False]  # the second was no lock
    # an error with no code (raised by hand), or a reason that is text alone: the words, as before
    assert sqlite_locked(sqlite3.OperationalError("database is locked"))
    assert not sqlite_locked(sqlite3.OperationalError("disk I/O error"))
    assert not sqlite_locked(OSError(errno.EIO, "is locked"))
    assert database_locked("database: database is locked") and not database_locked("database: disk I/O error")


def test_a_lock_sqlite_words_otherwise_is_over_at_the_first_write_that_passes(
        env: Env, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A lock is all or nothing: the first write that passes shows it over, a small one too (on a
    full disk it does not: a photo's write must pass).  A lock whose words did not end "is
    locked" was taken for a full disk: photos waited for a write that settled one of them."""
    reason = transient_reason(_shared_cache_lock(tmp_path / "x.db"))
    assert reason is not None
    queue = BatchQueue(size=8, max_wait=0, settle=0)
    worker = Worker(queue, env.pipeline, reload=lambda: None)
    try:
        with worker._database_lock:
            assert not worker._joins_database_trouble(str(tmp_path / "a.jpg"), reason)
        with caplog.at_level("INFO", logger="tagwatch"):
            worker._database_back(settled=False)  # a write that settled no photo (a vector stored)
        assert worker.database_waits() == {}
        assert "the database takes writes again; the 1 photo that waited for it is tried now" in caplog.text
    finally:
        queue.close()
        worker.engine.close()


def test_a_folder_whose_photos_records_went_with_it_is_one_line_and_rm_r_says_each_photo(
        env: Env, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A folder moved out of every watched folder (to the trash) reports no deletion of its photos:
    its deletion records theirs, and says so in one line naming it and counting them (it said
    nothing).  ``rm -r`` reports each photo deleted, then each folder: each photo's line, and the
    folders', whose records are gone already, nothing more."""
    trip = tmp_path / "in" / "2019"
    photos = [noise_jpeg(trip / f"a{i}.jpg", seed=90 + i) for i in range(2)]
    photos.append(noise_jpeg(trip / "summer" / "b.jpg", seed=92))
    removed = [noise_jpeg(tmp_path / "in" / "2020" / f"c{i}.jpg", seed=93 + i) for i in range(2)]
    assert set(env.run(*photos, *removed).values()) == {Status.TAGGED}
    trash = tmp_path / "trash"
    trash.mkdir()
    with caplog.at_level("INFO", logger="tagwatch"):
        trip.rename(trash / trip.name)
        env.pipeline.apply([Delete(str(trip), is_dir=True)])
        shutil.rmtree(removed[0].parent)
        env.pipeline.apply([*(Delete(str(p)) for p in removed), Delete(str(removed[0].parent), is_dir=True)])
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert said == [f"deleted {trip} (a folder: its 3 photos' records)", *(f"{p}: deleted" for p in removed)]
    assert [env.store.file(str(p)).state for p in (*photos, *removed)] == [DELETED] * 5


def test_the_lines_said_when_a_trouble_is_over_count_the_photos_in_words() -> None:
    """The model's "loads again" line and the database's "takes writes again" share their end: one
    photo is "the 1 photo that waited for it is tried now" (the model's said "the 1 photos … are")."""
    assert worker_module._tried_now(1) == "the 1 photo that waited for it is tried now"
    assert worker_module._tried_now(3) == "the 3 photos that waited for it are tried now"
