#!/usr/bin/env python3
"""The Ray engine's benchmark: ``tagwatch scan --engine ray`` on local clusters of 1 and 2 worker
nodes, and the driver's peak memory.  Not a test: it asserts no duration.

    .venv/bin/python scripts/bench_ray.py                       # 10,000 photos, 1 and 2 nodes
    .venv/bin/python scripts/bench_ray.py --count 300 --local   # a first look, with the local engine

Every node is a Ray node process group on this machine, bound to 127.0.0.1 (head without CPUs: it
runs only the driver's connection; each worker node ``--cpus`` CPUs, one station each).  On one
machine the nodes share its cores, so two nodes show the engine's overhead and how work spreads,
not a cluster's scaling: that needs machines (docs/ray.md).  Photos are synthetic (the test model's
coloured shapes, 320 x 240: the model is the test model unless ``--model vit``, the default
ViT-B-32-256 with random weights, whose encoding costs what a real model's does), made once into the
cache folder and copied afresh for every run (the scan writes keywords into them).  Each run is the
real command, ``tagwatch scan --engine ray --address ...``, with a fresh database; reported: the
scan's own rate (from its summary, startup excluded), the wall time (with driver and station start),
the driver process's peak RSS (``wait4``), and each node's share.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # nodes on loopback (see tests/test_ray.py)

import synthetic
from bench import DEFAULT_CACHE, machine_facts, say
from procstats import status_kb

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
TEST_MODEL = (DATA / "shapes-clip.json", DATA / "shapes-clip.safetensors")
TAGS = [*synthetic.COLOURS, *synthetic.SHAPES]
MEMORY = ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem")  # the peak, and RSS with its three parts
SUMMARY = re.compile(r"ray: (\d+) photos in ([\d.]+) s \(([\d.]+)/s\): (\d+) encoded")


def _draw(args: tuple[Path, int, int]) -> None:
    folder, start, stop = args
    for item in synthetic.items(11, per_pair=(stop + 35) // 36)[start:stop]:
        synthetic.make_photo(item.colour, item.shape, item.seed).save(folder / f"{item.name}.jpg", quality=90)


def ensure_photos(count: int, cache: Path) -> Path:
    """``count`` synthetic photos in the cache, drawn once (in parallel) and reused."""
    folder = cache / f"ray-shapes-{count}"
    if folder.is_dir() and sum(1 for _ in folder.iterdir()) == count:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    say(f"drawing {count} photos into {folder} (once)")
    step = 250
    with ProcessPoolExecutor() as pool:
        list(pool.map(_draw, [(folder, s, min(s + step, count)) for s in range(0, count, step)]))
    return folder


def write_config(folder: Path, model: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "tags.txt").write_text("\n".join(TAGS) + "\n", encoding="utf-8")
    # random weights score every tag near 0: threshold -1 gives each photo 3 tags, so every photo is
    # written with either model
    name, pretrained, threshold = (("ViT-B-32-256", "none", -1.0) if model == "vit"
                                   else (str(TEST_MODEL[0]), str(TEST_MODEL[1]), 0.3))
    lines = ['tags = "tags.txt"', 'database = "state/tagwatch.db"', "[model]", f"name = {json.dumps(name)}",
             f"pretrained = {json.dumps(pretrained)}", "[tagging]", f"threshold = {threshold}", "top_k = 3"]
    path = folder / "config.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run(command: list[str]) -> tuple[float, float, dict[str, float], str]:
    """Run ``command``; its wall seconds, its CPU seconds (with its children: the driver's exiftool),
    the peaks of its own memory in MB (read from /proc every 0.2 s: VmHWM, and the anonymous and
    shared-memory parts of its RSS), and its stderr.  Not ``wait4``'s ru_maxrss: that counts the
    child before its exec, a copy of this process (with torch imported by the machine facts)."""
    started = time.perf_counter()
    peaks: dict[str, int] = {}
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=err)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            for name, value in status_kb(proc.pid, MEMORY).items():
                peaks[name] = max(peaks.get(name, 0), value)
            time.sleep(0.2)
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        text = err.read().decode("utf-8", "replace")
    if proc.returncode not in (0, 1):
        raise SystemExit(f"bench: {' '.join(command)} failed ({proc.returncode}):\n{text[-3000:]}")
    cpu = usage.ru_utime + usage.ru_stime
    return time.perf_counter() - started, cpu, {k: v / 1024 for k, v in peaks.items()}, text


def start_cluster(nodes: int, cpus: int, temp: str) -> Any:
    """A head without CPUs and ``nodes`` worker nodes of ``cpus`` CPUs, all on 127.0.0.1."""
    from ray.cluster_utils import Cluster

    os.environ["RAY_TMPDIR"] = temp  # Ray's files (and the address of the last cluster) there, not /tmp/ray
    node = {"node_ip_address": "127.0.0.1", "object_store_memory": 200 << 20}
    head = {**node, "num_cpus": 0, "include_dashboard": False}
    cluster = Cluster(initialize_head=True, head_node_args=head)
    for _ in range(nodes):
        cluster.add_node(**node, num_cpus=cpus)
    return cluster


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=10_000, help="photos (default 10,000)")
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 2], help="worker nodes per run (1 2)")
    parser.add_argument("--cpus", type=int, default=1, help="CPUs per worker node (1)")
    parser.add_argument("--model", choices=("test", "vit"), default="test",
                        help="test: the tiny test model (the engine's own costs); vit: ViT-B-32-256, random "
                             "weights (a real model's encoding cost)")
    parser.add_argument("--local", action="store_true", help="also run the local engine on the same photos")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                        help=f"photo cache (default {DEFAULT_CACHE})")
    args = parser.parse_args(argv)

    facts = machine_facts()
    say(f"{facts['cpu']}, {facts['usable_cores']} usable cores, load average {os.getloadavg()[0]:.1f}")
    source = ensure_photos(args.count, args.cache)
    rows: list[str] = []
    with tempfile.TemporaryDirectory(prefix="tw-bench-ray-") as work:
        runs = [("local", 0)] if args.local else []
        runs += [("ray", n) for n in args.nodes]
        for engine, nodes in runs:
            root = Path(work) / f"{engine}-{nodes}"
            photos = Path(shutil.copytree(source, root / "photos"))
            config = write_config(root / "conf", args.model)
            command = [sys.executable, "-m", "tagwatch", "scan", str(photos), "--config", str(config)]
            cluster = None
            if engine == "ray":
                temp = tempfile.mkdtemp(prefix="tw-ray-", dir="/tmp")
                say(f"starting a cluster of {nodes} worker node(s) of {args.cpus} CPU(s)")
                cluster = start_cluster(nodes, args.cpus, temp)
                command += ["--engine", "ray", "--address", cluster.address]
            say(f"{engine}, {nodes} node(s): scanning {args.count} photos")
            try:
                wall, cpu, memory, err = run(command)
            finally:
                if cluster is not None:
                    cluster.shutdown()
                    shutil.rmtree(temp, ignore_errors=True)
            found = SUMMARY.search(err)
            if found:
                scan_s, rate = float(found.group(2)), float(found.group(3))
                detail = [line.strip() for line in err.splitlines() if line.startswith("  node ")]
            else:  # the local engine: its whole run
                scan_s, rate, detail = wall, args.count / wall, []
            rss, anon = memory.get("VmHWM", 0.0), memory.get("RssAnon", 0.0)
            rows.append(f"| {engine} | {nodes or '-'} | {args.count} | {scan_s:.1f} | {rate:.1f} | "
                        f"{wall:.1f} | {1000 * cpu / args.count:.1f} | {rss:.0f} | {anon:.0f} |")
            closing = [line for line in err.splitlines() if line.startswith("scan: ")]
            say(f"{closing[-1] if closing else 'no summary'}; wall {wall:.1f} s; driver memory peaks (MB): "
                + ", ".join(f"{k} {v:.0f}" for k, v in sorted(memory.items())))
            for line in detail:
                say(f"  {line}")
    print(f"\n{facts['cpu']} ({facts['usable_cores']} cores), model {args.model}, {args.cpus} CPU(s) per "
          f"node, load average at the end {os.getloadavg()[0]:.1f}\n")
    print("| engine | worker nodes | photos | scan s | photos/s | wall s | driver CPU ms/photo | "
          "driver peak RSS MB | of it private MB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
