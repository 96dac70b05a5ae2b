"""One-shot commands as a user types them: scan, scan --dry-run, explain, status; model loading."""

from __future__ import annotations

import json
import os
import re
import signal
import struct
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from conftest import (
    REPO,
    TAGS,
    TINY_CONFIG,
    config_with_vectors,
    exif_keywords,
    noise_jpeg,
    status,
    tagwatch,
    write_config,
)
from tagwatch.config import ModelConfig
from tagwatch.model import ModelError, load_model, model_identity


@pytest.fixture(scope="module")
def known(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> Path:
    """The config ``config_file()`` writes (every tag list word, three a photo), shared by the tests
    below that say what a scan does with the photos named, with the vectors of their pictures (seeds
    0-5) cached (``conftest.config_with_vectors``): their scans start no model."""
    return config_with_vectors(tmp_path_factory.mktemp("known"), tiny_checkpoint, range(6))


def test_scan_tags_a_folder_and_a_second_scan_encodes_nothing(tmp_path: Path, config_file) -> None:
    config = config_file()
    photos = [noise_jpeg(tmp_path / "lib" / f"a{i}.jpg", seed=i) for i in range(3)]
    noise_jpeg(tmp_path / "lib" / ".hidden" / "skip.jpg", seed=9)
    (tmp_path / "lib" / "notes.txt").write_text("not a photo")
    result = tagwatch("scan", "--config", str(config), str(tmp_path / "lib"))
    assert result.returncode == 0, result.stderr
    assert "scan: 3 photos: 3 tagged" in result.stderr
    for photo in photos:
        assert len(exif_keywords(photo)["iptc"]) == 3
    assert exif_keywords(tmp_path / "lib" / ".hidden" / "skip.jpg")["iptc"] == []
    again = tagwatch("scan", "-v", "--config", str(config), str(tmp_path / "lib"))
    assert "3 unchanged" in again.stderr
    assert "encoder process" not in again.stderr  # nothing new: the model is not even started
    report = status(config)
    assert (report["files"], report["tagged"], report["vectors"], report["encoded"]) == (3, 3, 3, 3)
    # moved while nothing watched it, one photo's metadata edited by another program: the vectors
    # are cached, so the model is not started either
    (tmp_path / "lib").rename(tmp_path / "moved")
    subprocess.run(["exiftool", "-q", "-overwrite_original", "-XMP-dc:Subject+=edited elsewhere",
                    str(tmp_path / "moved" / "a0.jpg")], check=True)
    moved = tagwatch("scan", "-v", "--config", str(config), str(tmp_path / "moved"))
    assert "3 unchanged" in moved.stderr, moved.stderr
    assert "encoder process" not in moved.stderr
    assert status(config)["encoded"] == 3


def test_a_mistake_in_the_tag_list_is_said_without_waiting_for_the_model_started_ahead(
        tmp_path: Path, config_file) -> None:
    config = config_file(tags=["x" * 80])  # longer than an IPTC keyword may be
    noise_jpeg(tmp_path / "lib" / "new.jpg", seed=1)  # new: the scan starts the model at once
    result = tagwatch("scan", "-v", "--config", str(config), str(tmp_path / "lib"))
    assert result.returncode != 0
    assert "IPTC keywords hold at most 64" in result.stderr
    assert "encoder process" in result.stderr  # it was started ahead of the first photo...
    assert " loaded on " not in result.stderr  # ...and ended, not waited for until its weights loaded


@pytest.mark.xdist_group("cli-known")  # one worker builds `known` once
def test_dry_run_prints_tags_with_scores_and_writes_no_photo(tmp_path: Path, known: Path) -> None:
    config = known
    photo = noise_jpeg(tmp_path / "p.jpg", seed=1)
    data = photo.read_bytes()
    result = tagwatch("scan", "--dry-run", "--config", str(config), str(photo))
    assert result.returncode == 0, result.stderr
    path, tags = result.stdout.strip().split("\t")
    assert path == str(photo)
    entries = tags.split(", ")
    assert len(entries) == 3
    for entry in entries:
        keyword, score = entry.rsplit(" (", 1)
        assert keyword in TAGS and -1.0 <= float(score.rstrip(")")) <= 1.0
    assert photo.read_bytes() == data
    assert "dry run: no file written" in result.stderr


@pytest.mark.xdist_group("cli-known")  # one worker builds `known` once
def test_scan_reports_bad_files_and_exits_1(tmp_path: Path, known: Path) -> None:
    config = known
    good = noise_jpeg(tmp_path / "good.jpg", seed=1)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(good.read_bytes()[:500])
    result = tagwatch("scan", "--config", str(config), str(tmp_path))
    assert result.returncode == 1
    reason = "truncated JPEG (segment at byte 450 runs past the end of the file)"
    assert f"{bad}: skipped: {reason}" in result.stderr
    assert len(exif_keywords(good)["iptc"]) == 3


@pytest.mark.xdist_group("cli-known")  # one worker builds `known` once
def test_paths_that_do_not_exist_exit_1_and_the_rest_is_done(tmp_path: Path, known: Path) -> None:
    """Issue: `scan /nonexistent` warned and exited 0, `export /nonexistent` printed {} and exited 0,
    `untag /nonexist` said "tagwatch has no record of this file" and exited 0: a script could not
    tell a typo from success.  A photo tagwatch never tagged has nothing to untag: that is done."""
    config = known
    good = noise_jpeg(tmp_path / "good.jpg", seed=1)
    gone = tmp_path / "nonexistent"
    scanned = tagwatch("scan", "--config", str(config), str(good), str(gone))
    assert scanned.returncode == 1
    assert f"{gone}: skipped: no such file or folder" in scanned.stderr
    assert "scan: 1 photo: 1 tagged; 1 named path skipped" in scanned.stderr
    assert len(exif_keywords(good)["iptc"]) == 3
    exported = tagwatch("export", "--config", str(config), str(gone))
    assert (exported.returncode, json.loads(exported.stdout)) == (1, {})
    assert f"{gone}: skipped: no such file or folder" in exported.stderr
    assert "export: 0 photos exported; 1 named path skipped\n" in exported.stderr  # as scan says it
    untagged = tagwatch("untag", "--config", str(config), str(gone))
    assert untagged.returncode == 1
    assert f"{gone}: skipped: no such file or folder" in untagged.stderr
    assert "untag: 0 files: nothing to do; 1 named path skipped" in untagged.stderr  # as scan says it
    never = noise_jpeg(tmp_path / "never.jpg", seed=2)
    assert tagwatch("untag", "--config", str(config), str(never)).returncode == 0
    # Nothing named is a photo: the model is not loaded for nothing (here it cannot be: offline, never
    # downloaded), nor is the database made
    offline = tmp_path / "offline.toml"
    offline.write_text(f'database = "{tmp_path}/offline.db"\n[model]\npretrained = "datacomp_s34b_b86k"\n'
                       f'offline = true\ncache_dir = "{tmp_path}/no-models"\n', encoding="utf-8")
    nothing = tagwatch("scan", "--dry-run", "--config", str(offline), str(gone))
    assert nothing.returncode == 1 and "scan: 0 photos: nothing to do; 1 named path skipped" in nothing.stderr
    assert "download" not in nothing.stderr and not (tmp_path / "offline.db").exists(), nothing.stderr
    # --log-format json: a skipped event naming the path, as for a photo that cannot be used
    record = json.loads(tagwatch("--log-format", "json", "scan", "--config", str(config), str(gone))
                        .stderr.splitlines()[0])
    assert (record["event"], record["path"]) == ("skipped", str(gone))
    assert record["reason"] == "no such file or folder"
    # A tagged photo deleted while no daemon ran: untag of its folder says it is gone, not "already
    # untagged"
    good.unlink()
    untagged = tagwatch("untag", "--config", str(config), str(tmp_path))
    assert f"{good}: no longer on disk" in untagged.stderr and "1 gone" in untagged.stderr, untagged.stderr


def test_a_fifo_or_a_device_named_is_said_to_be_one_and_never_read(tmp_path: Path, config_file) -> None:
    """`explain` of a FIFO waited for ever for a writer, and of a link to /dev/zero read until memory
    ran out; `scan` called both "no such file", though they are there."""
    config = config_file()
    fifo = tmp_path / "fifo.jpg"
    os.mkfifo(fifo)
    zero = tmp_path / "zero.jpg"
    zero.symlink_to("/dev/zero")
    dangling = tmp_path / "gone.jpg"
    dangling.symlink_to(tmp_path / "nothing.jpg")
    scanned = tagwatch("scan", "--config", str(config), str(fifo), str(zero), str(dangling))
    assert scanned.returncode == 1
    assert f"{fifo}: skipped: not a regular file (a FIFO)" in scanned.stderr, scanned.stderr
    assert f"{zero}: skipped: not a regular file (a character device)" in scanned.stderr
    assert f"{dangling}: skipped: a symbolic link to nothing" in scanned.stderr
    assert "scan: 0 photos: nothing to do; 3 named paths skipped" in scanned.stderr
    for path, kind in ((fifo, "a FIFO"), (zero, "a character device")):
        explained = tagwatch("explain", "--config", str(config), str(path), timeout=60)
        assert explained.returncode == 1 and explained.stdout == ""
        assert f"{path}: skipped: not a regular file ({kind})" in explained.stderr, explained.stderr


@pytest.mark.xdist_group("cli-known")  # one worker builds `known` once
def test_a_file_named_in_an_excluded_or_hidden_folder_is_skipped_as_a_walk_skips_it(
        tmp_path: Path, tiny_checkpoint: Path, known: Path) -> None:
    """`find … | xargs tagwatch scan` names every file: one in a NAS's @eaDir or a hidden folder of a
    watched folder is skipped, as the walk of that folder skips it, not written into."""
    root = tmp_path / "w"
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[root],
                          database=known.parent / "state" / "tagwatch.db")  # the vectors of seeds 0-5
    config.write_text('exclude = ["@eaDir"]\n' + config.read_text(encoding="utf-8"), encoding="utf-8")
    thumb = noise_jpeg(root / "@eaDir" / "t.jpg", seed=3)
    hidden = noise_jpeg(root / ".hidden" / "h.jpg", seed=4)
    plain = noise_jpeg(root / "p.jpg", seed=5)
    result = tagwatch("scan", "--config", str(config), str(thumb), str(hidden), str(plain))
    assert result.returncode == 1
    for path in (thumb, hidden):
        assert f"{path}: skipped: excluded (a hidden name, or one of the exclude patterns)" in result.stderr
        assert exif_keywords(path)["iptc"] == []
    assert "scan: 1 photo: 1 tagged; 2 named paths skipped" in result.stderr
    # The folders named (`tagwatch scan /volume1/photo/*` names @eaDir too): skipped, not walked
    folders = tagwatch("scan", "--config", str(config), str(thumb.parent), str(hidden.parent))
    assert folders.returncode == 1
    assert "scan: 0 photos: nothing to do; 2 named paths skipped" in folders.stderr
    assert all(exif_keywords(path)["iptc"] == [] for path in (thumb, hidden))


@pytest.mark.xdist_group("cli-known")  # one worker builds `known` once
def test_a_scan_says_how_many_pictures_of_formats_it_does_not_read_it_passed_over(
        tmp_path: Path, known: Path) -> None:
    """AVIF (phones), GIF, BMP: not read, and not silently: the summary counts them by kind."""
    config = known
    folder = tmp_path / "mixed"
    noise_jpeg(folder / "p.jpg", seed=1)
    for name in ("a.avif", "b.AVIF", "c.gif", "notes.txt", ".hidden.gif"):
        (folder / name).write_bytes(b"\0" * 16)
    result = tagwatch("scan", "--dry-run", "--config", str(config), str(folder))
    assert result.returncode == 0, result.stderr
    assert ("scan: 1 photo: 1 tagged; 3 pictures in formats tagwatch does not read left alone "
            "(.avif 2, .gif 1) (dry run: no file written)") in result.stderr


def test_every_camera_raw_rawpy_reads_is_tagged_and_the_others_are_counted(
        tmp_path: Path, config_file) -> None:
    """Phase One IIQ, Hasselblad 3FR/FFF, Leica RWL, Nikon NRW, Epson ERF… were skipped by their name,
    not even counted, while a .gif was: each is tagged through its sidecar now (a DNG and a TIFF-based
    RAW, the layouts cameras write, under those names), and Sigma's X3F is counted as left alone."""
    from test_imaging import dng_bytes, red_picture

    config = config_file()
    folder = tmp_path / "raws"
    folder.mkdir()
    dng = dng_bytes(red_picture(9, (320, 240)))
    tiff_raw = dng.replace(struct.pack("<HHI", 50706, 1, 4), struct.pack("<HHI", 65000, 1, 4))
    raws = {"P_1.IIQ": dng, "P_1.3FR": tiff_raw, "P_1.fff": dng, "P_1.RWL": dng, "P_1.NRW": tiff_raw,
            "P_1.ERF": tiff_raw, "P_1.MEF": tiff_raw, "P_1.MOS": tiff_raw, "P_1.SR2": tiff_raw,
            "P_1.KDC": tiff_raw}
    for name, data in raws.items():
        (folder / name).write_bytes(data)
    (folder / "S_1.X3F").write_bytes(b"FOVb" + b"\0" * 60)
    (folder / "x.gif").write_bytes(b"GIF89a" + b"\0" * 10)
    result = tagwatch("scan", "--config", str(config), str(folder))
    assert result.returncode == 0, result.stderr
    assert (f"scan: {len(raws)} photos: {len(raws)} tagged; 2 pictures in formats tagwatch does not read "
            "left alone (.gif 1, .x3f 1)") in result.stderr
    for name in raws:
        assert exif_keywords(folder / f"{name}.xmp")["xmp"], name  # photo.jpg.xmp naming, the default


@pytest.mark.xdist_group("cli-known")  # one worker builds `known` once
def test_a_dry_run_says_which_photos_a_scan_would_not_write(tmp_path: Path, known: Path) -> None:
    """A hard-linked or read-only JPEG is refused by the scan: the dry run said it would write it."""
    config = known
    folder = tmp_path / "lib"
    linked, locked, fine = (noise_jpeg(folder / f"{n}.jpg", seed=i) for i, n in enumerate(("l", "r", "f")))
    os.link(linked, tmp_path / "backup.jpg")
    locked.chmod(0o444)
    result = tagwatch("scan", "--dry-run", "--config", str(config), str(folder))
    lines = {line.split("\t")[0]: line for line in result.stdout.splitlines()}
    assert "(a scan would not write it: the file has 2 hard links;" in lines[str(linked)]
    assert lines[str(locked)].endswith("(a scan would not write it: the file is read-only (no write "
                                       "permission); tagwatch leaves it alone)")
    assert "would not write" not in lines[str(fine)]
    assert "scan: 3 photos: 1 tagged, 2 would fail (dry run: no file written)" in result.stderr


def test_ctrl_c_ends_a_scan_with_a_line_saying_how_to_go_on(tmp_path: Path, config_file) -> None:
    config = config_file()
    for attempt in range(3):  # a busy machine may let a scan end before the signal: then again
        folder = tmp_path / f"many{attempt}"
        for i in range(160):  # batches of 32: the first one written, four more to interrupt
            noise_jpeg(folder / f"p{i:03}.jpg", seed=1000 * attempt + i)
        command = [sys.executable, "-m", "tagwatch", "scan", "--config", str(config), str(folder)]
        # Ctrl-C in a terminal: SIGINT at its default (a shell's background job, as CI may run the
        # suite, starts its children with it ignored, and Python then raises no KeyboardInterrupt)
        proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd=REPO,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        assert proc.stderr is not None
        seen = ""
        while "tagged " not in seen:  # the first photo written: interrupt the rest
            line = proc.stderr.readline()
            assert line, seen
            seen += line
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)  # pressed twice, as people do: the second comes while it finishes
        rest = proc.stderr.read()
        if proc.wait(timeout=60) == 0:
            assert "scan: 160 photos: 160 tagged" in rest
            continue
        assert proc.returncode == 130
        assert "ERROR" not in rest, rest  # the batches in flight finished before the store closed
        last = rest.strip().splitlines()[-1]
        assert re.search(r"scan: interrupted with \d+ or more photos done \(the batches in flight were "
                         r"finished\); each one done is recorded: run the same command again to go on$",
                         last), rest
        again = tagwatch("scan", "--config", str(config), str(folder))
        assert again.returncode == 0 and "scan: 160 photos:" in again.stderr  # it goes on
        return
    pytest.fail("every scan ended before its Ctrl-C arrived")


def test_a_photo_left_to_retry_is_named(caplog: pytest.LogCaptureFixture) -> None:
    """A scan ends before a photo that changed under its write is tried again: it names it, where
    the summary only counted "1 retry", and does not say "will retry" (the daemon's wording) of it."""
    from tagwatch.cli.scan import name_retry
    from tagwatch.outcomes import Outcome, Status

    with caplog.at_level("WARNING", logger="tagwatch"):
        name_retry(Outcome("/p/a.jpg", Status.RETRY, error="changed while it was written; will retry"))
        name_retry(Outcome("/p/b.jpg", Status.TAGGED))
    assert caplog.messages == [
        "/p/a.jpg: not tagged: changed while it was written; the next scan tags it"]


@pytest.mark.xdist_group("cli-known")  # one worker builds `known` once
def test_explain_lists_every_tag_with_its_verdict(tmp_path: Path, known: Path) -> None:
    config = known
    photo = noise_jpeg(tmp_path / "p.jpg", seed=1)
    result = tagwatch("explain", "--config", str(config), str(photo))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith(f"{photo}: threshold -1.0, top_k 3")
    assert lines[1].startswith("not tagged yet: ")  # never scanned: the verdicts are what a write will do
    rows = lines[2:]
    assert len(rows) == len(TAGS)
    scores = [float(row.split()[1]) for row in rows]
    assert scores == sorted(scores, reverse=True)
    assert [row.endswith("TAGGED") for row in rows] == [True, True, True, False, False, False]
    assert [row for row in rows if "beyond top_k" in row] == rows[3:]
    assert {kw for row in rows for kw in TAGS if f" {kw} " in f" {row} "} == set(TAGS)


def test_status_json_before_any_database_exists(tmp_path: Path, config_file) -> None:
    report = status(config_file())
    assert {k: report[k] for k in ("files", "vectors", "pending", "failed", "encoded")} == dict.fromkeys(
        ("files", "vectors", "pending", "failed", "encoded"), 0)
    assert report["model"].startswith("tiny-clip@")


def test_python_dash_m_is_the_same_command() -> None:
    result = subprocess.run([sys.executable, "-m", "tagwatch", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("tagwatch ")


# -- model loading ------------------------------------------------------------------------------

def test_checkpoint_and_random_weights_load_through_the_config_path(tiny_checkpoint: Path) -> None:
    model = load_model(ModelConfig(name=str(TINY_CONFIG), pretrained=str(tiny_checkpoint)))
    cfg = ModelConfig(name=str(TINY_CONFIG), pretrained=str(tiny_checkpoint))
    assert model.identity == model_identity(cfg)
    assert model.preprocess.size == 64 and model.dim == 64
    first = load_model(ModelConfig(name=str(TINY_CONFIG), pretrained="none")).encode_texts(["a dog"])
    second = load_model(ModelConfig(name=str(TINY_CONFIG), pretrained="none")).encode_texts(["a dog"])
    assert (first == second).all()  # random weights are seeded: restarts find their vectors again


def test_a_checkpoint_built_without_random_draws_holds_its_weights_exactly(tiny_checkpoint: Path) -> None:
    """A model for a checkpoint is built without drawing the random weights it replaces; what loads
    is the checkpoint to the last bit, and a random-weights model built afterwards is drawn as ever."""
    import open_clip
    import torch

    from tagwatch import skipinit

    saved = torch.load(tiny_checkpoint, weights_only=True)
    loaded = load_model(ModelConfig(name=str(TINY_CONFIG), pretrained=str(tiny_checkpoint), precision="fp32"))
    weights = loaded._model.state_dict()
    assert sorted(weights) == sorted(saved) and all(torch.equal(weights[k], saved[k]) for k in saved)
    assert not skipinit.unreplaced(loaded._model)

    torch.manual_seed(1234)  # the checkpoint's own draws, made again outside tagwatch
    assert all(torch.equal(v, saved[k]) for k, v in open_clip.create_model("tiny-clip").state_dict().items())
    with skipinit.draws_skipped(torch):  # a weight no checkpoint replaced is found, then drawn as before
        layer, attention = torch.nn.Linear(4, 3), torch.nn.MultiheadAttention(4, 2)  # its draw bound by name
    assert skipinit.unreplaced(layer) == ["weight", "bias"]
    assert skipinit.unreplaced(attention) == ["in_proj_weight", "out_proj.weight"]  # biases: zeros_
    assert not skipinit.unreplaced(torch.nn.Linear(4, 3))
    assert not skipinit.unreplaced(torch.nn.MultiheadAttention(4, 2))


def test_an_idle_model_is_unloaded_and_comes_back_on_demand(tiny_checkpoint: Path) -> None:
    from tagwatch.encoder import LazyModel

    lazy = LazyModel(ModelConfig(name=str(TINY_CONFIG), pretrained=str(tiny_checkpoint)))
    before = lazy.get().encode_texts(["a dog"])
    assert not lazy.unload_if_idle(60.0) and lazy.loaded  # just used
    assert lazy.unload_if_idle(0.0) and not lazy.loaded
    assert (lazy.get().encode_texts(["a dog"]) == before).all()
    with lazy.using() as model:  # a batch in progress is never idle, however long it runs
        assert not lazy.unload_if_idle(0.0) and lazy.loaded
        assert (model.encode_texts(["a dog"]) == before).all()
    assert lazy.unload_if_idle(0.0) and not lazy.loaded


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_fast_precisions_give_faithful_vectors(tiny_checkpoint: Path, precision: str) -> None:
    tiny = ModelConfig(name=str(TINY_CONFIG), pretrained=str(tiny_checkpoint))
    exact, fast = load_model(replace(tiny, precision="fp32")), load_model(replace(tiny, precision=precision))
    assert (fast.precision, fast.identity) == (precision, exact.identity)  # the cache stays shared
    images = np.random.default_rng(0).standard_normal((4, 3, 64, 64)).astype(np.float32)
    assert (exact.encode_images(images) * fast.encode_images(images)).sum(1).min() > 0.99
    texts = ["a photo of a dog.", "日本語"]
    assert (exact.encode_texts(texts) * fast.encode_texts(texts)).sum(1).min() > 0.99


def test_short_text_context_gives_the_full_context_vectors(tiny_checkpoint: Path) -> None:
    """Prompts are encoded on only the token positions they use; the vectors must not change."""
    import torch

    # fp32: the claim is exactness, which bf16 rounding (what `auto` may pick) cannot show
    model = load_model(ModelConfig(name=str(TINY_CONFIG), pretrained=str(tiny_checkpoint), precision="fp32"))
    prompts = ["a photo of a dog.", "a", "a photo of a very long and rather wordy golden retriever puppy.",
               "日本語", "a photo of a cat."]
    fast = model.encode_texts(prompts, batch_size=2)  # batches of different lengths, order kept
    with torch.inference_mode():
        full = torch.nn.functional.normalize(model._model.encode_text(model._tokenizer(prompts)), dim=-1)
    assert np.abs(fast - full.numpy()).max() < 1e-5


@pytest.mark.parametrize(("cfg", "message"), [
    (ModelConfig(name="ViT-B-32-265"), r"unknown open_clip model 'ViT-B-32-265' \(did you mean ViT-B-32-256"),
    (ModelConfig(pretrained="laion400m_e32"), r"'laion400m_e32' is neither a pretrained tag of ViT-B-32-256 "
                                              r"\(datacomp_s34b_b86k\)"),
    (ModelConfig(pretrained="/nowhere/clip.pt"), r"checkpoint file '/nowhere/clip.pt' does not exist"),
])
def test_model_errors_say_what_to_fix(cfg: ModelConfig, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        load_model(cfg)


def test_offline_mode_refuses_to_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    cfg = ModelConfig(cache_dir=tmp_path / "empty-cache", offline=True)
    with pytest.raises(ModelError, match=r"not in the cache .* model\.offline = true forbids downloading"):
        load_model(cfg)


def hub_config(folder: Path) -> Path:
    """A config whose model's weights come from the hub (RN50 / openai): never in the test's cache."""
    (folder / "tags.txt").write_text("dog\ncat\n", encoding="utf-8")
    config = folder / "config.toml"
    config.write_text('tags = "tags.txt"\ndatabase = "state/tw.db"\n[model]\nname = "RN50"\n'
                      'pretrained = "openai"\ncache_dir = "empty-cache"\n', encoding="utf-8")
    return config


def with_hub(hub: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI with the Hugging Face hub at ``hub`` (HF_ENDPOINT), downloads allowed."""
    env = {**{k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}, "HF_ENDPOINT": hub}
    return subprocess.run([sys.executable, "-m", "tagwatch", *args], capture_output=True, text=True,
                          timeout=300, env=env)


@pytest.mark.parametrize("hub", ["http://127.0.0.1:9", "http://tagwatch-hub.invalid"])
def test_weights_to_download_with_no_hub_to_reach_fail_at_once_in_one_line(tmp_path: Path, hub: str) -> None:
    """Issue: with no network, `scan --dry-run` of the default model took 94 s and printed ~64
    warnings (each twice) before its error: the hub's client retried each of two file names five
    times, and the download was tried twice.  Here the hub is an address where nothing listens, or a
    name that does not resolve (HF_ENDPOINT)."""
    config = hub_config(tmp_path)
    photo = noise_jpeg(tmp_path / "photo.jpg", seed=1)
    for command in (["scan", "--dry-run", str(photo)], ["run", str(tmp_path)]):
        result = with_hub(hub, *command, "--config", str(config))
        assert result.returncode == 2, (command, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert "Retrying" not in result.stderr, lines
        error = lines[-1]
        assert error.startswith("tagwatch: error: model: cannot download the weights of RN50 / openai: "
                                f"{hub} cannot be reached ("), error
        assert f"'{tmp_path / 'empty-cache'}'" in error and "model.pretrained" in error
        if command[0] == "scan":
            assert lines == [error]


def test_a_failing_hubs_warnings_are_said_once_and_the_download_tried_once(tmp_path: Path) -> None:
    """A hub that answers, with errors (HTTP 500, then 404): the hub's client warns as it retries; each
    warning is one line (the encoder child's library printed it itself too), and one download cycle
    runs (the scan tried the download again after the load started ahead of the photos had failed)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    asked: dict[str, int] = {}

    class Failing(BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            asked[self.path] = asked.get(self.path, 0) + 1
            self.send_response(500 if asked[self.path] <= 2 else 404)
            self.end_headers()

        do_GET = do_HEAD

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        hub = f"http://127.0.0.1:{server.server_address[1]}"
        photo = noise_jpeg(tmp_path / "photo.jpg", seed=1)
        result = with_hub(hub, "scan", "--dry-run", str(photo), "--config", str(hub_config(tmp_path)))
    finally:
        server.shutdown()
    assert result.returncode == 2, result.stderr
    url = f"{hub}/timm/resnet50_clip.openai/resolve/main/open_clip_model.safetensors"
    said = f"HTTP Error 500 thrown while requesting HEAD {url}"
    warned = [line for line in result.stderr.splitlines() if said in line]
    assert len(warned) == 1 and "WARNING encoder:" not in warned[0], result.stderr
    assert result.stderr.count("ERROR Failed to download weights for tag 'openai'") == 1, result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("tagwatch: error: model: cannot load RN50 / openai"), error


@pytest.mark.xdist_group("cli-known")  # one worker builds `known` once
def test_status_reports_json_keys_the_issue_names(tmp_path: Path, known: Path) -> None:
    config = known
    noise_jpeg(tmp_path / "lib" / "a.jpg", seed=1)
    tagwatch("scan", "--config", str(config), str(tmp_path / "lib"))
    result = tagwatch("status", "--config", str(config))
    assert result.returncode == 0
    assert "encoded" in result.stdout and "vectors" in result.stdout
    report = json.loads(tagwatch("status", "--json", "--config", str(config)).stdout)
    assert {"files", "vectors", "pending", "failed", "encoded"} <= set(report)
