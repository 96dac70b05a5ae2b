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
from .tagger import SCORE_BLOCK, TagMatrix
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


@dataclass(frozen=True)
class Candidates:
    words: list[Candidate]
    placed: int  # list tags WordNet places (the ones candidates come from)
    found: int  # candidates before the cap
    above: int  # words left out because they lie above a list tag (levels, expansion's business)


def placed_synsets(vocabulary: Vocabulary, wordnet: WordNet) -> dict[str, str]:
    """keyword → WordNet offset of each list tag WordNet places: the synset a rich list names or
    expansion matched, else the one a plain word names unambiguously (as expansion would place it)."""
    out: dict[str, str] = {}
    for tag in vocabulary.tags:
        if tag.synset is not None:
            out[tag.keyword] = tag.synset
            continue
        match = wordnet.match(tag.keyword)
        if match.synset is not None:
            out[tag.keyword] = match.synset.offset
    return out


def keyword_of(synset: Synset) -> str | None:
    """The first of a synset's words that can be written as one keyword, or None."""
    for lemma in synset.lemmas:
        word = " ".join(lemma.split())
        if word and unwritable(word) is None and not_one_level(word) is None:
            return word
    return None


def candidates(vocabulary: Vocabulary, wordnet: WordNet, cap: int = CANDIDATE_CAP) -> Candidates:
    """The children and siblings of the list's placed tags, each word once, at most ``cap``: taken
    in turns over the tags (each tag's children first, then its siblings), so a capped list still
    has words around every tag."""
    placed = placed_synsets(vocabulary, wordnet)
    known = {fold(k) for k in vocabulary.hierarchy()}  # tags and the levels expansion writes
    known |= {fold(s) for tag in vocabulary.tags for s in tag.synonyms}
    taken = set(placed.values()) | {t.synset for t in vocabulary.ancestors if t.synset}
    above: set[str] = set()  # every WordNet ancestor of a list tag
    for offset in placed.values():
        above.update(s.offset for s in wordnet.ancestors(wordnet.synset(offset)))
    parents = {keyword: wordnet.synset(offset).hypernyms for keyword, offset in placed.items()}
    below = wordnet.children({*placed.values(), *(p for ps in parents.values() for p in ps)})
    per_tag: list[list[Candidate]] = []
    seen: set[str] = set()
    left_above: set[str] = set()
    for keyword, offset in placed.items():
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
            own.append(Candidate(word, other, wordnet.name(synset), keyword, relation))
        per_tag.append(own)
    # in turns, one word of each tag at a time: a cap leaves every tag some, not the first tags all
    words = [c for turn in itertools.zip_longest(*per_tag) for c in turn if c is not None]
    return Candidates(words[:cap], len(placed), len(words), len(left_above))


def amended_text(text: str, rich: bool, words: Sequence[Candidate]) -> str:
    """The list's text with ``words`` added at its end, in its own format: what a person pastes."""
    return text.rstrip("\n") + "\n\n" + paste_block(rich, words)


def paste_block(rich: bool, words: Sequence[Candidate]) -> str:
    """The lines that add ``words`` to a list: a plain list's one word a line, a rich list's
    ``[[tag]]`` with the WordNet sense it was found as (so its parents come from WordNet)."""
    if not rich:
        return "".join(f"{c.word}\n" for c in words)
    return "\n".join(f"[[tag]]\nkeyword = {json.dumps(c.word, ensure_ascii=False)}\n"
                     f"synset = {json.dumps(c.name)}\n" for c in words)


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

    photos: np.ndarray  # (candidates,) int
    examples: list[list[str]] = field(default_factory=list)


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
             kept_out: Mapping[str, Collection[str]] | None = None) -> Evidence:
    """Each candidate's count of photos that would get it (``vectors``: the photos' cached image
    vectors, ``paths`` theirs), with up to ``examples`` of their paths; a photo from which a person
    took the word out (``kept_out``: path → case-folded keywords) never gets it back, so it is not
    counted."""
    words = {fold(k): n for n, k in enumerate(matrix.keywords[listed:])}
    total = np.zeros(len(words), np.int64)
    shown: list[list[str]] = [[] for _ in words]
    kept_out = kept_out or {}
    for start in range(0, len(vectors), SCORE_BLOCK):
        part = matrix.scores(vectors[start:start + SCORE_BLOCK])
        gets = would_get(part, listed, thresholds, threshold, top_k)
        for row, path in enumerate(paths[start:start + SCORE_BLOCK]):
            for word in kept_out.get(path, ()):
                if word in words:
                    gets[row, words[word]] = False
        total += gets.sum(axis=0)
        for column in np.flatnonzero(gets.any(axis=0)):
            room = examples - len(shown[column])
            if room > 0:
                rows = np.flatnonzero(gets[:, column])[:room]
                shown[column] += [paths[start + int(r)] for r in rows]
    return Evidence(total, shown)
