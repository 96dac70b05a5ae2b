#!/usr/bin/env python3
"""The image tower in other runtimes against torch, on this CPU: is any worth adopting?

    .venv/bin/pip install openvino                      # not a tagwatch dependency: only this script's
    .venv/bin/python scripts/bench_runtimes.py          # ViT-B-32-256, random weights, batch 32, 5 rounds
    .venv/bin/python scripts/bench_runtimes.py --quick  # batch 8, 2 rounds: a smoke test

Every path runs the same image tower (ViT-B-32-256 with tagwatch's seeded random weights, exported to
ONNX as rclip_beside.py exports it for rclip) on the same batch, in turns: one warm-up round, then
``--rounds`` rounds in which each path runs once, so a neighbour's load hits every path alike.  Paths:

- torch fp32, torch bf16 (where the CPU multiplies bf16 in hardware), torch dynamic int8
  (``tagwatch.quantize.int8_tower``, what ``model.precision = "int8"`` runs);
- ONNX Runtime fp32, and its dynamic int8 (``onnxruntime.quantization.quantize_dynamic``, weights int8,
  activations quantised per call: the analogue of torch's), run as one session on ``--threads`` and as
  tagwatch runs it (:mod:`tagwatch.onnxtower`: one part of the batch per thread, each on a one-thread
  session);
- ONNX Runtime on a statically quantised model (QDQ, activations' ranges calibrated on the batch);
- OpenVINO fp32 (``INFERENCE_PRECISION_HINT = f32``), OpenVINO with its default hint (bf16 on CPUs that
  have it), and OpenVINO on the QDQ model (its int8 path for an ONNX model without NNCF).

Reported per path: images/s (median and best round, wall time, ``--threads`` threads, default all
cores), images per CPU-second (the process's CPU time over the path's best round: with ``--threads 1``
a figure that other processes' load hardly moves, as no thread spins waiting for a descheduled one), and
the cosine of its vectors to torch fp32's (lowest and mean over the batch).  The batch is real photos
when bench.py's cached set exists (``--photos``), synthetic photo-like images otherwise.  JSON with
``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rclip_beside import MODEL_SUBDIR, export_model
from tagwatch.config import ModelConfig
from tagwatch.imaging import prepare
from tagwatch.model import load_model
from tagwatch.onnxtower import OnnxTower, one_thread_session
from tagwatch.precision import FAST_BF16_FLAGS, cpu_facts, probe_images

CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
DEFAULT_PHOTOS = CACHE / "tagwatch-bench" / "images-12mp"
REPORTED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16")


def say(message: str) -> None:
    print(f"bench_runtimes: {message}", file=sys.stderr, flush=True)


def the_batch(photos: Path, size: int, spec: Any) -> tuple[np.ndarray, str]:
    found = sorted(photos.glob("photo-*.jpg"))[:size] if photos.is_dir() else []
    if len(found) == size:
        return np.stack([prepare(p.read_bytes(), spec) for p in found]), f"{size} photos from {photos}"
    probe = probe_images(spec, size)
    return probe, f"{size} synthetic photo-like images (no photo set in {photos})"


def torch_paths(clip: Any, flags: set[str]) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    import copy

    import torch

    from tagwatch.quantize import int8_tower

    fp32 = clip._model.visual
    paths: dict[str, Callable[[np.ndarray], np.ndarray]] = {}

    def runner(tower: Any, dtype: Any) -> Callable[[np.ndarray], np.ndarray]:
        def run(batch: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return tower(torch.from_numpy(batch).to(dtype)).float().numpy()
        return run

    paths["torch fp32"] = runner(fp32, torch.float32)
    if FAST_BF16_FLAGS & flags:
        paths["torch bf16"] = runner(copy.deepcopy(fp32).to(torch.bfloat16), torch.bfloat16)
    paths["torch int8 (dynamic)"] = runner(int8_tower(copy.deepcopy(fp32)), torch.float32)
    return paths


def onnx_paths(visual: Path, work: Path, batch: np.ndarray,
               threads: int) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    paths: dict[str, Callable[[np.ndarray], np.ndarray]] = {}
    try:
        import onnxruntime as ort
        from onnxruntime.quantization import (
            CalibrationDataReader,
            QuantFormat,
            QuantType,
            quantize_dynamic,
            quantize_static,
        )
    except ImportError as exc:
        say(f"ONNX Runtime not measured ({exc}): .venv/bin/pip install onnxruntime")
        return paths
    dynamic = work / "visual-int8-dynamic.onnx"
    static = work / "visual-int8-qdq.onnx"
    say("quantising the ONNX model: dynamic int8, then static QDQ calibrated on the batch")
    quantize_dynamic(str(visual), str(dynamic), weight_type=QuantType.QInt8)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.rows = iter([{"input": batch[i:i + 1]} for i in range(len(batch))])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.rows, None)

    quantize_static(str(visual), str(static), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1

    def session(model: Path) -> Callable[[np.ndarray], np.ndarray]:
        sess = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        return lambda b: sess.run(None, {"input": b})[0]

    paths[f"ONNX Runtime {ort.__version__} fp32"] = session(visual)
    paths["ONNX Runtime int8 (dynamic)"] = session(dynamic)
    split = OnnxTower(one_thread_session(dynamic), workers=threads)  # what tagwatch runs (onnxtower.py)
    paths["  the same, batch split per thread"] = split.features
    paths["ONNX Runtime int8 (static QDQ)"] = session(static)
    paths.update(openvino_paths(visual, static, threads))
    return paths


def openvino_paths(visual: Path, static: Path, threads: int) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    try:
        import openvino as ov
    except ImportError as exc:
        say(f"OpenVINO not measured ({exc}): .venv/bin/pip install openvino")
        return {}
    core = ov.Core()
    paths: dict[str, Callable[[np.ndarray], np.ndarray]] = {}

    def compiled(model: Path, config: dict[str, str]) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
        settings = {**config, "INFERENCE_NUM_THREADS": threads}
        net = core.compile_model(core.read_model(str(model)), "CPU", settings)
        request = net.create_infer_request()

        def run(batch: np.ndarray) -> np.ndarray:
            request.infer({0: batch})
            return np.array(request.get_output_tensor(0).data)
        hint = net.get_property("INFERENCE_PRECISION_HINT")
        return run, hint.to_string() if hasattr(hint, "to_string") else str(hint)

    version = ov.__version__.split("-")[0]
    paths[f"OpenVINO {version} fp32"], _ = compiled(visual, {"INFERENCE_PRECISION_HINT": "f32"})
    run, hint = compiled(visual, {})
    paths[f"OpenVINO default hint ({hint})"] = run
    paths["OpenVINO int8 (static QDQ)"], _ = compiled(static, {})
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, help="images per batch (default 32, --quick 8)")
    parser.add_argument("--rounds", type=int, help="timed rounds (default 5, --quick 2)")
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS, help="bench.py's photo set")
    parser.add_argument("--threads", type=int, help="threads per runtime (default: all usable cores)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    size = args.batch or (8 if args.quick else 32)
    rounds = args.rounds or (2 if args.quick else 5)
    threads = args.threads or len(os.sched_getaffinity(0))
    cpu, flags = cpu_facts()
    import torch

    torch.set_num_threads(threads)
    say("loading ViT-B-32-256 (random weights, fp32)")
    clip = load_model(ModelConfig(pretrained="none", precision="fp32"), ready=False)
    batch, source = the_batch(args.photos, size, clip.preprocess)
    paths = torch_paths(clip, flags)
    with tempfile.TemporaryDirectory() as tmp:
        say("exporting the image tower to ONNX")
        visual = export_model(clip._model, Path(tmp)) / MODEL_SUBDIR / "visual.onnx"
        paths.update(onnx_paths(visual, Path(tmp), batch, threads))
        seconds: dict[str, list[float]] = {name: [] for name in paths}
        cpu_seconds: dict[str, list[float]] = {name: [] for name in paths}
        outputs: dict[str, np.ndarray] = {}
        names = list(paths)
        for number in range(1 + rounds):
            say(f"round {number}/{rounds}" + (" (warm-up, not counted)" if number == 0 else ""))
            for name in names:
                started, used = time.perf_counter(), time.process_time()
                outputs[name] = paths[name](batch)
                if number:
                    seconds[name].append(time.perf_counter() - started)
                    cpu_seconds[name].append(time.process_time() - used)
            names = names[1:] + names[:1]
    reference = outputs["torch fp32"]
    reference = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    rows = []
    for name in paths:
        vectors = outputs[name] / np.linalg.norm(outputs[name], axis=1, keepdims=True)
        cosine = (vectors * reference).sum(1)
        rows.append({"path": name, "img_s": size / statistics.median(seconds[name]),
                     "img_s_best": size / min(seconds[name]), "img_per_cpu_s": size / min(cpu_seconds[name]),
                     "cosine_min": float(cosine.min()),
                     "cosine_mean": float(cosine.mean())})
    int8 = next(r for r in rows if r["path"] == "torch int8 (dynamic)")["img_s"]
    load = os.getloadavg()
    shown = [f for f in REPORTED_FLAGS if f in flags]
    int8_cpu = next(r for r in rows if r["path"] == "torch int8 (dynamic)")["img_per_cpu_s"]
    print(f"\n{cpu}, {len(os.sched_getaffinity(0))} cores ({' '.join(shown)}), {threads} threads per "
          f"runtime; batch of {source}; {rounds} rounds in turn; load average {load[0]:.1f} at the end\n")
    print(f"{'path':<34} {'img/s':>6} {'best':>6} {'÷ int8':>7} {'img/cpu-s':>9} {'÷ int8':>7} "
          f"{'cosine min':>10} {'mean':>8}")
    for row in rows:
        print(f"{row['path']:<34} {row['img_s']:>6.1f} {row['img_s_best']:>6.1f} "
              f"{row['img_s'] / int8:>6.2f}x "
              f"{row['img_per_cpu_s']:>9.1f} {row['img_per_cpu_s'] / int8_cpu:>6.2f}x "
              f"{row['cosine_min']:>10.6f} {row['cosine_mean']:>8.6f}")
    if args.json:
        document = {"cpu": cpu, "flags": shown, "threads": threads, "batch": source, "rounds": rounds,
                    "load_average": load,
                    "rows": rows}
        args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
