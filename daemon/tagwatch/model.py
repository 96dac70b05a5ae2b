"""open_clip behind three calls: identify a model, load it, encode images and texts.

This module runs in the encoder's child process: the daemon and the CLI load the model there
(:mod:`tagwatch.encoder`, which calls :func:`load_model` in the child and holds the lazy handle,
:class:`~tagwatch.encoder.LazyModel`, on the daemon's side), so torch and open_clip are imported
only where the model runs. Nothing here imports :mod:`tagwatch.encoder`: the dependency runs one
way. Weights come from an open_clip pretrained tag (downloaded once into ``cache_dir``), from a
local checkpoint file, or are random (``"none"``, for tests and benchmarks only).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import difflib
import gc
import hashlib
import json
import logging
import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .config import ModelConfig, is_checkpoint_path
from .imaging import Preprocess

log = logging.getLogger(__name__)

RANDOM_WEIGHTS = "none"
_RANDOM_SEED = 0  # random weights are seeded so restarts find their own cached vectors again


class ModelError(RuntimeError):
    """The model cannot be loaded; the message says why and what to change."""


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def _is_config_file(name: str) -> bool:
    return name.endswith(".json")


def model_identity(cfg: ModelConfig) -> str:
    """A string that changes whenever the vectors a model produces could change.

    Stored beside every cached vector, so switching models never mixes vectors of two models.  A
    custom architecture file and a local checkpoint are identified by their content, not their path.
    """
    name = cfg.name
    if _is_config_file(name):
        path = Path(name).expanduser()
        if not path.is_file():
            raise ModelError(f"model.name: model config file '{path}' does not exist")
        name = f"{path.stem}@{_file_digest(path)[:8]}"
    pretrained = cfg.pretrained
    if pretrained.lower() == RANDOM_WEIGHTS:
        return f"{name}/random-seed{_RANDOM_SEED}"
    if is_checkpoint_path(pretrained):
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise ModelError(f"model.pretrained: checkpoint file '{path}' does not exist")
        return f"{name}/sha256:{_file_digest(path)}"
    return f"{name}/{pretrained}"


def _read_config_file(name: str) -> Path:
    """The architecture file ``name`` names, checked to be readable JSON."""
    path = Path(name).expanduser().resolve()
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"model.name: cannot read model config '{path}': {exc}") from None
    return path


def _resolve_name(open_clip: Any, name: str) -> str:
    """A built-in model name, or the name a custom ``.json`` architecture file registers."""
    if _is_config_file(name):
        path = _read_config_file(name)
        open_clip.add_model_config(path)
        return path.stem
    if name not in open_clip.list_models():
        close = difflib.get_close_matches(name, open_clip.list_models(), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ModelError(f"model.name: unknown open_clip model {name!r}{hint}")
    return name


def _check_pretrained_tag(open_clip: Any, name: str, tag: str, cfg: ModelConfig) -> None:
    tags = open_clip.list_pretrained_tags_by_model(name)
    if tag not in tags:
        known = ", ".join(tags) if tags else "none published"
        raise ModelError(f"model.pretrained: {tag!r} is neither a pretrained tag of {name} ({known}) "
                         "nor an existing checkpoint file")
    if cfg.offline:
        # Make every Hugging Face download a cache lookup; a URL download is checked by hand.
        os.environ["HF_HUB_OFFLINE"] = "1"
        try:
            from huggingface_hub import constants
            constants.HF_HUB_OFFLINE = True
        except ImportError:  # pragma: no cover - open_clip depends on huggingface_hub
            pass
        url = open_clip.get_pretrained_cfg(name, tag).get("url", "")
        hub = open_clip.get_pretrained_cfg(name, tag).get("hf_hub", "")
        if url and not hub and not (cfg.cache_dir / os.path.basename(url)).is_file():
            raise _offline_error(name, tag, cfg)
        if hub and not _in_hub_cache(hub, cfg.cache_dir):  # say so now, not as a failed download later
            raise _offline_error(name, tag, cfg)


def _in_hub_cache(hub: str, cache_dir: Path) -> bool:
    """Are the weights of an open_clip ``hf_hub`` entry (``org/repo/`` or ``org/repo/file``) in the
    Hugging Face cache under ``cache_dir``, under the name open_clip would load (it prefers a
    ``.safetensors`` twin of the file)?"""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - open_clip depends on huggingface_hub
        return False
    repo, filename = os.path.split(hub)
    filename = filename or "open_clip_pytorch_model.bin"  # open_clip's default for "org/repo/"
    names = [filename, "open_clip_model.safetensors", os.path.splitext(filename)[0] + ".safetensors"]
    return any(isinstance(try_to_load_from_cache(repo, name, cache_dir=str(cache_dir)), str)
               for name in dict.fromkeys(names))


def _offline_error(name: str, tag: str, cfg: ModelConfig) -> ModelError:
    return ModelError(
        f"model: weights for {name} / {tag} are not in the cache '{cfg.cache_dir}' and "
        "model.offline = true forbids downloading them; run once with offline = false, or set "
        "model.pretrained to a local checkpoint file")


@dataclass
class ClipModel:
    """A loaded open_clip model that turns arrays and strings into unit vectors."""

    identity: str
    preprocess: Preprocess
    dim: int
    _model: Any
    _tokenizer: Any
    _device: Any
    precision: str = "fp32"

    def encode_images(self, batch: np.ndarray) -> np.ndarray:
        """(N, 3, S, S) float32 → (N, D) float32 rows of unit length."""
        import torch
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32
        with torch.inference_mode():
            features = self._model.encode_image(torch.from_numpy(batch).to(self._device, dtype))
            features = torch.nn.functional.normalize(features.float(), dim=-1)
        return features.cpu().numpy()

    def encode_texts(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Prompt strings → (N, D) float32 rows of unit length.

        Prompts are sorted by length so each batch runs only as many token positions as its
        longest prompt needs (see :func:`_encode_text_short`), instead of the full 77.
        """
        import torch
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), self.dim), np.float32)
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                chunk = order[start:start + batch_size]
                tokens = self._tokenizer([texts[i] for i in chunk]).to(self._device)
                features = _encode_text_short(self._model, tokens)
                out[chunk] = torch.nn.functional.normalize(features.float(), dim=-1).cpu().numpy()
        return out


def _encode_text_short(model: Any, tokens: Any) -> Any:
    """open_clip's ``CLIP.encode_text`` run on the token positions actually used.

    CLIP's text tower is causal: position i attends only to positions ≤ i, and the feature is read
    at the end-of-text token.  Padding after the longest prompt therefore cannot change any
    feature, and cutting it is exact (measured ~6x faster for ImageNet prompts).  Models whose text
    tower is not causal (no ``attn_mask``) or not open_clip's ``CLIP`` run the full context.
    """
    import torch
    from open_clip.model import CLIP, text_global_pool

    mask = getattr(model, "attn_mask", None)
    if not isinstance(model, CLIP) or mask is None or model.text_pool_type not in ("argmax", "eos"):
        return model.encode_text(tokens)
    used = int((tokens != 0).int().cumsum(1).argmax(1).max()) + 1  # last non-pad position, plus one
    tokens = tokens[:, :used]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype) + model.positional_embedding[:used].to(cast_dtype)
    x = model.ln_final(model.transformer(x, attn_mask=mask[:used, :used]))
    x = text_global_pool(x, tokens, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
    projection = model.text_projection
    if projection is None:
        return x
    return projection(x) if isinstance(projection, torch.nn.Linear) else x @ projection


def _apply_precision(model: Any, precision: str, tower: Any = None) -> Any:
    """bf16: the whole model in bfloat16 (cosine to fp32 vectors ≈ 0.9999); int8: every linear layer
    of the image tower quantised dynamically, attention's included (≈ 0.9997; see quantize.py).
    Both keep the model identity: vectors stay comparable across precisions, so switching does not
    re-encode the library.  ``tower``: the image tower already in ``precision`` (auto's measured one)."""
    import torch

    if tower is not None:
        model.visual = tower
    if precision == "bf16":
        return model.to(torch.bfloat16)
    if precision == "int8" and tower is None:
        from .quantize import int8_tower

        model.visual = int8_tower(model.visual)
    return model


def _choose_precision(model: Any, cfg: ModelConfig, identity: str, device: str,
                      preprocess: Preprocess) -> tuple[str, Any]:
    """``model.precision``, with ``auto`` resolved by measuring (or remembering) the fastest faithful
    path on this machine (:mod:`tagwatch.precision`); returns it and the tower auto measured in it."""
    if cfg.precision != "auto":
        return cfg.precision, None
    from .precision import choose

    decision = choose(model, identity, device, preprocess, cfg.precision_cache)
    return decision.precision, decision.tower


def load_model(cfg: ModelConfig) -> ClipModel:
    """Build the model described by ``cfg``; raises :class:`ModelError` with the fix on failure."""
    identity = model_identity(cfg)
    if cfg.offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
    import open_clip
    import torch

    name = _resolve_name(open_clip, cfg.name)
    pretrained: str | None = cfg.pretrained
    if pretrained.lower() == RANDOM_WEIGHTS:
        log.warning("!!! model.pretrained = \"none\": RANDOM WEIGHTS, the tags will be meaningless. "
                    "Use this only for tests and benchmarks. !!!")
        torch.manual_seed(_RANDOM_SEED)
        pretrained = None
    elif is_checkpoint_path(pretrained):
        pretrained = str(Path(pretrained).expanduser())
    else:
        _check_pretrained_tag(open_clip, name, pretrained, cfg)
    try:
        device = torch.device(cfg.device)
        model = open_clip.create_model(
            name, pretrained=pretrained, device=device, cache_dir=str(cfg.cache_dir), weights_only=True)
    except RuntimeError as exc:
        if cfg.offline and pretrained and not is_checkpoint_path(pretrained):
            raise _offline_error(name, pretrained, cfg) from None
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelError(f"model: cannot load {name} / {cfg.pretrained}: {reason}") from None
    except pickle.UnpicklingError as exc:  # torch.load(weights_only=True) met a pickled object
        found = re.search(r"GLOBAL (\S+)", str(exc))
        what = f" ({found.group(1)})" if found else ""
        raise ModelError(
            f"model: refused to load {cfg.pretrained}: it holds pickled Python objects{what}, which "
            "could run code; tagwatch loads only plain tensors. Save the weights as a state dict of "
            "tensors (torch.save(model.state_dict(), ...)) or as .safetensors") from None
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"model: cannot load {name} / {cfg.pretrained}: {exc}") from None
    except Exception as exc:
        if not (pretrained and is_checkpoint_path(pretrained)):
            raise
        # A file that is no checkpoint: torch.load's weights-only unpickler fails with whatever it
        # tripped on (UnpicklingError with paragraphs of advice, EOFError, IndexError).
        raise ModelError(f"model: cannot load {name} / {cfg.pretrained}: not a PyTorch or safetensors "
                         f"checkpoint ({type(exc).__name__})") from None
    model.eval()
    pp = getattr(model.visual, "preprocess_cfg", {}) or {}
    size = pp.get("size", model.visual.image_size)
    size = size[0] if isinstance(size, tuple | list) else size
    preprocess = Preprocess(
        size=int(size),
        mean=tuple(pp.get("mean", open_clip.OPENAI_DATASET_MEAN)),
        std=tuple(pp.get("std", open_clip.OPENAI_DATASET_STD)),
        interpolation=pp.get("interpolation", "bicubic"),
        resize_mode=pp.get("resize_mode", "shortest"),
    )
    precision, tower = _choose_precision(model, cfg, identity, str(device), preprocess)
    model = _apply_precision(model, precision, tower)
    del tower
    if cfg.precision == "auto" or precision != "fp32":
        gc.collect()
        return_freed_memory()  # the fp32 tower a faster one replaced, auto's candidates not kept
    tokenizer = open_clip.get_tokenizer(name)
    dim = int(model.text_projection.shape[-1]) if getattr(model, "text_projection", None) is not None \
        else int(model.encode_text(tokenizer(["x"])).shape[-1])
    log.info("model %s loaded on %s (%s)", identity, device, precision)
    return ClipModel(identity, preprocess, dim, model, tokenizer, device, precision)


def validate_config(cfg: ModelConfig) -> None:
    """Check the model name and pretrained tag or file, without loading any weights."""
    import open_clip

    name = _resolve_name(open_clip, cfg.name)
    pretrained = cfg.pretrained
    if pretrained.lower() != RANDOM_WEIGHTS and not is_checkpoint_path(pretrained):
        _check_pretrained_tag(open_clip, name, pretrained, cfg)


def return_freed_memory() -> None:
    """Ask glibc to give freed heap pages back to the system, so the RSS really drops (after auto's
    candidate towers are freed here, and after the encoder child ends in :mod:`tagwatch.encoder`)."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc (macOS, musl): the allocator decides
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
