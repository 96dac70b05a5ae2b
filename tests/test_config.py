"""The config file: defaults, validation messages that name the key, exit status 2, init."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import exif_keywords, noise_jpeg, tagwatch, write_config
from tagwatch.config import (
    DEFAULT_MODEL,
    DEFAULT_PRETRAINED,
    ConfigError,
    builtin_tag_list,
    default_config_path,
    default_database_path,
    load_config,
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_follow_xdg_and_the_issue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    config = load_config(None)  # no file at the default location: built-in defaults
    assert default_config_path() == tmp_path / "cfg" / "tagwatch" / "config.toml"
    assert config.database == default_database_path() == tmp_path / "data" / "tagwatch" / "tagwatch.db"
    assert (config.model.name, config.model.pretrained) == (DEFAULT_MODEL, DEFAULT_PRETRAINED)
    assert config.tagging.threshold == 0.25
    assert config.tagging.templates == ("a photo of a {}.",)
    assert config.tagging.mode == "append"
    assert config.tags == builtin_tag_list() and config.tags.is_file()


def test_values_and_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    config = load_config(write(tmp_path, """
watch = ["photos"]
exclude = ["@eaDir"]
tags = "my-tags.txt"
database = "db/tw.db"
database_lock_wait = "2s"
[model]
name = "ViT-B-32"
pretrained = "weights/clip.pt"
[tagging]
threshold = -0.5
top_k = 4
templates = ["a photo of a {}.", "a picture of {}"]
[batch]
size = 16
max_wait_ms = 250
quiet_ms = 20000
[schedule]
rescan = "30m"
idle_unload = "2m"
[write]
target = "both"
sidecar = "photo.xmp"
mtime = "keep"
hierarchy_prefix = "auto|clip"
[metrics]
listen = "[::1]:9100"
"""))
    assert config.watch == (tmp_path / "photos",)
    assert config.tags == tmp_path / "my-tags.txt"
    assert config.database == tmp_path / "db" / "tw.db" and config.database_lock_wait == 2
    assert config.model.pretrained == str(tmp_path / "weights" / "clip.pt")
    assert config.tagging.threshold == -0.5 and config.tagging.top_k == 4
    assert config.batch.size == 16 and config.batch.max_wait_ms == 250 and config.batch.quiet_ms == 20000
    assert config.schedule.rescan == 1800 and config.schedule.idle_unload == 120
    assert (config.write.target, config.write.sidecar, config.write.mtime, config.write.hierarchy_prefix) == (
        "both", "photo.xmp", "keep", "auto|clip")
    assert (config.metrics.host, config.metrics.port) == ("::1", 9100)


@pytest.mark.parametrize(("text", "message"), [
    ("[tagging]\ntreshold = 0.3\n", "unknown key 'tagging.treshold'"),
    ("colour = 1\n", "unknown key 'colour'"),
    ("[tagging]\nthreshold = 'high'\n", "tagging.threshold must be a number"),
    ("[tagging]\nthreshold = 1.5\n", "tagging.threshold must be a cosine similarity in [-1, 1]"),
    ("[tagging]\ntop_k = -1\n", "tagging.top_k must be 0 (no cap) or more, got -1"),
    ("[tagging]\ntemplates = ['no placeholder']\n", "tagging.templates entry 'no placeholder'"),
    ("[tagging]\nmode = 'replace'\n", "tagging.mode must be one of 'append', 'sync', 'overwrite'"),
    ("[write]\ntarget = 'xmp'\n", "write.target must be one of 'embedded', 'sidecar', 'both'"),
    ("[write]\nsidecar = 'photo.XMP'\n", "write.sidecar must be one of 'photo.jpg.xmp', 'photo.xmp'"),
    ("[write]\nhierarchy_prefix = '|auto'\n", "write.hierarchy_prefix must be a keyword path"),
    ("[batch]\nsize = true\n", "batch.size must be a whole number"),
    ("[batch]\nquiet_ms = -1\n", "batch.quiet_ms must be at least 0, got -1"),
    ("database_lock_wait = '1m'\n", "database_lock_wait must be longer than 0 s and at most 30 s"),
    ("[schedule]\nrescan = 'often'\n", "schedule.rescan must be a duration"),
    ("[metrics]\nlisten = '0.0.0.0:9464'\n", "metrics.listen must be a loopback address"),
    ("[metrics]\nlisten = '127.0.0.1'\n", "metrics.listen must be HOST:PORT"),
    ("watch = ['config.toml']\n", "watch[0]: '"),
    ("model = 3\n", "model must be a table"),
    # an empty path named the config's own folder (watched it, read it as the tag list)
    ("watch = ['']\n", "watch[0] must be a folder path, not empty"),
    ("database = ''\n", "database must be a path, not empty"),
    ("tags = ' '\n", "tags must be a tag list file or a built-in list's name, not empty"),
    ("[model]\ncache_dir = ''\n", "model.cache_dir must be a path, not empty"),
    ("exclude = ['@eaDir', '']\n", "exclude must hold patterns, not an empty one"),
    ("[model]\ndevice = 'gpu'\n", "model.device must be a torch device like cpu, cuda, cuda:1 or mps"),
    ("watch = [", "not valid TOML"),
])
def test_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert message in str(caught.value)
    assert str(path) in str(caught.value)
    assert "\n" not in str(caught.value)


def test_rtags_settings_write_every_tag_above_the_threshold(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """Report xN #3: rtag writes every tag above its threshold, scored on the bare tag; tagwatch
    capped at top_k = 10 with no way off (`top_k = 0` was refused), so docs/tag-lists.md's 'exactly
    rtag's' wrote 10 of 26 ImageNet tags.  The recipe the docs give: top_k = 0, templates = ["{}"]."""
    words = [f"word{i}" for i in range(14)]  # more than the default cap of 10, all above threshold -1
    config = write_config(tmp_path / "conf", tiny_checkpoint, tags=words, threshold=-1.0, top_k=0)
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace("top_k = 0\n", 'top_k = 0\ntemplates = ["{}"]\nexpand = "none"\n'),
                      encoding="utf-8")
    photo = noise_jpeg(tmp_path / "lib" / "p.jpg", seed=3)

    dry = tagwatch("scan", "--dry-run", "--config", str(config), str(photo))
    assert dry.returncode == 0, dry.stderr
    assert len(dry.stdout.split("\t")[1].split(", ")) == len(words)
    explained = tagwatch("explain", "--config", str(config), str(photo))
    assert explained.returncode == 0, explained.stderr
    assert "top_k 0 (no cap)" in explained.stdout.splitlines()[0]
    assert "beyond top_k" not in explained.stdout
    assert sum(line.endswith("TAGGED") for line in explained.stdout.splitlines()) == len(words)
    assert tagwatch("scan", "--config", str(config), str(photo)).returncode == 0
    assert sorted(exif_keywords(photo)["iptc"]) == sorted(words)  # all 14 written, not 10


def test_cli_reports_config_errors_in_one_line_with_status_2(tmp_path: Path) -> None:
    path = write(tmp_path, "[tagging]\ntreshold = 0.3\n")
    for command in (["scan", str(tmp_path)], ["run", str(tmp_path)], ["explain", "x.jpg"]):
        result = tagwatch(*command, "--config", str(path))
        assert result.returncode == 2, (command, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert lines == [f"tagwatch: error: {path}: unknown key 'tagging.treshold' (known here: "
                         "expand, expand_depth, expand_stop, mode, templates, threshold, top_k)"]
    # status needs only the database: the config's error is a warning (a daemon may run on the last
    # config it loaded; tests/test_service.py)
    shown = tagwatch("status", "--config", str(path))
    assert shown.returncode == 0 and "daemon    not running" in shown.stdout
    assert f"WARNING {path}: unknown key 'tagging.treshold'" in shown.stderr


def test_a_missing_checkpoint_or_model_file_names_the_config_like_every_config_error(tmp_path: Path) -> None:
    """`model.pretrained: checkpoint file … does not exist` named no config: with several (one per
    `tagwatch@` instance) a user could not tell which file to fix."""
    folder = tmp_path / "bad"
    folder.mkdir()
    photo = noise_jpeg(tmp_path / "a.jpg", 1)
    (folder / "c.toml").write_text('database = "db/x.db"\n[model]\n'
                                   f'pretrained = "{tmp_path}/nope.safetensors"\n', encoding="utf-8")
    (folder / "c3.toml").write_text(f'database = "db/x.db"\n[model]\nname = "{tmp_path}/nope.json"\n'
                                    'pretrained = "none"\n', encoding="utf-8")
    for config, message in (("bad/c.toml", f"model.pretrained: checkpoint file '{tmp_path}/nope.safetensors' "
                                           "does not exist"),
                            ("bad/c3.toml", f"model.name: model config file '{tmp_path}/nope.json' does not "
                                            "exist")):
        result = subprocess.run([sys.executable, "-m", "tagwatch", "--config", config, "scan", "--dry-run",
                                 str(photo)], capture_output=True, text=True, cwd=tmp_path, timeout=60)
        assert (result.returncode, result.stderr) == (2, f"tagwatch: error: {config}: {message}\n")


def test_a_database_folder_that_cannot_be_made_is_one_line_naming_the_config(tmp_path: Path) -> None:
    """`run` and `scan` gave a traceback and exit 1 (under systemd a restart loop, a traceback each
    time) when the database's folder could not be created or a file stood where it should be."""
    photos = tmp_path / "photos"
    photos.mkdir()
    photo = noise_jpeg(photos / "a.jpg", 1)
    (tmp_path / "db").write_bytes(b"an earlier database")
    cases = {"db/rel.db": f"cannot create folder {tmp_path / 'db'}: a file of that name is in the way",
             "db/sub/rel.db": f"cannot create folder {tmp_path / 'db' / 'sub'}: not a directory"}
    if Path("/proc/self").is_dir():  # nobody, root included, makes a folder there
        cases["/proc/tw/x.db"] = "cannot create folder /proc/tw: no such file or directory"
    for database, reason in cases.items():
        config = write(tmp_path, f'watch = ["{photos}"]\ndatabase = "{database}"\n')
        for command in (["run"], ["scan", "--dry-run", str(photo)]):
            result = tagwatch("--config", str(config), *command, timeout=60)
            assert result.returncode == 2, (command, result.stderr)
            assert result.stderr.startswith(f"tagwatch: error: {config}: database: {reason}; "), result.stderr
            assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert (tmp_path / "db").read_bytes() == b"an earlier database"


def test_missing_explicit_config_is_an_error(tmp_path: Path) -> None:
    result = tagwatch("status", "--config", str(tmp_path / "nope.toml"))
    assert result.returncode == 2
    assert "config file does not exist" in result.stderr


def test_run_without_folders_explains_what_to_do(tmp_path: Path) -> None:
    result = tagwatch("run", "--config", str(write(tmp_path, "")))
    assert result.returncode == 2
    assert "nothing to watch" in result.stderr


def test_a_watch_folder_not_there_stops_only_a_run_that_would_watch_nothing(tmp_path: Path) -> None:
    """A folder on a drive not plugged in is watched once it appears (tests/test_reliability.py); a
    run none of whose folders exists is almost always a typo, and a folder typed on the command line
    must exist.  Commands that watch nothing do not look at the folders."""
    missing = tmp_path / "usbdisk"
    config = write(tmp_path, f"watch = [{str(missing)!r}, {str(tmp_path / 'nas')!r}]\n"
                             'database = "state/tw.db"\n')
    result = tagwatch("run", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"tagwatch: error: {config}: none of the folders in watch exists ({missing}, {tmp_path / 'nas'}); "
        "a typo, or a drive not plugged in?"]
    typed = tagwatch("run", "--config", str(config), str(missing))
    assert typed.returncode == 2 and f"watch: folder '{missing}' does not exist" in typed.stderr
    assert tagwatch("status", "--config", str(config)).returncode == 0


def test_init_writes_a_starter_config_that_loads(tmp_path: Path) -> None:
    photos = tmp_path / "Photos"
    photos.mkdir()
    target = tmp_path / "etc" / "config.toml"
    result = tagwatch("init", "--config", str(target), str(photos))
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    text = target.read_text()
    assert "# threshold = 0.25" in text  # commented defaults
    config = load_config(target)
    assert config.watch == (photos,)
    assert config.tags == target.parent / "tags.toml"  # a copy of the photo vocabulary, to edit
    assert config.tags.read_text() == builtin_tag_list().read_text()
    again = tagwatch("init", "--config", str(target))
    assert again.returncode == 2 and "already exists" in again.stderr


def test_tagwatch_config_names_the_config_where_no_config_flag_does(tmp_path: Path) -> None:
    """Issue: only scripts/run read TAGWATCH_CONFIG, so `TAGWATCH_CONFIG=… tagwatch status` looked at
    the default config's database while the daemon used the other."""
    import json
    import os
    import subprocess
    import sys

    (tmp_path / "photos").mkdir()
    mine = write(tmp_path, 'watch = ["photos"]\ndatabase = "mine.db"\n')
    other = tmp_path / "other.toml"
    other.write_text('database = "other.db"\n', encoding="utf-8")

    def status(*flags: str, config: Path | None) -> dict[str, object]:
        env = {k: v for k, v in os.environ.items() if k != "TAGWATCH_CONFIG"}
        env["XDG_CONFIG_HOME"] = str(tmp_path / "no-config-here")
        if config is not None:
            env["TAGWATCH_CONFIG"] = str(config)
        result = subprocess.run([sys.executable, "-m", "tagwatch", "status", "--json", *flags],
                                capture_output=True, text=True, env=env, timeout=60)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    assert status(config=mine)["database"] == str(tmp_path / "mine.db")
    assert status("--config", str(other), config=mine)["database"] == str(tmp_path / "other.db")
    assert status(config=None)["database"] != str(tmp_path / "mine.db")


def test_init_without_a_folder_says_which_folder_it_watches(tmp_path: Path) -> None:
    """Issue: `tagwatch init` with no FOLDER wrote watch = ["~/Pictures"] without a word."""
    target = tmp_path / "etc" / "config.toml"
    result = tagwatch("init", "--config", str(target))
    assert result.returncode == 0, result.stderr
    assert 'watch = ["~/Pictures"]' in target.read_text()
    assert f"watch: ~/Pictures (no FOLDER given; edit watch in {target} to change it)" in result.stdout
    assert "next: tagwatch scan --dry-run --config" in result.stdout and " ~/Pictures " in result.stdout


def test_the_web_section_defaults_to_loopback_and_names_a_bad_key(tmp_path: Path) -> None:
    from tagwatch.config import ConfigError, parse_config

    config = parse_config({}, tmp_path, "c.toml")
    assert (config.web.enabled, config.web.host, config.web.port, config.web.loopback) == (
        False, "127.0.0.1", 8765, True)
    exposed = parse_config({"web": {"enabled": True, "host": "0.0.0.0", "port": 0}}, tmp_path, "c.toml").web
    assert exposed.enabled and exposed.port == 0 and not exposed.loopback
    assert parse_config({"web": {"host": "[::1]"}}, tmp_path, "c.toml").web.loopback
    for table, message in (({"port": 70000}, r"c\.toml: web\.port must be a port number"),
                           ({"enabled": "yes"}, r"c\.toml: web\.enabled must be true or false"),
                           ({"hots": "x"}, r"c\.toml: unknown key 'web\.hots'")):
        with pytest.raises(ConfigError, match=message):
            parse_config({"web": table}, tmp_path, "c.toml")
