"""``tagwatch explain IMAGE``: each tag's score for one photo, and why it was or was not written."""

from __future__ import annotations

import argparse
import shlex
import shutil
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from .. import logs
from ..captions import Captions, Reading
from ..casefold import fold, folded
from ..config import Config
from ..geotag import Places
from ..metadata import ExifTool, Keywords, KeywordWriter, MetadataError
from ..pipeline import NOT_UTF8
from ..store import DECLINED, FAILED, PENDING, UNTAGGED, Store, utf8_name
from ..tagger import select
from ..wording import resembling
from .common import (
    UsageError,
    add_tagging_flags,
    load,
    log,
    make_pipeline,
    not_a_file,
    photo_path,
    with_flags,
)
from .completion import list_keywords

# A keyword tagwatch wrote that a person then took out of the file (the ledger says declined)
TAKEN_OUT = "not written: a person took it out of this photo"
# A photo ``untag`` set aside: the daemon writes nothing into it until a scan names it
SET_ASIDE = "not written: set aside by untag"


class Unusable(Exception):
    """The photo cannot be read or decoded; the pipeline has logged why, as ``scan`` would."""


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
    lines: list[Line]  # best score first; then keywords only an override or expansion adds
    place: list[str] = field(default_factory=list)  # the photo's coordinates and place ([places] on)
    caption: list[str] = field(default_factory=list)  # its caption and candidates ([captions] on)
    set_aside: bool = False  # ``untag`` took its keywords out: the verdicts are what a scan would do
    unwritten: str = ""  # why the verdicts are not (yet) in the file: never tagged, pending, failed


def explain(config: Config, image: str) -> Explanation:
    """Score one photo against the tag list and give each tag its verdict; with expansion on, the
    levels above the tags it gets are written too, and say which tag they come from."""
    path = photo_path(image)
    given = Path(image).expanduser().absolute()  # named as given, as scan names it
    problem = not_a_file(given)
    if problem is None and not utf8_name(path):  # exiftool's argument pipe could not take it
        problem = NOT_UTF8
    if problem is not None:  # a FIFO would block the read for ever, /dev/zero fill the memory
        log.warning("%s: skipped: %s", logs.shown(str(given)), problem)
        raise Unusable(problem)
    store = Store(config.database)
    try:
        pipeline = make_pipeline(config, store, None)
        try:
            captions: dict[str, str] = {}
            vectors, errors = pipeline.vectors_for([path], captions=captions)
            if path not in vectors:  # the pipeline's line said why; a second, as an error, repeated it
                raise Unusable(errors.get(path, "could not be encoded"))
            vector = vectors[path]
            reading = pipeline.read_captions([(captions.get(path), vector)])[0]
        finally:
            pipeline.close()
        removes = pipeline.overrides.for_path(path).removes()
        place = place_lines(config, store, path, removes) if config.places.enabled else []
        row = store.file(path)
        declined = set(store.ledger(row.id, DECLINED)) if row is not None else set()
        set_aside = row is not None and row.state == UNTAGGED
        unwritten = ("not tagged yet: none of the verdicts below is in the file"
                     if row is None or row.state == PENDING else
                     f"not written: it could not be tagged ({row.error}); none of the verdicts below is "
                     "in the file" if row.state == FAILED else "")
    finally:
        store.close()
    assert pipeline.tags is not None and pipeline.vocabulary is not None
    scores = pipeline.tags.scores(vector)[0]
    limits = pipeline.thresholds
    picked = select(scores, limits, config.tagging.top_k)[0]
    chosen = set(picked)
    override = pipeline.overrides.for_path(path)
    kept = override.kept_out(declined)  # case-folded: what a person took out stays out
    # a level expansion writes → the best predicted tag below it and its score, which the level carries
    keywords = pipeline.tags.keywords
    implied = pipeline.expansion.implied([(keywords[i], float(scores[i])) for i in picked], kept)
    shown = [implied[k][1] if k in implied else float(s) for k, s in zip(keywords, scores, strict=True)]
    lines = []
    removes, adds = override.removes(), folded(override.add)  # as the write compares them, whatever the case
    order = sorted(range(len(scores)), key=lambda i: (-shown[i], keywords[i] in implied))  # level after tag
    for rank, index in enumerate(order, start=1):
        keyword = pipeline.tags.keywords[index]
        if fold(keyword) in removes:
            verdict = "removed by an override"
        elif fold(keyword) in adds:
            verdict = "added by an override"
        elif fold(keyword) in kept and (index in chosen or keyword in implied):
            verdict = TAKEN_OUT
        elif index in chosen:
            verdict = "TAGGED"
        elif keyword in implied:
            verdict = f"TAGGED: a level above {implied[keyword][0]}"
        elif scores[index] > limits[index]:
            verdict = "above threshold, beyond top_k"
        else:
            verdict = ""
        if keyword in implied:  # its score is the tag's below; its own says why it is no prediction
            verdict = f"{verdict} (its own score {scores[index]:+.4f})".lstrip()
        own = pipeline.vocabulary.tags[index].threshold
        if own is not None:
            verdict = f"{verdict} (its threshold {own:+.4f})".lstrip()
        lines.append(Line(rank, shown[index], keyword, verdict))
    listed = folded(pipeline.tags.keywords)
    lines += [Line(None, None, keyword, "added by an override") for keyword in override.add
              if fold(keyword) not in listed]
    # levels above a predicted tag that are no tag of the list (the photo vocabulary's "animal")
    lines += [Line(None, score, level, "removed by an override" if fold(level) in override.removes()
                   else TAKEN_OUT if fold(level) in kept
                   else f"TAGGED: a level above {below}") for level, (below, score) in implied.items()
              if level not in pipeline.tags.keywords and level not in override.add]
    said = caption_lines(pipeline.captions, reading, override.remove) if pipeline.captions else []
    if set_aside:
        lines = [replace(line, verdict=aside(line.verdict)) for line in lines]
    return Explanation(path, pipeline.model.identity, lines, place, said, set_aside, unwritten)


def aside(verdict: str) -> str:
    """A verdict for a photo ``untag`` set aside: what would be written is not, until a scan names it
    (the photo carries none of it, and the daemon leaves it alone)."""
    if verdict.startswith(("TAGGED", "added")):
        return f"{SET_ASIDE} (a scan naming it: {verdict})"
    return verdict


def caption_lines(captions: Captions, reading: Reading | None, removed: Sequence[str]) -> list[str]:
    """The caption, and each candidate keyword with its score and what became of it."""
    cfg = captions.cfg
    if reading is None:
        return [f"caption: none ({captions.identity})"]
    out = [f"caption: {reading.caption!r} ({captions.identity}); candidates scored with the tagging model, "
           f"threshold {cfg.threshold}, top_k {cfg.top_k}"]
    for rank, scored in enumerate(reading.scored, start=1):
        verdict = ("removed by an override" if scored.kept and scored.text in removed
                   else "TAGGED" if scored.kept else scored.reason)
        kind = "noun" if scored.noun else "modifier"
        out.append(f"{rank:>5}  {scored.score:+.4f}  {scored.text:<40} {kind:<8} {verdict}".rstrip())
    return out


def place_lines(config: Config, store: Store, path: str, removes: Collection[str] = ()) -> list[str]:
    """``explain``'s account of a photo's place: coordinates, the place found, its distance, and the
    levels its corrections take out (``removes``, case-folded)."""
    if shutil.which("exiftool") is None:
        return ["place: not looked up (exiftool not found)"]
    exiftool = ExifTool()
    try:
        writer = KeywordWriter(exiftool, config.write)
        photo = writer.read(Path(path))
        side = writer.sidecar_for(Path(path))
        sidecar_gps = writer.sidecar_gps(Path(path), writer.read(side) if side.is_file() else Keywords())
    except MetadataError as exc:
        return [f"place: not looked up ({exc})"]
    finally:
        exiftool.close()
    places = Places(config.places, store)
    return places.describe(places.decide(path, None, photo.gps, sidecar_gps, removes))


def render(explanation: Explanation, config: Config, top: int = 15, names: Sequence[str] = ()) -> str:
    """The header and the ``top`` best tags (0: all), with any tag further down that is written or
    that an override adds or removes; or, with ``names``, just those tags wherever they rank."""
    cap = config.tagging.top_k or "0 (no cap)"
    out = [f"{logs.shown(explanation.path)}: threshold {config.tagging.threshold}, top_k {cap}, "
           f"model {explanation.model}", *explanation.place]
    if explanation.unwritten:
        out.append(explanation.unwritten)
    if explanation.set_aside:
        out.append("set aside by `tagwatch untag`: no keyword is written into it and the daemon leaves it "
                   f"alone; `tagwatch scan {shlex.quote(explanation.path)}` tags it again")
    if names:
        named = (_named(explanation, name, config) for name in names)
        shown = list({id(line): line for line in named}.values())  # a tag named twice is shown once
    else:
        shown = [line for line in explanation.lines if not top or line.rank is None or line.rank <= top
                 or line.verdict.startswith(("TAGGED", "added", "removed", SET_ASIDE))
                 or line.verdict == TAKEN_OUT]
    for line in shown:  # a level that is no tag has a score (the tag's below it) but no rank
        rank = "" if line.rank is None else str(line.rank)
        score = "" if line.score is None else f"{line.score:+.4f}"
        out.append(f"{rank:>5}  {score:>7}  {line.keyword:<40} {line.verdict}".rstrip())
    hidden = len(explanation.lines) - len(shown)
    if hidden and not names:
        out.append(f"... {hidden} more tags score lower (--top 0 lists them all, --tag NAME one of them)")
    out += explanation.caption
    return "\n".join(out) + "\n"


def _named(explanation: Explanation, name: str, config: Config) -> Line:
    """The line of the tag ``--tag NAME`` names: case aside, as a list's keywords are one tag
    whatever their case (``RED`` is ``red``); else an error with the nearest keywords."""
    known = {line.keyword: line for line in explanation.lines}
    if name in known:
        return known[name]
    folded = {fold(keyword): line for keyword, line in reversed(known.items())}  # the first wins
    if fold(name) in folded:
        return folded[fold(name)]
    close = resembling(name, known)
    hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
    raise UsageError(f"{name!r}: not in the tag list {config.tags}{hint}")


def explain_func(args: argparse.Namespace) -> int:
    """Exit status 1 for a photo it cannot use, as ``scan``'s, with the log's one line saying why."""
    config = with_flags(load(args), args)
    try:
        explanation = explain(config, args.image)
    except Unusable:
        return 1
    print(render(explanation, config, args.top, args.tag or ()), end="")
    return 0


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"not a whole number >= 0: {text!r}")
    return int(text)


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    explain = sub.add_parser("explain", parents=[common],
                             help="the best tags' scores for one photo, and which ones it gets")
    explain.add_argument("image", metavar="IMAGE",
                         help="a photo (tagged or not: explain writes nothing into it); its scores come "
                              "from the config's model and tag list, or those given below")
    explain.add_argument("--top", type=_count, default=15, metavar="N",
                         help="list the N best tags (default 15; 0: every tag)")
    explain.add_argument("--tag", action="append", metavar="NAME",
                         help="list just this tag, wherever it ranks (repeatable)"
                         ).completer = list_keywords  # type: ignore[attr-defined]  # argcomplete's
    add_tagging_flags(explain, writing=False)
    explain.set_defaults(func=explain_func)
