"""``tagwatch explain IMAGE``: every tag's score for one photo, and why it was or was not written."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from ..config import Config
from ..keys import ImageError
from ..store import Store
from ..tagger import select
from .common import UsageError, load, make_pipeline


@dataclass(frozen=True)
class Line:
    rank: int | None  # None: a keyword only an override adds, not in the tag list
    score: float | None
    keyword: str
    verdict: str


@dataclass(frozen=True)
class Explanation:
    path: str
    model: str
    lines: list[Line]  # best score first; override-only keywords last


def explain(config: Config, image: str) -> Explanation:
    """Score one photo against the tag list and give each tag its verdict."""
    path = str(Path(image).expanduser().absolute())
    store = Store(config.database)
    try:
        pipeline = make_pipeline(config, store, None)
        try:
            vector = pipeline.vector_for(path)
        except ImageError as exc:
            raise UsageError(f"{path}: {exc}") from None
        finally:
            pipeline.close()
    finally:
        store.close()
    assert pipeline.tags is not None and pipeline.vocabulary is not None
    scores = pipeline.tags.scores(vector)[0]
    limits = pipeline.thresholds
    chosen = set(select(scores, limits, config.tagging.top_k)[0])
    override = pipeline.overrides.for_path(path)
    lines = []
    for rank, index in enumerate(sorted(range(len(scores)), key=lambda i: -scores[i]), start=1):
        keyword = pipeline.tags.keywords[index]
        if keyword in override.remove:
            verdict = "removed by an override"
        elif keyword in override.add:
            verdict = "added by an override"
        elif index in chosen:
            verdict = "TAGGED"
        elif scores[index] > limits[index]:
            verdict = "above threshold, beyond top_k"
        else:
            verdict = ""
        own = pipeline.vocabulary.tags[index].threshold
        if own is not None:
            verdict = f"{verdict} (its threshold {own:+.4f})".lstrip()
        lines.append(Line(rank, float(scores[index]), keyword, verdict))
    lines += [Line(None, None, keyword, "added by an override") for keyword in override.add
              if keyword not in pipeline.tags.keywords]
    return Explanation(path, pipeline.model.identity, lines)


def render(explanation: Explanation, config: Config) -> str:
    out = [f"{explanation.path}: threshold {config.tagging.threshold}, top_k {config.tagging.top_k}, "
           f"model {explanation.model}"]
    for line in explanation.lines:
        if line.rank is None or line.score is None:
            out.append(f"{'':>5}  {'':>7}  {line.keyword:<40} {line.verdict}")
        else:
            out.append(f"{line.rank:>5}  {line.score:+.4f}  {line.keyword:<40} {line.verdict}".rstrip())
    return "\n".join(out) + "\n"


def explain_func(args: argparse.Namespace) -> int:
    config = load(args)
    print(render(explain(config, args.image), config), end="")
    return 0


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    explain = sub.add_parser("explain", parents=[common], help="every tag's score for one photo")
    explain.add_argument("image", metavar="IMAGE")
    explain.set_defaults(func=explain_func)
