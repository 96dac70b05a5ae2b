"""``tagwatch export [PATH…]``: each photo's tags as JSON or CSV, re-scored from cached vectors."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from ..config import Config
from ..export import (
    Exported,
    as_written,
    cached_vectors,
    kept_out,
    render_csv,
    render_json,
    score,
    with_places,
)
from ..geotag import Places
from ..logs import shown
from ..pipeline import NOT_UTF8, Pipeline, not_utf8_names
from ..scoring import tag_thresholds
from ..store import Store
from ..wording import counted
from .common import UsageError, expand, load, make_pipeline
from .progress import Progress


def export(config: Config, given: Sequence[str],
           progress: Callable[[int], Progress] = lambda total: Progress(total, "export"),
           skipped: list[str] | None = None) -> tuple[list[Exported], dict[str, str]]:
    """Each named photo (default: every photo in the database) scored from its cached vector against
    the current tag list (with the levels above its tags that expansion writes), as written into it
    (:func:`tagwatch.export.as_written`: its corrections, not what a person took out), with its place
    keywords (``[places]`` on) and its caption, caption keywords and scored candidates (``[captions]``
    on, from the cached captions: no photo is captioned here); and for each photo without a vector,
    the reason, as for each photo whose name is not valid UTF-8 (scan and the daemon refuse it too:
    :func:`tagwatch.pipeline.not_utf8_names`).  ``skipped`` receives the named paths that are no photo
    (none there, another file)."""
    if not config.database.exists():
        raise UsageError(f"{config.database}: no database yet; `tagwatch scan` or `tagwatch run` makes it")
    store = Store(config.database)
    try:
        pipeline = make_pipeline(config, store, None)  # encodes prompts without a cached vector, no photo
        try:
            named = expand(given, config.exclude, skipped=skipped, watched=config.watch)
            paths = list(dict.fromkeys(named)) if given else sorted(store.files_under("/"))
            refused = set(not_utf8_names(paths))  # scan's rule: a name no JSON or CSV reader would load
            paths = [p for p in paths if p not in refused]
            keys: dict[str, bytes] = {}
            with progress(len(paths)) as bar:
                vectors, missing = cached_vectors(store, pipeline.model.identity, paths, bar.advance, keys)
            missing.update(dict.fromkeys(refused, NOT_UTF8))
            assert pipeline.vocabulary is not None and pipeline.tags is not None
            thresholds = tag_thresholds(pipeline.vocabulary.tags, config.tagging.threshold)
            kept = kept_out(store, pipeline.overrides, keys)
            results = score(vectors, pipeline.tags, thresholds, config.tagging.top_k, pipeline.expansion,
                            kept)
            if pipeline.captions is not None:  # candidates' prompts may need the model: before close
                results = with_captions(pipeline, results, vectors, keys)
        finally:
            pipeline.close()
        if config.places.enabled:
            results = with_places(results, store, Places(config.places, store), pipeline.overrides)
        results = as_written(results, pipeline.overrides, kept)
    finally:
        store.close()
    return results, missing


def with_captions(pipeline: Pipeline, results: list[Exported], vectors: dict[str, np.ndarray],
                  keys: dict[str, bytes]) -> list[Exported]:
    """Each photo's caption keywords after its list tags, with its caption and scored candidates."""
    assert pipeline.captions is not None
    captions = pipeline.captions.cache.get(keys.values())
    readings = pipeline.read_captions([(captions.get(keys[r.path]), vectors[r.path]) for r in results])
    return [replace(r, tags=r.tags + reading.keywords, caption=reading.caption,
                    candidates=tuple((s.text, s.score) for s in reading.scored)) if reading else r
            for r, reading in zip(results, readings, strict=True)]


def export_func(args: argparse.Namespace) -> int:
    config = load(args)
    skipped: list[str] = []
    results, missing = export(config, args.paths, skipped=skipped)
    for path, reason in sorted(missing.items()):
        print(f"{shown(path)}: not exported: {reason}", file=sys.stderr)
    render = render_json if args.format == "json" else render_csv
    sys.stdout.write(render(results, os.getcwd(), args.scores, config.captions.enabled))
    # how many went out and how many did not, apart: "3 photos; 3 not exported" read as a contradiction
    said = [f"{counted(len(results), 'photo')} exported"]
    if missing:
        said.append(f"{counted(len(missing), 'photo')} left out, each named above with why")
    if skipped:
        said.append(f"{counted(len(skipped), 'named path')} skipped")  # as scan says it
    print("export: " + "; ".join(said), file=sys.stderr)
    return 1 if skipped else 0  # a photo left out is listed, not an error: the rest is exported whole


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    export = sub.add_parser("export", parents=[common],
                            help="print each photo's tags (JSON or CSV), re-scored from cached vectors "
                                 "against the current tag list; encodes and writes no photo")
    export.add_argument("paths", nargs="*", metavar="PATH",
                        help="photos or folders (default: every photo in the database)")
    export.add_argument("--format", choices=("json", "csv"), default="json", help="output format (json)")
    export.add_argument("--scores", action="store_true", help="each tag's score too")
    export.set_defaults(func=export_func)
