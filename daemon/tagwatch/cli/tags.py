"""``tagwatch tags check FILE``: validate a tag list, report tags whose text vectors nearly match and
where the list sits in WordNet; ``tagwatch tags senses WORD…``: a word's WordNet senses, to pick one;
``tagwatch tags suggest [FILE]``: words the list lacks, counted on the photos already indexed."""

from __future__ import annotations

import argparse
import os
import time
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .. import suggest as suggesting
from ..config import BUILTIN_TAG_LISTS, Config, builtin_tag_list, is_builtin_tag_list
from ..encoder import LazyModel
from ..export import display_path, kept_out
from ..pipeline import load_config_overrides
from ..scoring import tag_thresholds
from ..store import inside as under
from ..tagger import NEAR_DUPLICATE, near_duplicates
from ..vocabulary import (
    Vocabulary,
    load_configured,
    parse_rich_tag_list,
    parse_tag_list,
    read_list_file,
)
from ..wording import counted
from ..wordnet import WordNet
from .common import load, vocabulary_encoded


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
    with vocabulary_encoded(config, vocabulary) as (_, pipeline, encoded):
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


# -- tags suggest ----------------------------------------------------------------------------------

SUGGESTIONS_SHOWN = 30  # rows of the table (--limit)
EXAMPLES_SHOWN = 3  # example photos per word (--examples)


@dataclass(frozen=True)
class Suggestion:
    """One row of the table: the word, how near the list it is, and the evidence for it."""

    candidate: suggesting.Candidate
    nearest: str  # the list tag whose text vector is closest
    similarity: float  # their cosine
    photos: int | None  # indexed photos that would get the word added alone (under `watch`, when
                        # the config watches folders); None: no photo indexed yet
    examples: tuple[str, ...] = ()
    outside: int = 0  # indexed photos outside the watched folders that would get it (a scan's)
    together: int | None = None  # ``photos`` with the whole block pasted (None: not in the block)

    @property
    def total(self) -> int:
        return (self.photos or 0) + self.outside


@dataclass(frozen=True)
class Suggestions:
    """What ``tags suggest`` found, with what the header says about how it was counted."""

    source: Path
    rich: bool  # a .toml list: the paste block is [[tag]] tables
    model: str
    found: suggesting.Candidates | None  # None: no tag of the list is placed in WordNet
    rows: list[Suggestion]  # every candidate, most photos first
    encoded: int = 0  # candidate prompts encoded now (the rest came from the cache)
    indexed: int = 0  # photos with a cached vector of this model
    listed: int = 0  # tags in the list
    threshold: float = 0.0
    top_k: int = 0
    seconds: tuple[float, float, float] = (0.0, 0.0, 0.0)  # WordNet, encoding, counting
    shown: list[Suggestion] = field(default_factory=list)  # the table's rows (--limit, --all)
    more: int = 0  # rows with photos that --limit left out
    unseen: int = 0  # rows no photo would get, left out without --all
    watched: tuple[Path, ...] = ()  # the config's `watch`: ``photos`` counts under them
    outside: int = 0  # indexed photos outside them
    builtin: bool = False  # the list is a file of the installed package
    unplaced_plain: bool = True  # a plain list's others are named by `tags check` (expansion on)


def shown_rows(rows: Sequence[Suggestion], indexed: bool, limit: int,
               every: bool) -> tuple[list[Suggestion], int, int]:
    """The rows the table shows: those some photo would get (every one with ``every``, or when no
    photo gets any: then similarity alone ranks them), at most ``limit`` (0: all); and how many
    ``limit`` and the missing ``every`` left out."""
    counted_rows = [r for r in rows if r.total] if indexed and not every else list(rows)
    pool = counted_rows or list(rows)
    shown = pool[:limit] if limit else pool
    return shown, len(pool) - len(shown), len(rows) - len(pool)


def suggest(config: Config, path: Path, examples: int = EXAMPLES_SHOWN, limit: int = SUGGESTIONS_SHOWN,
            every: bool = False) -> Suggestions:
    """Words the list at ``path`` lacks (:mod:`tagwatch.suggest`), each with its nearest list tag
    and the indexed photos that would get it once added.  The candidates are taken into the list as
    a person would paste them and parsed as the daemon parses it, so each gets exactly the prompts
    (templates, WordNet synonyms) and threshold it would have, and sits where the table says; the
    words shown are then counted again pasted together, as the block is.  Nothing is written
    anywhere but the prompt-vector cache."""
    began = time.perf_counter()
    vocabulary = load_configured(path, config.tagging)
    rich = suggesting.is_rich(path.suffix)
    builtin = is_builtin_tag_list(path)
    text = read_list_file(path, "tag list")
    wordnet = WordNet()
    explicit = _explicit_parents(text) if rich else ()
    found = suggesting.candidates(vocabulary, wordnet, explicit=explicit)
    identity = LazyModel(config.model).identity
    plain_placed = rich or config.tagging.expand != "none"
    if not found.placed:
        return Suggestions(path, rich, identity, None, [], builtin=builtin, unplaced_plain=plain_placed)
    listed = len(vocabulary.tags)
    amended = _amended(text, path, rich, found.words, config)
    # where each word sits once pasted with its sense (a .toml list's [[tag]]), as the daemon places it
    placed = amended if rich else parse_rich_tag_list(
        suggesting.rich_form(vocabulary, wordnet) + "\n" + suggesting.paste_block(True, found.words),
        config.tagging.templates, path, stop=config.tagging.expand_stop)
    kept = suggesting.verified(found.words, placed)
    if not rich:  # a plain list reads a word in the sense WordNet.match gives, or in none
        kept = [replace(c, plain_sense=_plain_sense(c, wordnet)) for c in kept]
    words = {tag.keyword: n for n, tag in enumerate(amended.tags[listed:], start=listed)}
    found = suggesting.Candidates([c for c in kept if c.word in words], found.placed, found.found,
                                  found.above)
    wordnet_s = time.perf_counter() - began
    watched = tuple(config.watch)
    with vocabulary_encoded(config, amended) as (store, pipeline, encoded):
        encode_s = time.perf_counter() - began - wordnet_s
        assert pipeline.tags is not None
        matrix = pipeline.tags
        near = suggesting.nearest(matrix, listed)
        rows = store.tagged_files(pipeline.model.identity)
        counted_by: suggesting.Evidence | None = None
        out = []
        inside: list[bool] = []
        if rows:
            paths = [row.path for row, _ in rows]
            vectors = np.stack([vector for _, vector in rows])
            overrides = load_config_overrides(config, watching=False)
            keys = {row.path: row.key for row, _ in rows if row.key is not None}
            kept_keys = kept_out(store, overrides, keys)
            # the daemon re-scores only the photos under its folders (Pipeline.confine, retag)
            roots = [str(root) for root in watched]
            inside = [not roots or under(p, roots) for p in paths]
            thresholds = tag_thresholds(vocabulary.tags, config.tagging.threshold)
            counting = (matrix, listed, vectors, paths, thresholds, config.tagging.threshold,
                        config.tagging.top_k)
            counted_by = suggesting.evidence(*counting, examples, kept_keys, inside)
        for candidate in found.words:
            column = words[candidate.word] - listed
            tag, similarity = near[column]
            photos = None if counted_by is None else int(counted_by.photos[column])
            outside = 0 if counted_by is None or counted_by.outside is None else int(
                counted_by.outside[column])
            shown = () if counted_by is None else tuple(counted_by.examples[column])
            out.append(Suggestion(candidate, tag, similarity, photos, shown, outside))
        out.sort(key=lambda s: (-s.total, -s.similarity, s.candidate.word))
        table, more, unseen = shown_rows(out, bool(rows), limit, every)
        block = _block(table, bool(rows))
        if rows and block:
            columns = [words[r.candidate.word] - listed for r in block]
            together = suggesting.evidence(*counting, 0, kept_keys, inside, block=columns)
            counts = {r.candidate.word: int(n) for r, n in zip(block, together.photos, strict=True)}
            out = [replace(r, together=counts.get(r.candidate.word)) for r in out]
            table = [replace(r, together=counts.get(r.candidate.word)) for r in table]
    seconds = (wordnet_s, encode_s, time.perf_counter() - began - wordnet_s - encode_s)
    return Suggestions(path, rich, pipeline.model.identity, found, out, encoded, len(rows), listed,
                       config.tagging.threshold, config.tagging.top_k, seconds, table, more, unseen,
                       watched if rows else (), len(inside) - sum(inside), builtin, plain_placed)


def _block(rows: Sequence[Suggestion], indexed: bool) -> list[Suggestion]:
    """The shown rows whose lines the paste block holds: a word some photo would get (any, before a
    photo is indexed), and in a plain list only one it reads in the sense found."""
    return [r for r in rows if (r.total or not indexed) and r.candidate.plain_sense is None]


def _plain_sense(candidate: suggesting.Candidate, wordnet: WordNet) -> str | None:
    """Why a plain list would not keep the sense the word was found in (None: it does), the way
    expansion places a plain word (:meth:`WordNet.match`)."""
    match = wordnet.match(candidate.word)
    if match.synset is None:
        return f"a plain list leaves it flat: {match.reason}"
    if match.synset.offset != candidate.synset:
        return f"a plain list reads it as {wordnet.name(match.synset)}"
    return None


def _explicit_parents(text: str) -> set[str]:
    """The keywords a rich list gives a ``parent`` itself (the list parsed already: read plainly)."""
    try:
        document = tomllib.loads(text.removeprefix("\ufeff"))
    except tomllib.TOMLDecodeError:
        return set()
    return {" ".join(t["keyword"].split()) for t in document.get("tag", [])
            if isinstance(t, dict) and isinstance(t.get("keyword"), str) and isinstance(t.get("parent"), str)}


def _amended(text: str, path: Path, rich: bool, words: Sequence[suggesting.Candidate],
             config: Config) -> Vocabulary:
    """The list with every candidate pasted at its end, parsed as ``load_configured`` parses it."""
    amended = suggesting.amended_text(text, rich, words)
    tagging = config.tagging
    if rich:
        return parse_rich_tag_list(amended, tagging.templates, path, stop=tagging.expand_stop)
    return parse_tag_list(amended, tagging.templates, path, place=tagging.expand != "none",
                          stop=tagging.expand_stop)


def short_model(identity: str) -> str:
    """A model's identity as a person reads it: a checkpoint's digest cut to 12 hex digits."""
    head, sep, digest = identity.partition("sha256:")
    return head + sep + digest[:12] if sep else identity


def render_suggestions(result: Suggestions, cwd: str | None = None) -> str:
    """What ``tags suggest`` prints: the table (most photos first, then the most similar), each
    counted word's example photos, and the block to paste into the list."""
    where = result.source
    found = result.found
    if found is None:
        if not result.unplaced_plain:
            return (f"{where}: with [tagging] expand = \"none\" a plain list is its lines and nothing "
                    "more: no word of it is placed in WordNet, so there is nothing to find words around "
                    "(expand = \"parents\" places them; a .toml list places the tags that name a synset)\n")
        return (f"{where}: no tag WordNet places, so there is nothing to find words around: suggestions "
                "need tags WordNet knows (in a .toml list, name each tag's sense: synset = \"dog.n.01\"; "
                "`tagwatch tags senses WORD` lists them)\n")
    cwd = os.getcwd() if cwd is None else cwd
    model = short_model(result.model)
    others = ("`tagwatch tags check` names the others" if not result.rich
              else "the others name no synset, so no place to look around")
    out = [f"{where}: {counted(len(found.words), 'word')} the list lacks, the siblings and children of "
           f"its {counted(found.placed, 'tag')} WordNet places"
           + (f" (of {result.listed}; {others})" if result.listed > found.placed else "")
           + f"; {result.encoded} prompts encoded now"]
    if found.found > len(found.words):
        out.append(f"capped at {len(found.words)} of {found.found} candidates, taken in turns from every tag")
    split = bool(result.watched)
    if result.indexed:
        inside = result.indexed - result.outside
        scope = (f"of the {counted(inside, 'photo')} indexed with {model} under the watched folders "
                 f"(the daemon's re-score writes these)" if split
                 else f"of the {counted(result.indexed, 'photo')} indexed with {model}")
        out.append(f"photos: {scope}, those that get the word if it alone is added to the list "
                   f"(threshold {result.threshold}, top_k {result.top_k or 'no cap'}, the list's own "
                   "thresholds); the words compete with each other for top_k, so pasted together they "
                   "get fewer: 'block' is each word's count with the whole block below pasted")
        if split and result.outside:
            out.append(f"elsewhere: of the {counted(result.outside, 'photo')} indexed outside the watched "
                       "folders, those that get the word alone: the daemon never rewrites them, a "
                       "`tagwatch scan` naming them does")
    else:
        out.append(f"no photo indexed with {model} yet: run `tagwatch scan FOLDER` first to count photos")
    rows = result.shown
    if not rows:
        out.append("nothing to suggest")
        return "\n".join(out) + "\n"
    elsewhere = split and result.outside > 0
    width = max(len("word"), *(len(r.candidate.word) for r in rows))
    near = max(len("nearest tag"), *(len(f"{r.nearest} {r.similarity:.2f}") for r in rows))
    head = f"  {'word':<{width}}  {'photos':>6}  {'block':>5}" + (f"  {'elsewhere':>9}" if elsewhere else "")
    out.append(f"{head}  {'nearest tag':<{near}}  WordNet")
    pad = len(head) - width - 2
    for r in rows:
        photos = "-" if r.photos is None else str(r.photos)
        block = "-" if r.together is None else str(r.together)
        c = r.candidate
        line = f"  {c.word:<{width}}  {photos:>6}  {block:>5}" + (f"  {r.outside:>9}" if elsewhere else "")
        mark = "; a .toml list keeps it" if c.plain_sense else ""
        out.append(f"{line}  {f'{r.nearest} {r.similarity:.2f}':<{near}}  {c.name} ({c.where()}{mark})")
        if r.examples:
            shown = ", ".join(display_path(p, cwd) for p in r.examples)
            rest = r.total - len(r.examples)
            more = f" and {rest} more" if rest > 0 else ""
            out.append(f"  {'':<{width}}{'':<{pad}}  e.g. {shown}{more}")
    if result.more:
        out.append(f"  ... and {result.more} more: --limit 0 lists every one")
    if result.unseen:
        out.append(f"  ({counted(result.unseen, 'word')} that no photo would get: --all lists them)")
    pasted = [r.candidate for r in _block(rows, bool(result.indexed))]
    sense = [r.candidate for r in rows if r.candidate.plain_sense]
    target = (f"your own copy of {where.name}, not the package's file (`tagwatch init` writes one, "
              "tags.toml beside the config; or copy the file there and name it in the config's `tags`)"
              if result.builtin else where.name)
    if pasted:
        out.append("")
        out.append(f"# to add them, paste the lines of the words you want at the end of {target}:")
        out.append(suggesting.paste_block(result.rich, pasted).rstrip("\n"))
    if sense:
        out.append("")
        out.append("# not in the block: a plain list would not keep the sense each was found in; a .toml "
                   "list does (`[[tag]]` with `synset = \"…\"`):")
        out += [f"#   {c.word} → {c.name} ({c.plain_sense})" for c in sense]
    out.append("(nothing was written: not the list, not a photo)")
    return "\n".join(out) + "\n"


def suggest_func(args: argparse.Namespace) -> int:
    config = load(args)
    given = args.file
    if given is None:
        path = config.tags
    else:
        path = builtin_tag_list(given) if given in BUILTIN_TAG_LISTS else Path(given).expanduser()
    result = suggest(config, path, args.examples, args.limit, args.all)
    print(render_suggestions(result), end="")
    return 0


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
    more = tags_sub.add_parser("suggest", parents=[common],
                               help="words the list lacks (WordNet siblings and children of its tags), "
                                    "each with the indexed photos that would get it; writes nothing")
    more.add_argument("file", metavar="FILE", nargs="?",
                      help="a tag list file, or a built-in list's name (default: the config's tags)")
    more.add_argument("--limit", type=_count, default=SUGGESTIONS_SHOWN, metavar="N",
                      help=f"show the N best words (default {SUGGESTIONS_SHOWN}; 0: all)")
    more.add_argument("--examples", type=_count, default=EXAMPLES_SHOWN, metavar="K",
                      help=f"name K photos that would get each word (default {EXAMPLES_SHOWN})")
    more.add_argument("--all", action="store_true",
                      help="every candidate, those no photo would get included")
    more.set_defaults(func=suggest_func)
