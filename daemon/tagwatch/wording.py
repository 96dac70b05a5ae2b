"""Counts and lists in messages: a person reads "1 photo", not "1 photos", and one spelling serves every
line; and the keywords a mistyped name may have meant."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

from .casefold import fold


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``1 photo``, ``3 photos``, ``0 photos``; ``plural`` where adding an ``s`` is wrong (batches)."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def quoted(keyword: str) -> str:
    """A keyword as a line of them shows it: as it is, or quoted where it holds a comma (rtag's
    ImageNet keyword ``loudspeaker, speaker, speaker unit`` read as three keywords) or a double
    quote, whose quotes are then doubled as in CSV (``orange, "tangerine"`` read as
    ``"orange, "tangerine""``, a keyword closed early): Python's ``csv.reader`` with
    ``skipinitialspace=True`` reads the line back into the keywords."""
    if "," not in keyword and '"' not in keyword:
        return keyword
    return '"' + keyword.replace('"', '""') + '"'


def listed(keywords: Iterable[str]) -> str:
    """Keywords in a line, ``, ``-separated, each as :func:`quoted` shows it."""
    return ", ".join(quoted(k) for k in keywords)


def held_in(embeds: bool, sidecar: bool, shared_with: Sequence[str] = ()) -> str:
    """Where a photo's keywords are, for a line saying they are there already: ``the file`` (a JPEG
    carries them itself), ``its sidecar`` (HEIC, PNG, WebP, RAW: ``photo.heic.xmp``), ``the sidecar
    it shares with IMG_1.JPG`` (``photo.xmp`` naming), or the file and its sidecar (target ``both``).
    "(already in the file)" of a HEIC sent people looking for keywords inside the HEIC."""
    side = f"the sidecar it shares with {', '.join(shared_with)}" if shared_with else "its sidecar"
    if embeds:
        return f"the file and {side}" if sidecar else "the file"
    return side


def score_beside(score: float, limit: float) -> str:
    """A score shown beside a threshold: three decimals, or as many more (up to six) as it takes not
    to read as the threshold itself: a photo at 0.5409 under a threshold of 0.541 read "0.541" in
    the review page's list of those that do not get the tag.  One at the threshold reads as it."""
    for places in range(3, 7):
        if f"{score:.{places}f}" != f"{limit:.{places}f}":
            return f"{score:.{places}f}"
    return f"{score:.3f}"


def resembling(name: str, keywords: Iterable[str], n: int = 3) -> list[str]:
    """Up to ``n`` of ``keywords`` that ``name`` may have meant, for a "did you mean" hint, compared
    folded: first those that begin with it (``orange`` for the list's ``orange, "tangerine"``, which
    difflib's ratio alone ranked below ``triangle``), then difflib's close matches."""
    spelled: dict[str, str] = {}
    for keyword in keywords:
        spelled.setdefault(fold(keyword), keyword)  # the first spelling of a folded keyword wins
    typed = fold(name).strip()
    starting = [k for k in spelled if typed and k.startswith(typed)]
    close = difflib.get_close_matches(typed, list(spelled), n=n)
    return [spelled[k] for k in dict.fromkeys([*starting, *close])][:n]
