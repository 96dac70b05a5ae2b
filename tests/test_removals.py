"""A keyword tagwatch wrote that a person takes out of a photo stays out of that photo.

The person works in another app, here exiftool saving with ``-overwrite_original`` as photo apps
save (a new file renamed over the photo).  Metadata edits leave the photo's content key as it was,
so the daemon scores its cached vector again, still predicts the keyword, and before this wrote it
back after every removal.  Now the ledger records the keyword declined: never written into that
photo again, in any mode, through restarts, rescans and tag-list edits; no longer tagwatch's, so
``untag`` and sync leave it alone; the person's own once they put it back.  Not a removal: a
keyword recorded ahead of a write a crash stopped, and a save built from the version before our
write (a photo app that read the photo just before tagwatch wrote it).
"""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import synthetic
from conftest import (
    SHAPES_CHECKPOINT,
    SHAPES_CONFIG,
    Daemon,
    Env,
    exif_keywords,
    exiftool_read,
    noise_jpeg,
    wait_for,
)
from conftest import tagwatch as cli
from tagwatch.cli.explain import TAKEN_OUT, explain
from tagwatch.cli.status import render, status
from tagwatch.config import PlacesConfig, TaggingConfig, load_config
from tagwatch.formats import content_key
from tagwatch.logs import JsonFormatter
from tagwatch.metadata import ExifTool, KeywordWriter
from tagwatch.outcomes import Status
from tagwatch.overrides import correct, parse_overrides
from tagwatch.places import Geocoder
from tagwatch.queue import Delete, Move
from tagwatch.store import ADDED, DECLINED, USER, WITHDRAWN, Store
from tagwatch.vocabulary import load_configured
from tagwatch.web.library import Library
from tagwatch.writeback import RESTORED, Writeback, WriteJob, known_paths
from test_expansion import SHAPES_LIST, THRESHOLD
from test_reliability import TAGS, ours, shape_jpeg, shapes_config, store_rows

FLORENCE = ["-GPSLatitude=43.7731", "-GPSLatitudeRef=N", "-GPSLongitude=11.2560", "-GPSLongitudeRef=E"]


def edit(photo: Path, *args: str, app: ExifTool | None = None) -> None:
    """The person's app saves the photo (a new file renamed over it): exiftool, a new process or,
    where a test makes many edits, one that stays open."""
    if app is None:
        subprocess.run(["exiftool", "-q", "-overwrite_original", "-charset", "iptc=UTF8", *args, str(photo)],
                       check=True)
    else:
        out, err = app.execute("-overwrite_original", "-charset", "iptc=UTF8", *args, str(photo))
        assert "1 image files updated" in out, err


def take_out(photo: Path, *keywords: str, hierarchical: tuple[str, ...] = (),
             app: ExifTool | None = None) -> None:
    """Remove keywords from every field they are in, as Lightroom or digiKam do."""
    edit(photo, *(a for k in keywords for a in (f"-IPTC:Keywords-={k}", f"-XMP-dc:Subject-={k}")),
         *(f"-XMP-lr:HierarchicalSubject-={h}" for h in hierarchical), app=app)


def put_in(photo: Path, *keywords: str, app: ExifTool | None = None) -> None:
    edit(photo, *(a for k in keywords for a in (f"-IPTC:Keywords+={k}", f"-XMP-dc:Subject+={k}")), app=app)


def held(photo: Path, env: Env | None = None) -> set[str]:
    """The photo's keywords, which must be the same in IPTC and XMP (read by a new exiftool, or by
    the ``env``'s)."""
    if env is None:
        found = exif_keywords(photo)
        iptc, xmp = found["iptc"], found["xmp"]
    else:
        assert env.pipeline.writer is not None
        keywords = env.pipeline.writer.read(photo)
        iptc, xmp = list(keywords.iptc), list(keywords.xmp)
    assert sorted(iptc) == sorted(xmp), (iptc, xmp)
    return set(iptc)


def ledger(database: Path, photo: Path) -> dict[str, str]:
    db = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)
    try:
        return dict(db.execute("SELECT keyword, action FROM ledger JOIN files ON files.id = file_id "
                               "WHERE path = ?", (str(photo),)).fetchall())
    finally:
        db.close()


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    (tmp_path / "photos").mkdir()
    running = Daemon(shapes_config(tmp_path / "conf", [tmp_path / "photos"]), tmp_path / "daemon.log")
    yield running
    if running.proc is not None and running.proc.poll() is None:
        running.kill()


def test_a_keyword_a_person_takes_out_stays_out_through_events_restarts_and_tag_list_edits(
        daemon: Daemon, tmp_path: Path) -> None:
    root, database = tmp_path / "photos", tmp_path / "conf" / "state" / "tagwatch.db"
    tags_file = tmp_path / "conf" / "tags.txt"
    daemon.start()
    a = shape_jpeg(root / "a.jpg", "red", "circle", seed=701)
    b = shape_jpeg(root / "b.jpg", "green", "square", seed=702)
    wait_for(lambda: all(ours(database, p) and held(p) >= set(ours(database, p)) for p in (a, b)))
    assert (held(a), held(b)) == ({"red", "circle"}, {"green", "square"})

    # In another app the person takes "circle" out and adds a keyword of their own
    mark = len(daemon.log())
    edit(a, "-IPTC:Keywords-=circle", "-XMP-dc:Subject-=circle", "-IPTC:Keywords+=Anna",
         "-XMP-dc:Subject+=Anna")
    daemon.wait_log(f"{a}: circle taken out of it by a person", since=mark)
    daemon.wait_log(f"checked {a}: red (already in the file)", since=mark)  # nothing written
    assert held(a) == {"red", "Anna"}  # not written back; our other keyword and theirs stay
    assert ledger(database, a) == {"red": ADDED, "circle": DECLINED}
    assert "circle" in ours(database, a)  # still what the photo is predicted to show

    # Taken out while the daemon is stopped: the start-up scan finds it
    assert daemon.stop() == 0
    take_out(b, "square")
    mark = len(daemon.log())
    daemon.start()
    daemon.wait_log(f"{b}: square taken out of it by a person", since=mark)
    daemon.wait_log(f"checked {b}: green (already in the file)", since=mark)
    assert held(b) == {"green"}
    # A dry run shows what a scan would write: never the keyword the person took out, for a photo
    # settled (its recorded tags) or decided again (another top_k)
    for extra in ((), ("--top-k", "5")):
        dry = cli("scan", "--dry-run", "--config", str(daemon.config), *extra, str(b))
        assert dry.returncode == 0, dry.stderr
        line = next(line for line in dry.stdout.splitlines() if line.startswith(f"{b}\t"))
        assert "green" in line and "square" not in line, line

    # A tag-list edit re-scores every photo: sync takes our red and green out, and still never
    # writes circle or square, predicted as they are
    mark = len(daemon.log())
    tags_file.write_text("\n".join(t for t in TAGS if t not in ("red", "green")) + "\n", encoding="utf-8")
    daemon.wait_log("re-scored 2 photos, rewrote 2", since=mark)
    assert (held(a), held(b)) == ({"Anna"}, set())

    # The person puts circle back: theirs now; the list restored gives back red and green only
    put_in(a, "circle")
    wait_for(lambda: store_rows(database)[str(a)]["mtime_ns"] == a.stat().st_mtime_ns)
    mark = len(daemon.log())
    tags_file.write_text("\n".join(TAGS) + "\n", encoding="utf-8")
    daemon.wait_log("re-scored 2 photos, rewrote 2", since=mark)
    assert (held(a), held(b)) == ({"Anna", "circle", "red"}, {"green"})
    assert ledger(database, a) == {"red": ADDED, "circle": DECLINED}
    assert ledger(database, b) == {"green": ADDED, "square": DECLINED}
    config = load_config(daemon.config)
    lines = {line.keyword: line.verdict for line in explain(config, str(b)).lines}
    assert lines["square"] == TAKEN_OUT and lines["green"] == "TAGGED"
    report, failures = status(config)  # tagwatch status counts them
    assert (report["keywords_declined"], report["keywords_written"]) == (2, 2)
    assert "keywords_declined         2" in render(report, failures)
    store, exiftool = Store(database), ExifTool()
    try:  # the review page's photo view: square is not "about to be written", and its history says why
        view = Library(config, store, KeywordWriter(exiftool, config.write), lambda: True).photo(str(b))
    finally:
        exiftool.close()
        store.close()
    verdicts = {line.keyword: line.verdict for line in view.lines}
    assert verdicts["square"] == "taken out of the file by a person: not written again"
    assert view.pending == [] and ("square", DECLINED) in [(k, action) for k, action, *_ in view.history]

    # untag takes out only what is still ours: the person's circle and Anna stay
    untagged = cli("untag", "--config", str(daemon.config), str(a), str(b))
    assert untagged.returncode == 0, untagged.stderr
    assert (held(a), held(b)) == ({"Anna", "circle"}, set())
    assert daemon.stop() == 0


def test_a_crash_before_the_write_and_a_save_built_from_before_it_are_not_removals(
        tmp_path: Path, tiny_checkpoint: Path) -> None:
    env = Env(tmp_path, tiny_checkpoint, TaggingConfig(threshold=-1.0, top_k=2, mode="sync"))
    try:
        env.use(["beach", "forest"])
        photo = noise_jpeg(tmp_path / "in" / "p.jpg", seed=11)
        # A crash right after the ledger was written ahead: recorded, never written, never done
        job = WriteJob(str(photo), content_key(photo.read_bytes()), photo.lstat(),
                       [("beach", 0.3), ("forest", 0.2)])
        env.pipeline.writeback.plan_ahead(job, env.pipeline.rules)
        row = env.store.file(str(photo))
        assert row.state == "pending" and env.store.pending_ledger(row.id) == {"beach", "forest"}
        assert held(photo, env) == set()
        assert env.run(photo) == {"p.jpg": Status.TAGGED}  # the next scan: written, not "taken out"
        assert held(photo, env) == {"beach", "forest"}
        assert env.store.ledgers([row.id])[row.id] == {"beach": ADDED, "forest": ADDED}
        assert env.store.pending_ledger(row.id) == set()

        # A photo app that read the photo just before our write saves just after it: everything
        # our write added is missing, seconds after it.  Written again, not taken for a removal.
        take_out(photo, "beach", "forest", app=env.exiftool)
        assert env.run(photo) == {"p.jpg": Status.TAGGED}
        assert held(photo, env) == {"beach", "forest"}

        # The same removal long after the write (an hour, as the database tells it) is the person's
        with sqlite3.connect(env.store.path) as db:
            db.execute("UPDATE files SET written_ns = written_ns - 3600000000000 WHERE id = ?", (row.id,))
        take_out(photo, "beach", "forest", app=env.exiftool)
        assert env.run(photo) == {"p.jpg": Status.TAGGED}
        assert held(photo, env) == set()
        assert env.store.ledgers([row.id])[row.id] == {"beach": DECLINED, "forest": DECLINED}

        # A correction adding one back is the person's instruction: written, and theirs
        env.pipeline.use_overrides(parse_overrides(f'[[override]]\npath = "{photo}"\nadd = ["beach"]\n',
                                                   tmp_path / "overrides.toml", [photo.parent]))
        assert env.pipeline.retag() == (1, 1)
        assert held(photo, env) == {"beach"} and env.store.ledger(row.id, USER) == ["beach"]

        # Overwrite mode, which makes the fields hold exactly what is predicted, keeps forest out
        # too, and keeps it once the person puts it back
        overwrite = TaggingConfig(threshold=-1.0, top_k=3, mode="overwrite")
        env.pipeline.tagging = overwrite
        env.use(["beach", "forest", "mountain"], overwrite)
        assert env.pipeline.retag() == (1, 1)
        assert held(photo, env) == {"beach", "mountain"}
        put_in(photo, "forest", app=env.exiftool)
        assert env.run(photo) == {"p.jpg": Status.TAGGED}
        assert held(photo, env) == {"beach", "forest", "mountain"}
        assert env.pipeline.untag(str(photo)).status == Status.UNTAGGED
        assert held(photo, env) == {"beach", "forest"}  # untag: only mountain was still ours
    finally:
        env.close()


def saved_from_before_a_retag(env: Env, tmp_path: Path, tags: list[str], seed: int) -> Path:
    """A photo tagged beach and forest (sync, top_k 2), read by a photo app; the list then becomes
    ``tags`` and the re-score writes the photo; the app then saves its copy (with a rating of its
    own) over it: the version before that write is back, forest in it."""
    env.use(["beach", "forest"])
    photo = noise_jpeg(tmp_path / "in" / "p.jpg", seed=seed)
    assert env.run(photo) == {"p.jpg": Status.TAGGED}
    assert held(photo, env) == {"beach", "forest"}
    editor = tmp_path / "editor.jpg"
    editor.write_bytes(photo.read_bytes())  # the app reads the photo
    env.use(tags)
    assert env.pipeline.retag() == (1, 1)
    assert held(photo, env) == set(tags)
    edit(editor, "-XMP-xmp:Rating=5", app=env.exiftool)  # the app saves its copy over the photo
    editor.replace(photo)
    return photo


def test_a_save_built_from_before_a_sync_removal_leaves_the_keyword_tagwatchs(
        tmp_path: Path, tiny_checkpoint: Path) -> None:
    """A photo app read the photo, sync then took a keyword off the list out of it, and the app's
    save (with a change of its own) lands seconds later with that keyword back: it was taken for
    the person's, which sync and untag never take out, so a tag gone from the list stayed in the
    photo for good.  Now it is tagwatch's again and taken out again; put back long after, it is theirs."""
    env = Env(tmp_path, tiny_checkpoint, TaggingConfig(threshold=-1.0, top_k=2, mode="sync"))
    try:
        photo = saved_from_before_a_retag(env, tmp_path, ["beach"], seed=12)  # forest off the list
        assert held(photo, env) == {"beach", "forest"}
        assert env.run(photo) == {"p.jpg": Status.TAGGED}
        assert held(photo, env) == {"beach"}  # taken out again; the app's own change kept
        assert json.loads(exiftool_read("-j", "-XMP-xmp:Rating", photo))[0]["Rating"] == 5
        row = env.store.file(str(photo))
        assert env.store.ledgers([row.id])[row.id] == {"beach": ADDED, "forest": WITHDRAWN}

        # Put back an hour after tagwatch took it out (as the ledger tells it): the person's
        with sqlite3.connect(env.store.path) as db:
            db.execute("UPDATE ledger SET written = written - 3600 WHERE action = ?", (WITHDRAWN,))
        put_in(photo, "forest", app=env.exiftool)
        env.run(photo)
        assert held(photo, env) == {"beach", "forest"}
        assert env.pipeline.untag(str(photo)).status == Status.UNTAGGED
        assert held(photo, env) == {"forest"}
    finally:
        env.close()


def test_a_save_built_from_before_a_tag_swap_gets_both_put_right(
        tmp_path: Path, tiny_checkpoint: Path) -> None:
    """A list edit that swaps a tag (forest out, lake in: one write takes one out and puts the other
    in), and an app's save built from before it: forest back, lake missing.  Forest is tagwatch's
    again and taken out again; lake is written again, never taken for a person's removal (the
    reclaim once ran first and made forest the latest write, so lake was declined for good)."""
    env = Env(tmp_path, tiny_checkpoint, TaggingConfig(threshold=-1.0, top_k=2, mode="sync"))
    try:
        photo = saved_from_before_a_retag(env, tmp_path, ["beach", "lake"], seed=13)
        assert env.run(photo) == {"p.jpg": Status.TAGGED}
        assert held(photo, env) == {"beach", "lake"}
        row = env.store.file(str(photo))
        assert env.store.ledgers([row.id])[row.id] == {"beach": ADDED, "lake": ADDED, "forest": WITHDRAWN}
    finally:
        env.close()


RESTORED_WARNING = "older than the one tagwatch last used here (restored from a backup?)"


def test_a_restored_database_backup_does_not_take_tagwatchs_later_removals_for_a_persons(
        tmp_path: Path, tiny_checkpoint: Path, caplog: pytest.LogCaptureFixture) -> None:
    """xX #2: a backup of the database (and tag list) taken with tagwatch stopped, a tag-list edit
    that has sync take forest out, then both backups restored.  The restored ledger says forest is
    tagwatch's, the photo lacks it: it was declined for good ("taken out by a person"), though
    predicted and nobody removed it.  Now the restore is noticed (one WARNING) and forest is
    written again; a person's removal made after the restore is still theirs."""
    sync = TaggingConfig(threshold=-1.0, top_k=2, mode="sync")
    photo = noise_jpeg(tmp_path / "in" / "p.jpg", seed=13)
    backup = tmp_path / "backup.db"

    def session(tags: list[str]) -> Env:
        caplog.clear()
        with caplog.at_level("WARNING", logger="tagwatch"):
            env = Env(tmp_path, tiny_checkpoint, sync)
        env.use(tags)
        return env

    env = session(["beach", "forest"])
    try:
        assert env.run(photo) == {"p.jpg": Status.TAGGED}
        assert held(photo, env) == {"beach", "forest"}
    finally:
        env.close()
    shutil.copy(env.store.path, backup)  # tagwatch stopped: the file is the whole database
    env = session(["beach"])  # forest off the list: sync takes it out
    try:
        assert RESTORED_WARNING not in caplog.text  # an ordinary start
        assert env.pipeline.retag() == (1, 1)
        assert held(photo, env) == {"beach"}
    finally:
        env.close()

    shutil.copy(backup, env.store.path)  # the backup restored, and the tag list with it
    env = session(["beach", "forest"])
    try:
        assert caplog.text.count(RESTORED_WARNING) == 1
        caplog.clear()
        # A backup holds the database (BEGIN EXCLUSIVE) as the photo is tried: it waits, and is
        # tried again while the lock lasts; its line was said at every try (5 in the user's run)
        holder = sqlite3.connect(env.store.path, isolation_level=None)
        try:
            holder.execute("BEGIN EXCLUSIVE")
            with caplog.at_level("INFO", logger="tagwatch"), env.store.lock_wait(0.05):
                for _ in range(3):  # the engine's try, which says it waits (test_engine)
                    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
                        env.run(photo)
            holder.execute("COMMIT")
        finally:
            holder.close()
        with caplog.at_level("INFO", logger="tagwatch"):
            assert env.run(photo) == {"p.jpg": Status.TAGGED}
        assert held(photo, env) == {"beach", "forest"}  # written again, not declined
        assert "taken out of it by a person" not in caplog.text
        said = f"{photo}: changed before tagwatch found its database restored"
        assert caplog.text.count(said) == 1, caplog.text  # once for the photo, however often tried
        row = env.store.file(str(photo))
        assert env.store.ledgers([row.id])[row.id] == {"beach": ADDED, "forest": ADDED}
        assert env.store.stats(env.model.identity)["keywords_declined"] == 0

        # The person takes beach out after the restore: theirs, as ever
        take_out(photo, "beach", app=env.exiftool)
        assert env.run(photo) == {"p.jpg": Status.TAGGED}
        assert held(photo, env) == {"forest"}
        assert env.store.ledgers([row.id])[row.id] == {"beach": DECLINED, "forest": ADDED}
    finally:
        env.close()
    env = session(["beach", "forest"])  # noticed once: the next start is an ordinary one
    try:
        assert RESTORED_WARNING not in caplog.text
    finally:
        env.close()


def test_what_was_said_of_a_photos_tries_goes_when_it_is_deleted_or_renamed(tmp_path: Path) -> None:
    """The line said of a photo's try (restored, stale save, sent again) is kept so that its later
    tries say it at DEBUG (the test above), until its outcome is recorded.  One deleted or renamed
    before that, after waiting out a lock, kept it for the daemon's life: a long-running daemon
    grew by one for each.  Now a deletion or a rename (of it, or of its folder) lets it go."""
    store = Store(tmp_path / "tw.db")
    try:
        writeback = Writeback(store, None)
        folder = tmp_path / "in"
        said = (RESTORED, ("forest",), 1)
        photos = [str(folder / name) for name in ("gone.jpg", "renamed.jpg", "kept.jpg", "a/1.jpg",
                                                  "b/2.jpg")]
        assert [writeback._once(photo, said) for photo in photos] == [logging.INFO] * 5
        writeback.apply_ops([Delete(photos[0]), Move(photos[1], str(folder / "new.jpg")),
                             Delete(str(folder / "a"), is_dir=True),
                             Move(str(folder / "b"), str(folder / "c"), is_dir=True)])
        assert list(writeback._said) == [photos[2]]  # nothing of the photos gone, nor under new names
        assert writeback._once(photos[2], said) == logging.DEBUG  # still there: said once
    finally:
        store.close()


def red_square(env: Env, tagging: TaggingConfig, seed: int, tag_list: str = SHAPES_LIST) -> Path:
    """The shapes list (``tag_list``, with parents) in use, and a new red square photo to tag."""
    (env.root / "shapes.toml").write_text(tag_list, encoding="utf-8")
    env.pipeline.use_vocabulary(load_configured(env.root / "shapes.toml", tagging), tagging)
    photo = env.root / "in" / "square.jpg"
    photo.parent.mkdir()
    synthetic.make_photo("red", "square", seed, (160, 120)).save(photo, quality=90)
    return photo


def tagged_red_square(env: Env, tagging: TaggingConfig, seed: int) -> Path:
    """:func:`red_square`, tagged: red and square, and the levels above them (expand = "parents")."""
    photo = red_square(env, tagging, seed)
    assert env.run(photo) == {"square.jpg": Status.TAGGED}
    assert held(photo, env) == {"red", "square", "colour", "polygon", "shape"}
    return photo


def explained(env: Env, photo: Path, overrides: str = "") -> dict[str, str]:
    """``tagwatch explain``'s verdict per keyword for ``photo``, through a config naming the env's
    database and shapes list (and ``overrides``, written to a file, where given)."""
    config = env.root / "config.toml"
    lines = [f'tags = "{env.root / "shapes.toml"}"', f'database = "{env.root / "state" / "tw.db"}"']
    if overrides:
        (env.root / "overrides.toml").write_text(overrides, encoding="utf-8")
        lines.append(f'overrides = "{env.root / "overrides.toml"}"')
    lines += ["[model]", f'name = "{SHAPES_CONFIG}"', f'pretrained = "{SHAPES_CHECKPOINT}"',
              "[tagging]", f"threshold = {THRESHOLD}", 'mode = "sync"']
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {line.keyword: line.verdict for line in explain(load_config(config), str(photo)).lines}


def test_expansion_levels_and_place_keywords_taken_out_stay_out(tmp_path: Path) -> None:
    tagging = TaggingConfig(threshold=THRESHOLD, mode="sync")  # expand = "parents"
    env = Env(tmp_path, SHAPES_CHECKPOINT, tagging, places=PlacesConfig(), model=SHAPES_CONFIG)
    try:
        env.pipeline.places.geocoder = Geocoder()
        photo = red_square(env, tagging, 90002)
        edit(photo, *FLORENCE, app=env.exiftool)
        assert env.run(photo) == {"square.jpg": Status.TAGGED}
        levels, places = {"colour", "polygon", "shape"}, {"Italy", "Tuscany", "Florence"}
        assert held(photo, env) == {"red", "square", *levels, *places}

        # A level expansion wrote and a place, taken out as Lightroom does (flat and hierarchical)
        take_out(photo, "polygon", "Florence", app=env.exiftool,
                 hierarchical=("shape|polygon", "places|Italy|Tuscany|Florence"))
        assert env.run(photo) == {"square.jpg": Status.TAGGED}
        assert held(photo, env) == {"red", "square", "colour", "shape", "Italy", "Tuscany"}
        row = env.store.file(str(photo))
        declined = {k for k, action in env.store.ledgers([row.id])[row.id].items() if action == DECLINED}
        assert declined == {"polygon", "Florence"}
        # Expansion turned off (sync takes our levels out) and on again: the levels come back but polygon
        for step in (TaggingConfig(threshold=THRESHOLD, mode="sync", expand="none"), tagging):
            env.pipeline.use_vocabulary(load_configured(tmp_path / "shapes.toml", step), step)
            assert env.pipeline.retag() == (1, 1)
        assert held(photo, env) == {"red", "square", "colour", "shape", "Italy", "Tuscany"}
        # A dry run shows what the write does, for the photo as recorded and decided again (another
        # top_k): neither keyword taken out, the place included; a correction of theirs adding one
        # back wins over taken out, in the dry run as in the write
        overrides = parse_overrides(f'[[override]]\npath = "{photo}"\nadd = ["polygon"]\n',
                                    tmp_path / "overrides.toml", [photo.parent])
        for step in (tagging, TaggingConfig(threshold=THRESHOLD, mode="sync", top_k=9)):
            env.pipeline.use_vocabulary(load_configured(tmp_path / "shapes.toml", step), step)
            env.pipeline.use_overrides(parse_overrides("", tmp_path / "overrides.toml", [photo.parent]))
            previewed = env.pipeline.process([str(photo)], dry_run=True)[0]
            shown = {k for k, _ in previewed.tags} | set(previewed.places)
            assert "Italy" in shown and not shown & {"polygon", "Florence"}, (step, shown)
            env.pipeline.use_overrides(overrides)
            previewed = env.pipeline.process([str(photo)], dry_run=True)[0]
            assert "polygon" in {k for k, _ in previewed.tags}, step
        env.pipeline.retag()
        assert "polygon" in held(photo, env)
    finally:
        env.close()


def test_a_tag_taken_out_implies_no_level_and_stays_out_when_the_list_re_spells_it(tmp_path: Path) -> None:
    """The person took red out: colour, a level written only because red was predicted, goes too
    (sync) and is not exported; the tag list re-spelling red as "Red" does not bring it back."""
    tagging = TaggingConfig(threshold=THRESHOLD, mode="sync")  # expand = "parents"
    env = Env(tmp_path, SHAPES_CHECKPOINT, tagging, model=SHAPES_CONFIG)
    try:
        photo = tagged_red_square(env, tagging, 90003)
        take_out(photo, "red", app=env.exiftool, hierarchical=("colour|red",))
        assert env.run(photo) == {"square.jpg": Status.TAGGED}
        assert held(photo, env) == {"square", "polygon", "shape"}  # colour was there for red only
        previewed = env.pipeline.process([str(photo)], dry_run=True)[0]
        assert {k for k, _ in previewed.tags} == {"square", "polygon", "shape"}
        exported = tagwatch_export(env, photo)
        assert set(exported) == {"square", "polygon", "shape"}, exported
        verdicts = explained(env, photo)  # explain, reading the same database and list
        assert verdicts["red"] == TAKEN_OUT and not verdicts.get("colour", "").startswith("TAGGED"), verdicts

        (tmp_path / "shapes.toml").write_text(SHAPES_LIST.replace('keyword = "red"', 'keyword = "Red"'),
                                              encoding="utf-8")
        env.pipeline.use_vocabulary(load_configured(tmp_path / "shapes.toml", tagging), tagging)
        env.pipeline.retag()
        assert held(photo, env) == {"square", "polygon", "shape"}  # no "Red" either
    finally:
        env.close()


def test_a_tag_taken_out_takes_every_level_it_alone_implied_along_the_chain(tmp_path: Path) -> None:
    """The person took square out (as Lightroom does, flat and hierarchical): polygon, the level
    above it, went, but shape, the level above polygon, stayed, held up by polygon, itself there
    only for square.  A re-score (a tag-list edit, a restart) then took shape out after all: the
    event's write and the re-score decided the same photo two ways."""
    tagging = TaggingConfig(threshold=THRESHOLD, mode="sync")  # expand = "parents"
    env = Env(tmp_path, SHAPES_CHECKPOINT, tagging, model=SHAPES_CONFIG)
    try:
        photo = tagged_red_square(env, tagging, 90003)
        take_out(photo, "square", app=env.exiftool, hierarchical=("shape|polygon|square",))
        assert env.run(photo) == {"square.jpg": Status.TAGGED}
        assert held(photo, env) == {"red", "colour"}  # polygon and shape were there for square only
        env.pipeline.retag()
        assert held(photo, env) == {"red", "colour"}
    finally:
        env.close()


@pytest.mark.parametrize("mode", ["append", "sync"])
def test_a_tag_the_list_re_spells_replaces_ours_and_is_never_written_twice(
        tmp_path: Path, mode: str, caplog: pytest.LogCaptureFixture) -> None:
    """The tag list re-spelling circle as "Circle" left both spellings in every photo tagged before,
    in append mode (the default): "purple, circle, colour, Circle".  Ours is one keyword whatever its
    case: the new spelling replaces it in every field (the hierarchical path too), untag takes it out.
    The photo's log line says so (xY #4: it read "took out tagwatch's no longer predicted: red" on
    every photo with the tag), and its JSON record counts nothing removed."""
    tagging = TaggingConfig(threshold=THRESHOLD, mode=mode)  # expand = "parents"
    env = Env(tmp_path, SHAPES_CHECKPOINT, tagging, model=SHAPES_CONFIG)
    try:
        photo = red_square(env, tagging, 90006)
        put_in(photo, "Anna")
        assert env.run(photo) == {"square.jpg": Status.TAGGED}
        assert held(photo, env) == {"Anna", "red", "square", "colour", "polygon", "shape"}
        (tmp_path / "shapes.toml").write_text(SHAPES_LIST.replace('keyword = "red"', 'keyword = "Red"'),
                                              encoding="utf-8")
        env.pipeline.use_vocabulary(load_configured(tmp_path / "shapes.toml", tagging), tagging)
        caplog.clear()  # the first tagging's line, where an earlier test left the logger at INFO
        with caplog.at_level("INFO", logger="tagwatch"):
            assert env.pipeline.retag() == (1, 1)
        record = next(r for r in caplog.records if getattr(r, "event", None) == "tagged")
        line = record.getMessage()
        assert line == f"tagged {photo}: square, Red, polygon, shape, colour; re-spelled: red → Red", line
        logged = json.loads(JsonFormatter().format(record))
        assert logged["respelled"] == {"red": "Red"} and "removed" not in logged, logged
        assert held(photo, env) == {"Anna", "Red", "square", "colour", "polygon", "shape"}
        out = exiftool_read("-j", "-XMP-lr:HierarchicalSubject", str(photo))
        paths = json.loads(out)[0]["HierarchicalSubject"]
        assert "colour|Red" in paths and "colour|red" not in paths, paths
        assert env.pipeline.untag(str(photo)).status == Status.UNTAGGED
        assert held(photo, env) == {"Anna"}
    finally:
        env.close()


def test_a_correction_applies_whatever_the_case_and_its_removal_implies_no_level(tmp_path: Path) -> None:
    """The review page's corrections compare keywords as the rest does, without regard to case: a
    rule removing "red" takes out the "Red" the list spells (and wrote), with the level it implied,
    and one adding "SQUARE" where square is predicted writes no second spelling."""
    tagging = TaggingConfig(threshold=THRESHOLD, mode="sync")  # expand = "parents"
    env = Env(tmp_path, SHAPES_CHECKPOINT, tagging, model=SHAPES_CONFIG)
    try:
        photo = red_square(env, tagging, 90004, SHAPES_LIST.replace('keyword = "red"', 'keyword = "Red"'))
        assert env.run(photo) == {"square.jpg": Status.TAGGED}
        assert held(photo, env) == {"Red", "square", "colour", "polygon", "shape"}
        rule = f'[[override]]\npath = "{photo}"\nremove = ["red"]\nadd = ["SQUARE"]\n'
        env.pipeline.use_overrides(parse_overrides(rule, tmp_path / "overrides.toml", [photo.parent]))
        env.pipeline.retag()
        assert held(photo, env) == {"square", "polygon", "shape"}
        verdicts = explained(env, photo, rule)
        assert verdicts["Red"] == "removed by an override", verdicts
        assert verdicts["square"].startswith("added by an override")  # SQUARE is square: one line
        assert not verdicts.get("colour", "").startswith("TAGGED") and "SQUARE" not in verdicts
        # the review page's photo view: nothing is "about to be written", Red is the rejected one
        view = Library(load_config(env.root / "config.toml"), env.store, env.pipeline.writer,
                       lambda: True).photo(str(photo))
        page = {line.keyword: line.verdict for line in view.lines}
        assert page["Red"] == "rejected by your correction" and view.pending == [], (page, view.pending)
    finally:
        env.close()


def tagwatch_export(env: Env, photo: Path) -> list[str]:
    """The keywords ``export`` lists for one photo (re-scored from the cached vector, as written)."""
    from tagwatch.export import as_written, kept_out, score
    from tagwatch.scoring import tag_thresholds

    key = env.store.file(str(photo)).key
    vector = env.pipeline.cache.get({key})[key]
    pipeline = env.pipeline
    kept = kept_out(env.store, pipeline.overrides, {str(photo): key})
    results = score({str(photo): vector}, pipeline.tags, tag_thresholds(pipeline.vocabulary.tags, THRESHOLD),
                    pipeline.tagging.top_k, pipeline.expansion, kept)
    return [k for k, _ in as_written(results, pipeline.overrides, kept)[0].tags]


def hierarchical(photo: Path) -> list[str]:
    """lr:hierarchicalSubject as exiftool reads it back (a list, whatever the number of entries)."""
    found = json.loads(exiftool_read("-j", "-XMP-lr:HierarchicalSubject", str(photo)))[0]
    value = found.get("HierarchicalSubject", [])
    return [value] if isinstance(value, str) else [str(v) for v in value]


def test_the_paths_a_write_gives_name_no_level_a_correction_rejects() -> None:
    """known_paths, which the write and the re-score's stale test decide paths with: a rejected level
    (case aside) leaves each path, the keyword and the levels left keep their order, a keyword left
    alone is written flat as it is spelt (an add of "Blue" is no "blue"), and a level's own path keeps it."""
    known = {"red": "colour|red", "blue": "colour|blue", "colour": "colour",
             "square": "thing|shape|polygon|square", "polygon": "thing|shape|polygon"}
    wanted = ["red", "Blue", "square", "polygon", "colour"]
    assert known_paths(known, wanted, {"colour", "polygon"}) == {
        "red": "red", "Blue": "Blue", "square": "thing|shape|square", "polygon": "thing|shape|polygon",
        "colour": "colour"}
    assert known_paths(known, wanted, {"shape"})["square"] == "thing|polygon|square"
    assert known_paths(known, wanted) == {  # nothing rejected: the list's paths
        "red": "colour|red", "Blue": "colour|blue", "square": "thing|shape|polygon|square",
        "polygon": "thing|shape|polygon", "colour": "colour"}


@pytest.mark.parametrize("mode", ["append", "sync"])
def test_a_level_a_correction_rejects_leaves_every_path_below_it(tmp_path: Path, mode: str) -> None:
    """The person rejected the levels colour and polygon (the review page's ✕, an override's
    remove): the flat keywords went, but colour|red and shape|polygon|square stayed in
    lr:hierarchicalSubject, from which Lightroom and digiKam build the flat keywords again.  A
    rejected level is in no path: red is written alone, square under the level left above it
    (shape|square), through a tag-list re-score; the correction undone puts the levels back."""
    tagging = TaggingConfig(threshold=THRESHOLD, mode=mode)  # expand = "parents"
    env = Env(tmp_path, SHAPES_CHECKPOINT, tagging, model=SHAPES_CONFIG)
    try:
        photo = tagged_red_square(env, tagging, 90007)
        assert {"colour|red", "shape|polygon|square"} <= set(hierarchical(photo)), hierarchical(photo)

        # ✕ on colour and on polygon on the review page: the rule it writes into the overrides file
        source, roots, rule = tmp_path / "overrides.toml", [photo.parent], ""
        for level in ("colour", "Polygon"):
            rule = correct(rule, source, roots, str(photo), level, "remove")
        env.pipeline.use_overrides(parse_overrides(rule, source, roots))
        env.pipeline.retag()

        def rejected_levels_gone(red: str = "red") -> None:
            assert held(photo, env) == {"red", "square", "shape"}
            paths = hierarchical(photo)
            assert not [p for p in paths if {"colour", "polygon"} & set(p.split("|"))], paths
            assert {red, "shape|square"} <= set(paths), paths
            assert not {"red", "shape|red"} - {red} & set(paths), paths
            found = json.loads(exiftool_read("-j", "-Keywords", "-XMP-dc:Subject", str(photo)))[0]
            assert sorted(found["Keywords"]) == sorted(found["Subject"]) == ["red", "shape", "square"], found

        rejected_levels_gone()
        verdicts = explained(env, photo, rule)
        assert all(verdicts[k].startswith("removed by an override") for k in ("colour", "polygon")), verdicts
        assert verdicts["red"] == verdicts["square"] == "TAGGED", verdicts
        assert set(tagwatch_export(env, photo)) == {"red", "square", "shape"}
        view = Library(load_config(env.root / "config.toml"), env.store, env.pipeline.writer,
                       lambda: True).photo(str(photo))
        page = {line.keyword: line.verdict for line in view.lines}
        assert all(page[k].startswith("rejected by your correction") for k in ("colour", "polygon")), page
        assert page["red"] == page["square"] == "tagged", page
        assert view.pending == [], view.pending

        # a scan of the photo, and a tag-list edit's re-score, decide it the same way
        assert env.run(photo) == {"square.jpg": Status.UNCHANGED}
        rejected_levels_gone()
        (tmp_path / "shapes.toml").write_text(SHAPES_LIST.replace('keyword = "circle"', 'keyword = "Circle"'),
                                              encoding="utf-8")
        env.pipeline.use_vocabulary(load_configured(tmp_path / "shapes.toml", tagging), tagging)
        writer = env.pipeline.writer
        read, inspect = [], writer.inspect
        writer.inspect = lambda *args, **kwargs: read.append(args[0]) or inspect(*args, **kwargs)
        try:
            assert env.pipeline.retag() == (1, 0)  # re-scored, nothing to write
        finally:
            del writer.inspect
        # its paths are what the list gives less the rejected levels: no read of it for a path to move
        assert read == [], read
        rejected_levels_gone()
        # a parent edit still moves a path (red put under shape, then back under colour, still
        # rejected): the same keywords, only the paths tell the photo is to be written
        under_shape = SHAPES_LIST.replace('"red.n.01"\n', '"red.n.01"\nparent = "shape"\n')
        for tag_list, red in ((under_shape, "shape|red"), (SHAPES_LIST, "red")):
            (tmp_path / "shapes.toml").write_text(tag_list, encoding="utf-8")
            env.pipeline.use_vocabulary(load_configured(tmp_path / "shapes.toml", tagging), tagging)
            assert env.pipeline.retag() == (1, 1)
            rejected_levels_gone(red)

        # the corrections undone (their ↺): the levels and their paths are back
        for level in ("colour", "Polygon"):
            rule = correct(rule, source, roots, str(photo), level, "undo")
        assert rule.strip() == "", rule
        env.pipeline.use_overrides(parse_overrides(rule, source, roots))
        env.pipeline.retag()
        assert held(photo, env) == {"red", "square", "colour", "polygon", "shape"}
        paths = hierarchical(photo)
        assert {"colour|red", "shape|polygon|square"} <= set(paths), paths
        assert not {"red", "shape|square"} & set(paths), paths
    finally:
        env.close()
