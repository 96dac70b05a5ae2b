"""``tagwatch calibrate``: per-tag thresholds learnt from a few example photos per tag.

The examples folder holds one folder per tag, named as its keyword (compared as keywords are:
case and Unicode normalisation aside), plus ``none`` for photos that should get none of the tags.
Every picture (copies are one) is a positive for its folders' tags and a negative for every other
tag, except that a photo of a child tag (``golden retriever``) says nothing about its ancestors
(``dog``, ``animal``): it is left out of their counts.  Each tag gets the threshold whose decisions
``score > threshold`` have the best F1 on its examples.

The thresholds are written into the rich tag list by editing its text, so a person's comments,
order and layout survive; a plain ``.txt`` list gets a ``.toml`` twin instead, naming the WordNet
sense each of its tags was placed by, so the twin writes the same keywords under the same paths.  Both
writes are checked by parsing the result back before the file is atomically replaced.
"""

from __future__ import annotations

import copy
import os
import re
import tomllib
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import editing, write_atomic
from .casefold import fold
from .config import Config, default_config_path, is_builtin_tag_list
from .formats import IMAGE_SUFFIXES
from .scoring import Counts, best_threshold, counts
from .vocabulary import Vocabulary, load_configured, parse_rich_tag_list
from .wording import counted, resembling
from .wordnet import WordNet

NEGATIVES = "none"  # the folder of photos that should get no tag at all


class CalibrationError(ValueError):
    """Calibration cannot go on; the message names the folder or file and says why."""


def is_negatives(name: str) -> bool:
    """Is the folder ``name`` the negatives' (``none``, ``None``)?  Folder names are compared as
    keywords are, so a folder a Mac wrote decomposed or capitalised names what it looks like."""
    return fold(name) == NEGATIVES


# -- examples ------------------------------------------------------------------------------------

def read_examples(root: Path) -> dict[str, list[str]]:
    """Folder name → the photos in it (recursively; hidden names skipped), sorted."""
    if not root.is_dir():
        raise CalibrationError(f"{root}: not a folder of example folders")
    folders: dict[str, list[str]] = {}
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        photos: list[str] = []
        for folder, subfolders, files in os.walk(entry):
            subfolders[:] = [d for d in subfolders if not d.startswith(".")]
            photos += [os.path.join(folder, f) for f in files
                       if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_SUFFIXES]
        folders[entry.name] = sorted(photos)
    if all(map(is_negatives, folders)):
        raise CalibrationError(f"{root}: holds no example folders (one folder per tag, named as its "
                               f"keyword, plus '{NEGATIVES}' for photos that should get no tag)")
    return folders


@dataclass(frozen=True)
class Labels:
    pictures: list[Hashable]  # each once, however many folders hold it
    truth: np.ndarray  # (pictures, tags) bool: the picture is an example of the tag
    considered: np.ndarray  # (pictures, tags) bool: the pair counts (positive or negative)
    columns: list[int]  # the tags that have examples, in tag-list order


def labels(folders: Mapping[str, Sequence[Hashable]], keywords: Sequence[str],
           ancestors: Mapping[str, Sequence[str]], root: Path) -> Labels:
    """The positives and negatives of each tag; a folder that names no tag is an error (a typo
    would otherwise calibrate nothing and say nothing).  ``ancestors`` maps a keyword to its
    ancestors' keywords (a vocabulary tag's ``parents``); a keyword without any may be left out.

    ``folders`` hold pictures, not files: the command passes each photo's content key, so a copy of
    one picture in ``red/`` and ``circle/`` is one picture, a positive of both tags and a negative of
    neither, counted once (keyed by path, each copy was a negative of the other folder's tag)."""
    index = {fold(k): i for i, k in enumerate(keywords)}  # keywords that fold together are refused
    for name in folders:
        if not is_negatives(name) and fold(name) not in index:
            close = resembling(name, keywords)
            hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
            raise CalibrationError(f"{root / name}: no tag with the keyword {name!r} in the tag list{hint}")
    pictures = list(dict.fromkeys(p for photos in folders.values() for p in photos))
    row = {p: i for i, p in enumerate(pictures)}
    truth = np.zeros((len(pictures), len(keywords)), bool)
    considered = np.ones_like(truth)
    for name, photos in folders.items():
        if is_negatives(name):
            continue
        column = index[fold(name)]  # Red/ and red/ are both red's
        above = [index[fold(a)] for a in ancestors.get(keywords[column], ())
                 if fold(a) in index and index[fold(a)] != column]
        for photo in photos:
            truth[row[photo], column] = True
            considered[row[photo], above] = False
    considered |= truth  # a photo filed under the parent too is its positive
    columns = {index[fold(name)] for name, photos in folders.items() if not is_negatives(name) and photos}
    return Labels(pictures, truth, considered, sorted(columns))


# -- thresholds ----------------------------------------------------------------------------------

UNCHANGED = "its threshold already"  # TagResult.kept: writing it would pin, not change, it
NO_BETTER = "F1 no better"  # TagResult.kept: the examples do not prefer the calibrated value
# TagResult.kept: a cosine below 0 says a photo is unlike the tag's prompt; a threshold there gives
# the tag to such photos (three circles, one scoring -0.11, set circle at -0.12: squares got it)
BELOW_ZERO = "below 0, not written"
FEW_EXAMPLES = 5  # fewer positives or negatives than this: the threshold is a guess (said, written)


def same_threshold(a: float, b: float) -> bool:
    """Do two thresholds decide alike?  The daemon compares scores with them in float32, so 0.36 and
    0.36000001430511475 are one threshold.  Neither calibrate nor the review page writes a value
    that is the tag's threshold already: a tag that follows ``[tagging] threshold`` would be pinned
    to today's value and stop following the config."""
    return bool(np.float32(a) == np.float32(b))


@dataclass(frozen=True)
class TagResult:
    keyword: str
    positives: int
    negatives: int
    before: float  # the threshold in use
    after: float  # the calibrated one
    before_counts: Counts
    after_counts: Counts
    kept: str = ""  # why the threshold in use stays (UNCHANGED, NO_BETTER); "" when ``after`` is written


def calibrate(scores: np.ndarray, data: Labels, keywords: Sequence[str],
              current: np.ndarray) -> list[TagResult]:
    """For each tag with examples: the F1-best threshold, and the counts with the old and the new.

    A tag keeps the threshold in use (``kept`` says why) when the calibrated one is the same, and
    when it scores no better F1 on the examples: among equally good thresholds the widest gap's
    middle is only a tie-break, no evidence that the one in use is worse, and moving it would change
    which other photos get the tag for no measured gain.  Nor is a threshold below 0 written
    (BELOW_ZERO): it comes from an example the model scores as unlike the tag, and would give the
    tag to photos unlike it.
    """
    scores = np.asarray(scores, np.float32)
    results = []
    for j in data.columns:
        mask = data.considered[:, j]
        tag_scores, truth = scores[mask, j], data.truth[mask, j]
        after, _ = best_threshold(tag_scores, truth)
        before = float(current[j])
        old = counts((tag_scores > np.float32(before))[:, None], truth[:, None])[0]
        new = counts((tag_scores > np.float32(after))[:, None], truth[:, None])[0]
        better = (new.f1 or 0.0) > (old.f1 or 0.0)  # both defined: a calibrated tag has a positive
        kept = (UNCHANGED if same_threshold(after, before) else BELOW_ZERO if after < 0
                else "" if better else NO_BETTER)
        results.append(TagResult(keywords[j], int(truth.sum()), int((~truth).sum()), before, after,
                                 old, new, kept))
    return results


def to_write(results: Sequence[TagResult]) -> dict[str, float]:
    """keyword → calibrated threshold, for the tags whose threshold calibration changes."""
    return {r.keyword: r.after for r in results if not r.kept}


def kept_line(results: Sequence[TagResult]) -> str:
    """The tags left at the threshold in use and why, one line (empty when every tag moves)."""
    kept = [f"{r.keyword} ({number(r.before)} already)" if r.kept == UNCHANGED else
            f"{r.keyword} ({number(r.after)} calibrated: below 0, not written)" if r.kept == BELOW_ZERO else
            f"{r.keyword} (F1 {_percent(r.after_counts.f1)} at {number(r.after)}, no better than at "
            f"{number(r.before)})" for r in results if r.kept]
    return f"left at the threshold they have: {', '.join(kept)}" if kept else ""


def doubts(result: TagResult, examples: Path) -> str | None:
    """Why ``result``'s threshold is not to be trusted, and what to do, for a warning; None: nothing
    to say.  A threshold below 0 (not written), and one to be written from fewer than FEW_EXAMPLES
    positives or negatives: F1 100% on three photos says little about the rest of the library.  A tag
    with no negative at all has a warning of its own (the command's)."""
    folder, none = examples / result.keyword, examples / NEGATIVES
    if result.kept == BELOW_ZERO:
        return (f"{result.keyword!r}: calibrated to {number(result.after)}, below 0, and not written "
                f"(it keeps {number(result.before)}): a score below 0 says a photo is unlike the tag, "
                "so such a threshold would give it to photos unlike it. One of its examples scores "
                f"that low (the model does not see {result.keyword!r} in it: `tagwatch explain PHOTO` "
                f"shows its score); take it out of {folder}, or add more examples (10 or more, and "
                f"photos that should not get it in {none}), and calibrate again")
    if result.kept or not result.negatives or min(result.positives, result.negatives) >= FEW_EXAMPLES:
        return None
    return (f"{result.keyword!r}: its threshold {number(result.after)} comes from "
            f"{counted(result.positives, 'positive')} and {counted(result.negatives, 'negative')}, too few "
            f"to trust (F1 {_percent(result.after_counts.f1)} on so few says little about your other "
            f"photos); add examples, 10 or more of each (photos that should get it in {folder}, that "
            f"should not in {none}), and calibrate again")


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.0f}%"


def render_table(results: Sequence[TagResult]) -> str:
    """Before/after threshold, precision, recall and F1 of each calibrated tag, one line each; a tag
    that keeps its threshold ends with why (``kept``)."""
    width = max([len("tag"), *(len(r.keyword) for r in results)])
    lines = [f"{'':<{width}}  {'photos':>9}  {'threshold':^15}  {'precision':^13}  {'recall':^13}  "
             f"{'F1':^13}",
             f"{'tag':<{width}}  {'pos':>4} {'neg':>4}  {'before':>7} {'after':>7}  "
             + "  ".join(f"{'before':>6} {'after':>6}" for _ in range(3))]
    for r in results:
        b, a = r.before_counts, r.after_counts
        lines.append(
            f"{r.keyword:<{width}}  {r.positives:>4} {r.negatives:>4}  "
            f"{number(r.before):>7} {number(r.after):>7}  "
            f"{_percent(b.precision):>6} {_percent(a.precision):>6}  "
            f"{_percent(b.recall):>6} {_percent(a.recall):>6}  "
            f"{_percent(b.f1):>6} {_percent(a.f1):>6}" + (f"  kept: {r.kept}" if r.kept else ""))
    return "\n".join(lines) + "\n"


# -- writing the tag list ------------------------------------------------------------------------

_TAG_HEADER = re.compile(r"^\s*\[\[\s*tag\s*\]\]\s*(#.*)?$")
_ANY_HEADER = re.compile(r"^\s*\[\[?\s*[A-Za-z0-9_\-.\"' ]+\]\]?\s*(#.*)?$")
_THRESHOLD = re.compile(r"^(?P<lead>\s*threshold\s*=\s*)(?P<value>[^#\s]+)(?P<rest>.*)$", re.DOTALL)
_KEYWORD = re.compile(r"^(?P<indent>\s*)keyword\s*=")


def number(value: float) -> str:
    """A threshold as TOML writes it: the shortest decimal that reads back as the same float."""
    return repr(float(value))


def set_thresholds(text: str, thresholds: Mapping[str, float], source: Path) -> str:
    """``text`` of a rich tag list with ``threshold = x`` replaced or inserted in each named tag's
    ``[[tag]]`` table; every other character stays as it was."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CalibrationError(f"{source}: not valid TOML: {exc}") from None
    tables = doc.get("tag", [])
    lines = text.splitlines(keepends=True)
    headers = [i for i, line in enumerate(lines) if _TAG_HEADER.match(line)]
    if not isinstance(tables, list) or len(headers) != len(tables):
        raise CalibrationError(f"{source}: cannot find one [[tag]] line per tag table; write each tag as "
                               "its own [[tag]] table to let calibrate edit it")
    newline = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
    expected = copy.deepcopy(doc)
    wanted = {_fold(k): v for k, v in thresholds.items()}
    seen: set[str] = set()
    edits: list[tuple[int, str]] = []  # (table number, new threshold text)
    for number_, table in enumerate(tables):
        keyword = _fold(table.get("keyword")) if isinstance(table, dict) else None
        if keyword in wanted and keyword not in seen:  # a duplicate keyword: the first one counts
            seen.add(keyword)
            edits.append((number_, number(wanted[keyword])))
            expected["tag"][number_]["threshold"] = float(number(wanted[keyword]))
    if set(wanted) - seen:
        raise CalibrationError(f"{source}: no [[tag]] table with keyword "
                               f"{sorted(set(wanted) - seen)[0]!r} to write its threshold into")
    for number_, value in reversed(edits):  # from the end, so earlier line numbers stay valid
        start = headers[number_] + 1
        end = next((i for i in range(start, len(lines)) if _ANY_HEADER.match(lines[i])), len(lines))
        _edit_table(lines, start, end, value, newline)
    result = "".join(lines)
    try:
        ok = tomllib.loads(result) == expected
    except tomllib.TOMLDecodeError:
        ok = False
    if not ok:
        raise CalibrationError(f"{source}: could not place the thresholds safely in this layout; set them "
                               "by hand: " + ", ".join(f"{k!r}: threshold = {number(v)}"
                                                       for k, v in thresholds.items()))
    return result


def _fold(keyword: object) -> str | None:
    """A keyword as the tag list uses it: white space trimmed and folded, like the plain format."""
    return " ".join(keyword.split()) if isinstance(keyword, str) else None


def _edit_table(lines: list[str], start: int, end: int, value: str, newline: str) -> None:
    for i in range(start, end):
        match = _THRESHOLD.match(lines[i])
        if match:
            lines[i] = match["lead"] + value + match["rest"]
            return
    after, indent = start, ""
    for i in range(start, end):
        match = _KEYWORD.match(lines[i])
        if match:
            after, indent = i + 1, match["indent"]
            break
    if after > 0 and not lines[after - 1].endswith(("\n", "\r")):
        lines[after - 1] += newline  # the keyword line was the file's last, without a newline
    lines.insert(after, f"{indent}threshold = {value}{newline}")


def toml_string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    escaped = []
    for ch in text:
        if ch in '"\\':
            escaped.append("\\" + ch)
        elif ord(ch) < 32 or ord(ch) == 127:
            escaped.append(f"\\u{ord(ch):04x}")
        else:
            escaped.append(ch)
    return '"' + "".join(escaped) + '"'


def rich_from_plain(keywords: Sequence[str], thresholds: Mapping[str, float], source: Path,
                    synsets: Mapping[str, str] | None = None) -> str:
    """A ``.toml`` tag list with the plain list's tags, in order, and the calibrated thresholds.

    ``synsets``: keyword → the WordNet sense the plain list placed it by (``dog.n.01``).  A rich tag
    is placed only by a ``synset`` it names, so without one the converted list would lose every
    level above its tags, and sync mode would take them out of the photos.
    """
    synsets = synsets or {}
    parts = [f"# Converted from {source.name} by `tagwatch calibrate`. Tags without a threshold use\n"
             "# [tagging].threshold; prompts come from [tagging].templates; a synset is the WordNet\n"
             f"# sense {source.name} placed the tag by, so its levels stay as they were.\n"]
    for keyword in keywords:
        block = f"\n[[tag]]\nkeyword = {toml_string(keyword)}\n"
        if keyword in synsets:
            block += f"synset = {toml_string(synsets[keyword])}\n"
        if keyword in thresholds:
            block += f"threshold = {number(thresholds[keyword])}\n"
        parts.append(block)
    text = "".join(parts)
    doc = tomllib.loads(text)
    expected: list[dict[str, Any]] = [
        {"keyword": k, **({"synset": synsets[k]} if k in synsets else {}),
         **({"threshold": float(number(thresholds[k]))} if k in thresholds else {})}
        for k in keywords]
    assert doc["tag"] == expected, "TOML writer round trip"
    return text


def placed_synsets(vocabulary: Vocabulary) -> dict[str, str]:
    """keyword → the name of the WordNet sense each placed tag of a plain list was matched to
    (``golden_retriever.n.01``, ImageNet's ``n02099601`` if the name would not name it back)."""
    placed = [tag for tag in vocabulary.tags if tag.synset is not None]
    if not placed:
        return {}
    wordnet = WordNet()
    names = {}
    for tag in placed:
        assert tag.synset is not None
        synset = wordnet.synset(tag.synset)
        name = wordnet.name(synset)
        names[tag.keyword] = name if wordnet.resolve(name).offset == synset.offset else synset.wnid
    return names


def _same_places(text: str, plain: Vocabulary, target: Path, config: Config) -> None:
    """Refuse a twin that would tag differently from the plain list it replaces: the same keywords,
    prompts, hierarchical paths and levels above them (thresholds aside, which are the point)."""
    twin = parse_rich_tag_list(text, config.tagging.templates, target, stop=config.tagging.expand_stop)

    def places(vocabulary: Vocabulary) -> tuple[object, ...]:
        return ([(t.keyword, t.prompts, t.path) for t in vocabulary.tags], vocabulary.hierarchy())

    if places(twin) != places(plain):
        moved = sorted(set(twin.hierarchy().items()) ^ set(plain.hierarchy().items()))
        raise CalibrationError(f"{target} not written: it would place tags differently from "
                               f"{plain.source.name} ({', '.join(f'{k}: {p}' for k, p in moved[:3])}); "
                               "set the thresholds in a .toml list by hand")


def _count(thresholds: Mapping[str, float]) -> str:
    """"1 threshold", "3 thresholds": what a person reads in the page's banner and calibrate's output."""
    return f"{len(thresholds)} threshold{'' if len(thresholds) == 1 else 's'}"


def save_thresholds(config: Config, keywords: Sequence[str], thresholds: Mapping[str, float]) -> str:
    """Write per-tag thresholds where a person expects them (``tagwatch calibrate``, the review page's
    tag page); returns what to tell the person.

    A rich ``.toml`` list gets them in place, comments kept; a plain list is left as it is and gets a
    ``.toml`` twin with its tags and these thresholds, never over an existing file, and the config
    line to switch to it.  A built-in list (``tags = "photo-tags"``, rich, or ``"imagenet-1k"``) is
    never written into (it is the installed package's): its twin goes beside the config.
    ``keywords``: the list's, for a rich list's check; a plain list is read again as it is now, placed
    in WordNet as the daemon places it.
    """
    tags = config.tags
    builtin = is_builtin_tag_list(tags)
    rich = tags.suffix.lower() == ".toml"
    if rich and not builtin:
        with editing(tags):  # the review page saves thresholds from threads that run at once
            text = tags.read_text(encoding="utf-8")
            write_atomic(tags, set_thresholds(text, thresholds, tags))
        return f"wrote {_count(thresholds)} into {tags}"
    folder = tags.parent
    if builtin:  # never write into the installed package
        folder = config.source.parent if config.source else default_config_path().parent
    target = folder / f"{tags.stem}.toml"
    with editing(target):  # never over a twin another save made meanwhile
        if target.exists():
            raise CalibrationError(f"{target} already exists; set {_tags_line(config, target)} in "
                                   "the config to calibrate it, or move it away")
        placed = ""
        if rich:
            text = set_thresholds(tags.read_text(encoding="utf-8"), thresholds, tags)
        else:  # the list as it is now, placed as the daemon places it: the twin names the same senses
            plain = load_configured(tags, config.tagging)
            synsets = placed_synsets(plain)
            text = rich_from_plain(plain.keywords, thresholds, tags, synsets)
            _same_places(text, plain, target, config)
            if synsets:
                placed = (f", and the WordNet sense of the {len(synsets)} it places (the same levels "
                          "above them)")
        write_atomic(target, text, like=tags)
    where = config.source or default_config_path()
    return (f"wrote {target}: the tags of {tags.name} with {_count(thresholds)}{placed}.\n"
            f"To use it, set in {where}:\n    {_tags_line(config, target)}")


def _tags_line(config: Config, target: Path) -> str:
    """The config line that switches to the tag list ``target``: its bare name beside the config, else
    its whole path (a config's paths are relative to the config's folder, not to the tag list's)."""
    name = target.name if config.source and target.parent == config.source.parent else str(target)
    return f"tags = {toml_string(name)}"
