"""What tagwatch may touch: no network when offline, no file outside the watched roots and its data
folder, private files, and checkpoints that cannot run code.

The daemon and ``scan`` run as real subprocesses in a sandbox: HOME, TMPDIR, every XDG folder and the
working directory point into empty folders, and a ``sitecustomize`` on PYTHONPATH records and refuses
every internet socket (connect, sendto, name lookup) the process or a library in it attempts.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import TINY_CONFIG, Daemon, exif_keywords, noise_jpeg, wait_for, write_config
from tagwatch.config import ModelConfig
from tagwatch.model import ModelError, load_model

GUARD = '''\
"""Test guard: record and refuse every internet socket this process tries."""
import errno, os, socket

_LOG = os.environ["TAGWATCH_NET_LOG"]
_INET = (socket.AF_INET, socket.AF_INET6)


def _refuse(what):
    with open(_LOG, "a", encoding="utf-8") as handle:
        handle.write(f"{os.getpid()} {what}\\n")
    raise OSError(errno.ENETUNREACH, "network refused by the tagwatch test guard")


def _wrap(name):
    original = getattr(socket.socket, name)

    def guarded(self, *args):
        if self.family in _INET:
            _refuse(f"{name} {args!r}")
        return original(self, *args)
    setattr(socket.socket, name, guarded)


for _name in ("connect", "connect_ex", "sendto"):
    _wrap(_name)
socket.getaddrinfo = lambda host, *args, **kwargs: _refuse(f"getaddrinfo {host!r}")
'''

SANDBOX_VARS = {"HOME": "home", "TMPDIR": "tmp", "XDG_CONFIG_HOME": "xdg-config", "XDG_DATA_HOME": "xdg-data",
                "XDG_CACHE_HOME": "xdg-cache", "XDG_STATE_HOME": "xdg-state", "XDG_RUNTIME_DIR": "runtime"}
# Variables that would send a library's files somewhere else than the sandbox's HOME/XDG folders
# (importing torch in the test process sets TORCHINDUCTOR_CACHE_DIR, to a folder in /tmp)
REDIRECTS = ("HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TORCH_HOME", "XDG_DATA_DIRS",
             "XDG_CONFIG_DIRS", "TRANSFORMERS_CACHE", "TAGWATCH_CONFIG", "TORCHINDUCTOR_CACHE_DIR")


class Sandbox:
    def __init__(self, base: Path) -> None:
        self.base = base / "sandbox"
        self.guard = base / "guard"
        self.net_log = base / "network.log"  # outside the sandbox: it is not the daemon's file
        self.guard.mkdir()
        (self.guard / "sitecustomize.py").write_text(GUARD, encoding="utf-8")
        for name in [*SANDBOX_VARS.values(), "cwd", "photos"]:
            (self.base / name).mkdir(parents=True)
        (self.base / "runtime").chmod(0o700)
        self.photos = self.base / "photos"
        self.env = {k: v for k, v in os.environ.items() if k not in REDIRECTS}
        self.env.update({var: str(self.base / folder) for var, folder in SANDBOX_VARS.items()})
        path = [str(self.guard), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        self.env.update(PYTHONPATH=os.pathsep.join(path), TAGWATCH_NET_LOG=str(self.net_log))

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "tagwatch", *args], capture_output=True, text=True,
                              timeout=300, cwd=self.base / "cwd", env=self.env,
                              preexec_fn=lambda: os.umask(0o022))

    def connections(self) -> list[str]:
        return self.net_log.read_text(encoding="utf-8").splitlines() if self.net_log.exists() else []

    def snapshot(self) -> dict[Path, tuple[int, int, int]]:
        """Every file and folder in the sandbox (links not followed): mode, size, modification time
        of files; a folder's mode only (its time changes with what is made inside, seen by itself)."""
        found = {}
        for folder, dirs, files in os.walk(self.base):
            for name in dirs:
                found[Path(folder) / name] = (os.lstat(Path(folder) / name).st_mode, 0, 0)
            for name in files:
                st = os.lstat(Path(folder) / name)
                found[Path(folder) / name] = (st.st_mode, st.st_size, st.st_mtime_ns)
        return found


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Sandbox:
    return Sandbox(tmp_path_factory.mktemp("security"))


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_the_network_guard_sees_a_connection(sandbox: Sandbox, tmp_path: Path) -> None:
    """The guard itself works, so an empty record below means no connection was tried."""
    env = {**sandbox.env, "TAGWATCH_NET_LOG": str(tmp_path / "net.log")}
    code = ("import socket\ntry: socket.getaddrinfo('example.org', 443)\nexcept OSError: pass\n"
            "socket.socket().connect(('127.0.0.1', 9))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode != 0 and "refused by the tagwatch test guard" in result.stderr
    seen = (tmp_path / "net.log").read_text()
    assert "getaddrinfo 'example.org'" in seen and "connect (('127.0.0.1', 9),)" in seen


def test_offline_daemon_and_scan_stay_in_their_folders_with_private_files(
        sandbox: Sandbox, tiny_checkpoint: Path) -> None:
    result = sandbox.run("init")  # the default config path, under XDG_CONFIG_HOME
    assert result.returncode == 0, result.stderr
    config = sandbox.base / "xdg-config" / "tagwatch" / "config.toml"
    assert mode(config) == 0o600 and mode(config.parent) == 0o700
    # The test's own config in that private file: the tiny model, offline, the default database path
    text = write_config(config.parent, tiny_checkpoint, watch=[sandbox.photos], top_k=3).read_text()
    config.write_text(text.replace('database = "state/tagwatch.db"\n', "").replace(
        "[model]\n", "[model]\noffline = true\n"), encoding="utf-8")
    assert mode(config) == 0o600
    data = sandbox.base / "xdg-data" / "tagwatch"
    tags = config.parent / "tags.txt"
    before = sandbox.snapshot()

    daemon = Daemon(config, sandbox.base.parent / "daemon.log", cwd=sandbox.base / "cwd",
                    preexec_fn=lambda: os.umask(0o022))
    daemon.env = sandbox.env
    try:
        daemon.start()
        photos = [noise_jpeg(sandbox.photos / "trip" / f"p{i}.jpg", seed=60 + i) for i in range(2)]
        for photo in photos:
            wait_for(lambda p=photo: len(exif_keywords(p)["iptc"]) == 3)
        # while it runs: the database, its WAL and SHM, the state file and the lock are private
        names = {p.name for p in data.iterdir()}
        assert {"tagwatch.db", "tagwatch.db-wal", "tagwatch.db-shm", "tagwatch.db.state.json"} <= names
        assert mode(data) == 0o700 and mode(data.parent) == 0o755  # XDG_DATA_HOME itself existed
        files = {p.name: mode(p) for p in data.iterdir() if p.is_file()}
        assert files == dict.fromkeys(names - {"torch-cache", "exiftool-warm-up"}, 0o600)
        assert all(mode(p) == 0o700 for p in data.iterdir() if p.is_dir())
        mark = len(daemon.log())
        os.rename(photos[0], sandbox.photos / "trip" / "renamed.jpg")
        daemon.wait_log("moved", since=mark)
        tags.write_text(tags.read_text(encoding="utf-8") + "harbour\n", encoding="utf-8")
        daemon.wait_log("(1 new prompt vector)", since=mark)
        assert daemon.stop() == 0
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.kill()

    late = noise_jpeg(sandbox.photos / "late.jpg", seed=69)
    result = sandbox.run("scan", "--log-format", "json", "--config", str(config), str(sandbox.photos))
    assert result.returncode == 0, result.stderr
    assert len(exif_keywords(late)["iptc"]) == 3
    lines = [json.loads(line) for line in result.stderr.splitlines()]  # all of it JSON lines
    assert [r["path"] for r in lines if r["event"] == "tagged"] == [str(late)]
    assert lines[-1]["event"] == "summary" and lines[-1]["message"].startswith("scan: 3 photos: ")

    assert sandbox.connections() == []
    after = sandbox.snapshot()
    touched = sorted(p for p in after if before.get(p) != after[p] and p != tags)
    stray = [p for p in touched if not (p.is_relative_to(sandbox.photos) or p.is_relative_to(data))]
    assert stray == [], f"written outside the watched root and the data folder: {stray}"
    assert data in touched and any(p.is_relative_to(sandbox.photos / "trip") for p in touched)
    assert all(mode(p) == (0o700 if p.is_dir() else 0o600) for p in data.iterdir())


def test_offline_with_a_hub_model_is_one_clear_error_and_no_connection(sandbox: Sandbox,
                                                                       tmp_path: Path) -> None:
    config = tmp_path / "hub.toml"
    config.write_text(f'watch = []\ndatabase = "{tmp_path / "db" / "t.db"}"\n[model]\nname = "ViT-B-32"\n'
                      f'pretrained = "laion2b_s34b_b79k"\ncache_dir = "{tmp_path / "empty-cache"}"\n'
                      "offline = true\n", encoding="utf-8")
    noise_jpeg(tmp_path / "lib" / "a.jpg", seed=70)
    result = sandbox.run("scan", "--config", str(config), str(tmp_path / "lib"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"tagwatch: error: model: weights for ViT-B-32 / laion2b_s34b_b79k are not in the cache "
        f"'{tmp_path / 'empty-cache'}' and model.offline = true forbids downloading them; run once with "
        "offline = false, or set model.pretrained to a local checkpoint file"]
    assert sandbox.connections() == []


class _RunsCode:
    """What a malicious checkpoint carries: unpickling it runs a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def pickled_checkpoint(tmp_path: Path, tiny_checkpoint: Path) -> Iterator[tuple[Path, Path]]:
    import torch

    marker = tmp_path / "pwned"
    weights = torch.load(tiny_checkpoint, weights_only=True)
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": weights, "extra": _RunsCode(marker)}, evil)
    yield evil, marker


def test_a_checkpoint_that_would_run_code_is_refused(pickled_checkpoint: tuple[Path, Path]) -> None:
    import torch

    evil, marker = pickled_checkpoint
    with pytest.raises(ModelError, match=r"refused to load .*evil\.pt: it holds pickled Python objects "
                                         r"\(posix\.system\), which could run code"):
        load_model(ModelConfig(name=str(TINY_CONFIG), pretrained=str(evil)))
    assert not marker.exists()
    torch.load(evil, weights_only=False)  # an unguarded load...
    assert marker.exists()  # ...runs the command: the test's checkpoint really is dangerous
