"""``tagwatch tags check FILE``: validate a tag list and report tags whose text vectors nearly match."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from ..config import Config
from ..encoder import LazyModel
from ..pipeline import Pipeline
from ..store import Store
from ..tagger import NEAR_DUPLICATE, near_duplicates
from ..vocabulary import Vocabulary, load_vocabulary
from .common import load, use_vocabulary


@dataclass(frozen=True)
class Check:
    vocabulary: Vocabulary
    encoded: int  # prompts encoded now (the rest came from the cache)
    model: str
    pairs: list[tuple[float, str, str]]  # near-duplicate tags: cosine, a, b


def check(config: Config, path: Path) -> Check:
    """Load the list (errors: one line naming the file), encode its prompts, find near-duplicates."""
    vocabulary = load_vocabulary(path, config.tagging.templates)
    store = Store(config.database)
    try:
        pipeline = Pipeline(store, LazyModel(config.model), None, config.tagging)
        try:
            encoded = use_vocabulary(pipeline, store, vocabulary)
        finally:
            pipeline.close()
    finally:
        store.close()
    assert pipeline.tags is not None
    return Check(vocabulary, encoded, pipeline.model.identity, near_duplicates(pipeline.tags))


def render(result: Check, path: Path) -> str:
    vocabulary = result.vocabulary
    out = [f"warning: {warning}" for warning in vocabulary.warnings]
    prompts = len(vocabulary.prompts())
    own = sum(tag.threshold is not None for tag in vocabulary.tags)
    nested = sum(bool(tag.parents) for tag in vocabulary.tags)
    out.append(f"{path}: {len(vocabulary.tags)} tags, {prompts} prompts ({result.encoded} encoded now, "
               f"{prompts - result.encoded} cached), {own} with their own threshold, {nested} with a parent")
    if result.pairs:
        plural = "" if len(result.pairs) == 1 else "s"
        out.append(f"near-duplicates: {len(result.pairs)} pair{plural} of tags whose text vectors have "
                   f"cosine >= {NEAR_DUPLICATE} (model {result.model}); each pair fires together:")
        out += [f"  {score:.4f}  {a}  ~  {b}" for score, a, b in result.pairs]
    else:
        out.append(f"no near-duplicates (no two tags with text cosine >= {NEAR_DUPLICATE})")
    return "\n".join(out) + "\n"


def check_func(args: argparse.Namespace) -> int:
    config = load(args)
    path = Path(args.file).expanduser()
    print(render(check(config, path), path), end="")
    return 0


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    tags = sub.add_parser("tags", parents=[common], help="work with tag lists")
    tags_sub = tags.add_subparsers(dest="tags_command", required=True, metavar="ACTION")
    check = tags_sub.add_parser("check", parents=[common],
                                help="validate a tag list (.txt or .toml) and report near-duplicate tags")
    check.add_argument("file", metavar="FILE")
    check.set_defaults(func=check_func)
