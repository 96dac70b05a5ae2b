"""Whose keyword is it: sync removes only what tagwatch added, untag restores the file as it was.

Real pipeline, real store and ledger, real exiftool; the tiny CLIP with threshold -1 and top_k equal
to the list length predicts every tag on the list, so a tag-list edit decides the predictions.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import (
    CORPUS,
    Daemon,
    Env,
    config_with_vectors,
    database_copy,
    exif_keywords,
    exiftool_read,
    noise_jpeg,
    status,
    tagwatch,
    write_config,
)
from tagwatch import writeback
from tagwatch.config import TaggingConfig, WriteConfig
from tagwatch.logs import JsonFormatter
from tagwatch.outcomes import Status
from tagwatch.queue import Delete, Move
from tagwatch.store import DECLINED, UNTAGGED
from tagwatch.vocabulary import parse_rich_tag_list

# The pictures (noise_jpeg seeds) and tags of the tests below that scan with `tagwatch scan` or the
# daemon: ``known`` caches their vectors once, and each such test scans its own photos of them with a
# copy of that database (``known_database``), so no scan of theirs starts a model child (~3-4
# CPU-seconds each).  Copies, not the one database: these tests are about what tagwatch recognises by
# content, and a picture's records left by another test would be found as this one's original.
KNOWN_SEEDS = (0, 1, 13, 41, 500, 501, 502, 503, 510)
KNOWN_TAGS = ["beach", "forest", "mountain", "Anna"]


@pytest.fixture(scope="module")
def known(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> Path:
    """The prepared config: the vectors of KNOWN_SEEDS' pictures and KNOWN_TAGS' prompts cached
    (the tests using it share @pytest.mark.xdist_group("ownership-known"): built once)."""
    return config_with_vectors(tmp_path_factory.mktemp("known"), tiny_checkpoint, seeds=KNOWN_SEEDS,
                               tags=KNOWN_TAGS)


def known_database(known: Path, tmp_path: Path) -> Path:
    """A database of the test's own holding the prepared vectors and no file's record."""
    return database_copy(known, tmp_path / "db")


def person_tags(photo: Path, *keywords: str) -> Path:
    args = [a for k in keywords for a in (f"-IPTC:Keywords={k}", f"-XMP-dc:Subject={k}")]
    subprocess.run(["exiftool", "-q", "-overwrite_original", "-charset", "iptc=UTF8", *args, str(photo)],
                   check=True)
    return photo


def keyword_sets(*photos: Path) -> list[tuple[set[str], set[str]]]:
    return [(set(k["iptc"]), set(k["xmp"])) for k in map(exif_keywords, photos)]


def overwrite_with(env: Env, tags: list[str]) -> None:
    """Re-score the cached photos in overwrite mode (top 1) against ``tags``."""
    env.use(tags, TaggingConfig(threshold=-1.0, top_k=1, mode="overwrite"))
    env.pipeline.retag()


@pytest.mark.parametrize("target", ["embedded", "both"])
def test_sync_drops_our_beach_and_keeps_the_persons(tmp_path: Path, tiny_checkpoint: Path,
                                                    target: str) -> None:
    env = Env(tmp_path, tiny_checkpoint, TaggingConfig(threshold=-1.0, top_k=2, mode="sync"),
              WriteConfig(target=target))
    try:
        env.use(["beach", "forest"])
        theirs = person_tags(noise_jpeg(tmp_path / "in" / "theirs.jpg", seed=1), "beach", "Anna")
        ours = noise_jpeg(tmp_path / "in" / "ours.jpg", seed=2)
        before = keyword_sets(theirs, ours)
        assert env.run(theirs, ours) == {"theirs.jpg": Status.TAGGED, "ours.jpg": Status.TAGGED}
        assert keyword_sets(theirs, ours) == [({"beach", "Anna", "forest"},) * 2, ({"beach", "forest"},) * 2]
        encoded = env.encoded()
        env.use(["forest", "mountain"])  # the edit drops beach
        assert env.pipeline.retag() == (2, 2)
        assert env.encoded() == encoded  # re-scored from cached vectors
        assert keyword_sets(theirs, ours) == [({"beach", "Anna", "forest", "mountain"},) * 2,
                                              ({"forest", "mountain"},) * 2]
        if target == "both":
            sidecar = env.pipeline.writer.sidecar_for(ours)
            assert set(exif_keywords(sidecar)["xmp"]) == {"forest", "mountain"}
        for photo in (theirs, ours):
            assert env.pipeline.untag(str(photo)).status == "untagged"
        assert keyword_sets(theirs, ours) == before  # exactly as they were before tagwatch
        assert env.store.file(str(ours)).state == UNTAGGED
        assert env.run(ours) == {"ours.jpg": Status.UNCHANGED}  # the daemon leaves it alone now
        # `scan` names it: tagged again
        assert env.run(ours, retry_failed=True) == {"ours.jpg": Status.TAGGED}
    finally:
        env.close()


def test_the_log_names_what_a_sync_re_score_took_out(tmp_path: Path, tiny_checkpoint: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """A tag-list edit that only takes a keyword of ours out rewrites the photo: its line says what
    left, not "(already in the file)" or "nothing to write"."""
    env = Env(tmp_path, tiny_checkpoint, TaggingConfig(threshold=-1.0, top_k=2, mode="sync"))
    try:
        env.use(["beach", "forest"])
        photo = noise_jpeg(tmp_path / "in" / "ours.jpg", seed=2)
        assert env.run(photo) == {"ours.jpg": Status.TAGGED}
        env.use(["forest", "mountain"])
        caplog.clear()
        with caplog.at_level("INFO", logger="tagwatch"):
            env.pipeline.retag()
        assert f"tagged {photo}: forest, mountain; took out tagwatch's no longer predicted: beach" \
            in caplog.messages
        env.use(["forest"])
        caplog.clear()
        with caplog.at_level("INFO", logger="tagwatch"):
            env.pipeline.retag()
        assert set(exif_keywords(photo)["xmp"]) == {"forest"}
        line = f"updated {photo}: forest; took out tagwatch's no longer predicted: mountain"
        assert line in caplog.messages
        record = next(r for r in caplog.records if getattr(r, "event", None) == "tagged")
        assert record.removed == ["mountain"]  # --log-format json carries it as "removed"
    finally:
        env.close()


def test_iptc_only_keywords_join_a_new_dc_subject_and_untag_takes_it_out(tmp_path: Path,
                                                                         tiny_checkpoint: Path) -> None:
    """Apple Photos reads dc:subject only: the one tagwatch creates carries the person's keywords
    too, never recorded as ours, and goes again with untag."""
    photo = tmp_path / "in" / "budapest.jpg"
    photo.parent.mkdir()
    shutil.copyfile(CORPUS / "pillow__iptc.jpg", photo)
    persons = ["HvK", "2006", "summer", "July", "holiday", "Hungary", "Budapest"]
    assert exif_keywords(photo) == {"iptc": persons, "xmp": []}
    env = Env(tmp_path, tiny_checkpoint, TaggingConfig(threshold=-1.0, top_k=1, mode="sync"))
    try:
        env.use(["beach"])
        assert env.run(photo) == {"budapest.jpg": Status.TAGGED}
        assert exif_keywords(photo) == {"iptc": [*persons, "beach"], "xmp": [*persons, "beach"]}
        assert env.store.ledger(env.store.file(str(photo)).id) == ["beach"]
        env.use(["forest"])
        env.pipeline.retag()  # sync: ours swapped, the person's stay in both fields
        assert exif_keywords(photo) == {"iptc": [*persons, "forest"], "xmp": [*persons, "forest"]}
        assert env.pipeline.untag(str(photo)).status == Status.UNTAGGED
        assert exif_keywords(photo) == {"iptc": persons, "xmp": []}
    finally:
        env.close()


def test_append_never_removes_and_overwrite_is_undone_by_untag(tmp_path: Path, tiny_checkpoint: Path) -> None:
    photo = person_tags(noise_jpeg(tmp_path / "in" / "p.jpg", seed=3), "Anna", "Ünïcödé")
    before = keyword_sets(photo)
    env = Env(tmp_path, tiny_checkpoint, TaggingConfig(threshold=-1.0, top_k=1, mode="append"))
    try:
        env.use(["beach"])
        env.run(photo)
        env.use(["forest"])
        env.pipeline.retag()
        assert keyword_sets(photo) == [({"Anna", "Ünïcödé", "beach", "forest"},) * 2]
        overwrite_with(env, ["mountain"])
        assert keyword_sets(photo) == [({"mountain"},) * 2]
        assert env.pipeline.untag(str(photo)).added == ["Anna", "Ünïcödé"]  # the person's, restored
        assert keyword_sets(photo) == before
    finally:
        env.close()


def copy_away(photo: Path, how: str) -> Path:
    """A copy of ``photo`` under a new name in the watched folder, the original gone: a move across
    disks (``cp -p`` then ``rm``, as file managers do it), or a move out of the folder and back."""
    if how == "copy then delete":
        copy = photo.parent / "moved" / photo.name
        copy.parent.mkdir()
        shutil.copy2(photo, copy)
        photo.unlink()
        return copy
    outside = photo.parents[2] / "outside" / photo.name
    outside.parent.mkdir()
    photo.rename(outside)
    return outside.rename(photo.with_name("back again.jpg"))


@pytest.mark.parametrize("how", ["copy then delete", "out and back"])
def test_a_copied_photo_keeps_the_record_of_our_keywords(tmp_path: Path, tiny_checkpoint: Path,
                                                         how: str) -> None:
    """The copy is a new file to tagwatch, holding keywords tagwatch wrote into the same picture:
    they stay tagwatch's, so untag takes them out of the copy and sync can still drop them."""
    env = Env(tmp_path, tiny_checkpoint, TaggingConfig(threshold=-1.0, top_k=2, mode="sync"))
    try:
        env.use(["beach", "forest"])
        photo = person_tags(noise_jpeg(tmp_path / "in" / "a.jpg", seed=11), "Anna")
        assert env.run(photo) == {"a.jpg": Status.TAGGED}
        copy = copy_away(photo, how)
        assert env.pipeline.apply([Delete(str(photo))]) == []
        assert env.run(copy) == {copy.name: Status.TAGGED}
        assert sorted(env.store.ledger(env.store.file(str(copy)).id)) == ["beach", "forest"]
        env.use(["forest", "mountain"])
        env.pipeline.retag()  # sync: beach is ours in the copy too, and goes
        assert keyword_sets(copy) == [({"Anna", "forest", "mountain"},) * 2]
        assert env.pipeline.untag(str(copy)).status == Status.UNTAGGED
        assert keyword_sets(copy) == [({"Anna"},) * 2]
    finally:
        env.close()


@pytest.mark.parametrize("how", ["cp over it", "rsync (a temporary file renamed over it)"])
def test_a_photo_sent_again_over_the_tagged_one_gets_its_keywords_again(
        tmp_path: Path, tiny_checkpoint: Path, caplog: pytest.LogCaptureFixture, how: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A drop folder: the photographer sends the same photo again, straight from the camera, over
    the one tagwatch tagged.  It holds none of tagwatch's keywords, which was taken for a person
    taking them out: never written again, the photo left with no keywords for good (and the dry run
    said "no tag above threshold").  The version tagwatch found before its first write is
    recognised by its metadata: its keywords are written again.  A person's removal stays one."""
    # sent again minutes later, not within the seconds a save built from the version before our
    # write lands in (that one is written again as well: see STALE_SAVE_NS)
    monkeypatch.setattr(writeback, "STALE_SAVE_NS", 0)
    env = Env(tmp_path, tiny_checkpoint, TaggingConfig(threshold=-1.0, top_k=2))
    try:
        env.use(["beach", "forest"])
        camera = person_tags(noise_jpeg(tmp_path / "camera" / "a.jpg", seed=21), "Anna")
        photo = tmp_path / "in" / "a.jpg"
        photo.parent.mkdir()
        shutil.copyfile(camera, photo)
        assert env.run(photo) == {"a.jpg": Status.TAGGED}
        for _ in range(2):  # sent again twice: the second time is recognised as well
            if how == "cp over it":
                shutil.copyfile(camera, photo)
            else:
                os.replace(shutil.copyfile(camera, photo.with_name(".a.jpg.Xq3f")), photo)
            assert keyword_sets(photo) == [({"Anna"},) * 2]
            preview = env.pipeline.process([str(photo)], dry_run=True)[0]
            assert {k for k, _ in preview.tags} == {"beach", "forest"}, preview
            caplog.clear()
            with caplog.at_level("INFO", logger="tagwatch"):
                assert env.run(photo) == {"a.jpg": Status.TAGGED}
            assert keyword_sets(photo) == [({"Anna", "beach", "forest"},) * 2]
            assert "the version tagwatch found before its first write, again" in caplog.text, caplog.text
            assert env.store.ledger(env.store.file(str(photo)).id, DECLINED) == []
        # A person who takes one out (here with exiftool, as an app would) took it out
        subprocess.run(["exiftool", "-q", "-overwrite_original", "-IPTC:Keywords-=beach",
                        "-XMP-dc:Subject-=beach", str(photo)], check=True)
        env.run(photo)
        assert keyword_sets(photo) == [({"Anna", "forest"},) * 2]
        assert env.store.ledger(env.store.file(str(photo)).id, DECLINED) == ["beach"]
    finally:
        env.close()


def test_a_copy_is_said_to_be_of_the_file_still_there_in_its_one_line(
        tmp_path: Path, tiny_checkpoint: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A photo moved across disks, then copied: the line named the first path ever recorded with the
    picture, which the move had taken away, not the file the person copied.  And a copy got two
    lines ("a copy of …", then "checked …"), read as two photos: one line says both, and its JSON
    event (``tagged``) carries the original (``from``) and the keywords taken up (``adopted``)."""
    env = Env(tmp_path, tiny_checkpoint, TaggingConfig(threshold=-1.0, top_k=2))

    def said(path: Path) -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.levelno >= logging.INFO and str(path) in r.getMessage()]

    try:
        env.use(["beach", "forest"])
        photo = noise_jpeg(tmp_path / "in" / "a.jpg", seed=13)
        env.run(photo)
        moved = copy_away(photo, "copy then delete")
        env.pipeline.apply([Delete(str(photo))])
        caplog.clear()
        with caplog.at_level("INFO", logger="tagwatch"):
            env.run(moved)
        [line] = said(moved)
        assert line.getMessage().startswith(
            f"checked {moved}, moved here from {photo} (beach, forest, written there by tagwatch, are "
            "tagwatch's here too): "), line.getMessage()
        assert line.getMessage().endswith(" (already in the file)"), line.getMessage()
        again = shutil.copy2(moved, tmp_path / "in" / "again.jpg")
        caplog.clear()
        with caplog.at_level("INFO", logger="tagwatch"):
            assert env.run(again) == {"again.jpg": Status.TAGGED}
        [line] = said(again)
        assert f"checked {again}, a copy of {moved} (beach, forest, written there" in line.getMessage()
        record = json.loads(JsonFormatter().format(line))  # as --log-format json writes it
        assert {k: record.get(k) for k in ("event", "path", "from", "adopted", "original_gone")} == {
            "event": "tagged", "path": str(again), "from": str(moved), "adopted": ["beach", "forest"],
            "original_gone": False}
        assert sorted(record["tags"]) == ["beach", "forest"]
    finally:
        env.close()


def tagged_library(tmp_path: Path, tiny_checkpoint: Path, known: Path, *also: Path) -> tuple[Path, Path]:
    """Three photos (one with a person's keyword) scanned under ``photos``, with any put there
    before, watched with ``also`` (scanned too, by the same scan): the library and its config, whose
    database is a copy of ``known``'s (the pictures' vectors cached: no model child).  Places off: a
    dry run then reads a photo's metadata only where it has a reason to."""
    library = tmp_path / "photos"
    person_tags(noise_jpeg(library / "2024" / "p0.jpg", seed=500), "Holiday")
    for i in (1, 2):
        noise_jpeg(library / "2024" / f"p{i}.jpg", seed=500 + i)
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[library, *also],
                          tags=["beach", "forest"], top_k=2, extra="[places]\nenabled = false",
                          database=known_database(known, tmp_path))
    result = tagwatch("scan", "--config", str(config), str(library), *map(str, also))
    assert result.returncode == 0, result.stderr
    return library, config


def move_library(library: Path, new: Path, config: Path) -> Path:
    """The library copied to a new disk as ``cp -a`` copies it (names, sizes, times), the old tree
    deleted and ``watch`` set to the new root alone, as a person moves it."""
    shutil.copytree(library, new)
    shutil.rmtree(library)
    text = config.read_text(encoding="utf-8")
    line = next(line for line in text.splitlines() if line.startswith("watch = "))
    config.write_text(text.replace(line, f"watch = {json.dumps([str(new)])}"), encoding="utf-8")
    return new


@pytest.mark.xdist_group("ownership-known")
def test_a_library_moved_to_a_new_disk_is_counted_once(tmp_path: Path, tiny_checkpoint: Path,
                                                       known: Path) -> None:
    """Each photo of a library moved to a new root took its keywords up from its record at the old
    path ("moved here from"), but that record stayed, for good: the old root, no longer watched,
    never had its files seen gone.  ``status`` counted 6 files for 3 photos and every keyword
    twice, and every ``export`` listed each old path "not exported: no such file" (one with nothing
    of tagwatch's in it too: a person gave it the very words tagwatch would write).  A folder only
    taken out of ``watch`` keeps its records: its photos are still there, and it may be watched
    again."""
    archive = tmp_path / "archive"
    noise_jpeg(archive / "a.jpg", seed=510)
    person_tags(noise_jpeg(tmp_path / "photos" / "2024" / "theirs.jpg", seed=503), "beach", "forest")
    library, config = tagged_library(tmp_path, tiny_checkpoint, known, archive)
    before = status(config)
    assert (before["files"], before["keywords_written"]) == (5, 8)
    new = move_library(library, tmp_path / "newdisk" / "photos", config)  # archive: no longer watched
    daemon = Daemon(config, tmp_path / "daemon.log").start()
    try:
        for name in ("p0", "p1", "p2", "theirs"):
            log = daemon.wait_log(f"checked {new}/2024/{name}.jpg")  # ": " or ", moved here from"
    finally:
        assert daemon.stop() == 0
    assert f"{new}/2024/p1.jpg, moved here from {library}/2024/p1.jpg (" in log, log
    after = status(config)
    counters = ("files", "tagged", "keywords_written", "encoded")
    assert [after[name] for name in counters] == [before[name] for name in counters], after
    export = tagwatch("export", "--format", "csv", "--config", str(config))
    assert export.returncode == 0, export.stderr
    assert "not exported" not in export.stderr, export.stderr
    exported = {Path(row.split(",")[0]).parent for row in export.stdout.splitlines()[1:]}
    assert exported == {new / "2024", archive}, export.stdout
    # the photos are still tagwatch's to take out where they are now
    result = tagwatch("untag", "--config", str(config), str(new / "2024" / "p0.jpg"))
    assert result.returncode == 0, result.stderr
    assert keyword_sets(new / "2024" / "p0.jpg") == [({"Holiday"},) * 2]


@pytest.mark.xdist_group("ownership-known")
def test_a_dry_run_after_a_library_moved_says_what_the_scan_does(tmp_path: Path, tiny_checkpoint: Path,
                                                                 known: Path) -> None:
    """After the move, ``scan --dry-run`` printed every photo with scores, "3 tagged": the whole
    library about to be written again; the scan after it wrote nothing ("3 unchanged").  The dry run
    takes each photo's keywords up from its old record as the scan does: "(already in the file)",
    and in sync mode with fewer tags, the keywords of tagwatch's the scan takes out.  So is one
    holding only a person's keywords, the very words tagwatch would write: it was "tagged" too."""
    person_tags(noise_jpeg(tmp_path / "photos" / "2024" / "theirs.jpg", seed=503), "beach", "forest")
    library, config = tagged_library(tmp_path, tiny_checkpoint, known)
    new = move_library(library, tmp_path / "newdisk" / "photos", config)
    dry = tagwatch("scan", "--dry-run", "--config", str(config), str(new))
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert [line.endswith("(already in the file)") for line in lines] == [True] * 4, dry.stdout
    assert "scan: 4 photos: 4 unchanged (dry run: no file written)" in dry.stderr, dry.stderr
    sync = ("--mode", "sync", "--top-k", "1")
    dry = tagwatch("scan", "--dry-run", *sync, "--config", str(config), str(new))
    assert dry.stdout.count("would take out tagwatch's no longer predicted: ") == 3, dry.stdout
    assert "scan: 4 photos: 3 tagged, 1 unchanged (dry run: no file written)" in dry.stderr, dry.stderr
    real = tagwatch("scan", "--config", str(config), str(new))
    assert "scan: 4 photos: 4 unchanged" in real.stderr, real.stderr
    real = tagwatch("scan", *sync, "--config", str(config), str(new))
    assert "scan: 4 photos: 3 tagged, 1 unchanged" in real.stderr, real.stderr
    photos = [new / "2024" / f"{name}.jpg" for name in ("p0", "p1", "p2", "theirs")]
    assert [len(held) for held, _ in keyword_sets(*photos)] == [2, 1, 1, 2]  # p0: and its Holiday


def test_a_keyword_a_person_took_out_of_the_original_stays_out_of_its_copy(tmp_path: Path,
                                                                          tiny_checkpoint: Path) -> None:
    """The copy took the original's record of our keywords but not of the one the person had taken
    out, so the copy's first write put it back.  A dry run said it would be written too."""
    env = Env(tmp_path, tiny_checkpoint, TaggingConfig(threshold=-1.0, top_k=2))
    try:
        env.use(["beach", "forest"])
        photo = noise_jpeg(tmp_path / "in" / "a.jpg", seed=12)
        env.run(photo)
        assert keyword_sets(photo) == [({"beach", "forest"},) * 2]
        subprocess.run(["exiftool", "-q", "-overwrite_original", "-IPTC:Keywords-=beach",
                        "-XMP-dc:Subject-=beach", str(photo)], check=True)
        env.run(photo)  # tagwatch sees beach taken out: declined, never written back
        assert keyword_sets(photo) == [({"forest"},) * 2]
        copy = copy_away(photo, "copy then delete")
        assert env.pipeline.apply([Delete(str(photo))]) == []
        preview = env.pipeline.process([str(copy)], dry_run=True)[0]
        assert (preview.status, [k for k, _ in preview.tags]) == (Status.UNCHANGED, ["forest"]), preview
        env.run(copy)
        assert keyword_sets(copy) == [({"forest"},) * 2]
        assert env.pipeline.untag(str(copy)).status == Status.UNTAGGED
        assert keyword_sets(copy) == [(set(),) * 2]
    finally:
        env.close()


def test_untag_gives_a_copy_back_as_its_original_was(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """What the original's ledger knows of its fields comes with the keywords: the dc:subject tagwatch
    created in an IPTC-only photo goes from the copy too, and what overwrite took out comes back."""
    photo = tmp_path / "in" / "budapest.jpg"
    photo.parent.mkdir()
    shutil.copyfile(CORPUS / "pillow__iptc.jpg", photo)
    before = exif_keywords(photo)
    env = Env(tmp_path, tiny_checkpoint, TaggingConfig(threshold=-1.0, top_k=1))
    try:
        env.use(["beach"])
        env.run(photo)
        overwrite_with(env, ["forest"])
        assert exif_keywords(photo) == {"iptc": ["forest"], "xmp": ["forest"]}
        copy = copy_away(photo, "copy then delete")
        assert env.pipeline.apply([Delete(str(photo))]) == []
        assert env.run(copy) == {copy.name: Status.TAGGED}
        assert env.pipeline.untag(str(copy)).status == Status.UNTAGGED
        assert exif_keywords(copy) == before
    finally:
        env.close()


def test_a_copy_holding_only_some_of_our_keywords_claims_none(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """A copy made before tagwatch's write, where a person added one of the same words themselves,
    or one whose keywords a person edited: what it holds is the person's."""
    env = Env(tmp_path, tiny_checkpoint, TaggingConfig(threshold=-1.0, top_k=2))
    try:
        env.use(["beach", "forest"])
        photo = noise_jpeg(tmp_path / "in" / "a.jpg", seed=12)
        early, twin = tmp_path / "in" / "early.jpg", tmp_path / "in" / "twin.jpg"
        shutil.copy2(photo, early)  # copied before tagwatch saw either
        shutil.copy2(photo, twin)
        person_tags(early, "beach")
        person_tags(twin, "beach", "forest")  # the very words tagwatch is about to write into a.jpg
        assert env.run(photo) == {"a.jpg": Status.TAGGED}
        assert env.run(early) == {"early.jpg": Status.TAGGED}  # forest written: ours; beach theirs
        assert env.store.ledger(env.store.file(str(early)).id) == ["forest"]
        assert env.pipeline.untag(str(early)).status == Status.UNTAGGED
        assert keyword_sets(early) == [({"beach"},) * 2]
        # The duplicate a person tagged with the words tagwatch wrote into a.jpg is no copy of the
        # version tagwatch wrote (not its size): the words stay theirs
        env.pipeline.apply([Delete(str(photo))])
        photo.unlink()
        assert env.run(twin) == {"twin.jpg": Status.TAGGED}
        assert env.store.ledger(env.store.file(str(twin)).id) == []
        assert env.pipeline.untag(str(twin)).status == Status.UNCHANGED
        assert keyword_sets(twin) == [({"beach", "forest"},) * 2]
    finally:
        env.close()


@pytest.mark.xdist_group("ownership-known")
def test_untag_with_nothing_of_ours_in_the_file_says_so(tmp_path: Path, tiny_checkpoint: Path,
                                                        known: Path) -> None:
    folder = tmp_path / "photos"
    photo = person_tags(noise_jpeg(folder / "p.jpg", seed=13), "beach")
    config = write_config(tmp_path / "conf", tiny_checkpoint, tags=["beach"], top_k=1,
                          database=known_database(known, tmp_path))
    result = tagwatch("scan", "--config", str(config), str(folder))
    assert result.returncode == 0, result.stderr
    result = tagwatch("untag", "--config", str(config), str(photo))
    assert result.returncode == 0, result.stderr
    assert "untag: 1 file: 1 unchanged" in result.stderr, result.stderr
    assert "nothing of tagwatch's in it to take out" in result.stderr
    assert keyword_sets(photo) == [({"beach"},) * 2]


def test_untag_after_append_and_two_overwrites_gives_each_field_back_in_order(tmp_path: Path,
                                                                             tiny_checkpoint: Path) -> None:
    """exiftool__ExifTool.jpg keeps different keywords in IPTC and in dc:subject: each field gets its
    own back, in their order, plus the keyword a person added between the two overwrites."""
    photo = tmp_path / "in" / "p.jpg"
    photo.parent.mkdir()
    shutil.copyfile(CORPUS / "exiftool__ExifTool.jpg", photo)
    assert exif_keywords(photo) == {"iptc": ["jambalaya"], "xmp": ["ExifTool", "Test", "XMP"]}
    env = Env(tmp_path, tiny_checkpoint, TaggingConfig(threshold=-1.0, top_k=1, mode="append"))
    try:
        env.use(["beach"])
        env.run(photo)
        overwrite_with(env, ["forest"])
        assert exif_keywords(photo) == {"iptc": ["forest"], "xmp": ["forest"]}
        subprocess.run(["exiftool", "-q", "-overwrite_original", "-IPTC:Keywords+=Bob", str(photo)],
                       check=True)  # a person's keyword, in IPTC only
        overwrite_with(env, ["mountain"])
        assert exif_keywords(photo) == {"iptc": ["mountain"], "xmp": ["mountain"]}
        assert env.pipeline.untag(str(photo)).status == Status.UNTAGGED
        assert exif_keywords(photo) == {"iptc": ["jambalaya", "Bob"], "xmp": ["ExifTool", "Test", "XMP"]}
    finally:
        env.close()


@pytest.mark.parametrize("style", ["photo.jpg.xmp", "photo.xmp"])
def test_a_renamed_photo_takes_its_sidecar_along(tmp_path: Path, tiny_checkpoint: Path, style: str) -> None:
    env = Env(tmp_path, tiny_checkpoint, TaggingConfig(threshold=-1.0, top_k=2),
              WriteConfig(target="sidecar", sidecar=style))
    try:
        env.use(["beach", "forest"])
        photo = noise_jpeg(tmp_path / "in" / "IMG_1.jpg", seed=4)
        env.run(photo)
        writer = env.pipeline.writer
        old_sidecar = writer.sidecar_for(photo)
        renamed = photo.with_name("beach day.jpg")
        photo.rename(renamed)  # a file manager renames the photo only
        assert env.pipeline.apply([Move(str(photo), str(renamed))]) == []
        assert not old_sidecar.exists()
        assert set(exif_keywords(writer.sidecar_for(renamed))["xmp"]) == {"beach", "forest"}
        assert env.run(renamed) == {"beach day.jpg": Status.UNCHANGED}  # nothing to re-encode or rewrite
    finally:
        env.close()


@pytest.mark.xdist_group("ownership-known")
def test_untag_command_on_a_folder(tmp_path: Path, tiny_checkpoint: Path, known: Path) -> None:
    folder = tmp_path / "photos"
    photos = [noise_jpeg(folder / f"p{i}.jpg", seed=i) for i in range(2)]
    person_tags(photos[0], "Anna")
    config = write_config(tmp_path / "conf", tiny_checkpoint, tags=["beach", "Anna"], top_k=2,
                          database=known_database(known, tmp_path))
    result = tagwatch("scan", "--config", str(config), str(folder))
    assert result.returncode == 0, result.stderr
    assert keyword_sets(*photos) == [({"Anna", "beach"},) * 2, ({"Anna", "beach"},) * 2]
    result = tagwatch("untag", "--config", str(config), str(folder))
    assert result.returncode == 0, result.stderr
    assert "untag: 2 files: 2 untagged" in result.stderr
    assert keyword_sets(*photos) == [({"Anna"},) * 2, (set(), set())]


def hierarchical(photo: Path) -> list[str]:
    out = exiftool_read("-j", "-XMP-lr:HierarchicalSubject", str(photo))
    value = json.loads(out)[0].get("HierarchicalSubject", [])
    return value if isinstance(value, list) else [value]


def test_a_keyword_already_there_in_another_case_is_not_written_again(tmp_path: Path,
                                                                       tiny_checkpoint: Path) -> None:
    """The person's BEACH is the keyword beach: no second spelling beside it; and a tag "florence"
    with the place Florence is one keyword (a photo never gets the same keyword twice)."""
    from tagwatch.config import PlacesConfig
    from tagwatch.places import Geocoder

    photo = person_tags(noise_jpeg(tmp_path / "in" / "p.jpg", seed=12), "BEACH")
    subprocess.run(["exiftool", "-q", "-overwrite_original", "-GPSLatitude=43.7731", "-GPSLatitudeRef=N",
                    "-GPSLongitude=11.2560", "-GPSLongitudeRef=E", str(photo)], check=True)
    env = Env(tmp_path, tiny_checkpoint, TaggingConfig(threshold=-1.0, top_k=3), places=PlacesConfig())
    try:
        env.pipeline.places.geocoder = Geocoder()
        env.use(["beach", "florence", "forest"])
        env.run(photo)
        assert keyword_sets(photo) == [({"BEACH", "florence", "forest", "Italy", "Tuscany"},) * 2]
        assert env.pipeline.untag(str(photo)).status == "untagged"
        assert keyword_sets(photo) == [({"BEACH"},) * 2]
    finally:
        env.close()


def test_a_predicted_keyword_the_person_placed_gets_no_path_of_ours(tmp_path: Path,
                                                                   tiny_checkpoint: Path) -> None:
    """The person has dog, filed in Lightroom as Pets|dog; tagwatch predicts dog under animal: the
    keyword is theirs, so no animal|dog is added beside their path (untag, which takes out only
    what is ours, left it behind)."""
    photo = person_tags(noise_jpeg(tmp_path / "in" / "p.jpg", seed=9), "dog")
    subprocess.run(["exiftool", "-q", "-overwrite_original", "-XMP-lr:HierarchicalSubject=Pets|dog",
                    str(photo)], check=True)
    env = Env(tmp_path, tiny_checkpoint, TaggingConfig(threshold=-1.0, top_k=10, mode="sync"))
    try:
        env.pipeline.use_vocabulary(parse_rich_tag_list(
            '[[tag]]\nkeyword = "animal"\n[[tag]]\nkeyword = "dog"\nparent = "animal"\n',
            ("a photo of a {}.",), tmp_path / "t.toml"))
        env.run(photo)
        assert keyword_sets(photo) == [({"dog", "animal"},) * 2]
        assert sorted(hierarchical(photo)) == ["Pets|dog", "animal"]
        assert env.pipeline.untag(str(photo)).status == "untagged"
        assert keyword_sets(photo) == [({"dog"},) * 2] and hierarchical(photo) == ["Pets|dog"]
    finally:
        env.close()


def test_parent_paths_are_ours_exactly_through_a_parent_edit_sync_and_untag(
        tmp_path: Path, tiny_checkpoint: Path, caplog: pytest.LogCaptureFixture) -> None:
    photo = person_tags(noise_jpeg(tmp_path / "in" / "p.jpg", seed=8), "Anna")
    before = keyword_sets(photo)
    env = Env(tmp_path, tiny_checkpoint, TaggingConfig(threshold=-1.0, top_k=10, mode="sync"),
              WriteConfig(hierarchy_prefix="auto"))
    tree = ('[[tag]]\nkeyword = "animal"\n[[tag]]\nkeyword = "dog"\nparent = "animal"\n'
            '[[tag]]\nkeyword = "golden retriever"\nparent = "{parent}"\n')
    try:
        def use(text: str) -> None:
            env.pipeline.use_vocabulary(parse_rich_tag_list(text, ("a photo of a {}.",), tmp_path / "t.toml"))

        use(tree.format(parent="dog"))
        env.run(photo)
        assert keyword_sets(photo) == [({"Anna", "animal", "dog", "golden retriever"},) * 2]
        # a new hierarchical field also carries the person's flat keyword, or digiKam would hide it
        assert sorted(hierarchical(photo)) == ["Anna", "auto|animal", "auto|animal|dog",
                                               "auto|animal|dog|golden retriever"]
        file_id = env.store.file(str(photo)).id
        assert sorted(env.store.ledger(file_id)) == ["animal", "dog", "golden retriever"]

        encoded = env.encoded()
        use(tree.format(parent="animal"))  # the same tags predicted, only the hierarchy moves
        with caplog.at_level("INFO", logger="tagwatch"):
            assert env.pipeline.retag() == (1, 1)  # rewritten: no keyword added, the hierarchy re-spelled
        assert "(already in the file; re-filed under their new paths: golden retriever)" in caplog.text
        assert env.encoded() == encoded
        assert sorted(hierarchical(photo)) == ["Anna", "auto|animal", "auto|animal|dog",
                                               "auto|animal|golden retriever"]
        assert keyword_sets(photo) == [({"Anna", "animal", "dog", "golden retriever"},) * 2]
        assert env.store.ledger_paths(file_id) == {"dog": ("animal|dog",),
                                                   "golden retriever": ("animal|golden retriever",)}

        use('[[tag]]\nkeyword = "animal"\n[[tag]]\nkeyword = "dog"\nparent = "animal"\n')
        env.pipeline.retag()  # sync: golden retriever is ours and no longer predicted
        assert keyword_sets(photo) == [({"Anna", "animal", "dog"},) * 2]
        assert sorted(hierarchical(photo)) == ["Anna", "auto|animal", "auto|animal|dog"]

        assert env.pipeline.untag(str(photo)).status == "untagged"
        assert keyword_sets(photo) == before
        # the hierarchical field tagwatch created (the person's Anna copied in beside ours) goes with
        # ours: the photo is as it was; Anna stays in IPTC and dc:subject, where the person put it
        assert hierarchical(photo) == []
    finally:
        env.close()


def pending(config: Path, photo: Path) -> list[str]:
    """What the review page's photo view says is on its way into ``photo`` (its *Writing into the
    file* line), as a page serving ``config`` would render it now."""
    from tagwatch.config import load_config
    from tagwatch.metadata import ExifTool, KeywordWriter
    from tagwatch.store import Store
    from tagwatch.web.library import Library

    loaded = load_config(config)
    store, exiftool = Store(loaded.database), ExifTool()
    try:
        library = Library(loaded, store, KeywordWriter(exiftool, loaded.write), lambda: True)
        return library.photo(str(photo)).pending
    finally:
        exiftool.close()
        store.close()


@pytest.mark.xdist_group("ownership-known")
def test_the_review_page_says_overwrite_takes_a_persons_keyword_out_only_where_the_write_does(
        tmp_path: Path, tiny_checkpoint: Path, known: Path) -> None:
    """The photo page's *Writing into the file* line knew nothing of overwrite mode: a keyword a
    person saved into a photo, which the next write takes out, was not said to be on its way out.
    The page now decides it with the write's own functions (``TagRules.planned``,
    ``metadata.overwritten``), so it says so where something is predicted, and not where a
    correction took out every prediction (overwrite then writes as append, keeping the person's).
    Each time the page's answer is checked against what the scan then writes."""
    root = tmp_path / "photos"
    photo = noise_jpeg(root / "p.jpg", seed=41)
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[root],
                          tags=["beach", "forest", "mountain"], top_k=1,
                          database=known_database(known, tmp_path))
    config.write_text(config.read_text(encoding="utf-8").replace(
        'tags = "tags.txt"\n', 'tags = "tags.txt"\noverrides = "o.toml"\n').replace(
        "top_k = 1\n", 'top_k = 1\nmode = "overwrite"\n'), encoding="utf-8")

    def scan() -> None:
        result = tagwatch("scan", "--config", str(config), str(root))
        assert result.returncode == 0, result.stderr

    scan()
    (tag,) = exif_keywords(photo)["iptc"]
    assert pending(config, photo) == []
    person_tags(photo, tag, "holiday")  # the person's app saves the photo with a keyword of theirs
    assert pending(config, photo) == ["taking out 'holiday'"]
    scan()
    assert keyword_sets(photo) == [({tag},) * 2], "the write takes it out, as the page said"
    assert pending(config, photo) == []

    # the photo's one prediction rejected: nothing predicted, so overwrite writes as append
    (config.parent / "o.toml").write_text(f'[[override]]\npath = "{photo}"\nremove = ["{tag}"]\n',
                                          encoding="utf-8")
    person_tags(photo, tag, "holiday")
    assert pending(config, photo) == [f"taking out {tag!r}"]  # the correction's; holiday stays
    scan()
    assert keyword_sets(photo) == [({"holiday"},) * 2], "the write keeps it, as the page said"
    assert pending(config, photo) == []
