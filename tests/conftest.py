"""Shared fixtures: a tiny CLIP checkpoint written by the tests, real JPEGs, exiftool, a daemon.

Nothing here downloads anything: the model is open_clip's real CLIP class with a small architecture
(tests/data/tiny-clip.json) and seeded random weights, saved as a checkpoint file and loaded through
the same ``[model] name / pretrained`` path a user's local checkpoint takes.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tagwatch.config import ModelConfig, PlacesConfig, TaggingConfig, WriteConfig
from tagwatch.encoder import LazyModel
from tagwatch.metadata import ExifTool, KeywordWriter
from tagwatch.pipeline import Pipeline
from tagwatch.queue import Batch, BatchQueue
from tagwatch.store import Store
from tagwatch.vocabulary import parse_tag_list

REPO = Path(__file__).resolve().parents[1]
TINY_CONFIG = REPO / "tests" / "data" / "tiny-clip.json"
# The trained test model (scripts/train_test_model.py): it knows six colours and six shapes.
SHAPES_CONFIG = REPO / "tests" / "data" / "shapes-clip.json"
SHAPES_CHECKPOINT = REPO / "tests" / "data" / "shapes-clip.safetensors"
CORPUS = Path(os.environ.get("TAGWATCH_CORPUS", REPO.parent / "shared" / "corpus" / "metadata"))

# Non-ASCII tags prove the UTF-8 path end to end.
TAGS = ["beach", "forest", "mountain", "city street", "Ünïcödé tag", "日本語"]

# With the suite spread over several workers (scripts/test), every torch process (a daemon's model
# child, the test model's retraining) shares the cores with another worker's.  OpenMP's default is to
# spin between parallel regions, burning a core the other process needs: two 2-thread trainings side
# by side took 47-88 s spinning and 29-31 s passive, against ~20 s for one alone.  Set before any
# torch is loaded here, and inherited by every subprocess; a value from the caller wins.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.hookimpl(trylast=True)  # after pytest-xdist's own, which names the groups (see _xdist_groups)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the few long tests (``@pytest.mark.slow``, 30 s to 3 min each) first: with the suite
    spread over workers (scripts/test uses pytest-xdist), a long test started last would run alone
    while the other workers sit idle."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: order kept otherwise
    _xdist_groups(config, items)


def _xdist_groups(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Make ``--dist loadgroup`` honour ``@pytest.mark.xdist_group`` under pytest 9.2.

    A worker tells the scheduler a test's group by a suffix on its node id (``test_web.py::test_x@web``).
    pytest-xdist 3.8 writes that suffix into ``item._nodeid``, which pytest 9.2 no longer reads (node ids
    are structured, in ``item._id``), so every group is silently ignored and its tests are spread over
    the workers (pytest-dev/pytest-xdist issue 1386; the fix, pull request 1388, is unreleased).  Here
    the same suffix goes where pytest 9.2 keeps the id; with an older pytest, or once xdist writes it
    itself, this does nothing."""
    if not getattr(config.option, "loadgroup", False) or not items or not hasattr(items[0], "_id"):
        return
    from _pytest.nodeid import coerce_node_id  # pytest >= 9.2 only (checked above: items have _id)

    for item in items:
        names = sorted({str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
                        for mark in item.iter_markers("xdist_group")})
        suffix = "@" + "_".join(names)
        if names and not item.nodeid.endswith(suffix):
            item._id = coerce_node_id(item.nodeid + suffix)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny CLIP's seeded random weights saved as a plain state dict (weights_only-loadable)."""
    import open_clip
    import torch

    open_clip.add_model_config(TINY_CONFIG)
    torch.manual_seed(1234)
    model = open_clip.create_model("tiny-clip", pretrained=None)
    path = tmp_path_factory.mktemp("model") / "tiny-clip.pt"
    torch.save(model.state_dict(), path)
    return path


def noise_jpeg(path: Path, seed: int, size: tuple[int, int] = (320, 240), quality: int = 90,
               exif: Image.Exif | None = None) -> Path:
    """A real JPEG of smooth random colour blobs: every seed is a visibly different picture."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, "JPEG", quality=quality, exif=exif or Image.Exif())
    return path


@contextlib.contextmanager
def read_only_folder(folder: Path) -> Iterator[None]:
    """Make ``folder`` refuse new files for real, even to root (which ignores mode bits): chmod
    for a normal user, the immutable attribute for root; skips the test where neither works."""
    probe = folder / ".probe"
    folder.chmod(0o555)
    immutable = False
    try:
        probe.touch()
    except PermissionError:
        pass
    else:
        probe.unlink()
        immutable = subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
        if not immutable:
            folder.chmod(0o755)
            pytest.skip("cannot make a folder read-only here (root without chattr)")
    try:
        yield
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)


@pytest.fixture
def make_jpeg() -> Callable[..., Path]:
    return noise_jpeg


class SharedModel(LazyModel):
    """A LazyModel whose encoder child outlives the pipelines that use it: starting a child (it
    imports torch and open_clip) costs 5-7 s, which every in-process test would pay again.  The
    child holds no state but the weights; each test's store still holds its own vectors."""

    def close(self) -> None:  # Pipeline.close(): keep the child for the next test
        pass

    def end(self) -> None:
        super().close()


_SHARED_MODELS: dict[tuple[Path, Path], SharedModel] = {}


def shared_model(checkpoint: Path, model: Path = TINY_CONFIG) -> SharedModel:
    """The session's encoder child for this model config and checkpoint."""
    if (model, checkpoint) not in _SHARED_MODELS:
        config = ModelConfig(name=str(model), pretrained=str(checkpoint))
        _SHARED_MODELS[model, checkpoint] = SharedModel(config)
    return _SHARED_MODELS[model, checkpoint]


@pytest.fixture(scope="session", autouse=True)
def _end_shared_models() -> Iterator[None]:
    yield
    for model in _SHARED_MODELS.values():
        model.end()


class Env:
    """The worker's pipeline in-process: real store, real exiftool, the tiny CLIP (one encoder
    child per checkpoint for the whole session)."""

    def __init__(self, root: Path, checkpoint: Path, tagging: TaggingConfig,
                 write: WriteConfig | None = None, places: PlacesConfig | None = None,
                 model: Path = TINY_CONFIG) -> None:
        self.root = root
        self.store = Store(root / "state" / "tw.db")
        self.exiftool = ExifTool()
        self.model: LazyModel = shared_model(checkpoint, model)
        self.pipeline = Pipeline(self.store, self.model, KeywordWriter(self.exiftool, write), tagging,
                                 places=places)
        self.use(TAGS, tagging)

    def use(self, tags: list[str], tagging: TaggingConfig | None = None) -> int:
        return self.pipeline.use_vocabulary(
            parse_tag_list("\n".join(tags), ("a photo of a {}.",), self.root / "tags.txt"), tagging)

    def encoded(self) -> int:
        return self.store.stats(self.model.identity)["encoded"]

    def run(self, *paths: Path, **kwargs: object) -> dict[str, str]:
        outcomes = self.pipeline.process([str(p) for p in paths], **kwargs)
        return {Path(o.path).name: o.status for o in outcomes}

    def close(self) -> None:
        self.pipeline.close()
        self.exiftool.close()
        self.store.close()


class _KeptExifTool:
    """One ``exiftool -stay_open`` per test process, for reading back what was written: a fresh
    exiftool costs about 0.1 CPU-seconds to start (Perl and its modules) and the suite reads back
    some 1,200 times, most of them polling a photo until the daemon has written it; a kept one
    answers in milliseconds.  Still exiftool, none of tagwatch's code: an independent reader.
    Errors go to a file read after each command (exiftool writes them before its ``{ready}``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[str] | None = None
        self._errors: Any = None

    def run(self, args: Sequence[str]) -> str:
        """``exiftool ARGS``' standard output; CalledProcessError where it reports an error, as
        ``subprocess.run(..., check=True)`` raised (a photo not there yet, while polling)."""
        if any("\n" in a for a in args):  # the argument file is one argument a line
            return subprocess.run(["exiftool", *args], check=True, capture_output=True, text=True).stdout
        with self._lock:
            proc = self._start()
            assert proc.stdin is not None and proc.stdout is not None
            seen = self._errors.tell()
            proc.stdin.write("".join(f"{a}\n" for a in args) + "-execute\n")
            proc.stdin.flush()
            out = []
            for line in proc.stdout:
                if line == "{ready}\n":
                    break
                out.append(line)
            else:
                self._proc = None
                raise subprocess.CalledProcessError(1, ["exiftool", *args], "".join(out), "exiftool ended")
            self._errors.seek(seen)
            errors = self._errors.read()
        if any(line.startswith("Error") for line in errors.splitlines()):
            raise subprocess.CalledProcessError(1, ["exiftool", *args], "".join(out), errors)
        return "".join(out)

    def _start(self) -> subprocess.Popen[str]:
        if self._proc is None or self._proc.poll() is not None:
            if self._errors is None:
                # kept open as long as the exiftool writing into it: closed at exit
                self._errors = tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace")  # noqa: SIM115
                atexit.register(self.close)
            self._proc = subprocess.Popen(["exiftool", "-stay_open", "True", "-@", "-"],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._errors,
                                          text=True, encoding="utf-8", errors="replace")
        return self._proc

    def close(self) -> None:
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                assert self._proc.stdin is not None
                with contextlib.suppress(OSError):
                    self._proc.stdin.write("-stay_open\nFalse\n")
                    self._proc.stdin.close()
                try:
                    self._proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
            self._proc = None


def exiftool_stand_in(folder: Path, body: str) -> Path:
    """An executable named exiftool in ``folder`` (made): it runs the real one as ``real`` and hands it
    its input through ``body``, Python lines reading ``sys.stdin.buffer`` that may go silent or kill
    (``os``, ``signal``, ``subprocess``, ``sys`` and ``time`` imported).  The real exiftool dies with
    the stand-in (PR_SET_PDEATHSIG): one left behind when tagwatch stops a silent stand-in polls its
    closed input for ever (four were still running after a suite)."""
    real = shutil.which("exiftool")
    assert real is not None
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "exiftool"
    path.write_text(f"#!{sys.executable}\n"
                    "import ctypes, os, signal, subprocess, sys, time\n"
                    "die_with_parent = lambda: ctypes.CDLL(None).prctl(1, signal.SIGKILL)\n"
                    f"real = subprocess.Popen([{real!r}, *sys.argv[1:]], stdin=subprocess.PIPE, "
                    "preexec_fn=die_with_parent)\n" + body, encoding="utf-8")
    path.chmod(0o755)
    return path


_reader = _KeptExifTool()


def exiftool_read(*args: str | Path) -> str:
    """``exiftool ARGS``' output (``-j …`` for JSON) from the test process's kept exiftool."""
    return _reader.run([str(a) for a in args])


def exif_keywords(path: Path) -> dict[str, list[str]]:
    """What an independent reader (exiftool, UTF-8) finds in IPTC Keywords and XMP dc:subject."""
    out = exiftool_read("-j", "-charset", "iptc=UTF8", "-IPTC:Keywords", "-XMP-dc:Subject", path)
    record = json.loads(out, parse_float=str, parse_int=str)[0]

    def as_list(value: object) -> list[str]:
        if value is None:
            return []
        return [str(v) for v in value] if isinstance(value, list) else [str(value)]

    return {"iptc": as_list(record.get("Keywords")), "xmp": as_list(record.get("Subject"))}


def write_config(folder: Path, checkpoint: Path, *, watch: list[Path] | None = None,
                 tags: list[str] | None = None, threshold: float = -1.0, top_k: int = 3,
                 extra: str = "", model: Path = TINY_CONFIG, quiet_ms: int | None = None,
                 database: Path | None = None) -> Path:
    """A config using the tiny model (or ``model``, the config ``checkpoint`` belongs to); threshold
    -1 with top_k makes every photo get top_k tags.  ``quiet_ms``: ``[batch] quiet_ms``, how long a
    photo cut short stays unchanged before it fails (5 s by default), for a test that waits for that.
    ``database``: another config's database (``state/tagwatch.db`` beside this one by default)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tags.txt").write_text("\n".join(tags or TAGS) + "\n", encoding="utf-8")
    lines = [
        f"watch = {json.dumps([str(w) for w in watch or []])}",
        'tags = "tags.txt"',
        f"database = {json.dumps(str(database or 'state/tagwatch.db'))}",
        "[model]",
        f"name = {json.dumps(str(model))}",
        f"pretrained = {json.dumps(str(checkpoint))}",
        "[tagging]",
        f"threshold = {threshold}",
        f"top_k = {top_k}",
        "[batch]",
        "size = 8",
        "max_wait_ms = 100",
        "settle_ms = 300",
        *([f"quiet_ms = {quiet_ms}"] if quiet_ms is not None else []),
        extra,
    ]
    path = folder / "config.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def config_with_vectors(root: Path, checkpoint: Path, seeds: Sequence[int] = (),
                        fill: Callable[[Path], object] | None = None, **kwargs: Any) -> Path:
    """A config (``write_config(root / "conf", checkpoint, **kwargs)``) whose database already holds its
    prompts' vectors and those of the pictures ``noise_jpeg`` makes from ``seeds`` (and ``fill`` writes
    into the folder it is given): one dry run over them in ``root / "pictures"`` cached them, as a
    photo's first scan does.  For a module's tests that start from the same config (or from configs
    naming its database, ``write_config(database=…)``, with tags among its own): a photo of one of
    those pictures (its content key is the picture's, whatever its folder, name or metadata) is then
    scanned from its cached vector, as a second scan scans it, and no test's scan starts a model (a
    child importing torch and open_clip: about 2 CPU-seconds).  The tests' photos stay files of their
    own in folders of their own, unknown to the database until they scan them: only the vectors are
    shared, and the store's counters (the hierarchy prefixes written under, ``Store.prefixes``: a test
    that sets one makes the others find paths under it ours, which only paths of their own ledger's
    keywords can be)."""
    config = write_config(root / "conf", checkpoint, **kwargs)
    for seed in seeds:
        noise_jpeg(root / "pictures" / f"{seed}.jpg", seed=seed)
    if fill is not None:
        fill(root / "pictures")
    result = tagwatch("scan", "--dry-run", str(root / "pictures"), "--config", str(config))
    assert result.returncode == 0, result.stderr
    return config


def database_copy(config: Path, folder: Path) -> Path:
    """A copy of ``config``'s database (``config_with_vectors``': ``state/tagwatch.db`` beside it) as
    ``folder / "tagwatch.db"``, for ``write_config(database=…)`` or, with ``folder`` a config's
    ``state`` folder, where ``write_config`` puts its database: the prepared vectors without a model
    child, in a database of the test's own, for a test that counts over the whole database or whose
    photos must meet no other test's records of the same pictures (a copy is recognised by content).
    SQLite's backup copies a consistent database, pages still in the -wal included."""
    folder.mkdir(parents=True, exist_ok=True)
    copy = folder / "tagwatch.db"
    source = sqlite3.connect(config.parent / "state" / "tagwatch.db")
    target = sqlite3.connect(copy)
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()
    return copy


@pytest.fixture
def config_file(tmp_path: Path, tiny_checkpoint: Path) -> Callable[..., Path]:
    def make(**kwargs: object) -> Path:
        return write_config(tmp_path / "conf", tiny_checkpoint, **kwargs)  # type: ignore[arg-type]
    return make


def tagwatch(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the CLI the way a user does."""
    return subprocess.run([sys.executable, "-m", "tagwatch", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def status(config: Path) -> dict[str, int]:
    result = tagwatch("status", "--json", "--config", str(config))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# How long a wait for the daemon's work may take before the test fails: a bound, never a timing (a
# wait returns as soon as its condition holds).  A cold model load beside the suite's other worker took
# 10-30 s on a 2-core box, and the official CI once failed a 30 s wait; 90 is also the daemon's start.
WAIT_S = 90


class Daemon:
    """``tagwatch run`` as a real subprocess whose log is a file the test can read."""

    def __init__(self, config: Path, log: Path, env: dict[str, str] | None = None, *,
                 cwd: Path = REPO, args: Sequence[str] = (),
                 preexec_fn: Callable[[], None] | None = None) -> None:
        self.config, self.log_path = config, log
        self.env = None if env is None else {**os.environ, **env}
        self.cwd, self.args, self.preexec_fn = cwd, list(args), preexec_fn
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Daemon:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        mark = len(self.log())
        handle = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tagwatch", "run", "--config", str(self.config), *self.args],
            stdout=handle, stderr=subprocess.STDOUT, cwd=self.cwd, env=self.env, preexec_fn=self.preexec_fn)
        handle.close()
        self.wait_log("tagwatch is running", since=mark)
        return self

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def wait_log(self, text: str, since: int = 0, timeout: float = WAIT_S) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.log()
            if text in log[since:]:
                return log
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"daemon exited ({self.proc.returncode}) before {text!r}:\n{log}")
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not logged within {timeout} s:\n{self.log()[-4000:]}")

    @contextlib.contextmanager
    def restoring(self, path: Path, reloaded: str) -> Iterator[Path]:
        """``path`` (its tag list) put back afterwards as the test found it, and the daemon's reload
        (``reloaded`` logged) waited for, where the test changed it: a daemon shared by a module's
        tests must not depend on which of them ran before."""
        original = path.read_text(encoding="utf-8")
        try:
            yield path
        finally:
            if path.read_text(encoding="utf-8") != original:
                mark = len(self.log())
                path.write_text(original, encoding="utf-8")
                self.wait_log(reloaded, since=mark)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self) -> int:
        """SIGTERM and wait; returns the exit status.  A daemon that does not end within a minute
        fails the test with its threads' stacks (SIGUSR1, see cli/run.py) and its log's tail."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            mark = len(self.log())
            self.proc.send_signal(signal.SIGUSR1)
            with contextlib.suppress(AssertionError):
                self.wait_log("(most recent call first)", since=mark, timeout=5)
            time.sleep(0.5)  # the dump's other threads
            tail = self.log()[-12000:]
            raise AssertionError(f"the daemon did not stop within 60 s of SIGTERM:\n{tail}") from None
        finally:
            if self.proc.poll() is None:
                self.proc.kill()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[Callable[[Path], Daemon]]:
    started: list[Daemon] = []

    def make(config: Path) -> Daemon:
        daemon = Daemon(config, tmp_path / "daemon.log")
        started.append(daemon)
        return daemon

    yield make
    for daemon in started:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.kill()


def cmdline(pid: int) -> str:
    """A process's command line, words joined by spaces; "" once it has ended."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def wait_for(check: Callable[[], object], timeout: float = WAIT_S, interval: float = 0.1) -> object:
    """Poll ``check`` until it returns something truthy (raising AssertionError on timeout).

    A check that takes time itself (exiftool reading a photo: 0.1 CPU-seconds; `tagwatch status`:
    0.3) is run again only after twice its own time: polled back to back, it took most of a core
    from the daemon it waited for and from the suite's other worker."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        began = time.monotonic()
        try:
            result = check()
            if result:
                return result
        except (AssertionError, subprocess.CalledProcessError, FileNotFoundError, ValueError) as exc:
            last_error = exc
        left = deadline - time.monotonic()
        if left <= 0:  # checked at the deadline at the latest, never only before it
            break
        time.sleep(min(max(interval, 2 * (time.monotonic() - began)), left))
    raise AssertionError(f"condition not met within {timeout} s (last error: {last_error})")


def corpus_files() -> list[Path]:
    """The shared corpus of real JPEG/MPO files (read-only: copy before writing)."""
    assert CORPUS.is_dir(), f"the shared metadata corpus is missing at {CORPUS} (set TAGWATCH_CORPUS)"
    return sorted(p for p in CORPUS.glob("*") if p.suffix.lower() in (".jpg", ".mpo"))



@pytest.fixture(scope="session")
def shapes_lab(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Three photos the test model knows, scanned once per worker (see ``shapes_lab.py``)."""
    from shapes_lab import Lab

    return Lab(tmp_path_factory.mktemp("lab"))


CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM = Path("/usr/bin/chromium")


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """Debian's chromium through its own chromedriver, given by path: nothing is downloaded.  A test
    using it is skipped where they are not installed (scripts/setup-env installs them as root)."""
    if not CHROMEDRIVER.exists() or not CHROMIUM.exists():
        pytest.skip("chromium and chromium-driver are not installed (scripts/setup-env installs them "
                    "as root)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tempfile.mkdtemp(prefix="tagwatch-chromium-")
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--no-first-run",
                     "--window-size=1280,900", f"--user-data-dir={profile}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def collect(queue: BatchQueue, arrived: Callable[[Batch], bool], timeout: float = 10) -> Batch:
    """What the queue hands out, gathered until ``arrived`` holds of it (then what is left, drained):
    a real observer's events come when the machine gets to them, and a pause in them is no end (a
    busy 2-core box once took longer than a 0.2 s pause to report a deletion)."""
    seen = Batch()

    def gathered() -> bool:
        batch = queue.get(timeout=0.5) or Batch()
        seen.ops += batch.ops
        seen.paths += batch.paths
        return arrived(seen)

    wait_for(gathered, timeout=timeout)
    rest = drain(queue)
    return Batch(seen.ops + rest.ops, seen.paths + rest.paths)


def drain(queue: BatchQueue) -> Batch:
    batch = queue.get(timeout=0.5) or Batch()
    while True:
        more = queue.get(timeout=0.2)
        if not more:
            return batch
        batch.ops += more.ops
        batch.paths += more.paths
