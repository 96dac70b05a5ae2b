"""A watched folder that a symbolic link stands in for while the daemon runs (report xQ #3): the
admin moves the photos to another disk and leaves a link behind.  A real watchdog observer, a real
link, a real store."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from conftest import Daemon, noise_jpeg, tagwatch, wait_for, write_config
from tagwatch.queue import BatchQueue
from tagwatch.status import render_prometheus
from tagwatch.store import DONE, Store
from tagwatch.watcher import PathFilter, Watcher, reconcile


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_a_root_renamed_away_and_replaced_by_a_link_is_refused_in_one_line_and_watched_when_back(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """`mv w w-real && ln -s w-real w`: `stat` of the root followed the link to the very folder
    watched, so the root check saw nothing, said nothing, and new photos were never tagged until
    a restart.  Links are not followed while the daemon runs: one WARNING names the folder and
    where it now leads; the rescan does not read through it either (its photos keep their records,
    none refused); a real folder back at the path is watched and scanned again."""
    root = tmp_path / "w"
    kept = noise_jpeg(root / "a.jpg", seed=1)
    store = Store(tmp_path / "db" / "tw.db")
    st = kept.stat()
    store.record_file(str(kept), key=b"k" * 16, size=st.st_size, mtime_ns=st.st_mtime_ns, state=DONE)
    queue = BatchQueue(size=100, max_wait=0, settle=0)
    filt = PathFilter([root])
    watcher = Watcher([root], filt, queue)
    watcher.start()
    try:
        real = tmp_path / "w-real"
        root.rename(real)
        root.symlink_to(real, target_is_directory=True)
        with caplog.at_level(logging.INFO, logger="tagwatch.watcher"):
            assert watcher.check() == []
            assert watcher.check() == []  # said once, not at every check
        said = warnings(caplog)
        assert len(said) == 1, said
        assert said[0].startswith(f"{root}: the watched folder is now a symbolic link"), said
        assert str(real) in said[0]

        report = reconcile([root], filt, store, queue)
        assert (report.seen, report.queued, report.gone) == (0, 0, 0)
        row = store.file(str(kept))
        assert row is not None and row.state == DONE

        root.unlink()  # the admin puts the folder back
        real.rename(root)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="tagwatch.watcher"):
            assert watcher.check() == [root]  # the caller scans it
        assert [m for m in warnings(caplog) if "is back" in m]
        photo = noise_jpeg(root / "b.jpg", seed=2)
        wait_for(lambda: str(photo) in queue.get(timeout=0.5).paths, timeout=10)
    finally:
        watcher.stop()
        store.close()


def test_a_root_whose_parent_became_a_link_is_refused_too(tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """The same move one level up (`mv disk disk-old && ln -s disk-old disk`): the root's own name
    is no link, but its path leads through one now."""
    root = tmp_path / "disk" / "photos"
    noise_jpeg(root / "a.jpg", seed=3)
    watcher = Watcher([root], PathFilter([root]), BatchQueue(size=100, max_wait=0, settle=0))
    watcher.start()
    try:
        (tmp_path / "disk").rename(tmp_path / "disk-old")
        (tmp_path / "disk").symlink_to(tmp_path / "disk-old", target_is_directory=True)
        with caplog.at_level(logging.INFO, logger="tagwatch.watcher"):
            assert watcher.check() == []
        said = warnings(caplog)
        assert len(said) == 1 and str(tmp_path / "disk-old" / "photos") in said[0], said
    finally:
        watcher.stop()


def test_status_names_the_folders_it_does_not_watch_and_why(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """`tagwatch status` said "watching 2 folders" of a daemon watching neither: one on a drive not
    plugged in, one replaced by a symbolic link (xQ #3 said it only in the log).  It counts what is
    watched and names each folder that is not, with why; the metrics count them for an alert."""
    root, absent = tmp_path / "w", tmp_path / "usb" / "photos"
    root.mkdir()
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[root, absent])
    daemon = Daemon(config, tmp_path / "daemon.log")
    daemon.start()
    try:
        real = tmp_path / "w-real"
        root.rename(real)
        root.symlink_to(real, target_is_directory=True)
        daemon.wait_log(f"{root}: the watched folder is now a symbolic link")

        def said() -> str:
            return tagwatch("status", "--config", str(config)).stdout

        wait_for(lambda: "watching 0 of 2 folders" in said())
        text = said()
        assert f"NOT WATCHED: {absent}: not there (a drive not plugged in" in text, text
        assert f"NOT WATCHED: {root}: reached through a symbolic link (it leads to {real})" in text, text
        snapshot = json.loads(tagwatch("status", "--json", "--config", str(config)).stdout)["daemon"]
        assert "tagwatch_folders_unwatched 2\n" in render_prometheus(snapshot, {})

        root.unlink()  # the folder put back: watched again, and said so
        real.rename(root)
        wait_for(lambda: "watching 1 of 2 folders" in said())
        assert f"NOT WATCHED: {root}" not in said()
    finally:
        daemon.stop()
