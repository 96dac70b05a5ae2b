"""A model load imports open_clip without TorchDynamo, timm, the Hugging Face hub's client and torchvision's
datasets, io and models, and torch without its meta kernels (until a load traces a tower to keep it), and
nothing either builds or runs changes.

Each load runs in a fresh interpreter, the way the encoder child loads a model (the pytest process
imported open_clip already, for the tiny checkpoint).  One child does what a running encoder may do in
turn, and the tests read its report: load the tiny model, encode, use what torchvision imported from
the stand-in, then load a model with a timm image tower (a config edit can ask that of a running child).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, TINY_CONFIG, noise_jpeg
from tagwatch import towercache
from tagwatch.config import ModelConfig
from tagwatch.imaging import prepare_pixels
from tagwatch.model import load_model

# The child's report (module-scoped, a model load in a fresh interpreter: 4-5 s) is made again on each
# pytest-xdist worker that runs one of the tests reading it: keep them on one worker (scripts/test:
# --dist loadgroup)
pytestmark = pytest.mark.xdist_group("clipimport")

TEXTS = ["a photo of a dog", "a beach"]

# argv: tiny config, its checkpoint, a photo, and (for the light child) a config with a timm tower and an
# empty folder for a Hugging Face cache.
_CHILD = f"""
import json, sys
import numpy as np
if len(sys.argv) == 4:
    import open_clip  # the plain import, as before tagwatch.clipimport
from tagwatch.config import ModelConfig
from tagwatch.imaging import prepare
from tagwatch.model import load_model
model = load_model(ModelConfig(name=sys.argv[1], pretrained=sys.argv[2]))
photo = np.stack([prepare(open(sys.argv[3], "rb").read(), model.preprocess)])
found = {{
    "image": model.encode_images(photo).tolist(),
    "texts": model.encode_texts({TEXTS!r}).tolist(),
    "imported": {{"dynamo": "torch._dynamo" in sys.modules, "timm": "timm" in sys.modules,
                 "meta kernels": "torch._meta_registrations" in sys.modules,
                 "hub client": any(n in sys.modules for n in ("huggingface_hub", "open_clip.push_to_hf_hub")),
                 "torchvision's own": any(n in sys.modules for n in ("torchvision.datasets", "torchvision.io",
                                                                      "torchvision.models"))}},
}}
if len(sys.argv) == 6:
    import torch
    from torchvision.ops import roi_align  # its import met the stand-in for TorchDynamo's utils
    pooled = roi_align(torch.ones(1, 1, 8, 8), [torch.tensor([[0.0, 0.0, 4.0, 4.0]])], output_size=2)
    found["pooled"] = pooled.flatten().tolist()
    found["stand_in_says"] = sys.modules["torchvision.ops.roi_align"].is_compile_supported("cpu")
    from torch._dynamo.utils import is_compile_supported
    found["real_says"] = is_compile_supported("cpu")
    try:  # reported, not raised: the other tests read this child's report too
        timm_tower = load_model(ModelConfig(name=sys.argv[4], pretrained="none"), ready=False)
        size = timm_tower.preprocess.size
        vectors = timm_tower.encode_images(np.zeros((2, 3, size, size), dtype=np.float32))
        found["timm"] = {{"shape": list(vectors.shape), "finite": bool(np.isfinite(vectors).all())}}
    except Exception as exc:
        found["timm"] = f"{{type(exc).__name__}}: {{exc}}"
    # a download of weights open_clip asks of the hub's client (deferred): here found in its cache
    import logging, os, open_clip
    from pathlib import Path
    os.environ["HF_HUB_OFFLINE"] = "1"  # read when the client is imported, at this call
    cache = Path(sys.argv[5])
    snapshot = cache / "models--tagwatch--shapes" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "open_clip_model.safetensors").write_bytes(Path(sys.argv[2]).read_bytes())
    (cache / "models--tagwatch--shapes" / "refs").mkdir()
    (cache / "models--tagwatch--shapes" / "refs" / "main").write_text("0" * 40)
    found["downloaded"] = open_clip.pretrained.download_pretrained_from_hf(
        "tagwatch/shapes", filename="open_clip_model.safetensors", cache_dir=str(cache))
    found["hub handlers"] = [type(h).__name__ for h in logging.getLogger("huggingface_hub").handlers]
print(json.dumps(found))
"""


def _run(script: str, *args: Path) -> tuple[dict, str]:
    """``script`` run in a fresh interpreter with ``args``: the JSON report it printed last, its stderr."""
    result = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True,
                            timeout=300, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO / "daemon")})
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1]), result.stderr


def _child(*args: Path) -> dict:
    return _run(_CHILD, *args)[0]


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return noise_jpeg(tmp_path_factory.mktemp("clipimport") / "photo.jpg", seed=3)


@pytest.fixture(scope="module")
def light(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path, photo: Path) -> dict:
    """What a child that loads through tagwatch alone reports."""
    timm_config = tmp_path_factory.mktemp("timm") / "timm-tower.json"
    timm_config.write_text(json.dumps({
        "embed_dim": 64,
        "vision_cfg": {"timm_model_name": "test_vit", "timm_model_pretrained": False, "timm_pool": "avg",
                       "timm_proj": "linear", "image_size": 64},
        "text_cfg": json.loads(TINY_CONFIG.read_text(encoding="utf-8"))["text_cfg"],
    }), encoding="utf-8")
    return _child(TINY_CONFIG, tiny_checkpoint, photo, timm_config, tmp_path_factory.mktemp("hub-cache"))


def test_a_load_skips_the_imports_our_models_never_use_and_encodes_as_a_plain_import_does(
        light: dict, tiny_checkpoint: Path, photo: Path) -> None:
    plain = _child(TINY_CONFIG, tiny_checkpoint, photo)
    assert light["imported"] == {"dynamo": False, "timm": False, "meta kernels": False, "hub client": False,
                                 "torchvision's own": False}
    assert plain["imported"] == {"dynamo": True, "timm": True, "meta kernels": True,  # a plain import's cost
                                 "hub client": True, "torchvision's own": True}
    np.testing.assert_array_equal(np.array(light["image"]), np.array(plain["image"]))
    np.testing.assert_array_equal(np.array(light["texts"]), np.array(plain["texts"]))


def test_a_timm_image_tower_still_loads_after_a_load_that_held_timm_back(light: dict) -> None:
    assert light["timm"] == {"shape": [2, 64], "finite": True}


def test_what_torchvision_imported_from_the_stand_in_answers_as_torchdynamo_does(light: dict) -> None:
    assert light["pooled"] == [1.0, 1.0, 1.0, 1.0]
    assert light["stand_in_says"] == light["real_says"]


def test_open_clips_download_reaches_the_hubs_client_it_imports_then_and_it_warns_through_the_log_only(
        light: dict) -> None:
    downloaded = Path(light["downloaded"])
    assert downloaded.name == "open_clip_model.safetensors" and downloaded.parent.name == "0" * 40
    assert light["hub handlers"] == []  # its stderr handler taken away: each warning one line (test_cli)


_TRANSFORMERS_CHILD = """
import json, logging, sys
from tagwatch import clipimport
open_clip = clipimport.open_clip()
found = {"before": "huggingface_hub" in sys.modules}
clipimport.prepare(open_clip, "nllb-clip-base")  # its text tower and tokenizer are transformers'
found["handlers"] = [type(h).__name__ for h in logging.getLogger("huggingface_hub").handlers]
found["after"] = "huggingface_hub.utils.logging" in sys.modules
print(json.dumps(found))
"""


def test_a_model_built_through_transformers_finds_the_hubs_client_imported_without_its_handler() -> None:
    """transformers (not installed here) would import the client with its stderr handler left on:
    each of its warnings then said twice in the daemon's log, as before 878d0dc."""
    assert _run(_TRANSFORMERS_CHILD)[0] == {"before": False, "handlers": [], "after": True}


# argv: tiny config, its checkpoint, a photo.  open_clip's version module is deferred as the hub's client
# is: `from .version import __version__` fails, as would a newer open_clip's import that used the client
# at its import (a class to subclass).
_FALLBACK_CHILD = """
import json, logging, sys
import numpy as np
from tagwatch import clipimport
from tagwatch.config import ModelConfig
from tagwatch.imaging import prepare
from tagwatch.model import load_model
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="%(name)s: %(message)s")
clipimport.HUB_CLIENTS = (*clipimport.HUB_CLIENTS, "open_clip.version")
model = load_model(ModelConfig(name=sys.argv[1], pretrained=sys.argv[2]))
photo = np.stack([prepare(open(sys.argv[3], "rb").read(), model.preprocess)])
print(json.dumps({"image": model.encode_images(photo).tolist(),
                  "hub client": "huggingface_hub" in sys.modules, "timm": "timm" in sys.modules}))
"""


def test_an_open_clip_whose_import_needs_the_hubs_client_is_imported_again_with_it(
        light: dict, tiny_checkpoint: Path, photo: Path) -> None:
    found, stderr = _run(_FALLBACK_CHILD, TINY_CONFIG, tiny_checkpoint, photo)
    said = ("tagwatch.clipimport: open_clip's import with huggingface_hub and open_clip.push_to_hf_hub and "
            "open_clip.version deferred failed (ImportError: cannot import name '__version__'")
    assert said in stderr, stderr[-3000:]
    assert found["hub client"] and not found["timm"]  # imported again, the hub's client with it
    np.testing.assert_array_equal(np.array(found["image"]), np.array(light["image"]))


# argv: tiny config, its checkpoint, the data folder holding its kept tower, photos' pixels (.npy), an
# empty data folder.
_READY_CHILD = f"""
import json, sys
from pathlib import Path
import numpy as np
from tagwatch import towercache
from tagwatch.config import ModelConfig
from tagwatch.model import load_model

def meta_kernels_work():
    import torch
    shapes_only = torch.empty(4, 8, device="meta")
    try:
        torch.cdist(shapes_only, shapes_only)  # a Python meta kernel
        return True
    except NotImplementedError:
        return False

model = load_model(ModelConfig(name=sys.argv[1], pretrained=sys.argv[2], precision="fp32",
                               precision_cache=Path(sys.argv[3]) / "precision.json"))
found = {{"image": model.encode_images(np.load(sys.argv[4])).tolist(),
         "open_clip": "open_clip" in sys.modules, "meta_before": meta_kernels_work()}}
found["texts"] = model.encode_texts({TEXTS!r}).tolist()  # the text side: open_clip, the model built
found["meta_after_texts"] = meta_kernels_work()
towercache.SAVE_FROM_PARAMS = 0  # the rule of a real model: this load traces its tower to keep it
load_model(ModelConfig(name=sys.argv[1], pretrained=sys.argv[2], precision="fp32",
                       precision_cache=Path(sys.argv[5]) / "precision.json"))
found["kept"] = [p.suffix for p in (Path(sys.argv[5]) / "image-towers").iterdir()]
found["meta_after_keeping"] = meta_kernels_work()
print(json.dumps(found))
"""


def test_torchs_meta_kernels_wait_for_a_load_that_traces_a_tower_to_keep_it(
        tmp_path: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(towercache, "SAVE_FROM_PARAMS", 0)  # the rule of a real model, on the test one
    state = tmp_path / "state"
    first = load_model(ModelConfig(name=str(TINY_CONFIG), pretrained=str(tiny_checkpoint), precision="fp32",
                                   precision_cache=state / "precision.json"))
    pixels = np.stack([prepare_pixels(noise_jpeg(tmp_path / f"{i}.jpg", seed=i).read_bytes(),
                                      first.preprocess) for i in range(3)])
    np.save(tmp_path / "pixels.npy", pixels)
    ready, _ = _run(_READY_CHILD, TINY_CONFIG, tiny_checkpoint, state, tmp_path / "pixels.npy",
                    tmp_path / "fresh")
    assert not ready["open_clip"]  # it started from the kept tower, torch alone imported
    assert not ready["meta_before"]  # ...without the meta kernels (a fifth of torch's import)
    np.testing.assert_array_equal(np.array(ready["image"]), first.encode_images(pixels))
    np.testing.assert_allclose(np.array(ready["texts"]), first.encode_texts(TEXTS), atol=1e-6)
    assert not ready["meta_after_texts"]  # the text side's load builds and runs: none needed
    assert ready["kept"] == [".pt"]  # the TorchScript tower (ONNX Runtime's form is made for int8 only)
    assert ready["meta_after_keeping"]  # traced with torch as a plain import leaves it
