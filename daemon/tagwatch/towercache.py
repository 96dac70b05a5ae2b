"""The image tower ready to run, kept in the data folder so that later starts skip building it.

Loading a model in the encoder child costs, on a 2-core EPYC (ViT-B-32-256, CPU seconds): importing
open_clip 4.0-4.7 (torch 2.3 of it, torchvision and timm most of the rest; :mod:`tagwatch.clipimport`
has since left TorchDynamo and timm out of it), building the model 1.3,
quantising the image tower to int8 1.8, the tokenizer 0.2: about 7.5 s before the first photo can be
encoded, each time a scan or the daemon starts (or the daemon's model comes back after an idle unload).
Encoding images needs none of it but torch and the tower's weights in their final precision.  So after
a full load the tower is traced (TorchScript) and saved here; the next start imports torch alone and
loads the file: 2.3 + 0.5 s.  Texts still need open_clip's tokenizer and text tower, which load on the
first text request (a tag-list edit with new prompts), text vectors being cached in the database.

The file holds for one model identity, precision, device, CPU (model and the flags that matter) and
torch version, like the remembered precision choice (:mod:`tagwatch.precision`): anything else finds no
file and builds the model.  A traced tower is checked against the eager one on probe images before it
is saved.  Towers under :data:`SAVE_FROM_PARAMS` parameters (the test models) are not saved: they load in
well under a second.  Files are written atomically in ``image-towers/`` beside ``precision.json``
(ViT-B-32: 97 MB in int8, 350 MB in fp32); one per model, the last one made.  Deleting the folder is
always safe.

An int8 tower is also kept in a second form, run by ONNX Runtime (:mod:`tagwatch.onnxtower`): a start
from it imports neither torch nor open_clip (0.5 s instead of 2.8 s) and is preferred when onnxruntime
is installed; the TorchScript file stays as the fallback (no onnxruntime, a file it cannot read).  It is
made from the fp32 tower, so at a full load :func:`start_onnx` exports it before the tower is quantised
and :func:`keep_onnx` checks it against the quantised one after; it is kept only when faithful and as
fast.  ViT-B-32: 89 MB.

TorchScript (``torch.jit``) is deprecated in favour of ``torch.export``, but loading an exported
program imports torch's compiler stack (seconds), which is what this saves; a torch without
``torch.jit``, or a file it cannot load, falls back to building the model.

Imported only where the model runs (the encoder child): it imports torch in its functions.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import logging
import re
import shutil
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import clipimport, onnxtower
from .atomic import write_atomic
from .config import ModelConfig
from .imaging import Preprocess
from .store import private_folder

log = logging.getLogger(__name__)

FOLDER = "image-towers"  # beside precision.json, in the data folder
FORMAT = 3  # the making of a tower (precision.py, quantize.py, this module): a change makes new files
# (3: the ONNX form in 7-bit weights, which a CPU without VNNI could not keep before: onnxtower.FORMS)
SAVE_FROM_PARAMS = 5_000_000  # smaller image towers build fast: not worth a file
_META = "tagwatch.json"
_MAKING = ".making-"  # scratch folders of ONNX makings, in FOLDER
STALE_MAKING_S = 3600  # a making takes seconds; one this old was cut short (its process killed)


def _slug(identity: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", identity)[:80]


def tower_file(cfg: ModelConfig, identity: str, device: str,
               torch_version: str | None = None) -> tuple[Path, str] | None:
    """Where the ready tower of ``cfg`` on this machine is kept, and its precision; None without a
    data folder, or while ``auto`` has not measured on this machine (its choice decides the file).
    ``torch_version``: as installed, for a caller that must not import torch (the daemon's process)."""
    if cfg.precision_cache is None:
        return None
    from .precision import candidates, remembered, this_machine

    machine = this_machine(device, torch_version)
    precision = cfg.precision
    if precision == "auto":
        names = candidates(device, machine.flags)
        found = remembered(cfg.precision_cache, machine.key(identity), names) if len(names) > 1 else None
        if len(names) > 1 and found is None:
            return None
        precision = found.precision if found is not None else "fp32"
    key = f"{machine.key(identity)} | {precision} | tower format {FORMAT}"
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:20]
    return cfg.precision_cache.parent / FOLDER / f"{_slug(identity)}-{digest}.pt", precision


def _installed_torch() -> str | None:
    """``torch.__version__`` read from torch's ``version.py``, without importing torch (seconds)."""
    spec = importlib.util.find_spec("torch")  # finds the package; runs none of it
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        try:
            found = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]",
                              (Path(folder) / "version.py").read_text(encoding="utf-8"), re.M)
        except OSError:
            continue
        if found:
            return found.group(1)
    return None


def onnx_file(torch_file: Path) -> Path:
    """The ONNX form of the tower kept in ``torch_file`` (same model, machine and precision)."""
    return torch_file.with_suffix(".onnx")


def _torch_free_file(cfg: ModelConfig, identity: str) -> tuple[Path, str] | None:
    version = _installed_torch()
    return tower_file(cfg, identity, cfg.device, version) if version else None


def _usable_onnx(where: tuple[Path, str] | None, device: str) -> Path | None:
    if where is None or where[1] != "int8" or device != "cpu" or not onnxtower.available():
        return None
    path = onnx_file(where[0])
    return path if path.is_file() else None


def kept(cfg: ModelConfig, identity: str) -> bool:
    """Is a ready tower kept for ``cfg`` on this machine?  Asked without importing torch; any doubt
    (torch's version not found where expected) answers no."""
    where = _torch_free_file(cfg, identity)
    return where is not None and (where[0].is_file() or _usable_onnx(where, cfg.device) is not None)


def load_onnx(cfg: ModelConfig, identity: str) -> tuple[onnxtower.OnnxTower, onnxtower.Kept, Path] | None:
    """The ONNX form of ``cfg``'s ready tower, its making and its file, if one is kept and onnxruntime
    can run it; torch is not imported."""
    path = _usable_onnx(_torch_free_file(cfg, identity), cfg.device)
    loaded = onnxtower.load(path) if path is not None else None
    if loaded is None:
        return None
    if loaded[1].identity != identity:  # a digest collision or a hand-copied file
        loaded[0].close()
        return None
    return loaded[0], loaded[1], path


def load(path: Path, device: str) -> tuple[Any, Preprocess, int] | None:
    """The traced tower in ``path`` with the input spec and vector size it was saved with; None (and
    a log line) when it cannot be used."""
    import torch

    extra = {_META: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation
            warnings.simplefilter("ignore", DeprecationWarning)
            tower = torch.jit.load(str(path), map_location=device, _extra_files=extra)
        meta = json.loads(extra[_META])
        spec = meta["preprocess"]
        preprocess = Preprocess(int(spec["size"]), tuple(spec["mean"]), tuple(spec["std"]),
                                str(spec["interpolation"]), str(spec["resize_mode"]))
        return tower.eval(), preprocess, int(meta["dim"])
    except Exception as exc:  # a damaged file, a torch that cannot read it: build the model instead
        log.warning("model: cannot use the ready image tower %s (%s: %s); building the model (and the "
                    "tower again)", path, type(exc).__name__, exc)
        path.unlink(missing_ok=True)
        return None


def save(cfg: ModelConfig, identity: str, device: str, visual: Any, preprocess: Preprocess, dim: int,
         dtype: Any, parameters: int) -> None:
    """Trace ``visual`` (the image tower in its final precision; ``parameters`` it had in fp32), check
    it gives the eager tower's vectors, and keep it for the next start.  Any failure costs only the
    saving."""
    import torch

    from .precision import probe_images

    where = tower_file(cfg, identity, device)
    if where is None or where[0].exists() or parameters < SAVE_FROM_PARAMS:
        return
    path = where[0]
    try:
        clipimport.meta_kernels()  # tracing runs with torch as a plain import leaves it
        probe = torch.from_numpy(probe_images(preprocess, 3)).to(device, dtype)
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")  # the deprecation, and tracer notes about open_clip's loops
            traced = torch.jit.trace(visual, probe[:2], check_trace=False)
            want = torch.nn.functional.normalize(visual(probe).float(), dim=-1)
            got = torch.nn.functional.normalize(traced(probe).float(), dim=-1)
        difference = float((want - got).abs().max())
        if difference > 1e-4:
            log.info("model: the traced image tower differs from the model (%.2g); not kept", difference)
            return
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            meta = json.dumps({"identity": identity, "preprocess": asdict(preprocess), "dim": dim,
                               "format": FORMAT})
            torch.jit.save(traced, buffer, _extra_files={_META: meta})
        private_folder(path.parent)
        _forget_earlier(path)
        write_atomic(path, buffer.getvalue(), durable=False)
        log.info("model: image tower kept ready in %s (%.0f MB): later starts skip building it", path,
                 len(buffer.getvalue()) / 1e6)
    except Exception as exc:
        log.info("model: image tower not kept ready (%s: %s)", type(exc).__name__, exc)


def _forget_earlier(path: Path) -> None:
    """Remove the same model's earlier makings (another precision, CPU or format), in either form:
    one tower per model is kept, the last one made."""
    stem = path.name[:-len(path.suffix)]
    for suffix in (".pt", ".onnx"):
        for old in path.parent.glob(f"{stem[:-21]}-{'?' * 20}{suffix}"):
            if old.name[:-len(suffix)] != stem:
                old.unlink(missing_ok=True)


def _no_onnx(exc: Exception) -> None:
    log.info("model: no ONNX Runtime image tower (%s: %s)", type(exc).__name__,
             str(exc).splitlines()[0] if str(exc) else "")


@dataclass
class PendingOnnx:
    """The fp32 tower exported for ONNX Runtime, waiting for the int8 torch tower that its int8 forms
    are checked against."""

    path: Path  # where it is kept if a form passes
    fp32: Path  # the exported tower, in a scratch folder (its int8 forms are made beside it)
    probe: Any  # probe images (normalised, float32)
    reference: Any  # the fp32 tower's features on them

    def discard(self) -> None:
        shutil.rmtree(self.fp32.parent, ignore_errors=True)


def start_onnx(cfg: ModelConfig, identity: str, device: str, visual: Any, preprocess: Preprocess,
               parameters: int) -> PendingOnnx | None:
    """At a full load in int8: export ``visual`` (still fp32) for ONNX Runtime, unless its ONNX form
    is kept already or cannot be run here.  Any failure costs only this form."""
    where = tower_file(cfg, identity, device)
    if where is None or where[1] != "int8" or device != "cpu" or parameters < SAVE_FROM_PARAMS:
        return None
    path = onnx_file(where[0])
    if path.exists() or not onnxtower.available() or importlib.util.find_spec("onnx") is None:
        return None
    import torch

    from .precision import features, probe_images

    scratch = None
    try:
        clipimport.meta_kernels()  # exporting runs with torch as a plain import leaves it
        private_folder(path.parent)
        for stale in path.parent.glob(f"{_MAKING}*"):  # left by a process killed while making one
            if time.time() - stale.stat().st_mtime > STALE_MAKING_S:
                shutil.rmtree(stale, ignore_errors=True)
        scratch = Path(tempfile.mkdtemp(prefix=_MAKING, dir=path.parent))
        log.info("model: making the image tower for ONNX Runtime (once per model and machine)")
        fp32 = onnxtower.export(visual, preprocess, scratch)
        probe = probe_images(preprocess)
        with torch.inference_mode():
            reference = features(visual(torch.from_numpy(probe))).float().numpy()
        return PendingOnnx(path, fp32, probe, reference)
    except Exception as exc:
        _no_onnx(exc)
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        return None


def keep_onnx(pending: PendingOnnx, identity: str, int8_tower: Any, preprocess: Preprocess, dim: int) -> None:
    """Keep the first of :data:`onnxtower.FORMS` whose vectors are faithful to fp32's
    (:data:`precision.MIN_COSINE`) and that runs at least :data:`onnxtower.MIN_SHARE` of ``int8_tower``'s
    (torch) images per core-second, timed again on a near miss (:data:`onnxtower.SPEED_CHECKS`); with
    none, starts load torch."""
    from .precision import MIN_COSINE

    try:
        for form in onnxtower.FORMS:
            made = onnxtower.quantise(pending.fp32, form)
            cosine, rate, torch_rate = onnxtower.check(made, pending.probe, pending.reference, int8_tower)
            for _ in range(onnxtower.SPEED_CHECKS - 1):
                if cosine < MIN_COSINE or rate >= onnxtower.MIN_SHARE * torch_rate:
                    break
                log.info("model: the ONNX Runtime image tower in %s ran %.1f images per core-second against "
                         "torch int8's %.1f: timing both again (a busy moment must not decide for good)",
                         form.name, rate, torch_rate)
                _, again, torch_again = onnxtower.check(made, pending.probe, pending.reference, int8_tower)
                if again / torch_again > rate / torch_rate:
                    rate, torch_rate = again, torch_again
            figures = (f"{form.name}: cosine to fp32 {cosine:.5f}, {rate:.1f} images per core-second "
                       f"against torch int8's {torch_rate:.1f}")
            if cosine < MIN_COSINE or rate < onnxtower.MIN_SHARE * torch_rate:
                log.info("model: the ONNX Runtime image tower is not kept in %s", figures)
                continue
            data = onnxtower.finish(made, form, identity, preprocess, dim, cosine, rate, torch_rate)
            write_atomic(pending.path, data, durable=False)
            _forget_earlier(pending.path)
            log.info("model: image tower kept ready for ONNX Runtime in %s (%.0f MB; %s): later starts "
                     "skip importing torch", pending.path, len(data) / 1e6, figures)
            return
        log.info("model: no form of the ONNX Runtime image tower is faithful and fast enough here: "
                 "starts load torch")
    except Exception as exc:
        _no_onnx(exc)
    finally:
        pending.discard()
