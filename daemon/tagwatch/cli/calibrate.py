"""``tagwatch calibrate EXAMPLES_DIR``: per-tag thresholds from example photos, written into the list."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..calibrate import (
    NEGATIVES,
    TagResult,
    calibrate,
    doubts,
    is_negatives,
    kept_line,
    labels,
    read_examples,
    render_table,
    save_thresholds,
    to_write,
)
from ..config import Config
from ..logs import shown
from ..scoring import tag_thresholds
from ..store import Store
from .common import UsageError, load, log, make_pipeline, with_flags
from .completion import tag_lists
from .progress import Progress


@dataclass(frozen=True)
class Calibration:
    results: list[TagResult]
    keywords: list[str]  # the whole tag list, in order
    photos: int  # example photos with a vector
    pictures: int  # of which different pictures (a copy in another folder is the same picture)
    encoded: int  # of which encoded now (the rest came from the cache)


def measure(config: Config, root: Path,
            progress: Callable[[int], Progress] = lambda total: Progress(total, "calibrate")) -> Calibration:
    """Score the example photos under ``root`` and choose each tag's threshold."""
    folders = read_examples(root)
    store = Store(config.database)
    try:
        pipeline = make_pipeline(config, store, None)
        try:
            assert pipeline.vocabulary is not None and pipeline.tags is not None
            tags = pipeline.vocabulary.tags
            keywords = pipeline.vocabulary.keywords
            ancestors = {tag.keyword: tag.parents for tag in tags}
            labels(folders, keywords, ancestors, root)  # a misnamed folder fails before any encoding
            encoded_before = store.stats(pipeline.model.identity)["encoded"]
            paths = list(dict.fromkeys(p for photos in folders.values() for p in photos))
            vectors: dict[str, np.ndarray] = {}
            keys: dict[str, bytes] = {}  # path → content key: the picture, as the cache knows it
            size = config.batch.size
            with progress(len(paths)) as bar:
                for start in range(0, len(paths), size):
                    found, _ = pipeline.vectors_for(paths[start:start + size], size,  # failures are logged
                                                    keys=keys)
                    vectors.update(found)
                    bar.advance(len(paths[start:start + size]))
            encoded = store.stats(pipeline.model.identity)["encoded"] - encoded_before
        finally:
            pipeline.close()
    finally:
        store.close()
    usable = {name: [keys[p] for p in photos if p in vectors] for name, photos in folders.items()}
    for name, photos in usable.items():
        if not is_negatives(name) and not photos:
            log.warning("%s: no usable example photo; its tag keeps its threshold", root / name)
    _warn_filed_both_ways(folders, keys, root)
    data = labels(usable, keywords, ancestors, root)
    if not data.columns:
        raise UsageError(f"{root}: no tag has a usable example photo")
    by_key = {keys[p]: vector for p, vector in vectors.items()}
    scores = pipeline.tags.scores(np.stack([by_key[k] for k in data.pictures]))
    results = calibrate(scores, data, keywords, tag_thresholds(tags, config.tagging.threshold))
    for result in results:
        if not result.negatives:
            log.warning("%r: no negative example: its threshold comes from its %d positive%s alone, so "
                        "nothing says how low another photo may score; add photos that should not get it "
                        "to %s (or examples of other tags in their folders)", result.keyword,
                        result.positives, "" if result.positives == 1 else "s", root / NEGATIVES)
        if doubt := doubts(result, root):
            log.warning("%s", doubt)
    return Calibration(results, list(keywords), len(vectors), len(data.pictures), encoded)


def _warn_filed_both_ways(folders: dict[str, list[str]], keys: dict[str, bytes], root: Path) -> None:
    """A picture in ``none`` that a tag's folder holds too (a copy filed twice) counts as that tag's
    example, not as a photo that should get no tag: said once per copy in ``none``, naming where else
    it is, as the counts would otherwise hide it."""
    filed: dict[bytes, list[str]] = {}
    for name, photos in folders.items():
        if not is_negatives(name):
            for path in photos:
                if path in keys:
                    filed.setdefault(keys[path], []).append(name)
    for name, photos in folders.items():
        if is_negatives(name):
            for path in photos:
                tags = filed.get(keys.get(path, b""), [])
                if tags:
                    log.warning("%s: the same picture is in %s too: counted as an example of %s, not of "
                                "a photo that should get no tag", shown(path),
                                ", ".join(f"{t}/" for t in tags), ", ".join(tags))


def write(config: Config, calibration: Calibration) -> str:
    """Write the thresholds that change (:func:`tagwatch.calibrate.save_thresholds`, which the review
    page's tag page uses too, and like it nothing for a tag whose threshold stays: see
    :func:`tagwatch.calibrate.calibrate`); returns what to tell the user."""
    thresholds = to_write(calibration.results)
    if not thresholds:
        return f"nothing written: every calibrated tag keeps its threshold; {config.tags} is unchanged"
    return save_thresholds(config, calibration.keywords, thresholds)


def calibrate_func(args: argparse.Namespace) -> int:
    config = with_flags(load(args), args)
    calibration = measure(config, Path(args.examples).expanduser().absolute())
    copies = (f": {calibration.pictures} pictures, copies counted once"
              if calibration.pictures < calibration.photos else "")
    print(f"{calibration.photos} example photos{copies} ({calibration.encoded} encoded now, the rest from "
          f"the cache); decisions are score > threshold, top_k not applied")
    sys.stdout.write(render_table(calibration.results))
    if kept := kept_line(calibration.results):
        print(kept)
    if args.dry_run:
        print("dry run: the tag list was not changed")
        return 0
    print(write(config, calibration))
    return 0


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    calibrate = sub.add_parser("calibrate", parents=[common],
                               help="per-tag thresholds from example photos, written into the tag list")
    calibrate.add_argument("examples", metavar="EXAMPLES_DIR",
                           help=f"one folder of example photos per tag, named as its keyword, and "
                                f"'{NEGATIVES}' for photos that should get no tag")
    calibrate.add_argument("--tags", metavar="FILE", help="the tag list to calibrate (default: the config's)"
                           ).completer = tag_lists  # type: ignore[attr-defined]  # argcomplete's
    calibrate.add_argument("--dry-run", action="store_true", help="print the table; change no file")
    calibrate.set_defaults(func=calibrate_func)
