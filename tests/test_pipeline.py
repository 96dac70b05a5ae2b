"""The worker's path from file to keywords, in-process: real store, real exiftool, real tiny CLIP."""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import TAGS, TINY_CONFIG, Env, exif_keywords, noise_jpeg, read_only_folder
from tagwatch.config import ModelConfig, TaggingConfig
from tagwatch.encoder import LazyModel
from tagwatch.formats import content_key
from tagwatch.metadata import FileChanged
from tagwatch.outcomes import Status
from tagwatch.pipeline import Pipeline
from tagwatch.queue import TAIL_BATCH, BatchQueue, Delete, Move, backlog_batch, backlog_take
from tagwatch.vocabulary import parse_tag_list
from tagwatch.writeback import WriteJob, write_file
from test_imaging import camera_raw_bytes, red_picture

ALL_TAGS = TaggingConfig(threshold=-1.0, top_k=len(TAGS))


@pytest.fixture
def env(tmp_path: Path, tiny_checkpoint: Path) -> Env:
    env = Env(tmp_path, tiny_checkpoint, TaggingConfig(threshold=-1.0, top_k=3))
    yield env
    env.close()


def photos(folder: Path, count: int, first_seed: int = 0) -> list[Path]:
    return [noise_jpeg(folder / f"p{i}.jpg", seed=first_seed + i) for i in range(count)]


def test_photos_get_keywords_and_are_encoded_once(env: Env, tmp_path: Path) -> None:
    files = photos(tmp_path / "in", 4)
    assert env.run(*files) == {f.name: Status.TAGGED for f in files}
    assert env.encoded() == 4
    for f in files:
        found = exif_keywords(f)
        assert len(found["iptc"]) == 3 and found["iptc"] == found["xmp"]
        assert set(found["iptc"]) <= set(TAGS)
        row = env.store.file(str(f))
        assert list(row.tags) == found["iptc"]
        assert sorted(env.store.ledger(row.id)) == sorted(found["iptc"])  # all ours
    assert env.run(*files) == {f.name: Status.UNCHANGED for f in files}
    assert env.encoded() == 4


def test_rename_copy_and_metadata_edit_never_re_encode(env: Env, tmp_path: Path) -> None:
    a, b = photos(tmp_path / "in", 2)
    env.run(a, b)
    keywords = exif_keywords(a)["iptc"]
    moved = tmp_path / "in" / "sub" / "moved.jpg"
    moved.parent.mkdir()
    os.rename(a, moved)
    assert env.pipeline.apply([Move(str(a), str(moved))]) == []  # the store knew it: row follows
    assert env.run(moved) == {"moved.jpg": Status.UNCHANGED}
    copy = tmp_path / "elsewhere" / "copy.jpg"
    copy.parent.mkdir()
    shutil.copy2(moved, copy)  # unknown path, known pixels
    assert env.run(copy) == {"copy.jpg": Status.TAGGED}
    subprocess.run(["exiftool", "-q", "-overwrite_original", "-XMP-dc:Title=edited", "-EXIF:Artist=Me",
                    str(b)], check=True)
    assert env.run(b) == {"p1.jpg": Status.TAGGED}  # re-checked, found by content key
    assert env.encoded() == 2
    assert exif_keywords(copy)["iptc"] == keywords


def test_new_pixels_are_encoded_again(env: Env, tmp_path: Path) -> None:
    (photo,) = photos(tmp_path / "in", 1)
    env.run(photo)
    noise_jpeg(photo, seed=99)
    assert env.run(photo) == {"p0.jpg": Status.TAGGED}
    assert env.encoded() == 2


def test_duplicate_pixels_in_one_batch_are_encoded_once(env: Env, tmp_path: Path) -> None:
    (photo,) = photos(tmp_path / "in", 1)
    twin = tmp_path / "in" / "twin.jpg"
    shutil.copyfile(photo, twin)
    assert env.run(photo, twin) == {"p0.jpg": Status.TAGGED, "twin.jpg": Status.TAGGED}
    assert env.encoded() == 1


def test_tag_list_edit_rescored_without_image_encoding(tmp_path: Path, tiny_checkpoint: Path) -> None:
    env = Env(tmp_path, tiny_checkpoint, ALL_TAGS)
    try:
        files = photos(tmp_path / "in", 5)
        env.run(*files)
        assert env.encoded() == 5
        # an edit that only reorders the list changes no file's tag set: nothing is rewritten
        stamps = {f: f.stat().st_mtime_ns for f in files}
        assert env.use(list(reversed(TAGS))) == 0  # every prompt vector is cached
        assert env.pipeline.retag() == (5, 0)
        assert {f: f.stat().st_mtime_ns for f in files} == stamps
        # a new tag every photo gets: all rewritten, one new prompt encoded, no image encoded
        assert env.use([*TAGS, "harbour"], TaggingConfig(threshold=-1.0, top_k=10)) == 1
        assert env.pipeline.retag() == (5, 5)
        assert env.encoded() == 5
        for f in files:
            assert "harbour" in exif_keywords(f)["iptc"]
    finally:
        env.close()


def _sqlite_fault(message: str, code: int) -> sqlite3.OperationalError:
    """SQLite's error as its module raises it, with its result code (5 BUSY, 10 IOERR)."""
    exc = sqlite3.OperationalError(message)
    exc.sqlite_errorcode = code  # type: ignore[attr-defined]
    return exc


def test_a_database_fault_of_one_photos_rows_defers_that_photo_and_the_re_score_goes_on(
        env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An I/O error of one damaged database page, which only one photo's rows touch: the re-score
    stopped at that photo at every try (any passing database fault stopped it, as a backup's lock
    does), and the photos after it kept the old list's keywords for as long as the page was bad.
    Only another program's lock stops it now; this photo waits, as a photo of a batch does, and the
    others are re-scored."""
    files = photos(tmp_path / "in", 4)
    env.run(*files)
    damaged = str(files[1])
    finish = env.pipeline.writeback.finish

    def failing(job, rules):  # type: ignore[no-untyped-def]
        if job.path == damaged:
            raise _sqlite_fault("disk I/O error", 10)
        return finish(job, rules)

    monkeypatch.setattr(env.pipeline.writeback, "finish", failing)
    env.use([*TAGS, "harbour"], TaggingConfig(threshold=-1.0, top_k=10))
    assert env.pipeline.retag() == (4, 3)
    assert [(o.path, o.status, o.error) for o in env.pipeline.take_deferred()] == [
        (damaged, Status.WAIT, "database: disk I/O error")]
    assert ["harbour" in exif_keywords(f)["iptc"] for f in files] == [True, False, True, True]


def test_a_re_score_stopped_by_a_lock_outside_a_photos_write_still_counts_the_photos_it_did(
        env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A photo gone meanwhile is recorded gone outside the photo's own try: when that write met a
    backup's lock, the re-score raised without telling ``observe`` the photos it had re-scored, and
    `tagwatch status` never counted them."""
    files = photos(tmp_path / "in", 3)
    env.run(*files)
    files[2].unlink()  # the last one re-scored (in the order recorded)

    def held(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise _sqlite_fault("database is locked", 5)

    monkeypatch.setattr("tagwatch.writeback.record_gone", held)  # Writeback.gone records it
    env.use([*TAGS, "harbour"], TaggingConfig(threshold=-1.0, top_k=10))
    observed: list[str] = []
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        env.pipeline.retag(lambda outcomes: observed.extend(o.path for o in outcomes))
    assert sorted(observed) == sorted(str(f) for f in files[:2])


def test_only_files_whose_tag_set_changed_are_rewritten(env: Env, tmp_path: Path) -> None:
    files = photos(tmp_path / "in", 8)
    env.run(*files)
    before = {f: (env.store.file(str(f)).tags, f.stat().st_mtime_ns) for f in files}
    env.use([*TAGS, "harbour", "desert", "snow"])  # top_k stays 3: some photos change, some may not
    checked, _ = env.pipeline.retag()
    assert checked == 8
    for f in files:
        tags_before, mtime_before = before[f]
        tags_after = env.store.file(str(f)).tags
        gained = set(tags_after) - set(tags_before)
        if gained:
            assert f.stat().st_mtime_ns != mtime_before
            assert gained <= set(exif_keywords(f)["iptc"])
        else:
            assert f.stat().st_mtime_ns == mtime_before, f
    assert env.encoded() == 8


def test_bad_files_give_one_line_each_and_good_ones_still_get_tagged(
        env: Env, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "in"
    good = noise_jpeg(folder / "good.jpg", seed=1)
    truncated = folder / "truncated.jpg"  # cut inside its image data: docs/keywords.md says it is skipped
    truncated.write_bytes(good.read_bytes()[:3000])
    empty = folder / "empty.jpg"
    empty.write_bytes(b"")
    text = folder / "text.jpg"
    text.write_text("I am not a photo\n")
    vanished = noise_jpeg(folder / "vanished.jpg", seed=2)
    vanished.unlink()  # deleted after it was queued, before the worker reached it
    old = time.time() - 3600
    for f in (truncated, empty, text):
        os.utime(f, (old, old))
    good_bytes = good.read_bytes()
    with caplog.at_level(logging.INFO, logger="tagwatch"):
        result = env.run(truncated, empty, text, vanished, good)
    assert result == {"truncated.jpg": Status.FAILED, "empty.jpg": Status.FAILED, "text.jpg": Status.FAILED,
                      "vanished.jpg": Status.GONE, "good.jpg": Status.TAGGED}
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert f"{vanished}: gone: file vanished before it could be read (deleted or renamed)" in caplog.text
    assert warnings == [
        f"{truncated}: skipped: truncated JPEG (no end-of-image marker)",
        f"{empty}: skipped: empty file (0 bytes)",
        f"{text}: skipped: not an image format tagwatch reads",
    ]
    assert env.store.file(str(text)).error == "not an image format tagwatch reads"
    assert truncated.read_bytes() == good_bytes[:3000]  # never written: no keyword, no exiftool rewrite
    # an unchanged bad file is not retried; once it changes, it is
    assert env.run(text) == {"text.jpg": Status.UNCHANGED}
    noise_jpeg(text, seed=3)
    assert env.run(text) == {"text.jpg": Status.TAGGED}


def test_a_write_that_fails_leaves_the_photo_and_claims_no_keyword(env: Env, tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    (photo,) = photos(tmp_path / "locked", 1)
    before = photo.read_bytes()
    with read_only_folder(photo.parent), caplog.at_level(logging.WARNING, logger="tagwatch"):
        assert env.run(photo) == {"p0.jpg": Status.FAILED}
        assert photo.read_bytes() == before and os.listdir(photo.parent) == ["p0.jpg"]
        assert env.run(photo) == {"p0.jpg": Status.UNCHANGED}  # reported once, not retried in a loop
    row = env.store.file(str(photo))
    assert row.error.startswith(f"keywords not written: cannot create a file in {photo.parent}: ")
    assert env.store.ledger(row.id) == []  # the write-ahead entries went with the failed write
    assert [r.getMessage() for r in caplog.records] == [f"{photo}: skipped: {row.error}"]
    # a permission problem is cured by a chmod, which leaves the file's size and time alone
    assert env.run(photo) == {"p0.jpg": Status.TAGGED}


def test_a_failure_of_tagwatchs_own_is_tried_again_and_a_files_own_is_not(env: Env, tmp_path: Path) -> None:
    """An unexpected exception (a bug, or the package upgraded under a running daemon: every photo
    it met failed with a TypeError) is recorded so this run does not loop on it, but the next start
    or scan tries the photo again; a fault of the file's waits for the file to change."""
    photo = noise_jpeg(tmp_path / "in" / "p.jpg", seed=11)
    broken = tmp_path / "in" / "broken.jpg"
    broken.write_text("not a photo\n")
    bug = TypeError("judge() got an unexpected keyword argument 'dry_run'")
    assert env.pipeline.give_up(str(photo), bug).status == Status.FAILED
    assert env.store.file(str(photo)).error == (
        f"internal error, tried again at the next start or scan: TypeError: {bug}")
    assert env.run(broken) == {"broken.jpg": Status.FAILED}
    assert env.run(photo, broken) == {"p.jpg": Status.TAGGED, "broken.jpg": Status.UNCHANGED}
    assert len(exif_keywords(photo)["iptc"]) == 3


def test_other_formats_are_tagged_through_a_sidecar(env: Env, tmp_path: Path) -> None:
    from PIL import Image

    folder = tmp_path / "in"
    source = Image.open(noise_jpeg(folder / "src.jpg", seed=5))
    files = [folder / "scan.png", folder / "web.webp", folder / "print.tiff"]
    for f in files:
        source.save(f)
    before = {f: f.read_bytes() for f in files}
    assert env.run(*files) == {f.name: Status.TAGGED for f in files}
    for f in files:
        assert f.read_bytes() == before[f]  # never written into
        assert len(exif_keywords(folder / (f.name + ".xmp"))["xmp"]) == 3
    assert env.encoded() == 3
    assert env.run(*files) == {f.name: Status.UNCHANGED for f in files}  # a sidecar write is not a change


def test_symlinks_are_not_followed(env: Env, tmp_path: Path) -> None:
    (target,) = photos(tmp_path / "outside", 1)
    before = target.read_bytes()
    link = tmp_path / "in" / "link.jpg"
    link.parent.mkdir()
    link.symlink_to(target)
    assert env.run(link) == {"link.jpg": Status.FAILED}
    assert env.store.file(str(link)).error == "a symbolic link (not followed)"
    assert link.is_symlink() and target.read_bytes() == before


def test_a_file_name_that_is_not_utf8_is_reported_not_fatal(env: Env, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    good = noise_jpeg(folder / "good.jpg", seed=1)
    latin1_name = os.fsdecode(bytes(folder) + b"/caf\xe9.jpg")
    shutil.copyfile(good, latin1_name)
    assert env.run(Path(latin1_name), good) == {Path(latin1_name).name: Status.FAILED,
                                                "good.jpg": Status.TAGGED}


def test_a_file_still_being_written_is_retried_not_failed(env: Env, tmp_path: Path) -> None:
    good = noise_jpeg(tmp_path / "good.jpg", seed=1).read_bytes()
    partial = tmp_path / "in" / "partial.jpg"
    partial.parent.mkdir()
    partial.write_bytes(good[:2000])
    assert env.run(partial, wait_for_writers=lambda path, st: True) == {"partial.jpg": Status.RETRY}
    assert env.store.file(str(partial)) is None
    assert env.run(partial) == {"partial.jpg": Status.FAILED}  # a one-shot scan does not wait
    partial.write_bytes(good)
    assert env.run(partial) == {"partial.jpg": Status.TAGGED}


def test_a_camera_raw_still_being_written_is_waited_for_then_failed_if_cut_short(env: Env,
                                                                                 tmp_path: Path) -> None:
    """Issue: a RAW written in chunks was tagged from its preview before its sensor data was all
    there; each chunk gave it a new key, and the record of tagwatch's keywords was lost."""
    whole = camera_raw_bytes(red_picture(15, (120, 80)))
    partial = tmp_path / "in" / "DSC00002.ARW"
    partial.parent.mkdir()
    partial.write_bytes(whole[:len(whole) - 4000])  # structure and preview complete, sensor data not
    assert env.run(partial, wait_for_writers=lambda path, st: True) == {"DSC00002.ARW": Status.RETRY}
    assert env.store.file(str(partial)) is None and not list(partial.parent.glob("*.xmp"))
    assert env.run(partial, wait_for_writers=lambda path, st: False) == {"DSC00002.ARW": Status.FAILED}
    assert "runs past the end" in (env.store.file(str(partial)).error or "")
    partial.write_bytes(whole)
    assert env.run(partial) == {"DSC00002.ARW": Status.TAGGED}
    assert list(partial.parent.glob("*.xmp"))  # its sidecar

    # A Panasonic RAW whose byte count says more than it holds: waited for, then taken as it is
    rw2 = tmp_path / "in" / "P1000001.RW2"
    loose = camera_raw_bytes(red_picture(16, (120, 80)), header=b"IIU\0")
    rw2.write_bytes(loose[:len(loose) - 100])
    assert env.run(rw2, wait_for_writers=lambda path, st: True) == {"P1000001.RW2": Status.RETRY}
    assert env.run(rw2, wait_for_writers=lambda path, st: False) == {"P1000001.RW2": Status.RETRY}
    assert env.run(rw2, wait_for_writers=lambda path, st: False) == {"P1000001.RW2": Status.TAGGED}


def test_the_write_runs_in_three_steps_that_another_engine_can_split(env: Env, tmp_path: Path) -> None:
    """The Ray engine's driver records the ledger ahead, a worker writes the file, the driver records
    it done: each step leaves the store as a crash right after it would find it."""
    a, b = photos(tmp_path / "in", 2)
    wb, rules, writer = env.pipeline.writeback, env.pipeline.rules, env.pipeline.writer
    assert writer is not None
    before = a.read_bytes()
    job = WriteJob(str(a), content_key(before), os.lstat(a), [(TAGS[0], 0.3), (TAGS[1], 0.2)])
    wb.plan_ahead(job, rules)
    row = env.store.file(str(a))
    assert row.state == "pending" and sorted(env.store.ledger(row.id)) == sorted(TAGS[:2])
    assert a.read_bytes() == before  # planned and recorded, not written yet
    st = write_file(writer, job)  # needs the file and exiftool only, never the store
    assert sorted(exif_keywords(a)["iptc"]) == sorted(TAGS[:2])
    assert env.pipeline.tags is not None  # the driver stores the photo's vector before it records it done
    env.pipeline.cache.put({job.key: env.pipeline.tags.vectors[0]})
    outcome = wb.record_done(job, st, rules)
    assert outcome.status == Status.TAGGED and sorted(outcome.added) == sorted(TAGS[:2])
    assert env.store.file(str(a)).state == "done"
    assert env.run(a) == {"p0.jpg": Status.UNCHANGED}

    # A photo app saves between the plan and the write: nothing is replaced, the ledger is withdrawn
    job = WriteJob(str(b), content_key(b.read_bytes()), os.lstat(b), [(TAGS[0], 0.3)])
    wb.plan_ahead(job, rules)
    assert env.store.ledger(env.store.file(str(b)).id) == [TAGS[0]]
    subprocess.run(["exiftool", "-q", "-overwrite_original", "-XMP-dc:Title=edited", str(b)], check=True)
    with pytest.raises(FileChanged) as raised:
        write_file(writer, job)
    assert wb.failed(job, raised.value).status == Status.RETRY
    assert env.store.ledger(env.store.file(str(b)).id) == []
    assert not exif_keywords(b)["iptc"]


def test_a_write_that_lands_after_it_was_planned_again_stays_in_the_ledger(env: Env, tmp_path: Path) -> None:
    """A Ray node the driver counts as lost may still finish its write (a network partition) after
    the driver planned the photo again: the second write then fails as changed, and the ledger keeps
    the keyword the first one put in."""
    (photo,) = photos(tmp_path / "in", 1)
    wb, rules, writer = env.pipeline.writeback, env.pipeline.rules, env.pipeline.writer
    assert writer is not None
    key = content_key(photo.read_bytes())
    first = WriteJob(str(photo), key, os.lstat(photo), [(TAGS[0], 0.3)])
    wb.plan_ahead(first, rules)  # sent to a node that goes silent
    again = WriteJob(str(photo), key, os.lstat(photo), [(TAGS[0], 0.3)])
    wb.plan_ahead(again, rules)  # planned again from the file (no keyword yet) and the ledger
    write_file(writer, first)  # the silent node's write lands
    with pytest.raises(FileChanged) as raised:
        write_file(writer, again)
    assert wb.failed(again, raised.value).status == Status.RETRY
    row = env.store.file(str(photo))
    assert exif_keywords(photo)["iptc"] == [TAGS[0]] and env.store.ledger(row.id) == [TAGS[0]]
    assert env.run(photo) == {"p0.jpg": Status.TAGGED}  # the next scan (the model's own tags) keeps it
    iptc = exif_keywords(photo)["iptc"]
    assert iptc.count(TAGS[0]) == 1 and sorted(env.store.ledger(row.id)) == sorted(iptc)


def test_dry_run_writes_no_photo(env: Env, tmp_path: Path) -> None:
    (photo,) = photos(tmp_path / "in", 1)
    data = photo.read_bytes()
    outcomes = env.pipeline.process([str(photo)], dry_run=True)
    assert [o.status for o in outcomes] == [Status.TAGGED] and len(outcomes[0].tags) == 3
    assert all(-1.0 <= score <= 1.0 for _, score in outcomes[0].tags)
    assert photo.read_bytes() == data
    assert env.store.file(str(photo)) is None


def test_another_model_gets_its_own_vectors(env: Env, tmp_path: Path) -> None:
    import torch

    (photo,) = photos(tmp_path / "in", 1)
    env.run(photo)
    other = tmp_path / "other.pt"
    state = torch.load(env.model.cfg.pretrained, weights_only=True)
    state["logit_scale"] = state["logit_scale"] + 1.0  # different file, different identity
    torch.save(state, other)
    other_model = LazyModel(ModelConfig(name=str(TINY_CONFIG), pretrained=str(other)))
    assert other_model.identity != env.model.identity
    pipeline = Pipeline(env.store, other_model, None, TaggingConfig(threshold=-1.0, top_k=3))
    pipeline.use_vocabulary(parse_tag_list("\n".join(TAGS), ("a photo of a {}.",), Path("t")))
    pipeline.process([str(photo)], dry_run=True)
    pipeline.close()
    assert env.store.stats(other_model.identity)["vectors"] == 1
    assert env.store.stats(env.model.identity)["vectors"] == 1
    assert env.encoded() == 2


# -- the queue -----------------------------------------------------------------------------------

def test_queue_dedupes_and_flushes_full_batches_at_once() -> None:
    queue = BatchQueue(size=2, max_wait=60, settle=0, backlog=2)
    for path in ("/a.jpg", "/b.jpg", "/a.jpg", "/c.jpg"):
        queue.put(path)
    assert len(queue) == 3
    assert queue.get(timeout=5).paths == ["/b.jpg", "/a.jpg"]  # a new event restarts a's settle time
    assert queue.get(timeout=5).paths == ["/c.jpg"]


def test_queue_hands_out_a_backlog_in_throughput_sized_batches_and_a_lone_photo_alone() -> None:
    queue = BatchQueue(size=8, max_wait=60, settle=0, backlog=16)  # configured for latency
    for n in range(40):
        queue.put(f"/{n:02d}.jpg")
    # not 5 batches of 8: a backlog's, the first and the last ones smaller (as a scan's)
    assert [len(queue.get(timeout=5).paths) for _ in range(4)] == [8, 16, 8, 8]
    for n in range(40):  # the next burst starts small again
        queue.put(f"/again-{n:02d}.jpg")
    assert [len(queue.get(timeout=5).paths) for _ in range(4)] == [8, 16, 8, 8]
    queue.put("/lone.jpg")
    assert queue.get(timeout=5).paths == ["/lone.jpg"]
    for n in range(8):  # exactly a batch's worth is no backlog
        queue.put(f"/eight-{n}.jpg")
    assert len(queue.get(timeout=5).paths) == 8
    assert backlog_batch(32, "cpu") == 16 and backlog_batch(64, "cuda:0") == 64


def test_a_scans_backlog_starts_and_ends_in_small_batches() -> None:
    """The first batch is half a backlog's (the encoder starts once it is decoded), the last ones
    halve down to a few photos (little left to write after the last encode), none tiny."""
    def batches(count: int) -> list[int]:
        sizes: list[int] = []
        while sum(sizes) < count:
            sizes.append(backlog_take(count - sum(sizes), 16, first=not sizes))
        return sizes

    assert batches(60) == [8, 16, 16, 10, 5, 5]
    assert batches(200)[:2] == [8, 16] and batches(200)[-3:] == [8, 4, 4] and sum(batches(200)) == 200
    assert batches(5) == [5] and batches(1) == [1]
    assert all(min(batches(n)) >= min(n, TAIL_BATCH) for n in range(1, 100))


def test_queue_configured_above_the_backlog_batch_never_hands_out_more_than_it() -> None:
    queue = BatchQueue(size=32, max_wait=60, settle=0, backlog=16)  # the default size, on a CPU
    for n in range(40):
        queue.put(f"/{n:02d}.jpg")
    assert [len(queue.get(timeout=5).paths) for _ in range(3)] == [8, 16, 16]  # not 16 then 24
    for n in range(40):
        queue.put(f"/late-{n:02d}.jpg")
    queue.put("/still-copying.jpg", delay=60)  # a burst still arriving: it goes all the same
    assert [len(queue.get(timeout=5).paths) for _ in range(2)] == [8, 16]


def test_queue_hands_out_a_burst_still_settling_in_backlog_batches() -> None:
    queue = BatchQueue(size=8, max_wait=60, settle=0, backlog=16)  # configured for latency
    for n in range(20):  # a folder moved in: each photo's event a few milliseconds after the last
        queue.put(f"/{n:02d}.jpg", delay=0.05 + 0.005 * n)
    assert [len(queue.get(timeout=5).paths) for _ in range(3)] == [8, 6, 6]  # its last ones halved


def test_queue_hands_out_a_lone_photo_at_once() -> None:
    queue = BatchQueue(size=10, max_wait=60, settle=0)
    queue.put("/a.jpg")
    assert queue.get(timeout=5).paths == ["/a.jpg"]


def test_queue_waits_up_to_max_wait_for_files_still_settling() -> None:
    queue = BatchQueue(size=10, max_wait=0.3, settle=0)
    queue.put("/a.jpg")
    queue.put("/b.jpg", delay=60)  # still being copied
    assert queue.get(timeout=0.01).paths == []
    assert queue.get(timeout=10).paths == ["/a.jpg"]


def test_queue_waits_for_a_file_to_settle() -> None:
    queue = BatchQueue(size=1, max_wait=0, settle=30)
    queue.put("/busy.jpg")  # still receiving events
    assert queue.get(timeout=0.05).paths == []
    queue.put("/busy.jpg", delay=0)  # closed after writing
    assert queue.get(timeout=5).paths == ["/busy.jpg"]


def test_queue_moves_and_deletes_pending_paths() -> None:
    queue = BatchQueue(size=10, max_wait=0, settle=0)
    queue.put("/in/a.jpg")
    queue.put("/in/dir/b.jpg")
    queue.put("/in/c.jpg")
    queue.op(Move("/in/a.jpg", "/in/renamed.jpg"))
    queue.op(Move("/in/dir", "/in/moved", is_dir=True))
    queue.op(Delete("/in/c.jpg"))
    batch = queue.get(timeout=5)
    assert sorted(batch.paths) == ["/in/moved/b.jpg", "/in/renamed.jpg"]
    assert len(batch.ops) == 3


def test_queue_is_bounded_and_blocks_producers() -> None:
    queue = BatchQueue(size=1, max_wait=0, settle=0, maxsize=2, backlog=1)
    queue.put("/a.jpg")
    queue.put("/b.jpg")
    done = threading.Event()
    producer = threading.Thread(target=lambda: (queue.put("/c.jpg"), done.set()))
    producer.start()
    assert not done.wait(0.2)  # full: the producer waits instead of growing the queue
    assert queue.get(timeout=5).paths == ["/a.jpg"]
    assert done.wait(5)
    producer.join()
    queue.put("/retry.jpg", force=True)  # full again, but the worker re-queueing never waits on itself
    assert len(queue) == 3
    queue.close()
    assert queue.get(timeout=1) is None


def test_stored_vectors_are_what_gets_scored(env: Env, tmp_path: Path) -> None:
    (photo,) = photos(tmp_path / "in", 1)
    first = env.pipeline.process([str(photo)], dry_run=True)[0].tags
    again = env.pipeline.process([str(photo)], dry_run=True)[0].tags  # now from the cache
    assert first == again
    assert np.isfinite([s for _, s in first]).all()
