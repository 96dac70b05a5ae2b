"""``tagwatch scan --engine ray``: a large backfill spread over a Ray cluster, into the same store.

The driver (this module, in the ``tagwatch`` process) alone opens SQLite and the ledger; the
cluster's nodes run the stages that cost, in :class:`~tagwatch.ray_node.Station` actors.  A photo
goes, with the same stage functions as the local engine (docs/design.md, "The stage API")::

    driver: Pipeline.select (stat, is it settled?)
    node:   read + key                            (Station.keys)
    driver: VectorCache.get; hits skip the encoder
    node:   read + key again, decode, encode      (Station.encode, misses only, one per key)
    driver: VectorCache.put, Pipeline.judge (scores, overrides), Writeback.plan_ahead (ledger ahead)
    node:   write_file                            (Station.write, files whose keywords change)
    driver: Writeback.record_done or .failed

Why Ray core (actors and ``ray.wait``) and not Ray Data's ``map_batches``: two steps that must run
on the driver sit *between* cluster stages (the cache lookup after keying, the ledger written ahead
of each write), so the work is not one dataset flowing one way; and a lost write must not be retried
blindly (see below), which Ray Data would do.  The driver keeps a bounded window of photos in flight
(a few batches per station), pulls paths from a lazy walk only as the window frees, and keeps no
per-photo state once a photo's outcome is counted: memory stays flat for any archive size.

Fault tolerance: every batch sent to a station is remembered until its answer arrives.  If the
station's node is lost (or the call fails in any other way), each photo of the batch starts again
from :meth:`Pipeline.select`, exactly as the next scan would after a crash: a photo whose keywords
were recorded ahead and perhaps written is ``pending``, its plan is made again from what the file
holds and what the ledger says is ours, so a keyword already written is not written twice and not
forgotten.  Ray's own task retries are off for that reason (a retried write would carry a plan made
before the first attempt).  A photo lost :data:`ATTEMPTS` times is reported as WAIT (run the scan
again).  A driver killed mid-run loses nothing either: what was stored is there for the next run.
Ctrl-C hands out no more work and lets the stations finish and record the batches they hold, so the
count the scan then gives is true; a second one kills them, and the driver deletes the temporary
files of the writes they had in flight (it knows their PIDs; a later run's walk cannot tell a dead
station's file from a live one on another node but by its age: :func:`remove_left_temp_files`).
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import Config
from .logs import shown
from .metadata import MetadataError, is_stale_temp_file, temp_files_of
from .outcomes import Outcome, Status
from .pipeline import Pipeline
from .ray_node import Answer, Encoded, Station, StationInfo
from .vectors import FileVanished, Photo, ReadFailed
from .wording import counted
from .writeback import WriteJob, write_file

log = logging.getLogger(__name__)

STATION_CPUS = 8  # a node without GPUs gets one station per this many CPUs (at least one)
ENCODE_DEPTH = 2  # encode batches in flight per station: one running, one waiting behind it
IO_DEPTH = 4  # key and write batches in flight per station
IO_THREADS = 2  # threads per station that read and write files beside the one that encodes
ATTEMPTS = 3  # a photo whose batch was lost this many times is reported, not tried again
GROW_EVERY_S = 10.0  # how often the driver looks for nodes that joined the cluster
START_TIMEOUT_S = 600.0  # no station ready after this long: the cluster has no room for one
REACH_S = 10.0  # a head must accept a connection within this, then answer within this again
POLL_S = 1.0  # the scan's longest wait for an answer: a Ctrl-C is noticed within this
DRAIN_S = 60.0  # after Ctrl-C, how long the stations get to finish the batches they hold
KILLED_S = 10.0  # after stations are killed, how long their calls get to report them gone
STALE_AFTER_S = 300.0  # a temporary file nobody modified for this long is no write in flight anywhere
ADDRESS_FILE = "ray/ray_current_cluster"  # where `ray start` records its head, under Ray's temp folder
GCS_TRIES = "RAY_gcs_server_port_wait_time_s"  # Ray's connection attempts to a head (~40 s each)
# HTTP/2's client preface and an empty SETTINGS frame (length 0, type 4, no flags, stream 0)
HTTP2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
LOOPBACK_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # 0: Ray takes 127.0.0.1 as this node's address
INSTALL = "pip install 'tagwatch[ray]'"


class ClusterError(RuntimeError):
    """The scan cannot run on the cluster; the message says why and what to do."""


def prepare(address: str | None) -> None:
    """Import Ray (ImportError naming ``ray`` if the extra is missing).  For a cluster on this
    machine's loopback address, Ray is told first that this node's address is 127.0.0.1 too:
    otherwise it connects through the machine's outward address, where a loopback cluster does not
    listen."""
    target = _target(address)
    if target and _loopback(target):
        os.environ.setdefault(LOOPBACK_ONLY, "0")
    import ray  # noqa: F401


def _loopback(address: str) -> bool:
    host = address.removeprefix("ray://").rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- the summary ---------------------------------------------------------------------------------

@dataclass
class NodeStats:
    """What one node did in this scan."""

    label: str
    stations: int = 0
    keyed: int = 0
    encoded: int = 0
    written: int = 0
    lost: int = 0  # batches lost with it
    unseen: int = 0  # photos it could not find or read that this machine reads (started over elsewhere)
    left_out: str = ""  # why it got no more work: the first photo it could not read
    first: float | None = None  # first encode sent, last encode answered (monotonic seconds)
    last: float | None = None

    def rate(self) -> float:
        span = (self.last or 0.0) - (self.first or 0.0)
        return self.encoded / span if span > 0 else 0.0


@dataclass
class Summary:
    """The scan's totals.  Each photo is counted once, by how its outcome came: ``encoded`` +
    ``cached`` + ``unread`` + ``skipped`` = ``photos``, however often a lost batch started it over
    (docs/ray.md, "What you see")."""

    photos: int = 0
    counts: Counter[str] = field(default_factory=Counter)  # outcomes by status
    encoded: int = 0  # its vector computed by a station in this scan
    cached: int = 0  # it had one without encoding: stored already, or the same picture as another file
    unread: int = 0  # read on a node, but no vector came of it: unreadable, not decodable, lost, vanished
    skipped: int = 0  # never read: tagged with this tag list already and unchanged (or gone) at its stat
    failed: Counter[str] = field(default_factory=Counter)  # reason → photos
    lost: int = 0  # batches lost with a node (or a station) and started again
    nodes: dict[str, NodeStats] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def trouble(self) -> bool:
        """A node was left out of the scan: the cluster is not set up as it should be (exit 1)."""
        return any(node.left_out for node in self.nodes.values())

    def lines(self) -> list[str]:
        """The end-of-scan report: totals, then each node's share, then the reasons for failures."""
        rate = self.photos / self.seconds if self.seconds > 0 else 0.0
        stations = sum(n.stations for n in self.nodes.values())
        lines = [f"ray: {counted(self.photos, 'photo')} in {self.seconds:.1f} s ({rate:.1f}/s): "
                 f"{self.encoded} encoded, {self.cached} cached, {self.unread} without a vector, "
                 f"{self.skipped} skipped; "
                 f"{counted(stations, 'station')} on {counted(len(self.nodes), 'node')}"
                 + (f"; {counted(self.lost, 'batch', 'batches')} lost and started again"
                    if self.lost else "")]
        for node in sorted(self.nodes.values(), key=lambda n: n.label):
            lines.append(f"  node {node.label}: {node.encoded} encoded ({node.rate():.1f}/s), "
                         f"{node.keyed} keyed, {node.written} written"
                         + (f", {counted(node.lost, 'batch', 'batches')} lost" if node.lost else "")
                         + (f"; LEFT OUT: it {node.left_out} ({counted(node.unseen, 'photo')} "
                            "started over on other nodes): is the share mounted there at the same path?"
                            if node.left_out else ""))
        for reason, count in self.failed.most_common(10):
            lines.append(f"  failed: {count}: {reason}")
        if len(self.failed) > 10:
            lines.append(f"  failed: {sum(c for _, c in self.failed.most_common()[10:])} for other reasons "
                         "(each is in the log)")
        return lines


class Interrupted(KeyboardInterrupt):
    """Ctrl-C ended the scan on the cluster.  ``drained``: the stations answered every batch they
    held and each answer was recorded before it ended; else they were stopped mid-batch (``why``),
    and ``removed`` temporary files their writes in flight left beside photos were deleted."""

    def __init__(self, drained: bool, why: str = "") -> None:
        super().__init__(why)
        self.drained, self.why, self.removed = drained, why, 0


# -- the stations ---------------------------------------------------------------------------------

@dataclass
class Slot:
    """One station as the driver sees it."""

    handle: Any
    node: str  # Ray node id
    label: str
    info: StationInfo | None = None  # once loaded
    encoding: int = 0  # batches in flight
    io: int = 0
    retired: bool = False  # its node was left out: it gets no more batches, and ends once idle


def _layout(resources: dict[str, float]) -> list[tuple[int, int, str]]:
    """Stations for a node with these resources: (CPUs, GPUs, device) for each."""
    cpus, gpus = int(resources.get("CPU", 0)), int(resources.get("GPU", 0))
    if gpus:
        return [(cpus // gpus, 1, "cuda")] * gpus
    if cpus:
        count = max(1, cpus // STATION_CPUS)
        return [(cpus // count, 0, "cpu")] * count
    return []


class Fleet:
    """The stations: one per GPU, or per node without GPUs; placed on nodes as they appear."""

    def __init__(self, config: Config, identity: str, *, writes: bool) -> None:
        import ray

        self.config, self.identity = config, identity
        self.write_cfg = config.write if writes else None
        self.log_level = logging.getLogger("tagwatch").getEffectiveLevel()  # the stations log as this does
        self.actor = ray.remote(concurrency_groups={"io": IO_THREADS}, max_restarts=0)(Station)
        self.slots: dict[Any, Slot] = {}  # loaded, by actor handle's id
        self.starting: dict[Any, Slot] = {}  # load() reference → slot
        self.placed: Counter[str] = Counter()  # stations per node id, starting ones included
        self.started: Counter[str] = Counter()  # stations ever started per node (crash loops stop)
        self.labels: dict[str, str] = {}
        self.excluded: dict[str, str] = {}  # node id → why it gets no stations (it cannot read the photos)
        self.retired: list[Slot] = []  # stations of excluded nodes, finishing the batches they hold
        self.ever_ready = False  # a station loaded at some point (else none was lost: none started)
        self.failed: dict[str, str] = {}  # node id → why its latest station did not start
        self.grown = 0.0

    def grow(self) -> None:
        """Start stations on live nodes that have none (at start, and when a node joins)."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self.grown = time.monotonic()
        for node in ray.nodes():
            node_id = node["NodeID"]
            layout = _layout(node.get("Resources", {}))
            if not node.get("Alive") or self.placed[node_id] or not layout or node_id in self.excluded \
                    or self.started[node_id] >= ATTEMPTS * len(layout):
                continue
            label = self.labels[node_id] = f"{node.get('NodeManagerAddress', '?')} ({node_id[:8]})"
            for cpus, gpus, device in layout:
                handle = self.actor.options(
                    num_cpus=cpus, num_gpus=gpus, max_task_retries=0,
                    scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
                ).remote(self.config.model, self.write_cfg, max(cpus, 1), device, self.config.max_megapixels,
                          self.log_level)
                self.starting[handle.load.remote()] = Slot(handle, node_id, label)
                self.placed[node_id] += 1
                self.started[node_id] += 1

    def loaded(self, ref: Any) -> Slot | None:
        """A station's load() answered: ready to work, or None if it died meanwhile."""
        import ray

        slot = self.starting.pop(ref)
        try:
            info = replay(ray.get(ref))
        except Exception as exc:  # its node was lost while it loaded: another may take its place
            log.warning("ray: a station on node %s did not start: %s", slot.label, _one_line(exc))
            self.failed[slot.node] = _one_line(exc)
            self.placed[slot.node] -= 1
            return None
        if isinstance(info, str):  # the model cannot be loaded: the same everywhere
            raise ClusterError(f"on node {slot.label}: {info}")
        if slot.node in self.excluded:  # left out while it loaded
            self.retire(slot)
            return None
        if info.identity != self.identity:
            raise ClusterError(
                f"node {slot.label} loads the model as {info.identity}, this machine as {self.identity}: "
                "every node needs the same model files at the same path")
        nice = (f", niceness {info.nice}, lower than this scan's: Ray's default for its workers; "
                "`RAY_worker_niceness=0 ray start ...` gives them the usual priority"
                if info.nice > os.nice(0) else "")
        log.info("ray: station on %s ready (%s, %s, pid %d%s)", slot.label, info.device, info.precision,
                 info.pid, nice)
        slot.info = info
        self.slots[id(slot.handle)] = slot
        self.ever_ready = True
        return slot

    def drop(self, slot: Slot) -> None:
        """A station died (its node was lost): forget it; its node may get a new one later."""
        import ray

        if self.slots.pop(id(slot.handle), None) is not None:
            self.placed[slot.node] -= 1
            with contextlib.suppress(Exception):
                ray.kill(slot.handle)

    def exclude(self, node_id: str, reason: str) -> bool:
        """Give the node no more work (it cannot read photos this machine reads); its stations end
        once the batches they hold have answered.  False if it was left out already."""
        if node_id in self.excluded:
            return False
        self.excluded[node_id] = reason
        for key, slot in list(self.slots.items()):
            if slot.node == node_id:
                del self.slots[key]
                slot.retired = True
                self.retired.append(slot)
                self.retire(slot)
        return True

    def retire(self, slot: Slot) -> None:
        """End a station of a left-out node if it holds no batch (else when its last one answers)."""
        import ray

        if not (slot.encoding or slot.io):
            with contextlib.suppress(Exception):
                ray.kill(slot.handle)

    def why_none(self) -> str:
        """Why no station is left or starting, for the scan's one-line error: nodes left out, none
        that can hold one, stations that never started, or all lost."""
        import ray

        done = "the photos done so far are recorded"
        if not self.ever_ready and not self.excluded:
            if self.failed:
                nodes = "; ".join(f"node {self.labels.get(node, node[:8])}: {reason}"
                                  for node, reason in self.failed.items())
                return f"no station could start on the Ray cluster: {nodes}"
            alive = sum(1 for node in ray.nodes() if node.get("Alive"))
            return (f"no station could start: none of the Ray cluster's {alive} node{'s' * (alive != 1)} "
                    "offers Ray a CPU or a GPU (a head started with --num-cpus 0 runs none): start a worker "
                    "node with `ray start --address HEAD:PORT`")
        if self.excluded:
            nodes = "; ".join(f"node {self.labels.get(node, node[:8])} {reason}"
                              for node, reason in self.excluded.items())
            return (f"no node left that reads the photos: {nodes} (is the share mounted there at the same "
                    f"path?); {done}: scan again once it is")
        return (f"every station was lost and no node can take a new one; {done}: scan again when the "
                "cluster is back")

    def ready(self, timeout: float = START_TIMEOUT_S) -> Slot:
        """Some loaded station, waiting for the first to load if need be (the tag list's prompts)."""
        import ray

        deadline = time.monotonic() + timeout
        while not self.slots:
            if not self.starting:
                self.grow()
            if not self.starting:
                raise ClusterError(self.why_none())
            left = max(0.0, deadline - time.monotonic())
            done, _ = ray.wait(list(self.starting), num_returns=1, timeout=left)
            if not done:
                raise ClusterError(f"no station started on the Ray cluster within {timeout:.0f} s: are its "
                                   "CPUs taken by other jobs?")
            self.loaded(done[0])
        return min(self.slots.values(), key=lambda s: s.encoding + s.io)

    def close(self) -> None:
        import ray

        for slot in [*self.slots.values(), *self.starting.values(), *self.retired]:
            with contextlib.suppress(Exception):
                ray.kill(slot.handle)
        self.slots.clear()
        self.starting.clear()
        self.retired.clear()


class RemoteModel:
    """The stations' model with :class:`~tagwatch.encoder.LazyModel`'s face, so the pipeline encodes
    a tag list's new prompts on the cluster (the driver needs no torch)."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet, self.identity = fleet, fleet.identity

    @contextlib.contextmanager
    def using(self) -> Iterator[RemoteModel]:
        yield self

    def encode_texts(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        import ray

        for attempt in range(1, ATTEMPTS + 1):
            slot = self.fleet.ready()
            try:
                return np.asarray(replay(ray.get(slot.handle.encode_texts.remote(list(texts)))), np.float32)
            except ray.exceptions.RayActorError as exc:
                self.fleet.drop(slot)
                if attempt == ATTEMPTS:
                    raise ClusterError(f"stations kept dying while encoding the tag list: {_one_line(exc)}") \
                        from None
        raise AssertionError("unreachable")

    def close(self) -> None:
        """The fleet is closed by the scan that made it."""


# -- the scan --------------------------------------------------------------------------------------

@dataclass
class Batch:
    kind: str  # "key", "encode" or "write"
    slot: Slot
    photos: list[Photo]  # what was sent (encode: one photo per key)
    jobs: list[WriteJob] = field(default_factory=list)


class Scan:
    """One scan on the cluster: feeds photos through the stations in a bounded window."""

    def __init__(self, pipeline: Pipeline, fleet: Fleet, *, batch: int, dry_run: bool,
                 finish: Callable[[Outcome], None]) -> None:
        self.pipeline, self.fleet, self.batch, self.dry_run = pipeline, fleet, max(1, batch), dry_run
        self.finish = finish  # each photo's final outcome, once
        self.summary = Summary()
        self.again: deque[str] = deque()  # paths of lost batches, to start over
        self.attempts: Counter[str] = Counter()  # only paths that were lost
        self.to_key: deque[Photo] = deque()
        self.waiting: dict[bytes, list[Photo]] = {}  # misses to encode, by key, oldest first
        self.encoding: dict[bytes, list[Photo]] = {}  # keys in flight, with every photo waiting on each
        self.to_write: deque[WriteJob] = deque()
        self.inflight: dict[Any, Batch] = {}
        self.open = 0  # photos between select and their outcome
        self.vectors: dict[str, str] = {}  # open photos that have a vector: "encoded" or "cached"
        self.stopping = False  # Ctrl-C: no more work is handed out; the batches held are finished
        self.deadline = 0.0  # ... until then at most

    # -- the loop ----------------------------------------------------------------------------------

    def run(self, paths: Iterable[str]) -> Summary:
        """Tag ``paths``; the summary once every photo has its outcome.  Ctrl-C raises
        :class:`Interrupted`: after the batches the stations hold are answered and recorded (a
        second Ctrl-C, or :data:`DRAIN_S` passing, stops them mid-batch instead).  Whatever ends
        the scan early kills the stations and deletes the temporary files of their writes in flight."""
        started = time.monotonic()
        try:
            with self._ctrl_c():
                self._loop(paths)
        except BaseException as exc:
            removed = self._abandon()
            if isinstance(exc, KeyboardInterrupt):  # the second Ctrl-C, or the stations too slow
                stop = exc if isinstance(exc, Interrupted) else Interrupted(False, "Ctrl-C again")
                stop.removed = removed
                raise stop from None
            raise
        if self.stopping:
            raise Interrupted(True)
        self.summary.seconds = time.monotonic() - started
        for node, count in self.fleet.started.items():
            self._node(node).stations = count
        return self.summary

    def stop(self) -> None:
        """Hand out no more work; end once the batches in flight have answered (Ctrl-C)."""
        if not self.stopping:
            self.stopping, self.deadline = True, time.monotonic() + DRAIN_S

    @contextlib.contextmanager
    def _ctrl_c(self) -> Iterator[None]:
        """The first Ctrl-C stops the scan in order (:meth:`stop`), the second at once.  Left alone
        off the main thread, and where SIGINT is ignored (a background job of a script)."""
        if threading.current_thread() is not threading.main_thread() \
                or signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, None):
            yield
            return

        def interrupt(signum: int, frame: Any) -> None:
            if self.stopping:
                raise KeyboardInterrupt
            self.stop()  # the loop says so when it sees it: no logging inside a signal handler

        previous = signal.signal(signal.SIGINT, interrupt)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _loop(self, paths: Iterable[str]) -> None:
        import ray

        last_station = time.monotonic()
        source = iter(paths)
        exhausted = told = False
        while True:
            if self.stopping:
                if not self.inflight:
                    return
                if not told:
                    told = True
                    log.warning("ray: interrupted: no more work is handed out; the stations finish the "
                                "%s they hold and each is recorded (at most %.0f s; Ctrl-C again to stop "
                                "them at once)", counted(len(self.inflight), "batch", "batches"), DRAIN_S)
                if time.monotonic() > self.deadline:
                    raise Interrupted(False, "the stations did not finish their batches within "
                                             f"{DRAIN_S:.0f} s")
                waiting = list(self.inflight)  # stations still starting get no work now
            else:
                exhausted = self._feed(source, exhausted)
                self._dispatch()
                if exhausted and not (self.again or self.open or self.inflight):
                    return
                if time.monotonic() - self.fleet.grown > GROW_EVERY_S:
                    self.fleet.grow()
                if self.fleet.slots:
                    last_station = time.monotonic()
                elif time.monotonic() - last_station > START_TIMEOUT_S:
                    raise ClusterError(f"no station has been ready on the Ray cluster for "
                                       f"{START_TIMEOUT_S:.0f} s: are its CPUs taken by other jobs?")
                waiting = [*self.inflight, *self.fleet.starting]
                if not waiting:  # photos wait and no station is left or starting
                    self.fleet.grow()
                    if not self.fleet.starting:
                        raise ClusterError(self.fleet.why_none())
                    continue
            done, rest = ray.wait(waiting, num_returns=1, timeout=POLL_S)
            if done:
                more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
                done += more
            for ref in done:
                if ref in self.fleet.starting:
                    self.fleet.loaded(ref)
                else:
                    self._collect(ref)

    def _abandon(self) -> int:
        """The scan ends early: kill every station, wait (briefly) until the calls they held report
        them gone, then delete the temporary files their writes in flight left beside photos (their
        processes, and with them their exiftools, are dead: nothing writes those files any more).
        Returns how many were deleted."""
        import ray

        writes = [(ref, batch) for ref, batch in self.inflight.items() if batch.kind == "write"]
        self.fleet.close()
        if writes:
            with contextlib.suppress(Exception):
                ray.wait([ref for ref, _ in writes], num_returns=len(writes), timeout=KILLED_S)
        return sum(self._clean(batch.jobs, batch.slot.info.pid) for _, batch in writes
                   if batch.slot.info is not None)

    def _feed(self, source: Iterator[str], exhausted: bool) -> bool:
        """Take paths (lost ones first) while the window has room; True once the walk is done."""
        window = 4 * self.batch * max(1, len(self.fleet.slots))
        while self.open < window and (self.again or not exhausted):
            chunk = [self.again.popleft() for _ in range(min(len(self.again), self.batch))]
            while len(chunk) < self.batch and not exhausted:
                path = next(source, None)
                if path is None:
                    exhausted = True
                else:
                    chunk.append(path)
                    self.summary.photos += 1
            photos, outcomes = self.pipeline.select(chunk, dry_run=self.dry_run, retry_failed=True)
            for outcome in outcomes:
                self._done(outcome, counted=False, read=False)
            self.to_key.extend(photos)
            self.open += len(photos)
        return exhausted

    def _free(self, kind: str) -> Slot | None:
        """The least busy loaded station with room for a batch of ``kind``."""
        if kind == "encode":
            slots = [s for s in self.fleet.slots.values() if s.encoding < ENCODE_DEPTH]
            return min(slots, key=lambda s: s.encoding, default=None)
        slots = [s for s in self.fleet.slots.values() if s.io < IO_DEPTH]
        return min(slots, key=lambda s: s.io, default=None)

    def _dispatch(self) -> None:
        """Hand queued work to stations with room: writes first (they finish photos and free the
        window), then encoding, then keying."""
        while self.to_write and (slot := self._free("write")):
            jobs = [self.to_write.popleft() for _ in range(min(self.batch, len(self.to_write)))]
            self._send(Batch("write", slot, [], jobs), slot.handle.write.options(concurrency_group="io"),
                       jobs)
        while self.waiting and (slot := self._free("encode")):
            if slot.encoding and len(self.waiting) < self.batch and (self.to_key or self._keying()):
                break  # a busy station gets full batches only; an idle one takes what is there
            keys = list(self.waiting)[:self.batch]
            for key in keys:
                self.encoding[key] = self.waiting.pop(key)
            photos = [self.encoding[key][0] for key in keys]
            node = self._node(slot.node)
            node.first = node.first or time.monotonic()
            self._send(Batch("encode", slot, photos), slot.handle.encode, photos)
        while self.to_key and (slot := self._free("key")):
            photos = [self.to_key.popleft() for _ in range(min(self.batch, len(self.to_key)))]
            self._send(Batch("key", slot, photos), slot.handle.keys.options(concurrency_group="io"), photos)

    def _keying(self) -> bool:
        return any(b.kind == "key" for b in self.inflight.values())

    def _send(self, batch: Batch, method: Any, payload: list[Any]) -> None:
        if batch.kind == "encode":
            batch.slot.encoding += 1
        else:
            batch.slot.io += 1
        self.inflight[method.remote(payload)] = batch

    # -- answers -----------------------------------------------------------------------------------

    def _collect(self, ref: Any) -> None:
        import ray

        batch = self.inflight.pop(ref)
        if batch.kind == "encode":
            batch.slot.encoding -= 1
        else:
            batch.slot.io -= 1
        try:
            result = replay(ray.get(ref))
        except Exception as exc:  # the node or the station is gone, or the call failed
            self._lost(batch, exc)
            return
        if batch.kind == "key":
            self._keyed(batch, result)
        elif batch.kind == "encode":
            self._encoded(batch, result)
        else:
            self._written(batch, result)
        if batch.slot.retired:
            self.fleet.retire(batch.slot)

    def _keyed(self, batch: Batch, keys: list[Any]) -> None:
        self._node(batch.slot.node).keyed += sum(isinstance(key, bytes) for key in keys)  # what it found
        photos: list[Photo] = []
        for photo, key in zip(batch.photos, keys, strict=True):
            if isinstance(key, bytes):
                photo.key = key
                photos.append(photo)
            elif not self._unseen(batch.slot, photo, key):
                self._done(self.pipeline.bad_file(photo, key, self.dry_run))
        cached = self.pipeline.cache.get({p.key for p in photos if p.key})
        hits = []
        for photo in photos:
            assert photo.key is not None
            if photo.key in cached:
                photo.vector = cached[photo.key]
                hits.append(photo)
            elif photo.key in self.encoding:
                self.encoding[photo.key].append(photo)
            else:
                self.waiting.setdefault(photo.key, []).append(photo)
        for photo in hits:
            self.vectors.setdefault(photo.path, "cached")  # encoded before it was lost, it stays so
        self._tag(hits)

    def _encoded(self, batch: Batch, answer: Encoded) -> None:
        node = self._node(batch.slot.node)
        node.last = time.monotonic()
        node.encoded += len(answer.vectors)  # the node's work: a photo is counted in the totals once
        rows = iter(answer.vectors)
        fresh: dict[bytes, np.ndarray] = {}
        groups: list[tuple[bytes, list[Photo]]] = []
        for sent, key in zip(batch.photos, answer.keys, strict=True):
            assert sent.key is not None
            group = self.encoding.pop(sent.key)
            if not isinstance(key, bytes):
                for photo in group:
                    if not self._unseen(batch.slot, photo, key):
                        self._done(self.pipeline.bad_file(photo, key, self.dry_run))
                continue
            fresh[key] = next(rows)
            if key != sent.key:  # replaced since it was keyed: the others keep the old picture
                for photo in group[1:]:
                    self._start_over(photo, count=False)
                group = group[:1]
                sent.key = key
            groups.append((key, group))
        stored = self.pipeline.cache.put(fresh) if fresh else {}  # the stored (float16) form
        photos = []
        for key, group in groups:
            for i, photo in enumerate(group):  # the first was encoded; the others have its picture
                photo.key, photo.vector = key, stored[key]
                self.vectors.setdefault(photo.path, "cached" if i else "encoded")
                photos.append(photo)
        self._tag(photos)

    def _tag(self, photos: list[Photo]) -> None:
        """Photos with vectors → keywords decided, recorded ahead, and written (on a node) or not.
        Not once the scan is stopping: they are left for the next run, their vectors stored."""
        if not photos or self.stopping:
            return
        pipeline, writeback = self.pipeline, self.pipeline.writeback
        for photo, (tags, override) in zip(photos, pipeline.judge(photos, dry_run=self.dry_run), strict=True):
            job = WriteJob(photo.path, photo.key, photo.stat, tags, override)
            if self.dry_run:
                self._done(writeback.preview(job, pipeline.rules))
                continue
            try:
                writeback.plan_ahead(job, pipeline.rules)
                if job.writes:
                    self.to_write.append(job)  # a node writes it
                    continue
                st = job.stat if job.plan is None else write_file(pipeline.writer, job)  # nothing to write
            except (MetadataError, OSError) as exc:
                self._done(writeback.failed(job, exc))
                continue
            self._done(writeback.record_done(job, st, pipeline.rules))

    def _written(self, batch: Batch, results: list[Any]) -> None:
        writeback = self.pipeline.writeback
        for job, result in zip(batch.jobs, results, strict=True):
            if isinstance(result, os.stat_result):
                self._node(batch.slot.node).written += 1
                self._done(writeback.record_done(job, result, self.pipeline.rules))
            elif isinstance(result, FileVanished):
                # nothing was written; seen here, the photo is planned again (as after a lost write)
                if not self._unseen(batch.slot, Photo(job.path, job.stat), result):
                    gone = FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), job.path)
                    self._done(writeback.failed(job, gone))
            else:
                self._done(writeback.failed(job, result))

    def _unseen(self, slot: Slot, photo: Photo, problem: Any) -> bool:
        """A node could not find or read ``photo``: if this machine reads it, that is the node's
        problem, not the file's (a share not mounted there, another user's rights): the photo starts
        over on the other nodes, never recorded gone or failed, and the node is left out of the rest
        of the scan (the summary names it, the exit status is 1).  False when this machine cannot
        read it either: the node was right, and the outcome is the file's."""
        if not isinstance(problem, ReadFailed) or problem.transient:
            return False
        try:
            with open(photo.path, "rb"):
                now = os.stat(photo.path)
        except OSError:
            return False
        before = photo.stat
        if (now.st_ino, now.st_size, now.st_mtime_ns) != (before.st_ino, before.st_size, before.st_mtime_ns):
            self._start_over(photo, reason=str(problem))  # replaced meanwhile: the node may have been right
            return True
        node = self._node(slot.node)
        node.unseen += 1
        what = ("does not find" if isinstance(problem, FileVanished) else f"cannot read ({problem})")
        reason = f"{what} {shown(photo.path)}, which this machine reads"
        if self.fleet.exclude(slot.node, reason):
            node.left_out = reason
            log.warning("ray: node %s %s: is the share mounted there at the same path? It gets no more "
                        "photos; those it could not read start over on the other nodes", slot.label, reason,
                        extra={"event": "node-left-out", "path": photo.path, "reason": reason})
        self._start_over(photo, count=False)
        return True

    # -- losses --------------------------------------------------------------------------------------

    def _lost(self, batch: Batch, exc: Exception) -> None:
        """A batch that never answered: its photos start over (a write's plan is made again from
        the file and the ledger, as after a crash)."""
        import ray

        reason = _one_line(exc)
        self.summary.lost += 1
        self._node(batch.slot.node).lost += 1
        if isinstance(exc, ray.exceptions.RayActorError):
            # "a batch of 8 to encode": right for every kind, where "a %s batch" made "a encode batch"
            log.warning("ray: lost a station on node %s with a batch of %d to %s: %s", batch.slot.label,
                        len(batch.photos) or len(batch.jobs), batch.kind, reason)
            self.fleet.drop(batch.slot)
        else:
            log.warning("ray: a batch of %d to %s on node %s failed: %s",
                        len(batch.photos) or len(batch.jobs), batch.kind, batch.slot.label, reason)
        if batch.kind == "write":
            if isinstance(exc, ray.exceptions.RayActorError) and batch.slot.info is not None:
                self._clean(batch.jobs, batch.slot.info.pid)
            photos = [Photo(job.path, job.stat) for job in batch.jobs]
        elif batch.kind == "encode":
            photos = [photo for sent in batch.photos for photo in self.encoding.pop(sent.key or b"", [])]
        else:
            photos = batch.photos
        for photo in photos:
            self._start_over(photo, reason=reason)

    def _clean(self, jobs: list[WriteJob], pid: int) -> int:
        """Delete the temporary files a station that died mid-write left beside its photos and
        sidecars (the photo itself is whole: it is replaced only by an atomic rename); how many."""
        writer = self.pipeline.writer
        assert writer is not None
        folders = {folder for job in jobs
                   for folder in (Path(job.path).parent, writer.sidecar_for(Path(job.path)).parent)}
        removed = 0
        for folder in folders:
            for temp in temp_files_of(folder, pid):
                with contextlib.suppress(OSError):
                    temp.unlink()
                    removed += 1
                    log.info("%s: removed a temporary file left by a lost write", temp)
        return removed

    def _start_over(self, photo: Photo, count: bool = True, reason: str = "") -> None:
        """Send ``photo`` back to the start; ``count``: it was lost, and only so many times."""
        self.open -= 1
        if count:
            self.attempts[photo.path] += 1
            if self.attempts[photo.path] >= ATTEMPTS:
                reason = f"lost with its Ray worker {ATTEMPTS} times ({reason})"
                self._done(Outcome(photo.path, Status.WAIT, error=reason), counted=False, read=True)
                return
        self.again.append(photo.path)

    # -- bookkeeping ---------------------------------------------------------------------------------

    def _done(self, outcome: Outcome, counted: bool = True, read: bool = True) -> None:
        """``outcome`` is the photo's last; ``counted``: it is still open in the window; ``read``:
        it was sent to a node (else :meth:`Pipeline.select` settled it by its stat alone)."""
        if counted:
            self.open -= 1
        self.attempts.pop(outcome.path, None)
        how = self.vectors.pop(outcome.path, None)
        if how == "encoded":
            self.summary.encoded += 1
        elif how == "cached":
            self.summary.cached += 1
        elif read:
            self.summary.unread += 1
        else:
            self.summary.skipped += 1
        self.summary.counts[outcome.status] += 1
        if outcome.status == Status.FAILED and outcome.error:
            self.summary.failed[outcome.error] += 1
        self.finish(outcome)

    def _node(self, node_id: str) -> NodeStats:
        stats = self.summary.nodes.get(node_id)
        if stats is None:
            stats = self.summary.nodes[node_id] = NodeStats(self.fleet.labels.get(node_id, node_id[:8]))
        return stats


def replay(answer: Answer[Any]) -> Any:
    """A station's answer's value, after logging here the lines the station logged: each once, in
    this process's format (text or JSON, with the record's path and reason), at its level."""
    for line in answer.lines:
        logger = logging.getLogger(line.logger)
        if logger.isEnabledFor(line.level):
            logger.handle(logger.makeRecord(line.logger, line.level, "(station)", 0, line.message, (), None,
                                            extra=line.fields))
    return answer.value


def _one_line(exc: BaseException) -> str:
    """A Ray error's first line, without its traceback."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _plain(exc: BaseException) -> str:
    """A Ray error's first line, in its own words: no exception class, no traceback."""
    text = str(exc).strip().splitlines()
    return text[0] if text else "Ray gave no reason"


def recorded_address() -> tuple[str | None, Path]:
    """The head that ``ray start`` recorded on this machine, and the file it is recorded in, where
    Ray itself looks (``ray._common.utils.get_ray_address_file``): ``ray/ray_current_cluster`` under
    $RAY_TMPDIR, else $TMPDIR, else /tmp.  A cluster started with ``--temp-dir`` records itself in
    that folder instead, where Ray does not look: it is not found.  Read without importing Ray
    (:func:`prepare` must know the address first)."""
    if "RAY_TMPDIR" in os.environ:
        base = os.environ["RAY_TMPDIR"]
    elif sys.platform.startswith("linux") and "TMPDIR" in os.environ:
        base = os.environ["TMPDIR"]
    else:
        base = "/tmp"
    where = Path(base) / ADDRESS_FILE
    try:
        found = where.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        found = ""
    return found or None, where


def _target(address: str | None) -> str | None:
    """The head the scan will join: ``address``, else RAY_ADDRESS, else the one recorded on this
    machine; None for a Ray of its own."""
    given = address or os.environ.get("RAY_ADDRESS") or None
    if given == "local":
        return None
    if given in (None, "auto"):
        return recorded_address()[0] or (None if given is None else given)
    return given


def _other_heads() -> list[str]:
    """Ray heads running on this machine (found by their processes, as ``ray status`` does),
    for the line that says none was found where Ray looks: one started with ``--temp-dir``."""
    import ray

    with contextlib.suppress(Exception):
        return sorted(ray._private.services.find_gcs_addresses())
    return []


@contextlib.contextmanager
def _held_stderr() -> Iterator[None]:
    """Whatever is written on file descriptor 2 meanwhile is dropped: Ray's C++ client prints its
    own log lines there (``gcs_client.cc: Failed to get cluster ID …``) before the error the scan
    says in one line of its own.  Only while joining a cluster: a Ray started here would give its
    processes this descriptor."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as held:
            os.dup2(held.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def connect(address: str | None) -> bool:
    """Join the cluster at ``address`` (None: RAY_ADDRESS, or the one ``ray start`` recorded on this
    machine, else a Ray for this scan alone, said in a line); True if this call connected.

    A head that is not there is found out first (:func:`reach`, 20 s at most): Ray itself retries
    an unreachable address for more than 10 minutes, printing only its internal warnings.  Once
    something answers as a gRPC server, Ray is given one attempt (~40 s) instead of 20, so an
    address that is not a Ray head fails within about a minute too.  Every failure is one line in
    plain words (:class:`ClusterError`); Ray's own log lines stay off the terminal."""
    import ray

    if ray.is_initialized():
        return False
    given = _target(address)
    named = address or os.environ.get("RAY_ADDRESS")
    origin = "" if named else f" (recorded by `ray start` in {recorded_address()[1]})"
    if given is None:
        heads = _other_heads()
        which = "Ray heads run" if len(heads) > 1 else "a Ray head runs"
        hint = (f" ({which} here at {', '.join(heads[:3])}, not recorded there: started with --temp-dir?)"
                if heads else "")
        log.warning("ray: no running Ray cluster found on this machine (`ray start` records its head in "
                    "%s)%s: starting a Ray of its own for this scan; pass --address HOST:PORT to use a "
                    "cluster",
                    recorded_address()[1], hint)
    elif not named:
        log.info("ray: joining the Ray cluster at %s%s", given, origin)
    if given and given != "auto":
        problem = reach(given)
        if problem:
            raise ClusterError(f"cannot reach the Ray cluster at {given}{origin}: {problem}")
    bounded = bool(given) and GCS_TRIES not in os.environ  # a user's own setting is kept
    if bounded:
        os.environ[GCS_TRIES] = "1"
    try:
        with _held_stderr() if given else contextlib.nullcontext():
            # Not the stations' stdout and stderr: their log lines come with their answers (replay).
            # Ray's own warnings (a token set up for the Ray it starts) are not the user's business.
            # A Ray of its own runs the stations at the scan's own priority, as the local engine's
            # work runs: Ray's default (niceness 15) let any other busy process starve them (beside
            # two busy processes on 2 cores, a station was ready after 85-92 s instead of 9-10).
            ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False,
                     **({} if given else {"_system_config": {"worker_niceness": 0}}))
    except (ConnectionError, ValueError, RuntimeError, OSError) as exc:
        if not given:
            raise ClusterError(f"cannot start a Ray on this machine: {_plain(exc)}") from None
        if isinstance(exc, ConnectionError):  # it speaks gRPC (reach), but no Ray head answered
            raise ClusterError(f"cannot join the Ray cluster at {given}{origin}: it answers but is not a "
                               "Ray head (is the port the one `ray start --head` printed?)") from None
        raise ClusterError(f"cannot join the Ray cluster at {given}{origin}: {_plain(exc)}") from None
    finally:
        if bounded:
            os.environ.pop(GCS_TRIES, None)
    return True


def reach(address: str, timeout: float = REACH_S) -> str | None:
    """Why ``address`` (HOST:PORT, or ray://HOST:PORT) is no Ray head, or None if it may be one:
    it must accept a connection within ``timeout`` and answer an HTTP/2 greeting with the server's
    settings frame within ``timeout`` again, as any gRPC server (a Ray head) does at once."""
    scheme, sep, _ = address.partition("://")
    if sep and scheme != "ray":
        return f"give the address as HOST:PORT, without {scheme}://"
    host, colon, port = address.removeprefix("ray://").rpartition(":")
    host = host.strip("[]")
    if not colon or not host or not port.isdigit():
        return "give the address as HOST:PORT, as `ray start --head` printed it"
    stage = "connect"
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as sock:
            stage = "answer"
            sock.sendall(HTTP2_HELLO)
            answer = b""
            while len(answer) < 9 and (more := sock.recv(9 - len(answer))):
                answer += more
    except socket.gaierror as exc:
        return f"unknown host {host!r} ({exc.strerror})"
    except ConnectionRefusedError:
        return f"nothing listens on port {port} there (is `ray start --head --port {port}` running there?)"
    except TimeoutError:
        if stage == "connect":
            return f"no answer within {timeout:.0f} s (a wrong address, the machine down, or a firewall?)"
        return f"port {port} accepts a connection but says nothing within {timeout:.0f} s: not a Ray head"
    except OSError as exc:
        return exc.strerror or str(exc)
    if len(answer) < 9 or answer[3] != 0x04:  # a frame header: 3 bytes length, 1 type (4: SETTINGS)
        return f"something listens on port {port} there, but not a Ray head (it does not speak gRPC)"
    return None


def remove_left_temp_files(folder: str) -> int:
    """Delete the temporary files of ours (``.PID-N.tagwatch-tmp``) that a write killed midway left
    in ``folder`` (not below): those a killed station or driver left.  The driver walks the folders
    anyway; the PID in the name may be a station's on another node, so :func:`is_stale_temp_file`
    (no such process here) is not enough: a file is removed only when, besides, nothing has
    modified it for :data:`STALE_AFTER_S` (a write in flight anywhere keeps its file growing, and
    removing it would only make that write fail, never harm the photo).  Returns how many."""
    now = time.time()
    removed = 0
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if not is_stale_temp_file(entry.name):  # not ours, or its PID runs here: perhaps writing
                    continue
                try:
                    if not entry.is_file(follow_symlinks=False) \
                            or now - entry.stat(follow_symlinks=False).st_mtime < STALE_AFTER_S:
                        continue
                    os.unlink(entry.path)
                except FileNotFoundError:  # another cleaner was first
                    continue
                except OSError as exc:
                    log.warning("%s: cannot remove this temporary file left by an interrupted write: %s",
                                entry.path, exc.strerror)
                    continue
                removed += 1
                log.info("%s: removed a temporary file left by an interrupted write", entry.path)
    except OSError:
        pass  # the photos' own lines say what is wrong with the folder
    return removed


def disconnect() -> None:
    import ray

    ray.shutdown()


def run_scan(pipeline: Pipeline, fleet: Fleet, paths: Iterable[str], *, batch: int, dry_run: bool,
             finish: Callable[[Outcome], None]) -> Summary:
    """Tag ``paths`` on the cluster; ``finish`` sees each photo's outcome once."""
    return Scan(pipeline, fleet, batch=batch, dry_run=dry_run, finish=finish).run(paths)
