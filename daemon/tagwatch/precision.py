"""``model.precision = "auto"``: the fastest faithful way to run the image tower here, measured once.

Which precision is fastest depends on the CPU, and its flags do not tell. On a 2-core Intel Xeon with
AVX512-BF16 and VNNI, ViT-B-32-256 at batch 32 ran fp32 19.5, bf16 13.0 and dynamic int8 34.4 img/s: bf16,
the flags' pick, was the slowest path. On a 2-core AMD EPYC with the same flags, bf16 ran 2.2x fp32's
rate. So on a model's first load on a machine, the loaded image tower is timed in each candidate (fp32;
bf16 only where the CPU multiplies bf16 in hardware, elsewhere it is emulated and ~100x slower; int8
through :func:`tagwatch.quantize.int8_tower`) on one batch of synthetic photo-like images, on one thread
by that thread's CPU time (see :func:`measure`): one warm-up round, then :data:`ROUNDS` rounds in turn, so
a neighbour's load hits every candidate alike; each keeps its fastest round. The pick is the fastest
candidate whose vectors have a cosine of at least :data:`MIN_COSINE` to fp32's on every probe image,
provided it beats fp32 by :data:`MIN_GAIN` (a lossy path is not worth a gain within the noise); otherwise
fp32. So ``auto`` never picks a path that measured slower than fp32.

The choice is remembered in ``precision.json`` in the data folder (beside the database, readable by this
user only), keyed by the model's identity, the device, the CPU model and the flags that matter, and the
torch version; a later load with the same key reads it and measures nothing. Deleting the file measures
again. What it costs (ViT-B-32-256): the int8 quantisation, the bf16 conversion, one warm-up and two timed
batches of 4 per candidate, about 4 s of one core, once (4.4 s of wall time on 2 busy cores); the chosen
tower is kept, so nothing of it is done twice. An image tower under :data:`MEASURE_FROM_PARAMS` parameters
(the test models) is left in fp32 without measuring: it costs less than decoding one photo whatever its
precision.

Imported only where the model runs (the encoder child): it imports torch in its functions.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import platform
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import write_atomic
from .imaging import Preprocess
from .store import private_folder

log = logging.getLogger(__name__)

MIN_COSINE = 0.999  # lowest cosine to fp32 on any probe image for a lossy path to be kept
MIN_GAIN = 1.05  # a lossy path must run at least 5% faster than fp32
PROBE_BATCH = 4  # images per timed batch
ROUNDS = 2  # timed rounds after the warm-up
MEASURE_FROM_PARAMS = 5_000_000  # smaller image towers stay fp32 unmeasured
FAST_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})  # x86 (AVX512, AMX); Arm ("Features")
# The flags a precision's speed depends on, recorded in the key: a VM moved to another host with the same
# model name but fewer features measures again.
RELEVANT_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile",
                  "amx_bf16", "amx_int8", "asimddp", "i8mm", "bf16", "sve")


@dataclass(frozen=True)
class Machine:
    """What a measured choice holds for."""

    cpu: str
    flags: tuple[str, ...]
    torch: str
    device: str

    def key(self, identity: str) -> str:
        flags = " ".join(self.flags) or "-"
        return f"{identity} | {self.device} | {self.cpu} | {flags} | torch {self.torch}"


def cpu_facts(cpuinfo: str | None = None) -> tuple[str, set[str]]:
    """The CPU's model name, with its x86 family and model numbers, and its feature flags (x86
    ``flags``, Arm ``Features``) from /proc/cpuinfo.  The numbers because a VM's CPU may be named only
    "AMD EPYC" with the same flags on hosts generations apart: family 23 model 1 (Zen 1) ran the image
    tower at a quarter of the rate of a later EPYC of that name, and int8 barely ahead of fp32
    (docs/speed.md)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:  # not Linux
            cpuinfo = ""
    first: dict[str, str] = {}  # the first CPU's fields
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        label, _, value = line.partition(":")
        label = label.strip()
        first.setdefault(label, value.strip())
        if label in ("flags", "Features"):
            flags.update(value.split())
    name = next((first[k] for k in ("model name", "Model", "Hardware") if first.get(k)), "")
    name = name or platform.processor() or platform.machine() or "unknown CPU"
    if first.get("cpu family") and first.get("model"):
        name += f" (family {first['cpu family']}, model {first['model']})"
    return name, flags


def this_machine(device: str, torch_version: str | None = None) -> Machine:
    """``torch_version``: as installed, for a caller that must not import torch (the daemon's process)."""
    if torch_version is None:
        import torch

        torch_version = torch.__version__
    cpu, flags = cpu_facts()
    return Machine(cpu, tuple(f for f in RELEVANT_FLAGS if f in flags), torch_version, device)


def candidates(device: str, flags: set[str] | tuple[str, ...]) -> list[str]:
    """The precisions worth timing: fp32 and int8 on a CPU, bf16 where the CPU multiplies it in
    hardware; fp32 alone elsewhere (dynamic int8 is a CPU path)."""
    if not device.startswith("cpu"):
        return ["fp32"]
    return ["fp32", *(["bf16"] if FAST_BF16_FLAGS & set(flags) else []), "int8"]


@dataclass
class Trial:
    """One candidate's figures on the probe batch."""

    precision: str
    img_s: float  # images per second of one core (one thread's CPU time)
    cosine: float  # lowest over the probe images, to fp32's vectors


def pick(trials: list[Trial]) -> str:
    """The fastest faithful trial, if it beats fp32 by :data:`MIN_GAIN`; otherwise fp32."""
    fp32 = next(t for t in trials if t.precision == "fp32")
    faithful = [t for t in trials if t.precision == "fp32" or t.cosine >= MIN_COSINE]
    best = max(faithful, key=lambda t: t.img_s)
    return best.precision if best.img_s >= fp32.img_s * MIN_GAIN else "fp32"


@dataclass
class Decision:
    """What ``auto`` chose, and how: measured now, remembered, or not worth measuring."""

    precision: str
    how: str  # "measured", "remembered" or "unmeasured"
    trials: list[Trial] = field(default_factory=list)
    seconds: float = 0.0  # what measuring cost (when it was measured)
    decided: str = ""
    tower: Any = None  # the measured tower in the chosen precision, to keep (measured only)

    def figures(self) -> str:
        return ", ".join(f"{t.precision} {t.img_s:.1f} img/core-s" + ("" if t.precision == "fp32"
                                                                   else f" (cosine {t.cosine:.5f})")
                         for t in self.trials)


# -- the remembered choices ----------------------------------------------------------------------

def _read(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("%s: cannot read the remembered precision choices (%s); measuring again", path, exc)
        return {}
    choices = document.get("choices") if isinstance(document, dict) else None
    return choices if isinstance(choices, dict) else {}


def remembered(path: Path, key: str, allowed: list[str]) -> Decision | None:
    """The choice stored under ``key``, if it is one of ``allowed``."""
    entry = _read(path).get(key)
    if not isinstance(entry, dict) or entry.get("precision") not in allowed:
        return None
    try:  # the figures are for the log only: an entry edited by hand still gives its choice
        trials = [Trial(p, float(rate), float(entry.get("cosine", {}).get(p, 1.0)))
                  for p, rate in entry.get("img_s", {}).items() if p in allowed]
        seconds = float(entry.get("seconds", 0.0))
    except (AttributeError, TypeError, ValueError):
        trials, seconds = [], 0.0
    return Decision(str(entry["precision"]), "remembered", trials, seconds, str(entry.get("decided", "")))


def remember(path: Path, key: str, machine: Machine, identity: str, decision: Decision) -> None:
    """Add ``decision`` under ``key`` (other keys kept); a file that cannot be written is logged."""
    import torch

    choices = _read(path)
    choices[key] = {
        "precision": decision.precision, "model": identity, "device": machine.device, "cpu": machine.cpu,
        "flags": list(machine.flags), "torch": machine.torch, "threads": torch.get_num_threads(),
        "decided": decision.decided, "seconds": round(decision.seconds, 2),
        "img_s": {t.precision: round(t.img_s, 2) for t in decision.trials},
        "cosine": {t.precision: round(t.cosine, 6) for t in decision.trials if t.precision != "fp32"},
        "probe": f"{PROBE_BATCH} synthetic images on one thread, images per CPU-second, fastest of "
                 f"{ROUNDS} rounds after a warm-up",
    }
    document = {"about": "tagwatch: the measured choice of model.precision = \"auto\" per model, CPU and "
                "torch version; delete this file to measure again", "choices": choices}
    try:
        private_folder(path.parent)
        write_atomic(path, json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    except OSError as exc:
        log.warning("%s: cannot remember the precision choice (%s); the next load measures again", path, exc)


# -- measuring -----------------------------------------------------------------------------------

def probe_images(spec: Preprocess, count: int = PROBE_BATCH) -> np.ndarray:
    """``count`` seeded photo-like images, normalised as ``spec`` says: smooth colour fields with detail
    at every scale (amplitude falling as 1/frequency, as in photographs), not white noise, whose
    activations are unlike a photo's."""
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(0)
    size = spec.size
    total = torch.zeros(count, 3, size, size)
    cells = 2
    while cells <= min(size, 128):
        grid = torch.from_numpy(rng.standard_normal((count, 3, cells, cells)).astype(np.float32))
        total += F.interpolate(grid, size=(size, size), mode="bilinear", align_corners=False) / cells
        cells *= 2
    low = total.amin(dim=(1, 2, 3), keepdim=True)
    high = total.amax(dim=(1, 2, 3), keepdim=True)
    pixels = (total - low) / (high - low)
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    return ((pixels - mean) / std).numpy()


def _copy(tower: Any, dtype: Any = None) -> Any:
    """A copy of ``tower`` whose modules are its own but whose tensors are the original's (or, with
    ``dtype``, converted ones): no second fp32 tower is ever made, which would add ~350 MB to the
    peak for ViT-B-32.  Quantising or converting the copy leaves the original as it is."""
    import torch

    memo: dict[int, Any] = {}
    for tensor in [*tower.parameters(), *tower.buffers()]:
        if dtype is None or not tensor.is_floating_point():
            memo[id(tensor)] = tensor
        elif isinstance(tensor, torch.nn.Parameter):
            memo[id(tensor)] = torch.nn.Parameter(tensor.detach().to(dtype), requires_grad=False)
        else:
            memo[id(tensor)] = tensor.to(dtype)
    return copy.deepcopy(tower, memo)


def _variants(tower: Any, names: list[str]) -> dict[str, tuple[Any, Any]]:
    """Each candidate's tower and input dtype; ``tower`` (fp32) stays as it is."""
    import torch

    from .quantize import int8_tower

    made: dict[str, tuple[Any, Any]] = {"fp32": (tower, torch.float32)}
    for name in names:
        try:
            if name == "int8":
                made[name] = (int8_tower(_copy(tower)), torch.float32)
            elif name == "bf16":
                made[name] = (_copy(tower, torch.bfloat16).to(torch.bfloat16), torch.bfloat16)
        except (RuntimeError, NotImplementedError) as exc:  # e.g. no quantised engine on this platform
            log.info("precision auto: %s is not available here (%s)", name, str(exc).splitlines()[0])
    return made


def features(output: Any) -> Any:
    """An image tower's features: some towers return (features, tokens)."""
    return output[0] if isinstance(output, tuple) else output


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """torch on the calling thread alone meanwhile: what an image costs one core is timed by that
    thread's CPU time."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def measure(tower: Any, spec: Preprocess, names: list[str]) -> tuple[list[Trial], dict[str, Any]]:
    """Time ``tower`` in each precision of ``names`` (fp32 first) on the probe batch; returns the
    trials and the candidate towers by precision.

    Timed on one thread, by that thread's CPU time: the cost of an image in core-seconds, which is
    what the pipeline's overlapped stages share the cores by, and which another process's load does
    not inflate as it does wall time (measured at load 4.8 on 2 cores: fp32, bf16 and int8 at 6.1,
    12.8 and 18.9 images per core-second against 5.8, 13.0 and 19.2 on the same cores quieter).
    """
    import torch
    import torch.nn.functional as F

    order = ["fp32", *sorted((n for n in names if n != "fp32"), key=lambda n: n != "int8")]
    variants = _variants(tower, order)
    batch = torch.from_numpy(probe_images(spec))
    best = {name: float("inf") for name in variants}
    outputs: dict[str, Any] = {}
    rotation = list(variants)
    with one_torch_thread(), torch.inference_mode():
        for round_number in range(1 + ROUNDS):  # round 0 warms each one up and is not counted
            for name in rotation:
                module, dtype = variants[name]
                started = time.thread_time()
                try:
                    output = features(module(batch.to(dtype)))
                except (RuntimeError, NotImplementedError) as exc:
                    if name == "fp32":
                        raise
                    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    log.info("precision auto: %s fails on this model (%s)", name, reason)
                    continue
                elapsed = time.thread_time() - started
                if round_number:
                    best[name] = min(best[name], elapsed)
                outputs[name] = output.float()
            rotation = [n for n in rotation[1:] + rotation[:1] if n in outputs]  # rotated, failures out
    trials = []
    for name in order:
        if name in outputs and best[name] < float("inf"):
            cosine = float(F.cosine_similarity(outputs[name], outputs["fp32"], dim=-1).min())
            trials.append(Trial(name, len(batch) / max(best[name], 1e-9), 1.0 if name == "fp32" else cosine))
    return trials, {t.precision: variants[t.precision][0] for t in trials}


def choose(model: Any, identity: str, device: str, spec: Preprocess, cache: Path | None,
           measure_from: int = MEASURE_FROM_PARAMS) -> Decision:
    """``auto``'s precision for ``model`` (an open_clip model in fp32): remembered in ``cache`` under
    this machine's key, or measured now (and remembered there, when ``cache`` is given)."""
    machine = this_machine(device)
    names = candidates(device, machine.flags)
    if len(names) == 1:
        return Decision("fp32", "unmeasured")
    parameters = sum(p.numel() for p in model.visual.parameters())
    if parameters < measure_from:
        log.debug("precision auto: fp32, not measured: an image tower of %.1f M parameters costs less than "
                  "decoding a photo in any precision", parameters / 1e6)
        return Decision("fp32", "unmeasured")
    key = machine.key(identity)
    if cache is not None:
        found = remembered(cache, key, names)
        if found is not None:
            log.info("precision auto: %s, as measured on %s (%s; %s, delete it to measure again)",
                     found.precision, found.decided or "an earlier load", found.figures(), cache)
            return found
    log.info("precision auto: timing the image tower in %s on %s (once per model, CPU and torch version)",
             ", ".join(names), machine.cpu)
    started = time.perf_counter()
    trials, towers = measure(model.visual, spec, names)
    chosen = pick(trials)
    decision = Decision(chosen, "measured", trials, time.perf_counter() - started,
                        time.strftime("%Y-%m-%d %H:%M:%S %z"), towers[chosen])
    del towers
    log.info("precision auto: %s (%s; fastest faithful path, cosine to fp32 >= %s and >= %d%% faster; "
             "measured in %.1f s)", chosen, decision.figures(), MIN_COSINE, round((MIN_GAIN - 1) * 100),
             decision.seconds)
    if cache is not None:
        remember(cache, key, machine, identity, decision)
    return decision
