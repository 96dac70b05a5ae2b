"""``model.precision = "auto"``: measured on the first load, kept only if faithful and faster than fp32,
remembered beside the database per model, CPU and torch version.  No test assumes what auto picks: that
depends on the CPU and on the load of the moment."""

from __future__ import annotations

import json
import stat
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_CONFIG
from tagwatch.config import PRECISION_CACHE_NAME, ModelConfig, load_config
from tagwatch.model import load_model, model_identity
from tagwatch.precision import MIN_COSINE, Trial, candidates, choose, cpu_facts, pick

# An image tower of ~6 M parameters (over the size below which auto does not measure) that still runs
# in milliseconds: 64 px images, 17 tokens, a tiny text tower.
MEASURED_ARCH = {"embed_dim": 64,
                 "vision_cfg": {"image_size": 64, "layers": 7, "width": 256, "patch_size": 16},
                 "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2,
                              "layers": 1}}


@pytest.fixture(scope="module")
def measured_arch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("arch") / "measured-clip.json"
    path.write_text(json.dumps(MEASURED_ARCH), encoding="utf-8")
    return path


def test_the_rule_keeps_the_fastest_faithful_path_and_nothing_slower_than_fp32() -> None:
    # The Xeon of the measurement that started this: bf16 the slowest, int8 the fastest and faithful
    xeon = [Trial("fp32", 19.5, 1.0), Trial("bf16", 13.0, 0.99995), Trial("int8", 34.4, 0.99975)]
    assert pick(xeon) == "int8"
    assert pick([Trial("fp32", 19.5, 1.0), Trial("bf16", 13.0, 0.99995)]) == "fp32"  # flags said bf16
    unfaithful = [Trial("fp32", 10.0, 1.0), Trial("bf16", 12.0, 0.9995), Trial("int8", 30.0, 0.998)]
    assert pick(unfaithful) == "bf16"  # int8 is faster but its vectors drift too far
    assert pick([Trial("fp32", 10.0, 1.0), Trial("int8", 10.3, 0.9999)]) == "fp32"  # within the noise
    assert candidates("cpu", {"avx2", "fma"}) == ["fp32", "int8"]  # bf16 would be emulated
    assert candidates("cpu", {"avx2", "avx512_bf16"}) == ["fp32", "bf16", "int8"]
    assert candidates("cuda:0", {"avx512_bf16"}) == ["fp32"]
    name, flags = cpu_facts("processor\t: 0\nmodel name\t: Some CPU 9000\nflags\t\t: fpu avx2 amx_bf16\n")
    assert name == "Some CPU 9000" and {"avx2", "amx_bf16"} <= flags
    # A VM's CPU named alike, with the same flags, on hosts generations apart (the first EPYC ran the
    # tower at a quarter of a later one's rate): told apart, so a choice made on one is measured again
    epyc = ("processor\t: {n}\ncpu family\t: {family}\nmodel\t\t: 1\nmodel name\t: AMD EPYC\n"
            "flags\t\t: avx2 fma\n")
    zen1 = cpu_facts(epyc.format(n=0, family=23) + "\n" + epyc.format(n=1, family=23))
    zen3 = cpu_facts(epyc.format(n=0, family=25))
    assert zen1 == ("AMD EPYC (family 23, model 1)", {"avx2", "fma"})
    assert zen3[0] == "AMD EPYC (family 25, model 1)"


def test_auto_measures_once_then_a_load_reads_the_choice(measured_arch: Path, tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    cache = tmp_path / "data" / PRECISION_CACHE_NAME
    cfg = ModelConfig(name=str(measured_arch), pretrained="none", precision="auto", precision_cache=cache)
    caplog.set_level("INFO", logger="tagwatch")
    model = load_model(cfg)
    assert "timing the image tower" in caplog.text
    entry = next(iter(json.loads(cache.read_text())["choices"].values()))
    assert entry["precision"] == model.precision and entry["model"] == model_identity(cfg)
    rates, cosines = entry["img_s"], entry["cosine"]
    assert set(rates) == set(candidates("cpu", set(entry["flags"])))  # every candidate timed, figures kept
    assert rates[model.precision] >= rates["fp32"]  # auto never keeps a path slower than fp32
    assert model.precision == "fp32" or cosines[model.precision] >= MIN_COSINE
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600 and stat.S_IMODE(cache.parent.stat().st_mode) == 0o700
    # The kept tower is the measured one, in its precision: its vectors are fp32's, near enough
    images = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    exact = load_model(replace(cfg, precision="fp32")).encode_images(images)
    assert (model.encode_images(images) * exact).sum(1).min() > 0.99

    caplog.clear()
    before = cache.stat().st_mtime_ns
    again = load_model(cfg)
    assert again.precision == model.precision
    assert "timing the image tower" not in caplog.text and "as measured on" in caplog.text
    assert cache.stat().st_mtime_ns == before


def test_a_choice_made_under_another_torch_or_cpu_is_measured_again(measured_arch: Path,
                                                                   tmp_path: Path) -> None:
    import torch

    cache = tmp_path / PRECISION_CACHE_NAME
    loaded = load_model(ModelConfig(name=str(measured_arch), pretrained="none", precision="fp32"))
    model, spec = loaded._model, loaded.preprocess
    identity = f"{measured_arch.stem}/random-seed0"
    first = choose(model, identity, "cpu", spec, cache)
    assert first.how == "measured"
    assert choose(model, identity, "cpu", spec, cache).how == "remembered"
    document = json.loads(cache.read_text())
    (key, entry), = document["choices"].items()
    assert f"torch {torch.__version__}" in key and entry["cpu"] in key  # what the choice holds for
    # The same file after a torch upgrade, then after a move to another CPU: stale, measured again
    for stale in (key.replace(torch.__version__, "2.0.0"), key.replace(entry["cpu"], "Another CPU")):
        cache.write_text(json.dumps({"choices": {stale: {**entry, "precision": "bf16"}}}), encoding="utf-8")
        again = choose(model, identity, "cpu", spec, cache)
        assert again.how == "measured"
        assert set(json.loads(cache.read_text())["choices"]) == {stale, key}  # the other entry kept


def test_the_choice_lives_beside_the_database_and_small_models_are_not_measured(
        tmp_path: Path, tiny_checkpoint: Path) -> None:
    config_file = tmp_path / "config.toml"
    config_file.write_text('database = "state/library.db"\n[model]\nprecision = "auto"\n', encoding="utf-8")
    config = load_config(config_file)
    assert config.model.precision_cache == tmp_path / "state" / PRECISION_CACHE_NAME
    moved = replace(config, database=tmp_path / "b.db")
    assert moved.model.precision_cache == tmp_path / PRECISION_CACHE_NAME
    # tiny-clip's image tower (0.2 M parameters) costs less than a photo's decoding in any precision
    cache = tmp_path / "state" / PRECISION_CACHE_NAME
    tiny = ModelConfig(name=str(TINY_CONFIG), pretrained=str(tiny_checkpoint), precision_cache=cache)
    model = load_model(tiny)
    assert model.precision == "fp32" and not cache.exists()


def test_the_encoder_child_measures_and_remembers_in_the_data_folder(measured_arch: Path,
                                                                    tmp_path: Path) -> None:
    from tagwatch.encoder import EncoderProcess

    config_file = tmp_path / "config.toml"
    config_file.write_text(f'database = "state/library.db"\n[model]\nname = "{measured_arch}"\n'
                           'pretrained = "none"\n', encoding="utf-8")
    config = load_config(config_file)
    child = EncoderProcess(config.model)
    try:
        child.load()
    finally:
        child.close()
    choices = json.loads((tmp_path / "state" / PRECISION_CACHE_NAME).read_text())["choices"]
    assert [entry["precision"] for entry in choices.values()] == [child.precision]
