"""A model built for a checkpoint, without first drawing the random weights the checkpoint replaces.

open_clip builds a model as torch modules do, every weight drawn at random (``torch.nn.init``'s
uniform, normal, Xavier and Kaiming draws), and only then copies the checkpoint over them: for
ViT-B-32-256 from a ``.safetensors`` file, 0.33-0.45 s without the draws against 1.29-1.88 s on the
2-core Xeon without AMX (2026-12-07), paid at every full load: a first start, and each time the
daemon's child loads the text tower for a tag-list edit.  The same idea as transformers'
``no_init_weights``: while :func:`draws_skipped` is open, those initialisers fill a floating-point
tensor with NaN instead (a fill, no random numbers), in ``torch.nn.init`` and wherever torch, open_clip
or timm imported one by name.

open_clip loads a full checkpoint with ``strict=True``, so every persistent weight is replaced; a
weight left NaN means some path (a format converted by hand, a weight set apart from the state dict)
did not replace it, and :func:`unreplaced` finds it: the caller then builds again with the draws, as
before.  Nothing here decides whether a checkpoint is loaded: that is :mod:`tagwatch.model`'s call.

Imported only where the model runs (the encoder child), with torch passed in.
"""

from __future__ import annotations

import contextlib
import itertools
import sys
import threading
import types
from collections.abc import Iterator
from typing import Any

# torch.nn.init's random draws: the cost.  The constant fills (zeros_, ones_, constant_, eye_, dirac_)
# cost next to nothing and are left as they are.
DRAWS = ("uniform_", "normal_", "trunc_normal_", "xavier_uniform_", "xavier_normal_",
         "kaiming_uniform_", "kaiming_normal_", "orthogonal_", "sparse_")

# One build at a time in a process: the initialisers are torch's module attributes, so a second
# build on another thread (random weights, which keep their draws) must not run inside the window.
_BUILDING = threading.Lock()


@contextlib.contextmanager
def draws_skipped(torch: Any, skip: bool = True) -> Iterator[None]:
    """Build inside this: with ``skip``, torch.nn.init's random draws fill NaN instead.  Without it,
    only the lock is held, so a build with its draws never overlaps a window of another."""
    with _BUILDING:
        if not skip:
            yield
            return
        originals = {id(getattr(torch.nn.init, name)) for name in DRAWS if hasattr(torch.nn.init, name)}
        # Where each is bound: torch.nn.init itself, and the modules that imported one by name
        # (torch.nn.MultiheadAttention's xavier_uniform_, 0.19 CPU-s of ViT-B-32-256's draws)
        bound = [(module, name, value) for module in _holders()
                 for name, value in list(vars(module).items())
                 if id(value) in originals]

        def standing_in(original: Any) -> Any:
            def fill(tensor: Any, *args: Any, **kwargs: Any) -> Any:
                if not tensor.is_floating_point():  # NaN has no integer form: drawn as before
                    return original(tensor, *args, **kwargs)
                with torch.no_grad():
                    return tensor.fill_(float("nan"))
            return fill

        try:
            for module, name, original in bound:
                setattr(module, name, standing_in(original))
            yield
        finally:
            for module, name, original in bound:
                setattr(module, name, original)


def _holders() -> list[types.ModuleType]:
    """The loaded modules of torch.nn (torch.nn.init among them), open_clip and timm: what builds
    the towers."""
    prefixes = ("torch.nn.", "open_clip.", "timm.")
    return [module for name, module in list(sys.modules.items())
            if isinstance(module, types.ModuleType) and name.startswith(prefixes)]


def unreplaced(model: Any) -> list[str]:
    """The names of ``model``'s floating-point weights and buffers that hold a NaN (none after a
    checkpoint replaced every drawn weight).  A NaN anywhere makes a tensor's sum NaN: one pass, a
    fifth of ``isnan().any()``'s CPU (0.06 against 0.32 s for ViT-B-32-256); a weight that held both
    infinities would read as NaN too, and cost only a build with its draws."""
    named = itertools.chain(model.named_parameters(), model.named_buffers())
    return [name for name, tensor in named if tensor.is_floating_point() and bool(tensor.sum().isnan())]
