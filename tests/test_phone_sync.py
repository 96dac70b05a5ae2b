"""A family's phone photos synced to a server (Syncthing, Nextcloud): HEIC, PNG and WebP carry their
keywords in a sidecar tagwatch makes (``IMG_1003.HEIC.xmp``), phones reuse names (``IMG_1003.HEIC``
deleted, a new picture later under that name), and every stray ``.xmp`` is copied to every phone.

Real files (HEIC through pillow-heif, PNG), the shapes model, real SQLite and exiftool reading back.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pillow_heif
import pytest

import synthetic
from conftest import SHAPES_CHECKPOINT, SHAPES_CONFIG, Env, exiftool_read, exiftool_stand_in
from tagwatch.cli.scan import dry_line
from tagwatch.config import TaggingConfig, WriteConfig
from tagwatch.outcomes import Status
from tagwatch.queue import BatchQueue, Delete
from tagwatch.store import DELETED
from tagwatch.watcher import PathFilter, reconcile
from tagwatch.writeback import SIDECAR_FILE, tagged_line

pillow_heif.register_heif_opener()
SHAPES = ["red", "green", "blue", "yellow", "purple", "orange", "circle", "square", "triangle", "star"]


def shapes_env(tmp_path: Path, write: WriteConfig | None = None) -> Env:
    """The daemon's pipeline in-process with the shapes model at its trained threshold."""
    env = Env(tmp_path, SHAPES_CHECKPOINT, TaggingConfig(threshold=0.36, top_k=5), write, model=SHAPES_CONFIG)
    env.use(SHAPES)
    return env


def photo(path: Path, colour: str, shape: str, seed: int) -> Path:
    """A phone picture of a ``colour`` ``shape`` (HEIC, PNG or JPEG by the name)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".heic": "HEIF", ".png": "PNG"}.get(path.suffix.lower(), "JPEG")
    synthetic.make_photo(colour, shape, seed).save(path, fmt)
    return path


def subject(side: Path) -> set[str]:
    """The sidecar's dc:subject as exiftool reads it (empty where there is no sidecar)."""
    if not side.exists():
        return set()
    out = exiftool_read("-j", "-XMP-dc:Subject", str(side))
    value = json.loads(out)[0].get("Subject", [])
    return {str(v) for v in (value if isinstance(value, list) else [value])}


def test_a_new_photo_under_a_deleted_ones_name_gets_none_of_its_keywords(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """IMG_1003.HEIC (an orange star) deleted on the phone, a blue square synced in later under its
    name: its sidecar read "star, orange, blue, square", and untag left "star, orange", taken for the
    person's.  The deleted photo's keywords leave its sidecar with it (the sidecar tagwatch made goes);
    a person's keyword in another deleted photo's sidecar stays there, with the file."""
    env = shapes_env(tmp_path)
    try:
        old = photo(tmp_path / "phone" / "IMG_1003.HEIC", "orange", "star", 9001)
        kept = photo(tmp_path / "phone" / "IMG_1004.HEIC", "red", "circle", 9002)
        side, kept_side = Path(f"{old}.xmp"), Path(f"{kept}.xmp")
        assert env.run(old, kept) == {"IMG_1003.HEIC": Status.TAGGED, "IMG_1004.HEIC": Status.TAGGED}
        assert subject(side) == {"orange", "star"} and subject(kept_side) == {"red", "circle"}
        subprocess.run(["exiftool", "-q", "-overwrite_original", "-XMP-dc:Subject+=Oma", str(kept_side)],
                       check=True)  # the person's own keyword, added in digiKam
        old.unlink()
        kept.unlink()
        with caplog.at_level("INFO", logger="tagwatch"):
            env.pipeline.apply([Delete(str(old)), Delete(str(kept))])
        assert not side.exists()  # tagwatch made it, and nothing of anyone's was left in it
        assert subject(kept_side) == {"Oma"}  # the person's stays, the file with it
        said = [r.getMessage() for r in caplog.records if ": deleted" in r.getMessage()]
        assert any(m.startswith(f"{old}: deleted; its sidecar IMG_1003.HEIC.xmp removed") for m in said), said

        new = photo(old, "blue", "square", 9909)
        assert env.run(new) == {"IMG_1003.HEIC": Status.TAGGED}
        assert subject(side) == {"blue", "square"}
        assert env.pipeline.untag(str(new)).status == Status.UNTAGGED
        assert not side.exists()  # everything in it was tagwatch's: the folder as it was
    finally:
        env.close()


def test_the_same_picture_back_from_the_bin_is_tagged_again(tmp_path: Path) -> None:
    """Syncthing's "delete" moves the photo into .stversions; restored, it is the same picture: its
    keywords are written again as tagwatch's (untag takes them out), not lost nor taken for a
    person's removal."""
    env = shapes_env(tmp_path)
    try:
        shot = photo(tmp_path / "phone" / "IMG_1005.png", "green", "triangle", 9005)
        side = Path(f"{shot}.xmp")
        assert env.run(shot) == {"IMG_1005.png": Status.TAGGED}
        data = shot.read_bytes()
        shot.unlink()
        env.pipeline.apply([Delete(str(shot))])
        assert not side.exists()
        shot.write_bytes(data)
        assert env.run(shot) == {"IMG_1005.png": Status.TAGGED}
        assert subject(side) == {"green", "triangle"}
        assert env.pipeline.untag(str(shot)).status == Status.UNTAGGED
        assert not side.exists()
    finally:
        env.close()


def test_untag_removes_the_sidecar_tagwatch_made_and_keeps_one_a_person_added_to(tmp_path: Path) -> None:
    """`untag` left an empty XMP packet beside every HEIC, PNG and WebP tagwatch had tagged."""
    env = shapes_env(tmp_path)
    try:
        plain = photo(tmp_path / "phone" / "IMG_1007.HEIC", "purple", "square", 9007)
        added = photo(tmp_path / "phone" / "Screenshot_1.png", "yellow", "circle", 9008)
        before = sorted(p.name for p in plain.parent.iterdir())
        assert env.run(plain, added) == {"IMG_1007.HEIC": Status.TAGGED, "Screenshot_1.png": Status.TAGGED}
        subprocess.run(["exiftool", "-q", "-overwrite_original", "-XMP-dc:Subject+=Urlaub", f"{added}.xmp"],
                       check=True)
        assert env.pipeline.untag(str(plain)).status == Status.UNTAGGED
        assert env.pipeline.untag(str(added)).status == Status.UNTAGGED
        assert sorted(p.name for p in plain.parent.iterdir()) == sorted([*before, "Screenshot_1.png.xmp"])
        assert subject(Path(f"{added}.xmp")) == {"Urlaub"}
    finally:
        env.close()


def test_untag_of_a_photo_shared_sidecar_goes_with_the_last_photo(tmp_path: Path) -> None:
    """A HEIC and a JPEG of one stem share IMG_2100.xmp (``sidecar = "photo.xmp"``): the first untag
    leaves the other's keywords in it, the second removes the file tagwatch made."""
    env = shapes_env(tmp_path, WriteConfig(target="sidecar", sidecar="photo.xmp"))
    try:
        heic = photo(tmp_path / "iphone" / "IMG_2100.HEIC", "red", "circle", 2100)
        jpg = photo(tmp_path / "iphone" / "IMG_2100.JPG", "blue", "star", 2101)
        side = tmp_path / "iphone" / "IMG_2100.xmp"
        assert env.run(jpg, heic) == {"IMG_2100.JPG": Status.TAGGED, "IMG_2100.HEIC": Status.TAGGED}
        assert env.pipeline.untag(str(jpg)).status == Status.UNTAGGED
        assert subject(side) == {"red", "circle"}
        assert env.pipeline.untag(str(heic)).status == Status.UNTAGGED
        assert not side.exists()
    finally:
        env.close()


def test_keywords_already_there_are_said_where_they_are_and_the_photo_checked(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """`tagged …/IMG_2100.HEIC: red, circle (already in the file)` for a HEIC whose keywords are only
    in the sidecar it shares with IMG_2100.JPG, and the scan counted it unchanged."""
    env = shapes_env(tmp_path, WriteConfig(target="sidecar", sidecar="photo.xmp"))
    try:
        jpg = photo(tmp_path / "iphone" / "IMG_2100.JPG", "red", "circle", 2100)
        heic = photo(tmp_path / "iphone" / "IMG_2100.HEIC", "red", "circle", 2102)  # the same subject
        with caplog.at_level("INFO", logger="tagwatch"):
            outcomes = {Path(o.path).name: o for o in env.pipeline.process([str(jpg)])}
            outcomes |= {Path(o.path).name: o for o in env.pipeline.process([str(heic)])}
        assert outcomes["IMG_2100.JPG"].wrote and not outcomes["IMG_2100.HEIC"].wrote  # scan: 1 unchanged
        lines = [r.getMessage() for r in caplog.records if str(heic) in r.getMessage()]
        said = f"checked {heic}: red, circle (already in the sidecar it shares with IMG_2100.JPG)"
        assert said in lines, lines
    finally:
        env.close()


def test_a_dry_run_says_where_the_keywords_are(tmp_path: Path) -> None:
    """`scan --dry-run` said "(already in the file)" of a HEIC whose keywords are in its sidecar (the
    scan's own line said "already in its sidecar"): for a photo tagged already, and for one a changed
    tag list would give the keywords it carries."""
    env = shapes_env(tmp_path)
    try:
        heic = photo(tmp_path / "phone" / "IMG_3000.HEIC", "red", "circle", 3000)
        jpg = photo(tmp_path / "phone" / "IMG_3001.JPG", "blue", "square", 3001)
        blank = tmp_path / "phone" / "IMG_3002.HEIC"  # a wall: no tag, no sidecar made
        synthetic.make_photo(None, None, 3002).save(blank, "HEIF")
        env.pipeline.process([str(heic), str(jpg), str(blank)])
        assert not Path(f"{blank}.xmp").exists()

        def lines() -> dict[str, str | None]:
            return {Path(o.path).name: dry_line(o)
                    for o in env.pipeline.process([str(heic), str(jpg), str(blank)], dry_run=True)}

        settled = lines()  # tagged with this list: what the store recorded
        env.use([*SHAPES, "teal"])  # a new list: the photos are read and their keywords found there
        changed = lines()
        for said in (settled, changed):
            assert str(said["IMG_3000.HEIC"]).endswith(" (already in its sidecar)"), said
            assert str(said["IMG_3001.JPG"]).endswith(" (already in the file)"), said
        assert settled["IMG_3002.HEIC"] == f"{blank}\t(no tag above threshold)"  # no sidecar to look in
        assert "(0." in str(changed["IMG_3000.HEIC"])  # scored by this run, not read from the store
    finally:
        env.close()


def test_the_line_says_where_the_keywords_are() -> None:
    """The words follow the file the keywords are in; the verb follows the scan's count."""
    line = tagged_line("/p/IMG_1.HEIC", ["blue"], [], [], 0.36, wrote=False, where="its sidecar")
    assert line == "checked /p/IMG_1.HEIC: blue (already in its sidecar)"
    line = tagged_line("/p/a.png", ["circle", "red"], [], [], 0.36, wrote=True, theirs=["red"],
                       where="its sidecar")
    assert line == "tagged /p/a.png: circle; already in its sidecar: red"
    line = tagged_line("/p/a.jpg", ["circle"], [], [], 0.36, wrote=False, rewrote=True)
    assert line == "tagged /p/a.jpg: circle (already in the file; fields brought up to date)"


def _forget_sidecar_record(env: Env, path: Path) -> None:
    """The state an older tagwatch (5511b57) left: ledger rows of its keywords, no record of the
    sidecar it made (the 'sidecar file' record came with becf97e)."""
    row = env.store.file(str(path))
    assert row is not None
    assert SIDECAR_FILE in env.store.filled(row.id)
    env.store.set_filled(row.id, {SIDECAR_FILE: None})


def test_a_sidecar_an_older_version_made_goes_at_untag_after_this_version_rewrote_it(tmp_path: Path) -> None:
    """After an upgrade the first write into an older version's sidecar recorded it "there before
    tagwatch", and untag left one empty IMG.HEIC.xmp per photo (review #1)."""
    env = shapes_env(tmp_path)
    try:
        shot = photo(tmp_path / "phone" / "IMG_1101.HEIC", "purple", "square", 1101)
        side = Path(f"{shot}.xmp")
        assert env.run(shot) == {"IMG_1101.HEIC": Status.TAGGED}
        _forget_sidecar_record(env, shot)
        # this version's first start rewrites it (here: sync mode with a stricter top_k takes one out)
        env.use(SHAPES, TaggingConfig(threshold=0.36, top_k=1, mode="sync"))
        assert env.run(shot) == {"IMG_1101.HEIC": Status.TAGGED}
        assert len(subject(side)) == 1
        assert env.pipeline.untag(str(shot)).status == Status.UNTAGGED
        assert not side.exists(), f"left: {side.name}"
    finally:
        env.close()


def test_a_second_untag_keeps_a_sidecar_that_was_there_before(tmp_path: Path) -> None:
    """An app's XMP holding only exiftool's toolkit line was kept by untag, as there before tagwatch,
    and removed by the next untag, taken for one an older untag left (review #3)."""
    env = shapes_env(tmp_path)
    try:
        shot = photo(tmp_path / "phone" / "IMG_1102.HEIC", "green", "circle", 1102)
        side = Path(f"{shot}.xmp")
        subprocess.run(["exiftool", "-q", "-XMP-dc:Subject=x", str(side)], check=True)  # a new XMP file
        subprocess.run(["exiftool", "-q", "-overwrite_original", "-XMP-dc:Subject=", str(side)], check=True)
        assert side.exists() and subject(side) == set()
        assert env.run(shot) == {"IMG_1102.HEIC": Status.TAGGED}
        assert subject(side) == {"green", "circle"}
        assert env.pipeline.untag(str(shot)).status == Status.UNTAGGED
        assert side.exists() and subject(side) == set()
        env.pipeline.untag(str(shot))
        assert side.exists(), "the second untag removed a sidecar that was there before tagwatch"
    finally:
        env.close()


# The stand-in's input (conftest.exiftool_stand_in): while the file ARM exists, it kills the real exiftool
# and itself (SIGKILL, as the OOM killer does) on the first command line holding ARM's text; ARM goes then
STAND_IN = """for line in sys.stdin.buffer:
    try:
        trigger = open({arm!r}, "rb").read().strip()
    except OSError:
        trigger = b""
    if trigger and trigger in line:
        os.unlink({arm!r})
        real.kill()
        os.kill(os.getpid(), signal.SIGKILL)
    real.stdin.write(line)
    real.stdin.flush()
"""


def _killing_exiftool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Put the stand-in first on PATH; returns the file that arms it."""
    bin_dir = tmp_path / "bin"
    arm = tmp_path / "arm"
    exiftool_stand_in(bin_dir, STAND_IN.format(arm=str(arm)))
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return arm


def test_exiftool_killed_while_untag_checks_the_emptied_sidecar_untags_the_rest(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """exiftool killed in the empty-sidecar check escaped untag after the photo was rewritten: the
    ledger stayed, and `tagwatch untag DIR` stopped at that photo (review #2).  The sidecar is kept,
    the photo untagged, the next photo untagged too; a later untag removes the emptied sidecar."""
    arm = _killing_exiftool(tmp_path, monkeypatch)
    env = shapes_env(tmp_path)
    try:
        first = photo(tmp_path / "phone" / "IMG_1103.HEIC", "red", "star", 1103)
        second = photo(tmp_path / "phone" / "IMG_1104.HEIC", "blue", "circle", 1104)
        assert env.run(first, second) == {"IMG_1103.HEIC": Status.TAGGED, "IMG_1104.HEIC": Status.TAGGED}
        arm.write_text("-XMP:All")  # only the empty-sidecar check asks for that
        assert env.pipeline.untag(str(first)).status == Status.UNTAGGED
        assert not arm.exists()  # it was killed there
        row = env.store.file(str(first))
        assert row is not None and env.store.ledger(row.id) == []
        assert Path(f"{first}.xmp").exists() and subject(Path(f"{first}.xmp")) == set()
        assert env.pipeline.untag(str(second)).status == Status.UNTAGGED
        assert not Path(f"{second}.xmp").exists()
        assert env.pipeline.untag(str(first)).status == Status.UNTAGGED  # the emptied one goes now
        assert not Path(f"{first}.xmp").exists()
    finally:
        env.close()


def test_a_deleted_photos_sidecar_cleanup_hit_by_a_passing_fault_is_done_at_the_next_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """exiftool killed while a deleted photo's keywords left its sidecar: the photo was marked
    deleted all the same and never tried again, its keywords left for the next photo of its name
    (review #4).  It stays recorded, and the next start's scan finds it gone and cleans up."""
    arm = _killing_exiftool(tmp_path, monkeypatch)
    env = shapes_env(tmp_path)
    try:
        root = tmp_path / "phone"
        shot = photo(root / "IMG_1105.HEIC", "orange", "square", 1105)
        stays = photo(root / "IMG_1106.HEIC", "yellow", "triangle", 1106)  # the folder is no empty drive
        side = Path(f"{shot}.xmp")
        assert env.run(shot, stays) == {"IMG_1105.HEIC": Status.TAGGED, "IMG_1106.HEIC": Status.TAGGED}
        shot.unlink()
        arm.write_text(side.name)  # the first command naming the sidecar: the read of it
        env.pipeline.apply([Delete(str(shot))])
        assert not arm.exists()
        assert subject(side) == {"orange", "square"}
        row = env.store.file(str(shot))
        assert row is not None and row.state != DELETED  # not lost: still recorded
        queue = BatchQueue(size=100, max_wait=0, settle=0)
        report = reconcile([root], PathFilter([root]), env.store, queue)
        assert report.gone == 1
        batch = queue.get(timeout=0)
        assert batch is not None
        with caplog.at_level("INFO", logger="tagwatch"):
            env.pipeline.apply(batch.ops)
        assert not side.exists()
        said = [r.getMessage() for r in caplog.records if ": deleted" in r.getMessage()]
        assert any(m.startswith(f"{shot}: deleted; its sidecar {side.name} removed") for m in said), said
    finally:
        env.close()
