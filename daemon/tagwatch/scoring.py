"""Scores judged against labels: which tags a threshold keeps, precision, recall, F1, average
precision, and the threshold that maximises F1.

Pure numpy, shared by ``tagwatch export``, ``tagwatch calibrate`` and ``scripts/evaluate.py`` so the
three judge tags exactly the way the tags are chosen for writing: a tag is kept when its score is
above its own threshold (a rich tag list's per-tag ``threshold``, else the global one), and at most
``top_k`` kept tags per photo (0: no cap), best score first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .tagger import select


def tag_thresholds(tags: Sequence[Any], default: float) -> np.ndarray:
    """Each tag's own ``threshold`` where it has one (rich ``.toml`` lists), else ``default``, as
    written (float64); comparisons cast it to float32 like the scores, see :func:`choose`."""
    return np.array([default if getattr(tag, "threshold", None) is None else float(tag.threshold)
                     for tag in tags], np.float64)


def has_own_thresholds(tags: Sequence[Any]) -> bool:
    return any(getattr(tag, "threshold", None) is not None for tag in tags)


def choose(scores: np.ndarray, thresholds: np.ndarray | float, top_k: int) -> list[list[int]]:
    """For each row, the tags above their threshold, at most ``top_k`` (0: all of them), best first.

    Tags below their own threshold are set to -inf and the daemon's selection then keeps the best
    ``top_k`` of the rest: with one global threshold this is exactly :func:`tagger.select`.  The
    comparison is in float32, as NumPy compares float32 scores with a Python float threshold.
    """
    scores = np.atleast_2d(np.asarray(scores, np.float32))
    masked = np.where(scores > np.asarray(thresholds, np.float32), scores, -np.inf)
    return select(masked, float("-inf"), top_k)


def chosen_matrix(scores: np.ndarray, thresholds: np.ndarray | float, top_k: int) -> np.ndarray:
    """:func:`choose` as an (images, tags) boolean matrix."""
    scores = np.atleast_2d(scores)
    chosen = np.zeros(scores.shape, bool)
    for row, picked in enumerate(choose(scores, thresholds, top_k)):
        chosen[row, picked] = True
    return chosen


@dataclass(frozen=True)
class Counts:
    """True positives, false positives and false negatives of one tag (or summed over tags)."""

    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float | None:
        """None when nothing was predicted: undefined, not 0 or 1."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def recall(self) -> float | None:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None

    @property
    def f1(self) -> float | None:
        """2·TP / (2·TP + FP + FN); None when there is nothing to find and nothing was predicted:
        undefined like precision and recall then, not 0 (nothing was missed or got wrong)."""
        total = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / total if total else None


def counts(predicted: np.ndarray, truth: np.ndarray, considered: np.ndarray | None = None) -> list[Counts]:
    """Per-tag counts from (images, tags) boolean matrices; ``considered`` masks out pairs that are
    neither positive nor negative (an example of a child tag, for its parent)."""
    if np.ndim(predicted) != 2 or np.shape(predicted) != np.shape(truth):
        raise ValueError("counts() takes two (images, tags) matrices of the same shape")
    if considered is None:
        considered = np.ones(truth.shape, bool)
    tp = (predicted & truth & considered).sum(axis=0)
    fp = (predicted & ~truth & considered).sum(axis=0)
    fn = (~predicted & truth & considered).sum(axis=0)
    return [Counts(int(a), int(b), int(c)) for a, b, c in zip(tp, fp, fn, strict=True)]


def micro(per_tag: Sequence[Counts]) -> Counts:
    """The counts of all tags summed: every (image, tag) decision weighs the same."""
    return Counts(sum(c.tp for c in per_tag), sum(c.fp for c in per_tag), sum(c.fn for c in per_tag))


def average_precision(scores: np.ndarray, truth: np.ndarray) -> float | None:
    """Mean of the precision at the rank of each positive, images ranked by score (best first).

    None for a tag without positives (it has no ranking to judge).  Equal scores keep input order.
    """
    truth = np.asarray(truth, bool)
    positives = int(truth.sum())
    if not positives:
        return None
    ranked = truth[np.argsort(-np.asarray(scores, np.float64), kind="stable")]
    hits = np.cumsum(ranked)
    return float((hits[ranked] / (np.flatnonzero(ranked) + 1)).sum() / positives)


def mean_average_precision(scores: np.ndarray, truth: np.ndarray) -> tuple[float | None, list[float | None]]:
    """mAP over the tags that have at least one positive, and each tag's AP."""
    per_tag = [average_precision(scores[:, j], truth[:, j]) for j in range(scores.shape[1])]
    defined = [ap for ap in per_tag if ap is not None]
    return (sum(defined) / len(defined) if defined else None), per_tag


def best_threshold(scores: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """The threshold whose decisions ``score > threshold`` have the highest F1, and that F1.

    Candidates sit in the gaps between consecutive distinct scores; among equally good gaps the
    widest wins and the threshold is its middle, so a photo scoring a little differently from its
    example still lands on the same side.  Cutting below every score (everything positive) is a
    candidate too.  Needs at least one positive.
    """
    scores = np.asarray(scores, np.float32)
    truth = np.asarray(truth, bool)
    if not truth.any():
        raise ValueError("best_threshold needs at least one positive example")
    order = np.argsort(-scores, kind="stable")
    ranked, labels = scores[order].astype(np.float64), truth[order]
    tp = np.cumsum(labels)
    fp = np.cumsum(~labels)
    fn = int(labels.sum()) - tp
    f1 = 2 * tp / (2 * tp + fp + fn)
    best: tuple[float, float, float] | None = None  # (f1, gap, threshold)
    for i in range(len(ranked)):
        below = ranked[i + 1] if i + 1 < len(ranked) else max(ranked[-1] - 0.02, -1.0)
        if below == ranked[i]:
            continue  # equal scores cannot be told apart: no threshold between them
        candidate = (float(f1[i]), ranked[i] - below, _between(below, ranked[i]))
        if best is None or candidate[:2] > best[:2]:
            best = candidate
    assert best is not None
    return best[2], best[0]


def _between(low: float, high: float) -> float:
    """A short decimal strictly between two scores in float32 (what the daemon compares in)."""
    middle = (low + high) / 2
    for digits in range(2, 10):
        value = round(middle, digits)
        near_middle = abs(value - middle) <= (high - low) / 10
        if near_middle and np.float32(low) <= np.float32(value) < np.float32(high):
            return value
    return middle
