"""Content key → image vector: the read, decode and encode stages, and the vector cache.

A photo's vector depends on its pixels only, so it is cached by content key and model
(:class:`VectorCache`): a renamed, copied or re-tagged photo is never decoded again.  The stages are
plain functions of their inputs, without threads and without the store, so that any engine can run
them where it likes: the local engine in its decode pool and encoder child, the Ray engine on
cluster workers while the driver alone owns SQLite.

- :func:`read_key`: the file's bytes and content key (raises :class:`ReadFailed`,
  :class:`FileVanished`, or :class:`~tagwatch.formats.ImageError`);
- :func:`decode`: bytes → the model's input array (raises :class:`~tagwatch.formats.ImageError`);
- :func:`encode`: arrays → unit vectors, with nothing but the model;
- :class:`VectorCache`: vectors by key in the store (the driver's side);
- :func:`text_vectors`: prompt → vector for a tag list, encoding only the prompts not cached.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

import numpy as np

from .formats import ImageError, IncompleteImage, content_key
from .imaging import Preprocess, decoding, prepare_pixels
from .retry import TRANSIENT_ERRNOS, sqlite_locked, transient_reason
from .store import Store, stored_form

if TYPE_CHECKING:
    from .encoder import LazyModel

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")
Mapper = Callable[[Callable[[T], R], Iterable[T]], Iterable[R]]  # ``map`` or ``Executor.map``


class ImageEncoder(Protocol):
    """What the encode stage needs: a loaded model (the encoder child, or open_clip in-process)."""

    preprocess: Preprocess

    def encode_images(self, batch: np.ndarray) -> np.ndarray: ...


class ReadFailed(Exception):
    """The file could not be read; the message is the reason.  ``transient``: the storage's fault
    (a full or unreachable disk, see :mod:`tagwatch.retry`), not the file's: worth a retry later."""

    def __init__(self, reason: str, transient: bool = False) -> None:
        super().__init__(reason)
        self.transient = transient


class FileVanished(ReadFailed):
    """The file was deleted or renamed away before it could be read."""


@dataclass
class Photo:
    """One file on its way through the stages; each stage fills in what it finds."""

    path: str
    stat: os.stat_result  # as seen when the file was picked up: the write is abandoned if it changes
    data: bytes | None = None  # read_key; dropped once decoded or once its vector is known
    key: bytes | None = None  # read_key
    vector: np.ndarray | None = None  # from the cache, or encoded
    caption: str | None = None  # from the caption cache, or generated (captions on: tagwatch.captions)
    # Seen to stop growing, or taken as it is (no one watches it): a RAW whose maker's byte counts
    # overshoot is keyed only then (formats.UnsettledRaw)
    settled: bool = True


def read_key(photo: Photo) -> None:
    """Read ``photo``'s bytes and compute its content key (sets ``data`` and ``key``)."""
    try:
        with open(photo.path, "rb") as handle:
            photo.data = handle.read()
    except FileNotFoundError:
        raise FileVanished("file vanished before it could be read") from None
    except OSError as exc:
        raise ReadFailed(f"cannot read: {exc.strerror}", exc.errno in TRANSIENT_ERRNOS) from None
    if not photo.data:
        raise IncompleteImage("empty file (0 bytes)")
    try:
        photo.key = content_key(photo.data, settled=photo.settled)
    except ImageError:
        photo.data = None
        raise


def decode(data: bytes, spec: Preprocess, path: str) -> np.ndarray:
    """Bytes → the model's input as upright HWC uint8 pixels (:func:`encode` normalises them: a
    quarter of float32's memory for the photos an engine keeps decoded ahead); any failure is an
    :class:`ImageError` (a decoder bug on one odd file is that file's problem, not the batch's).
    The decoder's warnings are logged naming ``path``, the file the bytes are from."""
    try:
        with decoding(path):
            return prepare_pixels(data, spec)
    except ImageError:
        raise
    except Exception as exc:
        raise ImageError(f"cannot decode: {type(exc).__name__}: {exc}") from None


def decode_each(photos: Sequence[Photo], spec: Preprocess,
                map_: Mapper = map, keep: bool = False) -> list[np.ndarray | ImageError]:
    """Decode every photo's bytes (dropping them as it goes, unless ``keep``: a second model with
    other preprocessing decodes them next), through ``map_`` (a pool's ``map`` runs them in
    parallel); an :class:`ImageError` stands in for each photo that cannot be used."""

    def one(photo: Photo) -> np.ndarray | ImageError:
        try:
            assert photo.data is not None
            return decode(photo.data, spec, photo.path)
        except ImageError as exc:
            return exc
        finally:
            if not keep:
                photo.data = None

    return list(map_(one, photos))


def encode(model: ImageEncoder, arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Decoded arrays (:func:`decode`'s uint8 pixels, or normalised CHW float32) → (N, D) float32
    unit vectors, in order."""
    return model.encode_images(np.stack(list(arrays)))


class VectorCache:
    """Image vectors by content key for one model, in the store."""

    def __init__(self, store: Store, model_id: str) -> None:
        self.store, self.model_id = store, model_id

    def get(self, keys: Iterable[bytes]) -> dict[bytes, np.ndarray]:
        return self.store.image_vectors(keys, self.model_id)

    def put(self, vectors: Mapping[bytes, np.ndarray]) -> dict[bytes, np.ndarray]:
        """Store fresh vectors; returns them as stored (float16), so a fresh encode scores exactly
        as a later retag from the cache does."""
        self.store.put_image_vectors(dict(vectors), self.model_id)
        return self.store.image_vectors(vectors, self.model_id)


TEXT_PART = 256  # prompts encoded and stored at a time: progress to show, and kept if interrupted
# How long storing new prompt vectors waits for another program's lock.  They are a cache (kept in
# memory when not stored, encoded again next time), and a lock that outlasts this is a backup's, on
# which the re-score's first write then waits (retry.DATABASE_LOCK_WAIT_S) and says so: waiting the
# full wait here too made a daemon started or reloaded under a backup's lock wait twice before its
# line (10 s).  Another tagwatch's writes last milliseconds and pass within it.
PROMPT_LOCK_WAIT_S = 1.0


def text_vectors(store: Store, model: LazyModel, prompts: Sequence[str],
                 advance: Callable[[int], None] = lambda count: None) -> tuple[dict[str, np.ndarray], int]:
    """Every prompt's text vector, from the store or encoded (loading the model only if some prompt
    is new) and stored; returns the vectors and how many prompts had to be encoded.  New prompts are
    encoded and stored a few hundred at a time, ``advance`` told of each part."""
    vectors = store.text_vectors(prompts, model.identity)
    missing = sorted((p for p in prompts if p not in vectors), key=len)  # similar lengths batch well
    unstored: dict[str, np.ndarray] = {}
    if missing:
        with model.using() as encoder:
            for start in range(0, len(missing), TEXT_PART):
                part = missing[start:start + TEXT_PART]
                fresh = dict(zip(part, encoder.encode_texts(part), strict=True))
                if unstored:  # an earlier part could not be stored: this one would only wait again
                    unstored.update((p, stored_form(v)) for p, v in fresh.items())
                    advance(len(part))
                    continue
                try:
                    with store.lock_wait(PROMPT_LOCK_WAIT_S):
                        store.put_text_vectors(fresh, model.identity)
                except Exception as exc:  # a read-only database must not stop the daemon's start
                    passing = transient_reason(exc)
                    if passing is None:
                        raise
                    if not unstored:  # a lock (a backup's) is said by the re-score that waits on it
                        log.log(logging.DEBUG if sqlite_locked(exc) else logging.WARNING,
                                "prompt vectors not stored (%s); they are encoded again next time", passing)
                    unstored.update((p, stored_form(v)) for p, v in fresh.items())
                advance(len(part))
        vectors.update(store.text_vectors(missing, model.identity))
        vectors.update(unstored)
    return vectors, len(missing)
