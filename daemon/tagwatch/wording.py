"""Counts and lists in messages: a person reads "1 photo", not "1 photos", and one spelling serves every
line."""

from __future__ import annotations

from collections.abc import Iterable


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``1 photo``, ``3 photos``, ``0 photos``; ``plural`` where adding an ``s`` is wrong (batches)."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def listed(keywords: Iterable[str]) -> str:
    """Keywords in a line, ``, ``-separated; one that holds a comma itself is quoted, or rtag's
    ImageNet keyword ``loudspeaker, speaker, speaker unit`` read as three keywords taken out."""
    return ", ".join(f'"{k}"' if "," in k else k for k in keywords)
