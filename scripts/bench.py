#!/usr/bin/env python3
"""tagwatch's speed benchmark: how fast a library is indexed, what each stage of indexing costs and the floor
that implies on this machine, how fast a photo is tagged, a tag-list edit re-scored, and how much memory
the daemon holds.  Not a test: it asserts no duration.

    .venv/bin/python scripts/bench.py --rclip /work/rclip-venv/bin/rclip   # the record: 60 and 200 JPEGs
    .venv/bin/python scripts/bench.py --quick        # 10 and 20 JPEGs, 1 repeat, N = 10,000: a smoke test
    .venv/bin/python scripts/bench.py --images DIR   # your own JPEGs (never written to: copies are)

Every figure is reported with the machine it came from (CPU model and flags, cores, torch) and what
``model.precision = "auto"`` chose there.  Each measure is the median of ``--repeat`` runs, with min and max:

(a) cold indexing, images/s, for each size of ``--counts`` (default 60 and 200 JPEGs of 12 MP): ``tagwatch
    scan`` and ``tagwatch run`` configured for latency (``batch.size = 8``) as subprocesses on a fresh
    database, process start included, until the last photo's keywords are in the file (the daemon's
    photos are renamed into its watched folder at once once it runs), and rclip beside them on the same
    photos (``--rclip``); each as a share of the floor (s), also of the floor measured again just
    before its round of runs (a shared VM's speed drifts), and as a ratio to rclip;
(s) the stages of indexing one photo, in core-seconds (CPU time of one thread, which other processes'
    load hardly moves): content key + draft decode, encode at auto's precision (one thread), the keyword
    write (our side and exiftool's CPU), the database writes; and the floor they imply with perfect
    overlap: min(cores / their sum, 1 / the slowest single-threaded stage: the one exiftool, the store);
(b) auto's choice (the precision, the rates and cosines it measured, what deciding cost), then the image
    encoder alone at batch 32 with all threads (in the bench's process, and through the daemon's encoder
    child process) beside the machine's matmul throughput, the model's FLOPs per image and the share of
    that roofline it reaches; every precision against fp32 on the same photos: speed and cosine to fp32
    (int8 always, bf16 where the CPU multiplies it); JPEG draft decoding's cosine to a full decode;
(c) text vectors for the default tag list (ClipModel.encode_texts), seconds;
(d) re-scoring N synthetic cached vectors (tagger.predict), and finding the files whose tags changed;
(e) one dropped photo → keywords readable, p50/p95 over --drops drops (not repeated), model warm
    (a running daemon after one warm-up photo; target p95 < 1 s), copied in and moved in (renamed from a
    folder beside), and model cold (a fresh daemon per drop, dropped as it says it is running; timed
    from the drop and from the daemon's process start);
(f) the indexing daemon's peak RSS and its RSS once the idle model is unloaded, against the bounds the
    docs state (docs/speed.md, docs/tests.md).  The model runs in a child process of the daemon (and of
    scan) that ends with the unload: peaks are the sum of the daemon's, the encoder child's and
    exiftool's VmHWM (an upper bound of their peak together), with the share of each; the idle RSS is
    the daemon's own, and with exiftool.
(g) captions (``[captions]``, off by default): a CoCa (coca_ViT-B-32, random weights) encoding images
    alone beside encoding and captioning them in one pass (greedy decoding, CAPTION_TOKENS tokens:
    random weights never say "end", so every caption runs to that length, a typical COCO caption's
    length with its end token), images/s beside captions/s, in the bench's process and through the
    daemon's encoder child;

rclip (``--rclip EXE``): rclip 3.3 in its own virtual environment, and the onnx package beside bench.py's
torch to export the same random weights to the ONNX files rclip loads (``scripts/rclip_beside.py``; nothing
is downloaded at run time):

    python3 -m venv /work/rclip-venv && /work/rclip-venv/bin/pip install 'rclip==3.3.*'
    .venv/bin/pip install onnx

The photos are made once from Debian's mate-backgrounds photographs (``apt-get install mate-backgrounds``)
and cached (--cache).  A photo counts as done when the daemon's database records it so, which it does after
the keywords are written; exiftool then checks every photo (outside the timing).

The model is the default ViT-B-32-256 with random weights (``pretrained = "none"``): speed does not
depend on weight values, and nothing is downloaded.  Its precision is ``--precision`` (default auto: the
bench's first load measures the choice, reported in (b), and every run's data folder starts with that
choice remembered, as after a user's first start, so no indexing run pays the measurement).  Threshold -1
with top_k 5 makes every photo get keywords, so every photo is written.  The indexing runs start from a
database that holds only the tag list's text vectors, as after a first start: text encoding is measured on
its own in (c).
"""

from __future__ import annotations

import argparse
import compileall
import dataclasses
import gc
import json
import logging
import os
import platform
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from procstats import descendants, process_cpu_s, status_mb
from rclip_beside import RclipError, export_model, index_with_rclip, rclip_version
from tagwatch import listcache, towercache
from tagwatch.config import PRECISION_CACHE_NAME, PRECISIONS, ModelConfig, TaggingConfig, builtin_tag_list
from tagwatch.cores import usable as usable_cores
from tagwatch.encoder import MODEL_SPECS_NAME, remember_spec
from tagwatch.exiftool import ExifTool
from tagwatch.formats import JPEG_SUFFIXES, content_key
from tagwatch.imaging import prepare, to_array
from tagwatch.metadata import KeywordWriter
from tagwatch.model import ClipModel, load_model, model_identity
from tagwatch.precision import cpu_facts
from tagwatch.store import DONE, FAILED, PENDING, VECTOR_DTYPE, Store
from tagwatch.tagger import TagMatrix, normalize, predict
from tagwatch.vocabulary import Vocabulary

REPO = Path(__file__).resolve().parents[1]
# Debian's mate-backgrounds: its nature/ folder holds real photographs (abstract/ and desktop/ do not)
SOURCES = Path("/usr/share/backgrounds/mate/nature")
RECIPE = ("v1: 4:3 crop 60-100%, bicubic to 4000x3000, flip 50%, colour x0.92-1.08, noise sigma 2.5, q92, "
          "1 in 5 orientation 6")
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tagwatch-bench"
PHOTO_SIZE = (4000, 3000)  # 12 MP, a common camera format
QUALITY = 92
THRESHOLD, TOP_K = -1.0, 5  # every photo gets 5 keywords, so every photo is written
ENCODER_BATCH = 32
CAPTION_MODEL = "coca_ViT-B-32"  # open_clip's CoCa built on ViT-B-32: what docs/captions.md recommends
CAPTION_BATCH = 8
CAPTION_TOKENS = 12
RETAG_CHUNK = 4096  # as Pipeline.retag
EDITED_TAGS = 10  # (d): the tag-list edit re-scored is "10 tags added"
# The indexing daemon's idle_unload, so (f) can read the RSS after the unload.  Not 5 s: LazyModel counts
# idle time from the start of the last batch, and a batch of 32 takes about 5 s on 2 cores, so a 5 s
# setting can unload the model between two batches of one run (the table says so if it happens).
IDLE_UNLOAD = "10s"
FAST_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
REPORTED_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
LATENCY_BATCH = 8  # (a): the daemon configured for latency (batch.size = 8), as users who drop photos do
STAGE_PHOTOS = 16  # (s): photos each stage is timed on
# (f): the documented bounds (docs/speed.md, docs/tests.md).  Idle: the daemon after the model unloads
# maps no torch and stays under 250 MB (tests/test_encoder.py holds it to that).  Peak: the documented
# figures while indexing (daemon + encoder + exiftool, sum of VmHWM) run from 1,614 MB (20 photos, fp32)
# to 1,797 MB (the 10,000-photo burst, int8), measured on the AVX2 EPYC; the bound is the highest of them.
IDLE_RSS_BOUND_MB = 250
PEAK_RSS_BOUND_MB = 1_797


class BenchError(RuntimeError):
    """One measurement could not be taken; the message says why (with a log tail)."""


# -- results -------------------------------------------------------------------------------------

@dataclass
class Result:
    """One table row: samples, and the value reported (the median unless given)."""

    key: str
    label: str
    unit: str
    samples: list[float]
    value: float | None = None
    note: str = ""

    def summary(self) -> dict[str, Any]:
        value = statistics.median(self.samples) if self.value is None else self.value
        return {"label": self.label, "unit": self.unit, "value": value, "min": min(self.samples),
                "max": max(self.samples), "n": len(self.samples), "samples": self.samples,
                "note": self.note}


@dataclass
class Report:
    """Everything measured, in the order it is printed."""

    results: list[Result] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def add(self, key: str, label: str, unit: str, samples: list[float], **kwargs: Any) -> Result:
        result = Result(key, label, unit, [float(s) for s in samples], **kwargs)
        self.results.append(result)
        return result


def percentile(samples: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), for latency p50/p95."""
    return float(np.percentile(np.asarray(samples), q))


# -- machine -------------------------------------------------------------------------------------

def machine_facts() -> dict[str, Any]:
    """What the numbers depend on, so a table is never read without its machine."""
    import open_clip
    import PIL
    import torch

    cpu, flags = cpu_facts()  # the name with the family and model: one name may hide CPUs generations apart
    memory = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    exiftool = subprocess.run(["exiftool", "-ver"], capture_output=True, text=True).stdout.strip()
    return {
        "cpu": cpu, "cores": os.cpu_count(), "usable_cores": usable_cores(),
        "memory_gib": memory, "flags": {f: f in flags for f in REPORTED_FLAGS},
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(), "open_clip": open_clip.__version__,
        "numpy": np.__version__, "pillow": PIL.__version__, "exiftool": exiftool,
        "python": platform.python_version(), "kernel": platform.release(),
    }


# -- the photo set -------------------------------------------------------------------------------

def source_photos() -> list[Path]:
    """The real photographs the set is made from."""
    sources = sorted(p for p in SOURCES.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
    if not sources:
        raise BenchError(f"no JPEG in {SOURCES}: install Debian's mate-backgrounds, or pass --images")
    return sources


def make_photo(source: Path, target: Path, seed: int) -> None:
    """One 12 MP camera-like JPEG: a random 4:3 crop of a real photograph, upscaled, colour-shifted and
    with mild sensor-like noise, so every file is a different picture with realistic entropy.  Every
    fifth one is stored turned, with EXIF orientation 6, as cameras store portrait shots."""
    rng = np.random.default_rng(seed)
    with Image.open(source) as opened:
        image = ImageOps.exif_transpose(opened).convert("RGB")
    width, height = image.size
    crop_w = min(width, height * 4 / 3) * rng.uniform(0.6, 1.0)
    crop_h = crop_w * 3 / 4
    left, top = rng.uniform(0, width - crop_w), rng.uniform(0, height - crop_h)
    image = image.resize(PHOTO_SIZE, Image.Resampling.BICUBIC, box=(left, top, left + crop_w, top + crop_h))
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    pixels = np.asarray(image, np.float32) * rng.uniform(0.92, 1.08, 3).astype(np.float32)
    pixels += rng.standard_normal(pixels.shape, np.float32) * np.float32(2.5)
    image = Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8))
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "tagwatch-bench", "12 MP"  # Make, Model
    exif[0x0132] = time.strftime("%Y:%m:%d %H:%M:%S", time.gmtime(1_700_000_000 + seed * 3600))
    if seed % 5 == 4:
        image = image.transpose(Image.Transpose.ROTATE_90)  # stored turned; orientation 6 turns it back
        exif[0x0112] = 6
    partial = target.with_name(f".{target.name}.part")
    image.save(partial, "JPEG", quality=QUALITY, exif=exif)
    os.replace(partial, target)  # an interrupted generation leaves no half file under the real name


def ensure_photos(folder: Path, count: int) -> list[Path]:
    """The cached set, making only the photos that are missing (in parallel: it takes a while)."""
    folder.mkdir(parents=True, exist_ok=True)
    recipe = folder / "recipe.txt"
    if not recipe.exists() or recipe.read_text(encoding="utf-8").strip() != RECIPE:
        for old in folder.glob("photo-*.jpg"):  # made another way: not comparable with new ones
            old.unlink()
        recipe.write_text(RECIPE + "\n", encoding="utf-8")
    targets = [folder / f"photo-{i:04d}.jpg" for i in range(count)]
    missing = [(i, t) for i, t in enumerate(targets) if not t.exists()]
    if missing:
        sources = source_photos()
        say(f"making {len(missing)} photos of {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} in {folder} "
            f"(from {len(sources)} photographs; cached for the next run)")
        with ProcessPoolExecutor(os.cpu_count() or 1) as pool:
            list(pool.map(make_photo, [sources[i % len(sources)] for i, _ in missing],
                          [t for _, t in missing], [i for i, _ in missing]))
    return targets


def given_photos(folder: Path, count: int | None) -> list[Path]:
    """JPEGs of a user's folder, sorted, at most ``count``."""
    if not folder.is_dir():
        raise BenchError(f"{folder}: not a folder")
    photos = sorted(p for p in folder.iterdir()
                    if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in JPEG_SUFFIXES)
    if not photos:
        raise BenchError(f"{folder}: no JPEG files")
    return photos[:count] if count else photos


def copy_photos(photos: list[Path], folder: Path) -> list[Path]:
    """Fresh copies (each run writes keywords into its photos)."""
    folder.mkdir(parents=True, exist_ok=True)
    copies = []
    for photo in photos:
        copy = folder / photo.name
        shutil.copyfile(photo, copy)
        copies.append(copy)
    return copies


def keyword_counts(folder: Path) -> dict[str, int]:
    """How many IPTC keywords exiftool reads in each photo: the proof that the work was done."""
    out = subprocess.run(["exiftool", "-j", "-q", "-charset", "iptc=UTF8", "-IPTC:Keywords", str(folder)],
                         capture_output=True, text=True).stdout
    counts = {}
    for record in json.loads(out or "[]"):
        value = record.get("Keywords", [])
        counts[Path(record["SourceFile"]).name] = len(value) if isinstance(value, list) else 1
    return counts


def check_keywords(folder: Path, expected: int) -> None:
    found = keyword_counts(folder)
    with_keywords = sum(1 for n in found.values() if n > 0)
    if with_keywords != expected:
        raise BenchError(f"{folder}: exiftool finds keywords in {with_keywords} of {expected} photos")


# -- the in-process parts: (b), (c), (d) ---------------------------------------------------------

def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def timed(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


# The model every part runs: the default architecture with random weights, in --precision.
MODEL = ModelConfig(pretrained="none")


def model_config(precision: str | None = None) -> ModelConfig:
    return dataclasses.replace(MODEL, precision=precision or MODEL.precision)


def remembered_choice() -> dict[str, Any] | None:
    """auto's choice as the bench's first load measured and remembered it (None unless auto)."""
    cache = MODEL.precision_cache
    if MODEL.precision != "auto" or cache is None or not cache.exists():
        return None
    choices = json.loads(cache.read_text(encoding="utf-8")).get("choices", {})
    return next(iter(choices.values()), None)


def bench_choice(report: Report, clip: ClipModel) -> None:
    """(b) What auto chose on this machine, from what figures, and what deciding cost (once per model,
    CPU and torch version; the indexing runs start with it remembered)."""
    entry = remembered_choice()
    if entry is None:
        report.extra["precision_choice"] = f"not auto: --precision {MODEL.precision}"
        return
    rates, cosines = entry["img_s"], entry["cosine"]
    figures = ", ".join(f"{p} {rates[p]:.1f}" + (f" (cos {cosines[p]:.5f})" if p in cosines else "")
                        for p in rates)
    report.add("auto_choice_s", f"(b) auto chose {clip.precision}: seconds it took to measure (once)", "s",
               [entry["seconds"]], note=f"img per core-s: {figures}")
    report.extra["precision_choice"] = entry


def flops_per_image(clip: ClipModel) -> float:
    """FLOPs of one image through the image tower, counted by torch.

    Autograd stays on and attention uses the math kernel, because the counter misses two fused paths:
    nn.MultiheadAttention's inference fast path and the CPU's fused attention kernel (it would report
    7.7 instead of 11.5 GFLOP for ViT-B-32-256).
    """
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    size = clip.preprocess.size
    dtype = next(clip._model.parameters()).dtype
    with torch.enable_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        clip._model.encode_image(torch.zeros(1, 3, size, size, dtype=dtype))
    return float(counter.get_total_flops())


def matmul_gflops(dtype_name: str, trials: int, size: int = 2048) -> list[float]:
    """GFLOP/s of a large square matmul with torch's threads: what the CPU can do at best.

    ``int8`` is torch's dynamically quantised linear layer (activations quantised on each call, as
    the int8 encoder runs them), counted in integer operations.
    """
    import torch

    if dtype_name == "int8":
        from tagwatch.quantize import int8_tower  # the encoder's own quantiser

        layer = int8_tower(torch.nn.Sequential(torch.nn.Linear(size, size, bias=False)))
        a = torch.randn(size, size)
        multiply: Callable[[], object] = lambda: layer(a)  # noqa: E731
    else:
        dtype = getattr(torch, dtype_name)
        a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
        multiply = lambda: a @ b  # noqa: E731
    multiply()  # warm-up: thread pool and packing buffers
    flop = 2 * size**3
    samples = []
    with torch.inference_mode():
        for _ in range(trials):
            seconds = timed(lambda: [multiply() for _ in range(3)])
            samples.append(3 * flop / seconds / 1e9)
    return samples


def encoder_batch(photos: list[Path], clip: ClipModel, upright_full: bool = False) -> np.ndarray:
    """A batch of real photos, decoded and preprocessed exactly as the pipeline does (JPEG draft mode),
    or with ``upright_full`` by a plain full-size decode, to measure what draft mode changes."""
    chosen = [photos[i % len(photos)] for i in range(ENCODER_BATCH)]
    if not upright_full:
        return np.stack([prepare(p.read_bytes(), clip.preprocess) for p in chosen])
    arrays = []
    for photo in chosen:
        with Image.open(photo) as image:
            arrays.append(to_array(ImageOps.exif_transpose(image).convert("RGB"), clip.preprocess))
    return np.stack(arrays)


def encoder_rates(clip: ClipModel, batch: np.ndarray, repeat: int) -> tuple[list[float], np.ndarray]:
    vectors = clip.encode_images(batch)  # warm-up
    return [ENCODER_BATCH / timed(lambda: clip.encode_images(batch)) for _ in range(repeat)], vectors


def cosines(vectors: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per-photo cosine between two sets of (normalised) vectors of the same photos."""
    return np.sum(normalize(vectors.astype(np.float32)) * normalize(reference.astype(np.float32)), axis=1)


def fast_precisions() -> list[str]:
    """The precisions worth comparing here: int8 always (an option everywhere), bf16 where it is fast."""
    return ["int8"] + (["bf16"] if cpu_facts()[1] & set(FAST_BF16_FLAGS) else [])


def bench_encoder(report: Report, clip: ClipModel, photos: list[Path], repeat: int, tags: TagMatrix) -> None:
    """(b) The image encoder alone, beside the roofline of the precision it runs in, and every fast
    path's cost in fidelity: cosine of its vectors to the fp32 vectors of the same photos."""
    batch = encoder_batch(photos, clip)
    rates, vectors = encoder_rates(clip, batch, repeat)
    fp32 = clip if clip.precision == "fp32" else load_model(model_config("fp32"), ready=False)
    flops = flops_per_image(fp32)  # the counter does not see quantised layers; the work is the same
    report.add("encoder_img_s", f"(b) image encoder, batch {ENCODER_BATCH}, {clip.precision}", "img/s", rates)
    report.add("model_gflop_per_image", "(b) model FLOPs per image (torch flop counter)", "GFLOP",
               [flops / 1e9])
    kinds = ["float32"] + (["bfloat16"] if "bf16" in fast_precisions() else []) + ["int8"]
    for dtype_name in kinds:
        short = {"float32": "fp32", "bfloat16": "bf16"}.get(dtype_name, dtype_name)
        unit = "GOP/s" if short == "int8" else "GFLOP/s"
        samples = matmul_gflops(dtype_name, trials=max(3, repeat))
        what = "dynamic int8 linear" if short == "int8" else f"{short} matmul"
        report.add(f"matmul_{short}_gflop_s", f"(b) {what} 2048², {_threads()} threads", unit, samples)
        roofline = statistics.median(samples) * 1e9 / flops
        report.add(f"roofline_{short}_img_s", f"(b) {short} roofline (matmul ÷ FLOPs per image)", "img/s",
                   [roofline])
        if short == clip.precision:
            report.add("encoder_roofline_pct", f"(b) encoder share of the {short} roofline", "%",
                       [100 * r / roofline for r in rates], value=100 * statistics.median(rates) / roofline)
    if "bf16" not in fast_precisions():
        report.extra["bf16_matmul"] = "not measured: no avx512_bf16/amx_bf16 (bf16 is emulated here)"
    bench_fidelity(report, clip, fp32, photos, batch, vectors, rates, repeat, tags)


def keyword_changes(vectors: np.ndarray, reference: np.ndarray, tags: TagMatrix) -> tuple[float, str]:
    """Share of photos whose top-5 keywords (the bench's tagging) are the same set from both vectors, and
    how far scores moved beside how close the tags lie (what decides whether a keyword flips)."""
    ours = predict(normalize(vectors.astype(np.float32)), tags, THRESHOLD, TOP_K)
    theirs = predict(normalize(reference.astype(np.float32)), tags, THRESHOLD, TOP_K)
    same = float(np.mean([{k for k, _ in a} == {k for k, _ in b} for a, b in zip(ours, theirs, strict=True)]))
    moved = np.abs(tags.scores(normalize(vectors.astype(np.float32)))
                   - tags.scores(normalize(reference.astype(np.float32))))
    ranked = -np.sort(-tags.scores(normalize(reference.astype(np.float32))), axis=1)
    gap = ranked[:, TOP_K - 1] - ranked[:, TOP_K]
    return same, (f"scores moved {moved.mean():.1e} on average, {moved.max():.1e} at most; 5th-6th tag gap "
                  f"median {np.median(gap):.1e}")


def bench_fidelity(report: Report, clip: ClipModel, fp32: ClipModel, photos: list[Path], batch: np.ndarray,
                   vectors: np.ndarray, rates: list[float], repeat: int, tags: TagMatrix) -> None:
    """(b) Each fast path against fp32 on the same photos: the other precisions' speed, cosine and
    keywords, and JPEG draft decoding against a full decode (both encoded in fp32)."""
    reference = vectors if fp32 is clip else fp32.encode_images(batch)
    medians = {clip.precision: statistics.median(rates)}
    for precision in ["fp32", *fast_precisions()]:
        if precision == clip.precision:
            other_vectors = vectors
        else:
            other = load_model(model_config(precision), ready=False)
            other_rates, other_vectors = encoder_rates(other, batch, repeat)
            medians[precision] = statistics.median(other_rates)
            report.add(f"encoder_{precision}_img_s", f"(b) image encoder, batch {ENCODER_BATCH}, {precision}",
                       "img/s", other_rates)
            del other
        if precision != "fp32":
            found = cosines(other_vectors, reference)
            report.add(f"cosine_{precision}", f"(b) {precision} vectors: cosine to fp32, lowest of "
                       f"{len(found)} photos", "cosine", [float(found.min())],
                       note=f"mean {found.mean():.6f}")
            same, how = keyword_changes(other_vectors, reference, tags)
            report.add(f"keywords_{precision}", f"(b) {precision}: photos whose {TOP_K} keywords are fp32's",
                       "%", [100 * same], note=how)
    if MODEL.precision == "auto":  # auto must never have picked a path slower than fp32
        ratio = medians[clip.precision] / medians["fp32"]
        fastest = max(medians, key=lambda p: medians[p])
        note = f"fastest here: {fastest}, {medians[fastest] / medians['fp32']:.2f}x"
        if ratio < 0.95:
            note += "; SLOWER THAN FP32"
        report.add("auto_vs_fp32", f"(b) auto's pick ({clip.precision}) ÷ fp32, batch {ENCODER_BATCH}, "
                   f"{_threads()} threads", "x", [ratio], note=note)
    full = fp32.encode_images(encoder_batch(photos, clip, upright_full=True))
    found = cosines(reference, full)
    report.add("cosine_draft", "(b) JPEG draft decode: cosine to a full decode, lowest", "cosine",
               [float(found.min())], note=f"mean {found.mean():.6f}")
    gc.collect()


def bench_encoder_child(report: Report, clip: ClipModel, photos: list[Path], repeat: int) -> None:
    """(b) The same batches through the encoder child process the daemon uses: the pipe's cost."""
    from tagwatch.encoder import EncoderProcess

    batch = encoder_batch(photos, clip)
    child = EncoderProcess(model_config())
    try:
        child.encode_images(batch)  # starts the child, loads the model, warms up
        rates = [ENCODER_BATCH / timed(lambda: child.encode_images(batch)) for _ in range(repeat)]
    finally:
        child.close()
    report.add("encoder_child_img_s", f"(b) image encoder in the child process (pipe), {child.precision}",
               "img/s", rates)


def bench_captions(report: Report, photos: list[Path], repeat: int) -> None:
    """(g) A CoCa's images/s (vectors only) beside its captions/s (vectors and captions, one image-tower
    pass), in this process and through the encoder child the daemon uses."""
    from tagwatch.encoder import EncoderProcess

    cfg = dataclasses.replace(MODEL, name=CAPTION_MODEL, pretrained="none")
    coca = load_model(cfg)
    batch = np.stack([prepare(photos[i % len(photos)].read_bytes(), coca.preprocess)
                      for i in range(CAPTION_BATCH)])
    coca.encode_images(batch)  # warm-up
    coca.encode_and_caption(batch, CAPTION_TOKENS)
    images = [CAPTION_BATCH / timed(lambda: coca.encode_images(batch)) for _ in range(repeat)]
    captions = [CAPTION_BATCH / timed(lambda: coca.encode_and_caption(batch, CAPTION_TOKENS))
                for _ in range(repeat)]
    what = f"{CAPTION_MODEL}, batch {CAPTION_BATCH}, {coca.precision}"
    report.add("coca_img_s", f"(g) {what}: images/s (vectors only)", "img/s", images)
    report.add("coca_caption_s", f"(g) {what}: captions/s ({CAPTION_TOKENS} tokens, with vectors)",
               "captions/s", captions, note=f"{1000 / statistics.median(captions):.0f} ms per photo")
    child = EncoderProcess(cfg)
    try:
        child.encode_and_caption(batch, CAPTION_TOKENS)  # starts the child, loads the model, warms up
        rates = [CAPTION_BATCH / timed(lambda: child.encode_and_caption(batch, CAPTION_TOKENS))
                 for _ in range(repeat)]
    finally:
        child.close()
    report.add("coca_child_caption_s", f"(g) {CAPTION_MODEL} captions/s in the encoder child (pipe)",
               "captions/s", rates)


SERIAL_STAGES = ("keyword write (exiftool)", "store")  # (s): the stages that run one photo at a time


@dataclass
class StageCosts:
    """Core-seconds per photo of each stage of indexing (see :func:`stage_costs`)."""

    key_decode: float
    encode: float
    ours: float  # the keyword write: our side
    theirs: float  # ... and exiftool's CPU
    store: float
    precision: str

    def named(self) -> dict[str, float]:
        return {"key + draft decode": self.key_decode, f"encode, {self.precision}, 1 thread": self.encode,
                "keyword write (exiftool)": self.ours + self.theirs, "store": self.store}

    @property
    def total(self) -> float:
        return sum(self.named().values())

    def floor(self, cores: int) -> tuple[float, str, float]:
        """Photos/s with perfect overlap: min(cores ÷ sum, 1 ÷ the slowest stage that runs one at a
        time); with the name and rate of that stage."""
        # one exiftool, one database connection: each of these runs one photo at a time
        serial = {name: cost for name, cost in self.named().items() if name in SERIAL_STAGES}
        slowest, slowest_s = max(serial.items(), key=lambda kv: kv[1])
        return min(cores / self.total, 1 / slowest_s), slowest, 1 / slowest_s


@dataclass(frozen=True)
class Written:
    """What (s) writes to each photo: what an indexing run writes to one (see :func:`written`)."""

    keywords: list[str]
    paths: dict[str, str]


def written(vocabulary: Vocabulary, top_k: int = TOP_K, seed: int = 0) -> Written:
    """``top_k`` tags of the vocabulary drawn at random (random weights tag at random) with the levels
    above them, each under its hierarchical path, as the indexing runs write them.  With the shipped
    list and this seed: 8 keywords, 3 of them under a longer path (a scan of 200 wrote 8.4 per photo on
    average); 5 flat keywords cost exiftool ~3 ms less per photo than that."""
    hierarchy = vocabulary.hierarchy()
    keywords: list[str] = []
    for tag in random.Random(seed).sample(vocabulary.tags, top_k):
        keywords += [k for k in (tag.keyword, *reversed(tag.parents)) if k not in keywords]
    return Written(keywords, {k: hierarchy[k] for k in keywords if hierarchy.get(k, k) != k})


def bench_stages(report: Report, clip: ClipModel, photos: list[Path], work: Path, words: Written) -> None:
    """(s) Each stage of indexing one photo, in core-seconds, and the floor they imply."""
    costs = stage_costs(clip, photos, work / "stages", words)
    cores = usable_cores()
    total = costs.total
    floor, slowest, slowest_rate = costs.floor(cores)
    keys = ("key_decode", "encode", "write", "store")
    write_note = (f"{len(words.keywords)} keywords, {len(words.paths)} with a path; ours "
                  f"{1000 * costs.ours:.0f} + exiftool {1000 * costs.theirs:.0f} ms")
    for (name, value), key in zip(costs.named().items(), keys, strict=True):
        note = write_note if key == "write" else ""
        report.add(f"stage_{key}_ms", f"(s) {name}, per photo", "core-ms", [1000 * value], note=note)
    report.add("stage_sum_ms", "(s) all stages, per photo", "core-ms", [1000 * total])
    report.add("floor_img_s", f"(s) floor: min({cores} cores ÷ sum, 1 ÷ slowest one-thread stage)", "img/s",
               [floor], note=f"{cores / total:.1f} by the cores, {slowest_rate:.1f} by the {slowest}")
    report.extra["floor_img_s"] = floor
    if cores > 1:
        busy = stage_costs_together(clip, photos, work / "stages-together", words, cores)
        report.add("stage_sum_busy_ms", f"(s) all stages, per photo, timed on {cores} threads at once",
                   "core-ms", [1000 * busy.total],
                   note=f"{busy.total / total - 1:+.0%} against one at a time; decode "
                   f"{1000 * busy.key_decode:.0f}, encode {1000 * busy.encode:.0f}, "
                   f"write {1000 * (busy.ours + busy.theirs):.0f}")
        report.add("floor_busy_img_s", f"(s) the floor with every core busy ({cores} cores ÷ that sum)",
                   "img/s", [busy.floor(cores)[0]],
                   note="where the cores slow each other (shared caches, memory, a host's siblings); "
                   "the shares in (a) are of the floor above")


def stage_costs_together(clip: ClipModel, photos: list[Path], folder: Path, words: Written,
                         cores: int) -> StageCosts:
    """:func:`stage_costs` on ``cores`` threads at once (each on its own copies), averaged: the
    floor above assumes a stage costs on a busy machine what it costs alone, and the indexing runs
    keep every core busy."""
    with clip.on_one_core(), ThreadPoolExecutor(cores) as pool:  # set once here: each thread's own
        # save and restore then finds one thread, whatever order they end in
        runs = list(pool.map(lambda n: stage_costs(clip, photos, folder / str(n), words), range(cores)))
    costs = [f.name for f in dataclasses.fields(StageCosts) if f.name != "precision"]
    means = {name: sum(getattr(r, name) for r in runs) / len(runs) for name in costs}
    return StageCosts(**means, precision=runs[0].precision)


def stage_costs(clip: ClipModel, photos: list[Path], folder: Path, words: Written) -> StageCosts:
    """Each stage of indexing one photo, in core-seconds, on :data:`STAGE_PHOTOS` copies in ``folder``
    (made afresh).

    Each is the CPU time of the thread doing it (plus exiftool's own CPU for the write), so another
    process's load hardly moves it.  The calls are the pipeline's: read + content key + draft decode
    (the decode pool's work), the image encoder as the runs start it (auto's precision, from the
    tower kept ready: ONNX Runtime where that form is kept) on one thread, the keyword write
    (plan: exiftool reads the keywords; apply: it writes them atomically), and the database writes of
    one tagged photo (vector, ledger ahead of the write, then done).
    """
    chosen = [photos[i % len(photos)] for i in range(STAGE_PHOTOS)]
    shutil.rmtree(folder, ignore_errors=True)
    copies = [folder / "photos" / f"{i:02d}-{p.name}" for i, p in enumerate(chosen)]
    copies[0].parent.mkdir(parents=True)
    for source, target in zip(chosen, copies, strict=True):
        shutil.copyfile(source, target)  # distinct files even where a photo is used twice
    count = len(copies)

    started = time.thread_time()
    keys, arrays = [], []
    for photo in copies:
        data = photo.read_bytes()
        keys.append(content_key(data))
        arrays.append(prepare(data, clip.preprocess))
    key_decode = (time.thread_time() - started) / count

    batch = np.stack(arrays)
    with clip.on_one_core():
        clip.encode_images(batch[:2])  # warm-up at one thread
        started = time.thread_time()
        vectors = clip.encode_images(batch)
        encode = (time.thread_time() - started) / count

    exiftool = ExifTool()
    writer = KeywordWriter(exiftool)
    try:
        warm = folder / "warm-up.jpg"
        shutil.copyfile(chosen[0], warm)
        writer.apply(writer.plan(warm, words.keywords, paths=words.paths))  # starts exiftool
        tool_before, started = process_cpu_s(exiftool.pid), time.thread_time()
        for photo in copies:
            writer.apply(writer.plan(photo, words.keywords, before=os.lstat(photo), paths=words.paths))
        ours = (time.thread_time() - started) / count
        theirs = (process_cpu_s(exiftool.pid) - tool_before) / count
    finally:
        exiftool.close()
    check_keywords(folder / "photos", count)

    store = Store(folder / "state" / "tagwatch.db")
    try:
        identity = model_identity(model_config())
        started = time.thread_time()
        store.put_image_vectors(dict(zip(keys, vectors, strict=True)), identity)
        store.image_vectors(keys, identity)
        for photo, key in zip(copies, keys, strict=True):
            st = os.lstat(photo)
            with store.transaction():
                file_id = store.record_file(str(photo), key=key, size=st.st_size, mtime_ns=st.st_mtime_ns,
                                            state=PENDING)
                store.add_ledger(file_id, words.keywords, paths={k: (v,) for k, v in words.paths.items()})
            with store.transaction():
                file_id = store.record_file(str(photo), key=key, size=st.st_size, mtime_ns=st.st_mtime_ns,
                                            state=DONE)
                store.record_tagged(file_id, words.keywords, "bench", st.st_size, st.st_mtime_ns)
        database = (time.thread_time() - started) / count
    finally:
        store.close()
    return StageCosts(key_decode, encode, ours, theirs, database, f"{clip.precision} in {clip.runtime}")


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def bench_text(report: Report, clip: ClipModel, prompts: list[str], repeat: int) -> np.ndarray:
    """(c) Text vectors for the default tag list; returns them (they seed every run's database)."""
    samples, vectors = [], np.empty(0)
    for _ in range(repeat):
        started = time.perf_counter()
        vectors = clip.encode_texts(prompts)
        samples.append(time.perf_counter() - started)
    report.add("text_vectors_s", f"(c) text vectors, {len(prompts)} prompts (encode_texts)", "s", samples,
               note=f"{len(prompts) / statistics.median(samples):.0f} prompts/s")
    return vectors


def predict_all(images: np.ndarray, tags: TagMatrix) -> list[list[tuple[str, float]]]:
    """tagger.predict over every row, in the chunks Pipeline.retag uses."""
    out: list[list[tuple[str, float]]] = []
    for start in range(0, len(images), RETAG_CHUNK):
        out += predict(images[start:start + RETAG_CHUNK], tags, THRESHOLD, TOP_K)
    return out


def id_matrix(predictions: list[list[tuple[str, float]]], ids: dict[str, int]) -> np.ndarray:
    """Predictions as an (N, top_k) keyword-id matrix, -1 padded: the compact stored form."""
    matrix = np.full((len(predictions), TOP_K), -1, np.int16)
    for row, tags in enumerate(predictions):
        matrix[row, :len(tags)] = [ids[k] for k, _ in tags]
    return matrix


def changed_rows(new: np.ndarray, stored: np.ndarray) -> np.ndarray:
    """Rows whose keyword set differs (vectorised: sort each row, compare)."""
    return np.flatnonzero((np.sort(new, axis=1) != np.sort(stored, axis=1)).any(axis=1))


def bench_rescore(report: Report, vocabulary: Vocabulary, prompt_vectors: dict[str, np.ndarray], dim: int,
                  count: int, repeat: int) -> None:
    """(d) A tag-list edit (10 tags added) re-scores N cached vectors; which files changed?"""
    rng = np.random.default_rng(0)
    images = normalize(rng.standard_normal((count, dim), np.float32)).astype(VECTOR_DTYPE)  # stored form
    new_tags = TagMatrix.build(vocabulary, prompt_vectors)
    old_tags = TagMatrix.build(Vocabulary(vocabulary.tags[:-EDITED_TAGS], vocabulary.source), prompt_vectors)
    stored = [tuple(k for k, _ in tags) for tags in predict_all(images, old_tags)]  # FileRow.tags
    ids = {k: i for i, k in enumerate(new_tags.keywords)}
    stored_ids = id_matrix([[(k, 0.0) for k in tags] for tags in stored], ids)
    score_s, python_s, vector_s = [], [], []
    changed = 0
    for _ in range(repeat):
        started = time.perf_counter()
        predictions = predict_all(images, new_tags)
        score_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        slow = [i for i, (tags, old) in enumerate(zip(predictions, stored, strict=True))
                if {k for k, _ in tags} != set(old)]
        python_s.append(time.perf_counter() - started)
        new_ids = id_matrix(predictions, ids)
        started = time.perf_counter()
        fast = changed_rows(new_ids, stored_ids)
        vector_s.append(time.perf_counter() - started)
        if fast.tolist() != slow:
            raise BenchError("vectorised and per-row change detection disagree")
        changed = len(fast)
    note = f"{changed:,} of {count:,} changed"
    report.add("rescore_s", f"(d) re-score {count:,} vectors, {len(new_tags.keywords)} tags (predict)", "s",
               score_s)
    report.add("changed_vectorised_s", "(d) find changed files, vectorised (sorted id rows)", "s", vector_s,
               note=note)
    report.add("changed_per_row_s", "(d) find changed files, per-row sets as Pipeline.retag", "s", python_s,
               note=note)


# -- the daemon and the CLI as subprocesses: (a), (e), (f) ---------------------------------------

def write_config(folder: Path, watch: Path | None, template_db: Path, idle_unload: str = "10m",
                 batch_size: int | None = None) -> Path:
    """A run's config and its fresh database (holding only the tag list's text vectors), with what a
    first start leaves in the data folder: auto's choice, the image tower kept ready, the input spec
    and the parsed tag list."""
    state = folder / "state"
    state.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template_db, state / "tagwatch.db")
    if MODEL.precision_cache is not None:
        first_start = MODEL.precision_cache.parent
        for name in (PRECISION_CACHE_NAME, MODEL_SPECS_NAME, listcache.NAME):
            if (first_start / name).exists():
                shutil.copyfile(first_start / name, state / name)
        if (first_start / towercache.FOLDER).is_dir():
            shutil.copytree(first_start / towercache.FOLDER, state / towercache.FOLDER, copy_function=os.link)
    lines = [
        f"watch = {json.dumps([str(watch)] if watch else [])}",
        'database = "state/tagwatch.db"',
        "[model]",
        'pretrained = "none"',
        f'precision = "{MODEL.precision}"',
        "[tagging]",
        f"threshold = {THRESHOLD}",
        f"top_k = {TOP_K}",
        "[schedule]",
        "rescan = 0",
        f'idle_unload = "{idle_unload}"',
    ]
    if batch_size is not None:
        lines += ["[batch]", f"size = {batch_size}"]
    path = folder / "config.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def keep_ready(clip: ClipModel) -> ClipModel:
    """What a first start leaves in the data folder besides auto's choice, for the indexing runs: the
    image tower kept ready (towercache.py; in int8 also its ONNX Runtime form) and the model's input spec
    (the daemon's LazyModel), made as a user's first start makes them: a full load with nothing kept.
    Returns the model as the runs start it."""
    assert MODEL.precision_cache is not None
    shown = logging.getLogger("tagwatch.towercache")  # its verdicts and figures, in this run's output
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("bench:     %(message)s"))
    shown.addHandler(handler)
    shown.setLevel(logging.INFO)
    shown.propagate = False
    try:
        load_model(model_config())  # auto's choice is remembered by now: builds, keeps, and is freed
    finally:
        shown.removeHandler(handler)
        shown.propagate = True
    remember_spec(MODEL.precision_cache.with_name(MODEL_SPECS_NAME), clip.identity, clip.preprocess)
    return load_model(model_config())


def make_template_db(path: Path, prompts: list[str], vectors: np.ndarray) -> None:
    """A database holding the tag list's text vectors, as the daemon stores them after a first start."""
    store = Store(path)
    store.put_text_vectors(dict(zip(prompts, vectors, strict=True)), model_identity(model_config()))
    store.close()  # the last connection checkpoints the WAL into the file


class Progress:
    """Reads the daemon's database (WAL: readers never block it) to see photos reach "done"."""

    def __init__(self, database: Path) -> None:
        self.db = sqlite3.connect(database, timeout=30)

    def done(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM files WHERE state = ?", (DONE,)).fetchone()[0]

    def state(self, path: Path) -> str | None:
        row = self.db.execute("SELECT state FROM files WHERE path = ?", (str(path),)).fetchone()
        return row[0] if row else None

    def check_failed(self) -> None:
        """A photo the daemon could not tag makes the measurement meaningless: stop at once."""
        row = self.db.execute("SELECT path, error FROM files WHERE state = ? LIMIT 1", (FAILED,)).fetchone()
        if row is not None:
            raise BenchError(f"{row[0]}: not tagged: {row[1]}")

    def close(self) -> None:
        self.db.close()


def _process_name(pid: int) -> str:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "?"
    if "tagwatch.encoder" in cmdline:
        return "encoder"
    return "exiftool" if "exiftool" in cmdline else "other"


class TreeMemory:
    """Peak RSS of a process and its children, which come and go (the encoder child ends with the idle
    unload and takes its VmHWM with it): a thread reads /proc every 0.2 s and keeps each process's
    last VmHWM.  The peak reported is the sum of the processes' peaks, an upper bound of their
    simultaneous peak (the encoder's and the daemon's peaks are close in time while indexing)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peaks: dict[int, float] = {}
        self.names: dict[int, str] = {}
        self._stop = threading.Event()
        self._sample()  # the figures from the moment it is made: a "before" to compare with
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        for pid in [self.pid, *descendants(self.pid)]:
            hwm = status_mb(pid).get("VmHWM")
            if hwm is not None:
                self.peaks[pid] = max(self.peaks.get(pid, 0.0), hwm)
                if self.names.get(pid) in (None, "other", "?"):  # read between fork and exec: ask again
                    self.names[pid] = "main" if pid == self.pid else _process_name(pid)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self._sample()

    def stop(self) -> None:
        self._sample()
        self._stop.set()
        self._thread.join()

    def peak(self) -> float:
        return sum(self.peaks.values())

    def by_name(self) -> dict[str, float]:
        """Peaks summed per kind of process (two encoders if one was restarted)."""
        out: dict[str, float] = {}
        for pid, value in self.peaks.items():
            out[self.names[pid]] = out.get(self.names[pid], 0.0) + value
        return out

    def rss_now(self) -> dict[str, float]:
        """VmRSS now of the main process and of its children, per kind."""
        out: dict[str, float] = {}
        for pid in [self.pid, *descendants(self.pid)]:
            rss = status_mb(pid).get("VmRSS")
            if rss is not None:
                name = "main" if pid == self.pid else _process_name(pid)
                out[name] = out.get(name, 0.0) + rss
        return out


def _breakdown(values: dict[str, float]) -> str:
    return " + ".join(f"{name} {value:,.0f}" for name, value in sorted(values.items(), key=lambda kv: -kv[1]))


class DaemonProcess:
    """``tagwatch run`` as a subprocess whose log is a file (as in tests/conftest.py)."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.log_path = config.parent / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    def start(self) -> float:
        """Start the process; returns the perf_counter time just before it was started."""
        with self.log_path.open("ab") as log:
            self.started = time.perf_counter()
            command = [sys.executable, "-m", "tagwatch", "run", "--config", str(self.config)]
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        return self.started

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def fail(self, message: str) -> BenchError:
        return BenchError(f"{message}; daemon log {self.log_path}:\n{self.log()[-3000:]}")

    def alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            raise self.fail(f"the daemon exited ({self.proc.returncode if self.proc else '?'})")

    def wait_log(self, text: str, since: int = 0, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log()[since:]:
            self.alive()
            if time.monotonic() > deadline:
                raise self.fail(f"{text!r} not logged within {timeout:.0f} s")
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM (it finishes its batch), then SIGKILL if it hangs."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@contextmanager
def running(config: Path) -> Iterator[DaemonProcess]:
    """A started daemon that is stopped whatever happens."""
    daemon = DaemonProcess(config)
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


def wait_until(check: Callable[[], bool], daemon: DaemonProcess, timeout: float, what: str,
               progress: Progress, interval: float = 0.01) -> float:
    """Poll ``check``; returns the perf_counter time it first held."""
    deadline = time.monotonic() + timeout
    while not check():
        daemon.alive()
        progress.check_failed()
        if time.monotonic() > deadline:
            raise daemon.fail(f"{what} not reached within {timeout:.0f} s")
        time.sleep(interval)
    return time.perf_counter()


def index_with_daemon(photos: list[Path], run: Path, template_db: Path) -> dict[str, float]:
    """(a)+(f) One cold indexing by the daemon configured for latency (batch.size = 8): start it on an
    empty watched folder, rename the photos in at once when it runs (copied beside it beforehand, as a
    file manager's move or an import tool's rename delivers them), time from process start to the last
    photo done (written, then recorded done)."""
    watched = run / "photos"
    watched.mkdir(parents=True)
    staged = copy_photos(photos, run / "staging")
    config = write_config(run / "conf", watched, template_db, IDLE_UNLOAD, batch_size=LATENCY_BATCH)
    progress = Progress(config.parent / "state" / "tagwatch.db")
    try:
        with running(config) as daemon:
            assert daemon.proc is not None
            memory = TreeMemory(daemon.proc.pid)
            daemon.wait_log("tagwatch is running")
            startup = time.perf_counter() - daemon.started
            for photo in staged:
                photo.rename(watched / photo.name)
            finished = wait_until(lambda: progress.done() >= len(photos), daemon, 120 + 5 * len(photos),
                                  f"{len(photos)} photos tagged", progress, interval=0.05)
            seconds = finished - daemon.started
            memory.stop()
            unloads = daemon.log().count("model unloaded")
            mark = len(daemon.log())
            daemon.wait_log("model unloaded", since=mark, timeout=120)
            deadline = time.monotonic() + 30
            while "encoder" in memory.rss_now() and time.monotonic() < deadline:
                time.sleep(0.1)  # the child is ending
            idle = memory.rss_now()
    finally:
        progress.close()
    check_keywords(watched, len(photos))
    peaks = memory.by_name()
    return {"seconds": seconds, "rate": len(photos) / seconds, "startup_s": startup,
            "peak_mb": memory.peak(), "peak_main_mb": peaks.get("main", 0.0), "peaks": peaks,
            "idle_mb": idle.get("main", 0.0), "idle_tree_mb": sum(idle.values()), "idle": idle,
            "unloads_while_indexing": unloads}


def index_with_scan(photos: list[Path], run: Path, template_db: Path) -> dict[str, float]:
    """(a) One cold ``tagwatch scan`` of a folder, process start to exit."""
    folder = run / "photos"
    copy_photos(photos, folder)
    config = write_config(run / "conf", None, template_db)
    log_path = run / "scan.log"
    with log_path.open("wb") as log:
        started = time.perf_counter()
        epoch = time.time()
        command = [sys.executable, "-m", "tagwatch", "scan", "--config", str(config), "-v", "--log-format",
                   "json", str(folder)]  # the debug lines time the start-up (a few lines per photo)
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        memory = TreeMemory(proc.pid)
        proc.wait()
        seconds = time.perf_counter() - started
        memory.stop()
    if proc.returncode != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise BenchError(f"tagwatch scan exited {proc.returncode}:\n{tail}")
    check_keywords(folder, len(photos))
    marks = log_marks(log_path, epoch, {"first_decode_s": "decoding ", "model_loaded_s": " loaded on ",
                                        "first_encode_s": "encoding "})
    return {"seconds": seconds, "rate": len(photos) / seconds, "peak_mb": memory.peak(),
            "peaks": memory.by_name(), **marks}


def log_marks(path: Path, epoch: float, marks: dict[str, str]) -> dict[str, float]:
    """Seconds from ``epoch`` (process start) to the first JSON log line holding each mark's text."""
    found: dict[str, float] = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
            when = datetime.fromisoformat(record["time"]).timestamp() - epoch
        except (ValueError, KeyError, TypeError):
            continue
        for name, text in marks.items():
            if name not in found and text in str(record.get("message", "")):
                found[name] = when
    return found


def bench_indexing(report: Report, photos: list[Path], counts: list[int], work: Path, template_db: Path,
                   repeat: int, rclip: Path | None, floor_now: Callable[[], float] | None = None) -> None:
    """(a) and (f): cold indexing of each count of photos through the daemon, scan and rclip, runs
    interleaved so a neighbour's load hits them alike; each as a share of the floor from (s), and of
    the floor measured again (``floor_now``) just before each round of runs: on a host whose speed
    drifts (a shared VM), the floor of the moment is the fair measure, and the two are both shown."""
    if rclip is not None:
        say("(a) exporting the model for rclip (ONNX)")
        version = rclip_version(rclip)
        onnx = export_model(load_model(model_config("fp32"), ready=False)._model, work.parent / "rclip-model")
    floor = report.extra.get("floor_img_s")
    daemon_runs: list[dict[str, Any]] = []
    scan_runs: list[dict[str, Any]] = []
    for count in counts:
        subset = photos[:count]
        daemon_runs, scan_runs, rclip_rates, floors = [], [], [], []
        if rclip is not None:
            rclip_photos = copy_photos(subset, work / f"rclip-photos-{count}")[0].parent
        for n in range(repeat):
            if floor_now is not None:
                floors.append(floor_now())
                say(f"(a) the floor now: {floors[-1]:.1f} img/s")
            say(f"(a) daemon (batch.size = {LATENCY_BATCH}) indexing {count} photos, run {n + 1}/{repeat}")
            daemon_runs.append(index_with_daemon(subset, work / f"daemon-{count}-{n}", template_db))
            say(f"    {daemon_runs[-1]['rate']:.2f} img/s")
            say(f"(a) scan of {count} photos, run {n + 1}/{repeat}")
            scan_runs.append(index_with_scan(subset, work / f"scan-{count}-{n}", template_db))
            say(f"    {scan_runs[-1]['rate']:.2f} img/s")
            if rclip is not None:
                say(f"(a) rclip indexing {count} photos, run {n + 1}/{repeat}")
                seconds = index_with_rclip(rclip, rclip_photos, count, onnx, work / f"rclip-{count}-{n}")
                rclip_rates.append(count / seconds)
                say(f"    {rclip_rates[-1]:.2f} img/s")
        unloads = sum(r["unloads_while_indexing"] for r in daemon_runs)
        rates = {"daemon": [r["rate"] for r in daemon_runs], "scan": [r["rate"] for r in scan_runs]}
        report.add(f"index_daemon_{count}_img_s", f"(a) {count} photos: daemon, batch.size = {LATENCY_BATCH} "
                   "(renamed in → keywords)", "img/s", rates["daemon"],
                   note=f"model unloaded {unloads}x mid-run!" if unloads else "")
        report.add(f"daemon_startup_{count}_s", f"(a) {count} photos: daemon start → \"tagwatch is running\"",
                   "s", [r["startup_s"] for r in daemon_runs])
        report.add(f"index_scan_{count}_img_s", f"(a) {count} photos: tagwatch scan", "img/s", rates["scan"])
        for mark, what in (("first_decode_s", "first photo decoding"), ("model_loaded_s", "model loaded"),
                           ("first_encode_s", "first photo encoding")):
            samples = [r[mark] for r in scan_runs if mark in r]
            if samples:
                report.add(f"scan_{mark.removesuffix('_s')}_{count}_s", f"(a) {count} photos: scan start → "
                           f"{what}", "s", samples)
        if rclip_rates:
            report.add(f"index_rclip_{count}_img_s",
                       f"(a) {count} photos: {version} (ONNX, same weights, fp32)", "img/s", rclip_rates)
        if floors:
            report.add(f"floor_beside_{count}_img_s",
                       f"(a) {count} photos: the floor (s) measured before each round", "img/s", floors)
        for name, samples in rates.items():
            if floor:
                report.add(f"index_{name}_{count}_of_floor", f"(a) {count} photos: {name} ÷ floor (s)", "%",
                           [100 * r / floor for r in samples], value=100 * statistics.median(samples) / floor)
            if floors:
                report.add(f"index_{name}_{count}_of_floor_beside", f"(a) {count} photos: {name} ÷ the floor "
                           "measured before its round", "%", [100 * r / f for r, f in zip(samples, floors,
                                                                                           strict=True)])
            if rclip_rates:
                report.add(f"index_{name}_{count}_vs_rclip", f"(a) {count} photos: {name} ÷ rclip (medians)",
                           "x", [statistics.median(samples) / statistics.median(rclip_rates)])
    largest = counts[-1]
    idle_note = f"bound {IDLE_RSS_BOUND_MB} MB"
    peak_note = f"documented: {PEAK_RSS_BOUND_MB:,} MB"
    peak = statistics.median(r["peak_mb"] for r in daemon_runs)
    report.add("peak_rss_daemon_mb", f"(f) peak RSS indexing {largest}: daemon + encoder + exiftool (sum of "
               "VmHWM)", "MB", [r["peak_mb"] for r in daemon_runs],
               note=f"{_breakdown(daemon_runs[-1]['peaks'])}; {peak_note}"
               + ("" if peak <= PEAK_RSS_BOUND_MB else ": OVER"))
    report.add("peak_rss_daemon_main_mb", "(f) of which the daemon's own process (VmHWM)", "MB",
               [r["peak_main_mb"] for r in daemon_runs])
    idle = statistics.median(r["idle_mb"] for r in daemon_runs)
    report.add("idle_rss_daemon_mb", f"(f) idle RSS, daemon process after model unload ({IDLE_UNLOAD})", "MB",
               [r["idle_mb"] for r in daemon_runs],
               note=idle_note + ("" if idle <= IDLE_RSS_BOUND_MB else ": OVER"))
    report.add("idle_rss_daemon_tree_mb", "(f) idle RSS, daemon + its children (exiftool)", "MB",
               [r["idle_tree_mb"] for r in daemon_runs], note=_breakdown(daemon_runs[-1]["idle"]))
    report.add("peak_rss_scan_mb", f"(f) peak RSS, tagwatch scan of {largest} + encoder + exiftool (sum of "
               "VmHWM)", "MB", [r["peak_mb"] for r in scan_runs], note=_breakdown(scan_runs[-1]["peaks"]))


def drop(photo: Path, folder: Path, name: str) -> tuple[Path, float]:
    """Copy a photo into the watched folder as a file manager does; returns its path and the time."""
    target = folder / name
    started = time.perf_counter()
    shutil.copyfile(photo, target)
    return target, started


def drop_latency(daemon: DaemonProcess, progress: Progress, photo: Path, folder: Path, name: str,
                 staging: Path | None = None) -> float:
    """Seconds from the start of the copy to the photo recorded done (its keywords already written);
    with ``staging`` (a folder on the same file system, not watched), from its rename into ``folder``:
    a file manager's move, an import tool's rename."""
    if staging is None:
        target, started = drop(photo, folder, name)
    else:
        staged, target = drop(photo, staging, name)[0], folder / name
        started = time.perf_counter()
        staged.rename(target)
    finished = wait_until(lambda: progress.state(target) == DONE, daemon, 120, f"{name} tagged", progress)
    return finished - started


def bench_latency(report: Report, photos: list[Path], work: Path, template_db: Path, drops: int,
                  cold_drops: int) -> None:
    """(e) One dropped photo → keywords, with the model warm and with a freshly started daemon."""
    folder = work / "warm" / "photos"
    folder.mkdir(parents=True)
    config = write_config(work / "warm" / "conf", folder, template_db)
    progress = Progress(config.parent / "state" / "tagwatch.db")
    staging = work / "warm" / "staging"
    staging.mkdir()
    warm: list[float] = []
    moved: list[float] = []
    try:
        with running(config) as daemon:
            daemon.wait_log("tagwatch is running")
            say("(e) warm-up photo (loads the model)")
            drop_latency(daemon, progress, photos[0], folder, "warmup.jpg")
            for n in range(drops):  # a different picture each time: a cached one is never encoded
                photo = photos[(n + 1) % len(photos)]
                warm.append(drop_latency(daemon, progress, photo, folder, f"drop-{n}.jpg"))
            for n in range(drops):
                photo = photos[(drops + n + 1) % len(photos)]
                moved.append(drop_latency(daemon, progress, photo, folder, f"moved-{n}.jpg", staging))
            reloads = daemon.log().count("model unloaded")
    finally:
        progress.close()
    check_keywords(folder, 2 * drops + 1)
    cold: list[float] = []
    from_start: list[float] = []  # process start → keywords: a sooner "running" hides less of the load
    for n in range(cold_drops):
        say(f"(e) cold drop {n + 1}/{cold_drops} (fresh daemon)")
        folder = work / f"cold-{n}" / "photos"
        folder.mkdir(parents=True)
        config = write_config(work / f"cold-{n}" / "conf", folder, template_db)
        progress = Progress(config.parent / "state" / "tagwatch.db")
        try:
            with running(config) as daemon:
                daemon.wait_log("tagwatch is running")
                startup = time.perf_counter() - daemon.started
                cold.append(drop_latency(daemon, progress, photos[n % len(photos)], folder, "drop.jpg"))
                from_start.append(startup + cold[-1])
        finally:
            progress.close()
    note = "model unloaded between drops!" if reloads else ""
    if len(photos) <= 2 * drops:
        note = (note + " " if note else "") + "fewer photos than drops: some drops were cache hits"
    for q in (50, 95):
        target = ""
        if q == 95:
            target = "target < 1 s" + ("" if percentile(warm, q) < 1 else ": MISSED")
        report.add(f"drop_warm_p{q}_s", f"(e) drop → keywords, model warm, p{q}", "s", warm,
                   value=percentile(warm, q), note="; ".join(n for n in (note, target) if n))
    for q in (50, 95):
        report.add(f"drop_moved_p{q}_s", f"(e) moved in (renamed from beside) → keywords, model warm, p{q}",
                   "s", moved, value=percentile(moved, q))
    for q in (50, 95):
        report.add(f"drop_cold_p{q}_s", f"(e) drop → keywords, model cold (fresh daemon), p{q}", "s", cold,
                   value=percentile(cold, q))
    for q in (50, 95):
        report.add(f"drop_cold_start_p{q}_s", f"(e) the same, from the daemon's process start, p{q}", "s",
                   from_start, value=percentile(from_start, q),
                   note="dropped as it says it is running; the model loads from its start" if q == 50 else "")


# -- the whole run -------------------------------------------------------------------------------

def in_process_parts(report: Report, photos: list[Path], args: argparse.Namespace, work: Path,
                     template_db: Path) -> Callable[[], float] | None:
    """(s), (b), (c), (d) in this process; leaves the text vectors in ``template_db`` for the subprocesses
    (and auto's choice in MODEL.precision_cache).  Returns, for (a), a measure of the floor (s) as it is
    at the moment it is called (the model kept for it)."""
    say(f"loading the model (random weights, precision {MODEL.precision})")
    clip = load_model(model_config(), ready=False)  # built here (its open_clip model is inspected)
    report.extra["precision"] = clip.precision
    runs = keep_ready(clip)
    say(f"the runs encode in {runs.precision} with {runs.runtime}")
    report.extra["runtime"] = runs.runtime
    bench_choice(report, clip)
    assert MODEL.precision_cache is not None
    # what the daemon loads, parsed and kept in the data folder as a user's first start keeps it
    vocabulary = listcache.load(builtin_tag_list(), TaggingConfig(), MODEL.precision_cache.parent)
    prompts = vocabulary.prompts()
    say(f"(c) text vectors for {len(prompts)} prompts")
    vectors = bench_text(report, clip, prompts, args.repeat)
    make_template_db(template_db, prompts, vectors)
    words = written(vocabulary)
    if "s" in args.parts or "a" in args.parts:
        say("(s) the stages of indexing, per photo")
        guard(report, "s", bench_stages, report, runs, photos, work, words)
    if "b" in args.parts:
        say("(b) image encoder and matmul throughput")
        tags = TagMatrix.build(vocabulary, dict(zip(prompts, vectors, strict=True)))
        guard(report, "b", bench_encoder, report, clip, photos, args.repeat, tags)
        guard(report, "b", bench_encoder_child, report, clip, photos, args.repeat)
    if "g" in args.parts:
        say(f"(g) captions: {CAPTION_MODEL} images/s and captions/s")
        guard(report, "g", bench_captions, report, photos, args.repeat)
    if "d" in args.parts:
        say(f"(d) re-scoring {args.vectors:,} vectors")
        prompt_vectors = dict(zip(prompts, vectors, strict=True))
        guard(report, "d", bench_rescore, report, vocabulary, prompt_vectors, clip.dim, args.vectors,
              args.repeat)
    del clip
    if "a" not in args.parts:
        del runs
        gc.collect()  # the models' memory back before (e)'s daemons start; (a) keeps one for its floors
        return None
    gc.collect()
    return lambda: stage_costs(runs, photos, work / "stages-beside", words).floor(usable_cores())[0]


def guard(report: Report, part: str, work: Callable[..., None], *args: Any) -> None:
    """A part that fails is reported and the others still run."""
    try:
        work(*args)
    except (BenchError, RclipError) as exc:
        report.errors[part] = str(exc)
        say(f"part ({part}) failed: {exc}")


def format_value(value: float, unit: str = "") -> str:
    if unit == "cosine":
        return f"{value:.6f}"
    if value == 0 or abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 0.1:
        return f"{value:.2f}"
    return f"{value:.2g}" if abs(value) >= 0.001 else f"{value:.1e}"


def print_table(report: Report, machine: dict[str, Any], settings: dict[str, Any]) -> None:
    """One table on stdout, headed by the machine it ran on."""
    flags = " ".join(f for f, present in machine["flags"].items() if present) or "none"
    print(f"\ntagwatch bench: {machine['cpu']}, {machine['usable_cores']} cores ({flags}), "
          f"{machine['memory_gib']} GiB; torch {machine['torch']}, {machine['torch_threads']} threads")
    print(f"{settings['photos']} photos ({settings['photo_source']}), repeat {settings['repeat']}, "
          f"model {settings['model']}, threshold {THRESHOLD}, top_k {TOP_K}\n")
    width = max([len(r.label) for r in report.results] + [20])
    print(f"{'measure':<{width}}  {'value':>9}  {'min':>9}  {'max':>9}  {'n':>3}  unit")
    for result in report.results:
        s = result.summary()
        value, low, high = (format_value(s[k], result.unit) for k in ("value", "min", "max"))
        print(f"{result.label:<{width}}  {value:>9}  {low:>9}  {high:>9}  {s['n']:>3}  {result.unit}"
              + (f"  ({result.note})" if result.note else ""))
    for name, text in report.extra.items():
        if isinstance(text, str):  # the rest (auto's figures, the floor) is in the table and the JSON
            print(f"{name}: {text}")
    for part, error in report.errors.items():
        print(f"({part}) FAILED: {error.splitlines()[0]}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, metavar="DIR",
                        help="use the JPEGs in DIR (copied, never written) instead of the generated set")
    parser.add_argument("--counts", metavar="N,N",
                        help="photo counts indexed in (a) (default 60,200, --quick 10,20; with --images all)")
    parser.add_argument("--repeat", type=int, metavar="R", help="runs per measure (default 3, --quick 1)")
    parser.add_argument("--vectors", type=int, metavar="N",
                        help="cached vectors re-scored in (d) (default 100,000, --quick 10,000)")
    parser.add_argument("--drops", type=int, metavar="N",
                        help="warm drops in (e) (default 10, --quick 5); cold drops: as many, --quick 2")
    parser.add_argument("--parts", default="abcdefsg", help="which of a-g and s to run (default all; c "
                        "always runs; f and s come with a)")
    parser.add_argument("--precision", choices=PRECISIONS, default=MODEL.precision,
                        help=f"the model's precision in every part (default {MODEL.precision})")
    parser.add_argument("--rclip", type=Path, metavar="EXE",
                        help="also time rclip's first indexing of the same photos (see rclip_beside.py)")
    parser.add_argument("--quick", action="store_true", help="a small run for a smoke test (a few minutes)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, metavar="DIR",
                        help=f"where the generated photos live and runs work (default {DEFAULT_CACHE})")
    parser.add_argument("--json", type=Path, default=Path("bench-results.json"), metavar="PATH",
                        help="where the results go (default bench-results.json)")
    parser.add_argument("--keep", action="store_true", help="keep the run folders (logs, databases)")
    args = parser.parse_args(argv)
    args.repeat = args.repeat or (1 if args.quick else 3)
    args.vectors = args.vectors or (10_000 if args.quick else 100_000)
    args.drops = args.drops or (5 if args.quick else 10)
    args.cold_drops = 2 if args.quick else args.drops
    try:
        args.counts = sorted({int(n) for n in args.counts.split(",")}) if args.counts else None
    except ValueError:
        parser.error(f"--counts takes numbers separated by commas, got {args.counts!r}")
    if args.counts is None and args.images is None:
        args.counts = [10, 20] if args.quick else [60, 200]
    if set(args.parts) - set("abcdefsg"):
        parser.error(f"--parts takes letters a-g and s, got {args.parts!r}")
    if min(args.repeat, args.vectors, args.drops, *(args.counts or [1])) < 1:
        parser.error("--counts, --repeat, --vectors and --drops must be at least 1")
    return args


def compiled_as_installed() -> None:
    """tagwatch's bytecode compiled, as ``pip install`` leaves it: run from a checkout where Python
    writes no bytecode (``PYTHONDONTWRITEBYTECODE``, read-only folders), every process the indexing
    runs start (the command and its encoder child) would compile the package's sources again, about
    0.2 CPU-seconds each here, which no installed tagwatch pays.  rclip beside it is installed."""
    package = Path(towercache.__file__).parent
    if not compileall.compile_dir(str(package), quiet=1):
        say(f"could not compile {package}: the indexing runs pay for compiling it")


def main(argv: list[str] | None = None) -> int:
    global MODEL
    args = parse_args(argv)
    MODEL = model_config(args.precision)
    if shutil.which("exiftool") is None:
        say("exiftool is needed (Debian: apt-get install libimage-exiftool-perl)")
        return 2
    report = Report()
    compiled_as_installed()
    try:
        largest = max(args.counts) if args.counts else None
        photos = (given_photos(args.images, largest) if args.images
                  else ensure_photos(args.cache / "images-12mp", largest or 0))
    except BenchError as exc:
        say(str(exc))
        return 2
    with Image.open(photos[0]) as first:
        size = first.size
    settings = {"photos": len(photos), "photo_folder": str(photos[0].parent),
                "photo_source": "--images" if args.images else f"{size[0]}x{size[1]} q{QUALITY}, {SOURCES}",
                "first_photo_size": list(size), "repeat": args.repeat, "vectors": args.vectors,
                "drops_warm": args.drops, "drops_cold": args.cold_drops, "quick": args.quick,
                "counts": args.counts or [len(photos)], "daemon_batch_size": LATENCY_BATCH,
                "threshold": THRESHOLD, "top_k": TOP_K, "idle_unload": IDLE_UNLOAD, "parts": args.parts}
    machine = machine_facts()
    args.cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="run-", dir=args.cache))
    MODEL = dataclasses.replace(MODEL, precision_cache=work / PRECISION_CACHE_NAME)  # auto measures once
    template_db = work / "template.db"
    try:
        floor_now = in_process_parts(report, photos, args, work, template_db)
        settings["model"] = ("ViT-B-32-256, pretrained none (random weights), precision "
                             f"{MODEL.precision} → {report.extra.get('precision', '?')}")
        if "a" in args.parts:
            counts = args.counts or [len(photos)]
            guard(report, "a", bench_indexing, report, photos, counts, work, template_db, args.repeat,
                  args.rclip, floor_now)
        if "e" in args.parts:
            guard(report, "e", bench_latency, report, photos, work, template_db, args.drops, args.cold_drops)
    finally:
        if args.keep:
            say(f"run folders kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print_table(report, machine, settings)
    results = {r.key: r.summary() for r in report.results}
    document = {"machine": machine, "settings": settings, "results": results, "errors": report.errors,
                **report.extra,
                "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    args.json.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    say(f"results written to {args.json}")
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
