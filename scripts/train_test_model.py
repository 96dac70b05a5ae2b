#!/usr/bin/env python3
"""Train the test model: a tiny open_clip CLIP that really knows six colours and six shapes.

    PYTHONPATH=daemon .venv/bin/python scripts/train_test_model.py            # writes tests/data/
    PYTHONPATH=daemon .venv/bin/python scripts/train_test_model.py --out /tmp/m --seed 2 --steps 300

Pretrained CLIP weights cannot be downloaded here, and random weights only prove plumbing: a suite on
them passes with swapped colour channels, a wrong normalisation or a broken prompt template.  This
model makes tags checkably *right*.  It is open_clip's own ``CLIP`` class built from a custom config
(``tests/data/shapes-clip.json``), saved as float16 safetensors, and it loads through the same
``[model] name / pretrained`` path as a user's own checkpoint:

* image tower: CLIP's ModifiedResNet, width 8, one block per stage, 64 px input (343 k parameters).
  A ViT of similar cost (3 layers, 64 wide, 8 px patches) learned colours at once but after 1000
  steps still told shapes apart only half the time, even the two bars; convolutions see edges and
  corners from the first step, and the ResNet separates all shapes after ~400;
* text tower: 2 layers, 64 wide, and open_clip's real BPE tokenizer (what a custom config gets) with
  a 16-token context.  Its 49408 x 64 token embedding is 6.3 MB of the 7.2 MB file, hence the width.

**Data.**  Photos from ``synthetic.py`` (one of 6 colours x 6 shapes on a dull background, random
size, position, small turn, noise, then a JPEG round trip at a random quality), reduced by tagwatch's
own preprocessing (:func:`tagwatch.imaging.to_array`), so training sees exactly what inference sees.
One photo in ten is background only, fitting no caption.  The captions are every full and partial
description in two templates: "a photo of a red circle.", "a photo of a red.", "a photo of a
circle.", "a red circle." ...

**Loss: sigmoid, not softmax.**  tagwatch scores one image against each tag's prompt on its own and
keeps every tag above a threshold: a multi-label question.  CLIP's softmax loss asks instead which
caption of a batch is *the* one, and punishes a partial caption ("a photo of a red.") for matching
the other red photos of the batch, which it rightly does.  So each step scores every training image
of the batch against every caption (48 per template: few enough to take them all, no in-batch
sampling) and applies a binary cross-entropy per pair against "the caption is consistent with the
photo" (SigLIP's loss, with a consistency matrix in place of its identity): every consistent pair
is pushed above one boundary, every other pair below it.  The boundary is -bias/scale in cosine
terms, which is why a single tagwatch ``threshold`` works for colour and shape tags alike.

**Threshold.**  After training the checkpoint is loaded back the user's way (``load_model``) and the
held-out photos (``synthetic.HELD_OUT_SEED``, never trained on) are tagged from JPEG bytes with the
default template.  The recommended threshold is the middle of the widest range of cosines that gives
the fewest wrong images; the script prints it beside the true-colour-and-shape and wrong-tag rates,
and writes all figures to ``<out>/shapes-clip.train.json``.  For the committed model it agrees with
the loss's own boundary: 0.36 recommended, -bias/scale = 0.357.

Deterministic from ``--seed``: photos, initial weights and batch order all come from it, and torch
runs on one thread with deterministic algorithms.  Floating-point sums may still differ in the last bit
on another CPU; the tags, whose cosines sit far from the threshold, do not (``tests/test_semantic.py``
retrains and compares).

One thread and AdamW's fused update, because the suite retrains beside other tests: a step of this
model took 174 ms of CPU (132 of wall) on two threads with the per-parameter update, 102 ms (102) on
one thread with the fused one (a 2-core Xeon, nothing else running); the whole retraining 75 s of one
core instead of ~120.  The committed checkpoint was made by that first recipe (two threads,
per-parameter update).  Today's recipe sums in another order, so its weights differ (held-out cosines
up to 0.23 apart) and it recommends 0.34 where the committed model's figures say 0.36; on all 120
held-out photos both give the same tags at 0.36, which is what the test requires.  The checkpoint was
kept rather than replaced because the documentation's worked examples quote its figures.

On 2026-12-06 the recipe changed again for the suite's time, with the same seed, steps, photos and
batch: the image tower trains in channels-last memory format, whose oneDNN convolutions and their
gradients take its step in 51 ms instead of 73 (a 2-core AMD EPYC, Zen 4); the text tower runs on the
10 token positions the captions use, not the 16 of its context (tagwatch's own
``_encode_text_short``, exact for a causal tower, as at inference); only the 20 rows of the token
table that the captions use are trained (see ``train``); and new tensors are not filled with NaN
first.  The last two change no bit (checked: the same file as without them); the first two sum in
another order.  On that EPYC the retraining's 600 steps took 41 s instead of 59 (the whole script 54 s
instead of 73); its held-out cosines are within 0.21 of the committed model's (the recipe before:
0.61 on that host), it recommends 0.36 (the recipe before: 0.31 there, at the edge of the test's
0.36 ± 0.05; 0.34 on the Xeon), and its tags at 0.36 are the committed model's on all 120 held-out
photos.  With seeds 2 and 3 it recommends 0.38 and 0.36 (the recipe before: 0.40 and 0.42).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import synthetic
from tagwatch.config import ModelConfig
from tagwatch.imaging import Preprocess, prepare, to_array
from tagwatch.model import _encode_text_short as encode_text_short
from tagwatch.model import load_model

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "tests" / "data" / "shapes-clip.json"
SEED = 1  # the committed checkpoint's seed
STEPS = 600
THREADS = 1
TEMPLATES = ("a photo of a {}.", "a {}.")
TAG_TEMPLATE = "a photo of a {}."  # tagwatch's default template: what the held-out check uses
HELD_OUT_PER_PAIR = 3  # 108 held-out photos plus blanks


def captions() -> tuple[list[str], list[tuple[str | None, str | None]]]:
    """Every full and partial description in every template, with what each one names."""
    named: list[tuple[str | None, str | None]] = [(c, s) for c in synthetic.COLOURS for s in synthetic.SHAPES]
    named += [(c, None) for c in synthetic.COLOURS] + [(None, s) for s in synthetic.SHAPES]
    texts, meanings = [], []
    for template in TEMPLATES:
        for colour, shape in named:
            texts.append(template.format(" ".join(w for w in (colour, shape) if w)))
            meanings.append((colour, shape))
    return texts, meanings


def consistent(item: synthetic.Item, meaning: tuple[str | None, str | None]) -> bool:
    """A caption fits a photo when every word it has is true of the photo (blanks fit none)."""
    colour, shape = meaning
    if item.colour is None:
        return False
    return (colour is None or colour == item.colour) and (shape is None or shape == item.shape)


def training_photos(seed: int, count: int, spec: Preprocess) -> tuple[np.ndarray, list[synthetic.Item]]:
    """``count`` preprocessed photos of random size, aspect and JPEG quality, every pair equally often."""
    rng = np.random.default_rng(seed)
    listing = synthetic.items(seed, per_pair=count // 40, blanks=count - 36 * (count // 40))
    arrays = np.zeros((len(listing), 3, spec.size, spec.size), np.float32)
    for n, item in enumerate(listing):
        short = int(rng.integers(64, 160))
        aspect = float(rng.choice([1.0, 4 / 3, 3 / 2, 3 / 4, 2 / 3]))
        size = (short, round(short * aspect)) if aspect >= 1 else (round(short / aspect), short)
        size = (size[1], size[0]) if rng.random() < 0.5 else size
        photo = synthetic.make_photo(item.colour, item.shape, item.seed, size)
        arrays[n] = to_array(synthetic.jpeg_roundtrip(photo, int(rng.integers(40, 96))), spec)
    return arrays, listing


def train(config: Path, seed: int, steps: int, photos: int, batch: int) -> Any:
    """The trained open_clip model (float32, eval mode)."""
    import open_clip
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(THREADS)  # the same sums in the same order on every run
    torch.use_deterministic_algorithms(True)
    # ...without filling each new tensor with NaN first (deterministic mode's guard against reading
    # memory no op wrote, which none here does: two runs still give identical files)
    torch.utils.deterministic.fill_uninitialized_memory = False
    torch.manual_seed(seed)
    open_clip.add_model_config(config)
    model = open_clip.create_model(config.stem, pretrained=None)
    pp = model.visual.preprocess_cfg  # what load_model hands the daemon's decoders
    size = pp["size"][0] if isinstance(pp["size"], tuple | list) else pp["size"]
    spec = Preprocess(size=int(size), mean=tuple(pp["mean"]), std=tuple(pp["std"]))
    started = time.monotonic()
    arrays, listing = training_photos(seed, photos, spec)
    print(f"{len(listing)} training photos made in {time.monotonic() - started:.1f} s", flush=True)
    texts, meanings = captions()
    tokens = open_clip.get_tokenizer(config.stem)(texts)
    labels = torch.tensor([[consistent(item, m) for m in meanings] for item in listing], dtype=torch.float32)
    # channels-last: oneDNN's convolutions and their gradients take the image tower's step in 51 ms
    # instead of 73 (2-core EPYC); the weights are saved in the usual layout
    images = torch.from_numpy(arrays).contiguous(memory_format=torch.channels_last)
    model.visual.to(memory_format=torch.channels_last)

    # The captions use 20 of the token table's 49408 rows.  The others get no gradient, and AdamW
    # (no weight decay on embeddings) leaves a row with none exactly as it was, so only those 20 are
    # trained, as a small table of their own put back at the end: the same weights to the bit, without
    # a dense 49408 x 64 gradient and update each step.  Token ids map to rows in order, so the end of
    # text (the highest id, where the text tower pools) is still each caption's highest.
    assert model.text_pool_type == "argmax", model.text_pool_type
    table = model.token_embedding
    used = torch.unique(tokens)  # sorted
    rows = torch.nn.Embedding.from_pretrained(table.weight.detach()[used].clone(), freeze=False)
    tokens = torch.searchsorted(used, tokens)
    model.token_embedding = rows
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    other = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    optimiser = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05},
                                   {"params": other, "weight_decay": 0.0}], lr=2e-3, betas=(0.9, 0.98),
                                  fused=True)
    warmup = max(1, steps // 20)

    def rate(step: int) -> float:  # linear warm-up, then cosine decay to zero
        return min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, rate)
    order = torch.Generator().manual_seed(seed)
    model.train()
    started = time.monotonic()
    for step in range(steps):
        pick = torch.randint(len(listing), (batch,), generator=order)
        flip = torch.rand(batch, generator=order) < 0.5  # a mirrored photo shows the same thing
        x = images[pick]
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        image_vectors = F.normalize(model.encode_image(x), dim=-1)
        text_vectors = F.normalize(encode_text_short(model, tokens), dim=-1)  # the used positions
        logits = model.logit_scale.exp() * image_vectors @ text_vectors.T + model.logit_bias
        loss = F.binary_cross_entropy_with_logits(logits, labels[pick])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        if step % 100 == 0 or step == steps - 1:
            boundary = -model.logit_bias.item() / model.logit_scale.exp().item()
            print(f"step {step:5d}  loss {loss.item():.4f}  boundary {boundary:+.3f}  "
                  f"{time.monotonic() - started:.0f} s", flush=True)
    model.token_embedding = table
    with torch.no_grad():
        table.weight[used] = rows.weight
    model.eval()
    return model


def save(model: Any, path: Path) -> None:
    """float16 safetensors (open_clip casts to the model's float32 on load): about 7.2 MB."""
    import torch
    from safetensors.torch import save_file

    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))


def held_out() -> list[tuple[synthetic.Item, bytes]]:
    """The held-out photos as JPEG bytes (``synthetic.HELD_OUT_SEED``: never trained on)."""
    out = []
    for item, size in synthetic.held_out(HELD_OUT_PER_PAIR, blanks=12):
        buffer = io.BytesIO()
        synthetic.make_photo(item.colour, item.shape, item.seed, size).save(buffer, "JPEG", quality=85)
        out.append((item, buffer.getvalue()))
    return out


def tag_scores(config: Path, checkpoint: Path, photos: list[bytes]) -> tuple[list[str], np.ndarray]:
    """Cosines of each photo to each tag's default prompt, computed the way the daemon computes them."""
    model = load_model(ModelConfig(name=str(config), pretrained=str(checkpoint)))
    tags = [*synthetic.COLOURS, *synthetic.SHAPES]
    text = model.encode_texts([TAG_TEMPLATE.format(t) for t in tags])
    images = model.encode_images(np.stack([prepare(data, model.preprocess) for data in photos]))
    return tags, images @ text.T


def judge(items: list[synthetic.Item], tags: list[str], scores: np.ndarray,
          threshold: float) -> tuple[float, float]:
    """(share of shape photos with their true colour and shape, share of photos with a wrong one)."""
    chosen = scores > threshold
    right = wrong = shapes = 0
    for item, row in zip(items, chosen, strict=True):
        got = {t for t, on in zip(tags, row, strict=True) if on}
        if item.colour is not None:
            shapes += 1
            right += {item.colour, item.shape} <= got
        wrong += bool(got - {item.colour, item.shape})
    return right / max(shapes, 1), wrong / len(items)


def recommend(items: list[synthetic.Item], tags: list[str], scores: np.ndarray) -> float:
    """The middle of the widest run of thresholds (0.005 apart) with the fewest imperfect photos."""
    grid = np.round(np.arange(-0.5, 1.0, 0.005), 3)
    errors = []
    for t in grid:
        right, wrong = judge(items, tags, scores, float(t))
        shapes = sum(i.colour is not None for i in items)
        errors.append(round((1 - right) * shapes + wrong * len(items)))
    best = min(errors)
    runs, start = [], None
    for i, e in enumerate([*errors, best + 1]):
        if e == best and start is None:
            start = i
        elif e != best and start is not None:
            runs.append((i - start, start, i - 1))
            start = None
    _, first, last = max(runs)
    return float(round((grid[first] + grid[last]) / 2, 2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=SEED, help=f"training seed (default {SEED})")
    parser.add_argument("--steps", type=int, default=STEPS, help=f"optimiser steps (default {STEPS})")
    parser.add_argument("--out", type=Path, default=REPO / "tests" / "data",
                        help="folder for shapes-clip.safetensors and shapes-clip.train.json")
    parser.add_argument("--config", type=Path, default=CONFIG, help="open_clip model config (.json)")
    parser.add_argument("--photos", type=int, default=4000, help="training photos (default 4000)")
    parser.add_argument("--batch", type=int, default=64, help="photos per step (default 64)")
    args = parser.parse_args(argv)
    if args.seed == synthetic.HELD_OUT_SEED:
        parser.error(f"seed {args.seed} makes the held-out photos; pick another")

    started = time.monotonic()
    model = train(args.config.resolve(), args.seed, args.steps, args.photos, args.batch)
    seconds = time.monotonic() - started
    checkpoint = args.out / f"{args.config.stem}.safetensors"
    save(model, checkpoint)

    photos = held_out()
    items = [item for item, _ in photos]
    tags, scores = tag_scores(args.config.resolve(), checkpoint, [data for _, data in photos])
    threshold = recommend(items, tags, scores)
    right, wrong = judge(items, tags, scores, threshold)
    truth = np.array([[t in (i.colour, i.shape) for t in tags] for i in items])
    positives, negatives = scores[truth], scores[~truth]
    report = {
        "config": args.config.name, "seed": args.seed, "steps": args.steps, "photos": args.photos,
        "batch": args.batch, "train_seconds": round(seconds, 1),
        "checkpoint_bytes": checkpoint.stat().st_size, "template": TAG_TEMPLATE,
        "held_out_seed": synthetic.HELD_OUT_SEED, "held_out_photos": len(items),
        "threshold": threshold, "true_colour_and_shape": round(right, 4), "wrong_tag": round(wrong, 4),
        "lowest_true_cosine": round(float(positives.min()), 4),
        "highest_false_cosine": round(float(negatives.max()), 4),
        "boundary": round(-model.logit_bias.item() / model.logit_scale.exp().item(), 4),
    }
    (args.out / f"{args.config.stem}.train.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"trained in {seconds:.0f} s; {checkpoint} is {report['checkpoint_bytes'] / 1e6:.1f} MB")
    print(f"held-out ({len(items)} photos, '{TAG_TEMPLATE}'): threshold {threshold:.2f} gives "
          f"{right:.1%} with their true colour and shape, {wrong:.1%} with a wrong tag; true cosines "
          f">= {report['lowest_true_cosine']:.3f}, false ones <= {report['highest_false_cosine']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
