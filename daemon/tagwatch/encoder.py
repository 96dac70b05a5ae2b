"""The CLIP model in a child process, so the daemon itself never imports torch.

Importing torch costs ~500 MB of resident memory that the process never gives back, even after the
weights are freed; a daemon that idles for days would hold it for ever.  The model therefore runs in
a child (``python -c ... tagwatch.encoder.main()``) that the daemon starts on the first batch and
stops when the model unloads: the parent keeps only numpy, SQLite, the watcher and exiftool.
:class:`LazyModel` is the daemon's handle on it: started on first use, ended when idle.  This module
imports :mod:`tagwatch.model` (the child runs it); never the other way round.

The parent talks to the child over its stdin and stdout: one frame per request or reply, a JSON
header and a raw payload (the batch as float32, already decoded and normalised by the parent's
decode pool; the vectors back as float32).  Measured for a batch of 32 at 224 px on 2 busy cores,
round trip to a child and back: float32 over the pipe (19 MB) ~10 ms, uint8 over the pipe (4.8 MB)
and normalised in the child ~7 ms, float32 through shared memory ~4 ms.  All are under 0.3 % of the
~3.7 s the batch takes to encode, so the simplest wins: the pipe needs no segments to clean up after
a crash (Python 3.11's resource tracker even unlinks a segment when a child that attached exits),
and normalising stays in the parallel decode pool.

The child dies with the parent (``PR_SET_PDEATHSIG``, and end of input on its stdin), ignores
SIGINT and SIGTERM (the parent finishes the batch in flight, then closes the pipe), and sends its
log records to the parent as JSON lines on stderr, so they go wherever the daemon's log goes.  A
child that dies while encoding (out of memory, a crash) is started again and the request retried
once; errors come back as :class:`~tagwatch.model.ModelError` with the same one-line messages as a
model loaded in the parent.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import json
import logging
import os
import re
import signal
import struct
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

import numpy as np

from . import prestart, towercache
from .atomic import write_atomic
from .config import ModelConfig, is_checkpoint_path
from .imaging import Preprocess
from .model import (
    RANDOM_WEIGHTS,
    ModelError,
    _is_config_file,
    _read_config_file,
    announce_onnx,
    model_identity,
    onnx_start,
    return_freed_memory,
)
from .retry import TransientError, killed_by
from .store import private_folder

log = logging.getLogger(__name__)

_FRAME = struct.Struct("<IQ")  # header length, payload length
_LOG_MARK = "\x1etagwatch-log "  # a child's log record on its stderr (other lines are stray output)
_TORCH_NOTE = re.compile(r"\[W\d{4} [\d:.]+ \S+:\d+\] ")
MODEL_SPECS_NAME = "model-inputs.json"  # beside the database: each model's input spec (LazyModel)


class _ChildDied(Exception):
    """The child ended while we waited for its answer; the message says how."""

    def __init__(self, how: str, returncode: int | None = None) -> None:
        super().__init__(how)
        self.returncode = returncode


class ModelKilled(ModelError, TransientError):
    """The child was killed by a signal while it loaded the model (the OOM killer, most often): a
    passing fault of the host, not of the model or of any photo, so the photos wait and the load is
    tried again, backing off, as on a full disk.  A child that fails the load with an error (a bad
    checkpoint) or exits with a status is a :class:`ModelError` still: it would fail again."""


# -- framing (both sides) ------------------------------------------------------------------------

def _write_frame(stream: IO[bytes], header: dict[str, Any], payload: np.ndarray | None = None) -> None:
    data = json.dumps(header).encode("utf-8")
    body = memoryview(np.ascontiguousarray(payload)).cast("B") if payload is not None else b""
    stream.write(_FRAME.pack(len(data), len(body)) + data)
    if len(body):
        stream.write(body)
    stream.flush()


def _read_exactly(stream: IO[bytes], size: int) -> np.ndarray | None:
    """``size`` bytes read straight into a fresh array (no extra copy); None at end of input."""
    buffer = np.empty(size, np.uint8)
    view = memoryview(buffer)
    got = 0
    while got < size:
        count = stream.readinto(view[got:])  # type: ignore[attr-defined]
        if not count:
            return None
        got += count
    return buffer


def _read_frame(stream: IO[bytes]) -> tuple[dict[str, Any], np.ndarray] | None:
    head = _read_exactly(stream, _FRAME.size)
    if head is None:
        return None
    header_size, payload_size = _FRAME.unpack(head.tobytes())
    header = _read_exactly(stream, header_size)
    payload = _read_exactly(stream, payload_size)
    if header is None or payload is None:
        return None
    return json.loads(header.tobytes()), payload


# -- the parent's side ---------------------------------------------------------------------------

def _relay(stream: IO[bytes], tail: collections.deque[str]) -> None:
    """Log the child's records in this process; keep its last stray lines for a crash message."""
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", "replace").rstrip("\n")
        if line.startswith(_LOG_MARK):
            with contextlib.suppress(ValueError, KeyError, TypeError):
                record = json.loads(line[len(_LOG_MARK):])
                logging.getLogger(record["name"]).log(int(record["level"]), "%s", record["message"])
                continue
        if line.strip():
            tail.append(line.strip())
            # torch's own C++ notes (deprecations, "[W1202 21:21:38.41 Quantizer.cpp:111] Warning: ...")
            # tell a user nothing they can act on; they stay in the tail for a crash message
            log.log(logging.DEBUG if _TORCH_NOTE.match(line) else logging.WARNING, "encoder: %s", line)


def _how_it_ended(returncode: int | None, tail: collections.deque[str]) -> str:
    if returncode is None:
        return "it stopped answering"
    if returncode < 0:
        return killed_by(-returncode)
    last = f": {tail[-1]}" if tail else ""
    return f"exit status {returncode}{last}"


class EncoderProcess:
    """A CLIP model in a child process, with :class:`~tagwatch.model.ClipModel`'s interface.

    Not started until asked: :meth:`validate` starts the child and checks the model name and
    pretrained tag (it then stays, with torch imported, for the first batch); :meth:`load` loads
    the weights; the encode calls load them if needed.  :meth:`close` ends the child and every byte
    it held.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        self.cfg = cfg
        self.identity = model_identity(cfg)
        self.preprocess = Preprocess(0, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # set by load()
        self.dim = 0
        self.precision = ""
        self.captions = False  # the loaded model can write captions (a CoCa); known after load()
        self.restarts = 0  # children started again after one died (for logs and tests)
        self.texts_encoded = 0  # prompts sent to the child (a reload must send none)
        self._proc: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize | None = None
        self._tail: collections.deque[str] = collections.deque(maxlen=5)
        self._relay: threading.Thread | None = None
        self._validated = False
        self._loaded = False
        self._lock = threading.RLock()

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    @property
    def loaded(self) -> bool:
        return self._loaded and self.running

    # -- life cycle --------------------------------------------------------------------------------

    def _start(self) -> subprocess.Popen[bytes]:
        if self._proc is not None:
            returncode = self._proc.poll()
            if returncode is None:
                return self._proc
            log.warning("model: the encoder process had ended (%s); starting it again",
                        _how_it_ended(returncode, self._tail))
            self.restarts += 1
        self._discard()
        proc = prestart.child()
        self._tail = collections.deque(maxlen=5)
        assert proc.stderr is not None
        self._relay = threading.Thread(target=_relay, args=(proc.stderr, self._tail), daemon=True,
                                       name="tagwatch-encoder-log")
        self._relay.start()
        self._proc, self._validated, self._loaded = proc, False, False
        self._finalizer = weakref.finalize(self, prestart.stop, proc)  # collected or at exit: no orphan
        log.debug("encoder process %d started", proc.pid)
        return proc

    def _discard(self) -> None:
        """Forget a child that has ended (or end it)."""
        if self._finalizer is not None:
            self._finalizer()
        self._proc, self._finalizer, self._validated, self._loaded = None, None, False, False

    def close(self) -> None:
        """End the child; the next call starts a new one."""
        with self._lock:
            self._discard()

    def kill(self) -> None:
        """End the child at once, without taking the lock: a load in flight holds it for seconds,
        and the thread waiting in the load then meets the child gone (a :class:`ModelError`)."""
        proc = self._proc
        if proc is not None:
            with contextlib.suppress(OSError):
                proc.kill()

    def _call(self, header: dict[str, Any], payload: np.ndarray | None = None) -> tuple[dict[str, Any],
                                                                                       np.ndarray]:
        """One request and its answer; a child that ends meanwhile raises :class:`_ChildDied`."""
        proc = self._start()
        assert proc.stdin is not None and proc.stdout is not None
        try:
            _write_frame(proc.stdin, header, payload)
            reply = _read_frame(proc.stdout)
        except (BrokenPipeError, ConnectionResetError):
            reply = None
        if reply is None:
            try:
                returncode: int | None = proc.wait(timeout=prestart.STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                returncode = None
            if self._relay is not None:
                self._relay.join(timeout=2.0)  # its last words (a traceback's last line) into the tail
            how = _how_it_ended(returncode, self._tail)
            self._discard()
            raise _ChildDied(how, returncode)
        answer, data = reply
        if not answer.get("ok"):
            raise ModelError(str(answer.get("error") or "model: the encoder process failed"))
        return answer, data

    def _setup(self, op: str) -> None:
        """validate or load, not retried here: a child that exits with an error there will again.
        One killed by a signal (the OOM killer under memory pressure) is :class:`ModelKilled`, which
        the photos' retry policy waits out, backing off (it was an internal error: xQ #5)."""
        try:
            # The environment as it is now: a child started early (tagwatch.prestart) did not
            # inherit what the command set since (torch's cache folder in the data folder)
            answer, _ = self._call({"op": op, "config": _config_dict(self.cfg), "environ": dict(os.environ)})
        except _ChildDied as died:
            if died.returncode is not None and died.returncode < 0:
                raise ModelKilled(f"model: the encoder process was killed while loading the model ({died}); "
                                  "it is started again") from None
            raise ModelError(f"model: the encoder process ended while loading the model ({died})") from None
        if op == "load":
            spec = answer["preprocess"]
            self.preprocess = Preprocess(int(spec["size"]), tuple(spec["mean"]), tuple(spec["std"]),
                                         spec["interpolation"], spec["resize_mode"])
            self.dim, self.precision = int(answer["dim"]), str(answer["precision"])
            self.captions = bool(answer.get("captions"))
            self._loaded = True
        self._validated = True

    def validate(self) -> None:
        """Check the model name and pretrained tag or file now, without loading any weights."""
        with self._lock:
            if not self._validated or not self.running:
                self._setup("validate")

    def load(self) -> None:
        """Start the child and load the weights, unless that is done."""
        with self._lock:
            if not self.loaded:
                self._setup("load")

    def _encode(self, header: dict[str, Any], payload: np.ndarray | None) -> np.ndarray:
        return self._request(header, payload)[1]

    def _request(self, header: dict[str, Any], payload: np.ndarray | None
                 ) -> tuple[dict[str, Any], np.ndarray]:
        """Send an encoding request; a child that dies on it is started again and asked once more."""
        with self._lock:
            for attempt in (1, 2):
                self.load()
                try:
                    answer, data = self._call(header, payload)
                except _ChildDied as died:
                    if attempt == 2:
                        raise ModelError(f"model: the encoder process died twice on the same batch "
                                         f"({died})") from None
                    log.warning("model: the encoder process died while encoding (%s); starting it again "
                                "and retrying the batch once", died)
                    self.restarts += 1
                    continue
                return answer, data.view(np.float32).reshape(answer["shape"])
        raise AssertionError("unreachable")

    def encode_images(self, batch: np.ndarray) -> np.ndarray:
        """(N, 3, S, S) float32, or (N, S, S, 3) uint8 pixels (a quarter of the bytes through the pipe;
        the child normalises them), → (N, D) float32 rows of unit length."""
        batch = np.ascontiguousarray(batch, np.uint8 if batch.dtype == np.uint8 else np.float32)
        return self._encode({"op": "images", "shape": list(batch.shape), "dtype": batch.dtype.name}, batch)

    def encode_texts(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Prompt strings → (N, D) float32 rows of unit length."""
        vectors = self._encode({"op": "texts", "texts": list(texts), "batch_size": batch_size}, None)
        self.texts_encoded += len(texts)
        return vectors

    def encode_and_caption(self, batch: np.ndarray, max_tokens: int = 30) -> tuple[np.ndarray, list[str]]:
        """(N, 3, S, S) float32, or (N, S, S, 3) uint8 pixels (normalised in the child), → ((N, D) unit
        vectors, N captions): a CoCa's image tower runs once for both, so a CoCa that is also the
        tagging model encodes each photo once."""
        batch = np.ascontiguousarray(batch, np.uint8 if batch.dtype == np.uint8 else np.float32)
        header = {"op": "caption", "shape": list(batch.shape), "max_tokens": max_tokens,
                  "dtype": batch.dtype.name}
        answer, vectors = self._request(header, batch)
        return vectors, [str(c) for c in answer["captions"]]


def _config_dict(cfg: ModelConfig) -> dict[str, Any]:
    """The model's settings as the pipe carries them, without the file they came from (``source``,
    for error lines): the child loaded ahead compares them, and a config named another way (relative,
    absolute) must still find the model it loaded."""
    raw = {**asdict(cfg), "cache_dir": str(cfg.cache_dir),
           "precision_cache": None if cfg.precision_cache is None else str(cfg.precision_cache)}
    del raw["source"]
    return raw


# -- the child's side ----------------------------------------------------------------------------

class _LogToParent(logging.Handler):
    """Each record as one JSON line on stderr; the parent logs it under the same name and level."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = json.dumps({"name": record.name, "level": record.levelno, "message": record.getMessage()})
            sys.stderr.write(_LOG_MARK + line + "\n")
            sys.stderr.flush()
        except Exception:  # logging must never take the encoder down
            self.handleError(record)


class _Server:
    """The child's state: the loaded model, once asked to load it."""

    def __init__(self) -> None:
        self.model: Any = None
        self._ready: tuple[dict[str, Any], ModelConfig, Any, Path] | None = None  # as sent, cfg, model, file

    def load_ahead(self, config: str) -> None:
        """Started early (:mod:`tagwatch.prestart`), load the model the command's config file names
        while the command still imports its modules, if its ONNX Runtime tower is kept ready: the
        parent's load request then finds it loaded, if it asks for that same model.  A model whose
        identity hashes a local checkpoint is left to the request (the parent hashes it too).  On
        the thread that serves the requests, which wait in the pipe meanwhile.  Indexing 200 photos,
        a scan's whole tree peaked at ~415 or ~470 MB from run to run before (the child's 273 or
        ~327), at 465 in each run with the load on a thread of its own, and at 413-416 in each of six
        runs with it here (the daemon's still either)."""
        from .config import load_config

        try:
            cfg = load_config(Path(config) if config else None).model
            if not is_checkpoint_path(cfg.pretrained):
                started = onnx_start(cfg, model_identity(cfg))
                if started is not None:
                    self._ready = (json.loads(json.dumps(_config_dict(cfg))), cfg, *started)
        except Exception as exc:  # a config with a mistake: the command says so; the request loads
            log.debug("model: not loaded ahead: %s: %s", type(exc).__name__, exc)

    def _loaded_ahead(self, raw: dict[str, Any]) -> Any:
        """The model loaded ahead, if it is the one the parent asks for (``raw``, its config)."""
        ready, self._ready = self._ready, None
        if ready is None or ready[0] != raw:  # another file, or the file edited in between
            return None
        _, cfg, model, path = ready
        announce_onnx(cfg, model.identity, path)
        log.debug("model: loaded ahead, while the command was starting")
        return model

    def handle(self, header: dict[str, Any], payload: np.ndarray) -> tuple[dict[str, Any], np.ndarray | None]:
        os.environ.update(header.get("environ") or {})  # the parent's, before torch or open_clip is imported
        from . import model as clip  # torch and open_clip are imported here, in the child only

        op = header.get("op")
        if op in ("validate", "load"):
            raw = header["config"]
            cache = raw.get("precision_cache")
            cfg = ModelConfig(**{**raw, "cache_dir": Path(raw["cache_dir"]),
                                 "precision_cache": None if cache is None else Path(cache)})
            if op == "validate":
                clip.validate_config(cfg)
                return {"ok": True}, None
            self.model = self._loaded_ahead(raw) or clip.load_model(cfg)
            return {"ok": True, "preprocess": asdict(self.model.preprocess), "dim": self.model.dim,
                    "precision": self.model.precision, "captions": self.model.captions}, None
        if self.model is None:
            raise ModelError("model: the encoder process was asked to encode before loading the model")
        if op == "images":
            dtype = np.uint8 if header.get("dtype") == "uint8" else np.float32
            vectors = self.model.encode_images(payload.view(dtype).reshape(header["shape"]))
        elif op == "texts":
            vectors = self.model.encode_texts(header["texts"], int(header.get("batch_size", 64)))
        elif op == "caption":
            dtype = np.uint8 if header.get("dtype") == "uint8" else np.float32
            vectors, captions = self.model.encode_and_caption(
                payload.view(dtype).reshape(header["shape"]), int(header.get("max_tokens", 30)))
            vectors = np.ascontiguousarray(vectors, np.float32)
            return {"ok": True, "shape": list(vectors.shape), "captions": captions}, vectors
        else:
            raise ModelError(f"model: the encoder process got an unknown request {op!r}")
        vectors = np.ascontiguousarray(vectors, np.float32)
        return {"ok": True, "shape": list(vectors.shape)}, vectors


def _one_line(header: dict[str, Any], exc: Exception) -> str:
    """An unexpected exception as the one line a user reads: what failed, the type, its first line."""
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    reason = f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__
    if header.get("op") in ("validate", "load"):  # e.g. a checkpoint that is not one
        cfg = header.get("config", {})
        return f"model: cannot load {cfg.get('name')} / {cfg.get('pretrained')}: {reason}"
    return f"model: encoding failed: {reason}"


def main() -> None:
    """The child: answer requests on stdin until it closes."""
    # Set before torch (and its OpenMP runtime) is imported.  OpenMP's default has each thread spin
    # for a while at every barrier; beside the parent's decode threads and exiftool, the spinning
    # takes the cores they need.  Measured on a 2-core EPYC (ViT-B-32-256 int8, batch 32, one decode
    # thread running alongside): 89 ms of the child's CPU per photo spinning, 59 ms passive.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever a library prints goes to the log, never into the replies
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop: it closes stdin
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    handler = _LogToParent()
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("tagwatch").setLevel(logging.DEBUG)  # the parent's level filters
    logging.captureWarnings(True)
    requests = os.fdopen(0, "rb")
    server = _Server()
    if sys.argv[1:2] == [prestart.AHEAD_FLAG]:
        server.load_ahead(sys.argv[2])
    while True:
        frame = _read_frame(requests)
        if frame is None:  # the parent is done: nothing to save, so skip tearing torch down (~1 s)
            sys.stderr.flush()
            os._exit(0)
        header, payload = frame
        try:
            answer, vectors = server.handle(header, payload)
        except ModelError as exc:
            answer, vectors = {"ok": False, "error": str(exc)}, None
        except Exception as exc:  # out of memory, a library error: one line to the parent, keep serving
            answer, vectors = {"ok": False, "error": _one_line(header, exc)}, None
        del payload
        _write_frame(replies, answer, vectors)


# -- the daemon's lazy handle ------------------------------------------------------------------

class LazyModel:
    """The model in its child process (:mod:`tagwatch.encoder`), started on first use and ended when
    idle, so the daemon's own process never imports torch.

    Each model's input spec (size, mean, std, resize) is remembered from its first load in
    :data:`MODEL_SPECS_NAME`, in the data folder beside ``precision.json`` (a config without a data
    folder remembers nothing), so that later starts decode photos while the child still imports torch
    and loads the weights (seconds) instead of after.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        self.cfg = cfg
        self.identity = model_identity(cfg)
        self._encoder: EncoderProcess | None = None
        self._lock = threading.Lock()
        self._last_used = time.monotonic()
        self._users = 0
        self._remember = cfg.precision_cache.with_name(MODEL_SPECS_NAME) if cfg.precision_cache else None
        self._spec: Preprocess | None = None
        self._spec_read = False
        self._loading: threading.Thread | None = None
        self._loading_lock = threading.Lock()
        self._ahead_failed: ModelError | None = None  # the load started ahead failed: the next get's answer

    @property
    def loaded(self) -> bool:
        return self._encoder is not None and self._encoder.loaded

    @property
    def preprocess(self) -> Preprocess | None:
        """The model's input spec without waiting for it to load: known once it loaded in this process
        (or remembered from an earlier one), else None."""
        if self._spec is None and not self._spec_read:
            self._spec_read = True
            self._spec = remembered_spec(self._remember, self.identity)
        return self._spec

    def prefetch(self) -> None:
        """Start loading the model in the background unless it is loaded or loading: called as soon
        as a photo turns out to need it, so the child's torch import and weight loading (seconds)
        overlap the reading and decoding of the first photos instead of following them.  A failed
        load is reported by the call that needs the model next (:meth:`_await_ahead`)."""
        if self.loaded:
            return
        with self._loading_lock:
            if self._loading is not None and self._loading.is_alive():
                return
            self._loading = threading.Thread(target=self._load_ahead, name="tagwatch-model-load", daemon=True)
            self._loading.start()

    def _load_ahead(self) -> None:
        try:
            self._get()
        except ModelError as exc:  # the caller that needs the model gets this error, not a second try
            log.debug("model: loading ahead failed: %s", exc)
            self._ahead_failed = exc
        except Exception as exc:  # the batch that needs the model meets the error again and reports it
            log.debug("model: loading ahead failed: %s", exc)

    def _await_ahead(self) -> None:
        """A load started ahead (:meth:`prefetch`) is this call's load: wait for it, and raise its
        error if it failed.  Trying again at once repeats what just failed: without a network, the
        whole download cycle (minutes of the hub's retries) ran twice.  Only once: a later call (the
        daemon's next batch) tries again."""
        with self._loading_lock:
            loading = self._loading
        if loading is not None and loading is not threading.current_thread():
            loading.join()
        failed, self._ahead_failed = self._ahead_failed, None
        if failed is not None:
            raise failed

    @property
    def encoder(self) -> EncoderProcess | None:
        """The child process, while there is one (for status figures and tests)."""
        return self._encoder

    def _child(self) -> EncoderProcess:
        if self._encoder is None:
            self._encoder = EncoderProcess(self.cfg)
        return self._encoder

    def validate(self) -> None:
        """Check the model name and pretrained tag or file now, without loading any weights.

        A model whose image tower an earlier load kept ready on this machine
        (:mod:`tagwatch.towercache`) is known good: it starts loading in the background at once (its
        ONNX Runtime form ~0.5 CPU-seconds, torch and the tower about 3), so the first photo finds it
        ready; a local checkpoint too (until 2026-12-03 such a model was only checked, so the child
        started before the command's imports sat unused until the first photo or its 60 s).  Else a
        model made of local files only (an architecture ``.json`` with a checkpoint or random
        weights) is checked here without starting the child: importing open_clip (torch,
        torchvision) takes 5-10 s on a busy machine, which every restart after a crash or a reboot
        would pay before the daemon watches anything.  Anything else is checked in the child, which
        stays, torch imported, for the first batch: the daemon's first photo does not pay the imports
        twice.  Unused, either ends with the idle unload.
        """
        pretrained = self.cfg.pretrained
        if towercache.kept(self.cfg, self.identity):  # a checkpoint's digest is in the identity
            self.prefetch()
            return
        if _is_config_file(self.cfg.name) and (pretrained.lower() == RANDOM_WEIGHTS
                                               or is_checkpoint_path(pretrained)):
            _read_config_file(self.cfg.name)  # model_identity found both files
            return
        with self._lock:
            self._last_used = time.monotonic()
            encoder = self._child()
        encoder.validate()

    def get(self) -> EncoderProcess:
        self._await_ahead()
        return self._get()

    def _get(self) -> EncoderProcess:
        with self._lock:
            encoder = self._child()
            encoder.load()
            self._last_used = time.monotonic()
        if encoder.preprocess != self._spec:
            if self._spec is not None:
                log.info("model: its input spec changed since it was remembered (%s); photos decoded "
                         "for the old one are decoded again", encoder.preprocess)
            self._spec, self._spec_read = encoder.preprocess, True
            remember_spec(self._remember, self.identity, encoder.preprocess)
        return encoder

    @contextlib.contextmanager
    def using(self) -> Iterator[EncoderProcess]:
        """The model, held for a whole batch: the idle job must not count a long batch as idle
        time and unload (then reload) the weights under it."""
        with self._lock:
            self._users += 1
        try:
            yield self.get()
        finally:
            with self._lock:
                self._users -= 1
                self._last_used = time.monotonic()

    def unload_if_idle(self, idle_seconds: float) -> bool:
        """End the child once nothing asked for the model for ``idle_seconds``: a daemon idling for
        days should not hold torch and the weights (~1 GB).  The next batch starts it again (seconds;
        text vectors come from the store, so only images are encoded)."""
        with self._lock:
            idle = time.monotonic() - self._last_used
            if self._encoder is None or self._users or idle < idle_seconds:
                return False
            encoder, self._encoder = self._encoder, None
        was_loaded = encoder.loaded
        encoder.close()
        gc.collect()
        return_freed_memory()  # the decode buffers of the last batches
        if was_loaded:
            log.info("model unloaded after %.0f s without work", idle_seconds)
        else:
            log.debug("encoder process ended after %.0f s without work (the model was never loaded)",
                      idle_seconds)
        return True

    def close(self) -> None:
        """End the child now (the pipeline is done).  A load still in flight, the model started
        ahead of the first photo (:meth:`prefetch`), is cut short rather than waited for: a tag list
        with a mistake, Ctrl-C or nothing to encode must not wait seconds for weights nobody uses."""
        while not self._lock.acquire(timeout=0.1):  # a load holds it; its child may not exist yet
            encoder = self._encoder
            if encoder is not None:
                encoder.kill()
        try:
            encoder, self._encoder = self._encoder, None
        finally:
            self._lock.release()
        if encoder is not None:
            encoder.close()


def _spec_key(identity: str) -> str:
    """A remembered spec holds for one model and one open_clip release (which defines the transform)."""
    import importlib.metadata  # here: the child never needs it, and importing it costs 0.02-0.05 s

    try:
        release = importlib.metadata.version("open_clip_torch")
    except importlib.metadata.PackageNotFoundError:
        release = "?"
    return f"{identity} | open_clip {release}"


def remembered_spec(path: Path | None, identity: str) -> Preprocess | None:
    """The input spec remembered for the model ``identity``, if any (an unreadable file is none)."""
    if path is None:
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8")).get(_spec_key(identity))
        return None if raw is None else Preprocess(int(raw["size"]), tuple(raw["mean"]), tuple(raw["std"]),
                                                   str(raw["interpolation"]), str(raw["resize_mode"]))
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def remember_spec(path: Path | None, identity: str, spec: Preprocess) -> None:
    """Remember a loaded model's input spec for the next start (a failure costs only that)."""
    if path is None:
        return
    try:
        try:
            known = json.loads(path.read_text(encoding="utf-8"))
            known = known if isinstance(known, dict) else {}
        except (OSError, ValueError):
            known = {}
        known[_spec_key(identity)] = asdict(spec)
        private_folder(path.parent)
        write_atomic(path, json.dumps(known, indent=1) + "\n", durable=False)
    except OSError as exc:
        log.debug("cannot remember the model's input spec in %s: %s", path, exc)
