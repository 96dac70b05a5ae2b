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
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

import numpy as np

from . import __version__, logs
from .config import DEFAULT_MAX_MEGAPIXELS, ModelConfig, WriteConfig
from .formats import ImageError
from .imaging import set_pixel_limit
from .metadata import ExifTool, KeywordWriter, MetadataError
from .vectors import FileVanished, Photo, ReadFailed, decode_each, encode, read_key
from .writeback import WriteJob, write_file

log = logging.getLogger(__name__)

Problem = ImageError | ReadFailed  # what the read and decode stages raise for one file
Written = os.stat_result | MetadataError | OSError | FileVanished  # a write's stat, or why not
T = TypeVar("T")


@dataclass(frozen=True)
class LogLine:
    """A station's log record, as plain data: the driver logs it again, in its own format."""

    logger: str
    level: int
    message: str
    fields: dict[str, Any]  # the record's extra fields (logs.FIELDS): path, reason, event...


@dataclass
class Answer(Generic[T]):
    """A station call's result, with the log lines the station made since its last answer."""

    value: T
    lines: list[LogLine] = field(default_factory=list)


class _Collector(logging.Handler):
    """Keeps a station's log records for its next answer (thread-safe: a deque's ends are)."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: deque[LogLine] = deque()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            message += f" ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})"
        fields = {name: getattr(record, name) for name in logs.FIELDS if hasattr(record, name)}
        self.lines.append(LogLine(record.name, record.levelno, message, fields))

    def drain(self) -> list[LogLine]:
        out = []
        while self.lines:
            out.append(self.lines.popleft())
        return out


@dataclass(frozen=True)
class StationInfo:
    """What a loaded station tells the driver: the model must be the driver's own."""

    identity: str
    precision: str
    device: str
    host: str
    pid: int
    version: str
    nice: int = 0  # Ray starts its workers at niceness 15 unless the cluster says otherwise


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
                 device: str = "cpu", max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
                 log_level: int = logging.WARNING) -> None:
        # The driver's ``max_megapixels``, as the local engine applies it: Pillow's limit is per
        # process, and a station's process would otherwise keep Pillow's built-in 89.48 MP
        set_pixel_limit(max_megapixels)
        self.cfg = replace(model, device=device)
        self.write_cfg = write
        self.threads = max(1, threads)
        self.model: Any = None
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="tagwatch-decode")
        self._local = threading.local()  # one exiftool per io thread: writes run side by side
        self._logs = _collect_logs(log_level)

    def _answer(self, value: T) -> Answer[T]:
        return Answer(value, self._logs.drain())

    def load(self) -> Answer[StationInfo | str]:
        """Load the model; its info, or the one-line reason it cannot be loaded."""
        import torch

        from .model import ModelError, load_model

        torch.set_num_threads(self.threads)
        try:
            self.model = load_model(self.cfg)
        except ModelError as exc:
            return self._answer(str(exc))
        return self._answer(StationInfo(self.model.identity, self.model.precision, self.cfg.device,
                                        socket.gethostname(), os.getpid(), __version__, os.nice(0)))

    def keys(self, photos: list[Photo]) -> Answer[list[bytes | Problem]]:
        """Each photo's content key, or why it cannot be read (the bytes are dropped at once)."""
        return self._answer(list(self._pool.map(_key_only, photos)))

    def encode(self, photos: list[Photo]) -> Answer[Encoded]:
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
        return self._answer(Encoded(keys, np.ascontiguousarray(vectors, np.float32),
                                    time.perf_counter() - started))

    def encode_texts(self, prompts: list[str]) -> Answer[np.ndarray]:
        """A tag list's prompts → unit vectors (the driver stores them)."""
        return self._answer(self.model.encode_texts(prompts))

    def write(self, jobs: list[WriteJob]) -> Answer[list[Written]]:
        """Apply each planned write (:func:`~tagwatch.writeback.write_file`); per job the file's stat
        afterwards, or the error the driver turns into an outcome: :class:`FileVanished` where this
        node does not find the file at all, which the driver, seeing it, blames on the node (a
        share not mounted here), not on the file."""
        writer = getattr(self._local, "writer", None)
        if writer is None:
            writer = self._local.writer = KeywordWriter(ExifTool(), self.write_cfg)
        out: list[Written] = []
        for job in jobs:
            try:
                out.append(write_file(writer, job))
            except (MetadataError, OSError) as exc:
                missing = not os.path.lexists(job.path)
                out.append(FileVanished(f"not found on this node: {exc}") if missing else exc)
        return self._answer(out)


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


def _collect_logs(level: int) -> _Collector:
    """Our log records (a keyword written to XMP only, a file that cannot be decoded) and every
    warning (Pillow's "Corrupt EXIF data", made one record naming the photo by :mod:`tagwatch.logs`)
    kept for the driver, which logs each once in its own format (text or JSON).  Nothing goes to the
    actor's stderr: Ray would print it on the driver's terminal raw, with colour codes, and more
    than once where the worker's root logger has a handler of its own."""
    found = next((h for h in logging.getLogger("tagwatch").handlers if isinstance(h, _Collector)), None)
    if found is not None:  # a second station in this process (a test): one collector serves both
        return found
    collector = _Collector()
    for name in ("tagwatch", "py.warnings"):
        logger = logging.getLogger(name)
        logger.addHandler(collector)
        logger.propagate = False
    logging.getLogger("tagwatch").setLevel(level)
    logging.getLogger("py.warnings").setLevel(logging.WARNING)
    logs.log_warnings()
    return collector
