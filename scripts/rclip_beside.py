"""rclip on the same photos, same machine and same weights, for bench.py's ``--rclip``.

rclip (https://github.com/yurijmikhalevich/rclip) indexes with ONNX Runtime and fetches its model
files from the Hugging Face hub, which this machine cannot reach.  So the weights bench.py uses
(ViT-B-32-256, random) are exported to the two ONNX files rclip loads, ``visual.onnx`` and
``textual.onnx`` (input ``input``, output ``output``, fp32, dynamic batch), and laid out with
open_clip's BPE vocabulary where rclip looks for them (``$RCLIP_DATADIR``); rclip then finds nothing
to download.  Install rclip in its own virtual environment (``python3 -m venv /tmp/rclip &&
/tmp/rclip/bin/pip install rclip``) and pass ``--rclip /tmp/rclip/bin/rclip``; exporting needs the
``onnx`` package beside bench.py's torch (``.venv/bin/pip install onnx``).

A run is what a user does first: ``rclip -f "a photo"`` in the photo folder with an empty database,
which indexes every photo (process start included) and then searches; it is timed to exit.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import open_clip

# Where rclip 3.x looks for its model inside $RCLIP_DATADIR (rclip/model_download.py)
MODEL_SUBDIR = "ViT-B-32-256-datacomp_s34b_b86k"
TOKENIZER = "tokenizer/bpe_simple_vocab_16e6.txt.gz"
ONNX_FILES = ("visual.onnx", "textual.onnx")


class RclipError(RuntimeError):
    """rclip could not be run or measured; the message says why."""


def rclip_version(rclip: Path) -> str:
    done = subprocess.run([str(rclip), "--version"], capture_output=True, text=True)
    if done.returncode != 0:
        raise RclipError(f"{rclip} --version exited {done.returncode}: {done.stderr.strip()[-300:]}")
    return done.stdout.strip()


def export_model(model: Any, folder: Path) -> Path:
    """``model``'s two towers as rclip's ONNX files in ``folder`` (made once, then reused)."""
    import torch

    target = folder / MODEL_SUBDIR
    if all((target / name).is_file() for name in ONNX_FILES):
        return folder
    try:
        import onnx  # noqa: F401  (torch's exporter needs it)
    except ImportError:
        raise RclipError("exporting the model for rclip needs the onnx package: "
                         ".venv/bin/pip install onnx") from None
    target.mkdir(parents=True, exist_ok=True)
    towers = {"visual.onnx": (model.encode_image, torch.zeros(2, 3, 256, 256)),
              "textual.onnx": (model.encode_text, torch.zeros(2, 77, dtype=torch.long))}

    class Tower(torch.nn.Module):
        def __init__(self, encode: Any) -> None:
            super().__init__()
            self.model, self.encode = model, encode

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.encode(x)

    for name, (encode, example) in towers.items():
        partial = target / (name + ".part")
        torch.onnx.export(Tower(encode).eval(), (example,), str(partial), input_names=["input"],
                          output_names=["output"], dynamic_axes={"input": {0: "n"}, "output": {0: "n"}},
                          opset_version=17, dynamo=False)
        partial.rename(target / name)
    vocabulary = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    (folder / TOKENIZER).parent.mkdir(exist_ok=True)
    shutil.copyfile(vocabulary, folder / TOKENIZER)
    return folder


def index_with_rclip(rclip: Path, photos_folder: Path, count: int, model_folder: Path, run: Path) -> float:
    """Seconds for one cold ``rclip -f "a photo"`` over ``photos_folder`` (fresh database)."""
    datadir = run / "rclip-data"
    (datadir / MODEL_SUBDIR).mkdir(parents=True)
    (datadir / TOKENIZER).parent.mkdir()
    for name in ONNX_FILES:
        (datadir / MODEL_SUBDIR / name).symlink_to(model_folder / MODEL_SUBDIR / name)
    (datadir / TOKENIZER).symlink_to(model_folder / TOKENIZER)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(run), "RCLIP_DATADIR": str(datadir), "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    done = subprocess.run([str(rclip), "-f", "-t", "1", "a photo"], cwd=photos_folder, env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RclipError(f"rclip exited {done.returncode}: {done.stderr.strip()[-1000:]}")
    with contextlib.closing(sqlite3.connect(datadir / "db.sqlite3")) as db:
        indexed = db.execute("SELECT COUNT(*) FROM images WHERE deleted IS NOT 1").fetchone()[0]
    if indexed != count:
        raise RclipError(f"rclip indexed {indexed} of {count} photos")
    return seconds
