"""A photo moved into a folder made just before (``mkdir 2025/06 && mv IMG_1017.HEIC 2025/06/``: a
phone-sorting script, Nextcloud's "sort by month", a file manager) is a move, sidecar and all.

inotify reports the move's second half only from a folder it watches; a folder made a moment before
may not be watched yet, and the photo then turned up there as a new file while its old name was
reported gone: the daemon logged "deleted", left the old sidecar with no photo and made another.
Real watchdog observers, a real queue, and the real pipeline (SQLite, exiftool) for the apply side.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from watchdog.events import DirMovedEvent, FileCreatedEvent, FileMovedEvent

from conftest import Env, wait_for
from tagwatch import watcher as watcher_module
from tagwatch.outcomes import Status
from tagwatch.overrides import correct, load_overrides
from tagwatch.queue import Batch, BatchQueue, Delete, HalfMove, Move
from tagwatch.store import DELETED, DONE
from tagwatch.watcher import PathFilter, Watcher
from test_phone_sync import photo, shapes_env, subject

MOVES = 60  # a move into a new folder lost its second half 3 times in 30 in the report's run


def test_moves_into_folders_made_just_before_are_moves(tmp_path: Path) -> None:
    """Each photo is moved into a folder made just before; every one must come out as a move (the
    rename paired with its photo), none as a deletion."""
    root = tmp_path / "phone"
    root.mkdir()
    names = [root / f"IMG_{1000 + i}.HEIC" for i in range(MOVES)]
    for path in names:
        path.write_bytes(os.urandom(64))  # what is in them does not matter to the watcher
    queue = BatchQueue(size=1000, max_wait=0, settle=0)
    watcher = Watcher([root], PathFilter([root]), queue)
    watcher.start()
    seen = Batch()
    try:
        time.sleep(0.2)  # the observer's watches in place, as the daemon's are long before a move
        moved = {}
        for i, path in enumerate(names):
            folder = root / f"y{i}" / "m"
            folder.mkdir(parents=True)
            os.rename(path, folder / path.name)
            moved[str(path)] = str(folder / path.name)

        def told() -> bool:  # every photo's old name accounted for, by a move or a deletion
            batch = queue.get(timeout=0.5) or Batch()
            seen.ops.extend(batch.ops)
            said = {op.src for op in seen.ops if isinstance(op, Move)} | {
                op.path for op in seen.ops if isinstance(op, Delete)}
            return set(moved) <= said

        wait_for(told, timeout=60)
    finally:
        watcher.stop()
    deleted = [op.path for op in seen.ops if isinstance(op, Delete)]
    assert deleted == [], f"{len(deleted)} of {MOVES} moves taken for deletions: {deleted[:5]}"
    pairs = {op.src: op.dst for op in seen.ops if isinstance(op, Move)}
    assert pairs == moved


ACROSS = 20


def test_moves_between_two_watched_roots_are_half_moves_seen_before_the_photo_is_tagged(
        tmp_path: Path) -> None:
    """``watch = [Inbox, Archive]``: each root has its own inotify watch, so ``mv Inbox/IMG_1.jpg
    Archive/`` reports the photo moved out to nowhere and, from the other observer, one moved in from
    nowhere.  The watcher pairs them as a HalfMove (the store's side checks size and time), and the
    photo at its new name is handed out only after it: tagged first, it was recorded as a new photo
    and the move became a deletion.  A sidecar moved with it (a photo app) does not cut that short."""
    inbox, archive = tmp_path / "Inbox", tmp_path / "Archive"
    inbox.mkdir()
    (archive / "2026").mkdir(parents=True)
    names = [inbox / f"IMG_{1000 + i}.jpg" for i in range(ACROSS)]
    for path in names:
        path.write_bytes(os.urandom(64))
    (inbox / "IMG_1000.jpg.xmp").write_bytes(b"<x/>")
    queue = BatchQueue(size=1000, max_wait=0, settle=0)
    watcher = Watcher([inbox, archive], PathFilter([inbox, archive]), queue)
    watcher.start()
    batches: list[Batch] = []
    try:
        time.sleep(0.2)  # the observers' watches in place, as the daemon's are long before a move
        moved = {str(path): str(archive / "2026" / path.name) for path in names}
        for src, dst in moved.items():
            os.rename(src, dst)
        os.rename(inbox / "IMG_1000.jpg.xmp", archive / "2026" / "IMG_1000.jpg.xmp")

        def told() -> bool:  # every new name handed out to be looked at
            batches.append(queue.get(timeout=0.5) or Batch())
            return set(moved.values()) <= {path for batch in batches for path in batch.paths}

        wait_for(told, timeout=60)
    finally:
        watcher.stop()
    ops = [op for batch in batches for op in batch.ops]
    assert not [op for op in ops if isinstance(op, Delete)]
    assert {op.src: op.dst for op in ops if isinstance(op, HalfMove)} == moved
    for dst in moved.values():  # the move is applied before the photo at its new name is looked at
        first = next(i for i, batch in enumerate(batches) if dst in batch.paths)
        before = [op for batch in batches[:first + 1] for op in batch.ops]
        assert any(isinstance(op, HalfMove) and op.dst == dst for op in before), dst


BURST = 5000  # over watcher.ARRIVALS, moved in well under a second


def test_a_burst_of_moves_between_two_watched_roots_pairs_every_one(tmp_path: Path) -> None:
    """``mv Inbox/* Archive/`` of thousands of photos: every departure comes behind its arrival, and
    the watcher remembered only the latest 4,096 arrivals, so the first ones were forgotten before
    their departures came (1,400 of 6,000 taken for deletions, and tagged as new photos)."""
    inbox, archive = tmp_path / "Inbox", tmp_path / "Archive"
    inbox.mkdir()
    archive.mkdir()
    for i in range(BURST):
        (inbox / f"IMG_{i}.jpg").write_bytes(b"x")
    queue = BatchQueue(size=BURST, max_wait=0, settle=0)
    watcher = Watcher([inbox, archive], PathFilter([inbox, archive]), queue)
    watcher.start()
    ops: list[Move | Delete] = []
    try:
        time.sleep(0.2)
        for i in range(BURST):
            os.rename(inbox / f"IMG_{i}.jpg", archive / f"IMG_{i}.jpg")

        def told() -> bool:  # every departure said, as a move or a deletion
            ops.extend((queue.get(timeout=0.5) or Batch()).ops)
            return len(ops) >= BURST

        wait_for(told, timeout=60)
    finally:
        watcher.stop()
    assert sum(isinstance(op, Delete) for op in ops) == 0
    assert {(op.src, op.dst) for op in ops if isinstance(op, HalfMove)} == {
        (str(inbox / f"IMG_{i}.jpg"), str(archive / f"IMG_{i}.jpg")) for i in range(BURST)}


WAIT = 1.0


def test_a_departure_seen_before_its_arrival_still_pairs_and_one_with_none_is_a_deletion(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a busy machine the other root's observer can be more than watchdog's half second behind:
    the photo is said to leave Inbox for nowhere before it is said to arrive in Archive (a fifth of
    a 5,000-photo burst on two loaded cores).  Each was queued a deletion at once, and the photo
    tagged as new.  Now a departure waits watcher.DEPARTURE_WAIT for an arrival of its name; one that
    none claims is a deletion then, and a new photo saved under the old name meanwhile has its
    deletion queued before it.  The two observers' events, as watchdog gives them, in that order."""
    monkeypatch.setattr(watcher_module, "DEPARTURE_WAIT", WAIT)  # the test's wait, not the daemon's 5 s
    inbox, archive = tmp_path / "Inbox", tmp_path / "Archive"
    inbox.mkdir()
    archive.mkdir()
    queue = BatchQueue(size=1000, max_wait=0, settle=0)
    watcher = Watcher([inbox, archive], PathFilter([inbox, archive]), queue)  # its handler only
    handler = watcher._handler
    moved = (inbox / "IMG_1.jpg", archive / "IMG_1.jpg")
    lost, again = inbox / "IMG_2.jpg", inbox / "IMG_3.jpg"
    moved[1].write_bytes(b"x")
    started = time.monotonic()
    handler.dispatch(FileMovedEvent(str(moved[0]), ""))  # the leaving half first
    handler.dispatch(FileMovedEvent(str(lost), ""))  # moved out of every watched folder
    handler.dispatch(FileMovedEvent(str(again), ""))
    assert not queue.get(timeout=0.2).ops  # nothing said yet: each waits for its arrival
    handler.dispatch(FileMovedEvent("", str(moved[1])))  # the arriving half, late
    again.write_bytes(b"y")  # another photo saved under a name that left
    handler.dispatch(FileCreatedEvent(str(again)))
    first = queue.get(timeout=0.2).ops
    assert first == [HalfMove(str(moved[0]), str(moved[1])), Delete(str(again))]
    ops: list[Move | Delete] = []

    def told() -> bool:
        ops.extend((queue.get(timeout=0.2) or Batch()).ops)
        return bool(ops)

    wait_for(told, timeout=10)
    assert ops == [Delete(str(lost))]
    assert time.monotonic() - started >= WAIT
    handler.dispatch(FileMovedEvent(str(lost), ""))  # and at a stop, what still waits is a deletion
    watcher.stop()
    assert queue.get(timeout=0.2).ops == [Delete(str(lost))]


FOLDER = 40  # photos of a wedding, in the folder and a subfolder of it
FOLDER_WAIT = 3.0  # a departure's wait here: over a busy machine's lag between the two observers


def test_a_folder_moved_between_two_watched_roots_is_a_half_move_seen_before_its_photos(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``mv Inbox/2026-12-wedding Archive/`` while the daemon runs: each root's own inotify watch
    reports its half, the folder leaving Inbox for nowhere and one arriving in Archive from nowhere.
    Each half was taken alone: the folder's photos deletions (the folder, and again each folder
    watched inside it) and the photos in Archive new ones.  Now the folder's departure is paired with
    the arrival of its name (one HalfMove of the folder: the store's side moves the records under
    it), and its photos, the subfolder's too, are handed out only after it.  A folder moved out of
    every root is still the deletion of its photos, once its wait for an arrival is over."""
    monkeypatch.setattr(watcher_module, "DEPARTURE_WAIT", FOLDER_WAIT)  # not the daemon's 5 s
    inbox, archive, elsewhere = tmp_path / "Inbox", tmp_path / "Archive", tmp_path / "elsewhere"
    wedding, trip = inbox / "2026-12-wedding", inbox / "2026-11-trip"
    for folder in (wedding / "ceremony", trip, archive, elsewhere):
        folder.mkdir(parents=True)
    for i in range(FOLDER):
        (wedding / ("ceremony" if i % 4 == 0 else "") / f"IMG_{i}.jpg").write_bytes(os.urandom(64))
    (trip / "IMG_1.jpg").write_bytes(os.urandom(64))
    queue = BatchQueue(size=1000, max_wait=0, settle=0)
    watcher = Watcher([inbox, archive], PathFilter([inbox, archive]), queue)
    watcher.start()
    batches: list[Batch] = []
    moved = archive / wedding.name
    try:
        time.sleep(0.2)  # the observers' watches in place, as the daemon's are long before a move
        os.rename(wedding, moved)
        os.rename(trip, elsewhere / trip.name)  # out of every watched folder: the trash
        photos = {str(path) for path in moved.rglob("*.jpg")}
        assert len(photos) == FOLDER

        def told() -> bool:  # every photo handed out, and the trip's departure said
            batches.append(queue.get(timeout=0.5) or Batch())
            ops = [op for batch in batches for op in batch.ops]
            return photos <= {path for batch in batches for path in batch.paths} and (
                Delete(str(trip), is_dir=True) in ops)

        wait_for(told, timeout=60)
    finally:
        watcher.stop()
    ops = [op for batch in batches for op in batch.ops]
    assert ops.count(HalfMove(str(wedding), str(moved), is_dir=True)) == 1, ops
    assert [op for op in ops if isinstance(op, Delete)] == [Delete(str(trip), is_dir=True)], ops
    first = next(i for i, batch in enumerate(batches) if photos & set(batch.paths))
    assert HalfMove(str(wedding), str(moved), is_dir=True) in [
        op for batch in batches[:first + 1] for op in batch.ops]  # the move before any of its photos


def test_a_folder_departure_seen_before_its_arrival_still_pairs_and_one_with_none_is_a_deletion(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The two observers' events for folders, as watchdog gives them, in the order a busy machine
    can: the folder leaving Inbox before it is said to arrive in Archive.  The departure waits for an
    arrival of its name and is the move to it, queued before the arrival's photos; one that none
    claims (a folder moved to the trash) is the deletion of the folder's photos after the wait, and
    the departures watchdog adds for the folders watched inside a folder that left are no deletions
    of their own.  In one root (no other root to come from) a folder moved out is a deletion at once."""
    monkeypatch.setattr(watcher_module, "DEPARTURE_WAIT", FOLDER_WAIT)
    inbox, archive = tmp_path / "Inbox", tmp_path / "Archive"
    inbox.mkdir()
    (archive / "wedding").mkdir(parents=True)
    (archive / "wedding" / "IMG_1.jpg").write_bytes(b"x")
    queue = BatchQueue(size=1000, max_wait=0, settle=0)
    watcher = Watcher([inbox, archive], PathFilter([inbox, archive]), queue)  # its handler only
    handler = watcher._handler
    started = time.monotonic()
    handler.dispatch(DirMovedEvent(str(inbox / "wedding"), ""))  # the leaving half first
    handler.dispatch(DirMovedEvent(str(inbox / "wedding" / "ceremony"), "", is_synthetic=True))
    handler.dispatch(DirMovedEvent(str(inbox / "trip"), ""))  # moved out of every watched folder
    assert not queue.get(timeout=0.2)  # nothing said yet: each waits for its arrival
    handler.dispatch(DirMovedEvent("", str(archive / "wedding")))  # the arriving half, late
    first = queue.get(timeout=0.2)
    assert first.ops == [HalfMove(str(inbox / "wedding"), str(archive / "wedding"), is_dir=True)]
    ops: list[Move | Delete] = []

    def told() -> bool:
        ops.extend((queue.get(timeout=0.2) or Batch()).ops)
        return bool(ops)

    wait_for(told, timeout=10)
    assert ops == [Delete(str(inbox / "trip"), is_dir=True)]
    assert time.monotonic() - started >= FOLDER_WAIT
    alone = Watcher([inbox], PathFilter([inbox]), queue)._handler
    alone.dispatch(DirMovedEvent(str(inbox / "trip"), ""))
    assert queue.get(timeout=0.2).ops == [Delete(str(inbox / "trip"), is_dir=True)]


def sort_one_replace_the_other(env: Env, tmp_path: Path, moving: Path, leaving: Path) -> tuple[Path, Path]:
    """``moving`` sorted into a folder made just before, ``leaving`` deleted and another picture put
    there under its name; the half-seen moves the watcher reports for them applied.  Returns where
    ``moving`` is now and the other picture."""
    there = tmp_path / "phone-dad" / "2025" / "06" / moving.name
    there.parent.mkdir(parents=True)
    os.rename(moving, there)
    stranger = photo(there.parent / leaving.name, "blue", "circle", 4242)
    leaving.unlink()
    env.pipeline.apply([HalfMove(str(moving), str(there)), HalfMove(str(leaving), str(stranger))])
    return there, stranger


def test_a_half_seen_move_takes_the_sidecar_along_and_a_stranger_is_no_move(tmp_path: Path) -> None:
    """The move as the watcher now reports it, applied: the record, ledger and sidecar follow the
    photo (one "moved" line, nothing tagged again).  A file that only has the name of a photo gone
    (another picture) is no move: the old one is deleted, its keywords out of its own sidecar."""
    env = shapes_env(tmp_path)
    try:
        moving = photo(tmp_path / "phone-mom" / "IMG_1017.HEIC", "green", "square", 1017)
        leaving = photo(tmp_path / "phone-mom" / "IMG_1018.HEIC", "red", "star", 1018)
        assert env.run(moving, leaving) == {"IMG_1017.HEIC": Status.TAGGED, "IMG_1018.HEIC": Status.TAGGED}
        there, stranger = sort_one_replace_the_other(env, tmp_path, moving, leaving)
        assert not Path(f"{moving}.xmp").exists() and subject(Path(f"{there}.xmp")) == {"green", "square"}
        assert not Path(f"{leaving}.xmp").exists()  # its keywords went with it: tagwatch made the file
        assert env.run(there, stranger) == {"IMG_1017.HEIC": Status.UNCHANGED, "IMG_1018.HEIC": Status.TAGGED}
        assert subject(Path(f"{stranger}.xmp")) == {"blue", "circle"}
    finally:
        env.close()


def test_a_correction_follows_a_half_seen_move_only_to_the_photo_it_was(tmp_path: Path) -> None:
    """A half-seen move names every new file of the photo's name; the rule of a photo corrected on
    the review page followed it to that name even where the photo was gone and the file there was
    another picture: the stranger got the deleted photo's correction (Oma added, its own tag kept
    out).  The rule follows the photo that moved, and a photo gone takes its rule nowhere."""
    env = shapes_env(tmp_path)
    root = tmp_path / "phone-mom"
    try:
        moving = photo(root / "IMG_1017.HEIC", "green", "square", 1017)
        leaving = photo(root / "IMG_1018.HEIC", "red", "star", 1018)
        source = tmp_path / "overrides.toml"
        text = correct("# ours\n", source, [tmp_path], str(moving), "Opa", "add")
        source.write_text(correct(text, source, [tmp_path], str(leaving), "Oma", "add"), encoding="utf-8")
        env.pipeline.use_overrides(load_overrides(source, [tmp_path]))
        env.run(moving, leaving)
        assert "Oma" in subject(Path(f"{leaving}.xmp"))
        there, stranger = sort_one_replace_the_other(env, tmp_path, moving, leaving)
        rules = source.read_text(encoding="utf-8")
        assert f'"{there}"' in rules and f'"{moving}"' not in rules  # the photo's rule went with it
        assert f'"{stranger}"' not in rules  # the stranger is not the photo corrected
        env.run(stranger)
        assert subject(Path(f"{stranger}.xmp")) == {"blue", "circle"}
    finally:
        env.close()


def test_a_folders_half_move_takes_its_records_only_to_the_folder_it_was(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A folder's half-seen move, as the watcher now reports a folder moved to another watched
    root, applied: the records under it move to the new folder (one "moved" line for the folder;
    its photos are unchanged there, nothing tagged again), and one of its photos gone on the way is
    a deletion at its new path.  A folder that only has the name of one that left (another picture
    in it, newer) is no move: the photos recorded under the old folder are deleted, and the
    stranger is a new photo."""
    env = shapes_env(tmp_path)
    inbox, archive = tmp_path / "Inbox", tmp_path / "Archive"
    try:
        kept = photo(inbox / "wedding" / "IMG_1.HEIC", "green", "square", 1)
        lost = photo(inbox / "wedding" / "IMG_2.HEIC", "red", "star", 2)
        left = photo(inbox / "trip" / "IMG_3.HEIC", "blue", "circle", 3)
        assert set(env.run(kept, lost, left).values()) == {Status.TAGGED}
        keywords = subject(Path(f"{kept}.xmp"))
        wedding = archive / "wedding"
        archive.mkdir()
        os.rename(kept.parent, wedding)
        (wedding / lost.name).unlink()  # gone on the way; its sidecar is left
        stranger = photo(archive / "trip" / left.name, "yellow", "circle", 33)
        shutil.rmtree(left.parent)
        with caplog.at_level("INFO", logger="tagwatch"):
            env.pipeline.apply([HalfMove(str(kept.parent), str(wedding), is_dir=True),
                                HalfMove(str(left.parent), str(stranger.parent), is_dir=True)])
        said = [r.getMessage() for r in caplog.records]
        assert [line for line in said if line.startswith("moved ")] == [
            f"moved {kept.parent} -> {wedding} (a folder: its 2 photos' records, keywords and corrections "
            "with it)"]
        deleted = [line.split(";")[0] for line in said if "deleted" in line]
        assert deleted == [f"{wedding / lost.name}: deleted",
                           f"deleted {left.parent} (a folder: its 1 photo's records)"]
        assert not Path(f"{wedding / lost.name}.xmp").exists()  # tagwatch made it, only its keywords in it
        files = env.store.files([str(kept), str(wedding / kept.name), str(wedding / lost.name), str(left),
                                 str(stranger)])
        assert {path: row.state for path, row in files.items()} == {
            str(wedding / kept.name): DONE, str(wedding / lost.name): DELETED, str(left): DELETED}
        assert subject(Path(f"{wedding / kept.name}.xmp")) == keywords
        assert env.run(wedding / kept.name, stranger) == {"IMG_1.HEIC": Status.UNCHANGED,
                                                          "IMG_3.HEIC": Status.TAGGED}
    finally:
        env.close()


PAIRS = 8  # two phones' photos of one name each, sorted into two new folders back to back


def test_two_photos_of_one_name_sorted_into_two_new_folders_are_both_moves(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Phones reuse names: ``phoneA/IMG_0001.HEIC`` and ``phoneB/IMG_0001.HEIC`` moved into
    ``2024/05`` and ``2025/05`` (each made just before) in one burst.  The watcher remembered one
    path per name, so the first half move was paired with the other photo and both were taken for
    deletions: logged deleted, their sidecars stripped, both tagged again as new (review #10)."""
    env = shapes_env(tmp_path)
    root = tmp_path / "phones"
    colours = ["red", "green", "blue", "yellow", "purple", "orange"]
    shots = {}
    for i in range(PAIRS):
        for phone, shape in (("phoneA", "star"), ("phoneB", "circle")):
            path = root / phone / f"IMG_{i:04d}.HEIC"
            shots[path] = photo(path, colours[i % len(colours)], shape, 7000 + 2 * i + len(phone))
    queue = BatchQueue(size=1000, max_wait=0, settle=0)
    watcher = Watcher([root], PathFilter([root]), queue)
    try:
        assert set(env.run(*shots).values()) == {Status.TAGGED}
        keywords = {path: subject(Path(f"{path}.xmp")) for path in shots}
        watcher.start()
        time.sleep(0.2)  # the observer's watches in place, as the daemon's are long before a move
        moved = {}
        for i in range(PAIRS):
            for phone, year in (("phoneA", "2024"), ("phoneB", "2025")):
                folder = root / "sorted" / f"{i}" / year / "05"
                folder.mkdir(parents=True)
                src = root / phone / f"IMG_{i:04d}.HEIC"
                os.rename(src, folder / src.name)
                moved[str(src)] = str(folder / src.name)
        seen = Batch()

        def told() -> bool:  # every photo's old name accounted for, by a move or a deletion
            batch = queue.get(timeout=0.5) or Batch()
            seen.ops.extend(batch.ops)
            said = {op.src for op in seen.ops if isinstance(op, Move)} | {
                op.path for op in seen.ops if isinstance(op, Delete)}
            return set(moved) <= said

        wait_for(told, timeout=60)
        with caplog.at_level("INFO", logger="tagwatch"):
            env.pipeline.apply(seen.ops)
        deleted = [r.getMessage() for r in caplog.records if ": deleted" in r.getMessage()]
        assert deleted == [], f"{len(deleted)} of {2 * PAIRS} moves taken for deletions: {deleted[:4]}"
        for src, dst in moved.items():
            row = env.store.file(dst)
            assert row is not None and env.store.file(src) is None, (src, dst)
            assert subject(Path(f"{dst}.xmp")) == keywords[Path(src)]  # the sidecar went along
            assert not Path(f"{src}.xmp").exists()
        assert set(env.run(*map(Path, moved.values())).values()) == {Status.UNCHANGED}
    finally:
        watcher.stop()
        env.close()
