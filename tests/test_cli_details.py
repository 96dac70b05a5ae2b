"""What a person trying the commands noticed: temporary files a killed command left, failures that
``status`` hid, ``explain`` on a photo set aside, paths through a linked watch folder, and wording.

The lab (``shapes_lab.py``) has every vector cached, so no command here starts the model.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from shapes_lab import Lab


def dead_pid() -> int:
    """The PID of a process that has ended (a writer killed mid-write)."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    return gone.pid


def test_scan_and_untag_remove_temporary_files_a_killed_write_left(shapes_lab: Lab, tmp_path: Path) -> None:
    photos = shapes_lab.copy(tmp_path / "mine")
    folder = tmp_path / "mine"
    killed = dead_pid()
    stale = folder / f".{killed}-21.tagwatch-tmp"
    stale.write_bytes(b"\xff\xd8" + bytes(1 << 20))  # a megabyte of a photo half written
    in_flight = folder / f".{os.getpid()}-1.tagwatch-tmp"  # its writer still runs: left alone
    in_flight.write_bytes(b"\xff\xd8")
    shapes_lab.run("scan", "--dry-run", str(folder))
    assert stale.exists()  # a dry run changes nothing on disk
    result = shapes_lab.run("scan", str(folder))
    assert f"{stale}: removed a temporary file left by an interrupted write" in result.stderr
    assert not stale.exists() and in_flight.exists()
    stale.write_bytes(b"\xff\xd8")
    sidecar = folder / f".{killed}-22.tagwatch-tmp.xmp"
    sidecar.write_bytes(b"<x:xmpmeta")
    shapes_lab.run("untag", str(photos["red-circle.jpg"]))  # one photo: its folder is cleaned
    assert not stale.exists() and not sidecar.exists() and in_flight.exists()
