"""The command line for quick experiments: flags that override the config for one run, a short
``explain``, a bare ``tagwatch`` that says where to begin, shell completion, and progress a person
can read (a bar on a terminal, log lines elsewhere, the daemon's backlog time in ``status``).

The test model knows colours and shapes, so a red circle really is tagged "red" and "circle"; the
lab (``shapes_lab.py``) has every vector cached, so no command here starts the model.
"""

from __future__ import annotations

import argparse
import fcntl
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import synthetic
from conftest import exif_keywords, tagwatch
from shapes_lab import PHOTOS, TAGS, Lab, on_a_terminal
from tagwatch.cli import build_parser
from tagwatch.cli.progress import Progress
from tagwatch.status import lock_path, state_path, write_state


@pytest.fixture
def lab(shapes_lab: Lab) -> Lab:
    """The first scan, run as in a person's terminal: a bar while the tag list is encoded, then one
    for the photos, each with its rate and time left."""
    status, _, shown = shapes_lab.first_run
    assert status == 0, shown
    assert re.search(bar("tag list", len(TAGS), "prompt"), shown), shown
    assert re.search(bar("scan", 3, "photo"), shown), shown
    return shapes_lab


def test_scan_threshold_top_k_and_tags_apply_to_that_run_only(lab: Lab) -> None:
    config_before = lab.config.read_bytes()
    assert lab.dry("--threshold", "1") == {name: [] for name in PHOTOS}  # no cosine exceeds 1
    four = lab.dry("--threshold", "-1", "--top-k", "4")
    # top_k bounds the predictions, printed first; then the levels expansion adds above them (the
    # lab's words WordNet places: dog and golden retriever under animal, car under vehicle)
    levels = {"dog": ["animal"], "golden retriever": ["dog", "animal"], "car": ["vehicle"]}
    for tags in four.values():
        predicted = tags[:4]
        assert len(set(predicted)) == 4 and set(predicted) <= set(TAGS)
        assert tags[4:] == list(dict.fromkeys(level for tag in predicted for level in levels.get(tag, ())
                                              if level not in predicted))
    one = lab.dry("--top-k", "1")
    assert all(len(tags) == 1 and tags[0] in PHOTOS[name] for name, tags in one.items())
    assert lab.dry("--top-k", "0") == lab.dry("--top-k", "1000")  # 0: no cap, as rtag writes
    shapes_only = lab.dry("--tags", str(lab.shapes))
    assert shapes_only == {name: [shape] for name, (_, shape) in PHOTOS.items()}
    assert lab.config.read_bytes() == config_before
    assert {name: sorted(tags) for name, tags in lab.dry().items()} == {
        name: sorted(truth) for name, truth in PHOTOS.items()}  # the next run is the config's again


def test_bad_flag_values_are_one_line_errors(lab: Lab) -> None:
    for args, message in ((("--threshold", "2"), "a cosine similarity is in [-1, 1], got 2"),
                          (("--top-k", "-1"), "must be 0 (no cap) or more, got -1"),
                          (("--mode", "replace"), "invalid choice: 'replace'")):
        result = tagwatch("scan", "--dry-run", str(lab.library), *args, "--config", str(lab.config))
        assert result.returncode == 2 and message in result.stderr


def test_scan_target_sidecar_leaves_the_photos_alone(lab: Lab, tmp_path: Path) -> None:
    photos = lab.copy(tmp_path / "side")
    before = {name: path.read_bytes() for name, path in photos.items()}
    lab.run("scan", "--target", "sidecar", str(tmp_path / "side"))
    for name, path in photos.items():
        assert path.read_bytes() == before[name]
        sidecar = path.with_name(path.name + ".xmp")
        assert sorted(exif_keywords(sidecar)["xmp"]) == sorted(PHOTOS[name])


def test_scan_mode_overwrite_replaces_a_persons_keywords_and_untag_brings_them_back(
        lab: Lab, tmp_path: Path) -> None:
    photos = lab.copy(tmp_path / "mine")
    photo = photos["red-circle.jpg"]
    subprocess.run(["exiftool", "-q", "-overwrite_original", "-Keywords=holiday", "-Subject=holiday",
                    str(photo)], check=True)
    lab.run("scan", "--mode", "overwrite", str(photo))
    assert sorted(exif_keywords(photo)["iptc"]) == ["circle", "red"]  # the config's append keeps it
    lab.run("untag", str(photo))
    assert exif_keywords(photo) == {"iptc": ["holiday"], "xmp": ["holiday"]}


def test_explain_lists_the_best_15_or_top_n_or_the_named_tags(lab: Lab) -> None:
    photo = str(lab.library / "red-circle.jpg")

    def ranked(*args: str) -> list[str]:
        lines = lab.run("explain", photo, *args).stdout.splitlines()[1:]
        return [line.split()[2] for line in lines if line.split()[0].isdigit()]

    default = lab.run("explain", photo).stdout
    assert len(ranked()) == 15 and "... 1 more tags score lower" in default
    assert len(ranked("--top", "0")) == 16
    top2 = ranked("--top", "2")
    assert sorted(top2) == ["circle", "red"]
    named = [line for line in lab.run("explain", photo, "--tag", "dog", "--tag", "red").stdout.splitlines()
             if not line.startswith("not tagged yet: ")]  # the lab's photos are never scanned
    assert [line.split()[2] for line in named[1:]] == ["dog", "red"]
    assert "TAGGED" in named[2] and "TAGGED" not in named[1]
    strict = lab.run("explain", photo, "--threshold", "1", "--top-k", "1", "--tags", str(lab.shapes)).stdout
    assert "threshold 1.0, top_k 1, model shapes-clip" in strict.splitlines()[0]
    assert len(strict.splitlines()) == 2 + len(synthetic.SHAPES) and "TAGGED" not in strict
    typo = tagwatch("explain", photo, "--tag", "circel", "--config", str(lab.config))
    assert typo.returncode == 2 and "'circel': not in the tag list" in typo.stderr
    assert "did you mean 'circle'?" in typo.stderr


def test_a_bare_tagwatch_says_where_to_begin() -> None:
    result = tagwatch()
    assert result.returncode == 0
    assert "start with: tagwatch init FOLDER" in result.stdout
    assert "  scan " in result.stdout and "  untag " in result.stdout


def test_bash_completes_commands_and_flags(tmp_path: Path) -> None:
    """The code `tagwatch completion bash` prints, loaded into a real bash, completes a flag."""
    script = """
        eval "$(tagwatch completion bash)"
        complete_line() {
            COMP_LINE="$1"; COMP_POINT=${#COMP_LINE}; read -ra COMP_WORDS <<< "$COMP_LINE"
            COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); _python_argcomplete tagwatch; echo "${COMPREPLY[*]}"
        }
        complete_line "tagwatch scan --thr"
        complete_line "tagwatch ex"
    """
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=60,
                            cwd=tmp_path)
    assert result.stdout.split("\n")[:2] == ["--threshold ", "explain export"], result.stderr
    fish = tagwatch("completion", "fish")
    assert "complete --command tagwatch" in fish.stdout


def test_every_command_takes_config_completion_too(tmp_path: Path) -> None:
    """docs/commands.md: every command takes --config.  `completion --config x bash` failed (an alias
    `tagwatch='tagwatch --config ~/other.toml'` broke completion); it takes it and needs no config."""
    plain = tagwatch("completion", "bash")
    given = tagwatch("completion", "--config", str(tmp_path / "none.toml"), "bash")
    assert given.returncode == 0, given.stderr
    assert given.stdout == plain.stdout and "_python_argcomplete" in given.stdout
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    lacking = [name for name, command in sub.choices.items()
               if not any("--config" in a.option_strings for a in command._actions)]
    assert lacking == []


# -- progress --------------------------------------------------------------------------------------

def bar(what: str, total: int, unit: str) -> str:
    """A finished tqdm bar: ``scan: 100%|█████| 3/3 [00:01<00:00, 2.50photo/s]`` (elapsed<left,
    rate; a rate below one a second reads ``1.06s/photo``)."""
    return (rf"{what}: 100%\|\S+\| {total}/{total} \[\d\d:\d\d<\d\d:\d\d, +"
            rf"[\d.]+({unit}/s|s/{unit})\]")


def test_calibrate_db_rebuild_and_export_show_a_bar_on_a_terminal(lab: Lab, tmp_path: Path) -> None:
    examples = tmp_path / "examples"
    (examples / "red").mkdir(parents=True)
    shutil.copy(lab.library / "red-circle.jpg", examples / "red")
    shutil.copytree(lab.library, examples / "none", ignore=shutil.ignore_patterns("red-*"))
    status, _, shown = on_a_terminal("calibrate", "--dry-run", str(examples), "--config", str(lab.config))
    assert status == 0, shown
    assert re.search(bar("calibrate", 3, "photo"), shown), shown

    config = tmp_path / "config.toml"
    config.write_text('database = "tagwatch.db"\n', encoding="utf-8")
    shutil.copy(lab.config.parent / "state" / "tagwatch.db", tmp_path / "tagwatch.db")
    status, out, shown = on_a_terminal("db", "rebuild", "--config", str(config))
    assert status == 0, shown
    rows = sum(int(n) for n in re.findall(r"(\d+) \w+", out.splitlines()[1]))  # "carried over: 3 files, ..."
    assert re.search(bar("db rebuild", rows, "row"), shown), shown
    status, out, shown = on_a_terminal("export", str(lab.library), "--config", str(lab.config))
    assert status == 0, shown
    assert re.search(bar("export", 3, "photo"), shown), shown
    assert sorted(Path(p).name for p in json.loads(out)) == sorted(PHOTOS)


def test_a_terminal_that_reports_no_size_still_shows_an_80_column_bar(lab: Lab) -> None:
    """``script``, serial consoles and container exec terminals report 0x0: a scan there showed no
    bar and no progress line at all (tqdm drew nothing for 0 rows)."""
    status, _, shown = on_a_terminal("scan", "--dry-run", str(lab.library), "--config", str(lab.config),
                                     rows=0, columns=0)
    assert status == 0, shown
    assert re.search(bar("scan", 3, "photo"), shown), shown
    drawn = [line for line in re.split(r"[\r\n]+", shown) if line.startswith("scan: 100%|")]
    assert drawn and all(len(line) == 80 for line in drawn), drawn


def test_without_a_terminal_progress_is_a_log_line_with_rate_and_time_left(
        caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    progress = Progress(500, "scan", stream=io.StringIO(), every=30, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="tagwatch"):
        for _ in range(10):
            now[0] += 10.0
            progress.advance(40)  # 4 photos/s
        progress.close()
    assert [r.getMessage() for r in caplog.records] == [
        "scan: 120/500 photos (24%), 4.0/s, about 1m35s left",
        "scan: 240/500 photos (48%), 4.0/s, about 1m05s left",
        "scan: 360/500 photos (72%), 4.0/s, about 0m35s left",
    ]
    assert {getattr(r, "event", None) for r in caplog.records} == {"progress"}


def test_status_says_when_the_daemons_backlog_will_be_done(tmp_path: Path) -> None:
    """A daemon holding the database with 120 photos queued, tagging 60 a minute: 2 minutes left."""
    config = tmp_path / "config.toml"
    config.write_text('database = "tagwatch.db"\n', encoding="utf-8")
    database = tmp_path / "tagwatch.db"
    fd = os.open(lock_path(database), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as the daemon does for its whole life
        os.write(fd, str(os.getpid()).encode())
        write_state(state_path(database), {
            "pid": os.getpid(), "uptime_s": 600, "folders": 1, "model_loaded": True, "queue": 120,
            "tagged_since_start": 300, "failed_since_start": 0, "tagged_per_min": 60.0,
            "last_error": None, "updated": time.time()})
        text = tagwatch("status", "--config", str(config))
        report = tagwatch("status", "--json", "--config", str(config))
    finally:
        os.close(fd)
    assert text.returncode == 0, text.stderr
    assert "60 photos/min over the last 5 min; the queue is cleared in about 2m00s" in text.stdout
    assert json.loads(report.stdout)["daemon"]["eta_s"] == 120
