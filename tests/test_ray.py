"""``tagwatch scan --engine ray`` on a real Ray cluster of three nodes on this machine.

One cluster serves the whole module (a head that runs nothing but the driver's connection, and two
worker nodes of one CPU each, every one bound to 127.0.0.1 so no traffic leaves loopback); the
``xdist_group`` mark keeps these tests on one pytest-xdist worker, so the suite starts one cluster.
Two tests start a little more for themselves, and stop it: a third node that does not see the photos
(root only), and a head-only cluster.
Each scan is compared with the local engine's scan of a copy of the same 200 photos (the test model,
synthetic photos it knows): same content keys, same keywords in every file, vectors alike, the same
ledger.
"""

from __future__ import annotations

import contextlib
import json
import os
import re

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # before Ray is imported: see below

import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

import synthetic
from conftest import CORPUS, REPO, SHAPES_CHECKPOINT, SHAPES_CONFIG, write_config
from procstats import children
from shapes_lab import TAGS, THRESHOLD
from tagwatch.cli.scan import scan, scan_on_ray
from tagwatch.config import load_config
from tagwatch.metadata import temp_files_of
from tagwatch.outcomes import Outcome

if TYPE_CHECKING:  # Ray is imported by the cluster fixture: collecting this module imports none of it
    from ray.cluster_utils import Cluster

# The ray tests share one cluster: keep them on one xdist worker (scripts/test: --dist loadgroup)
pytestmark = pytest.mark.xdist_group("ray")

PHOTOS = 200
NODE = {"num_cpus": 1, "node_ip_address": "127.0.0.1", "object_store_memory": 80 << 20}


@dataclass
class Run:
    """What a scan left: per file name its content key, keywords and ledger; vectors by key."""

    keys: dict[str, bytes]
    keywords: dict[str, list[str]]
    ledger: dict[str, list[tuple[str, str]]]
    vectors: dict[bytes, np.ndarray]
    states: dict[str, str]
    integrity: str


def results(config: Path, folder: Path) -> Run:
    database = config.parent / "state" / "tagwatch.db"
    with sqlite3.connect(database) as db:
        files = db.execute("SELECT id, path, key, state FROM files").fetchall()
        names = {file_id: Path(path).name for file_id, path, _, _ in files}
        ledger: dict[str, list[tuple[str, str]]] = {}
        rows = db.execute("SELECT file_id, keyword, action FROM ledger ORDER BY keyword")
        for file_id, keyword, action in rows:
            ledger.setdefault(names[file_id], []).append((keyword, action))
        vectors = {key: np.frombuffer(blob, np.float16).astype(np.float32)
                   for key, blob in db.execute("SELECT key, vector FROM image_vectors")}
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
    read = subprocess.run(["exiftool", "-j", "-IPTC:Keywords", "-XMP-dc:Subject", str(folder)],
                          capture_output=True, text=True, check=True)
    keywords = {}
    for entry in json.loads(read.stdout):
        iptc = entry.get("Keywords", [])
        iptc = [str(k) for k in (iptc if isinstance(iptc, list) else [iptc])]
        xmp = entry.get("Subject", [])
        assert sorted(str(k) for k in (xmp if isinstance(xmp, list) else [xmp])) == sorted(iptc)
        keywords[Path(entry["SourceFile"]).name] = iptc  # in the file's order: a duplicate would show
    return Run({Path(p).name: k for _, p, k, _ in files}, keywords, ledger, vectors,
               {Path(p).name: s for _, p, _, s in files}, integrity)


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """200 synthetic photos of coloured shapes the test model knows."""
    folder = tmp_path_factory.mktemp("ray-library") / "photos"
    folder.mkdir()
    for item in synthetic.items(7, per_pair=6)[:PHOTOS]:
        synthetic.make_photo(item.colour, item.shape, item.seed).save(folder / f"{item.name}.jpg", quality=90)
    return folder


def setup(root: Path, library: Path) -> tuple[Path, Path]:
    """A copy of the library and a config of its own (its own database)."""
    photos = Path(shutil.copytree(library, root / "photos"))
    config = write_config(root / "conf", SHAPES_CHECKPOINT, model=SHAPES_CONFIG, tags=TAGS,
                          threshold=THRESHOLD, top_k=10)
    return photos, config


@pytest.fixture(scope="module")
def local(library: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The local engine's scan of a copy: what the cluster must match."""
    photos, config = setup(tmp_path_factory.mktemp("local"), library)
    counts = scan(load_config(config), sorted(str(p) for p in photos.iterdir()), dry_run=False)
    assert counts == {"tagged": PHOTOS}
    run = results(config, photos)
    assert sum(1 for words in run.keywords.values() if words) > PHOTOS * 0.9  # the model sees the shapes
    return run


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A head (no CPU: it runs no station) and two worker nodes of one CPU, all on 127.0.0.1.

    Ray connects to a cluster through this machine's outward address unless told that the node's
    address is loopback (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, set above before Ray is imported;
    ``tagwatch scan --engine ray --address 127.0.0.1:PORT`` sets it itself).  Ray's files (sessions,
    logs, sockets, the address of the last cluster) go to a short folder of our own, not /tmp/ray;
    a lost node is noticed in ~3 s.
    """
    import ray
    from ray.cluster_utils import Cluster

    temp = tempfile.mkdtemp(prefix="tw-ray-", dir="/tmp")  # short: socket paths have a length limit
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_TMPDIR", temp)  # for every Ray process, the drivers the tests start included
        head = {**NODE, "num_cpus": 0, "include_dashboard": False,
                "_system_config": {"health_check_period_ms": 1000, "health_check_failure_threshold": 3}}
        cluster = Cluster(initialize_head=True, head_node_args=head)
        for _ in range(2):
            cluster.add_node(**NODE)
        ray.init(address=cluster.address, logging_level="warning")
        yield cluster
        ray.shutdown()
        cluster.shutdown()
    shutil.rmtree(temp, ignore_errors=True)


def stations(node: Any) -> list[tuple[int, str]]:
    """The Station actors' processes on a node of the local cluster, with the title Ray gives them
    (``ray::Station.encode`` while encoding, ``ray::Station.load`` while loading the model)."""
    raylet = node.all_processes["raylet"][0].process.pid
    found = []
    for child in children(raylet, missing_ok=True):  # none once the node is removed
        try:
            title = Path(f"/proc/{child}/cmdline").read_text().split("\0")[0].strip()
        except OSError:
            continue
        if title.startswith("ray::Station"):
            found.append((child, title))
    return found


def alike(ray_run: Run, local: Run) -> None:
    """Same keys and keywords per file, same ledger, vectors with cosine >= 0.999."""
    assert ray_run.keys == local.keys
    assert ray_run.keywords == local.keywords
    assert all(len(set(words)) == len(words) for words in ray_run.keywords.values())  # none twice
    assert ray_run.ledger == local.ledger
    assert ray_run.vectors.keys() == local.vectors.keys()
    for key, vector in ray_run.vectors.items():
        other = local.vectors[key]
        assert float(vector @ other / np.linalg.norm(vector) / np.linalg.norm(other)) >= 0.999
    assert set(ray_run.states.values()) == {"done"}
    assert ray_run.integrity == "ok"


def test_a_cluster_scan_tags_every_photo_as_the_local_engine_does(
        cluster: Cluster, library: Path, local: Run, tmp_path: Path) -> None:
    photos, config = setup(tmp_path, library)
    counts, summary = scan_on_ray(load_config(config), (str(p) for p in sorted(photos.iterdir())), PHOTOS,
                                  address=cluster.address, dry_run=False)
    assert counts == {"tagged": PHOTOS}
    alike(results(config, photos), local)
    assert (summary.photos, summary.encoded, summary.cached, summary.lost) == (PHOTOS, PHOTOS, 0, 0)
    assert len(summary.nodes) == 2 and all(node.encoded > 0 for node in summary.nodes.values())  # both worked


def test_a_node_lost_mid_run_costs_only_its_batches(
        cluster: Cluster, library: Path, local: Run, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    photos, config = setup(tmp_path, library)
    victim = next(iter(cluster.worker_nodes))
    earlier = {pid for node in cluster.worker_nodes for pid, _ in stations(node)}  # still ending
    seen: list[Outcome] = []
    both_working: list[int] = []
    frozen: list[int] = []  # the victim's station, stopped (SIGSTOP) while both nodes work
    removed: list[int] = []
    timers: list[threading.Timer] = []

    def working(node: Any) -> list[int]:  # its station loaded the model and has keyed, encoded or written
        return [pid for pid, title in stations(node)
                if pid not in earlier and title not in ("ray::Station", "ray::Station.load")]

    def lose_the_victim() -> None:
        """Its station, frozen, answered nothing since: the batches the driver sent it are surely
        held.  The node goes with all its processes (as a machine switched off), then the frozen
        station (a stopped process would not notice that its raylet is gone)."""
        cluster.remove_node(victim, allow_graceful=False)
        removed.append(len(seen))
        with contextlib.suppress(ProcessLookupError):
            os.kill(frozen[0], signal.SIGKILL)

    def report(outcome: Outcome) -> None:
        seen.append(outcome)
        # a loaded machine may start the second station late: watch until 60 photos are left
        if frozen or len(seen) > PHOTOS - 60 or len(cluster.worker_nodes) < 2:
            return
        if not both_working and all(working(node) for node in cluster.worker_nodes):
            both_working.append(len(seen))
        # the station's process title alone cannot say that it holds a batch (on a fast machine
        # the whole scan takes a second or two, and a batch far less): frozen, it holds whatever
        # the driver sends it from now on, and the node is lost a moment later, from outside
        if both_working and len(seen) >= max(40, both_working[0] + 10) and (pids := working(victim)):
            os.kill(pids[0], signal.SIGSTOP)
            frozen.append(pids[0])
            timer = threading.Timer(2.0, lose_the_victim)
            timer.daemon = True
            timer.start()
            timers.append(timer)

    try:
        counts, summary = scan_on_ray(load_config(config), (str(p) for p in sorted(photos.iterdir())), PHOTOS,
                                      address=cluster.address, dry_run=False, report=report)
    finally:
        for timer in timers:
            timer.join()
        if victim in cluster.worker_nodes:
            cluster.remove_node(victim)
        for pid in frozen:  # never left stopped, whatever failed
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        cluster.add_node(**NODE)  # for the next test
    assert both_working, "the second station never started: nothing was tested"
    assert frozen and removed, "the victim's station was never caught working: nothing was tested"
    assert summary.lost >= 1  # the node really took work with it
    # each photo counted once, however often its batch was started again: encoded once, then cached
    assert (summary.encoded, summary.cached, summary.unread, summary.skipped) == (PHOTOS, 0, 0, 0), \
        summary.lines()[0]
    said = [r.getMessage() for r in caplog.records
            if r.name == "tagwatch.ray_driver" and "batch" in r.getMessage()]
    assert said and all(re.search(r" a batch of \d+ to (key|encode|write)[ :]", line) for line in said), said
    # a photo the lost node had written before it went is found complete by its second batch: unchanged
    assert set(counts) <= {"tagged", "unchanged"} and sum(counts.values()) == PHOTOS, counts
    assert sorted(o.path for o in seen) == sorted(str(p) for p in photos.iterdir())  # each once, no temp file
    alike(results(config, photos), local)


@pytest.mark.slow  # two driver processes, each joining the cluster and starting its stations
def test_a_driver_killed_mid_run_resumes_from_the_store(
        cluster: Cluster, library: Path, local: Run, tmp_path: Path) -> None:
    photos, config = setup(tmp_path, library)
    command = [sys.executable, "-m", "tagwatch", "scan", "--engine", "ray", "--address", cluster.address,
               str(photos), "--config", str(config)]
    database = config.parent / "state" / "tagwatch.db"
    driver = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        stored = 0
        patience = 400  # s; generous: on a 2-core Zen 1 EPYC with the other worker busy, 56 photos took 120 s
        deadline = time.monotonic() + patience
        while stored < 60 and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
            if database.exists():
                with contextlib.suppress(sqlite3.OperationalError), sqlite3.connect(database) as db:
                    # the driver creates the file a moment before its tables
                    stored = db.execute("SELECT COUNT(*) FROM image_vectors").fetchone()[0]
        assert driver.poll() is None, driver.communicate()[1].decode()[-2000:]
        assert stored >= 60, (f"only {stored} photos stored in {patience} s: "
                              "a stuck cluster or a very busy host")
        driver.send_signal(signal.SIGKILL)
    finally:
        driver.kill()
        driver.communicate()
    with sqlite3.connect(database) as db:
        stored = db.execute("SELECT COUNT(*) FROM image_vectors").fetchone()[0]
    assert 60 <= stored < PHOTOS

    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"scan: {PHOTOS} photos: " in again.stderr
    summary = next(line for line in again.stderr.splitlines() if line.startswith("ray: "))
    split = re.search(r": (\d+) encoded, (\d+) cached, (\d+) without a vector, (\d+) skipped;", summary)
    assert split, summary
    encoded, cached, unread, skipped = map(int, split.groups())
    assert (encoded, unread) == (PHOTOS - stored, 0), summary  # none encoded again
    assert encoded + cached + skipped == PHOTOS, summary  # recorded ones skipped, the others' vectors cached
    assert again.stderr.count("  node 127.0.0.1 ") == 2  # each node's share
    alike(results(config, photos), local)


def tagwatch_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it (a driver process of its own, joining the cluster if told)."""
    return subprocess.run([sys.executable, "-m", "tagwatch", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def json_records(stderr: str) -> list[dict[str, Any]]:
    """The JSON log lines of a run (``--log-format json``), each parsed."""
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def small_setup(root: Path, sizes: dict[str, tuple[int, int]], first: str = "") -> tuple[Path, Path]:
    """A few synthetic photos of the given sizes (by name) and a config, ``first`` its opening lines
    (the top-level keys the config's sections would otherwise take)."""
    photos = root / "photos"
    photos.mkdir(parents=True)
    for i, (name, size) in enumerate(sizes.items()):
        synthetic.make_photo("red", "circle", i, size=size).save(photos / name, quality=90)
    config = write_config(root / "conf", SHAPES_CHECKPOINT, model=SHAPES_CONFIG, tags=TAGS,
                          threshold=THRESHOLD, top_k=10)
    config.write_text(first + config.read_text(encoding="utf-8"), encoding="utf-8")
    return photos, config


def test_stations_apply_the_configs_max_megapixels_as_the_local_engine_does(
        cluster: Cluster, tmp_path: Path) -> None:
    """``max_megapixels = 0.05``: the 320 x 240 photos (0.077 MP) are refused on the stations, with the
    local engine's message naming 0.05, not Pillow's own 89.48 MP limit, under which they were decoded;
    the 200 x 200 ones (0.04 MP) are tagged by both engines."""
    sizes = {**{f"big{i}.jpg": (320, 240) for i in range(3)},
             **{f"small{i}.jpg": (200, 200) for i in range(3)}}
    refused = {}
    for engine in ("local", "ray"):
        photos, config = small_setup(tmp_path / engine, sizes, "max_megapixels = 0.05\n")
        ray_args = ["--engine", "ray", "--address", cluster.address] if engine == "ray" else []
        run = tagwatch_cli("--log-format", "json", "scan", str(photos), "--config", str(config), *ray_args)
        assert run.returncode == 1, run.stderr[-2000:]  # failed photos
        refused[engine] = sorted((Path(r["path"]).name, r["reason"]) for r in json_records(run.stderr)
                                 if r.get("event") == "skipped")
        assert "scan: 6 photos: 3 failed, 3 tagged" in run.stderr, run.stderr[-2000:]
    assert refused["ray"] == refused["local"]
    assert [name for name, _ in refused["ray"]] == ["big0.jpg", "big1.jpg", "big2.jpg"]
    assert all(reason == "refused: 0.1 megapixels, over the limit of 0.05 (max_megapixels); could be a "
               "decompression bomb, so it was not decoded" for _, reason in refused["ray"])


# A worker node as ray.cluster_utils.Cluster.add_node starts one, in a process of its own (which
# ``ray start`` cannot do for a cluster bound to 127.0.0.1: it swaps that for the outward address)
NODE_PROCESS = """
import signal, sys, time
from ray._private.node import Node
from ray._private.parameter import RayParams
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # its processes are stopped at exit
params = RayParams(gcs_address=sys.argv[1], node_ip_address="127.0.0.1", num_cpus=1, num_gpus=0,
                   object_store_memory=int(sys.argv[2]), include_log_monitor=False, node_manager_port=0,
                   min_worker_port=0, max_worker_port=0)
params.dashboard_agent_listen_port = None
Node(params, head=False, shutdown_at_exit=True, spawn_reaper=True)
while True:
    time.sleep(1)
"""


def stop_group(process: subprocess.Popen[Any]) -> None:
    """End a Ray process started in a session of its own, and everything it started: SIGTERM, then
    SIGKILL if it is still there after 30 s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=30)
            return
        except subprocess.TimeoutExpired:
            continue


@contextlib.contextmanager
def node_without(cluster: Cluster, hidden: Path, log: Path) -> Iterator[str]:
    """A worker node of one CPU that does not see ``hidden``: an empty tmpfs over it, in a mount
    namespace of its own (a NAS not mounted on that node).  Yields its node id; the node is stopped
    after (its whole process group).  Needs root, for unshare and mount."""
    import ray

    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("a node that does not see the photos needs root and unshare(1)")
    known = {node["NodeID"] for node in ray.nodes()}
    start = (f"mount -t tmpfs -o size=1m tagwatch-test {shlex.quote(str(hidden))} && exec "
             f"{shlex.quote(sys.executable)} -c {shlex.quote(NODE_PROCESS)} {cluster.address} "
             f"{NODE['object_store_memory']}")
    with open(log, "wb") as out:
        process = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", start],
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (new := [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["NodeID"] not in known]):
            assert process.poll() is None, log.read_text(errors="replace")[-2000:]
            assert time.monotonic() < deadline, "the node did not join in 120 s"
            time.sleep(0.5)
        yield new[0]
    finally:
        stop_group(process)


def test_a_node_that_cannot_see_the_photos_is_left_out_and_they_are_tagged_on_the_others(
        cluster: Cluster, library: Path, local: Run, tmp_path: Path) -> None:
    """A file this machine reads is never recorded gone (or failed) because a node could not open
    it: that node is left out, its photos start over on the others, the summary names it and the
    exit status is 1.  The other nodes' CPUs are held until the blind node is left out, so that it
    surely gets the first photos."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    photos, config = setup(tmp_path, library)
    held = placement_group([{"CPU": 1}] * len(cluster.worker_nodes), strategy="STRICT_SPREAD")
    ray.get(held.ready(), timeout=60)  # a CPU of each node there now: not of the one started next
    lines: list[str] = []
    try:
        with node_without(cluster, photos, tmp_path / "node.log") as blind:
            driver = subprocess.Popen(
                [sys.executable, "-m", "tagwatch", "scan", "--engine", "ray", "--address", cluster.address,
                 str(photos), "--config", str(config)],
                cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            watchdog = threading.Timer(400, driver.kill)
            watchdog.start()
            assert driver.stderr is not None
            for line in driver.stderr:
                lines.append(line)
                if held is not None and "gets no more photos" in line:  # the others may start stations
                    remove_placement_group(held)
                    held = None
            watchdog.cancel()
            returncode = driver.wait()
    finally:
        if held is not None:
            remove_placement_group(held)
    stderr = "".join(lines)
    assert returncode == 1, stderr[-3000:]
    assert f"scan: {PHOTOS} photos: {PHOTOS} tagged" in stderr, stderr[-3000:]
    assert "vanished" not in stderr and "gone" not in stderr
    left_out = [line for line in lines if line.startswith("  node ") and f"({blind[:8]})" in line]
    assert len(left_out) == 1, stderr[-3000:]
    assert f"LEFT OUT: it does not find {photos}/" in left_out[0], left_out
    assert ", which this machine reads (" in left_out[0] and "mounted there at the same path?" in left_out[0]
    assert ": 0 encoded (0.0/s), 0 keyed, 0 written;" in left_out[0]  # it found none of what it was given
    alike(results(config, photos), local)  # every photo tagged as the local engine does, none deleted


def test_a_stations_warnings_reach_the_driver_once_in_its_format_naming_the_photo(
        cluster: Cluster, tmp_path: Path) -> None:
    """Pillow's complaint about a photo decoded on a station is one record of the driver's log, in
    its format (here JSON: every line parses), naming the photo as the local engine does; not the
    station's raw stderr, without the path, in colour, several times."""
    damaged = CORPUS / "pillow__hopper_bad_exif.jpg"
    if not damaged.exists():
        pytest.skip(f"the corpus is not here: {CORPUS}")
    photos, config = small_setup(tmp_path, {"a.jpg": (320, 240)})
    (photos / damaged.name).write_bytes(damaged.read_bytes())
    run = tagwatch_cli("--log-format", "json", "scan", "--engine", "ray", "--address", cluster.address,
                       str(photos), "--config", str(config))
    assert run.returncode == 0, run.stderr[-3000:]
    assert "\x1b[" not in run.stderr
    records = [json.loads(line) for line in run.stderr.splitlines()]  # no stray line: all JSON
    warned = [(r["level"], r["path"], r["reason"], r["logger"]) for r in records if "reason" in r]
    assert warned == [("warning", str(photos / damaged.name),
                       "Corrupt EXIF data. Expecting to read 12 bytes but only got 2.", "tagwatch.warnings")]
    assert records[-1]["message"] == "scan: 2 photos: 2 tagged"


# A cluster of a head alone, started as the docs say (no CPU for Ray), in a process of its own
HEAD_ONLY = """
import signal, sys, time
from ray.cluster_utils import Cluster
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "node_ip_address": "127.0.0.1",
                  "include_dashboard": False, "object_store_memory": int(sys.argv[1])})
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # its processes are stopped at exit
print(cluster.address, flush=True)
while True:
    time.sleep(1)
"""


def test_a_cluster_with_no_node_for_a_station_says_so(library: Path, tmp_path: Path) -> None:
    """A head started with --num-cpus 0 and no worker node: one line saying that no station could
    start and why, not that every station was lost; both when the tag list's prompts must be encoded
    first (a new database) and when they are stored (a station is needed for a new photo only)."""
    photos, config = setup(tmp_path, library)
    temp = tempfile.mkdtemp(prefix="tw-ray-", dir="/tmp")
    head = subprocess.Popen([sys.executable, "-c", HEAD_ONLY, str(NODE["object_store_memory"])],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True, env={**os.environ, "RAY_TMPDIR": temp})
    expected = ["tagwatch: error: no station could start: none of the Ray cluster's 1 node offers Ray a CPU "
                "or a GPU (a head started with --num-cpus 0 runs none): start a worker node with `ray start "
                "--address HEAD:PORT`"]
    try:
        assert head.stdout is not None
        address = head.stdout.readline().strip()
        assert address, "the head did not start"
        command = ["scan", "--engine", "ray", "--address", address, "--config", str(config)]
        fresh = tagwatch_cli(*command, str(photos))
        assert (fresh.returncode, fresh.stderr.splitlines()) == (2, expected), fresh.stderr[-2000:]
        # the prompts stored by a local scan of one photo: the next photo needs a station to encode it
        first, second = sorted(photos.iterdir())[:2]
        assert tagwatch_cli("scan", "--config", str(config), str(first)).returncode == 0
        stored = tagwatch_cli(*command, str(second))
        assert stored.returncode == 2, stored.stderr[-2000:]
        assert stored.stderr.splitlines()[-1] == expected[0], stored.stderr[-2000:]
    finally:
        stop_group(head)
        shutil.rmtree(temp, ignore_errors=True)


def test_an_address_with_no_ray_head_is_one_line_within_seconds(tmp_path: Path) -> None:
    """A port nothing listens on, and one that accepts a connection but says nothing: each is one
    tagwatch line naming the address and why, exit 2, within 20 s (Ray alone retried for more than
    10 minutes, printing only its own warnings)."""
    photos, config = small_setup(tmp_path, {"a.jpg": (320, 240)})
    with socket.socket() as free:  # a port free a moment ago: nothing listens there
        free.bind(("127.0.0.1", 0))
        closed = free.getsockname()[1]
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # the kernel completes connections; nothing ever answers
        mute = silent.getsockname()[1]
        for port, reason in ((closed, f"nothing listens on port {closed} there (is `ray start --head "
                                      f"--port {closed}` running there?)"),
                             (mute, f"port {mute} accepts a connection but says nothing within 10 s: "
                                    "not a Ray head")):
            started = time.monotonic()
            run = tagwatch_cli("scan", "--engine", "ray", "--address", f"127.0.0.1:{port}", str(photos),
                               "--config", str(config), timeout=120)
            assert time.monotonic() - started < 40, run.stderr[-2000:]  # 20 s, and Python's start
            assert run.returncode == 2, run.stderr[-2000:]
            assert run.stderr.splitlines() == [
                f"tagwatch: error: cannot reach the Ray cluster at 127.0.0.1:{port}: {reason}"]


def test_without_ray_installed_the_engine_is_a_one_line_error(tmp_path: Path, library: Path) -> None:
    photos, config = setup(tmp_path, library)
    code = ("import sys; sys.modules['ray'] = None; from tagwatch.cli import main; "  # as if not installed
            f"sys.exit(main(['scan', '--engine', 'ray', {str(photos)!r}, '--config', {str(config)!r}]))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["tagwatch: error: --engine ray needs Ray, on this machine "
                                                  "and on every node: pip install 'tagwatch[ray]'"]


def test_a_lost_stations_temporary_files_are_found_by_its_pid(tmp_path: Path) -> None:
    """What the driver deletes after a station died mid-write: that process's temporary files only
    (a live writer's, with another PID, may be a write in flight)."""
    for name in ("photo.jpg", ".4242-7.tagwatch-tmp", ".4242-8.tagwatch-tmp.xmp", ".4243-1.tagwatch-tmp",
                 ".photo.jpg.4242-2.tagwatch-tmp", ".4242-9.other"):
        (tmp_path / name).write_bytes(b"x")
    assert sorted(p.name for p in temp_files_of(tmp_path, 4242)) == [
        ".4242-7.tagwatch-tmp", ".4242-8.tagwatch-tmp.xmp", ".photo.jpg.4242-2.tagwatch-tmp"]


def test_ctrl_c_lets_the_stations_finish_their_batches_and_says_how_many_photos_are_done(
        cluster: Cluster, library: Path, local: Run, tmp_path: Path) -> None:
    """Ctrl-C while the stations write: the driver hands out no more work, waits for the batches
    they hold and records them, then says how many photos are done: exactly the photos recorded,
    and no photo carries keywords that are not recorded, no temporary file is left.  The next run
    goes on, and removes what a killed writer left before (an old temporary file of a process that
    is gone), not what may be a node's write in flight (a fresh one)."""
    photos, config = setup(tmp_path, library)
    command = ["scan", "--engine", "ray", "--address", cluster.address, str(photos), "--config", str(config)]
    # SIGINT at its default, as in a terminal: pytest-xdist's workers ignore it, and a child
    # inherits that (the scan then ran to its end and exited 0)
    driver = subprocess.Popen([sys.executable, "-m", "tagwatch", *command], cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    watchdog = threading.Timer(400, driver.kill)
    watchdog.start()
    lines: list[str] = []
    assert driver.stderr is not None
    for line in driver.stderr:
        lines.append(line)
        if " INFO tagged " in line and len([x for x in lines if " INFO tagged " in x]) == 1:
            driver.send_signal(signal.SIGINT)  # as a terminal's Ctrl-C reaches the command
    watchdog.cancel()
    stderr = "".join(lines)
    assert driver.wait() == 130, stderr[-3000:]
    assert "ray: interrupted: no more work is handed out; the stations finish the " in stderr, stderr[-3000:]
    closing = re.fullmatch(r"scan: interrupted with (\d+) photos? done \(the stations finished the "
                           r"batches they held first\); each photo done is recorded: run the same "
                           r"command again to go on\n", lines[-1])
    assert closing, stderr[-3000:]
    first = results(config, photos)
    recorded = {name for name, state in first.states.items() if state == "done"}
    written = {name for name, words in first.keywords.items() if words}
    assert 0 < len(recorded) < PHOTOS  # it was stopped mid-scan
    assert int(closing[1]) == len(recorded), stderr[-3000:]  # the count is the photos done
    assert written <= recorded  # no station was cut off after writing a photo
    assert not [p.name for p in photos.iterdir() if ".tagwatch-tmp" in p.name]

    old, fresh = photos / ".4194305-1.tagwatch-tmp", photos / ".4194305-2.tagwatch-tmp"  # no such PID
    old.write_bytes(b"half a photo")
    long_ago = time.time() - 3600
    os.utime(old, (long_ago, long_ago))
    fresh.write_bytes(b"")  # as far as this machine can tell, another node's write in flight
    again = tagwatch_cli(*command)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"{old}: removed a temporary file left by an interrupted write" in again.stderr
    assert not old.exists() and fresh.exists()
    fresh.unlink()
    totals = next(line for line in again.stderr.splitlines() if line.startswith("ray: "))
    assert f": {PHOTOS - len(first.vectors)} encoded, {len(first.vectors) - len(recorded)} cached, " \
           f"0 without a vector, {len(recorded)} skipped;" in totals, totals
    alike(results(config, photos), local)


def test_the_summary_counts_each_photo_once(cluster: Cluster, tmp_path: Path) -> None:
    """encoded + cached + without a vector + skipped = the photos: a picture under two names (hard
    links, which the write refuses) is encoded once and cached once, not also counted failed; a
    file that is no photo has no vector; a second scan skips what it settled."""
    photos, config = small_setup(tmp_path, {f"{name}.jpg": (320, 240) for name in "abc"})
    os.link(photos / "c.jpg", photos / "c-link.jpg")
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a photo")
    paths = sorted(str(p) for p in photos.iterdir())
    counts, summary = scan_on_ray(load_config(config), iter(paths), len(paths), address=cluster.address,
                                  dry_run=False)
    assert counts.get("failed") == 3, counts  # the two links and the broken file
    assert ": 3 encoded, 1 cached, 1 without a vector, 0 skipped; " in summary.lines()[0], summary.lines()
    assert sum(node.keyed for node in summary.nodes.values()) <= 4  # the broken file has no key
    counts, summary = scan_on_ray(load_config(config), iter(paths), len(paths), address=cluster.address,
                                  dry_run=False)
    # the failed ones are tried again (their vectors stored), the two tagged ones are not read
    assert ": 0 encoded, 2 cached, 1 without a vector, 2 skipped; " in summary.lines()[0], summary.lines()


def test_without_an_address_it_says_which_cluster_it_takes(cluster: Cluster, tmp_path: Path) -> None:
    """No --address, no RAY_ADDRESS: the cluster `ray start` recorded where Ray looks is joined and
    named; with none recorded there, one line says a Ray of its own is started for the scan, and
    none of Ray's own log lines reaches the terminal."""
    photos, config = small_setup(tmp_path, {"a.jpg": (320, 240)})
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    command = [sys.executable, "-m", "tagwatch", "scan", "--dry-run", "--engine", "ray", str(photos),
               "--config", str(config)]
    recorded = Path(env["RAY_TMPDIR"]) / "ray" / "ray_current_cluster"  # the fixture's Cluster wrote it
    assert recorded.read_text().strip() == cluster.address
    joined = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert joined.returncode == 0, joined.stderr[-3000:]
    assert f"ray: joining the Ray cluster at {cluster.address} (recorded by `ray start` in {recorded})" \
        in joined.stderr, joined.stderr[-3000:]
    assert joined.stderr.count("  node 127.0.0.1 ") == 2  # the fixture's two worker nodes
    # the fixture's cluster runs its workers at Ray's default niceness (15): each station says so
    # (one photo: the scan may end before the second station is ready)
    ready = [line for line in joined.stderr.splitlines() if "ray: station on " in line]
    assert ready and all(line.endswith(
        ", niceness 15, lower than this scan's: Ray's default for its workers; `RAY_worker_niceness=0 ray "
        "start ...` gives them the usual priority)") for line in ready), joined.stderr[-3000:]

    empty = Path(tempfile.mkdtemp(prefix="tw-ray-", dir="/tmp"))  # short: socket paths have a length limit
    try:
        # HOME too: the Ray it starts makes itself an auth token there (~/.ray/auth_token), which
        # every later Ray of this user would then use
        alone = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300,
                               env={**env, "RAY_TMPDIR": str(empty), "HOME": str(empty)})
    finally:
        shutil.rmtree(empty, ignore_errors=True)
    assert alone.returncode == 0, alone.stderr[-3000:]
    said = [line for line in alone.stderr.splitlines() if "no running Ray cluster" in line]
    assert len(said) == 1, alone.stderr[-3000:]
    assert ("ray: no running Ray cluster found on this machine (`ray start` records its head in "
            f"{empty}/ray/ray_current_cluster)") in said[0]
    assert said[0].endswith(": starting a Ray of its own for this scan; pass --address HOST:PORT to use a "
                            "cluster")
    assert "Token authentication" not in alone.stderr
    assert not re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\t", alone.stderr, re.M)  # Ray's log format
    assert "scan: 1 photo: 1 tagged (dry run: no file written)" in alone.stderr, alone.stderr[-3000:]
    # a Ray of its own runs its station at the scan's priority, not Ray's low one
    ready = [line for line in alone.stderr.splitlines() if "ray: station on " in line]
    assert len(ready) == 1 and "niceness" not in ready[0], alone.stderr[-3000:]


def test_a_wrong_address_is_one_line_in_plain_words(cluster: Cluster, tmp_path: Path) -> None:
    """An address without a port, and the head's raylet port (a gRPC server, but no Ray head): one
    line each, no Python exception names, none of Ray's own log lines before it; exit status 2."""
    photos, config = small_setup(tmp_path, {"a.jpg": (320, 240)})
    raylet = f"127.0.0.1:{cluster.head_node.node_manager_port}"
    for address, reason in (
            ("127.0.0.1", "give the address as HOST:PORT, as `ray start --head` printed it"),
            ("http://127.0.0.1:6379", "give the address as HOST:PORT, without http://"),
            (raylet, "it answers but is not a Ray head (is the port the one `ray start --head` printed?)")):
        run = tagwatch_cli("scan", "--engine", "ray", "--dry-run", "--address", address, str(photos),
                           "--config", str(config), timeout=120)
        verb = "join" if address == raylet else "reach"
        assert (run.returncode, run.stderr.splitlines()) == (
            2, [f"tagwatch: error: cannot {verb} the Ray cluster at {address}: {reason}"]), run.stderr[-2000:]
