"""A newcomer's first hour: ``init`` asks where keywords go and says how to undo, a missing exiftool
is one line saying what to install."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

from conftest import tagwatch
from tagwatch.config import load_config


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
    both = tmp_path / "both" / "config.toml"
    assert tagwatch("init", "--target", "both", "--config", str(both), str(photos)).returncode == 0
    assert load_config(both).write.target == "both"
    assert "# embedded: into the JPEG (IPTC + XMP); sidecar: an XMP file beside" in both.read_text(
        encoding="utf-8")  # the line keeps its explanation
