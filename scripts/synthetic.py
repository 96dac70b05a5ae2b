"""Synthetic photos with known contents: one coloured shape on a dull background.

The test model (``scripts/train_test_model.py``) learns from these, the semantic tests tag held-out
ones, and the evaluation script builds its datasets from them, so all three agree on what a "red
circle" looks like.  A photo is a pure function of (colour, shape, seed, size): the same arguments
give the same pixels on every machine (numpy's PCG64 and Pillow's drawing are both portable).

Backgrounds are kept desaturated (tinted greys, gradients, soft blotches) so the one saturated object
is the only thing a colour word can mean; shapes turn by at most :data:`MAX_TURN` degrees, so a
"horizontal bar" never passes for a "vertical bar".
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parent.parent

# Saturated base colours, jittered per photo; the names are the tag keywords.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "orange": (245, 135, 20),
    "yellow": (235, 215, 30),
    "green": (40, 165, 55),
    "blue": (35, 75, 215),
    "purple": (135, 45, 175),
}
COLOURS: tuple[str, ...] = tuple(PALETTE)
# "horizontal bar" / "vertical bar" differ only by orientation: they prove photos are tagged upright.
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "horizontal bar", "vertical bar")
MAX_TURN = 10.0  # degrees a shape may turn either way
HELD_OUT_SEED = 9  # photos from this seed are never trained on: tests and evaluation use them


@dataclass(frozen=True)
class Item:
    """What a synthetic photo shows: ``colour``/``shape`` are None for a photo of background only."""

    colour: str | None
    shape: str | None
    seed: int

    @property
    def name(self) -> str:
        """A file stem that names the contents, e.g. ``red-horizontal_bar-1000003``."""
        colour, shape = self.colour or "none", (self.shape or "none").replace(" ", "_")
        return f"{colour}-{shape}-{self.seed}"


def items(seed: int, per_pair: int = 1, blanks: int = 0) -> list[Item]:
    """Every colour x shape pair ``per_pair`` times, then ``blanks`` empty photos; seeds from ``seed``."""
    pairs = [(c, s) for _ in range(per_pair) for c in COLOURS for s in SHAPES]
    pairs += [(None, None)] * blanks
    return [Item(c, s, seed * 1_000_000 + i) for i, (c, s) in enumerate(pairs)]


def held_out(per_pair: int, blanks: int = 0) -> list[tuple[Item, tuple[int, int]]]:
    """Photos never trained on, each with its size: landscape and portrait in turn (320 x 240)."""
    return [(item, (320, 240) if n % 2 == 0 else (240, 320))
            for n, item in enumerate(items(HELD_OUT_SEED, per_pair, blanks))]


def make_photo(colour: str | None, shape: str | None, seed: int,
               size: tuple[int, int] = (320, 240)) -> Image.Image:
    """An RGB photo (width, height) of one ``colour`` ``shape`` near the middle, or background only.

    The shape lies inside the central square, which is what CLIP's resize-and-centre-crop keeps of
    a landscape or portrait photo.  Sensor-like noise is included; JPEG artefacts are not (save it as
    a JPEG, or see :func:`jpeg_roundtrip`).
    """
    if (colour is None) != (shape is None):
        raise ValueError("colour and shape are both given or both None")
    if colour is not None and colour not in PALETTE:
        raise ValueError(f"unknown colour {colour!r} (known: {', '.join(COLOURS)})")
    if shape is not None and shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r} (known: {', '.join(SHAPES)})")
    rng = np.random.default_rng(seed)
    width, height = size
    pixels = _background(rng, width, height)
    if colour is not None and shape is not None:
        mask = _shape_mask(rng, shape, width, height)
        paint = np.asarray(PALETTE[colour]) * rng.uniform(0.8, 1.1) + rng.uniform(-15, 15, 3)
        paint = paint.astype(np.float32)
        shade = _gradient(rng, width, height) * np.float32(rng.uniform(0, 25))  # light across the object
        pixels += (paint + shade[..., None] - pixels) * mask[..., None]
    pixels += rng.standard_normal(pixels.shape, np.float32) * np.float32(rng.uniform(1.0, 9.0)) + 0.5
    return Image.fromarray(np.clip(pixels, 0, 255, out=pixels).astype(np.uint8), "RGB")


def jpeg_roundtrip(image: Image.Image, quality: int) -> Image.Image:
    """``image`` as it reads back from a JPEG of ``quality``: the artefacts a camera file has."""
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def _gradient(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A linear ramp from -1 to 1 in a random direction, (height, width) float32."""
    angle = rng.uniform(0, 2 * math.pi)
    xs = (np.arange(width, dtype=np.float32) / max(width - 1, 1) - 0.5) * np.float32(math.cos(angle) / 0.75)
    ys = (np.arange(height, dtype=np.float32) / max(height - 1, 1) - 0.5) * np.float32(math.sin(angle) / 0.75)
    return ys[:, None] + xs[None, :]


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A dull, nearly grey backdrop: flat, a gradient or soft blotches, with a faint tint."""
    grey = rng.uniform(45, 215)
    tint = rng.uniform(-10, 10, 3)
    base = np.full((height, width, 3), grey, np.float32) + tint.astype(np.float32)
    kind = rng.integers(0, 3)
    if kind == 1:
        base += (_gradient(rng, width, height) * np.float32(rng.uniform(15, 45)))[..., None]
    elif kind == 2:
        small = rng.uniform(-35, 35, (int(rng.integers(3, 7)), int(rng.integers(3, 7)), 1))
        blotches = Image.fromarray(np.repeat(small + 128, 3, axis=2).astype(np.uint8)).resize(
            (width, height), Image.Resampling.BICUBIC)
        base += np.asarray(blotches, np.float32) - 128
    return base


def _shape_mask(rng: np.random.Generator, shape: str, width: int, height: int) -> np.ndarray:
    """Coverage in [0, 1] of ``shape``, (height, width): drawn larger, then reduced, for smooth edges."""
    side = min(width, height)
    cx = width / 2 + rng.uniform(-0.1, 0.1) * side
    cy = height / 2 + rng.uniform(-0.1, 0.1) * side
    r = rng.uniform(0.17, 0.29) * side  # the shape's rough radius
    return _mask_at(rng, shape, width, height, cx, cy, r)


def _mask_at(rng: np.random.Generator, shape: str, width: int, height: int,
             cx: float, cy: float, r: float) -> np.ndarray:
    """Coverage of ``shape`` centred on (cx, cy) with rough radius ``r`` (pixels), after a small turn."""
    side = min(width, height)
    turn = math.radians(rng.uniform(-MAX_TURN, MAX_TURN))
    scale = max(1, min(4, math.ceil(320 / side)))  # drawn large enough that reducing smooths the edges
    canvas = Image.new("L", (width * scale, height * scale), 0)
    draw = ImageDraw.Draw(canvas)
    if shape == "circle":
        rx, ry = r * rng.uniform(0.95, 1.05) * scale, r * rng.uniform(0.95, 1.05) * scale
        draw.ellipse((cx * scale - rx, cy * scale - ry, cx * scale + rx, cy * scale + ry), fill=255)
    else:
        points = _outline(shape, r, rng)
        cos, sin = math.cos(turn), math.sin(turn)
        draw.polygon([((cx + x * cos - y * sin) * scale, (cy + x * sin + y * cos) * scale)
                      for x, y in points], fill=255)
    reduced = canvas.resize((width, height), Image.Resampling.BOX)
    return np.asarray(reduced, np.float32) / 255.0


def _outline(shape: str, r: float, rng: np.random.Generator) -> list[tuple[float, float]]:
    """Polygon vertices around (0, 0), y pointing down, before the small turn."""
    if shape == "square":
        h = r * 0.85
        return [(-h, -h), (h, -h), (h, h), (-h, h)]
    if shape == "triangle":  # equilateral, pointing up
        return [(r * 1.1 * math.cos(a), r * 1.1 * math.sin(a) + r * 0.2)
                for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
    if shape == "star":
        outer, inner = r * 1.15, r * 1.15 * 0.45
        return [((outer if i % 2 == 0 else inner) * math.cos(-math.pi / 2 + i * math.pi / 5),
                 (outer if i % 2 == 0 else inner) * math.sin(-math.pi / 2 + i * math.pi / 5))
                for i in range(10)]
    long, thick = r * rng.uniform(1.25, 1.45), r * rng.uniform(0.22, 0.32)
    if shape == "horizontal bar":
        return [(-long, -thick), (long, -thick), (long, thick), (-long, thick)]
    if shape == "vertical bar":
        return [(-thick, -long), (thick, -long), (thick, long), (-thick, long)]
    raise ValueError(f"unknown shape {shape!r}")


def photos(listing: list[Item], size: tuple[int, int] = (320, 240)) -> Iterator[tuple[Item, Image.Image]]:
    """Each item with its photo."""
    for item in listing:
        yield item, make_photo(item.colour, item.shape, item.seed, size)


# -- scenes of two shapes, for the test captioner ----------------------------------------------------

RELATIONS: tuple[str, ...] = ("above", "to the left of")  # the first shape named is on top / on the left
# How far each shape reaches from its centre, in units of its rough radius (a bar's half length)
_REACH = {"circle": 1.05, "square": 1.25, "triangle": 1.35, "star": 1.2, "horizontal bar": 1.5,
          "vertical bar": 1.5}


@dataclass(frozen=True)
class Scene:
    """A photo of one or two coloured shapes: ``second`` and ``relation`` are None for a single shape,
    ``first`` is None for background only.  ``first`` is above or left of ``second``."""

    first: tuple[str, str] | None
    second: tuple[str, str] | None
    relation: str | None
    seed: int

    @property
    def objects(self) -> tuple[tuple[str, str], ...]:
        return tuple(o for o in (self.first, self.second) if o is not None)

    @property
    def caption(self) -> str:
        """What the captioner should say: "a red circle above a blue square", "a green star", ""."""
        if self.first is None:
            return ""
        words = _article(" ".join(self.first))
        return f"{words} {self.relation} {_article(' '.join(self.second))}" if self.second else words

    @property
    def name(self) -> str:
        """A file stem naming the contents, e.g. ``red-circle_above_blue-square-9000003``."""
        def one(o: tuple[str, str] | None) -> str:
            return "none" if o is None else f"{o[0]}-{o[1].replace(' ', '_')}"
        if self.second is None:
            return f"{one(self.first)}-{self.seed}"
        relation = (self.relation or "").replace(" ", "_")
        return f"{one(self.first)}_{relation}_{one(self.second)}-{self.seed}"


def _article(words: str) -> str:
    return f"{'an' if words[0] in 'aeiou' else 'a'} {words}"


def scenes(seed: int, count: int, singles: float = 0.3, blanks: float = 0.0) -> list[Scene]:
    """``count`` random scenes (a share ``singles`` of one shape, ``blanks`` of background only); two
    shapes of a scene never have the same colour, so each colour word names one object."""
    rng = np.random.default_rng([seed, 2])
    pairs = [(c, s) for c in COLOURS for s in SHAPES]
    out = []
    for n in range(count):
        draw = rng.random()
        first = pairs[int(rng.integers(len(pairs)))]
        second = relation = None
        if draw < blanks:
            first = None
        elif draw >= blanks + singles:
            others = [p for p in pairs if p[0] != first[0]]
            second = others[int(rng.integers(len(others)))]
            relation = RELATIONS[int(rng.integers(len(RELATIONS)))]
        out.append(Scene(first, second, relation, seed * 1_000_000 + n))
    return out


def make_scene(scene: Scene, size: tuple[int, int] = (320, 240),
               masks: list[np.ndarray] | None = None) -> Image.Image:
    """An RGB photo of ``scene``: shapes smaller than :func:`make_photo`'s, inside the central square,
    the first above (or left of) the second with a clear gap between them.  ``masks`` receives each
    object's coverage, (height, width) in [0, 1], in the order of ``scene.objects``."""
    rng = np.random.default_rng(scene.seed)
    width, height = size
    side = min(width, height)
    pixels = _background(rng, width, height)
    objects = scene.objects
    radius: list[float] = []
    offsets: list[tuple[float, float]] = []
    if len(objects) == 1:
        radius = [rng.uniform(0.13, 0.22)]
        offsets = [(rng.uniform(-0.12, 0.12), rng.uniform(-0.12, 0.12))]
    elif objects:
        radius = [rng.uniform(0.09, 0.14), rng.uniform(0.09, 0.14)]
        reach = [radius[i] * _REACH[o[1]] for i, o in enumerate(objects)]
        half = max(rng.uniform(0.17, 0.27), (reach[0] + reach[1]) / 2 + 0.04)  # half the centres' distance
        along = rng.uniform(-0.48 + reach[0] + half, 0.48 - reach[1] - half) if (
            0.48 - reach[1] - half > -0.48 + reach[0] + half) else 0.0
        across = [rng.uniform(-0.46 + reach[i], 0.46 - reach[i]) * 0.4 for i in range(2)]
        pos = [(-half + along, across[0]), (half + along, across[1])]
        offsets = [(b, a) for a, b in pos] if scene.relation == "above" else list(pos)
    for (colour, shape), r, (dx, dy) in zip(objects, radius, offsets, strict=True):
        mask = _mask_at(rng, shape, width, height, width / 2 + dx * side, height / 2 + dy * side, r * side)
        if masks is not None:
            masks.append(mask)
        paint = np.asarray(PALETTE[colour]) * rng.uniform(0.8, 1.1) + rng.uniform(-15, 15, 3)
        shade = _gradient(rng, width, height) * np.float32(rng.uniform(0, 25))
        pixels += (paint.astype(np.float32) + shade[..., None] - pixels) * mask[..., None]
    pixels += rng.standard_normal(pixels.shape, np.float32) * np.float32(rng.uniform(1.0, 9.0)) + 0.5
    return Image.fromarray(np.clip(pixels, 0, 255, out=pixels).astype(np.uint8), "RGB")


# -- datasets on disk, for scripts/evaluate.py -------------------------------------------------------

def write_classes(out: Path, per_class: int) -> int:
    """ImageNet-layout folders ``red-circle/`` … of held-out JPEGs, and ``mapping.txt`` naming each
    folder's tag (``red-circle red circle``).  Returns the number of photos."""
    mapping = []
    for n, (item, size) in enumerate(held_out(per_class)):
        folder = f"{item.colour}-{(item.shape or '').replace(' ', '_')}"
        (out / folder).mkdir(parents=True, exist_ok=True)
        make_photo(item.colour, item.shape, item.seed, size).save(out / folder / f"{n:05d}.jpg", quality=90)
        mapping.append(f"{folder} {item.colour} {item.shape}")
    (out / "mapping.txt").write_text("\n".join(dict.fromkeys(mapping)) + "\n", encoding="utf-8")
    return n + 1


def write_labels(out: Path, per_pair: int, blanks: int) -> int:
    """Held-out JPEGs in ``out/photos/`` with ``labels.csv`` (colour;shape, empty for a blank) and
    ``tags.txt``, the twelve colour and shape tags.  Returns the number of photos."""
    (out / "photos").mkdir(parents=True, exist_ok=True)
    rows = ["file,labels"]
    listing = held_out(per_pair, blanks)
    for item, size in listing:
        name = f"photos/{item.name}.jpg"
        make_photo(item.colour, item.shape, item.seed, size).save(out / name, quality=90)
        rows.append(f"{name},{item.colour};{item.shape}" if item.colour else f"{name},")
    (out / "labels.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (out / "tags.txt").write_text("\n".join(COLOURS + SHAPES) + "\n", encoding="utf-8")
    return len(listing)


def write_config(out: Path, threshold: float | None) -> Path:
    """A tagwatch config that uses the committed test model, the dataset's tag list and a database
    inside ``out``, so evaluating it touches nothing of the user's."""
    data = REPO / "tests" / "data"
    train = json.loads((data / "shapes-clip.train.json").read_text(encoding="utf-8"))
    lines = [
        "watch = []",
        f"tags = {json.dumps(str((out / 'labels' / 'tags.txt').absolute()))}",
        f"database = {json.dumps(str((out / 'evaluate.db').absolute()))}",
        "[model]",
        f"name = {json.dumps(str(data / 'shapes-clip.json'))}",
        f"pretrained = {json.dumps(str(data / 'shapes-clip.safetensors'))}",
        "[tagging]",
        f"threshold = {train['threshold'] if threshold is None else threshold}",
        "top_k = 5",
        f"templates = [{json.dumps(train['template'])}]",
    ]
    path = out / "config.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write synthetic evaluation datasets of held-out photos "
                                     "(never trained on) and a config that evaluates them with the "
                                     "test model.")
    parser.add_argument("out", type=Path, help="folder to create (classes/, labels/, config.toml)")
    parser.add_argument("--per-class", type=int, default=5, help="photos per colour-shape class (default 5)")
    parser.add_argument("--blanks", type=int, default=24, help="photos of background only (default 24)")
    parser.add_argument("--threshold", type=float, help="the config's threshold (default: the model's)")
    args = parser.parse_args(argv)
    if args.per_class < 1 or args.blanks < 0:
        parser.error("--per-class must be at least 1 and --blanks not negative")
    classes = write_classes(args.out / "classes", args.per_class)
    labels = write_labels(args.out / "labels", args.per_class, args.blanks)
    config = write_config(args.out, args.threshold)
    print(f"{classes} photos in {len(COLOURS) * len(SHAPES)} class folders under {args.out / 'classes'}; "
          f"{labels} labelled photos in {args.out / 'labels'}; config {config}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
