"""The int8 image tower run by ONNX Runtime: an encoder child that starts without torch.

A start from the TorchScript tower (:mod:`tagwatch.towercache`) spends 2.3-2.8 s of one core importing
torch before the first photo can be encoded, on every scan and every time the daemon's model comes back
after an idle unload; ONNX Runtime starts in 0.5 s (import 0.1, session 0.4) in a child of ~260 MB
against ~650 MB.  Its dynamic int8 (``onnxruntime.quantization.quantize_dynamic``: int8 weights,
activations quantised per call, the analogue of torch's) is as faithful as torch's (lowest cosine to fp32
0.99979-0.99983 against 0.99971-0.99976 on a CPU with VNNI; without VNNI it takes 7-bit weights, see
:data:`FORMS`) and costs as much per image on one thread (1.01-1.11x torch's images per core-second).
At two threads ONNX Runtime splits each layer and its threads hand over at every one (0.83x torch
int8); so here one thread per core runs a batch's photos, each thread by a one-thread session (sessions
are safe to call from several threads), which ran 1.2-1.3x torch's two threads on a 2-core AMD EPYC.
docs/speed.md has the runs.

Made once from the fp32 tower at a full load whose precision is int8 (:func:`export`, then for each
of :data:`FORMS` in turn :func:`quantise` and :func:`check` against the fp32 vectors and torch's int8
tower on probe images, ~13 s for ViT-B-32); the first form whose vectors are faithful (the cosine
``auto`` demands) and that runs at least :data:`MIN_SHARE` of torch int8's images per core-second is
kept.  Not 100%: the bar weighs one thread's rate only, and the form wins what that leaves out: its
start (about a core-second less than importing torch and loading its tower, paid by every scan and every
return of the daemon's model after an idle unload), its photos spread over the threads, and a child of
~260 MB instead of ~870.  On a faster AVX512-VNNI EPYC host (2026-12-04) it ran 0.86-0.91x torch's rate
on one thread; the bar of 0.9 used before kept torch there, and the same benchmark with torch against
ONNX Runtime gave a 60-photo scan 21.0 against 25.1-26.5 img/s, a fresh daemon's first photo 1.26
against 0.19-0.20 s (p95) and a peak of 1,022 against ~400 MB, 200-photo scans 28.5 against 27.0-29.6
img/s.  Below 80%, a backlog of a few hundred photos repays torch's start, and a CPU where ONNX
Runtime's int8 kernels are that much slower keeps torch.  A faithful form that falls short is timed
again, up to :data:`SPEED_CHECKS` times in all, and judged by its best: the verdict holds for every
later start, and a busy moment once made the 7-bit form run 7.9 against torch's 10.0 (it measured
11.8-12.1 against 11.9-12.2 in the makings around it), which would have cost each later start ~2 s
importing torch.
Imported only in the encoder child; onnxruntime and onnx are imported in its functions.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import cores
from .imaging import Preprocess, normalize

log = logging.getLogger(__name__)

MIN_SHARE = 0.8  # kept unless under 80% of torch int8's images per core-second (see the module's note)
SPEED_CHECKS = 3  # times a faithful form that runs below MIN_SHARE is timed before it is given up
_META = "tagwatch"  # the ONNX model's metadata key holding identity, input spec and vector size
# Photos per call on one thread.  A batch used to be split in one fixed part per core; beside the
# parent's decode threads and exiftool one part ran late and the other core sat waiting for it at every
# batch's end.  One photo per call costs the same per image (82-91 core-ms at 1, 2, 4 or 8 on the
# AVX2-only EPYC, ViT-B-32-256), and the threads take the next photo as they come free.
PART = 1
_ROUNDS = 3  # timed rounds after a warm-up, in turns with torch's tower; each keeps its best


@dataclass(frozen=True)
class Form:
    """One way of quantising the tower's weights (``quantize_dynamic``'s options beyond int8 weights)."""

    name: str
    options: dict[str, bool]


# Tried in this order at a making; the first that passes the check is kept.  Full-range int8 weights
# first: on a CPU with VNNI (AVX512-VNNI, AVX-VNNI) ONNX Runtime's int8 dot products are exact, and
# this form measured cosines of 0.99972-0.99983 to fp32 there.  Without VNNI (an AVX2-only CPU) its
# kernels multiply uint8 activations by int8 weights in pairs summed into 16 bits (vpmaddubsw), which
# saturate: 0.98145 on the AVX2-only EPYC (ViT-B-32-256), below what ``auto`` demands.  Weights of 7
# bits cannot saturate (ONNX Runtime's ``reduce_range``, meant for such CPUs), and a scale per output
# channel wins back the lost bit: 0.99970 there (7 bits alone 0.99950), as fast as torch int8.
FORMS = (
    Form("8-bit weights", {}),
    Form("7-bit weights, a scale per channel", {"reduce_range": True, "per_channel": True}),
)


def available() -> bool:
    """Can this Python run an ONNX tower?  Asked without importing onnxruntime."""
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def one_thread_session(path: Path) -> Any:
    """A session that runs on the calling thread alone (a batch's parts run on threads of ours)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # the parts of a batch run on threads of ours, one per core
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only: its notes would read as ours
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxTower:
    """An image tower in ONNX Runtime: normalised (N, 3, S, S) float32 in, unit vectors out."""

    def __init__(self, session: Any, workers: int | None = None) -> None:
        self._session = session
        self._input = session.get_inputs()[0].name
        self.workers = workers or cores.usable()  # one part per core at once; bench.py sets 1
        self._pool: ThreadPoolExecutor | None = None
        self._pool_size = 0

    def _run(self, part: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self._input: part})[0]

    def features(self, batch: np.ndarray) -> np.ndarray:
        """The tower's raw output for ``batch``, its photos taken one by one by :attr:`workers`
        threads: a thread that shares its core with the parent's decoding or a keyword write takes
        fewer, so neither waits at the batch's end for the other's fixed half (see :data:`PART`)."""
        batch = np.ascontiguousarray(batch, np.float32)
        threads = min(self.workers, len(batch))
        if threads <= 1:
            return self._run(batch)
        if self._pool is None or self._pool_size < threads:
            if self._pool is not None:
                self._pool.shutdown()
            self._pool = ThreadPoolExecutor(threads, thread_name_prefix="onnx-tower")
            self._pool_size = threads
        parts = [batch[i:i + PART] for i in range(0, len(batch), PART)]
        return np.concatenate(list(self._pool.map(self._run, parts)))

    def encode(self, batch: np.ndarray, preprocess: Preprocess) -> np.ndarray:
        """(N, 3, S, S) float32, or (N, S, S, 3) uint8 pixels (normalised here) → (N, D) unit rows."""
        if batch.dtype == np.uint8:
            batch = normalize(batch, preprocess)
        features = self.features(batch).astype(np.float32, copy=False)
        norms = np.linalg.norm(features, axis=-1, keepdims=True)
        return features / np.maximum(norms, 1e-12)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool, self._pool_size = None, 0


@dataclass(frozen=True)
class Kept:
    """What a kept ONNX tower was made from (its file also records the check's figures, for a reader)."""

    identity: str
    preprocess: Preprocess
    dim: int


def load(path: Path) -> tuple[OnnxTower, Kept] | None:
    """The tower in ``path`` and what it was made from; None (with a log line, the file removed) when
    it cannot be used."""
    try:
        session = one_thread_session(path)
        meta = json.loads(session.get_modelmeta().custom_metadata_map[_META])
        spec = meta["preprocess"]
        preprocess = Preprocess(int(spec["size"]), tuple(spec["mean"]), tuple(spec["std"]),
                                str(spec["interpolation"]), str(spec["resize_mode"]))
        kept = Kept(str(meta["identity"]), preprocess, int(meta["dim"]))
        return OnnxTower(session), kept
    except Exception as exc:  # a damaged file, an onnxruntime that cannot read it: the next form
        log.warning("model: cannot use the ready ONNX image tower %s (%s: %s); using the next form",
                    path, type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
        path.unlink(missing_ok=True)
        return None


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter's deprecation notes and the quantiser's per-layer warnings (logged on the root
    logger) are about their own workings, not the user's files: keep them out of the log."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def export(visual: Any, preprocess: Preprocess, folder: Path) -> Path:
    """Export ``visual`` (an image tower in fp32) to ONNX in ``folder``; returns the file.  Raises
    whatever the exporter raises."""
    import torch

    fp32 = folder / "fp32.onnx"
    example = torch.zeros(2, 3, preprocess.size, preprocess.size)
    with _quiet():  # not in inference mode: attention would take its fused path, which has no ONNX form
        torch.onnx.export(visual.eval(), (example,), str(fp32), input_names=["input"],
                          output_names=["output"], dynamic_axes={"input": {0: "n"}, "output": {0: "n"}},
                          opset_version=17, dynamo=False)
    return fp32


def quantise(fp32: Path, form: Form) -> Path:
    """The exported tower ``fp32`` in dynamic int8 as ``form`` says, its graph optimised
    (:func:`optimised`), beside it; returns the file.  Raises whatever the quantiser raises."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    int8 = fp32.with_name("int8.onnx")  # a form tried before it is not kept: replaced
    with _quiet():
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, **form.options)
    return optimised(int8)


def optimised(path: Path) -> Path:
    """``path``'s graph as ONNX Runtime rewrites it at each session's start, saved beside it: so each
    start loads it ready instead of rewriting it again (session 0.11 CPU-s instead of 0.21 for
    ViT-B-32-256 on the AVX2-only EPYC, the same vectors to the last bit).  The extended level (fused
    operators, folded constants), not the layout level, whose rewrite suits one CPU and which ONNX
    Runtime applies at the start (~0.01 s)."""
    import onnxruntime as ort

    out = path.with_name(f"{path.stem}-optimised.onnx")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(out)
    options.log_severity_level = 3
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return out


def _one_core_rate(run: Any, batch: Any, rounds: list[float]) -> None:
    started = time.thread_time()
    run(batch)
    rounds.append(len(batch) / max(time.thread_time() - started, 1e-9))


def check(path: Path, probe: np.ndarray, reference: np.ndarray,
          int8_tower: Any) -> tuple[float, float, float]:
    """(lowest cosine of the ONNX tower's vectors to ``reference`` (fp32's on ``probe``), its images per
    core-second, torch int8 ``int8_tower``'s), timed on this thread in turns: a warm-up, then rounds."""
    import torch

    from .precision import one_torch_thread

    tower = OnnxTower(one_thread_session(path), workers=1)
    vectors = tower.features(probe)
    unit = vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)
    want = reference / np.linalg.norm(reference, axis=-1, keepdims=True)
    cosine = float((unit * want).sum(axis=-1).min())
    batch = torch.from_numpy(probe)
    ours: list[float] = []
    theirs: list[float] = []
    try:
        with one_torch_thread(), torch.inference_mode():
            int8_tower(batch)  # warm-ups, not counted (the session ran above)
            for _ in range(_ROUNDS):
                _one_core_rate(tower.features, probe, ours)
                _one_core_rate(int8_tower, batch, theirs)
    finally:
        tower.close()
    return cosine, max(ours), max(theirs)


def finish(path: Path, form: Form, identity: str, preprocess: Preprocess, dim: int, cosine: float,
           rate: float, torch_rate: float) -> bytes:
    """The int8 file's bytes with what it was made from written into its metadata."""
    import onnx

    model = onnx.load(str(path))
    meta = {"identity": identity, "preprocess": asdict(preprocess), "dim": dim, "weights": form.name,
            "cosine": round(cosine, 6), "img_per_core_s": round(rate, 2),
            "torch_img_per_core_s": round(torch_rate, 2)}
    entry = model.metadata_props.add()
    entry.key, entry.value = _META, json.dumps(meta)
    return model.SerializeToString()
