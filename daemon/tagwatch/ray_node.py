"""What runs on a Ray cluster's nodes for ``tagwatch scan --engine ray``: the :class:`Station`.

A station is one Ray actor holding one model: one per GPU, or one per node (per 8 CPUs on a large
node) without GPUs.  It runs the stages that cost, on files it reaches at the same path as the driver
(a NAS mounted alike on every node): reading and keying (:func:`~tagwatch.vectors.read_key`),
decoding and encoding (:func:`~tagwatch.vectors.decode_each`, :func:`~tagwatch.vectors.encode`)
and writing the keywords the driver planned (:func:`~tagwatch.writeback.write_file`).  It never
opens the store: what it finds goes back to the driver, which alone owns SQLite and the ledger
(:mod:`tagwatch.ray_driver`).

The model is loaded in the actor's own process (:func:`tagwatch.model.load_model`), not in an
encoder child as the daemon does: the child exists to keep torch out of a long-lived daemon, and an
actor is itself a process that lives only for the scan.  Reading and writing run in the actor's
``io`` concurrency group (threads beside the encoding one), so a node reads and writes files while
its model encodes.  This module imports no Ray: the driver makes it an actor, so the class stays a
plain one that a test can also run in-process.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from . import __version__
from .config import DEFAULT_MAX_MEGAPIXELS, ModelConfig, WriteConfig
from .formats import ImageError
from .imaging import set_pixel_limit
from .metadata import ExifTool, KeywordWriter, MetadataError
from .vectors import FileVanished, Photo, ReadFailed, decode_each, encode, read_key
from .writeback import WriteJob, write_file

log = logging.getLogger(__name__)

Problem = ImageError | ReadFailed  # what the read and decode stages raise for one file


@dataclass(frozen=True)
class StationInfo:
    """What a loaded station tells the driver: the model must be the driver's own."""

    identity: str
    precision: str
    device: str
    host: str
    pid: int
    version: str


@dataclass
class Encoded:
    """One encode call's answer: per photo its key as read now, or the problem; the vectors of
    those that were encoded (rows in photo order); seconds the call took on the node."""

    keys: list[bytes | Problem]
    vectors: np.ndarray
    seconds: float


class Station:
    """One model on one node, and the node's file work: key, encode, write.  Never the store."""

    def __init__(self, model: ModelConfig, write: WriteConfig | None, threads: int,
                 device: str = "cpu", max_megapixels: float = DEFAULT_MAX_MEGAPIXELS) -> None:
        # The driver's ``max_megapixels``, as the local engine applies it: Pillow's limit is per
        # process, and a station's process would otherwise keep Pillow's built-in 89.48 MP
        set_pixel_limit(max_megapixels)
        self.cfg = replace(model, device=device)
        self.write_cfg = write
        self.threads = max(1, threads)
        self.model: Any = None
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="tagwatch-decode")
        self._local = threading.local()  # one exiftool per io thread: writes run side by side
        _log_to_stderr()

    def load(self) -> StationInfo | str:
        """Load the model; its info, or the one-line reason it cannot be loaded."""
        import torch

        from .model import ModelError, load_model

        torch.set_num_threads(self.threads)
        try:
            self.model = load_model(self.cfg)
        except ModelError as exc:
            return str(exc)
        return StationInfo(self.model.identity, self.model.precision, self.cfg.device, socket.gethostname(),
                           os.getpid(), __version__)

    def keys(self, photos: list[Photo]) -> list[bytes | Problem]:
        """Each photo's content key, or why it cannot be read (the bytes are dropped at once)."""
        return list(self._pool.map(_key_only, photos))

    def encode(self, photos: list[Photo]) -> Encoded:
        """Read, key, decode and encode: the key is taken again from the bytes that are decoded, so
        a vector always belongs to the key it is returned with (a file replaced since the driver
        keyed it comes back under its new key)."""
        started = time.perf_counter()
        keys = list(self._pool.map(_key, photos))
        readable = [photo for photo, key in zip(photos, keys, strict=True) if isinstance(key, bytes)]
        decoded = iter(decode_each(readable, self.model.preprocess, self._pool.map))  # drops the bytes
        arrays: list[np.ndarray] = []
        for i, key in enumerate(keys):
            if isinstance(key, bytes):
                result = next(decoded)
                if isinstance(result, ImageError):
                    keys[i] = result
                else:
                    arrays.append(result)
        vectors = encode(self.model, arrays) if arrays else np.zeros((0, 0), np.float32)
        return Encoded(keys, np.ascontiguousarray(vectors, np.float32), time.perf_counter() - started)

    def encode_texts(self, prompts: list[str]) -> np.ndarray:
        """A tag list's prompts → unit vectors (the driver stores them)."""
        return self.model.encode_texts(prompts)

    def write(self, jobs: list[WriteJob]) -> list[os.stat_result | MetadataError | OSError | FileVanished]:
        """Apply each planned write (:func:`~tagwatch.writeback.write_file`); per job the file's stat
        afterwards, or the error the driver turns into an outcome: :class:`FileVanished` where this
        node does not find the file at all, which the driver, seeing it, blames on the node (a
        share not mounted here), not on the file."""
        writer = getattr(self._local, "writer", None)
        if writer is None:
            writer = self._local.writer = KeywordWriter(ExifTool(), self.write_cfg)
        out: list[os.stat_result | MetadataError | OSError | FileVanished] = []
        for job in jobs:
            try:
                out.append(write_file(writer, job))
            except (MetadataError, OSError) as exc:
                missing = not os.path.lexists(job.path)
                out.append(FileVanished(f"not found on this node: {exc}") if missing else exc)
        return out


def _key(photo: Photo) -> bytes | Problem:
    """:func:`read_key` for a pool's ``map``: the key (the bytes kept for decoding), or the problem."""
    try:
        read_key(photo)
    except (ImageError, ReadFailed) as exc:
        return exc
    assert photo.key is not None
    return photo.key


def _key_only(photo: Photo) -> bytes | Problem:
    key = _key(photo)
    photo.data = None
    return key


def _log_to_stderr() -> None:
    """Our warnings (a keyword written to XMP only, a file that cannot be decoded) on the actor's
    stderr, which Ray prints on the driver's terminal."""
    logger = logging.getLogger("tagwatch")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.WARNING)
