#!/usr/bin/env python3
"""Train the test captioner: a tiny open_clip CoCa that captions photos of one or two coloured shapes.

    PYTHONPATH=daemon .venv/bin/python scripts/train_test_captioner.py          # writes tests/data/
    PYTHONPATH=daemon .venv/bin/python scripts/train_test_captioner.py --out /tmp/c --steps 200

The test model (``shapes-clip``, see ``train_test_model.py``) makes tags checkably right; this one does
the same for captions.  It is open_clip's own ``CoCa`` class built from a custom config
(``tests/data/shapes-coca.json``), saved as float16 safetensors, loaded through the same
``name / pretrained`` settings as a user's checkpoint, and it is a whole CoCa: its image and text
vectors tag like a CLIP (so it can be the tagging model and the captioner at once) and its decoder
writes "a red circle above a blue square".

* image tower: a ViT (open_clip's CoCa needs the image tokens a ViT gives; its ResNet gives none),
  128 px input in 8 px patches (a 16 x 16 grid), 4 layers 32 wide, fixed 2-D sine-cosine position
  embeddings (a learned one must first learn what "next to" means, which cost hundreds of steps); its
  patch tokens go to the caption decoder as they are (no attentional pooler: the decoder sees where
  each thing is), and their mean is the image vector (``pool_type = "avg"``: the shape and colour the
  patches learn reach the CLIP side directly, where a class token must first learn to gather them).
  The resolution is what shapes need: at 64 px in 4 px patches (the same grid) a shape of a two-shape
  scene is 12 px across and a patch a 4 x 4 blur of its edge; after 1000 steps that tower named shapes
  no better than chance (17%), and a linear probe on its patch tokens found the shape of 31% of the
  objects.  At 128 px the same grid's patches hold the corners and curves, and 1200 steps name 90%
  of the held-out scenes right;
* text tower and caption decoder: 2 layers each, 32 wide, open_clip's real BPE tokenizer with a
  20-token context.  The two 49408 x 32 tables (token embedding, decoder output) are 6.3 MB of the
  6.6 MB file, hence the width.

**Data.**  Scenes from ``synthetic.scenes``: two shapes of different colours, one above or left of
the other ("a red circle above a blue square", "a green star to the left of a purple vertical bar"),
or one shape alone ("an orange triangle"); random sizes, positions, backgrounds, noise, aspect ratios
and JPEG qualities, reduced by tagwatch's own preprocessing, mirrored at random (a mirror swaps left
and right, so the caption is rewritten to match).

**Loss.**  CoCa's two losses: the caption's next-token cross-entropy, and, for the image and text
vectors, the same sigmoid loss against a "text fits photo" matrix as the test model (texts: every
colour, shape, colour-shape pair, "bar", "horizontal", "vertical" in two templates).  The decoder's
output table covers the whole vocabulary, but only the ~30 tokens the captions use are trained: the
other columns stay exactly zero, so the full-vocabulary softmax the daemon's greedy decoding runs is
computed exactly here from the trained columns plus ``log(N) + 0`` for the N zero ones, without
multiplying 49408 columns at every step.  Two more losses are for training only, through linear
heads that are not saved: one names the shape and colour of the object each patch token covers (from
the scene's own masks, brought into the model's frame by the same resize and crop), the other names
each object's shape from the mean of its patches' tokens (patches told apart by their colour labels:
the objects of a scene never share a colour).  A ViT learns small shapes slowly from captions alone;
these direct signals teach its patches shapes in the steps a CPU can afford.

**Held-out check.**  After training the checkpoint is loaded back the user's way (``load_model``) and
held-out scenes (``synthetic.HELD_OUT_SEED``, never trained on; 320 x 240 and 240 x 320, JPEG quality
50-95) are captioned: the script prints the share whose caption names exactly the right colours and
shapes, with the right relation, and the keywords the daemon would make of each caption, and writes
them to ``<out>/shapes-coca.train.json``.  The keyword threshold is chosen on validation scenes of a
third seed (``VALIDATION_SEED``), never on the held-out ones.

Deterministic from ``--seed`` like the test model (torch on one thread, deterministic algorithms).  One
thread, not two: on cores shared with other jobs two threads wait on each other (a step took 3 s
instead of 0.4 s here), and one thread gives the same figures on any machine's core count.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import math
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

import synthetic
from tagwatch.config import ModelConfig
from tagwatch.imaging import Preprocess, prepare, to_array
from tagwatch.model import load_model
from train_test_model import save  # the same float16 safetensors file as the test model

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "tests" / "data" / "shapes-coca.json"
SEED = 1
STEPS = 1200
THREADS = 1
TEMPLATES = ("a photo of a {}.", "a {}.")
TAG_TEMPLATE = "a photo of a {}."
HELD_OUT = 200
VALIDATION_SEED = 7  # photos that only choose the keyword threshold: neither trained on nor judged
LEARNING_RATE = 2e-3
CAPTION_WEIGHT = 2.0  # open_clip's default weighting of the caption loss against the contrastive one
DENSE_WEIGHT = 0.3  # the training-only patch labels' loss (see train)
OBJECT_WEIGHT = 1.0  # the training-only object shapes' loss (see train)


def entities() -> list[str]:
    """Every word or phrase the contrastive side learns: what the caption keywords can be."""
    names = [*synthetic.COLOURS, *synthetic.SHAPES, "bar", "horizontal", "vertical"]
    names += [f"{c} {s}" for c in synthetic.COLOURS for s in (*synthetic.SHAPES, "bar")]
    return names


def fits(scene: synthetic.Scene, name: str) -> bool:
    """Is ``name`` true of some object of ``scene`` (a colour, a shape, or one object's both)?"""
    for colour, shape in scene.objects:
        words = f"{colour} {shape}"
        if name in (colour, shape, words) or (name == "bar" and shape.endswith("bar")):
            return True
        if name in ("horizontal", "vertical") and shape == f"{name} bar":
            return True
        if name == f"{colour} bar" and shape.endswith("bar"):
            return True
    return False


def mirrored(caption: str) -> str:
    """The caption of the photo seen in a mirror: left and right swap, so the two objects do."""
    found = re.fullmatch(r"(an? .+) to the left of (an? .+)", caption)
    return f"{found.group(2)} to the left of {found.group(1)}" if found else caption


def patch_labels(masks: list[np.ndarray], scene: synthetic.Scene, spec: Preprocess,
                 grid: int) -> tuple[np.ndarray, np.ndarray]:
    """Which object's shape and colour each image patch shows (0: background), from the objects'
    masks brought into the model's frame by the same resize and crop as the photo."""
    frame = dataclasses.replace(spec, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    step = spec.size // grid
    cover = np.zeros((len(masks) + 1, grid, grid), np.float32)
    cover[0] = 0.3  # a patch less covered than this by any object counts as background
    for n, mask in enumerate(masks, start=1):
        seen = to_array(Image.fromarray(np.uint8(mask * 255), "L").convert("RGB"), frame)[0]
        cover[n] = seen[:grid * step, :grid * step].reshape(grid, step, grid, step).mean(axis=(1, 3))
    owner = cover.argmax(axis=0)
    shapes = np.array([0] + [1 + synthetic.SHAPES.index(s) for _, s in scene.objects])[owner]
    colours = np.array([0] + [1 + synthetic.COLOURS.index(c) for c, _ in scene.objects])[owner]
    return shapes, colours


def training_photos(seed: int, count: int, spec: Preprocess, grid: int
                    ) -> tuple[np.ndarray, np.ndarray, list[synthetic.Scene]]:
    """``count`` preprocessed scenes of random size, aspect and JPEG quality, and each patch's shape
    and colour labels (N, 2, grid, grid)."""
    rng = np.random.default_rng([seed, 1])
    listing = synthetic.scenes(seed, count, singles=0.25, blanks=0.04)
    arrays = np.zeros((len(listing), 3, spec.size, spec.size), np.float32)
    labels = np.zeros((len(listing), 2, grid, grid), np.int64)
    for n, scene in enumerate(listing):
        short = int(rng.integers(spec.size, 3 * spec.size))
        aspect = float(rng.choice([1.0, 4 / 3, 3 / 2, 16 / 9]))
        size = (round(short * aspect), short) if rng.random() < 0.5 else (short, round(short * aspect))
        masks: list[np.ndarray] = []
        photo = synthetic.make_scene(scene, size, masks)
        arrays[n] = to_array(synthetic.jpeg_roundtrip(photo, int(rng.integers(40, 96))), spec)
        labels[n] = patch_labels(masks, scene, spec, grid)
    return arrays, labels, listing


def _decoder_hidden(decoder: Any, image_embs: Any, text_embs: Any) -> Any:
    """open_clip's ``MultimodalTransformer.forward`` up to, not including, its output projection."""
    seq_len = text_embs.shape[1]
    for block, cross in zip(decoder.resblocks, decoder.cross_attn, strict=True):
        text_embs = block(text_embs, attn_mask=decoder.attn_mask[:seq_len, :seq_len])
        text_embs = cross(text_embs, k_x=image_embs, v_x=image_embs)
    return decoder.ln_final(text_embs)


def peek(model: Any, tokenizer: Any, spec: Preprocess, count: int = 48) -> float:
    """A progress figure: the share of a few held-out scenes the model in training captions right."""
    import torch

    from tagwatch.model import caption_tokens, tidy_caption

    model.eval()
    photos = held_out(count)
    batch = torch.from_numpy(np.stack([prepare(data, spec) for _, data in photos]))
    with torch.inference_mode():
        _, tokens = caption_tokens(model, batch, tokenizer.sot_token_id, tokenizer.eot_token_id, 30)
    said = [tidy_caption(tokenizer.decode(t)) for t in tokens]
    return sum(names_right(scene, c) for (scene, _), c in zip(photos, said, strict=True)) / count


def train(config: Path, seed: int, steps: int, photos: int, batch: int, progress: int = 0) -> Any:
    """The trained open_clip CoCa (float32, eval mode)."""
    import open_clip
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)
    open_clip.add_model_config(config)
    model = open_clip.create_model(config.stem, pretrained=None)
    pp = model.visual.preprocess_cfg
    size = pp["size"][0] if isinstance(pp["size"], tuple | list) else pp["size"]
    spec = Preprocess(size=int(size), mean=tuple(pp["mean"]), std=tuple(pp["std"]))
    tokenizer = open_clip.get_tokenizer(config.stem)
    grid = int(model.visual.grid_size[0])
    width = int(model.visual.conv1.out_channels)
    started = time.monotonic()
    arrays, patch_truth, listing = training_photos(seed, photos, spec, grid)
    print(f"{len(listing)} training photos made in {time.monotonic() - started:.1f} s", flush=True)

    names = entities()
    texts = [t.format(n) for t in TEMPLATES for n in names]
    text_tokens = tokenizer(texts)
    labels = torch.tensor([[fits(s, n) for _ in TEMPLATES for n in names] for s in listing],
                          dtype=torch.float32)
    captions = [s.caption for s in listing]
    caption_tokens = tokenizer(captions)
    flipped_tokens = tokenizer([mirrored(c) for c in captions])
    has_caption = torch.tensor([bool(c) for c in captions])
    images = torch.from_numpy(arrays)
    patch_truth_t = torch.from_numpy(patch_truth)
    # Training only: a linear head reads each patch token and names its object's shape and colour.
    # A ViT has no locality prior and learns small shapes slowly from captions alone; this dense
    # signal teaches its patches shapes in a few hundred steps.  The head is not saved.
    aux = torch.nn.Linear(width, 2 * (len(synthetic.SHAPES) + 1))
    rare = torch.tensor([0.2] + [1.0] * len(synthetic.SHAPES))  # background patches are most, and easy
    # ... and a second head names each object's shape from its patches' mean (patches told apart by
    # their colour labels: the objects of a scene never share a colour).
    shape_head = torch.nn.Linear(width, len(synthetic.SHAPES))
    shape_of = torch.full((len(listing), len(synthetic.COLOURS)), -1, dtype=torch.long)
    for n, scene in enumerate(listing):
        for colour, shape in scene.objects:
            shape_of[n, synthetic.COLOURS.index(colour)] = synthetic.SHAPES.index(shape)
    patch_tokens: list[Any] = []
    model.visual.transformer.register_forward_hook(lambda _m, _i, out: patch_tokens.append(out))

    # The decoder's output columns: only the tokens captions use are trained, the rest stay zero.
    used = torch.unique(torch.cat([caption_tokens.flatten(), flipped_tokens.flatten()]))
    used = used[used != model.pad_id]
    projection = model.text_decoder.text_projection
    with torch.no_grad():  # open_clip leaves this table uninitialised (torch.empty) in a new CoCa
        kept = torch.randn(projection.shape[0], len(used)) * projection.shape[0] ** -0.5
        projection.zero_()
    projection.requires_grad_(False)
    columns = torch.nn.Parameter(kept)
    index = torch.full((projection.shape[1],), -1, dtype=torch.long)
    index[used] = torch.arange(len(used))
    others = math.log(projection.shape[1] - len(used))  # logsumexp of the zero columns' logits

    params = [p for p in model.parameters() if p.requires_grad] + [columns, *aux.parameters(),
                                                                    *shape_head.parameters()]
    named = dict(model.named_parameters())
    decay = [p for n, p in named.items() if p.requires_grad and p.ndim >= 2 and "embedding" not in n]
    decay += [columns, aux.weight, shape_head.weight]
    other = [p for p in params if not any(p is d for d in decay)]
    optimiser = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05},
                                   {"params": other, "weight_decay": 0.0}],
                                  lr=LEARNING_RATE, betas=(0.9, 0.98))
    warmup = max(1, steps // 20)

    def rate(step: int) -> float:
        return min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, rate)
    order = torch.Generator().manual_seed(seed)
    model.train()
    started = time.monotonic()
    for step in range(steps):
        pick = torch.randint(len(listing), (batch,), generator=order)
        flip = torch.rand(batch, generator=order) < 0.5
        x = images[pick]
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        tokens = torch.where(flip[:, None], flipped_tokens[pick], caption_tokens[pick])
        truth = patch_truth_t[pick]
        truth = torch.where(flip[:, None, None, None], truth.flip(-1), truth)
        patch_tokens.clear()
        latent, image_embs = model._encode_image(x)
        patches = patch_tokens[-1][:, -grid * grid:]  # (B, grid², width): patches, not the class token
        per_patch = aux(patches)
        kinds = len(synthetic.SHAPES) + 1
        dense = (F.cross_entropy(per_patch[..., :kinds].reshape(-1, kinds), truth[:, 0].reshape(-1), rare)
                 + F.cross_entropy(per_patch[..., kinds:].reshape(-1, kinds), truth[:, 1].reshape(-1), rare))
        owner = F.one_hot(truth[:, 1].reshape(len(pick), -1), kinds)[..., 1:].float()  # (B, grid², colours)
        objects = torch.einsum("bnc,bnw->bcw", owner, patches) / owner.sum(1).clamp(min=1)[..., None]
        present = (owner.sum(1) > 0) & (shape_of[pick] >= 0)
        shapes = F.cross_entropy(shape_head(objects[present]), shape_of[pick][present])
        text_vectors = F.normalize(model.encode_text(text_tokens), dim=-1)
        logits = model.logit_scale.exp() * latent @ text_vectors.T + model.logit_bias
        contrastive = F.binary_cross_entropy_with_logits(logits, labels[pick])
        _, token_embs = model._encode_text(tokens)
        hidden = _decoder_hidden(model.text_decoder, image_embs, token_embs[:, :-1])
        scores = hidden @ columns  # (B, L, used)
        full = torch.cat([scores, torch.full_like(scores[..., :1], others)], dim=-1)
        target = tokens[:, 1:]
        wanted = (target != model.pad_id) & has_caption[pick][:, None]
        nll = torch.logsumexp(full, -1) - scores.gather(-1, index[target].clamp(min=0)[..., None])[..., 0]
        caption = (nll * wanted).sum() / wanted.sum().clamp(min=1)
        loss = contrastive + CAPTION_WEIGHT * caption + DENSE_WEIGHT * dense + OBJECT_WEIGHT * shapes
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        if step % 50 == 0 or step == steps - 1:
            print(f"step {step:5d}  caption {caption.item():.4f}  contrastive {contrastive.item():.4f}  "
                  f"patches {dense.item():.4f}  objects {shapes.item():.4f}  "
                  f"{time.monotonic() - started:.0f} s", flush=True)
        if progress and (step + 1) % progress == 0:
            with torch.no_grad():
                projection[:, used] = columns
            print(f"step {step:5d}  held-out photos named right: "
                  f"{peek(model, tokenizer, spec):.0%}", flush=True)
            model.train()
    with torch.no_grad():
        projection[:, used] = columns
    model.eval()
    return model


def held_out(count: int = HELD_OUT, seed: int = synthetic.HELD_OUT_SEED
             ) -> list[tuple[synthetic.Scene, bytes]]:
    """Held-out scenes as JPEG bytes: a seed never trained on, new sizes, qualities 50-95."""
    rng = np.random.default_rng([seed, 3])
    out = []
    for n, scene in enumerate(synthetic.scenes(seed, count, singles=0.25)):
        buffer = io.BytesIO()
        size = (320, 240) if n % 2 == 0 else (240, 320)
        synthetic.make_scene(scene, size).save(buffer, "JPEG", quality=int(rng.integers(50, 96)))
        out.append((scene, buffer.getvalue()))
    return out


def names_right(scene: synthetic.Scene, caption: str) -> bool:
    """Does the caption name exactly the scene's colours and shapes (each colour with its shape)?"""
    said = re.findall(r"\b(" + "|".join(synthetic.COLOURS) + r") (" + "|".join(synthetic.SHAPES) + r")\b",
                      caption)
    return sorted(said) == sorted(scene.objects)


SHAPE_WORDS = frozenset(w for shape in synthetic.SHAPES for w in shape.split())


def keyword_wrong(scene: synthetic.Scene, keyword: str) -> bool:
    """A keyword is wrong when it names a colour or shape word the photo does not show, or pairs a
    colour with a shape no object of the photo has."""
    colours = {c for c, _ in scene.objects}
    shape_words = {w for _, s in scene.objects for w in s.split()}
    said = keyword.split()
    if any(w in synthetic.COLOURS and w not in colours for w in said):
        return True
    if any(w in SHAPE_WORDS and w not in shape_words for w in said):
        return True
    colour = next((w for w in said if w in synthetic.COLOURS), None)
    rest = [w for w in said if w in SHAPE_WORDS]
    return colour is not None and bool(rest) and not any(
        c == colour and set(rest) <= set(s.split()) for c, s in scene.objects)


def keywords_right(scene: synthetic.Scene, keywords: list[str]) -> bool:
    """Do the keywords name every colour and every shape of the photo?"""
    said = {w for k in keywords for w in k.split()}
    return all(c in said and set(s.split()) <= said for c, s in scene.objects)


def _keyword_figures(photos: list[tuple[synthetic.Scene, bytes]], scored: list[tuple[Any, Any]],
                     threshold: float, top_k: int) -> tuple[float, float]:
    """(share of photos whose keywords name every colour and shape, share of keywords that are wrong)."""
    from tagwatch.caption_keywords import choose, kept

    good = wrong = total = 0
    for (scene, _), (cands, scores) in zip(photos, scored, strict=True):
        chosen = [k for k, _ in kept(choose(cands, scores, threshold, top_k))]
        good += keywords_right(scene, chosen)
        wrong += sum(keyword_wrong(scene, k) for k in chosen)
        total += len(chosen)
    return good / len(photos), wrong / max(total, 1)


def judge(config: Path, checkpoint: Path, top_k: int = 6) -> dict[str, float]:
    """Caption the held-out scenes with the checkpoint loaded the daemon's way, and turn each caption
    into keywords the daemon's way (candidates scored by the model's own CLIP side).

    The keyword threshold is chosen on validation scenes of their own seed (never trained on, never
    judged): the highest threshold whose keywords still name every colour and shape of as many
    validation photos as the best threshold does, less one point.  The loss's boundary (-bias/scale)
    is reported too; it is too strict for a caption word: a shape word the decoder reads right from the
    patches often scores below it on the small CLIP side."""
    from safetensors.numpy import load_file

    from tagwatch.caption_keywords import candidates, prompts, score

    state = load_file(str(checkpoint))
    boundary = float(-state["logit_bias"].astype(np.float32).item()
                     / np.exp(state["logit_scale"].astype(np.float32).item()))
    model = load_model(ModelConfig(name=str(config), pretrained=str(checkpoint), precision="fp32"))

    def run(photos: list[tuple[synthetic.Scene, bytes]]) -> tuple[list[str], list[tuple[Any, Any]]]:
        batch = np.stack([prepare(data, model.preprocess) for _, data in photos])
        vectors, captions = model.encode_and_caption(batch)
        found = [candidates(c) for c in captions]
        texts = sorted({p for f in found for p in prompts(f, TAG_TEMPLATE)})
        text_vectors = dict(zip(texts, model.encode_texts(texts), strict=True))
        return captions, [(f, score(v, f, text_vectors, TAG_TEMPLATE))
                          for v, f in zip(vectors, found, strict=True)]

    validation = held_out(seed=VALIDATION_SEED)
    _, scored = run(validation)
    grid = [round(t, 2) for t in np.arange(0.0, 0.8, 0.01)]
    named = [_keyword_figures(validation, scored, t, top_k)[0] for t in grid]
    threshold = max(t for t, n in zip(grid, named, strict=True) if n >= max(named) - 0.01)

    photos = held_out()
    captions, scored = run(photos)
    right = sum(names_right(scene, caption) for (scene, _), caption in zip(photos, captions, strict=True))
    singles = [(scene, c) for (scene, _), c in zip(photos, captions, strict=True) if scene.second is None]
    pairs = [(scene, c) for (scene, _), c in zip(photos, captions, strict=True) if scene.second is not None]
    exact = sum(scene.caption == caption for (scene, _), caption in zip(photos, captions, strict=True))
    for (scene, _), caption in list(zip(photos, captions, strict=True))[:8]:
        print(f"  {scene.caption!r:58} -> {caption!r}")
    good, wrong = _keyword_figures(photos, scored, threshold, top_k)
    return {"held_out_photos": len(photos), "names_right": round(right / len(photos), 4),
            "names_right_one_shape": round(sum(names_right(*p) for p in singles) / max(len(singles), 1), 4),
            "names_right_two_shapes": round(sum(names_right(*p) for p in pairs) / max(len(pairs), 1), 4),
            "colours_right": round(sum(sorted(c for c, _ in scene.objects) == sorted(
                w for w in caption.split() if w in synthetic.COLOURS) for (scene, _), caption in
                zip(photos, captions, strict=True)) / len(photos), 4),
            "exact_caption": round(exact / len(photos), 4), "boundary": round(boundary, 4),
            "validation_seed": VALIDATION_SEED, "keyword_threshold": threshold, "keyword_top_k": top_k,
            "keywords_name_all": round(good, 4), "keywords_wrong": round(wrong, 4)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=SEED, help=f"training seed (default {SEED})")
    parser.add_argument("--steps", type=int, default=STEPS, help=f"optimiser steps (default {STEPS})")
    parser.add_argument("--out", type=Path, default=REPO / "tests" / "data",
                        help="folder for shapes-coca.safetensors and shapes-coca.train.json")
    parser.add_argument("--config", type=Path, default=CONFIG, help="open_clip CoCa config (.json)")
    parser.add_argument("--photos", type=int, default=5000, help="training photos (default 5000)")
    parser.add_argument("--batch", type=int, default=64, help="photos per step (default 64)")
    parser.add_argument("--progress", type=int, default=0, metavar="N",
                        help="caption a few held-out photos every N steps and print how many are right")
    parser.add_argument("--judge", action="store_true",
                        help="train nothing: judge the checkpoint in --out again and update its report")
    args = parser.parse_args(argv)
    if args.seed in (synthetic.HELD_OUT_SEED, VALIDATION_SEED):
        parser.error(f"seed {args.seed} makes the held-out or validation photos; pick another")
    checkpoint = args.out / f"{args.config.stem}.safetensors"
    report_path = args.out / f"{args.config.stem}.train.json"
    if args.judge:  # the checkpoint as it is; the training figures of the report are kept
        report = {**json.loads(report_path.read_text(encoding="utf-8")), **judge(args.config, checkpoint)}
        report_path.write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(report, indent=2))
        return 0
    started = time.monotonic()
    model = train(args.config, args.seed, args.steps, args.photos, args.batch, args.progress)
    seconds = time.monotonic() - started
    save(model, checkpoint)
    report = {"config": args.config.name, "seed": args.seed, "steps": args.steps, "photos": args.photos,
              "batch": args.batch, "train_seconds": round(seconds, 1),
              "checkpoint_bytes": checkpoint.stat().st_size, "held_out_seed": synthetic.HELD_OUT_SEED,
              **judge(args.config, checkpoint)}
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"trained in {seconds:.0f} s; {checkpoint} is {report['checkpoint_bytes'] / 1e6:.1f} MB")
    print(f"held-out ({report['held_out_photos']} photos): {report['names_right']:.1%} name the right "
          f"colours and shapes, {report['exact_caption']:.1%} are exactly the expected caption; keywords at "
          f"threshold {report['keyword_threshold']}: {report['keywords_name_all']:.1%} name every colour "
          f"and shape, {report['keywords_wrong']:.1%} of them wrong")
    return 0


if __name__ == "__main__":
    sys.exit(main())
