"""A small library the test model knows, scanned once per test worker: three photos of a coloured
shape, a tag list of its colours and shapes and a few words it does not know.

After the first scan every photo's vector and every prompt's are in the lab's database, and a copy
of a photo has the same content key, so a test that runs tagwatch on them (or on copies) with the
lab's config starts no model: each command costs about half a second.
"""

from __future__ import annotations

import fcntl
import os
import pty
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

import synthetic
from conftest import SHAPES_CHECKPOINT, SHAPES_CONFIG, tagwatch, write_config

OTHER = ["pet", "dog", "golden retriever", "car"]  # words the model does not know: 16 tags in all
# The model scores a photo's true colour and shape 0.59-0.70, the other known words below 0.1, and
# the words it does not know up to 0.27: 0.45 keeps a wide margin on either side.
THRESHOLD = 0.45
TAGS = [*synthetic.COLOURS, *synthetic.SHAPES, *OTHER]
PHOTOS = {"red-circle.jpg": ("red", "circle"), "blue-square.jpg": ("blue", "square"),
          "green-triangle.jpg": ("green", "triangle")}


def dry_tags(out: str) -> dict[str, list[str]]:
    """A dry run's output, ``photo.jpg<TAB>red (0.621), circle (0.650)`` → {"photo.jpg": ["red", ...]}"""
    found = {}
    for line in out.splitlines():
        path, _, tags = line.partition("\t")
        found[Path(path).name] = [] if tags == "(no tag above threshold)" else [
            t.rsplit(" (", 1)[0] for t in tags.split(", ")]
    return found


class Lab:
    """The lab's folders and config; ``first_run`` is the first dry-run scan, run on a terminal."""

    def __init__(self, root: Path) -> None:
        self.config = write_config(root / "conf", SHAPES_CHECKPOINT, model=SHAPES_CONFIG, tags=TAGS,
                                   threshold=THRESHOLD, top_k=10)
        self.library = root / "library"
        self.library.mkdir()
        for i, (name, (colour, shape)) in enumerate(PHOTOS.items()):
            synthetic.make_photo(colour, shape, seed=900 + i).save(self.library / name, quality=92)
        self.shapes = root / "shapes.txt"  # another tag list: a subset, so its prompts are cached
        self.shapes.write_text("\n".join(synthetic.SHAPES) + "\n", encoding="utf-8")
        self.first_run = on_a_terminal("scan", "--dry-run", str(self.library), "--config", str(self.config))
        assert self.first_run[0] == 0, self.first_run[2]
        assert {name: sorted(tags) for name, tags in dry_tags(self.first_run[1]).items()} == {
            name: sorted(truth) for name, truth in PHOTOS.items()}  # the model sees what is there

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = tagwatch(*args, "--config", str(self.config))
        assert result.returncode == 0, result.stderr
        return result

    def dry(self, *args: str) -> dict[str, list[str]]:
        """photo name → the keywords a dry run prints for it."""
        return dry_tags(self.run("scan", "--dry-run", str(self.library), *args).stdout)

    def copy(self, folder: Path) -> dict[str, Path]:
        folder.mkdir()
        return {name: Path(shutil.copy(self.library / name, folder / name)) for name in PHOTOS}


def on_a_terminal(*args: str, rows: int = 30, columns: int = 100) -> tuple[int, str, str]:
    """Run tagwatch with its stderr on a pseudo-terminal, as in a person's shell; (status, stdout,
    what the terminal showed). ``rows=0, columns=0``: a terminal that reports no size (``script``)."""
    main, side = pty.openpty()
    fcntl.ioctl(side, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen([sys.executable, "-m", "tagwatch", *args], stdin=subprocess.DEVNULL,
                                stdout=out, stderr=side)
        os.close(side)
        chunks = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if not select.select([main], [], [], 1.0)[0]:
                continue
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: the child closed its side
                break
            if not chunk:
                break
            chunks.append(chunk)
        os.close(main)
        status = proc.wait(timeout=60)
        out.seek(0)
        return status, out.read().decode(), b"".join(chunks).decode(errors="replace")
