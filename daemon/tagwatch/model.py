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
import errno
import gc
import hashlib
import json
import logging
import os
import pickle
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import clipimport, skipinit
from .config import ModelConfig, is_checkpoint_path
from .imaging import Preprocess, normalize

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


def _key(cfg: ModelConfig, name: str) -> str:
    """``config.toml: model.NAME`` for an error about that key: the file named, as every other config
    error names it (a user with several configs could not tell which one was meant)."""
    return f"{cfg.source}: model.{name}" if cfg.source else f"model.{name}"


def model_identity(cfg: ModelConfig) -> str:
    """A string that changes whenever the vectors a model produces could change.

    Stored beside every cached vector, so switching models never mixes vectors of two models.  A
    custom architecture file and a local checkpoint are identified by their content, not their path.
    """
    name = cfg.name
    if _is_config_file(name):
        path = Path(name).expanduser()
        if not path.is_file():
            raise ModelError(f"{_key(cfg, 'name')}: model config file '{path}' does not exist")
        name = f"{path.stem}@{_file_digest(path)[:8]}"
    pretrained = cfg.pretrained
    if pretrained.lower() == RANDOM_WEIGHTS:
        return f"{name}/random-seed{_RANDOM_SEED}"
    if is_checkpoint_path(pretrained):
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise ModelError(f"{_key(cfg, 'pretrained')}: checkpoint file '{path}' does not exist")
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
        with contextlib.suppress(ImportError):  # open_clip depends on huggingface_hub
            clipimport.hub("constants").HF_HUB_OFFLINE = True
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
        try_to_load_from_cache = clipimport.hub("try_to_load_from_cache")
    except ImportError:  # pragma: no cover - open_clip depends on huggingface_hub
        return False
    repo, filename = os.path.split(hub)
    filename = filename or "open_clip_pytorch_model.bin"  # open_clip's default for "org/repo/"
    names = [filename, "open_clip_model.safetensors", os.path.splitext(filename)[0] + ".safetensors"]
    return any(isinstance(try_to_load_from_cache(repo, name, cache_dir=str(cache_dir)), str)
               for name in dict.fromkeys(names))


HUB_CONNECT_S = 10.0  # huggingface_hub's own wait for the hub's first answer (its etag timeout)


def _check_hub_reachable(open_clip: Any, name: str, tag: str, cfg: ModelConfig) -> None:
    """Weights still to download from the Hugging Face hub: fail at once, in one line, where the hub
    cannot be reached at all (its name does not resolve, nothing answers at its address, no route to
    it).  huggingface_hub retries each of the two file names open_clip asks for five times with
    back-off on such an error: 94 s and ~30 warnings without a network, for an answer that cannot
    change.  A timeout is left to its retries (a slow network may answer), and so is a proxy, which
    resolves the name itself."""
    hub = open_clip.get_pretrained_cfg(name, tag).get("hf_hub", "")
    if not hub or _in_hub_cache(hub, cfg.cache_dir):
        return
    constants = clipimport.hub("constants")
    if constants.HF_HUB_OFFLINE:  # the hub's client says so itself, without trying
        return
    reason = _unreachable(constants.ENDPOINT)
    if reason is not None:
        raise ModelError(
            f"model: cannot download the weights of {name} / {tag}: {constants.ENDPOINT} cannot be reached "
            f"({reason}); connect to the network for the first load (they are kept in '{cfg.cache_dir}'), "
            "or set model.pretrained to a local checkpoint file")


def _unreachable(endpoint: str) -> str | None:
    """Why ``endpoint`` (a URL) surely cannot be reached from here, or None if it may be."""
    import socket
    import urllib.parse
    import urllib.request

    url = urllib.parse.urlsplit(endpoint)
    host = url.hostname or ""
    if not host or (urllib.request.getproxies().keys() & {url.scheme, "all"}
                    and not urllib.request.proxy_bypass(host)):
        return None
    try:
        port = url.port or (443 if url.scheme == "https" else 80)
        socket.create_connection((host, port), timeout=HUB_CONNECT_S).close()
    except socket.gaierror as exc:  # the name does not resolve (no network, no DNS, a typo)
        return exc.strerror or str(exc)
    except TimeoutError:
        return None
    except OSError as exc:
        return (exc.strerror or str(exc)) if exc.errno in _NO_WAY else None
    except ValueError:  # a malformed port in HF_ENDPOINT: the hub's client says so
        return None
    return None


_NO_WAY = {errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL}


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
    _model: Any  # None when started from a ready image tower, until a text needs the whole model
    _tokenizer: Any
    _device: Any
    precision: str = "fp32"
    _tower: Any = None  # the ready image tower (:mod:`tagwatch.towercache`), if started from one
    _cfg: ModelConfig | None = None  # to build the whole model when a text needs it
    _onnx: Any = None  # the ready tower in ONNX Runtime (:mod:`tagwatch.onnxtower`): no torch needed

    @property
    def runtime(self) -> str:
        """What encodes the images: "onnxruntime" (started from its ready tower) or "torch"."""
        return "onnxruntime" if self._onnx is not None else "torch"

    @contextlib.contextmanager
    def on_one_core(self) -> Iterator[None]:
        """Encode images on one thread meanwhile: benchmarks time what a photo costs a core."""
        if self._onnx is not None:
            workers, self._onnx.workers = self._onnx.workers, 1
            try:
                yield
            finally:
                self._onnx.workers = workers
            return
        from .precision import one_torch_thread

        with one_torch_thread():
            yield

    def encode_images(self, batch: np.ndarray) -> np.ndarray:
        """(N, 3, S, S) float32, or (N, S, S, 3) uint8 pixels (normalised here), → (N, D) float32
        rows of unit length."""
        if self._onnx is not None:
            return self._onnx.encode(batch, self.preprocess)
        import torch
        if batch.dtype == np.uint8:
            batch = normalize(batch, self.preprocess)
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32
        with torch.inference_mode():
            images = torch.from_numpy(batch).to(self._device, dtype)
            features = self._tower(images) if self._tower is not None else self._model.encode_image(images)
            features = torch.nn.functional.normalize(features.float(), dim=-1)
        return features.cpu().numpy()

    def _text_side(self) -> None:
        """Started from a ready image tower: build the whole model for its text tower (once)."""
        if self._model is not None:
            return
        assert self._cfg is not None
        log.info("model: loading the text side of %s (new prompts to encode)", self.identity)
        self._model, self._tokenizer = load_text_side(self._cfg, self.precision)

    @property
    def captions(self) -> bool:
        """Can this model write captions (a CoCa)?"""
        return is_captioner(self._model)

    def encode_and_caption(self, batch: np.ndarray, max_tokens: int = 30) -> tuple[np.ndarray, list[str]]:
        """(N, 3, S, S) float32, or (N, S, S, 3) uint8 pixels (normalised here), → ((N, D) unit vectors,
        N captions), the image tower run once.  A CoCa never starts from a ready tower (only CLIPs are
        kept ready), so the whole model is loaded here."""
        import torch
        if batch.dtype == np.uint8:
            batch = normalize(batch, self.preprocess)
        if not self.captions:
            raise ModelError(f"model: {self.identity} cannot write captions (it is not a CoCa model)")
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32
        sot, eot = self._tokenizer.sot_token_id, self._tokenizer.eot_token_id
        with torch.inference_mode():
            vectors, tokens = caption_tokens(self._model, torch.from_numpy(batch).to(self._device, dtype),
                                             sot, eot, max_tokens)
        return vectors.cpu().numpy(), [tidy_caption(self._tokenizer.decode(t)) for t in tokens]

    def encode_texts(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Prompt strings → (N, D) float32 rows of unit length.

        Prompts are sorted by length so each batch runs only as many token positions as its
        longest prompt needs (see :func:`_encode_text_short`), instead of the full 77.
        """
        self._text_side()  # before torch's import: a start from the ONNX tower has not imported it
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


def is_captioner(model: Any) -> bool:
    """Can this open_clip model write captions (a CoCa: a CLIP with a caption decoder)?"""
    return hasattr(model, "text_decoder") and hasattr(model, "_encode_image")


def caption_tokens(model: Any, images: Any, sot: int, eot: int,
                   max_tokens: int) -> tuple[Any, list[list[int]]]:
    """Greedy decoding of a CoCa model: (normalised image vectors, each image's caption tokens).

    The image tower runs once per image, and the same pass gives the image vector, so a CoCa that is
    also the tagging model encodes a photo once.  Hand-written rather than ``CoCa.generate`` because
    that needs the transformers package (30+ MB) for its logits processors even for plain greedy
    search; greedy search is deterministic, so the same photo always gets the same caption, which is
    what a cache keyed by content wants.  Each step re-runs the (small) text towers on the prefix.
    """
    import torch

    latent, embs = model._encode_image(images)
    count = images.shape[0]
    limit = min(max_tokens, int(getattr(model.text, "context_length", max_tokens + 1)) - 1)
    tokens = torch.full((count, 1), sot, dtype=torch.long, device=images.device)
    done = torch.zeros(count, dtype=torch.bool, device=images.device)
    pad = int(getattr(model, "pad_id", 0))
    for _ in range(max(limit, 0)):
        _, token_embs = model._encode_text(tokens)
        logits = model.text_decoder(embs, token_embs)[:, -1]
        following = torch.where(done, torch.full_like(done, pad, dtype=torch.long), logits.argmax(-1))
        tokens = torch.cat([tokens, following[:, None]], dim=1)
        done |= following == eot
        if bool(done.all()):
            break
    out = []
    for row in tokens[:, 1:].tolist():
        out.append(row[:row.index(eot)] if eot in row else row)
    return torch.nn.functional.normalize(latent.float(), dim=-1), out


def tidy_caption(text: str) -> str:
    """A decoded caption as a sentence: BPE's spaces before punctuation and doubled spaces removed."""
    text = " ".join(text.replace("<start_of_text>", " ").replace("<end_of_text>", " ").split())
    return re.sub(r"\s+([.,;:!?])", r"\1", text).strip()


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


def _random_weights_warning() -> None:
    log.warning("!!! model.pretrained = \"none\": RANDOM WEIGHTS, the tags will be meaningless. "
                "Use this only for tests and benchmarks. !!!")


def onnx_start(cfg: ModelConfig, identity: str) -> tuple[ClipModel, Path] | None:
    """The model started from its ONNX Runtime tower kept ready on this machine
    (:mod:`tagwatch.towercache`), with that tower's file, if one is kept; nothing of torch is
    imported and nothing is said (:func:`announce_onnx` is, once the model is used)."""
    from . import towercache

    ready = towercache.load_onnx(cfg, identity)
    if ready is None:
        return None
    tower, kept, path = ready
    return ClipModel(identity, kept.preprocess, kept.dim, None, None, cfg.device, "int8", _cfg=cfg,
                     _onnx=tower), path


def announce_onnx(cfg: ModelConfig, identity: str, path: Path) -> None:
    """Say that the model started from its ONNX tower in ``path`` is the one in use."""
    if cfg.pretrained.lower() == RANDOM_WEIGHTS:
        _random_weights_warning()
    log.info("model %s loaded on cpu (int8; image tower ready in %s, ONNX Runtime)", identity, path)


def _from_ready_tower(cfg: ModelConfig, identity: str) -> ClipModel | None:
    """The model started from its ready image tower (:mod:`tagwatch.towercache`), if one is kept for
    this machine: in ONNX Runtime where it can (nothing of torch imported), else torch alone is
    imported; open_clip waits until a text needs encoding."""
    from . import towercache

    started = onnx_start(cfg, identity)
    if started is not None:
        announce_onnx(cfg, identity, started[1])
        return started[0]

    torch = clipimport.torch()
    device = torch.device(cfg.device)
    where = towercache.tower_file(cfg, identity, str(device))
    if where is None or not where[0].is_file():
        return None
    loaded = towercache.load(where[0], str(device))
    if loaded is None:
        return None
    tower, preprocess, dim = loaded
    if cfg.pretrained.lower() == RANDOM_WEIGHTS:
        _random_weights_warning()
    log.info("model %s loaded on %s (%s; image tower ready in %s)", identity, device, where[1], where[0])
    return ClipModel(identity, preprocess, dim, None, None, device, where[1], tower, cfg)


def _build(cfg: ModelConfig) -> tuple[Any, Any, str, Any, Preprocess]:
    """open_clip, torch, the model's registered name, the model built in fp32 on ``cfg.device`` from its
    weights, and its preprocessing; raises :class:`ModelError` with the fix on failure."""
    if cfg.offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
    open_clip = clipimport.open_clip()
    torch = clipimport.torch()
    name = _resolve_name(open_clip, cfg.name)
    clipimport.prepare(open_clip, name)
    pretrained: str | None = cfg.pretrained
    if pretrained.lower() == RANDOM_WEIGHTS:
        _random_weights_warning()
        torch.manual_seed(_RANDOM_SEED)
        pretrained = None
    elif is_checkpoint_path(pretrained):
        pretrained = str(Path(pretrained).expanduser())
    else:
        _check_pretrained_tag(open_clip, name, pretrained, cfg)
        if not cfg.offline:
            _check_hub_reachable(open_clip, name, pretrained, cfg)
    try:
        device = torch.device(cfg.device)
        model = _create(open_clip, torch, name, pretrained, device, cfg)
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
    return open_clip, torch, name, model, preprocess


def _create(open_clip: Any, torch: Any, name: str, pretrained: str | None, device: Any,
            cfg: ModelConfig) -> Any:
    """open_clip's model: one whose weights all come from a checkpoint is built without drawing random
    ones first (:mod:`tagwatch.skipinit`), unless a weight was then left unreplaced: built again with
    them.  A big_vision ``.npz``/``.npy`` file is copied in weight by weight, not as a strict state
    dict: built with them."""
    def create(skip: bool) -> Any:
        with skipinit.draws_skipped(torch, skip):
            return open_clip.create_model(name, pretrained=pretrained, device=device,
                                          cache_dir=str(cfg.cache_dir), weights_only=True)

    skip = pretrained is not None and not pretrained.lower().endswith((".npz", ".npy"))
    model = create(skip)
    if skip:
        left = skipinit.unreplaced(model)
        if left:
            log.debug("model %s: %d weights not in the checkpoint (%s, …): built again with random draws",
                      name, len(left), left[0])
            model = create(False)
    return model


def load_text_side(cfg: ModelConfig, precision: str) -> tuple[Any, Any]:
    """The model for its text tower alone (its image tower already running from a ready tower, in
    ``precision``), and its tokenizer.  The image tower is dropped before any precision is applied:
    int8 quantises only the image tower (1-2 CPU-seconds for ViT-B-32, thrown away), so the text tower
    stays in fp32 as a full load leaves it; bf16 is the whole model's, text tower included."""
    open_clip, torch, name, model, _ = _build(cfg)
    model.visual = torch.nn.Identity()
    if precision == "bf16":
        model = model.to(torch.bfloat16)
    return model, open_clip.get_tokenizer(name)


def load_model(cfg: ModelConfig, *, ready: bool = True) -> ClipModel:
    """Build the model described by ``cfg``; raises :class:`ModelError` with the fix on failure.

    ``ready``: start from the image tower kept ready by an earlier load, if there is one, and keep
    this load's tower ready for the next (:mod:`tagwatch.towercache`)."""
    identity = model_identity(cfg)
    if ready:
        started = _from_ready_tower(cfg, identity)
        if started is not None:
            return started
    open_clip, torch, name, model, preprocess = _build(cfg)
    device = torch.device(cfg.device)
    parameters = sum(p.numel() for p in model.visual.parameters())  # before int8 packs them away
    precision, tower = _choose_precision(model, cfg, identity, str(device), preprocess)
    keeps = ready and isinstance(model, open_clip.CLIP | open_clip.CustomTextCLIP)  # encode_image is visual()
    from . import towercache

    onnx = None
    if keeps and precision == "int8":
        onnx = towercache.start_onnx(cfg, identity, str(device), model.visual, preprocess, parameters)
    model = _apply_precision(model, precision, tower)
    del tower
    if cfg.precision == "auto" or precision != "fp32":
        gc.collect()
        return_freed_memory()  # the fp32 tower a faster one replaced, auto's candidates not kept
    tokenizer = open_clip.get_tokenizer(name)
    dim = int(model.text_projection.shape[-1]) if getattr(model, "text_projection", None) is not None \
        else int(model.encode_text(tokenizer(["x"])).shape[-1])
    log.info("model %s loaded on %s (%s)", identity, device, precision)
    if keeps:
        towercache.save(cfg, identity, str(device), model.visual, preprocess, dim,
                        torch.bfloat16 if precision == "bf16" else torch.float32, parameters)
        if onnx is not None:
            towercache.keep_onnx(onnx, identity, model.visual, preprocess, dim)
    return ClipModel(identity, preprocess, dim, model, tokenizer, device, precision, _cfg=cfg)


def validate_config(cfg: ModelConfig) -> None:
    """Check the model name and pretrained tag or file, without loading any weights.  A model whose
    image tower an earlier load kept ready on this machine is known good (its identity names the model
    and tag): open_clip is not imported for it."""
    if not is_checkpoint_path(cfg.pretrained):  # (a checkpoint's identity hashes the whole file)
        from . import towercache

        torch = clipimport.torch()
        where = towercache.tower_file(cfg, model_identity(cfg), str(torch.device(cfg.device)))
        if where is not None and where[0].is_file():
            return
    open_clip = clipimport.open_clip()
    name = _resolve_name(open_clip, cfg.name)
    pretrained = cfg.pretrained
    if pretrained.lower() != RANDOM_WEIGHTS and not is_checkpoint_path(pretrained):
        _check_pretrained_tag(open_clip, name, pretrained, cfg)


def return_freed_memory() -> None:
    """Ask glibc to give freed heap pages back to the system, so the RSS really drops (after auto's
    candidate towers are freed here, and after the encoder child ends in :mod:`tagwatch.encoder`)."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc (macOS, musl): the allocator decides
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
