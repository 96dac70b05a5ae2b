"""A newsroom drop folder: cameras reuse file names, ingest scripts rename a photo the moment it
lands, the desk edits the tag list all day and reads `tagwatch status` and the log.  The cases come
from a photo desk's report.  Real pipeline, real store, real exiftool and a real overrides file with
the tiny CLIP (threshold -1, so every photo gets its top_k tags); the daemon's own behaviour through a
real daemon on a real folder, and the commands through the CLI."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import TAGS, Env, exif_keywords, noise_jpeg, tagwatch, wait_for, write_config
from tagwatch import writeback
from tagwatch.config import TaggingConfig
from tagwatch.formats import content_key
from tagwatch.outcomes import Status
from tagwatch.overrides import correct, load_overrides
from tagwatch.queue import BatchQueue, Delete, HalfMove, Move
from tagwatch.store import DELETED, PENDING
from tagwatch.worker import Worker


@pytest.fixture
def env(tmp_path: Path, tiny_checkpoint: Path) -> Env:
    env = Env(tmp_path, tiny_checkpoint, TaggingConfig(threshold=-1.0, top_k=2))
    yield env
    env.close()


def test_a_photo_moved_out_while_its_keywords_were_written_is_said_gone_in_one_line(
        env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The desk's ingest script moves each photo out of the drop folder a moment after it lands: one
    that went while its keywords were being written was said twice, "gone: file vanished before its
    keywords were written (deleted or renamed)" and, when its deletion came through, "skipped:
    deleted before it could be tagged".  One line per photo, as for every other outcome."""
    photo = noise_jpeg(tmp_path / "drop" / "DSC_0300.jpg", seed=4)
    archive = tmp_path / "archive" / photo.name
    archive.parent.mkdir()

    def moved_out_first(writer: object, job: writeback.WriteJob) -> os.stat_result:
        """The ingest script's mv lands while exiftool writes: the write fails, the file gone."""
        os.rename(job.path, archive)
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", job.path)

    monkeypatch.setattr(writeback, "write_file", moved_out_first)
    caplog.set_level("INFO", logger="tagwatch")
    assert env.run(photo) == {"DSC_0300.jpg": Status.GONE}
    env.pipeline.apply([Delete(str(photo))])
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith(str(photo))]
    assert said == [f"{photo}: gone: file vanished before its keywords were written (deleted or renamed)"]
    assert exif_keywords(archive) == {"iptc": [], "xmp": []}
    # moved out between its event and its read: one line too
    caplog.clear()
    went = tmp_path / "drop" / "DSC_0302.jpg"  # the watcher saw it land; it is gone when read
    assert env.run(went) == {"DSC_0302.jpg": Status.GONE}
    env.pipeline.apply([Delete(str(went))])
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith(str(went))]
    assert said == [f"{went}: gone: file vanished before it could be read (deleted or renamed)"]
    # a photo deleted before it was ever looked at is still said so
    fleeting = noise_jpeg(tmp_path / "drop" / "DSC_0301.jpg", seed=5)
    fleeting.unlink()
    caplog.clear()
    env.pipeline.apply([Delete(str(fleeting))])
    said = [r.getMessage() for r in caplog.records]
    assert said == [f"{fleeting}: skipped: deleted before it could be tagged"]


def test_a_correction_of_a_deleted_photo_is_not_applied_to_the_next_picture_of_its_name(
        env: Env, tmp_path: Path) -> None:
    """DSC_0100.jpg corrected on the review page (Mayor Smith added, a tag rejected), deleted, and
    days later another picture lands under the same name: it got Mayor Smith, as the person's (sync
    and untag never take it out), and lost its own tag.  The rule goes with the photo; a picture put
    back (the same pixels) keeps it."""
    desk = tmp_path / "desk"
    photo = noise_jpeg(desk / "DSC_0100.jpg", seed=1)
    rejected = env.pipeline.process([str(photo)], dry_run=True)[0].tags[0][0]
    source = tmp_path / "overrides.toml"
    text = correct("# the desk's corrections\n", source, [desk], str(photo), "Mayor Smith", "add")
    source.write_text(correct(text, source, [desk], str(photo), rejected, "remove"), encoding="utf-8")
    env.pipeline.use_overrides(load_overrides(source, [desk]))
    env.run(photo)
    assert "Mayor Smith" in exif_keywords(photo)["iptc"] and rejected not in exif_keywords(photo)["iptc"]

    photo.unlink()
    env.pipeline.apply([Delete(str(photo))])
    noise_jpeg(photo, seed=2)  # another picture, the same name
    assert env.run(photo) == {"DSC_0100.jpg": Status.TAGGED}
    keywords = exif_keywords(photo)["iptc"]
    assert "Mayor Smith" not in keywords and len(keywords) == 2, keywords
    assert source.read_text(encoding="utf-8") == "# the desk's corrections\n"

    # the same picture put back after a delete (from the bin, a backup) is the photo corrected
    other = noise_jpeg(desk / "DSC_0200.jpg", seed=3)
    source.write_text(correct("", source, [desk], str(other), "Mayor Smith", "add"), encoding="utf-8")
    env.pipeline.use_overrides(load_overrides(source, [desk]))
    env.run(other)
    saved = other.read_bytes()
    other.unlink()
    env.pipeline.apply([Delete(str(other))])
    other.write_bytes(saved)
    env.run(other)
    assert "Mayor Smith" in exif_keywords(other)["iptc"]
    assert "DSC_0200.jpg" in source.read_text(encoding="utf-8")


def test_a_photo_renamed_while_its_keywords_were_being_written_is_tagged_under_its_new_name(
        env: Env, tmp_path: Path) -> None:
    """An ingest script renames a photo about 0.1 s after it lands: the rename met the photo recorded
    pending (the write-ahead record, before exiftool writes), the record followed it, and nothing
    looked at the new name again: 7 of 10 photos stayed untagged until the next full scan."""
    incoming = noise_jpeg(tmp_path / "drop" / "incoming_1.jpg", seed=3)
    st = incoming.stat()
    env.store.record_file(str(incoming), key=content_key(incoming.read_bytes()), size=st.st_size,
                          mtime_ns=st.st_mtime_ns, state=PENDING)  # the write-ahead record
    story = incoming.with_name("story_1.jpg")
    os.rename(incoming, story)
    assert env.pipeline.apply([Move(str(incoming), str(story))]) == [str(story)]  # looked at again
    assert env.run(story) == {"story_1.jpg": Status.TAGGED}
    assert len(exif_keywords(story)["iptc"]) == 2


def test_explain_says_when_its_verdicts_are_not_in_the_file(tmp_path: Path, config_file) -> None:
    """A photo left pending read "TAGGED" in explain while it carried nothing: the verdicts are what
    a write will do, and explain now says the photo has not been written yet (or could not be)."""
    config = config_file()
    photo = noise_jpeg(tmp_path / "drop" / "story.jpg", seed=4)
    before = tagwatch("explain", "--config", str(config), str(photo))
    assert before.returncode == 0, before.stderr
    assert "not tagged yet: none of the verdicts below is in the file" in before.stdout
    assert tagwatch("scan", "--config", str(config), str(photo)).returncode == 0
    after = tagwatch("explain", "--config", str(config), str(photo)).stdout
    assert "not tagged yet" not in after and "TAGGED" in after


def test_an_overrides_file_not_there_yet_is_said_once(tmp_path: Path, tiny_checkpoint: Path,
                                                      daemon_factory) -> None:
    """Right after `tagwatch init`, the overrides file the config names does not exist until the
    review page's first correction: the warning came again at every tag-list save and SIGHUP (8
    times in 5 minutes on a newsroom desk), where the docs promise one at the start."""
    root = tmp_path / "drop"
    root.mkdir()
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[root])
    config.write_text('overrides = "overrides.toml"\n' + config.read_text(encoding="utf-8"), encoding="utf-8")
    daemon = daemon_factory(config).start()
    tags = config.parent / "tags.txt"
    for count, extra in ((len(TAGS) + 1, ["harbour"]), (len(TAGS) + 2, ["harbour", "lake"])):
        mark = len(daemon.log())
        tags.write_text("\n".join([*TAGS, *extra]) + "\n", encoding="utf-8")
        daemon.wait_log(f": {count} tags (", since=mark)
    mark = len(daemon.log())
    daemon.signal(signal.SIGHUP)
    daemon.wait_log(" reloaded: ", since=mark)
    assert daemon.log().count("the overrides file does not exist yet") == 1, daemon.log()
    assert daemon.stop() == 0


def test_a_file_name_that_is_not_utf8_is_a_skipped_event(tmp_path: Path, config_file) -> None:
    """A photo copied from an old card reader with a Latin-1 name: `scan` of its folder ended in a
    traceback (the daemon's JSON log gave an event "log" with no path or reason, which the faults
    page's `select(.event == "skipped")` recipe misses), and `explain` of it in another."""
    config = config_file()
    folder = tmp_path / "drop"
    folder.mkdir()
    bad = Path(os.fsdecode(bytes(folder) + b"/bad\xffname.jpg"))
    noise_jpeg(bad, seed=5)
    result = tagwatch("--log-format", "json", "scan", "--config", str(config), str(folder))
    records = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    skipped = [r for r in records if r.get("event") == "skipped"]
    assert len(skipped) == 1, result.stderr
    assert skipped[0]["reason"] == "the file name is not valid UTF-8; rename the file"
    assert skipped[0]["path"] == f"{folder}/bad\\xffname.jpg", skipped[0]  # no quotes: jq -r .path
    explained = tagwatch("explain", "--config", str(config), str(bad))  # a traceback before
    assert explained.returncode == 1 and "skipped: the file name is not valid UTF-8" in explained.stderr


def not_utf8(folder: Path, name: bytes) -> Path:
    """``folder``/``name`` where ``name`` holds bytes UTF-8 lacks (an old card reader's Latin-1)."""
    return Path(os.fsdecode(bytes(folder) + b"/" + name))


def test_every_rename_and_deletion_naming_a_name_not_utf8_is_applied_and_looked_at(
        env: Env, tmp_path: Path) -> None:
    """Each kind of op the watcher queues, from, to or of a name that is not valid UTF-8, a file's or
    a folder's: SQLite cannot encode such a name, and each raised (UnicodeEncodeError).  Nothing
    was ever recorded under one; a photo moved to a valid name is looked at and tagged as any moved
    in; a recorded photo or folder moved to such a name leaves the store, and is looked at to be
    skipped, saying why."""
    card = tmp_path / "card"
    tagged, sorted_, album = (noise_jpeg(card / name, seed=i) for i, name in
                              enumerate(["tagged.jpg", "sorted.jpg", "album/a.jpg"], 1))
    assert set(env.run(tagged, sorted_, album).values()) == {Status.TAGGED}
    moves = {  # (src, dst) on disk: a recorded photo, a recorded folder, then files never recorded
        tagged: not_utf8(card, b"tagged \xe9.jpg"), album.parent: not_utf8(card, b"album \xe9"),
        sorted_: not_utf8(card, b"2025 \xe9/sorted.jpg"),  # sorted into a new folder: a half-seen move
        noise_jpeg(not_utf8(card, b"gelb \xfc.jpg"), seed=4): card / "gelb.jpg",
        noise_jpeg(not_utf8(card, b"trip \xe9/b.jpg"), seed=5).parent: card / "trip",
        noise_jpeg(not_utf8(card, b"x \xfc.jpg"), seed=6): not_utf8(card, b"y \xfc.jpg"),
    }
    for src, dst in moves.items():
        dst.parent.mkdir(exist_ok=True)
        os.rename(src, dst)
    gone, gone_folder = noise_jpeg(not_utf8(card, b"weg \xe9.jpg"), seed=7), not_utf8(card, b"alt \xe9")
    gone.unlink()
    ops = [Move(str(tagged), str(moves[tagged])),
           Move(str(album.parent), str(moves[album.parent]), is_dir=True),  # and its photo's own move
           Move(str(album), str(moves[album.parent] / "a.jpg")),
           HalfMove(str(sorted_), str(moves[sorted_])),  # its candidate queued by the watcher
           Move(str(not_utf8(card, b"gelb \xfc.jpg")), str(card / "gelb.jpg")),
           Move(str(not_utf8(card, b"trip \xe9")), str(card / "trip"), is_dir=True),
           Move(str(not_utf8(card, b"trip \xe9/b.jpg")), str(card / "trip" / "b.jpg")),
           Move(str(not_utf8(card, b"x \xfc.jpg")), str(not_utf8(card, b"y \xfc.jpg"))),
           HalfMove(str(not_utf8(card, b"h \xfc.jpg")), str(card / "new" / "h.jpg")),
           Delete(str(gone)), Delete(str(gone_folder), is_dir=True)]
    looked_at = env.pipeline.apply(ops)
    assert looked_at == [str(moves[tagged]), str(moves[album.parent] / "a.jpg"), str(card / "gelb.jpg"),
                         str(card / "trip" / "b.jpg"), str(not_utf8(card, b"y \xfc.jpg"))]
    for left in (tagged, album, sorted_):  # nothing can follow them to such a name
        assert env.store.file(str(left)).state == DELETED  # type: ignore[union-attr]
    outcomes = env.run(*map(Path, looked_at))
    assert outcomes == {"tagged \udce9.jpg": Status.FAILED, "a.jpg": Status.FAILED, "gelb.jpg": Status.TAGGED,
                        "b.jpg": Status.TAGGED, "y \udcfc.jpg": Status.FAILED}  # FAILED: skipped (NOT_UTF8)
    assert all(len(exif_keywords(p)["iptc"]) == 2 for p in (card / "gelb.jpg", card / "trip" / "b.jpg"))


def test_a_photo_renamed_from_a_name_not_utf8_is_tagged_and_its_batch_loses_no_photo(
        env: Env, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A photo from an old card reader (a Latin-1 name) is skipped: "the file name is not valid
    UTF-8; rename the file".  Renamed as advised, or deleted, its op asked SQLite about the old name:
    "batch failed: UnicodeEncodeError", and neither the renamed photo nor the new photos of its batch
    were tagged (until a restart or the hourly scan)."""
    folder = tmp_path / "card"
    bad, doomed = noise_jpeg(not_utf8(folder, b"gelb \xfc.jpg"), seed=1), noise_jpeg(
        not_utf8(folder, b"weg \xe9.jpg"), seed=2)
    assert env.run(bad, doomed) == {bad.name: Status.FAILED, doomed.name: Status.FAILED}  # skipped
    renamed = folder / "gelb.jpg"
    os.rename(bad, renamed)
    doomed.unlink()
    others = [noise_jpeg(folder / f"new_{i}.jpg", seed=10 + i) for i in range(2)]
    queue = BatchQueue(size=8, max_wait=0, settle=0)
    queue.op(Move(str(bad), str(renamed)))
    queue.op(Delete(str(doomed)))
    for path in others:
        queue.put(str(path), delay=0.0)
    worker = Worker(queue, env.pipeline, reload=lambda: None)
    worker.start()  # its first batch: the rename, the deletion and the two new photos
    try:
        wait_for(lambda: all(len(exif_keywords(p)["iptc"]) == 2 for p in (renamed, *others)), timeout=30)
    finally:
        queue.close()
        worker.join(timeout=60)
    assert "batch failed" not in caplog.text and "not recorded" not in caplog.text, caplog.text


def test_the_daemon_counts_a_photo_it_wrote_nothing_into_as_unchanged(tmp_path: Path, tiny_checkpoint: Path,
                                                                     daemon_factory) -> None:
    """A copy of a tagged photo dropped in again (its keywords all there) was counted "tagged" in
    `tagwatch status`, though nothing was written; `scan` counts such a photo unchanged."""
    root = tmp_path / "drop"
    root.mkdir()
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[root])
    daemon = daemon_factory(config).start()

    def state() -> dict:
        return json.loads(tagwatch("status", "--json", "--config", str(config)).stdout)["daemon"] or {}

    first = noise_jpeg(tmp_path / "a.jpg", seed=6)
    first.rename(root / "a.jpg")
    daemon.wait_log(f"tagged {root / 'a.jpg'}: ")  # (the state below counts it, written up to 5 s later)
    mark = len(daemon.log())
    shutil.copy2(root / "a.jpg", tmp_path / "b.jpg")
    (tmp_path / "b.jpg").rename(root / "b.jpg")
    daemon.wait_log(f"checked {root / 'b.jpg'}, a copy of {root / 'a.jpg'} (", since=mark)  # one line
    seen = time.time()
    later = wait_for(lambda: (s := state()) and time.time() - s["age_s"] > seen + 0.1 and s)  # written since
    assert later["tagged_since_start"] == 1 and later["unchanged_since_start"] >= 1, later
    assert daemon.stop() == 0


def test_a_re_score_that_writes_nothing_logs_no_tagging(tmp_path: Path, tiny_checkpoint: Path,
                                                       daemon_factory) -> None:
    """A tag-list edit re-scores every cached photo: each one whose predictions changed but whose
    file did not (append mode keeps a tag dropped from the list) logged "tagged …: … (already in the
    file)", ten such lines before "rewrote 0" reading as ten taggings."""
    root = tmp_path / "drop"
    root.mkdir()
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[root], top_k=len(TAGS))  # every tag
    daemon = daemon_factory(config).start()
    photo = noise_jpeg(tmp_path / "a.jpg", seed=8)
    photo = photo.rename(root / "a.jpg")
    wait_for(lambda: len(exif_keywords(photo)["iptc"]) == len(TAGS))
    dropped = TAGS[0]
    mark = len(daemon.log())
    (config.parent / "tags.txt").write_text("\n".join(TAGS[1:]) + "\n", encoding="utf-8")
    said = daemon.wait_log("re-scored 1 photo, rewrote ", since=mark)[mark:]
    assert "rewrote 0" in said and f"tagged {photo}" not in said, said
    assert dropped in exif_keywords(photo)["iptc"]  # append: ours stays
    assert daemon.stop() == 0


def test_a_keyword_taken_out_then_added_back_by_a_correction_is_said_so(
        env: Env, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The line said "never written into this photo again", then the write put it back, as the
    person's correction asks (a correction adding a keyword is their word)."""
    desk = tmp_path / "desk"
    photo = noise_jpeg(desk / "p.jpg", seed=9)
    env.run(photo)
    keyword = exif_keywords(photo)["iptc"][0]
    subprocess.run(["exiftool", "-q", "-overwrite_original", f"-IPTC:Keywords-={keyword}",
                    f"-XMP-dc:Subject-={keyword}", str(photo)], check=True)
    source = tmp_path / "overrides.toml"
    source.write_text(correct("", source, [desk], str(photo), keyword, "add"), encoding="utf-8")
    env.pipeline.use_overrides(load_overrides(source, [desk]))
    with caplog.at_level("INFO", logger="tagwatch"):
        env.run(photo)
    assert (f"{keyword} taken out of it by a person (or another program); never written into this photo "
            f"again unless a correction adds it, as one does: {keyword}") in caplog.text, caplog.text
    assert keyword in exif_keywords(photo)["iptc"]


def _daemon_state(config: Path) -> dict:
    return json.loads(tagwatch("status", "--json", "--config", str(config)).stdout)["daemon"] or {}


def test_a_tag_list_saved_in_place_in_two_writes_is_applied_once_whole(tmp_path: Path, tiny_checkpoint: Path,
                                                                        daemon_factory) -> None:
    """A tag list saved in place in two writes 1.5 s apart (an editor over a slow share, a script
    writing in parts) was applied half-written 0.5 s after the first: in sync mode every photo lost
    the keywords the half list lacked, and got them back when the rest came.  The list is applied
    once the writer closes it; a save by rename into place is still picked up."""
    root = tmp_path / "drop"
    root.mkdir()
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[root])
    config.write_text(config.read_text(encoding="utf-8").replace("top_k = 3", 'top_k = 3\nmode = "sync"'),
                      encoding="utf-8")
    daemon = daemon_factory(config).start()
    photo = noise_jpeg(tmp_path / "a.jpg", seed=61).rename(root / "a.jpg")
    daemon.wait_log(f"tagged {photo}: ")
    before = exif_keywords(photo)
    assert len(before["iptc"]) == 3
    tags = config.parent / "tags.txt"
    mark = len(daemon.log())
    with tags.open("w", encoding="utf-8") as handle:  # in place: truncated, then written in two parts
        handle.write(f"{TAGS[0]}\n")
        handle.flush()
        os.fsync(handle.fileno())
        time.sleep(1.5)  # the writer pauses (the settle time is 0.3 s)
        handle.write("\n".join(TAGS[1:]) + "\n")  # the list as it was: nothing to change
    daemon.wait_log(f": {len(TAGS)} tags (", since=mark)
    log = daemon.log()[mark:]
    assert log.count(f"tag list {tags}") == 1, log
    assert "re-scored 0 photos" in log and "took out" not in log, log
    assert exif_keywords(photo) == before

    mark = len(daemon.log())
    saved = tags.with_name("tags.txt.tmp")
    saved.write_text("\n".join([*TAGS, "harbour"]) + "\n", encoding="utf-8")
    os.replace(saved, tags)  # an editor's atomic save
    daemon.wait_log(f": {len(TAGS) + 1} tags (", since=mark)
    assert daemon.stop() == 0


def test_a_photo_that_failed_is_not_tried_again_by_a_re_score_a_sighup_or_a_restart(
        tmp_path: Path, tiny_checkpoint: Path, daemon_factory) -> None:
    """A hard-linked pair (no write can keep the link) was tried and reported again at every save of
    the tag list, even an unchanged one ("re-scored 1 photo, rewrote 0"), every SIGHUP and every
    start, and each attempt counted in "failed since start" (23 while `status --failed` listed 3).
    docs/keywords.md: the file is not retried until it changes."""
    root = tmp_path / "drop"
    root.mkdir()
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[root])
    daemon = daemon_factory(config).start()
    first = noise_jpeg(tmp_path / "hard1.jpg", seed=62)
    os.link(first, tmp_path / "hard2.jpg")
    pair = [root / "hard1.jpg", root / "hard2.jpg"]
    first.rename(pair[0])
    (tmp_path / "hard2.jpg").rename(pair[1])
    for photo in pair:
        daemon.wait_log(f"{photo}: skipped: keywords not written: the file has 2 hard links")
    wait_for(lambda: _daemon_state(config).get("failed_since_start") == 2)

    tags = config.parent / "tags.txt"
    mark = len(daemon.log())
    tags.write_text(tags.read_text(encoding="utf-8"), encoding="utf-8")  # saved unchanged
    daemon.wait_log(f"tag list {tags}", since=mark)
    mark = len(daemon.log())
    daemon.signal(signal.SIGHUP)
    daemon.wait_log(f"tag list {tags}", since=mark)
    assert "re-scored 0 photos" in daemon.log()[mark:]
    assert _daemon_state(config).get("failed_since_start") == 2
    assert daemon.stop() == 0

    mark = len(daemon.log())
    daemon.start()
    daemon.wait_log("scan: ", since=mark)  # the start-up scan, after the start's re-score
    log = daemon.log()
    for photo in pair:
        assert log.count(f"{photo}: skipped") == 1, log
    assert "re-scored 1 photo" not in log and "re-scored 2 photos" not in log, log
    assert _daemon_state(config).get("failed_since_start") == 0

    for _ in range(2):  # changed (its time), so tried again: failing for the same reason is no new failure
        touched = time.time()
        stamp = pair[0].stat().st_mtime_ns + 1_000_000_000
        os.utime(pair[0], ns=(stamp, stamp))
        # the state written since the failure was counted (the same count sets its last error)
        counted = wait_for(lambda t=touched: (s := _daemon_state(config)).get("last_error")
                           and s["last_error"]["time"] > t and s)
        assert counted["failed_since_start"] == 1, counted
    assert daemon.log().count(f"{pair[0]}: skipped") == 3
    assert daemon.stop() == 0


def test_a_photo_a_scan_found_failing_is_not_tried_again_by_the_daemons_start(
        tmp_path: Path, tiny_checkpoint: Path, daemon_factory) -> None:
    """A failure recorded by `tagwatch scan` carried no tag list, so the daemon's first re-score
    tried the photo again (and logged it again) for nothing; only the daemon's own were stamped."""
    root = tmp_path / "drop"
    root.mkdir()
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[root])
    first = noise_jpeg(root / "hard1.jpg", seed=64)
    os.link(first, root / "hard2.jpg")
    scanned = tagwatch("scan", "--config", str(config), str(root))
    assert scanned.returncode == 1 and "2 failed" in scanned.stderr, scanned.stderr
    daemon = daemon_factory(config).start()
    log = daemon.wait_log("scan: ")  # the start-up scan, after the start's re-score
    assert "skipped" not in log and "re-scored 2 photos" not in log, log
    assert daemon.stop() == 0


def test_status_does_not_count_the_check_of_its_own_write(tmp_path: Path, tiny_checkpoint: Path,
                                                          daemon_factory) -> None:
    """One photo dropped and tagged made `status` say "1 tagged … 1 checked with nothing to write":
    the event of tagwatch's own write was looked at, found as recorded, and counted as a photo
    checked."""
    root = tmp_path / "drop"
    root.mkdir()
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[root])
    daemon = daemon_factory(config).start()
    photo = noise_jpeg(tmp_path / "a.jpg", seed=63).rename(root / "a.jpg")
    daemon.wait_log(f"tagged {photo}")
    # the photo's batch, then its own write's event looked at (the order the worker takes them)
    done = wait_for(lambda: (s := _daemon_state(config)).get("batches_since_start", 0) >= 2 and s)
    assert done["tagged_since_start"] == 1 and done["unchanged_since_start"] == 0, done
    assert "checked with nothing to write" not in tagwatch("status", "--config", str(config)).stdout
    assert daemon.stop() == 0
