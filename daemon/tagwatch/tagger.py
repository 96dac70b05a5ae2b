"""Scores → tags: the rtag method, as matrix products.

A tag's vector is the mean of its prompts' unit vectors, renormalised (the CLIP prompt ensemble).
An image gets every tag whose cosine similarity is above its threshold (one for all, or per tag from a
rich tag list), at most ``top_k`` (0: no cap), best first; then, with expansion on, the levels above each of
them (``golden retriever`` → ``dog``, ``animal``), each once, after the predicted tags.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from .casefold import fold, folded
from .vocabulary import Vocabulary

NEAR_DUPLICATE = 0.95  # cosine of two tag vectors above which they (nearly) always fire together
# Scores are sums of products of vector components on this grid, so exact in float64 (see on_grid).
GRID = 2.0 ** 24
SCORE_BLOCK = 4096  # image rows scored at once: bounds the float64 intermediate (~32 MB per 1,000 tags)


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, as float32 (stored vectors are float16)."""
    vectors = np.asarray(vectors, np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def on_grid(vectors: np.ndarray) -> np.ndarray:
    """Unit rows rounded to multiples of 2^-24, as float64.

    Why: a float32 matrix product rounds each score in an order that depends on the batch's shape
    (OpenBLAS blocks a 1-row product differently from a 4096-row one), so one photo's score
    changed in the 4th decimal with what else was scored beside it, and a photo at a threshold
    could be tagged in one batch and not in another.  On this grid each product of two components
    is a multiple of 2^-48 and, by Cauchy-Schwarz, every partial sum of them is below 2 in size: 50
    bits, so float64 holds every sum exactly and the order no longer matters.  The rounding moves
    a component by at most 2^-25 (a score by ~1e-7, float32's own rounding)."""
    return np.rint(np.asarray(vectors, np.float64) * GRID) / GRID


@dataclass(frozen=True)
class TagMatrix:
    keywords: tuple[str, ...]
    vectors: np.ndarray  # (tags, dim) float32, unit rows

    @classmethod
    def build(cls, vocabulary: Vocabulary, prompt_vectors: Mapping[str, np.ndarray]) -> TagMatrix:
        """Each tag's prompts averaged in one pass over all of them (a loop of one mean per tag cost
        ~0.05 s of every start for the 1,171 tags of the shipped list; this ~0.01 s)."""
        counts = np.array([len(tag.prompts) for tag in vocabulary.tags])
        prompts = normalize(np.stack([prompt_vectors[p] for tag in vocabulary.tags for p in tag.prompts]))
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        rows = np.add.reduceat(prompts, starts, axis=0) / counts[:, None].astype(np.float32)
        return cls(tuple(vocabulary.keywords), normalize(rows))

    @cached_property
    def _exact(self) -> np.ndarray:
        """The tag vectors on the score grid, transposed: (dim, tags) float64."""
        return np.ascontiguousarray(on_grid(self.vectors).T)

    def scores(self, images: np.ndarray) -> np.ndarray:
        """(N, dim) image vectors → (N, tags) cosine similarities, float32.

        A photo's score is the same whatever else is scored with it (pipeline batch, re-score
        chunk, ``explain`` alone, ``export`` of a folder, the review page): the product is exact
        (:func:`on_grid`) and only then rounded once to float32, which all comparisons use."""
        images = normalize(np.atleast_2d(images))
        out = np.empty((len(images), len(self.keywords)), np.float32)
        for start in range(0, len(images), SCORE_BLOCK):
            out[start:start + SCORE_BLOCK] = on_grid(images[start:start + SCORE_BLOCK]) @ self._exact
        return out


def thresholds(vocabulary: Vocabulary, default: float) -> np.ndarray:
    """Each tag's cosine threshold, in tag order: its own (rich lists) or ``default``."""
    return np.array([default if tag.threshold is None else tag.threshold for tag in vocabulary.tags],
                    np.float32)


def select(scores: np.ndarray, threshold: float | np.ndarray, top_k: int) -> list[list[int]]:
    """For each row, the indices of the best ``top_k`` scores above their threshold, best first.

    ``threshold`` is one number or one per tag (column); either way the whole batch is compared at
    once.  A tag below its threshold never takes a top_k place from one above its own.  ``top_k``
    0 is no cap: every tag above its threshold, as rtag writes them.
    """
    scores = np.atleast_2d(scores)
    limits = np.asarray(threshold, scores.dtype)  # compared at the scores' precision, as before
    k = scores.shape[1] if top_k == 0 else min(top_k, scores.shape[1])
    if k == 0:  # no tags at all
        return [[] for _ in range(len(scores))]
    if limits.ndim and limits.size and (limits == limits[0]).all():
        limits = limits[0]  # one threshold for all (a plain list): the cheaper path below
    # per tag: a failing tag costs infinity, so it sorts last and is never chosen
    cost = np.where(scores > limits, -scores, np.inf) if limits.ndim else -scores
    top = np.argpartition(cost, k - 1, axis=1)[:, :k]
    top_cost = np.take_along_axis(cost, top, axis=1)
    order = np.argsort(top_cost, axis=1, kind="stable")
    top = np.take_along_axis(top, order, axis=1)
    if limits.ndim:
        keep = np.isfinite(np.take_along_axis(top_cost, order, axis=1))
    else:
        keep = np.take_along_axis(scores, top, axis=1) > limits
    return [row[mask].tolist() for row, mask in zip(top, keep, strict=True)]


@dataclass(frozen=True)
class Expansion:
    """The levels each tag also writes when it is predicted, nearest first.

    Built from the tag list's hierarchy (a tag's parents, explicit or from WordNet) and the
    ``[tagging]`` settings: ``expand = "none"`` adds nothing; ``expand_depth`` keeps the nearest
    levels; ``expand_stop`` names levels never written.  Top_k bounds the predictions, not the
    levels they imply.
    """

    levels: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def of(cls, vocabulary: Vocabulary, tagging: Any) -> Expansion:
        if tagging.expand == "none":
            return cls()
        stop = folded(tagging.expand_stop)
        levels = {}
        for tag in vocabulary.tags:
            above = [p for p in reversed(tag.parents) if fold(p) not in stop]
            if tagging.expand_depth:
                above = above[:tagging.expand_depth]
            if above:
                levels[tag.keyword] = tuple(above)
        return cls(levels)

    def __call__(self, tags: list[tuple[str, float]],
                 kept_out: Collection[str] = ()) -> list[tuple[str, float]]:
        """Predicted (keyword, score) pairs, then each level they imply once, with the score of the
        best tag below it.  ``kept_out`` (case-folded, see Override.kept_out): tags a person took
        out of this photo, which imply no level (their own pair stays, for the write to leave out)."""
        if not self.levels:
            return tags
        return [*tags, *((level, score) for level, (_, score) in self.implied(tags, kept_out).items())]

    def implied(self, tags: list[tuple[str, float]],
                kept_out: Collection[str] = ()) -> dict[str, tuple[str, float]]:
        """Each level the predicted (keyword, score) pairs (best first) add, in the order
        :meth:`__call__` adds them → the best tag below it and that tag's score, which the level
        carries: the one rule ``export``, ``explain``, the dry run and the review page all show."""
        seen = {keyword for keyword, _ in tags}
        out: dict[str, tuple[str, float]] = {}
        for keyword, score in tags:
            if fold(keyword) in kept_out:
                continue
            for level in self.levels.get(keyword, ()):
                if level not in seen and level not in out:
                    out[level] = (keyword, score)
        return out


def orphaned_levels(tags: list[tuple[str, float]], kept_out: Collection[str],
                    levels: Mapping[str, tuple[str, ...]]) -> set[str]:
    """The levels in an expanded ``tags`` list (:class:`Expansion`) that only a tag in ``kept_out``
    (case-folded) implied.  For a tag a person is found to have taken out while its photo is being
    written, after the levels were added: expansion gives a level the score of the tag that implies
    it, which tells it from the same keyword predicted on its own merit.  A level such a tag implied
    justifies none above it (``shape`` above ``polygon`` above the ``square`` taken out): its own
    levels are the taken-out tag's too, and only a tag that stays holds one up, as in the re-score,
    whose expansion leaves the taken-out tag out from the start."""
    score = dict(tags)
    implied = {level for keyword, s in tags if fold(keyword) in kept_out
               for level in levels.get(keyword, ()) if score.get(level) == s}
    justified = {level for keyword, _ in tags if fold(keyword) not in kept_out and keyword not in implied
                 for level in levels.get(keyword, ())}
    return implied - justified


def predict(images: np.ndarray, tags: TagMatrix, threshold: float | np.ndarray,
            top_k: int, expansion: Expansion | None = None) -> list[list[tuple[str, float]]]:
    """Image vectors → for each image, its (keyword, score) pairs, best first, then the levels
    ``expansion`` adds."""
    scores = tags.scores(images)
    expand = expansion or Expansion()
    return [expand([(tags.keywords[i], float(scores[n, i])) for i in chosen])
            for n, chosen in enumerate(select(scores, threshold, top_k))]


def near_duplicates(tags: TagMatrix, limit: float = NEAR_DUPLICATE) -> list[tuple[float, str, str]]:
    """Pairs of tags whose vectors have cosine ≥ ``limit`` (an image scores them alike, so they
    fire together), most similar first; blockwise, so 20,000 tags need no 1.6 GB matrix."""
    pairs: list[tuple[float, str, str]] = []
    block = 1024
    vectors = tags.vectors
    for start in range(0, len(vectors), block):
        sims = vectors[start:start + block] @ vectors.T
        rows, cols = np.nonzero(sims >= limit)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            if start + r < c:
                pairs.append((float(sims[r, c]), tags.keywords[start + r], tags.keywords[c]))
    return sorted(pairs, key=lambda p: (-p[0], p[1], p[2]))
