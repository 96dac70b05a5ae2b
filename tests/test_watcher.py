"""What gets noticed: the path filter, the reconcile scan, and a real watchdog observer's events."""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
from watchdog.observers import Observer

from conftest import collect, drain, noise_jpeg, wait_for
from tagwatch.metadata import TEMP_MARKER
from tagwatch.queue import BatchQueue, Delete, Move
from tagwatch.store import DONE, FAILED, Store
from tagwatch.watcher import PathFilter, Watcher, reconcile


def test_filter_skips_hidden_excluded_and_non_jpeg(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    filt = PathFilter([root], ["@eaDir", "*.tmp.jpg", "archive/*"])
    for wanted in ("a.jpg", "2024/b.JPEG", "c.mpo", "d.jpeg"):
        assert filt.wanted(f"{root}/{wanted}")
    assert not filt.wanted(f"{root}/notes.txt")
    assert not filt.wanted(f"{root}/.hidden.jpg")
    assert not filt.wanted(f"{root}/.cache/a.jpg")
    assert not filt.wanted(f"{root}/.a.jpg.12-1{TEMP_MARKER}")
    assert not filt.wanted(f"{root}/x/@eaDir/a.jpg")  # a name pattern matches at any depth
    assert not filt.wanted(f"{root}/y/a.tmp.jpg")
    assert not filt.wanted(f"{root}/archive/2001/a.jpg")  # a relative pattern covers the folder
    assert filt.wanted(f"{root}/y/archive/a.jpg")  # ... but only relative to the root
    assert not filt.wanted(f"{tmp_path}/elsewhere/a.jpg")
    assert not filt.wanted(f"{root}-sibling/a.jpg")


def test_reconcile_queues_what_changed_and_reports_what_vanished(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    same = noise_jpeg(root / "same.jpg", seed=1)
    changed = noise_jpeg(root / "changed.jpg", seed=2)
    new = noise_jpeg(root / "sub" / "new.jpg", seed=3)
    failed = noise_jpeg(root / "failed.jpg", seed=4)
    noise_jpeg(root / ".hidden" / "skip.jpg", seed=5)
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = root / f".same.jpg.{dead.pid}-1{TEMP_MARKER}"
    stale.write_bytes(b"left by a killed daemon")
    in_flight = root / f".changed.jpg.{os.getpid()}-7{TEMP_MARKER}"
    in_flight.write_bytes(b"a write of this process, in progress")
    store = Store(tmp_path / "db" / "tw.db")
    for path, state in ((same, DONE), (changed, DONE), (failed, FAILED)):
        st = path.stat()
        store.record_file(str(path), key=b"k" * 16, size=st.st_size, mtime_ns=st.st_mtime_ns, state=state)
    store.record_file(str(root / "gone.jpg"), key=b"g" * 16, size=1, mtime_ns=1, state=DONE)
    os.utime(changed, ns=(time.time_ns(), changed.stat().st_mtime_ns + 10**9))
    queue = BatchQueue(size=100, max_wait=0, settle=0)
    report = reconcile([root], PathFilter([root]), store, queue, clean_temp=True)
    batch = drain(queue)
    assert sorted(batch.paths) == sorted([str(changed), str(new)])
    assert batch.ops == [Delete(str(root / "gone.jpg"))]
    assert (report.seen, report.queued, report.gone) == (4, 2, 1)
    assert not stale.exists() and in_flight.exists()
    # A watched folder inside another ([watch] holds both): walked once, its photos counted once
    report = reconcile([root, root / "sub"], PathFilter([root, root / "sub"]), store, queue)
    assert (report.seen, report.queued) == (4, 2)
    store.close()


def test_an_empty_mount_point_where_photos_were_is_left_out_of_the_scan_not_gone(tmp_path: Path) -> None:
    """A watched drive unplugged, its mount point left empty: its photos' records are kept, and the
    scan names the folder left out.  It was not: the scan counted as one that compared every watched
    photo, and a restored database's note ended (Store.restore_checked) with the drive's photos
    never looked at."""
    here, drive = tmp_path / "photos", tmp_path / "mnt" / "usb"
    photo = noise_jpeg(here / "a.jpg", seed=7)
    drive.mkdir(parents=True)
    store = Store(tmp_path / "db" / "tw.db")
    st = photo.stat()
    store.record_file(str(photo), key=b"a" * 16, size=st.st_size, mtime_ns=st.st_mtime_ns, state=DONE)
    store.record_file(str(drive / "b.jpg"), key=b"b" * 16, size=1, mtime_ns=1, state=DONE)
    queue = BatchQueue(size=100, max_wait=0, settle=0)
    report = reconcile([here, drive], PathFilter([here, drive]), store, queue)
    assert drain(queue).ops == []  # the drive's photo is not taken for gone
    assert (report.seen, report.gone, report.left_out) == (1, 0, [str(drive)])
    store.close()


def test_a_file_moved_while_no_one_watched_is_queued_as_a_rename(tmp_path: Path) -> None:
    """A recorded file gone and a new one with its name, size and time: a rename, not a new photo
    and a deletion.  Two recorded files with that name, size and time: which moved is unknown."""
    root = tmp_path / "photos"
    moved = noise_jpeg(root / "new" / "a.jpg", seed=5)
    twin = noise_jpeg(root / "new" / "b.jpg", seed=6)
    st, tw = moved.stat(), twin.stat()
    store = Store(tmp_path / "db" / "tw.db")
    store.record_file(str(root / "old" / "a.jpg"), key=b"a" * 16, size=st.st_size, mtime_ns=st.st_mtime_ns,
                      state=DONE)
    for folder in ("x", "y"):  # b.jpg was in two folders, both gone
        store.record_file(str(root / folder / "b.jpg"), key=b"b" * 16, size=tw.st_size,
                          mtime_ns=tw.st_mtime_ns, state=DONE)
    queue = BatchQueue(size=100, max_wait=0, settle=0)
    report = reconcile([root], PathFilter([root]), store, queue)
    batch = drain(queue)
    assert Move(str(root / "old" / "a.jpg"), str(moved)) in batch.ops
    assert sorted(batch.paths) == sorted([str(moved), str(twin)])
    assert sorted(op.path for op in batch.ops if isinstance(op, Delete)) == [
        str(root / "x" / "b.jpg"), str(root / "y" / "b.jpg")]
    assert (report.seen, report.queued, report.gone, report.moved) == (2, 1, 2, 1)
    store.close()


def test_a_photo_renamed_while_no_one_watched_is_paired_by_its_picture_before_its_new_name_is_queued(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Renamed (another name, so not a move by name, size and time), a photo is still a deletion and
    a new photo, but ``carry`` (the daemon's move_sidecar) is asked to take its sidecar along: for
    each gone photo whose content key exactly one new file has, whichever the walk meets first (the
    new name in a folder walked before or after the old one's), and before the new name is queued,
    so that it is not tagged and given a sidecar of its own first.  A new file of a gone photo's
    size but another picture is not paired; a picture at two new names is not known to be either's
    (said at INFO); a gone photo with no new file is only deleted."""
    from tagwatch.formats import content_key

    root = tmp_path / "photos"
    store = Store(tmp_path / "db" / "tw.db")

    def recorded(old: Path, new: Path, seed: int) -> None:
        """A photo recorded at ``old`` and found at ``new`` (renamed, or copied where ``old`` stays)."""
        noise_jpeg(new, seed=seed)
        st = new.stat()
        store.record_file(str(old), key=content_key(new.read_bytes()), size=st.st_size,
                          mtime_ns=st.st_mtime_ns - 10**9, state=DONE)

    recorded(root / "m" / "IMG_1.jpg", root / "a" / "beach.jpg", seed=1)  # its new folder walked first
    recorded(root / "a" / "IMG_2.jpg", root / "z" / "sea.jpg", seed=2)  # or after
    recorded(root / "a" / "IMG_3.jpg", root / "a" / "one.jpg", seed=3)  # two new copies
    (root / "a" / "two.jpg").write_bytes((root / "a" / "one.jpg").read_bytes())
    size = noise_jpeg(root / "a" / "IMG_4.jpg", seed=4).stat().st_size  # another picture, a gone one's size
    store.record_file(str(root / "a" / "IMG_5.jpg"), key=b"5" * 16, size=size, mtime_ns=1, state=DONE)
    store.record_file(str(root / "a" / "IMG_6.jpg"), key=b"6" * 16, size=1, mtime_ns=1, state=DONE)
    events: list[tuple[str, ...]] = []

    class Recording(BatchQueue):
        def put(self, path: str, delay: float | None = None, force: bool = False) -> None:
            events.append(("put", path))
            super().put(path, delay, force)

    def carry(old: str, new: str) -> str | None:
        events.append(("carry", old, new))
        return "a sidecar there already" if new.endswith("sea.jpg") else None

    queue = Recording(size=100, max_wait=0, settle=0)
    with caplog.at_level(logging.INFO, "tagwatch.watcher"):
        report = reconcile([root], PathFilter([root]), store, queue, carry=carry)
    pairs = {(str(root / "m" / "IMG_1.jpg"), str(root / "a" / "beach.jpg")),
             (str(root / "a" / "IMG_2.jpg"), str(root / "z" / "sea.jpg"))}
    assert {e[1:] for e in events if e[0] == "carry"} == pairs
    for old, new in pairs:
        assert events.index(("carry", old, new)) < events.index(("put", new))
    batch = drain(queue)
    assert sorted(batch.paths) == sorted(str(root / p) for p in ("a/beach.jpg", "z/sea.jpg", "a/one.jpg",
                                                                 "a/two.jpg", "a/IMG_4.jpg"))
    assert sorted(op.path for op in batch.ops if isinstance(op, Delete)) == sorted(
        str(root / p) for p in ("m/IMG_1.jpg", "a/IMG_2.jpg", "a/IMG_3.jpg", "a/IMG_5.jpg", "a/IMG_6.jpg"))
    assert (report.seen, report.queued, report.gone, report.moved) == (5, 5, 5, 0)
    assert (f"{root / 'a' / 'IMG_3.jpg'}: gone, and its picture is at {root / 'a' / 'one.jpg'}, "
            f"{root / 'a' / 'two.jpg'}: which one it was renamed to is not known") in caplog.text
    assert (f"{root / 'a' / 'IMG_2.jpg'}: renamed to {root / 'z' / 'sea.jpg'} while no daemon watched; "
            "its sidecar stays: a sidecar there already") in caplog.text
    # without ``carry`` (the CLI's tests, a caller with no writer) nothing is read or held back
    events.clear()
    reconcile([root], PathFilter([root]), store, queue)
    assert [e[0] for e in events] == ["put"] * 5
    store.close()


def test_an_interrupted_scan_stops_walking_and_calls_nothing_gone(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    noise_jpeg(root / "a.jpg", seed=1)
    store = Store(tmp_path / "db" / "tw.db")
    store.record_file(str(root / "elsewhere.jpg"), key=b"g" * 16, size=1, mtime_ns=1, state=DONE)
    queue = BatchQueue(size=100, max_wait=0, settle=0)
    stop = threading.Event()
    stop.set()  # SIGTERM arrived
    report = reconcile([root], PathFilter([root]), store, queue, stop=stop)
    assert (report.seen, report.queued, report.gone) == (0, 0, 0)
    assert len(queue) == 0 and not drain(queue)
    store.close()


def test_a_real_observer_turns_events_into_queue_entries(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    (root / "album").mkdir(parents=True)
    queue = BatchQueue(size=100, max_wait=0, settle=0)
    watcher = Watcher([root], PathFilter([root]), queue)
    watcher.start()
    try:
        time.sleep(0.2)
        photo = noise_jpeg(root / "album" / "a.jpg", seed=1)
        wait_for(lambda: str(photo) in queue.get(timeout=0.5).paths, timeout=10)
        renamed = root / "album" / "b.jpg"
        os.rename(photo, renamed)
        os.rename(root / "album", root / "trip")
        (root / "notes.txt").write_text("ignored")
        hidden = root / ".a.jpg.partial"
        noise_jpeg(root / "x.jpg", seed=2).rename(hidden)  # moved out of sight: gone for us
        hidden.rename(root / "final.jpg")  # an atomic save into place: a new photo
        os.unlink(root / "trip" / "b.jpg")
        ops = [Move(str(photo), str(renamed)), Move(str(root / "album"), str(root / "trip"), is_dir=True),
               Delete(str(root / "x.jpg")), Delete(str(root / "trip" / "b.jpg"))]
        final = str(root / "final.jpg")
        batch = collect(queue, lambda b: all(op in b.ops for op in ops) and final in b.paths)
        assert not [p for p in batch.paths if p.endswith(("notes.txt", ".partial"))]
    finally:
        watcher.stop()


def test_a_folder_moved_in_from_outside_is_walked(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    outside = tmp_path / "card" / "DCIM"
    photos = [noise_jpeg(outside / f"{i}.jpg", seed=i) for i in range(3)]
    queue = BatchQueue(size=100, max_wait=0, settle=0)
    watcher = Watcher([root], PathFilter([root]), queue)
    watcher.start()
    try:
        time.sleep(0.2)
        os.rename(outside, root / "DCIM")  # a whole folder moved in from outside the watched root
        expected = {str(root / "DCIM" / p.name) for p in photos}
        seen: set[str] = set()
        wait_for(lambda: seen.update(queue.get(timeout=0.5).paths) or expected <= seen, timeout=10)
    finally:
        watcher.stop()


def test_a_photo_moved_in_from_outside_is_queued_at_once_and_one_moved_out_is_gone(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    arriving = noise_jpeg(tmp_path / "downloads" / "a.jpg", seed=1)
    leaving = noise_jpeg(root / "b.jpg", seed=2)
    queue = BatchQueue(size=100, max_wait=0, settle=60)  # a file still being written waits a minute
    watcher = Watcher([root], PathFilter([root]), queue)
    watcher.start()
    try:
        time.sleep(0.2)
        os.rename(arriving, root / "a.jpg")  # a file manager's move: the photo is complete on arrival
        os.rename(leaving, tmp_path / "downloads" / "b.jpg")
        # both long before the minute a new file's settle time asks
        collect(queue, lambda b: str(root / "a.jpg") in b.paths and Delete(str(leaving)) in b.ops)
    finally:
        watcher.stop()


def test_where_watchdog_picks_another_observer_than_inotify_the_watcher_uses_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from watchdog.observers.polling import PollingObserver

    import tagwatch.watcher as watcher_module

    monkeypatch.setattr(watcher_module, "Observer", PollingObserver)  # as on macOS (FSEvents) or BSD
    assert type(watcher_module._observer()) is PollingObserver  # not inotify's, which is Linux's alone


class _OutOfWatches(Observer):  # type: ignore[misc, valid-type]
    """inotify refusing a watch, as on a tree larger than fs.inotify.max_user_watches; lowering that
    machine-wide limit in a test would break every other program watching files."""

    def schedule(self, *args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "inotify watch limit reached")


def test_a_root_inotify_cannot_watch_is_polled_and_the_fix_is_logged(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    queue = BatchQueue(size=100, max_wait=0, settle=0)
    watcher = Watcher([root], PathFilter([root]), queue, poll_interval=0.2, observer=_OutOfWatches)
    with caplog.at_level(logging.ERROR, logger="tagwatch.watcher"):
        watcher.start()
    try:
        assert watcher.polled == [root]
        assert "fs.inotify.max_user_watches=" in caplog.text and str(root) in caplog.text
        time.sleep(0.5)
        photo = noise_jpeg(root / "a.jpg", seed=1)
        seen: set[str] = set()
        wait_for(lambda: seen.update(queue.get(timeout=0.5).paths) or str(photo) in seen, timeout=10)
    finally:
        watcher.stop()


def test_photos_only_read_wake_the_watcher_for_nothing(tmp_path: Path) -> None:
    """A photo app browsing the folder (or our own decoder and exiftool reading) opens and closes
    files without writing: the observer is not even told, while a real change still arrives."""
    root = tmp_path / "photos"
    root.mkdir()
    photos = [noise_jpeg(root / f"{i}.jpg", seed=i) for i in range(3)]
    queue = BatchQueue(size=100, max_wait=0, settle=0)
    watcher = Watcher([root], PathFilter([root]), queue)
    seen: list[str] = []
    dispatch = watcher._handler.dispatch
    watcher._handler.dispatch = lambda event: (seen.append(type(event).__name__), dispatch(event))  # type: ignore[method-assign]
    watcher.start()
    try:
        time.sleep(0.2)
        for _ in range(5):
            for photo in photos:
                photo.read_bytes()
        time.sleep(0.5)
        assert seen == []
        noise_jpeg(root / "new.jpg", seed=9)
        wait_for(lambda: "FileClosedEvent" in seen, timeout=10)
        assert str(root / "new.jpg") in drain(queue).paths
    finally:
        watcher.stop()
