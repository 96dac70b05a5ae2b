"""``tagwatch export``: every photo's tags as JSON or CSV, re-scored from the cached vectors.

What is exported is what tagwatch would write into each photo today (or will, once it gets to it):
the predictions, with the photo's corrections applied and without a keyword a person took out of it.
The file may hold more: a person's own keywords, and in append mode those tagwatch wrote before and
no longer predicts (docs/export.md).
No image is encoded: a photo whose pixels have a vector in the store (for this model) is scored
against the current tag list; any other photo is reported as not encoded.  A photo's content key is
taken from the store while its size and modification time still match what was recorded, and
computed from the file otherwise, so an edited photo is never reported with its old picture's tags.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from .casefold import fold
from .formats import ImageError, content_key
from .freshness import is_unchanged
from .geotag import Places
from .overrides import Overrides
from .scoring import choose
from .store import Store
from .tagger import Expansion, TagMatrix

SEPARATOR = "; "  # between keywords in the one-row-per-photo CSV


@dataclass(frozen=True)
class Exported:
    path: str
    tags: list[tuple[str, float]]  # best first; a caption's keywords after the list's
    places: list[str] = field(default_factory=list)  # country, region, locality: keywords without a score
    caption: str | None = None  # with captions on: the photo's caption
    candidates: tuple[tuple[str, float], ...] = ()  # every candidate keyword of the caption, scored


def cached_vectors(store: Store, model: str, paths: Sequence[str],
                   advance: Callable[[int], None] = lambda count: None,
                   keys_out: dict[str, bytes] | None = None) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The cached vector of each photo, and for each photo without one the reason; ``advance`` is
    called as each photo is looked at (a progress bar); ``keys_out`` receives the content key of each
    photo with a vector (its cached caption is found by it)."""
    rows = store.files(paths)
    keys: dict[str, bytes] = {}
    missing: dict[str, str] = {}
    for path in paths:
        advance(1)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            missing[path] = "no such file"
            continue
        except OSError as exc:
            missing[path] = f"cannot read: {exc.strerror}"
            continue
        row = rows.get(path)
        if row is not None and row.key is not None and is_unchanged(row, st):
            keys[path] = row.key
            continue
        try:
            with open(path, "rb") as handle:
                keys[path] = content_key(handle.read())
        except ImageError as exc:
            missing[path] = str(exc)
        except OSError as exc:
            missing[path] = f"cannot read: {exc.strerror}"
    found = store.image_vectors(keys.values(), model)
    vectors: dict[str, np.ndarray] = {}
    for path, key in keys.items():
        if key in found:
            vectors[path] = found[key]
            if keys_out is not None:
                keys_out[path] = key
        else:
            missing[path] = "not encoded yet (`tagwatch scan` on it encodes and tags it)"
    return vectors, missing


def score(vectors: dict[str, np.ndarray], tags: TagMatrix, thresholds: np.ndarray | float,
          top_k: int, expansion: Expansion | None = None,
          kept: Mapping[str, Collection[str]] | None = None) -> list[Exported]:
    """Each photo's chosen tags with their scores, photos sorted by path, then the levels above
    them that expansion writes (with the score of the tag that implies each), none for a tag a
    person took out of that photo (``kept``, from :func:`kept_out`)."""
    paths = sorted(vectors)
    if not paths:
        return []
    expand = expansion or Expansion()
    scores = tags.scores(np.stack([vectors[p] for p in paths]))
    kept = kept or {}
    return [Exported(path, expand([(tags.keywords[i], float(scores[n, i])) for i in chosen],
                                  kept.get(path, ())))
            for n, (path, chosen) in enumerate(zip(paths, choose(scores, thresholds, top_k), strict=True))]


def with_places(results: Sequence[Exported], store: Store, places: Places,
                overrides: Overrides) -> list[Exported]:
    """Each photo's place keywords, from the coordinates recorded when it was last tagged (a photo
    changed since has its places again once the daemon or ``scan`` has seen the change), without
    the levels its corrections remove, as the write leaves them out."""
    paths = [r.path for r in results]
    rows = store.files(paths)
    fresh: dict[str, int] = {}
    for path, row in rows.items():
        try:
            st = os.stat(path)
        except OSError:
            continue
        if is_unchanged(row, st):
            fresh[path] = row.id
    found = places.of_files(store.located(fresh.values()), fresh,
                            {path: overrides.for_path(path).removes() for path in fresh})
    def places(r: Exported) -> list[str]:
        # a place spelled as one of the photo's tags ("Paris", the tag "paris") is that keyword: once
        tags = {fold(k) for k, _ in r.tags}
        return [p for p in found.get(r.path, []) if fold(p) not in tags]

    return [replace(r, places=places(r)) for r in results]


def kept_out(store: Store, overrides: Overrides, keys: Mapping[str, bytes]) -> dict[str, set[str]]:
    """path → the keywords (case-folded) a person took out of that photo and no correction of theirs
    adds back: never written into it again, so neither exported nor a reason for a level above them."""
    declined = store.declined(keys)
    return {path: overrides.for_path(path).kept_out(words) for path, words in declined.items()}


def as_written(results: Sequence[Exported], overrides: Overrides,
               kept: Mapping[str, Collection[str]]) -> list[Exported]:
    """Each photo's keywords as tagwatch writes them into it: its corrections (overrides) applied, a
    keyword one adds listed unscored, and without a keyword a person took out of that photo
    (``kept``, from :func:`kept_out`)."""
    written: list[Exported] = []
    for r in results:
        override = overrides.for_path(r.path)
        out = kept.get(r.path, ())
        tags = override.apply(r.tags) if override else r.tags
        written.append(replace(r, tags=[(k, s) for k, s in tags if fold(k) not in out],
                               places=[p for p in r.places if fold(p) not in out]))
    return written


def _score(value: float | None) -> float | None:
    """A score as exported: None for a keyword without one (a place, a correction's addition)."""
    return None if value is None or math.isnan(value) else round(value, 4)


def display_path(path: str, cwd: str) -> str:
    """Relative to ``cwd`` when the photo is inside it, else absolute: short and unambiguous."""
    base = cwd.rstrip("/") + "/"
    return path[len(base):] if path.startswith(base) else path


def render_json(results: Sequence[Exported], cwd: str, with_scores: bool, captions: bool = False) -> str:
    """``{"photo.jpg": ["nature", "bw", "Italy"]}``, or with scores ``{"photo.jpg": {"nature": 0.3114,
    "Italy": null}}`` (a place keyword has no score).

    With captions on, each photo is ``{"tags": <the same>, "caption": "..."}``, and with scores also
    ``"candidates": {"red circle": 0.41, ...}``, every candidate keyword of the caption with its score.
    """
    def tags(r: Exported) -> object:
        if with_scores:
            return {**{k: _score(s) for k, s in r.tags}, **dict.fromkeys(r.places)}
        return [k for k, _ in r.tags] + r.places

    doc: dict[str, object] = {}
    for r in results:
        entry = tags(r)
        if captions:
            entry = {"tags": entry, "caption": r.caption}
            if with_scores:
                entry["candidates"] = {k: round(s, 4) for k, s in r.candidates}
        doc[display_path(r.path, cwd)] = entry
    return json.dumps(doc, ensure_ascii=False, indent=2) + "\n"


def render_csv(results: Sequence[Exported], cwd: str, with_scores: bool, captions: bool = False) -> str:
    """``path,tags`` one row per photo (keywords joined by ``"; "``); with scores ``path,tag,score``
    one row per photo and tag (a place keyword with an empty score), and a photo without tags as one
    row with empty tag and score.  With captions on, a ``caption`` column follows; with scores, each
    candidate keyword of the caption that was not kept is a row too, its ``tag`` cell empty and the
    candidate in ``candidate``."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    extra = ["caption"] if captions else []
    if with_scores:
        writer.writerow(["path", "tag", "score", *extra, *(["candidate"] if captions else [])])
        for r in results:
            more = [r.caption or ""] if captions else []
            for keyword, value in [*r.tags, *((p, None) for p in r.places)] or [("", None)]:
                shown = _score(value)
                writer.writerow([display_path(r.path, cwd), keyword,
                                 "" if shown is None else f"{shown:.4f}", *more, *([""] if captions else [])])
            kept = {k for k, _ in r.tags}
            for candidate, value in r.candidates if captions else ():
                if candidate not in kept:
                    writer.writerow([display_path(r.path, cwd), "", f"{value:.4f}", *more, candidate])
    else:
        writer.writerow(["path", "tags", *extra])
        for r in results:
            writer.writerow([display_path(r.path, cwd), SEPARATOR.join([k for k, _ in r.tags] + r.places),
                             *([r.caption or ""] if captions else [])])
    return out.getvalue()
