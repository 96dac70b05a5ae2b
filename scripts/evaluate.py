#!/usr/bin/env python3
"""How good are the tags?  Zero-shot accuracy on a class-folder dataset and precision/recall/F1/mAP on
a multi-label one, with the configured model, tag list and thresholds.

    .venv/bin/python scripts/evaluate.py classes DATASET [--mapping FILE] [--config C]
    .venv/bin/python scripts/evaluate.py labels LABELS.csv [--tags FILE] [--config C]

``classes``: DATASET holds one folder of photos per class (ImageNet / ObjectNet layout).  ``--mapping``
names each folder's tag: a JSON object ``{"folder": "tag"}`` (ObjectNet's
``folder_to_objectnet_name.json``) or text lines ``folder tag words`` (the first white space ends the
folder name); without it the folder names are the tags.  Each photo is scored against every class's
tag and top-1 / top-5 accuracy is printed as rtag's Table II: the bare tag as the prompt, and the
config's templates (``"a photo of a {}."``; ``--template`` adds rows; ``--tags LIST`` adds a row
scoring each class with that tag list's own prompts and synonyms).

Then top-1 accuracy *at the parent level*, as hierarchical classification papers report it: a
prediction counts at depth k when it shares the true class's WordNet ancestor at depth k (on the
first hypernym path; 0 is ``entity``, a class shallower than k is its own ancestor), for every depth
at which the classes differ.  A class is placed in WordNet by its synset in ``--tags``, by a folder
named with its ImageNet wnid (``n02099601``), or by its name when that names one noun clearly;
photos of a class WordNet cannot place count only when the prediction is exactly right.

``labels``: a CSV (UTF-8, a byte-order mark accepted) whose first column is a photo (relative to
the CSV's folder) and whose other columns hold its labels, several per cell separated by ``;`` (an
optional header row starts with ``file``, ``path`` or ``image``); a label names a tag as keywords
are compared (case and Unicode normalisation aside).  The photos are tagged as the daemon would tag
them (each tag's own threshold where the tag list has one, else ``tagging.threshold``; at most
``top_k``; the levels that expansion adds are left out, so each tag is judged on its own score) and
precision, recall and F1 are printed for the global threshold, for the per-tag thresholds when the
list has any, and per tag, with each tag's average precision and their mean (mAP).

Image vectors come from the store (``--database``, default the config's): keyed by the photo's
content, so evaluating another tag list, template or threshold encodes no image again; only photos
never seen by this model are encoded, and the count is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import logging
import os
import re
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from tagwatch.casefold import fold
from tagwatch.config import Config, ConfigError, load_config
from tagwatch.encoder import LazyModel
from tagwatch.formats import IMAGE_SUFFIXES
from tagwatch.model import ModelError
from tagwatch.pipeline import Pipeline
from tagwatch.scoring import (
    chosen_matrix,
    counts,
    has_own_thresholds,
    mean_average_precision,
    micro,
    tag_thresholds,
)
from tagwatch.store import Store, StoreError
from tagwatch.tagger import TagMatrix
from tagwatch.vocabulary import Tag, Vocabulary, VocabularyError, load_configured
from tagwatch.wordnet import WordNet, WordNetError

BARE = "{}"  # the bare tag as its own prompt (rtag's first row)
ENCODING = "utf-8-sig"  # a byte-order mark (Excel's "CSV UTF-8") is accepted, as tag lists accept it


class EvaluationError(ValueError):
    """The dataset cannot be evaluated; the message names the file and says why."""


# -- input ---------------------------------------------------------------------------------------

def photos_in(folder: Path) -> list[str]:
    """Every photo file under ``folder``, recursively, hidden names skipped, sorted."""
    found: list[str] = []
    for here, subfolders, files in os.walk(folder):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        found += [os.path.join(here, f) for f in files
                  if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_SUFFIXES]
    return sorted(found)


def read_mapping(path: Path) -> dict[str, str]:
    """Folder name → tag, from a JSON object or ``folder tag words`` lines (``#`` comments)."""
    try:
        text = path.read_text(encoding=ENCODING)
    except (OSError, UnicodeDecodeError) as exc:
        raise EvaluationError(f"{path}: cannot read mapping: {exc}") from None
    if path.suffix.lower() == ".json":
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise EvaluationError(f"{path}: not valid JSON: {exc}") from None
        if not isinstance(doc, dict) or not all(isinstance(v, str) for v in doc.values()):
            raise EvaluationError(f'{path}: must be a JSON object {{"folder": "tag", ...}}')
        return {str(k): " ".join(v.split()) for k, v in doc.items()}
    mapping: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split(None, 1)
        if len(parts) < 2:
            raise EvaluationError(f"{path}:{number}: expected 'folder tag', got {line.strip()!r}")
        mapping[parts[0]] = " ".join(parts[1].split())
    return mapping


def read_classes(root: Path, mapping: dict[str, str] | None) -> tuple[list[str], list[str], list[int]]:
    """(class tags, photo paths, each photo's class index) of a class-folder dataset."""
    classes, paths, truth, _ = read_class_folders(root, mapping)
    return classes, paths, truth


def read_class_folders(root: Path, mapping: dict[str, str] | None
                       ) -> tuple[list[str], list[str], list[int], dict[str, list[str]]]:
    """:func:`read_classes` and the folder names of each class."""
    if not root.is_dir():
        raise EvaluationError(f"{root}: not a folder")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise EvaluationError(f"{root}: holds no class folders")
    classes: list[str] = []
    paths: list[str] = []
    truth: list[int] = []
    folders_of: dict[str, list[str]] = {}
    for folder in folders:
        if mapping is not None and folder.name not in mapping:
            raise EvaluationError(f"{folder}: folder not in the mapping file")
        tag = mapping[folder.name] if mapping is not None else folder.name
        if tag not in classes:
            classes.append(tag)  # two folders mapped to one tag are one class
        folders_of.setdefault(tag, []).append(folder.name)
        for photo in photos_in(folder):
            paths.append(photo)
            truth.append(classes.index(tag))
    if not paths:
        raise EvaluationError(f"{root}: the class folders hold no photos")
    return classes, paths, truth, folders_of


def read_labels(path: Path) -> list[tuple[str, list[str]]]:
    """(photo path, its labels) rows of a multi-label CSV."""
    try:
        with path.open(encoding=ENCODING, newline="") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise EvaluationError(f"{path}: cannot read: {exc}") from None
    result: list[tuple[str, list[str]]] = []
    for number, row in enumerate(rows, start=1):
        if not row or not row[0].strip() or row[0].lstrip().startswith("#"):
            continue
        if number == 1 and row[0].strip().lower() in ("file", "path", "image", "filename"):
            continue
        photo = Path(row[0].strip())
        labels = [" ".join(label.split()) for cell in row[1:] for label in cell.split(";")]
        result.append((str(photo if photo.is_absolute() else path.parent / photo), [x for x in labels if x]))
    if not result:
        raise EvaluationError(f"{path}: no rows")
    return result


# -- vectors -------------------------------------------------------------------------------------

class Vectors:
    """Image and text vectors through tagwatch's own store and pipeline: cached by content and by
    prompt for this model, encoded only when missing."""

    def __init__(self, config: Config, model: LazyModel | None = None) -> None:
        self.config = config
        self.store = Store(config.database)
        self.pipeline = Pipeline(self.store, model or LazyModel(config.model), None, config.tagging)

    def close(self) -> None:
        self.pipeline.close()
        self.store.close()

    def images(self, paths: list[str]) -> tuple[dict[str, np.ndarray], int]:
        """Vectors by path (unusable photos are logged and left out), and how many were encoded."""
        before = self.store.stats(self.pipeline.model.identity)["encoded"]
        vectors, _ = self.pipeline.vectors_for(paths, self.config.batch.size)
        return vectors, self.store.stats(self.pipeline.model.identity)["encoded"] - before

    def tags(self, vocabulary: Vocabulary) -> TagMatrix:
        self.pipeline.use_vocabulary(vocabulary)
        assert self.pipeline.tags is not None
        return self.pipeline.tags


def prompt_vocabulary(classes: list[str], templates: tuple[str, ...], source: Path) -> Vocabulary:
    tags = tuple(Tag(keyword=c, prompts=tuple(t.format(c) for t in templates)) for c in classes)
    return Vocabulary(tags=tags, source=source)


def list_vocabulary(classes: list[str], tags: Vocabulary) -> Vocabulary:
    """The classes as the tag list ``tags`` describes them (its prompts, synonyms, synsets)."""
    known = {fold(tag.keyword): tag for tag in tags.tags}
    missing = [c for c in classes if fold(c) not in known]
    if missing:
        raise EvaluationError(f"{tags.source}: class {missing[0]!r} is not a tag in the list"
                              + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    return Vocabulary(tags=tuple(known[fold(c)] for c in classes), source=tags.source)


# -- the hierarchy ------------------------------------------------------------------------------

_WNID = re.compile(r"^n\d{8}$")


def class_paths(classes: list[str], folders_of: dict[str, list[str]], tags: Vocabulary | None,
                wordnet: WordNet) -> list[list[str] | None]:
    """Each class's first WordNet hypernym path (offsets, ``entity`` first), None where WordNet
    cannot place it: its synset in the tag list, else a wnid folder name, else its name."""
    listed = {fold(tag.keyword): tag.synset for tag in tags.tags} if tags is not None else {}
    out: list[list[str] | None] = []
    for name in classes:
        offset = listed.get(fold(name))
        for folder in folders_of.get(name, ()):
            if offset is None and _WNID.match(folder):
                with contextlib.suppress(WordNetError):
                    offset = wordnet.resolve(folder).offset
        if offset is None:
            match = wordnet.match(name)
            offset = match.synset.offset if match.synset is not None else None
        out.append(None if offset is None else [s.offset for s in wordnet.path(wordnet.synset(offset))])
    return out


def parent_accuracy(predicted: np.ndarray, labels: np.ndarray, paths: list[list[str] | None],
                    wordnet: WordNet) -> list[dict[str, Any]]:
    """Top-1 accuracy at each WordNet depth where the classes differ: a prediction counts when its
    class and the true class share their ancestor at that depth."""
    placed = [p for p in paths if p is not None]
    if not placed:
        return []

    def ancestor(index: int, depth: int) -> str:
        path = paths[index]
        return f"class:{index}" if path is None else path[min(depth, len(path) - 1)]

    rows = []
    seen: set[tuple[int, ...]] = set()
    for depth in range(1, max(len(p) for p in placed)):
        levels = [ancestor(c, depth) for c in range(len(paths))]
        distinct = dict.fromkeys(a for a, p in zip(levels, paths, strict=True) if p is not None)
        grouping = tuple(list(distinct).index(a) if a in distinct else -1 - c for c, a in enumerate(levels))
        # one ancestor for all: nothing told apart; one per class: the leaf itself; or the same
        # grouping as a shallower depth (a chain of single children): nothing new to report
        if len(distinct) < 2 or len(distinct) == len(placed) or grouping in seen:
            continue
        seen.add(grouping)
        right = np.array([levels[p] == levels[t] for p, t in zip(predicted, labels, strict=True)])
        names = [wordnet.synset(a).lemmas[0] for a in list(distinct)[:3]]
        rows.append({"depth": depth, "ancestors": len(distinct), "top1": float(right.mean()),
                     "examples": names})
    return rows


# -- evaluations ---------------------------------------------------------------------------------

def evaluate_classes(vectors: Vectors, root: Path, mapping: dict[str, str] | None,
                     prompt_sets: list[tuple[str, ...]], tags: Vocabulary | None = None) -> dict[str, Any]:
    classes, paths, truth, folders_of = read_class_folders(root, mapping)
    vocabularies = [(list(t), prompt_vocabulary(classes, t, root)) for t in prompt_sets]
    if tags is not None:
        vocabularies.append(([f"tag list: {tags.source.name}"], list_vocabulary(classes, tags)))
    found, encoded = vectors.images(paths)
    kept = [i for i, p in enumerate(paths) if p in found]
    if not kept:
        raise EvaluationError(f"{root}: no photo could be read")
    images = np.stack([found[paths[i]] for i in kept])
    labels = np.array([truth[i] for i in kept])
    wordnet = WordNet()
    hierarchy = class_paths(classes, folders_of, tags, wordnet)
    rows = []
    for prompts, vocabulary in vocabularies:
        scores = vectors.tags(vocabulary).scores(images)
        true_scores = scores[np.arange(len(labels)), labels]
        rank = (scores > true_scores[:, None]).sum(axis=1)  # 0: the true class scored best
        rows.append({"prompts": prompts, "top1": float((rank < 1).mean()),
                     "top5": float((rank < 5).mean()),
                     "parents": parent_accuracy(scores.argmax(axis=1), labels, hierarchy, wordnet)})
    return {"dataset": str(root), "classes": len(classes), "images": len(kept),
            "unreadable": len(paths) - len(kept), "encoded": encoded,
            "unplaced": [c for c, p in zip(classes, hierarchy, strict=True) if p is None], "rows": rows}


def _summary(name: str, predicted: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    per_tag = counts(predicted, truth)
    total = micro(per_tag)
    # macro F1 over the tags with a positive, like mAP; a tag's F1 is undefined (None, shown "—")
    # only without positives and predictions, and an undefined value is never averaged as 0
    f1s = [c.f1 for c, has in zip(per_tag, truth.any(axis=0), strict=True) if has and c.f1 is not None]
    return {"thresholds": name, "precision": total.precision, "recall": total.recall, "f1": total.f1,
            "macro_f1": sum(f1s) / len(f1s) if f1s else None, "predicted": total.tp + total.fp}


def evaluate_labels(vectors: Vectors, csv_path: Path, vocabulary: Vocabulary, threshold: float,
                    top_k: int) -> dict[str, Any]:
    rows = read_labels(csv_path)
    keywords = vocabulary.keywords
    index = {fold(k): i for i, k in enumerate(keywords)}  # a label names a tag as keywords are compared
    unknown: dict[str, int] = {}
    for _, labels in rows:
        for label in labels:
            if fold(label) not in index:
                unknown[label] = unknown.get(label, 0) + 1
    found, encoded = vectors.images([p for p, _ in rows])
    rows = [(p, labels) for p, labels in rows if p in found]
    if not rows:
        raise EvaluationError(f"{csv_path}: no photo could be read")
    truth = np.zeros((len(rows), len(keywords)), bool)
    for n, (_, labels) in enumerate(rows):
        truth[n, [index[fold(x)] for x in labels if fold(x) in index]] = True
    scores = vectors.tags(vocabulary).scores(np.stack([found[p] for p, _ in rows]))
    summaries = [_summary(f"global {threshold:g}", chosen_matrix(scores, threshold, top_k), truth)]
    in_use = tag_thresholds(vocabulary.tags, threshold)
    if has_own_thresholds(vocabulary.tags):
        summaries.append(_summary("per-tag (tag list)", chosen_matrix(scores, in_use, top_k), truth))
    mean_ap, aps = mean_average_precision(scores, truth)
    per_tag = counts(chosen_matrix(scores, in_use, top_k), truth)
    tags = [{"tag": k, "positives": int(truth[:, j].sum()), "threshold": float(in_use[j]),
             "precision": per_tag[j].precision, "recall": per_tag[j].recall, "f1": per_tag[j].f1,
             "ap": aps[j]} for j, k in enumerate(keywords)]
    return {"labels_file": str(csv_path), "images": len(rows), "tags": len(keywords),
            "encoded": encoded, "top_k": top_k, "unknown_labels": unknown, "summaries": summaries,
            "map": mean_ap, "per_tag": tags}


# -- output --------------------------------------------------------------------------------------

def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}%"


def prompt_label(templates: list[str]) -> str:
    return " + ".join(t if t.startswith("tag list: ") else "[tag]" if t == BARE else t.replace("{}", "[tag]")
                      for t in templates)


def print_classes(result: dict[str, Any]) -> None:
    name = Path(result["dataset"]).name
    print(f"{name}: {result['images']} photos in {result['classes']} classes; "
          f"{result['encoded']} encoded now, the rest from the cache"
          + (f"; {result['unreadable']} unreadable (skipped)" if result["unreadable"] else ""))
    labels = [f"{name} {prompt_label(r['prompts'])}" for r in result["rows"]]
    width = max(len("Model"), *map(len, labels))
    print(f"{'Model':<{width}}  {'Top-1 accuracy':>14}  {'Top-5 accuracy':>14}")
    for label, row in zip(labels, result["rows"], strict=True):
        print(f"{label:<{width}}  {_pct(row['top1']):>14}  {_pct(row['top5']):>14}")
    row = result["rows"][-1]
    if row["parents"]:
        print(f"Top-1 at the parent level ({prompt_label(row['prompts'])}): a prediction counts when it "
              "shares the true class's WordNet ancestor at depth k")
        print(f"{'depth':>5}  {'ancestors':>9}  {'top-1':>8}  e.g.")
        for level in row["parents"]:
            print(f"{level['depth']:>5}  {level['ancestors']:>9}  {_pct(level['top1']):>8}  "
                  f"{', '.join(level['examples'])}")
        print(f"{'leaf':>5}  {result['classes']:>9}  {_pct(row['top1']):>8}")
    if result["unplaced"]:
        print(f"not in WordNet (counted only when exactly right): {', '.join(result['unplaced'][:10])}"
              + (f" and {len(result['unplaced']) - 10} more" if len(result["unplaced"]) > 10 else ""))


def print_labels(result: dict[str, Any]) -> None:
    print(f"{Path(result['labels_file']).name}: {result['images']} photos, {result['tags']} tags, "
          f"top_k {result['top_k']}; {result['encoded']} encoded now, the rest from the cache")
    for label, n in sorted(result["unknown_labels"].items()):
        print(f"  label {label!r} ({n} photos) is not a tag in the list: ignored")
    print(f"{'thresholds':<20}  {'precision':>9}  {'recall':>8}  {'F1':>8}  {'macro-F1':>8}  "
          f"{'tags given':>10}")
    for s in result["summaries"]:
        print(f"{s['thresholds']:<20}  {_pct(s['precision']):>9}  {_pct(s['recall']):>8}  "
              f"{_pct(s['f1']):>8}  {_pct(s['macro_f1']):>8}  {s['predicted']:>10}")
    print(f"mAP {_pct(result['map'])} (mean average precision over the tags that have a positive)")
    width = max(len("tag"), *(len(t["tag"]) for t in result["per_tag"]))
    print(f"{'tag':<{width}}  {'pos':>4}  {'threshold':>9}  {'precision':>9}  {'recall':>8}  {'F1':>8}  "
          f"{'AP':>8}")
    for t in result["per_tag"]:
        print(f"{t['tag']:<{width}}  {t['positives']:>4}  {t['threshold']:>9.4f}  {_pct(t['precision']):>9}  "
              f"{_pct(t['recall']):>8}  {_pct(t['f1']):>8}  {_pct(t['ap']):>8}")


# -- entry point ---------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, help="tagwatch config (default: the user's)")
    common.add_argument("--database", type=Path,
                        help="the store holding cached vectors (default: the config's database)")
    common.add_argument("--json", action="store_true", help="print the results as JSON")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="kind", required=True)
    classes = sub.add_parser("classes", parents=[common], help="top-1/top-5 on a class-folder dataset")
    classes.add_argument("dataset", type=Path, metavar="DATASET")
    classes.add_argument("--mapping", type=Path, help="folder → tag (JSON object or 'folder tag' lines)")
    classes.add_argument("--template", action="append", default=[], metavar="T",
                         help="another template row, e.g. 'a picture of a {}.' (repeatable)")
    classes.add_argument("--tags", type=Path, help="a tag list whose prompts, synonyms and synsets "
                         "describe the classes (adds a row; its synsets place the classes in WordNet)")
    labels = sub.add_parser("labels", parents=[common], help="precision/recall/F1/mAP on a labels CSV")
    labels.add_argument("csv", type=Path, metavar="LABELS.csv")
    labels.add_argument("--tags", type=Path, help="the tag list (default: the config's)")
    labels.add_argument("--threshold", type=float, help="global threshold (default: the config's)")
    labels.add_argument("--top-k", type=int, help="most tags per photo (default: the config's)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(message)s")
    started = time.monotonic()
    try:
        config = load_config(args.config)
        if args.database:
            config = replace(config, database=args.database.expanduser().absolute())
        vectors = Vectors(config)
        try:
            if args.kind == "classes":
                for template in args.template:
                    if template.count("{}") != 1:
                        raise EvaluationError(f"--template {template!r} must contain '{{}}' exactly once")
                mapping = read_mapping(args.mapping) if args.mapping else None
                prompt_sets = [(BARE,), config.tagging.templates, *((t,) for t in args.template)]
                tags = (load_configured(args.tags.expanduser().absolute(), config.tagging) if args.tags
                        else None)
                result = evaluate_classes(vectors, args.dataset, mapping, list(dict.fromkeys(prompt_sets)),
                                          tags)
            else:
                tags = args.tags.expanduser().absolute() if args.tags else config.tags
                vocabulary = load_configured(tags, config.tagging)
                threshold = config.tagging.threshold if args.threshold is None else args.threshold
                top_k = config.tagging.top_k if args.top_k is None else args.top_k
                result = evaluate_labels(vectors, args.csv, vocabulary, threshold, top_k)
        finally:
            vectors.close()
    except (EvaluationError, ConfigError, VocabularyError, ModelError, StoreError, WordNetError) as exc:
        print(f"evaluate: error: {exc}", file=sys.stderr)
        return 2
    result["seconds"] = round(time.monotonic() - started, 2)
    try:
        if args.json:
            print(json.dumps(result, indent=2, ensure_ascii=False))
        elif args.kind == "classes":
            print_classes(result)
        else:
            print_labels(result)
        if not args.json:
            print(f"({result['seconds']} s)")
    except BrokenPipeError:  # `evaluate.py … | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    return 0


if __name__ == "__main__":
    sys.exit(main())
