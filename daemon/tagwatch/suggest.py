"""Words a tag list lacks, found in WordNet around its tags and counted on the user's own photos.

Taggers of the word-vector kind (seed 004: a CNN's tags expanded with their GloVe neighbours) write
a predicted tag's nearest words into the photo unverified.  Here the same idea serves a person
editing the list instead, and nothing is written:

- **candidates**: WordNet's siblings (the other kinds under the same parent) and children of every
  tag WordNet places, named by their first lemma that can be a keyword, without the words the list
  already has or writes (its keywords, synonyms and the levels expansion adds) and without the
  words above its tags (adding one makes it a level, which is expansion's business);
- **similarity**: each candidate's text vector from the configured model (the space the photos are
  scored in) and its nearest list tag;
- **evidence**: the cached image vectors scored with tagging's own rules (threshold, the list's
  per-tag thresholds, ``top_k``), so a count is exactly the photos that get the word as a keyword
  once it is added to the list.

The functions here are pure (WordNet, numpy); ``cli/tags.py`` loads, encodes and prints.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .casefold import fold
from .tagger import SCORE_BLOCK, TagMatrix, select
from .vocabulary import RICH_SUFFIX, Vocabulary, not_one_level, unwritable
from .wordnet import Synset, WordNet

CANDIDATE_CAP = 2000  # candidates encoded at most: ~1,000 list tags give about this many (a minute's
                      # encoding on a CPU the first time, cached after)


@dataclass(frozen=True)
class Candidate:
    """A word the list lacks, and where in WordNet it was found."""

    word: str  # the keyword it would be written as
    synset: str  # its WordNet offset
    name: str  # ``green.n.01``: what a rich list's ``synset =`` takes
    found: str  # the list tag it was found from
    relation: str  # "sibling" (same parent as ``found``) or "child" (a kind of ``found``)
    parent: str | None = None  # the parent tagwatch gives it once pasted (a sibling of a flat tag: None)
    pinned: bool = False  # a rich list's block names ``parent``: the list's own, for ``found`` too
    plain_sense: str | None = None  # a plain list: why pasting the word keeps no sense (None: it does)

    def where(self) -> str:
        """Where the pasted word sits, as the table says it: ``child of dog``, ``sibling of kitten
        under cat``; a sibling of a flat tag is flat too."""
        if self.relation == "child":
            return f"child of {self.found}"
        return f"sibling of {self.found}" + (f" under {self.parent}" if self.parent else ", both flat")


@dataclass(frozen=True)
class Candidates:
    words: list[Candidate]
    placed: int  # list tags WordNet places (the ones candidates come from)
    found: int  # candidates before the cap
    above: int  # words left out because they lie above a list tag (levels, expansion's business)


def placed_synsets(vocabulary: Vocabulary) -> dict[str, str]:
    """keyword → WordNet offset of each list tag the list's own parsing placed, as the daemon does
    (``load_configured``): a rich list's ``synset =``, a plain word expansion matched.  A rich tag
    without ``synset`` is not placed, nor is any plain word under ``expand = "none"``."""
    return {tag.keyword: tag.synset for tag in vocabulary.tags if tag.synset is not None}


def keyword_of(synset: Synset) -> str | None:
    """The first of a synset's words that can be written as one keyword, or None."""
    for lemma in synset.lemmas:
        word = " ".join(lemma.split())
        if word and unwritable(word) is None and not_one_level(word) is None:
            return word
    return None


def candidates(vocabulary: Vocabulary, wordnet: WordNet, cap: int = CANDIDATE_CAP,
               explicit: Collection[str] = ()) -> Candidates:
    """The children and siblings of the list's placed tags, each word once, at most ``cap``: taken
    in turns over the tags (each tag's children first, then its siblings), so a capped list still
    has words around every tag.  A tag's siblings are looked for under the parent tagwatch gives it
    (its level's synset) and under WordNet's; :func:`verified` keeps those the list places there.
    ``explicit``: the tags whose parent the list names itself (``parent =``): their siblings are
    pasted with that parent (``pinned``)."""
    placed = placed_synsets(vocabulary)
    known = {fold(k) for k in vocabulary.hierarchy()}  # tags and the levels expansion writes
    known |= {fold(s) for tag in vocabulary.tags for s in tag.synonyms}
    taken = set(placed.values()) | {t.synset for t in vocabulary.ancestors if t.synset}
    synset_of = {fold(t.keyword): t.synset for t in (*vocabulary.ancestors, *vocabulary.tags)}
    parent_of = {t.keyword: t.parents[-1] if t.parents else None for t in vocabulary.tags}
    pinned = {fold(k) for k in explicit}
    above: set[str] = set()  # every WordNet ancestor of a list tag
    for offset in placed.values():
        above.update(s.offset for s in wordnet.ancestors(wordnet.synset(offset)))
    parents: dict[str, list[str]] = {}  # keyword → the synsets whose children are its siblings
    for keyword, offset in placed.items():
        level = parent_of[keyword]
        own = synset_of.get(fold(level)) if level is not None else None
        if own and fold(keyword) in pinned:  # the list's own grouping: the kinds of its level only
            parents[keyword] = [own]
            continue
        parents[keyword] = list(dict.fromkeys([*([own] if own else []), *wordnet.synset(offset).hypernyms]))
    below = wordnet.children({*placed.values(), *(p for ps in parents.values() for p in ps)})
    per_tag: list[list[Candidate]] = []
    seen: set[str] = set()
    left_above: set[str] = set()
    for keyword, offset in placed.items():
        level = parent_of[keyword]
        related = [(child, "child") for child in below[offset]]
        related += [(sibling, "sibling") for parent in parents[keyword] for sibling in below[parent]]
        own: list[Candidate] = []
        for other, relation in related:
            if other in taken or other in seen:
                continue
            seen.add(other)
            synset = wordnet.synset(other)
            word = keyword_of(synset)
            if word is None or fold(word) in known:
                continue
            if other in above:
                left_above.add(other)
                continue
            known.add(fold(word))
            child = relation == "child"
            own.append(Candidate(word, other, wordnet.name(synset), keyword, relation,
                                 keyword if child else level,
                                 not child and level is not None and fold(keyword) in pinned))
        per_tag.append(own)
    # in turns, one word of each tag at a time: a cap leaves every tag some, not the first tags all
    words = [c for turn in itertools.zip_longest(*per_tag) for c in turn if c is not None]
    return Candidates(words[:cap], len(placed), len(words), len(left_above))


def verified(words: Sequence[Candidate], placed: Vocabulary) -> list[Candidate]:
    """The candidates that sit where the table says once pasted: ``placed`` is the list with every
    candidate pasted as a rich list's ``[[tag]]`` (its sense kept), parsed as the daemon parses it.
    A sibling found under WordNet's parent that the list puts elsewhere (a lamb is no kind of cat,
    kitten's parent here) is left out, as is a child that lands under another tag."""
    parent = {fold(t.keyword): (fold(t.parents[-1]) if t.parents else None) for t in placed.tags}
    return [c for c in words
            if fold(c.word) in parent and parent[fold(c.word)] == (fold(c.parent) if c.parent else None)]


def rich_form(vocabulary: Vocabulary, wordnet: WordNet) -> str:
    """A plain list as the rich list that places it the same way: each placed word with the synset
    expansion matched (so a pasted word's place can be read as a ``.toml`` list would give it)."""
    out = []
    for tag in vocabulary.tags:
        sense = f"synset = {json.dumps(wordnet.name(wordnet.synset(tag.synset)))}\n" if tag.synset else ""
        out.append(f"[[tag]]\nkeyword = {json.dumps(tag.keyword, ensure_ascii=False)}\n{sense}")
    return "\n".join(out)


def amended_text(text: str, rich: bool, words: Sequence[Candidate]) -> str:
    """The list's text with ``words`` added at its end, in its own format: what a person pastes."""
    return text.rstrip("\n") + "\n\n" + paste_block(rich, words)


def paste_block(rich: bool, words: Sequence[Candidate]) -> str:
    """The lines that add ``words`` to a list: a plain list's one word a line, a rich list's
    ``[[tag]]`` with the WordNet sense it was found as (so its parents come from WordNet), and the
    list's own parent where the list names the tag's (``pinned``)."""
    if not rich:
        return "".join(f"{c.word}\n" for c in words)
    def parent(c: Candidate) -> str:
        return f"parent = {json.dumps(c.parent, ensure_ascii=False)}\n" if c.pinned and c.parent else ""

    return "\n".join(f"[[tag]]\nkeyword = {json.dumps(c.word, ensure_ascii=False)}\n"
                     f"synset = {json.dumps(c.name)}\n{parent(c)}" for c in words)


def is_rich(path_suffix: str) -> bool:
    return path_suffix.lower() == RICH_SUFFIX


def nearest(matrix: TagMatrix, listed: int) -> list[tuple[str, float]]:
    """For each row of ``matrix`` after the first ``listed`` (the candidates), the most similar of
    the first ``listed`` rows (the list's tags) and their cosine."""
    tags, rest = matrix.vectors[:listed], matrix.vectors[listed:]
    if not len(rest):
        return []
    sims = rest @ tags.T
    best = sims.argmax(axis=1)
    return [(matrix.keywords[int(b)], float(sims[n, b])) for n, b in enumerate(best)]


@dataclass
class Evidence:
    """Per candidate: how many photos would get it, and the first few of them."""

    photos: np.ndarray  # (candidates,) int: among the photos ``inside`` (all, when none is given)
    examples: list[list[str]] = field(default_factory=list)
    outside: np.ndarray | None = None  # (candidates,) int: among the other photos


def would_get(scores: np.ndarray, listed: int, thresholds: np.ndarray, threshold: float,
              top_k: int) -> np.ndarray:
    """(photos, candidates) bool: the photo gets the candidate as a keyword if the candidate alone is
    added to the list.  ``scores``: (photos, listed + candidates), the list's tags first;
    ``thresholds``: the list tags' own.  Tagging's rule (:func:`tagger.select`): above its threshold
    (a new tag has the global one), and among the ``top_k`` best of the tags above their own (0: no
    cap); compared in float32, as :func:`scoring.choose` does."""
    scores = np.asarray(scores, np.float32)
    own, extra = scores[:, :listed], scores[:, listed:]
    above = extra > np.float32(threshold)
    if top_k == 0 or listed == 0:
        return above
    passing = np.where(own > np.asarray(thresholds, np.float32), own, -np.inf)  # (photos, listed)
    return above & (_ahead(passing, extra) < top_k)


def all_get(scores: np.ndarray, listed: int, thresholds: np.ndarray, threshold: float,
            top_k: int) -> np.ndarray:
    """(photos, candidates) bool: the photo gets the candidate when *all* the candidates in
    ``scores`` are added to the list together (they compete with each other for ``top_k`` too):
    what pasting the whole block gives.  Tagging's own :func:`tagger.select` over list and block."""
    limits = np.concatenate([np.asarray(thresholds, np.float32),
                             np.full(scores.shape[1] - listed, threshold, np.float32)])
    chosen = select(np.asarray(scores, np.float32), limits, top_k)
    out = np.zeros((len(scores), scores.shape[1] - listed), bool)
    for row, columns in enumerate(chosen):
        for column in columns:
            if column >= listed:
                out[row, column - listed] = True
    return out


def _ahead(passing: np.ndarray, extra: np.ndarray) -> np.ndarray:
    """For each (photo, candidate): the passing list scores above the candidate's, by sorting each
    photo's passing scores once (a (photos, tags, candidates) cube would be gigabytes)."""
    ordered = np.sort(passing, axis=1)  # ascending, -inf first
    out = np.empty(extra.shape, np.int64)
    width = passing.shape[1]
    for row in range(len(passing)):
        out[row] = width - np.searchsorted(ordered[row], extra[row], side="right")
    return out


def evidence(matrix: TagMatrix, listed: int, vectors: np.ndarray, paths: Sequence[str],
             thresholds: np.ndarray, threshold: float, top_k: int, examples: int,
             kept_out: Mapping[str, Collection[str]] | None = None,
             inside: Sequence[bool] | None = None, block: Sequence[int] | None = None) -> Evidence:
    """Each candidate's count of photos that would get it (``vectors``: the photos' cached image
    vectors, ``paths`` theirs), with up to ``examples`` of their paths; a photo from which a person
    took the word out (``kept_out``: path → case-folded keywords) never gets it back, so it is not
    counted.  ``inside``: per photo, whether the daemon's re-score reaches it (under ``watch``); the
    others are counted apart.  ``block``: count only these candidate columns, added *together*
    (:func:`all_get`) rather than each alone; the counts are in that order."""
    keywords = matrix.keywords[listed:]
    columns = list(range(len(keywords))) if block is None else list(block)
    words = {fold(keywords[c]): n for n, c in enumerate(columns)}
    total = np.zeros(len(columns), np.int64)
    elsewhere = np.zeros(len(columns), np.int64)
    shown: list[list[str]] = [[] for _ in columns]
    kept_out = kept_out or {}
    mask = np.ones(len(paths), bool) if inside is None else np.asarray(inside, bool)
    take = np.array([*range(listed), *(listed + c for c in columns)], np.int64)
    for start in range(0, len(vectors), SCORE_BLOCK):
        part = matrix.scores(vectors[start:start + SCORE_BLOCK])
        if block is None:
            gets = would_get(part, listed, thresholds, threshold, top_k)
        else:
            gets = all_get(part[:, take], listed, thresholds, threshold, top_k)
        for row, path in enumerate(paths[start:start + SCORE_BLOCK]):
            for word in kept_out.get(path, ()):
                if word in words:
                    gets[row, words[word]] = False
        here = mask[start:start + SCORE_BLOCK]
        total += gets[here].sum(axis=0)
        elsewhere += gets[~here].sum(axis=0)
        for column in np.flatnonzero(gets.any(axis=0)):
            room = examples - len(shown[column])
            if room > 0:
                rows = np.flatnonzero(gets[:, column])[:room]
                shown[column] += [paths[start + int(r)] for r in rows]
    return Evidence(total, shown, elsewhere)
