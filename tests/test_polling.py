"""Light snapshots of a polled root (tagwatch.polling): the same events as watchdog's snapshots on
the same real trees, and a polled root's photo added, changed, renamed, deleted and folder moved
still reaching the queue."""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from watchdog.events import (
    DirDeletedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.utils.dirsnapshot import DirectorySnapshot, DirectorySnapshotDiff

import tagwatch.polling as polling_module
from conftest import Daemon, collect, exif_keywords, noise_jpeg, status, wait_for, write_config
from tagwatch.polling import LightPollingObserver, LightSnapshot, light_diff
from tagwatch.queue import BatchQueue, Delete, Move
from tagwatch.watcher import PathFilter, Watcher

KINDS = ("files_created", "files_deleted", "files_modified", "files_moved", "files_attrib",
         "dirs_created", "dirs_deleted", "dirs_modified", "dirs_moved", "dirs_attrib")


def in_order(path: str | None) -> list[os.DirEntry[str]]:
    """A folder's entries by name: which of two names of one inode is walked last decides, in both
    diffs, whether a hard-linked photo renamed is a move; scandir's own order varies by machine."""
    with os.scandir(path) as entries:
        return sorted(entries, key=lambda entry: entry.name)


def watchdog_snapshot(root: Path) -> DirectorySnapshot:
    """What the daemon polled with before: PollingObserverVFS(os.lstat, os.scandir)."""
    return DirectorySnapshot(str(root), recursive=True, stat=os.lstat, listdir=in_order)  # type: ignore[arg-type]


def light_snapshot(root: Path) -> LightSnapshot:
    return LightSnapshot(str(root), listdir=in_order)  # type: ignore[arg-type]


Events = dict[str, set[object]]


def both_diffs(root: Path, change: Callable[[], None]) -> tuple[Events, Events]:
    """watchdog's diff and the light one, of the same tree before and after ``change``."""
    before = watchdog_snapshot(root), light_snapshot(root)
    time.sleep(0.01)  # a rewrite gets another mtime even on a coarse clock
    change()
    after = watchdog_snapshot(root), light_snapshot(root)
    theirs = DirectorySnapshotDiff(before[0], after[0])
    ours = light_diff(before[1], after[1])
    return ({k: set(getattr(theirs, k)) for k in KINDS}, {k: set(getattr(ours, k)) for k in KINDS})


def library(root: Path) -> None:
    """A small archive: two days of photos, a sidecar, a hard link (one photo under two names: its
    inode is no longer one path's), a link to a folder (not followed)."""
    for day in ("2024/06/01", "2024/06/02"):
        for i in range(3):
            noise_jpeg(root / day / f"IMG_{i}.jpg", seed=i)
    (root / "2024/06/01/IMG_0.xmp").write_text("<x:xmpmeta/>")
    os.link(root / "2024/06/02/IMG_2.jpg", root / "2024/06/02/IMG_2~link.jpg")  # walked after IMG_2*
    (root / "elsewhere").symlink_to(root / "2024")


def _rewrite(path: Path) -> None:
    noise_jpeg(path, seed=99, size=(64, 48))


def _replace(path: Path) -> None:  # an atomic save: a new inode under the old name
    noise_jpeg(path.with_name(".tmp.jpg"), seed=98)
    os.replace(path.with_name(".tmp.jpg"), path)


def _relink(root: Path) -> None:
    (root / "elsewhere").unlink()
    (root / "elsewhere").symlink_to(root / "2024/06")


def _recycle(root: Path) -> None:  # a photo deleted, another written: often the same inode again
    (root / "2024/06/01/IMG_1.jpg").unlink()
    noise_jpeg(root / "2024/06/02/new.jpg", seed=97)


def _hard_link(root: Path) -> None:
    os.link(root / "2024/06/01/IMG_0.jpg", root / "2024/06/02/linked.jpg")
    os.rename(root / "2024/06/01/IMG_2.jpg", root / "2024/06/02/IMG_2b.jpg")


def _many(root: Path) -> None:  # everything at once, as a 30-s poll on a busy share sees it
    (root / "2024/06/03").mkdir()
    noise_jpeg(root / "2024/06/03/a.jpg", seed=50)
    os.rename(root / "2024/06/01/IMG_0.jpg", root / "2024/06/03/IMG_0.jpg")
    (root / "2024/06/02/IMG_1.jpg").unlink()
    _rewrite(root / "2024/06/02/IMG_0.jpg")
    os.rename(root / "2024/06", root / "2024/07")
    os.chmod(root / "2024/07/01/IMG_1.jpg", 0o600)


CHANGES: dict[str, Callable[[Path], None]] = {
    "nothing": lambda root: None,
    "photo added": lambda root: noise_jpeg(root / "2024/06/01/new.jpg", seed=42) and None,
    "photo changed": lambda root: _rewrite(root / "2024/06/01/IMG_0.jpg"),
    "photo replaced atomically": lambda root: _replace(root / "2024/06/01/IMG_0.jpg"),
    "photo renamed": lambda root: os.rename(root / "2024/06/01/IMG_0.jpg", root / "2024/06/01/renamed.jpg"),
    "photo moved to another folder": lambda root: os.rename(root / "2024/06/01/IMG_0.jpg",
                                                            root / "2024/06/02/IMG_0b.jpg"),
    "photo deleted": lambda root: (root / "2024/06/01/IMG_0.jpg").unlink(),
    "sidecar deleted": lambda root: (root / "2024/06/01/IMG_0.xmp").unlink(),
    "folder moved": lambda root: os.rename(root / "2024/06/01", root / "2024/06/15"),
    "folder deleted": lambda root: shutil.rmtree(root / "2024/06/02"),
    "folder made": lambda root: (root / "2025/01").mkdir(parents=True),
    "permissions changed": lambda root: os.chmod(root / "2024/06/01/IMG_0.jpg", 0o600),
    "link pointed elsewhere": _relink,
    "inode recycled": _recycle,
    "hard link beside a move": _hard_link,
    "hard-linked photo renamed": lambda root: os.rename(root / "2024/06/02/IMG_2.jpg",
                                                        root / "2024/06/02/IMG_2 renamed.jpg"),
    "hard-linked photo deleted": lambda root: (root / "2024/06/02/IMG_2~link.jpg").unlink(),
    "many at once": _many,
}


@pytest.mark.parametrize("name", list(CHANGES))
def test_light_snapshots_give_watchdogs_events(tmp_path: Path, name: str) -> None:
    root = tmp_path / "nas"
    library(root)
    theirs, ours = both_diffs(root, lambda: CHANGES[name](root))
    assert ours == theirs
    if name != "nothing":
        assert any(theirs.values())  # the change was one watchdog sees: the comparison means something


@pytest.mark.parametrize("statx", [True, False], ids=["one statx call", "lstat and statx (no libc statx)"])
def test_a_light_snapshot_does_not_follow_links_and_counts_what_watchdog_does(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, statx: bool) -> None:
    if not statx:
        monkeypatch.setattr(polling_module, "_statx", None)
    root = tmp_path / "nas"
    library(root)
    light, theirs = LightSnapshot(str(root)), watchdog_snapshot(root)
    assert light.paths == theirs.paths
    assert str(root / "elsewhere/06/01/IMG_0.jpg") not in light.paths  # lstat: the link is a leaf
    for path in theirs.paths:
        assert light.inode(path) == theirs.inode(path)
        assert (light.isdir(path), light.size(path), light.mtime(path), light.birthtime(path)) == (
            theirs.isdir(path), theirs.size(path), theirs.mtime(path), theirs.birthtime(path))


class _Recorder(FileSystemEventHandler):
    def __init__(self) -> None:
        self.events: list[FileSystemEvent] = []
        self.lock = threading.Lock()

    def on_any_event(self, event: FileSystemEvent) -> None:
        with self.lock:
            self.events.append(event)

    def seen(self, kind: type[FileSystemEvent], *paths: Path) -> bool:
        with self.lock:
            return any(type(e) is kind and (os.fsdecode(e.src_path), os.fsdecode(e.dest_path))[:len(paths)]
                       == tuple(str(p) for p in paths) for e in self.events)


def test_a_polled_root_that_goes_away_is_reported_deleted(tmp_path: Path) -> None:
    """As watchdog's emitter: the root gone is one DirDeletedEvent (the Watcher's check then waits
    for it to come back)."""
    root = tmp_path / "nas"
    root.mkdir()
    recorder = _Recorder()
    observer = LightPollingObserver(polling_interval=0.1)
    observer.schedule(recorder, str(root), recursive=True)
    observer.start()
    try:
        time.sleep(0.3)
        root.rmdir()
        wait_for(lambda: recorder.seen(DirDeletedEvent, root), timeout=10)
    finally:
        observer.stop()
        observer.join()


def test_a_poll_longer_than_the_interval_is_said_once_with_the_fix(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A share answering slowly: the clock (a stand-in: no test waits for a slow disk) says each
    poll took 100 s, three times the interval; the log says so once, not every poll."""
    root = tmp_path / "nas"
    library(root)
    ticks = itertools.count(step=100.0)
    monkeypatch.setattr(polling_module, "_clock", lambda: next(ticks))
    recorder = _Recorder()
    observer = LightPollingObserver(polling_interval=0.05)
    observer.schedule(recorder, str(root), recursive=True)
    with caplog.at_level(logging.WARNING, logger="tagwatch.polling"):
        observer.start()
        try:
            wait_for(lambda: "longer than poll_interval" in caplog.text, timeout=10)
            time.sleep(0.3)  # several more polls
        finally:
            observer.stop()
            observer.join()
    said = [r.getMessage() for r in caplog.records if "longer than poll_interval" in r.getMessage()]
    assert len(said) == 1, said
    assert said[0].startswith(f"{root}: one poll of its 14 files and folders took 100 s"), said


def test_a_polled_root_still_sees_a_photo_added_changed_renamed_deleted_and_a_folder_moved(
        tmp_path: Path) -> None:
    """The Watcher polling a real folder (``poll = true``) through light snapshots: each change
    reaches the queue as the daemon acts on it."""
    root = tmp_path / "nas"
    (root / "2024/06").mkdir(parents=True)
    kept = noise_jpeg(root / "2024/06/kept.jpg", seed=1)
    queue = BatchQueue(size=100, max_wait=0, settle=0)
    watcher = Watcher([root], PathFilter([root]), queue, poll=[root], poll_interval=0.2)
    watcher.start()
    try:
        assert watcher.polled == [root]
        time.sleep(0.5)  # the first snapshot taken
        added = noise_jpeg(root / "2024/06/added.jpg", seed=2)
        collect(queue, lambda b: str(added) in b.paths, timeout=20)
        time.sleep(0.05)
        noise_jpeg(kept, seed=3, size=(64, 48))  # changed in place
        collect(queue, lambda b: str(kept) in b.paths, timeout=20)
        renamed = root / "2024/06/renamed.jpg"
        os.rename(added, renamed)
        collect(queue, lambda b: Move(str(added), str(renamed)) in b.ops, timeout=20)
        renamed.unlink()
        collect(queue, lambda b: Delete(str(renamed)) in b.ops, timeout=20)
        os.rename(root / "2024/06", root / "2024/07")
        collect(queue, lambda b: Move(str(root / "2024/06"), str(root / "2024/07"), is_dir=True) in b.ops,
                timeout=20)
    finally:
        watcher.stop()


def test_a_real_daemon_polling_a_root_follows_a_photo_through_its_life(tmp_path: Path,
                                                                      tiny_checkpoint: Path) -> None:
    """``tagwatch run`` with ``poll = true``: a photo added is tagged, changed is encoded again,
    renamed and its folder moved keep its record (moves, not a deletion and a new photo), deleted
    is forgotten."""
    root = tmp_path / "nas"
    (root / "2024/06").mkdir(parents=True)
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[root])
    config.write_text(config.read_text().replace(
        f'watch = ["{root}"]', f'watch = [{{path = "{root}", poll = true}}]\npoll_interval = "0.3s"', 1))
    daemon = Daemon(config, tmp_path / "daemon.log").start()
    try:
        daemon.wait_log(f"watching {root}: polling every 0.3 s (poll = true)")
        photo = noise_jpeg(root / "2024/06/a.jpg", seed=71)
        wait_for(lambda: len(exif_keywords(photo)["iptc"]) == 3)
        assert status(config)["encoded"] == 1
        noise_jpeg(photo, seed=72)  # new pixels: its old keywords went with the old file
        wait_for(lambda: status(config)["encoded"] == 2 and len(exif_keywords(photo)["iptc"]) == 3)
        time.sleep(2)  # several polls: the daemon's own write seen and settled before the rename
        renamed = root / "2024/06/b.jpg"
        os.rename(photo, renamed)
        daemon.wait_log(f"moved {photo} -> {renamed}")
        os.rename(root / "2024/06", root / "2024/07")
        gone = root / "2024/07/b.jpg"
        daemon.wait_log(f"moved {renamed} -> {gone}")  # the folder's move carries its photo's record
        gone.unlink()
        daemon.wait_log(f"{gone}: deleted")
        assert status(config)["encoded"] == 2  # the moves encoded nothing
    finally:
        assert daemon.stop() == 0
