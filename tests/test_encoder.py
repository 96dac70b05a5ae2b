"""The model's child process: the daemon never imports torch, idles small, and survives a dead child.

Real processes throughout: ``tagwatch run`` as a subprocess read through /proc, the encoder child
stopped and killed with real signals, real checkpoints that do and do not load.
"""

from __future__ import annotations

import array
import fcntl
import os
import signal
import subprocess
import sys
import termios
import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import (
    REPO,
    TINY_CONFIG,
    Daemon,
    cmdline,
    exif_keywords,
    noise_jpeg,
    wait_for,
    write_config,
)
from procstats import children, status_mb
from tagwatch import towercache
from tagwatch.config import ModelConfig, TaggingConfig
from tagwatch.encoder import LazyModel
from tagwatch.imaging import prepare, prepare_pixels
from tagwatch.model import ModelError, load_model, model_identity
from tagwatch.pipeline import Pipeline
from tagwatch.store import Store
from tagwatch.vocabulary import parse_tag_list

IDLE_RSS_LIMIT_MB = 250  # the daemon's resident memory once the model is unloaded


def _encoder_children(pid: int) -> list[int]:
    return [c for c in children(pid) if "tagwatch.encoder" in cmdline(c)]


def _state(pid: int) -> str:
    """The process's state letter (R, S, T stopped, Z zombie), or "" once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


def _gone(pid: int) -> bool:
    """The process has ended (a zombie waiting for its parent counts as ended)."""
    return _state(pid) in ("", "Z")


def _model(checkpoint: Path) -> LazyModel:
    return LazyModel(ModelConfig(name=str(TINY_CONFIG), pretrained=str(checkpoint)))


def _batch(tmp_path: Path, spec, count: int = 1) -> np.ndarray:
    return np.stack([prepare(noise_jpeg(tmp_path / f"in-{i}.jpg", seed=i).read_bytes(), spec)
                     for i in range(count)])


def test_the_daemon_never_imports_torch_and_idles_under_250_mb(tmp_path: Path, tiny_checkpoint: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[photos],
                          extra='[schedule]\nidle_unload = "1s"')
    daemon = Daemon(config, tmp_path / "daemon.log")
    daemon.start()
    try:
        assert daemon.proc is not None
        pid = daemon.proc.pid
        noise_jpeg(photos / "first.jpg", seed=1)
        wait_for(lambda: exif_keywords(photos / "first.jpg")["iptc"])
        mark = len(daemon.log())
        daemon.wait_log("model unloaded", since=mark)
        wait_for(lambda: not _encoder_children(pid))  # the child ended with the unload
        maps = Path(f"/proc/{pid}/maps").read_text(encoding="utf-8", errors="replace")
        assert "torch" not in maps and "open_clip" not in maps  # no libtorch, no torch/_C: never imported
        rss = status_mb(pid).get("VmRSS")
        assert rss is not None, f"no VmRSS for {pid}"
        assert rss < IDLE_RSS_LIMIT_MB

        noise_jpeg(photos / "second.jpg", seed=2)  # the next photo starts a new child
        wait_for(lambda: exif_keywords(photos / "second.jpg")["iptc"])
        assert "torch" not in Path(f"/proc/{pid}/maps").read_text(encoding="utf-8", errors="replace")
    finally:
        daemon.stop()
    log = daemon.log()
    assert log.count("model unloaded") >= 1 and "Traceback" not in log


def test_a_reloaded_model_encodes_no_text(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """Text vectors come from the store: a daemon restart, or the model coming back after an idle
    unload, sends only images to the child."""
    tags = parse_tag_list("beach\nforest\nmountain\n", ("a photo of a {}.",), tmp_path / "tags.txt")
    store = Store(tmp_path / "tw.db")
    first = Pipeline(store, _model(tiny_checkpoint), None, TaggingConfig(threshold=-1.0, top_k=2))
    try:
        assert first.use_vocabulary(tags) == 3
    finally:
        first.close()
    model = _model(tiny_checkpoint)
    again = Pipeline(store, model, None, TaggingConfig(threshold=-1.0, top_k=2))
    try:
        assert again.use_vocabulary(tags) == 0
        assert model.encoder is None  # the tag list alone never starts the child
        outcomes = again.process([str(noise_jpeg(tmp_path / "a.jpg", seed=3))], dry_run=True)
        assert [len(o.tags) for o in outcomes] == [2]
        assert model.encoder is not None and model.encoder.texts_encoded == 0
    finally:
        again.close()
        store.close()


def test_a_dead_encoder_is_started_again_and_a_batch_it_died_on_retried_once(
        tmp_path: Path, tiny_checkpoint: Path, caplog: pytest.LogCaptureFixture) -> None:
    lazy = _model(tiny_checkpoint)
    try:
        encoder = lazy.get()
        batch = _batch(tmp_path, encoder.preprocess)
        expected = encoder.encode_images(batch)

        first = encoder.pid  # killed while idle: the next batch starts a new child
        assert first is not None
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: _gone(first))
        np.testing.assert_allclose(encoder.encode_images(batch), expected, atol=1e-5)
        assert encoder.restarts == 1 and encoder.pid not in (None, first)

        second = encoder.pid  # killed with the batch in hand: started again and the batch sent again
        assert second is not None
        os.kill(second, signal.SIGSTOP)  # it cannot read: the request waits whole in its pipe
        wait_for(lambda: _state(second) == "T")  # kill() returns before the child has stopped
        result: dict[str, object] = {}

        def encode() -> None:
            try:
                result["vectors"] = encoder.encode_images(batch)
            except BaseException as exc:  # handed to the test's thread
                result["error"] = exc

        worker = threading.Thread(target=encode)
        worker.start()
        assert encoder._proc is not None and encoder._proc.stdin is not None
        pipe = encoder._proc.stdin.fileno()

        def queued() -> int:
            count = array.array("i", [0])
            fcntl.ioctl(pipe, termios.FIONREAD, count)
            return count[0]

        try:
            wait_for(lambda: queued() >= batch.nbytes)  # the whole batch is in the pipe: the child has it
            os.kill(second, signal.SIGKILL)  # as the OOM killer would
        finally:
            os.kill(second, signal.SIGCONT)  # (a failed wait must not leave the worker blocked for ever)
            worker.join(timeout=120)
        assert "error" not in result, result.get("error")
        np.testing.assert_allclose(result["vectors"], expected, atol=1e-5)
        assert encoder.restarts == 2 and encoder.pid not in (None, first, second)
        assert "retrying the batch once" in caplog.text and "SIGKILL" in caplog.text
    finally:
        lazy.close()


@pytest.mark.parametrize("case", ["corrupt checkpoint", "unknown model", "offline"])
def test_errors_in_the_child_are_the_one_line_messages_of_an_in_process_load(
        tmp_path: Path, case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    if case == "corrupt checkpoint":
        bad = tmp_path / "clip.pt"
        bad.write_bytes(b"this is not a checkpoint\n")
        cfg = ModelConfig(name=str(TINY_CONFIG), pretrained=str(bad))
    elif case == "unknown model":
        cfg = ModelConfig(name="ViT-B-32-265")
    else:
        cfg = ModelConfig(cache_dir=tmp_path / "empty-cache", offline=True)
    with pytest.raises(ModelError) as in_process:
        load_model(cfg)
    lazy = LazyModel(cfg)
    try:
        with pytest.raises(ModelError) as in_child:
            lazy.get()
        assert str(in_child.value) == str(in_process.value)
        assert "\n" not in str(in_child.value) and str(in_child.value).startswith("model")
        assert lazy.encoder is not None and lazy.encoder.running  # an error is an answer, not a crash
    finally:
        lazy.close()


def test_the_encoder_dies_with_its_parent(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """A daemon killed with SIGKILL (or by the OOM killer) leaves no encoder holding a GB behind."""
    script = (
        "import os, signal, sys\n"
        "from tagwatch.config import ModelConfig\n"
        "from tagwatch.encoder import LazyModel\n"
        f"lazy = LazyModel(ModelConfig(name={str(TINY_CONFIG)!r}, pretrained={str(tiny_checkpoint)!r}))\n"
        "print(lazy.get().pid, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "daemon")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env=env, cwd=tmp_path)
    assert done.returncode == -signal.SIGKILL, done.stderr
    child = int(done.stdout.split()[0])
    wait_for(lambda: _gone(child))


def test_a_second_start_encodes_from_the_image_tower_kept_ready_with_the_same_vectors(
        tmp_path: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(towercache, "SAVE_FROM_PARAMS", 0)  # the rule of a real model, on the test one
    cfg = ModelConfig(name=str(TINY_CONFIG), pretrained=str(tiny_checkpoint), precision="fp32",
                      precision_cache=tmp_path / "state" / "precision.json")
    assert not towercache.kept(cfg, model_identity(cfg))
    first = load_model(cfg)
    assert towercache.kept(cfg, model_identity(cfg))  # the daemon's start-up check asks this, torch-free
    pixels = np.stack([prepare_pixels(noise_jpeg(tmp_path / f"{i}.jpg", seed=i).read_bytes(),
                                      first.preprocess) for i in range(3)])
    (kept,) = (tmp_path / "state" / towercache.FOLDER).iterdir()
    with caplog.at_level("INFO", logger="tagwatch"):
        second = load_model(cfg)
    assert "image tower ready in" in caplog.text  # started without building the model
    np.testing.assert_array_equal(second.encode_images(pixels), first.encode_images(pixels))
    np.testing.assert_allclose(second.encode_texts(["a dog"]), first.encode_texts(["a dog"]), atol=1e-6)

    kept.write_bytes(b"not a tower")  # damaged: the model is built, and the tower made again
    third = load_model(cfg)
    np.testing.assert_array_equal(third.encode_images(pixels), first.encode_images(pixels))
    assert kept.stat().st_size > 1000 and "cannot use the ready image tower" in caplog.text
