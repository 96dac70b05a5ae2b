"""``tagwatch tags check FILE``: validate a tag list, report tags whose text vectors nearly match and
where the list sits in WordNet; ``tagwatch tags senses WORD…``: a word's WordNet senses, to pick one."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..config import BUILTIN_TAG_LISTS, Config, builtin_tag_list
from ..encoder import LazyModel
from ..pipeline import Pipeline
from ..store import Store
from ..tagger import NEAR_DUPLICATE, near_duplicates
from ..vocabulary import Vocabulary, load_configured
from ..wording import counted
from ..wordnet import WordNet
from .common import load, use_vocabulary


@dataclass(frozen=True)
class Check:
    vocabulary: Vocabulary
    encoded: int  # prompts encoded now (the rest came from the cache)
    model: str
    pairs: list[tuple[float, str, str]]  # near-duplicate tags: cosine, a, b


def check(config: Config, path: Path) -> Check:
    """Load the list as the daemon would (errors: one line naming the file; with ``[tagging] expand``
    on, a plain list's words placed in WordNet), encode its prompts, find near-duplicates."""
    vocabulary = load_configured(path, config.tagging)
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


PAIRS_SHOWN = 20  # near-duplicate pairs printed, the most similar first (the vocabulary under a
                 # model that tells its words apart badly has tens of thousands)


def render(result: Check, path: Path, shown: int = PAIRS_SHOWN) -> str:
    """What ``tags check`` prints; ``shown``: at most this many near-duplicate pairs (0: all)."""
    vocabulary = result.vocabulary
    out = [f"warning: {warning}" for warning in vocabulary.warnings]
    prompts = len(vocabulary.prompts())
    own = sum(tag.threshold is not None for tag in vocabulary.tags)
    nested = sum(bool(tag.parents) for tag in vocabulary.tags)
    out.append(f"{path}: {counted(len(vocabulary.tags), 'tag')}, {counted(prompts, 'prompt')} "
               f"({result.encoded} encoded now, "
               f"{prompts - result.encoded} cached), {own} with their own threshold, {nested} with a parent")
    out += hierarchy(vocabulary)
    if result.pairs:
        plural = "" if len(result.pairs) == 1 else "s"
        out.append(f"near-duplicates: {len(result.pairs)} pair{plural} of tags whose text vectors have "
                   f"cosine >= {NEAR_DUPLICATE} (model {result.model}); each pair fires together:")
        listed = result.pairs[:shown] if shown else result.pairs
        out += [f"  {score:.4f}  {a}  ~  {b}" for score, a, b in listed]
        if len(listed) < len(result.pairs):
            rest = len(result.pairs) - len(listed)
            out.append(f"  ... and {rest} more pair{'' if rest == 1 else 's'} (--pairs 0 lists them all)")
    else:
        out.append(f"no near-duplicates (no two tags with text cosine >= {NEAR_DUPLICATE})")
    return "\n".join(out) + "\n"


def hierarchy(vocabulary: Vocabulary) -> list[str]:
    """Where the list sits in WordNet: the levels it gained, its deepest path, and (a plain list
    with expansion on) the tags WordNet could not place, with the reason."""
    out = []
    if vocabulary.ancestors:
        levels = ", ".join(sorted(tag.keyword for tag in vocabulary.ancestors))
        out.append(f"levels above the tags, named by the photo vocabulary (written by expansion): {levels}")
    deepest = max(vocabulary.tags, key=lambda tag: len(tag.parents))
    if deepest.parents:
        out.append(f"deepest path: {deepest.path}")
    if vocabulary.unplaced:
        out.append(f"not placed in WordNet: {counted(len(vocabulary.unplaced), 'tag')} "
                   f"{'stays' if len(vocabulary.unplaced) == 1 else 'stay'} flat (expansion adds "
                   "nothing to them; a .toml list can name each one's synset):")
        out += [f"  {line}" for line in vocabulary.unplaced]
    return out


def senses(words: Sequence[str]) -> str:
    """Each noun sense of each word, with the path above it, so a rich list can name the right one
    (``synset = "crane.n.05"``, the bird); the sense a plain list would use is marked ``*``."""
    wordnet = WordNet()
    out = []
    for word in words:
        match = wordnet.match(word)
        forms = wordnet.base_forms(word)
        offsets = list(dict.fromkeys(o for form in forms for o, _ in wordnet.senses(form)))
        if not offsets:
            out.append(f"{word}: {match.reason}")
            continue
        verdict = f"a plain list uses {wordnet.name(match.synset)}" if match.synset else match.reason
        out.append(f"{word}: {len(offsets)} noun sense{'s' if len(offsets) > 1 else ''} ({verdict})")
        for offset in offsets:
            synset = wordnet.synset(offset)
            above = " < ".join(s.lemmas[0] for s in reversed(wordnet.path(synset)[-6:-1]))
            mark = "*" if match.synset == synset else " "
            out.append(f" {mark} {wordnet.name(synset):<24} {synset.wnid}  {', '.join(synset.lemmas)}"
                       + (f"  (under {above})" if above else ""))
    return "\n".join(out) + "\n"


def check_func(args: argparse.Namespace) -> int:
    config = load(args)
    # a built-in list by its name, as the config's `tags` and --tags take it
    path = builtin_tag_list(args.file) if args.file in BUILTIN_TAG_LISTS else Path(args.file).expanduser()
    print(render(check(config, path), path, args.pairs), end="")
    return 0


def senses_func(args: argparse.Namespace) -> int:
    print(senses(args.words), end="")
    return 0


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"not a whole number >= 0: {text!r}")
    return int(text)


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    tags = sub.add_parser("tags", parents=[common], help="work with tag lists")
    tags_sub = tags.add_subparsers(dest="tags_command", required=True, metavar="ACTION")
    check = tags_sub.add_parser("check", parents=[common],
                                help="validate a tag list (.txt or .toml) and report near-duplicate tags")
    check.add_argument("file", metavar="FILE", help="a tag list file, or a built-in list's name (photo-tags)")
    check.add_argument("--pairs", type=_count, default=PAIRS_SHOWN, metavar="N",
                       help=f"list the N most similar near-duplicate pairs (default {PAIRS_SHOWN}; 0: all)")
    check.set_defaults(func=check_func)
    words = tags_sub.add_parser("senses", parents=[common],
                                help="a word's WordNet noun senses, to name one as a tag's synset")
    words.add_argument("words", nargs="+", metavar="WORD")
    words.set_defaults(func=senses_func)
