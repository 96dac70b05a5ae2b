"""Scores → tags: the rtag method, as matrix products.

A tag's vector is the mean of its prompts' unit vectors, renormalised (the CLIP prompt ensemble).
An image gets every tag whose cosine similarity is above ``threshold``, at most ``top_k``, best first.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .vocabulary import Vocabulary


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, as float32 (stored vectors are float16)."""
    vectors = np.asarray(vectors, np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


@dataclass(frozen=True)
class TagMatrix:
    keywords: tuple[str, ...]
    vectors: np.ndarray  # (tags, dim) float32, unit rows

    @classmethod
    def build(cls, vocabulary: Vocabulary, prompt_vectors: Mapping[str, np.ndarray]) -> TagMatrix:
        rows = [normalize(np.stack([prompt_vectors[p] for p in tag.prompts])).mean(axis=0)
                for tag in vocabulary.tags]
        return cls(tuple(vocabulary.keywords), normalize(np.stack(rows)))

    def scores(self, images: np.ndarray) -> np.ndarray:
        """(N, dim) image vectors → (N, tags) cosine similarities."""
        return normalize(np.atleast_2d(images)) @ self.vectors.T


def select(scores: np.ndarray, threshold: float, top_k: int) -> list[list[int]]:
    """For each row, the indices of the best ``top_k`` scores above ``threshold``, best first."""
    scores = np.atleast_2d(scores)
    k = min(top_k, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    top_scores = np.take_along_axis(scores, top, axis=1)
    order = np.argsort(-top_scores, axis=1, kind="stable")
    top = np.take_along_axis(top, order, axis=1)
    keep = np.take_along_axis(top_scores, order, axis=1) > threshold
    return [row[mask].tolist() for row, mask in zip(top, keep, strict=True)]


def predict(images: np.ndarray, tags: TagMatrix, threshold: float,
            top_k: int) -> list[list[tuple[str, float]]]:
    """Image vectors → for each image, its (keyword, score) pairs, best first."""
    scores = tags.scores(images)
    return [[(tags.keywords[i], float(scores[n, i])) for i in chosen]
            for n, chosen in enumerate(select(scores, threshold, top_k))]
