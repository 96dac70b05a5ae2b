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
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import os
import socket
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import Config
from .logs import shown
from .metadata import MetadataError, temp_files_of
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
    if address and _loopback(address):
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
    photos: int = 0
    counts: Counter[str] = field(default_factory=Counter)  # outcomes by status
    encoded: int = 0  # vectors computed by a station
    cached: int = 0  # photos that needed none: stored already, or the same picture as another file
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
        failed = sum(self.failed.values())
        stations = sum(n.stations for n in self.nodes.values())
        lines = [f"ray: {counted(self.photos, 'photo')} in {self.seconds:.1f} s ({rate:.1f}/s): "
                 f"{self.encoded} encoded, {self.cached} cached, {failed} failed; "
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
        log.info("ray: station on %s ready (%s, %s, pid %d)", slot.label, info.device, info.precision,
                 info.pid)
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

    # -- the loop ----------------------------------------------------------------------------------

    def run(self, paths: Iterable[str]) -> Summary:
        import ray

        started = last_station = time.monotonic()
        source = iter(paths)
        exhausted = False
        while True:
            exhausted = self._feed(source, exhausted)
            self._dispatch()
            if exhausted and not (self.again or self.open or self.inflight):
                break
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
            done, rest = ray.wait(waiting, num_returns=1, timeout=GROW_EVERY_S)
            if done:
                more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
                done += more
            for ref in done:
                if ref in self.fleet.starting:
                    self.fleet.loaded(ref)
                else:
                    self._collect(ref)
        self.summary.seconds = time.monotonic() - started
        for node, count in self.fleet.started.items():
            self._node(node).stations = count
        return self.summary

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
                self._done(outcome, counted=False)
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
        self._node(batch.slot.node).keyed += len(keys)
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
        self.summary.cached += len(hits)
        self._tag(hits)

    def _encoded(self, batch: Batch, answer: Encoded) -> None:
        node = self._node(batch.slot.node)
        node.last = time.monotonic()
        node.encoded += len(answer.vectors)
        self.summary.encoded += len(answer.vectors)
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
            self.summary.cached += len(group) - 1
            for photo in group:
                photo.key, photo.vector = key, stored[key]
                photos.append(photo)
        self._tag(photos)

    def _tag(self, photos: list[Photo]) -> None:
        """Photos with vectors → keywords decided, recorded ahead, and written (on a node) or not."""
        if not photos:
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

    def _clean(self, jobs: list[WriteJob], pid: int) -> None:
        """Delete the temporary files a station that died mid-write left beside its photos and
        sidecars (the photo itself is whole: it is replaced only by an atomic rename)."""
        writer = self.pipeline.writer
        assert writer is not None
        folders = {folder for job in jobs
                   for folder in (Path(job.path).parent, writer.sidecar_for(Path(job.path)).parent)}
        for folder in folders:
            for temp in temp_files_of(folder, pid):
                with contextlib.suppress(OSError):
                    temp.unlink()
                    log.info("%s: removed a temporary file left by a lost write", temp)

    def _start_over(self, photo: Photo, count: bool = True, reason: str = "") -> None:
        """Send ``photo`` back to the start; ``count``: it was lost, and only so many times."""
        self.open -= 1
        if count:
            self.attempts[photo.path] += 1
            if self.attempts[photo.path] >= ATTEMPTS:
                reason = f"lost with its Ray worker {ATTEMPTS} times ({reason})"
                self._done(Outcome(photo.path, Status.WAIT, error=reason), counted=False)
                return
        self.again.append(photo.path)

    # -- bookkeeping ---------------------------------------------------------------------------------

    def _done(self, outcome: Outcome, counted: bool = True) -> None:
        if counted:
            self.open -= 1
        self.attempts.pop(outcome.path, None)
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


def connect(address: str | None) -> bool:
    """Join the cluster at ``address`` (None: RAY_ADDRESS, or one started on this machine with
    ``ray start``, else a Ray for this scan alone); True if this call connected.

    A head that is not there is found out first (:func:`reach`, 20 s at most): Ray itself retries
    an unreachable address for more than 10 minutes, printing only its internal warnings.  Once
    something answers as a gRPC server, Ray is given one attempt (~40 s) instead of 20, so an
    address that is not a Ray head fails within about a minute too."""
    import ray

    if ray.is_initialized():
        return False
    given = address or os.environ.get("RAY_ADDRESS")
    if given and given not in ("auto", "local"):
        problem = reach(given)
        if problem:
            raise ClusterError(f"cannot reach the Ray cluster at {given}: {problem}")
    bounded = bool(given) and GCS_TRIES not in os.environ  # a user's own setting is kept
    if bounded:
        os.environ[GCS_TRIES] = "1"
    try:
        # Not the stations' stdout and stderr: their log lines come with their answers (replay)
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise ClusterError(f"cannot join the Ray cluster at {given or 'the default address'}: "
                           f"{_one_line(exc)}") from None
    finally:
        if bounded:
            os.environ.pop(GCS_TRIES, None)
    return True


def reach(address: str, timeout: float = REACH_S) -> str | None:
    """Why ``address`` (HOST:PORT, or ray://HOST:PORT) is no Ray head, or None if it may be one:
    it must accept a connection within ``timeout`` and answer an HTTP/2 greeting with the server's
    settings frame within ``timeout`` again, as any gRPC server (a Ray head) does at once."""
    host, colon, port = address.removeprefix("ray://").rpartition(":")
    host = host.strip("[]")
    if not colon or not host or not port.isdigit():
        return None  # not HOST:PORT: Ray's own parsing says what is wrong
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


def disconnect() -> None:
    import ray

    ray.shutdown()


def run_scan(pipeline: Pipeline, fleet: Fleet, paths: Iterable[str], *, batch: int, dry_run: bool,
             finish: Callable[[Outcome], None]) -> Summary:
    """Tag ``paths`` on the cluster; ``finish`` sees each photo's outcome once."""
    return Scan(pipeline, fleet, batch=batch, dry_run=dry_run, finish=finish).run(paths)
