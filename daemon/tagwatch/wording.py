"""Counts and lists in messages: a person reads "1 photo", not "1 photos", and one spelling serves every
line."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``1 photo``, ``3 photos``, ``0 photos``; ``plural`` where adding an ``s`` is wrong (batches)."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def listed(keywords: Iterable[str]) -> str:
    """Keywords in a line, ``, ``-separated; one that holds a comma itself is quoted, or rtag's
    ImageNet keyword ``loudspeaker, speaker, speaker unit`` read as three keywords taken out."""
    return ", ".join(f'"{k}"' if "," in k else k for k in keywords)


def held_in(embeds: bool, sidecar: bool, shared_with: Sequence[str] = ()) -> str:
    """Where a photo's keywords are, for a line saying they are there already: ``the file`` (a JPEG
    carries them itself), ``its sidecar`` (HEIC, PNG, WebP, RAW: ``photo.heic.xmp``), ``the sidecar
    it shares with IMG_1.JPG`` (``photo.xmp`` naming), or the file and its sidecar (target ``both``).
    "(already in the file)" of a HEIC sent people looking for keywords inside the HEIC."""
    side = f"the sidecar it shares with {', '.join(shared_with)}" if shared_with else "its sidecar"
    if embeds:
        return f"the file and {side}" if sidecar else "the file"
    return side
