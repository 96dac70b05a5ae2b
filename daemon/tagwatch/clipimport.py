"""torch and open_clip imported without what they pull in that tagwatch's models never run.

Every model load that does not start from a kept image tower (:mod:`tagwatch.towercache`) imports
open_clip: the first load on a machine, the text side (loaded on the first new prompt), models too
small to keep a tower (the test models).  On a 2-core Zen 1 EPYC that import cost 3.9-5.8 CPU-seconds
beside torch's own 4-5, most of it two imports that no CLIP tower of ours uses:

- TorchDynamo (``torch.compile``'s tracer, 2-3 s there): torchvision's ``ops.roi_align`` imports one
  function from ``torch._dynamo.utils`` at import time, which runs all of ``torch._dynamo``.  While
  open_clip imports, that module name stands for a small one whose function, if ever called, imports
  the real one and calls it; any other name asked of it imports the real module too.  It is taken out
  of ``sys.modules`` as soon as open_clip is imported, so any later import gets the real TorchDynamo.
- timm (1.5-2.5 s, and it imports TorchDynamo itself: ``torch.compiler.disable`` at import): open_clip
  imports it only for timm image towers, inside ``try/except ImportError``, so it is held back the
  way an environment without timm would be.  :func:`prepare` brings it back before a model whose
  config names a timm tower is built (reloading ``open_clip.timm_model``, whose globals the class
  reads at build time).

With both held back it is 1.1-1.6 s there (five runs each, in turns; docs/speed.md, "Start-up").
``tests/test_clipimport.py`` checks that neither module is imported by a load and that a timm tower
still loads; if a newer torchvision, timm or open_clip imports TorchDynamo some other way, those tests
say so, and loading still works (it only costs the seconds again).

Two more groups wait the same way, a seventh of what was left (0.41 of 2.34 CPU-seconds at the median
of ten runs each on the Xeon without AMX; docs/speed.md, "Start-up"):

- The Hugging Face hub's client (0.30): open_clip imports ``hf_hub_download`` by name from
  ``huggingface_hub`` and its upload functions from ``open_clip.push_to_hf_hub`` (the hub's HTTP stack),
  and calls them only to download or upload weights.  While it imports, those two names stand for
  modules whose every name is a function that imports the real module when called and calls its
  namesake.  A newer open_clip that uses one of them otherwise at its import (a class to subclass, a
  constant) fails that import; it is then imported again without these two, as before.  :func:`hub`
  is how tagwatch reaches the client itself; :func:`prepare` imports it before a model that reaches it
  through transformers.
- torchvision's ``datasets``, ``io`` and ``models`` (0.11): its package imports them; open_clip uses
  only ``transforms`` and ``ops``.  They stand for themselves as TorchDynamo's utils do.

A start from a kept TorchScript tower (bf16 where ``auto`` picks it) imports torch alone, and a plain
``import torch`` spends about a fifth of its time (0.26 of 1.24 CPU-seconds on an AMX Xeon) in
``torch._meta_registrations``: Python kernels for *meta* tensors (shapes without data, used by
``torch.compile``, ``torch.export`` and fake tensors), registered for the Meta dispatch key only, with
``torch._decomp`` and ``torch._refs`` behind them.  A tower running on real tensors never dispatches
there.  :func:`torch` imports torch with that module name standing for a small one (any name asked of
it imports the real one), taken out of ``sys.modules`` at once; any later import of it, whoever asks
(``torch._decomp`` does), registers the kernels.  :func:`open_clip` imports torch the same way: building,
quantising and running a model (a full load, the text side, a test model) never dispatch there either,
and those kernels cost a test model's load 0.6 CPU-seconds on average on the Xeon without AMX
(docs/speed.md, "Start-up").  A load that traces or exports the tower to keep it ready registers them first
(:func:`meta_kernels`, :mod:`tagwatch.towercache`): those run torch's compiler stack, which sees torch as
a plain import leaves it.  So does anything that imports TorchDynamo (the stand-in above when used,
timm brought back): without ``torch._prims`` imported first, its import fails on a circular import.
Tested in ``tests/test_clipimport.py``.

Imported only where the model runs (the encoder child), like :mod:`tagwatch.model`.
"""

from __future__ import annotations

import importlib
import logging
import sys
import types
from typing import Any

log = logging.getLogger(__name__)

DYNAMO_UTILS = "torch._dynamo.utils"
TIMM = "timm"
META_KERNELS = "torch._meta_registrations"
HUB = "huggingface_hub"
HUB_CLIENTS = (HUB, "open_clip.push_to_hf_hub")  # open_clip imports functions from them, calls none
UNUSED_TORCHVISION = ("torchvision.datasets", "torchvision.io", "torchvision.models")


class _Deferred(types.ModuleType):
    """Stands for a module (named as it) until a name is asked of it; then the real one answers."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # inspect.getmodule asks every module in sys.modules for __file__
            raise AttributeError(name)
        return getattr(_real(self), name)


class _DeferredCalls(_Deferred):
    """Stands for a module whose functions are imported by name and called later, if ever: each name
    asked is a function that imports the real module when called and calls its namesake there."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        stand_in = self

        def call(*args: Any, **kwargs: Any) -> Any:
            hub_client()  # the stand-ins are the client's: imported without its handler first
            return getattr(_real(stand_in), name)(*args, **kwargs)

        call.__name__ = call.__qualname__ = name
        return call


def _real(stand_in: types.ModuleType) -> types.ModuleType:
    """The module ``stand_in`` stands for, imported (out of ``sys.modules`` first if it is still there)."""
    if sys.modules.get(stand_in.__name__) is stand_in:
        del sys.modules[stand_in.__name__]
    if stand_in.__name__ == DYNAMO_UTILS:
        meta_kernels()  # torch's compiler stack fails to import without them (a circular import)
    return importlib.import_module(stand_in.__name__)


def _stand_in() -> types.ModuleType:
    module = _Deferred(DYNAMO_UTILS, "stands for TorchDynamo's utils until one is used")

    def is_compile_supported(device_type: Any) -> Any:  # what torchvision.ops.roi_align imports
        return _real(module).is_compile_supported(device_type)

    module.is_compile_supported = is_compile_supported  # type: ignore[attr-defined]
    return module


def torch() -> Any:
    """The ``torch`` module, imported (the first time) without registering its Python meta kernels."""
    if "torch" in sys.modules:
        return sys.modules["torch"]
    stand_in = _Deferred(META_KERNELS, "stands for torch's Python meta kernels until a full load")
    sys.modules[META_KERNELS] = stand_in
    try:
        import torch as module
    finally:
        if sys.modules.get(META_KERNELS) is stand_in:
            del sys.modules[META_KERNELS]
    return module


def meta_kernels() -> types.ModuleType:
    """``torch._meta_registrations``, imported (its kernels registered) if :func:`torch` left it out."""
    return importlib.import_module(META_KERNELS)  # also binds it in torch's namespace


def open_clip() -> Any:
    """The ``open_clip`` module, imported (the first time) without TorchDynamo, timm, the hub's client
    and torchvision's unused modules, after torch (:func:`torch`: without its meta kernels, if this
    imports it)."""
    if "open_clip" in sys.modules:
        return sys.modules["open_clip"]
    torch()
    try:
        module = _import_open_clip(calls_held=True)
    except Exception as exc:  # a newer open_clip using a deferred function's module at its import
        log.debug("open_clip's import with %s deferred failed (%s: %s); importing it again with them",
                  " and ".join(HUB_CLIENTS), type(exc).__name__, exc)
        for name in [name for name in sys.modules if name.partition(".")[0] == "open_clip"]:
            del sys.modules[name]
        module = _import_open_clip(calls_held=False)
    _through_root_only(HUB)  # where open_clip imported the hub's client
    return module


def _import_open_clip(calls_held: bool) -> Any:
    """``import open_clip`` with the modules above held back (``calls_held``: the hub's client too)."""
    held: dict[str, Any] = {}
    if "torch._dynamo" not in sys.modules and DYNAMO_UTILS not in sys.modules:
        held[DYNAMO_UTILS] = _stand_in()
    if TIMM not in sys.modules:
        held[TIMM] = None  # None in sys.modules: `import timm` raises ImportError
    if "torchvision" not in sys.modules:
        held.update((name, _Deferred(name, "stands for itself until used")) for name in UNUSED_TORCHVISION)
    if calls_held:
        held.update((name, _DeferredCalls(name, "stands for itself until a function of it is called"))
                    for name in HUB_CLIENTS if name not in sys.modules)
    sys.modules.update(held)
    try:
        import open_clip as module
    finally:
        for name, placed in held.items():
            if name in sys.modules and sys.modules[name] is placed:
                del sys.modules[name]
    return module


def hub(name: str) -> Any:
    """``from huggingface_hub import name``, the client imported by :func:`hub_client`."""
    hub_client()
    return getattr(__import__(HUB, fromlist=[name]), name)


def _through_root_only(name: str) -> None:
    """Take the stderr handler a library put on its logger ``name`` away: its records also reach the
    root logger, whose handler (in the encoder child, the one that relays them to the parent's log)
    writes them already, so each of its warnings came out twice, once as a stray line.  Where the
    root has no handler, Python's last resort still prints warnings and errors."""
    logger = logging.getLogger(name)
    if not logger.propagate:
        return
    for handler in list(logger.handlers):
        if type(handler) is logging.StreamHandler and handler.stream in (sys.stderr, sys.__stderr__):
            logger.removeHandler(handler)


def hub_client() -> None:
    """Import the hub's client now, its logger left without the stderr handler its import gives it
    (once, at the import of its logging module; later imports add none): before each use of it by
    tagwatch (:func:`hub`), by open_clip (a deferred function called) or by another library
    (transformers), which would import it with the handler left on."""
    importlib.import_module(f"{HUB}.utils.logging")  # what gives the handler
    _through_root_only(HUB)


def prepare(open_clip: Any, name: str) -> None:
    """Make ``open_clip`` able to build model ``name`` (registered): the hub's client imported first if
    transformers builds its text tower or tokenizer (multilingual models), timm brought back if its
    image tower is timm's and the import held timm back."""
    config = open_clip.get_model_config(name) or {}
    if {"hf_model_name", "hf_tokenizer_name"} & config.get("text_cfg", {}).keys():
        hub_client()
    vision = config.get("vision_cfg", {})
    if "timm_model_name" not in vision or open_clip.timm_model.timm is not None:
        return
    meta_kernels()  # timm imports TorchDynamo, which fails to import without them
    try:
        importlib.import_module(TIMM)
    except ImportError:  # not installed after all: open_clip says so when it builds the tower
        return
    importlib.reload(open_clip.timm_model)  # its TimmModel reads these module globals when built
    log.debug("timm imported for %s's image tower", name)
