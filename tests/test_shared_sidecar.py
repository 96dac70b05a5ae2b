"""Photos that share one sidecar: ``[write] sidecar = "photo.xmp"`` names a sidecar after the photo's
stem (Lightroom's and Capture One's way), so a RAW+JPEG pair, IMG_1.CR2 and IMG_1.JPG (here IMG_1.jpg
and IMG_1.png), has one IMG_1.xmp.  That sidecar holds both photos' keywords, as those apps read it
for both; each photo's ledger keeps its own, and a photo's untag, rename or correction takes out of
the sidecar only keywords the other photo does not have from tagwatch too.  Real files, the real CLI
and daemon, exiftool reading back.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import synthetic
from conftest import (
    SHAPES_CHECKPOINT,
    SHAPES_CONFIG,
    Daemon,
    Env,
    config_with_vectors,
    exif_keywords,
    exiftool_read,
    noise_jpeg,
    status,
    tagwatch,
    wait_for,
    write_config,
)
from tagwatch import shared
from tagwatch.config import TaggingConfig, WriteConfig
from tagwatch.outcomes import Status
from tagwatch.overrides import parse_overrides
from tagwatch.queue import Delete, Move

# The scans of scanned_once (below, module-scoped) are made again on each pytest-xdist worker that runs
# one of the tests sharing them: keep the module on one worker (scripts/test: --dist loadgroup)
pytestmark = pytest.mark.xdist_group("shared-sidecar")

TAGS4 = ["beach", "forest", "mountain", "city street"]  # top_k 3 of 4: two photos share at least two
SIDECAR = '[write]\ntarget = "sidecar"\nsidecar = "photo.xmp"\n'


def cli(config: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``tagwatch COMMAND ARGS…`` run with ``--config config``, as a user's shell would."""
    return lambda command, *args: tagwatch(command, "--config", str(config), *args)


def noise_png(path: Path, seed: int) -> Path:
    """A real PNG (a format tagwatch tags through a sidecar only) of smooth random colour blobs."""
    small = np.random.default_rng(seed).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    Image.fromarray(small).resize((320, 240), Image.Resampling.BICUBIC).save(path, "PNG")
    return path


def pair(folder: Path) -> tuple[Path, Path]:
    """IMG_1.jpg and IMG_1.png: two pictures, one stem."""
    folder.mkdir(parents=True, exist_ok=True)
    return noise_jpeg(folder / "IMG_1.jpg", seed=1), noise_png(folder / "IMG_1.png", seed=2)


def in_sidecar(path: Path) -> set[str]:
    """The keywords of a sidecar, as an app that reads it sees them (dc:subject)."""
    return set(exif_keywords(path)["xmp"]) if path.exists() else set()


def predicted(config: Path, folder: Path) -> dict[str, set[str]]:
    """Each photo's own keywords, by file name (`tagwatch export`: what tagwatch writes into it)."""
    result = tagwatch("export", "--config", str(config), str(folder))
    assert result.returncode == 0, result.stderr
    return {Path(path).name: set(tags) for path, tags in json.loads(result.stdout).items()}


def test_two_photos_of_one_stem_keep_their_keywords_apart_in_their_shared_sidecar(
        scanned_once: Scanned) -> None:
    """The sidecar held both photos' keywords, but the second photo's ledger did not own those the
    first had put in: `untag IMG_1.png` took the JPG's keywords out too, and the JPG's next scan said
    "unchanged" without them.  (Scanned with another test's pair, each in a folder of its own.)"""
    config, root = scanned_once("pairs", PAIRS, tags=TAGS4, top_k=3, extra=SIDECAR)
    folder = root / "two-photos"
    jpg, png = folder / "IMG_1.jpg", folder / "IMG_1.png"
    run = cli(config)
    own = predicted(config, folder)
    side = folder / "IMG_1.xmp"
    assert sorted(p.name for p in folder.iterdir()) == ["IMG_1.jpg", "IMG_1.png", "IMG_1.xmp"]
    assert in_sidecar(side) == own["IMG_1.jpg"] | own["IMG_1.png"]
    assert own["IMG_1.jpg"] & own["IMG_1.png"], "the two photos share a keyword"

    result = run("untag", str(png))
    assert result.returncode == 0, result.stderr
    assert in_sidecar(side) == own["IMG_1.jpg"]  # the keywords both have stay: the JPG's too
    assert "1 unchanged" in run("scan", str(jpg)).stderr
    assert in_sidecar(side) == own["IMG_1.jpg"]

    assert run("scan", str(png)).returncode == 0  # named: tagged again
    assert in_sidecar(side) == own["IMG_1.jpg"] | own["IMG_1.png"]
    assert run("untag", str(jpg)).returncode == 0
    assert in_sidecar(side) == own["IMG_1.png"]
    assert run("untag", str(png)).returncode == 0
    assert in_sidecar(side) == set()


@pytest.mark.parametrize("mode", ["append", "sync", "overwrite"])
def test_a_correction_of_one_photo_leaves_the_keyword_the_other_has_in_their_sidecar(
        tmp_path: Path, tiny_checkpoint: Path, mode: str) -> None:
    """A correction removing `forest` from the PNG took it out of the sidecar, which the JPG has it
    in from tagwatch too (in overwrite, as a keyword of the person's); the JPG's next scan would have
    called it taken out by a person."""
    env = Env(tmp_path, tiny_checkpoint, TaggingConfig(threshold=-1.0, top_k=2, mode=mode),
              WriteConfig(target="sidecar", sidecar="photo.xmp"))
    try:
        env.use(["beach", "forest"])  # two tags, top_k 2: both photos get both
        jpg, png = pair(tmp_path / "in")
        side = tmp_path / "in" / "IMG_1.xmp"
        assert env.run(jpg, png) == {"IMG_1.jpg": Status.TAGGED, "IMG_1.png": Status.TAGGED}
        assert in_sidecar(side) == {"beach", "forest"}
        env.pipeline.use_overrides(parse_overrides(f'[[override]]\npath = "{png}"\nremove = ["forest"]\n',
                                                   tmp_path / "o.toml", [tmp_path / "in"]))
        env.pipeline.retag()
        assert in_sidecar(side) == {"beach", "forest"}  # the JPG's forest stays
        assert env.run(jpg) == {"IMG_1.jpg": Status.UNCHANGED}
        assert env.pipeline.untag(str(jpg)).status == Status.UNTAGGED
        assert in_sidecar(side) == {"beach"}  # the JPG's forest goes: the PNG has no forest now
        assert env.pipeline.untag(str(png)).status == Status.UNTAGGED
        assert in_sidecar(side) == set()
    finally:
        env.close()


def test_a_keyword_taken_out_of_the_shared_sidecar_is_named_only_for_the_photo_it_was_predicted_for(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The person takes the RAW's keyword out of the sidecar both photos share: it stays out for
    both, but the JPEG's line said "left out, as a person took them out: blue" for a keyword it was
    never predicted and never had."""
    env = Env(tmp_path, SHAPES_CHECKPOINT, TaggingConfig(threshold=0.36, top_k=5),
              WriteConfig(target="sidecar", sidecar="photo.xmp"), model=SHAPES_CONFIG)
    try:
        env.use(["red", "blue", "star", "circle"])
        (tmp_path / "in").mkdir()
        jpg, raw = tmp_path / "in" / "IMG_1.jpg", tmp_path / "in" / "IMG_1.png"
        synthetic.make_photo("red", "star", 4242).save(jpg, quality=90)
        synthetic.make_photo("blue", "circle", 4243).save(raw, "PNG")
        side = tmp_path / "in" / "IMG_1.xmp"
        assert env.run(jpg, raw) == {"IMG_1.jpg": Status.TAGGED, "IMG_1.png": Status.TAGGED}
        assert in_sidecar(side) == {"red", "star", "blue", "circle"}
        subprocess.run(["exiftool", "-q", "-overwrite_original", "-XMP-dc:Subject-=blue",
                        "-XMP-lr:HierarchicalSubject-=blue", str(side)], check=True)  # as digiKam does
        caplog.clear()
        with caplog.at_level("DEBUG", logger="tagwatch"):
            env.run(raw, jpg)
        lines = {name: [r.getMessage() for r in caplog.records if r.getMessage().startswith(
            f"checked {tmp_path / 'in' / name}")] for name in ("IMG_1.png", "IMG_1.jpg")}  # nothing written
        assert "left out, as a person took them out: blue" in lines["IMG_1.png"][0], lines
        assert lines["IMG_1.jpg"] and not any("left out" in line for line in lines["IMG_1.jpg"]), lines
        assert in_sidecar(side) == {"red", "star", "circle"}
    finally:
        env.close()


def test_a_photo_renamed_away_from_its_shared_sidecar_takes_its_keywords_along(
        tmp_path: Path, tiny_checkpoint: Path, daemon_factory) -> None:
    """`mv IMG_1.jpg IMG_3.jpg` under the daemon logged "moved" but left the sidecar, which the PNG
    still uses, and IMG_3.jpg was recorded tagged with no sidecar: its keywords go to IMG_3.xmp,
    and IMG_1.xmp keeps the PNG's alone."""
    folder = tmp_path / "sc"
    jpg, _ = pair(folder)
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[folder], tags=TAGS4, top_k=3,
                          extra=SIDECAR)
    daemon: Daemon = daemon_factory(config).start()
    wait_for(lambda: status(config)["tagged"] == 2)
    own = predicted(config, folder)
    assert in_sidecar(folder / "IMG_1.xmp") == own["IMG_1.jpg"] | own["IMG_1.png"]
    mark = len(daemon.log())
    renamed = jpg.rename(folder / "IMG_3.jpg")
    daemon.wait_log(f"moved {jpg} -> {renamed}", since=mark)
    assert in_sidecar(folder / "IMG_3.xmp") == own["IMG_1.jpg"]
    assert in_sidecar(folder / "IMG_1.xmp") == own["IMG_1.png"]
    assert daemon.stop() == 0
    assert "2 unchanged" in tagwatch("scan", "--config", str(config), str(folder)).stderr
    assert tagwatch("untag", "--config", str(config), str(renamed)).returncode == 0
    assert (in_sidecar(folder / "IMG_3.xmp"), in_sidecar(folder / "IMG_1.xmp")) == (set(), own["IMG_1.png"])


def test_a_photo_deleted_takes_its_own_keywords_out_of_the_sidecar_it_shared(tmp_path: Path,
                                                                              tiny_checkpoint: Path) -> None:
    """Deleting IMG_1.jpg left its keywords in IMG_1.xmp, where the apps show them for IMG_1.png, as
    keywords nobody's ledger has: the PNG's untag could never take them out."""
    env = Env(tmp_path, tiny_checkpoint, TaggingConfig(threshold=-1.0, top_k=3),
              WriteConfig(target="sidecar", sidecar="photo.xmp"))
    try:
        env.use(TAGS4)
        jpg, png = pair(tmp_path / "in")
        own = {Path(o.path).name: {k for k, _ in o.tags} for o in env.pipeline.process([str(jpg), str(png)])}
        side = tmp_path / "in" / "IMG_1.xmp"
        assert in_sidecar(side) == own["IMG_1.jpg"] | own["IMG_1.png"]
        jpg.unlink()
        env.pipeline.apply([Delete(str(jpg))])
        assert in_sidecar(side) == own["IMG_1.png"]
        assert env.pipeline.untag(str(png)).status == Status.UNTAGGED
        assert in_sidecar(side) == set()
    finally:
        env.close()


def xmp_fields(path: Path) -> dict[str, list[str]]:
    """A sidecar's dc:subject and lr:hierarchicalSubject, as exiftool reads them."""
    out = exiftool_read("-j", "-Subject", "-HierarchicalSubject", str(path))
    record = json.loads(out)[0]
    return {tag: [str(v) for v in value] if isinstance(value := record.get(tag, []), list) else [str(value)]
            for tag in ("Subject", "HierarchicalSubject")}


Scanned = Callable[..., tuple[Path, Path]]


@pytest.fixture(scope="module")
def shared_db(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> Path:
    """The database of the module's scans (``scanned_once``'s and the tests' that scan a pair() under
    a config of their own, each naming it with ``write_config(database=…)``): every photo they scan is
    a copy of pair()'s two pictures and every tag list theirs is among TAGS4, whose vectors one dry run
    cached (``conftest.config_with_vectors``), so no scan of theirs starts a model (about 2 CPU-seconds
    each).  Each test's photos are files of its own in a folder of its own, and it asks of the
    database only what it says of them (untag, export and scan name its folder or photos)."""
    config = config_with_vectors(tmp_path_factory.mktemp("shared-db"), tiny_checkpoint, fill=pair,
                                 tags=TAGS4, top_k=3, extra=SIDECAR)
    return config.parent / "state" / "tagwatch.db"


@pytest.fixture(scope="module")
def scanned_once(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path, shared_db: Path) -> Scanned:
    """For the tests that begin with the same scan under the same config: ``scanned_once(name, folders,
    tags=, top_k=, extra=, mode=)`` is (config, root) after one scan of ``root``, whose subfolder
    ``key`` ``folders[key]`` filled, made at its first call for ``name`` (a scan that encodes starts
    the model: 2-3 s).  Each test has a folder of its own there and untags only its photos, so none
    depends on another's having run."""
    made: dict[str, tuple[Path, Path]] = {}

    def scan(name: str, folders: dict[str, Callable[[Path], object]], *, tags: list[str], top_k: int,
             extra: str, mode: str | None = None) -> tuple[Path, Path]:
        if name not in made:
            base = tmp_path_factory.mktemp(f"scanned-{name}")
            root = base / "sc"
            for key, fill in folders.items():
                fill(root / key)
            config = write_config(base / "conf", tiny_checkpoint, tags=tags, top_k=top_k, extra=extra,
                                  database=shared_db)
            if mode is not None:
                text = config.read_text(encoding="utf-8")
                config.write_text(text.replace(f"top_k = {top_k}\n", f'top_k = {top_k}\nmode = "{mode}"\n'),
                                  encoding="utf-8")
            result = tagwatch("scan", "--config", str(config), str(root))
            assert result.returncode == 0, result.stderr
            made[name] = config, root
        return made[name]

    return scan


# the folders of the two tests that begin with a scan of a pair under SIDECAR, each filled by pair()
PAIRS: dict[str, Callable[[Path], object]] = {"two-photos": pair, "darktable": pair}


def persons_pair(folder: Path) -> None:
    """A pair whose IMG_1.xmp is the person's before tagwatch's scan: dc:subject `Reise` only."""
    pair(folder)
    subprocess.run(["exiftool", "-q", "-XMP-dc:Subject=Reise", "-o", str(folder / "IMG_1.xmp")], check=True)


# The PNG is tagged first, so its ledger has the records of the fields created in the sidecar; its
# untag first keeps the fields for the JPG's keywords and hands the records to it
@pytest.mark.parametrize("mode", ["append", "sync", "overwrite"])
@pytest.mark.parametrize("first", ["IMG_1.png", "IMG_1.jpg"])
def test_untag_of_both_photos_gives_the_persons_shared_sidecar_back_as_it_was(
        scanned_once: Scanned, first: str, mode: str) -> None:
    """IMG_1.xmp was the person's (dc:subject `Reise` only) before tagwatch added an
    lr:hierarchicalSubject to it, starting with a copy of `Reise` (overwrite: took `Reise` out of
    dc:subject); once both photos are untagged, in either order, it is as it was: untag left the
    field tagwatch created, holding the copy, as from a sidecar of one photo.  (Both orders' pairs,
    each in a folder of its own, are tagged by one scan.)"""
    config, root = scanned_once(f"persons-{mode}", {"png-first": persons_pair, "jpg-first": persons_pair},
                                tags=TAGS4, top_k=3, extra=SIDECAR, mode=mode)
    folder = root / ("png-first" if first == "IMG_1.png" else "jpg-first")
    side = folder / "IMG_1.xmp"
    run = cli(config)
    tagged = xmp_fields(side)
    assert len(tagged["HierarchicalSubject"]) >= 3
    assert ("Reise" in tagged["Subject"] + tagged["HierarchicalSubject"]) == (mode != "overwrite")
    for name in (first, ({"IMG_1.png", "IMG_1.jpg"} - {first}).pop()):
        result = run("untag", str(folder / name))
        assert result.returncode == 0, result.stderr
    assert xmp_fields(side) == {"Subject": ["Reise"], "HierarchicalSubject": []}


@pytest.mark.parametrize("first, then", [("photo.jpg.xmp", "photo.xmp"), ("photo.xmp", "photo.jpg.xmp")])
def test_untag_takes_tagwatch_s_keywords_out_of_the_sidecar_of_the_naming_used_before(
        tmp_path: Path, tiny_checkpoint: Path, shared_db: Path, first: str, then: str) -> None:
    """After `[write] sidecar` changed, untag said "nothing of tagwatch's in it to take out", forgot
    the ledger and left tagwatch's keywords in the old-named sidecar for good.  The old-named sidecar
    is reached now (this photo's alone); her keyword and rating in it stay."""
    folder = tmp_path / "lib"
    folder.mkdir()
    png = noise_png(folder / "IMG_1.png", seed=2)
    old_side, new_side = (png.with_suffix(".xmp") if naming == "photo.xmp" else folder / "IMG_1.png.xmp"
                          for naming in (first, then))
    config = write_config(tmp_path / "conf", tiny_checkpoint, tags=TAGS4, top_k=3,
                          extra=f'[write]\nsidecar = "{first}"\n', database=shared_db)
    run = cli(config)
    assert run("scan", str(folder)).returncode == 0
    own = predicted(config, folder)["IMG_1.png"]
    subprocess.run(["exiftool", "-q", "-overwrite_original", "-XMP-dc:Subject+=bride", "-XMP-xmp:Rating=4",
                    str(old_side)], check=True)
    assert in_sidecar(old_side) == own | {"bride"} and not new_side.exists()
    config.write_text(config.read_text(encoding="utf-8").replace(first, then), encoding="utf-8")

    result = run("untag", str(folder))
    assert result.returncode == 0, result.stderr
    assert "nothing of tagwatch's" not in result.stderr and "untagged" in result.stderr, result.stderr
    assert in_sidecar(old_side) == {"bride"} and not new_side.exists()
    assert exiftool_read("-s3", "-XMP-xmp:Rating", old_side).strip() == "4"


def test_untag_leaves_a_persons_keyword_in_another_apps_sidecar_where_ours_is_in_its_own(
        tmp_path: Path, tiny_checkpoint: Path, shared_db: Path) -> None:
    """A photographer in darktable (IMG_1.png.xmp) and Lightroom (IMG_1.xmp, tagwatch's naming) gave
    the photo in darktable a keyword tagwatch also writes: untag takes tagwatch's out of the sidecar it
    writes and leaves darktable's alone (only keywords of ours found nowhere else are looked for there)."""
    folder = tmp_path / "lib"
    folder.mkdir()
    png = noise_png(folder / "IMG_1.png", seed=2)
    config = write_config(tmp_path / "conf", tiny_checkpoint, tags=TAGS4, top_k=3,
                          extra='[write]\nsidecar = "photo.xmp"\n', database=shared_db)
    run = cli(config)
    assert run("scan", str(folder)).returncode == 0
    own = predicted(config, folder)["IMG_1.png"]
    darktable = folder / "IMG_1.png.xmp"
    subprocess.run(["exiftool", "-q", "-o", str(darktable), *(f"-XMP-dc:Subject={k}" for k in sorted(own)),
                    "-XMP-xmp:Rating=2"], check=True)
    result = run("untag", str(folder))
    assert result.returncode == 0, result.stderr
    ours = png.with_suffix(".xmp")  # tagwatch made it: emptied of ours, it goes
    assert not ours.exists() or not in_sidecar(ours) & own, result.stderr
    assert in_sidecar(darktable) == own, result.stderr


def test_untag_of_one_photo_of_a_pair_leaves_another_apps_sidecar_as_it_is(scanned_once: Scanned) -> None:
    """The keywords untag keeps in the shared IMG_1.xmp for the other photo are no strays: they were
    looked for, and taken out of, darktable's IMG_1.png.xmp beside it, where they are the person's.
    (Scanned with another test's pair, each in a folder of its own.)"""
    config, root = scanned_once("pairs", PAIRS, tags=TAGS4, top_k=3, extra=SIDECAR)
    lib = root / "darktable"
    png = lib / "IMG_1.png"
    own = predicted(config, lib)
    kept = own["IMG_1.png"] & own["IMG_1.jpg"]
    assert kept  # top_k 3 of 4: the two share some
    darktable = lib / "IMG_1.png.xmp"
    subprocess.run(["exiftool", "-q", "-o", str(darktable), *(f"-XMP-dc:Subject={k}" for k in sorted(kept))],
                   check=True)
    result = tagwatch("untag", "--config", str(config), str(png))
    assert result.returncode == 0, result.stderr
    assert in_sidecar(darktable) == kept, result.stderr
    assert in_sidecar(lib / "IMG_1.xmp") >= kept  # still the JPEG's there


def test_a_shared_sidecar_that_moves_along_with_its_photo_is_no_warning(
        tmp_path: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Lightroom renames IMG_1.png, IMG_1.xmp and IMG_1.jpg one after the other.  Where the sidecar's
    move landed just as the PNG's rename was handled, the log said "WARNING … keywords not moved from
    the sidecar IMG_1.xmp it shares: File not found (its next scan writes them)".  It moved along,
    complete: no warning, nothing written."""
    env = Env(tmp_path, tiny_checkpoint, TaggingConfig(threshold=-1.0, top_k=3),
              WriteConfig(target="sidecar", sidecar="photo.xmp"))
    try:
        env.use(TAGS4)
        jpg, png = pair(tmp_path / "in")
        env.pipeline.process([str(jpg), str(png)])
        old, new = tmp_path / "in" / "IMG_1.xmp", tmp_path / "in" / "W_1.xmp"
        subprocess.run(["exiftool", "-q", "-overwrite_original", "-XMP-xmp:Rating=4", str(old)], check=True)
        held = in_sidecar(old)
        renamed = png.rename(png.with_name("W_1.png"))
        real_mates = shared.stem_mates

        def sidecar_moves_now(*args: object, **kwargs: object) -> list[Path]:
            found = real_mates(*args, **kwargs)  # type: ignore[arg-type]
            if kwargs.get("any_file") and old.exists():  # carry's look (shared.apart's comes first):
                old.rename(new)  # Lightroom's move of the sidecar lands right after it
            return found

        monkeypatch.setattr(shared, "stem_mates", sidecar_moves_now)
        written = new.stat().st_mtime_ns if new.exists() else None
        with caplog.at_level("DEBUG", logger="tagwatch"):
            env.pipeline.apply([Move(str(png), str(renamed))])
        assert not [r for r in caplog.records if r.levelname == "WARNING"], caplog.text
        assert f"its sidecar {old.name} moved along with it, to {new.name}" in caplog.text, caplog.text
        assert "written to its own sidecar" not in caplog.text and written is None
        assert in_sidecar(new) == held and exiftool_read("-s3", "-XMP-xmp:Rating", new).strip() == "4"
        assert env.store.file(str(renamed)) is not None
    finally:
        env.close()


# A JPEG that embeds its keywords (target embedded, as Lightroom and Capture One users set it): the
# sidecar it shares with its RAW (here the PNG) is the RAW's, not one of the JPEG's keyword fields
EMBEDDED = WriteConfig(target="embedded", sidecar="photo.xmp")


def in_jpeg(path: Path) -> set[str]:
    """The JPEG's own keywords, as Lightroom, Apple Photos and Windows read them: IPTC and dc:subject."""
    found = exif_keywords(path)
    assert set(found["iptc"]) == set(found["xmp"]), found
    return set(found["iptc"])


@pytest.mark.parametrize("target", ["embedded", "both"])
@pytest.mark.parametrize("first", ["folder", "IMG_1.png"])
def test_untag_takes_the_jpegs_keywords_out_of_the_jpeg_of_a_pair(scanned_once: Scanned, target: str,
                                                                   first: str) -> None:
    """`untag` of the folder (the JPEG first) left the JPEG's keywords in it, as the RAW had them in
    the sidecar, forgot them and said "nothing of tagwatch's in it to take out"; a second untag said
    "already untagged".  The RAW first, with target both, said that of the RAW, whose keywords the
    sidecar keeps for the JPEG.  (Both orders' pairs, each in a folder of its own, are tagged by one
    scan.)"""
    config, root = scanned_once(f"pairs-{target}", {"folder-first": pair, "png-first": pair},
                                tags=["beach", "forest"], top_k=2,
                                extra=f'[write]\ntarget = "{target}"\nsidecar = "photo.xmp"\n')
    folder = root / ("folder-first" if first == "folder" else "png-first")
    jpg, png = folder / "IMG_1.jpg", folder / "IMG_1.png"
    run = cli(config)
    assert in_jpeg(jpg) == in_sidecar(folder / "IMG_1.xmp") == {"beach", "forest"}
    result = run("untag", *([str(folder)] if first == "folder" else [str(png), str(jpg)]))
    assert result.returncode == 0, result.stderr
    assert "nothing of tagwatch's" not in result.stderr
    assert "2 untagged" in result.stderr
    assert in_jpeg(jpg) == set()
    assert in_sidecar(folder / "IMG_1.xmp") == set()


def test_a_keyword_taken_out_of_the_jpeg_of_a_pair_stays_out(tmp_path: Path, tiny_checkpoint: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """The person took tagwatch's `forest` out of the JPEG (every field, as Lightroom saves it) and
    the next scan wrote it straight back: the RAW's sidecar still held it."""
    env = Env(tmp_path, tiny_checkpoint, TaggingConfig(threshold=-1.0, top_k=2), EMBEDDED)
    try:
        env.use(["beach", "forest"])
        jpg, png = pair(tmp_path / "in")
        side = tmp_path / "in" / "IMG_1.xmp"
        assert env.run(png, jpg) == {"IMG_1.png": Status.TAGGED, "IMG_1.jpg": Status.TAGGED}
        assert in_jpeg(jpg) == in_sidecar(side) == {"beach", "forest"}
        subprocess.run(["exiftool", "-q", "-overwrite_original", "-Keywords-=forest",  # as Lightroom saves
                        "-XMP-dc:Subject-=forest", "-XMP-lr:HierarchicalSubject-=forest", str(jpg)],
                       check=True)
        caplog.clear()
        with caplog.at_level("INFO", logger="tagwatch"):
            env.run(jpg, png)
        assert in_jpeg(jpg) == {"beach"}
        assert in_sidecar(side) == {"beach", "forest"}  # the RAW's stay
        assert any("forest taken out of it by a person" in r.getMessage() for r in caplog.records)
        assert env.pipeline.untag(str(jpg)).status == Status.UNTAGGED
        assert in_jpeg(jpg) == set()
        assert in_sidecar(side) == {"beach", "forest"}
    finally:
        env.close()


@pytest.mark.parametrize("target", ["embedded", "both"])
@pytest.mark.parametrize("order", ["jpg-first", "png-first"])
def test_sync_takes_a_tag_off_the_list_out_of_both_photos_of_a_pair(tmp_path: Path, tiny_checkpoint: Path,
                                                                    order: str, target: str) -> None:
    """`forest` taken off the tag list in sync mode stayed in the JPEG and the sidecar when the JPEG
    was handled first: each photo left it to the other, which had it from tagwatch too."""
    env = Env(tmp_path, tiny_checkpoint, TaggingConfig(threshold=-1.0, top_k=2, mode="sync"),
              WriteConfig(target=target, sidecar="photo.xmp"))
    try:
        env.use(["beach", "forest"])
        jpg, png = pair(tmp_path / "in")
        side = tmp_path / "in" / "IMG_1.xmp"
        photos = (jpg, png) if order == "jpg-first" else (png, jpg)
        env.run(*photos)
        assert in_jpeg(jpg) == in_sidecar(side) == {"beach", "forest"}
        env.use(["beach"])
        env.run(*photos)
        assert in_jpeg(jpg) == in_sidecar(side) == {"beach"}
        assert env.run(*photos) == {"IMG_1.jpg": Status.UNCHANGED, "IMG_1.png": Status.UNCHANGED}
    finally:
        env.close()


def test_a_dry_run_of_overwrite_names_none_of_the_keywords_the_scan_keeps_beside_a_raw(
        tmp_path: Path, tiny_checkpoint: Path, shared_db: Path) -> None:
    """Review L3: a JPEG that writes the sidecar it shares with its RAW too (target both) is written
    in overwrite mode as in sync while the RAW has keywords there from tagwatch, so the person's
    keyword in the JPEG stays.  The dry run decided overwrite without the shared sidecar and said it
    would take the person's `Tante Anna` out (and the RAW's `mountain`), which the scan then kept.
    Dry run and scan decide it in one place now (Writeback.kept_beside)."""
    jpg, png = pair(tmp_path / "in")
    side = tmp_path / "in" / "IMG_1.xmp"
    config = write_config(tmp_path / "conf", tiny_checkpoint, tags=["mountain"], top_k=1,
                          extra='[write]\ntarget = "both"\nsidecar = "photo.xmp"\n', database=shared_db)
    assert tagwatch("scan", str(png), "--config", str(config)).returncode == 0
    assert "mountain" in in_sidecar(side)  # the RAW's, from tagwatch
    (tmp_path / "conf" / "tags.txt").write_text("beach\n", encoding="utf-8")
    subprocess.run(["exiftool", "-q", "-overwrite_original", "-IPTC:Keywords=Tante Anna",
                    "-XMP-dc:Subject=Tante Anna", str(jpg)], check=True)
    dry = tagwatch("scan", "--dry-run", "--mode", "overwrite", str(jpg), "--config", str(config))
    assert dry.returncode == 0, dry.stderr
    line = dry.stdout.strip().split("\t")[1]
    assert line.startswith("beach (") and "would take out" not in line, line
    real = tagwatch("scan", "--mode", "overwrite", str(jpg), "--config", str(config))
    assert real.returncode == 0, real.stderr
    assert "written as in sync mode, not overwrite" in real.stderr, real.stderr
    assert {"Tante Anna", "beach"} <= set(exif_keywords(jpg)["iptc"]), real.stderr
    assert {"beach", "mountain"} <= in_sidecar(side)
    # The RAW, written through the sidecar alone, keeps overwrite and writes the JPEG's there as they
    # are: the dry run named the JPEG's beach as a person's keyword it would take out
    (tmp_path / "conf" / "tags.txt").write_text("forest\n", encoding="utf-8")
    dry = tagwatch("scan", "--dry-run", "--mode", "overwrite", str(png), "--config", str(config))
    assert dry.returncode == 0, dry.stderr
    line = dry.stdout.strip().split("\t")[1]
    assert line.startswith("forest (") and "beach" not in line, line
    assert tagwatch("scan", "--mode", "overwrite", str(png), "--config", str(config)).returncode == 0
    assert {"beach", "forest"} <= in_sidecar(side)


def test_a_dry_run_leaves_out_a_keyword_a_person_took_out_of_the_sidecar_the_photo_shares(
        tmp_path: Path, tiny_checkpoint: Path, shared_db: Path) -> None:
    """A keyword a person took out of the shared sidecar (recorded for the RAW, which had it from
    tagwatch) is out for both photos: the JPEG's scan leaves it out.  Its dry run did not read the
    other photo's ledger, and listed it as one the scan would write."""
    jpg, png = pair(tmp_path / "in")
    side = tmp_path / "in" / "IMG_1.xmp"
    config = write_config(tmp_path / "conf", tiny_checkpoint, tags=["beach"], top_k=3, extra=SIDECAR,
                          database=shared_db)
    assert tagwatch("scan", str(jpg), "--config", str(config)).returncode == 0  # the JPEG: beach
    (tmp_path / "conf" / "tags.txt").write_text("beach\nforest\nmountain\n", encoding="utf-8")
    assert tagwatch("scan", str(png), "--config", str(config)).returncode == 0  # the RAW: all three
    assert in_sidecar(side) == {"beach", "forest", "mountain"}
    # one of the two the RAW's write added (both at once would read as a save built from before it)
    subprocess.run(["exiftool", "-q", "-overwrite_original", "-XMP-dc:Subject-=forest",
                    "-XMP-lr:HierarchicalSubject-=forest", str(side)], check=True)  # as digiKam does
    rescan = tagwatch("scan", str(png), "--config", str(config))
    assert "forest taken out of it by a person" in rescan.stderr, rescan.stderr
    dry = tagwatch("scan", "--dry-run", str(jpg), "--config", str(config))
    assert dry.returncode == 0, dry.stderr
    assert "forest" not in dry.stdout and "mountain" in dry.stdout, dry.stdout
    real = tagwatch("scan", str(jpg), "--config", str(config))
    assert real.returncode == 0, real.stderr
    assert in_sidecar(side) == {"beach", "mountain"}, real.stderr  # left out, as the dry run says


def test_a_keyword_of_the_persons_in_the_raws_sidecar_is_written_into_the_jpeg(
        tmp_path: Path, tiny_checkpoint: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The person had keyworded the RAW `forest` (in IMG_1.xmp): the JPEG, predicted `forest`, never
    got it, and its line said "already in the file"."""
    env = Env(tmp_path, tiny_checkpoint, TaggingConfig(threshold=-1.0, top_k=2), EMBEDDED)
    try:
        env.use(["beach", "forest"])
        jpg, png = pair(tmp_path / "in")
        side = tmp_path / "in" / "IMG_1.xmp"
        subprocess.run(["exiftool", "-q", "-XMP-xmp:Rating=4", "-XMP-dc:Subject=forest",
                        "-XMP-lr:HierarchicalSubject=forest", "-o", str(side)], check=True)
        with caplog.at_level("INFO", logger="tagwatch"):
            env.run(png, jpg)
        assert in_jpeg(jpg) == {"beach", "forest"}
        line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith(f"tagged {jpg}"))
        assert "already" not in line, line
        assert env.pipeline.untag(str(jpg)).status == Status.UNTAGGED
        assert in_jpeg(jpg) == set()
        assert env.pipeline.untag(str(png)).status == Status.UNTAGGED
        assert in_sidecar(side) == {"forest"}  # the person's
    finally:
        env.close()


def test_the_jpeg_after_its_raw_is_not_said_to_hold_its_keywords_already(
        tmp_path: Path, tiny_checkpoint: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Every JPEG tagged after its RAW was logged "(already in the file; fields brought up to date)",
    although tagwatch had just written every keyword into it."""
    env = Env(tmp_path, tiny_checkpoint, TaggingConfig(threshold=-1.0, top_k=2), EMBEDDED)
    try:
        env.use(["beach", "forest"])
        jpg, png = pair(tmp_path / "in")
        with caplog.at_level("INFO", logger="tagwatch"):
            env.run(png)
            env.run(jpg)
        line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith(f"tagged {jpg}"))
        assert "already" not in line, line
        assert in_jpeg(jpg) == {"beach", "forest"}
    finally:
        env.close()


@pytest.mark.parametrize("step", ["sync", "untag"])
def test_a_jpeg_that_wrote_the_shared_sidecar_before_its_target_became_embedded_takes_its_keywords_out_of_it(
        tmp_path: Path, step: str) -> None:
    """Removals reach every place tagwatch may have written: the JPEG tagged with target both, then
    embedded only, still takes what it wrote out of the sidecar (by its rules: the PNG's stay)."""
    tagging = TaggingConfig(threshold=0.36, top_k=5, mode="sync")
    env = Env(tmp_path, SHAPES_CHECKPOINT, tagging, WriteConfig(target="both", sidecar="photo.xmp"),
              model=SHAPES_CONFIG)
    (tmp_path / "in").mkdir()
    jpg, png = tmp_path / "in" / "IMG_1.jpg", tmp_path / "in" / "IMG_1.png"
    side = tmp_path / "in" / "IMG_1.xmp"
    synthetic.make_photo("red", "star", 4242).save(jpg, quality=90)
    synthetic.make_photo("blue", "circle", 4243).save(png, "PNG")
    try:
        env.use(["red", "blue", "star", "circle"])
        assert env.run(jpg, png) == {"IMG_1.jpg": Status.TAGGED, "IMG_1.png": Status.TAGGED}
    finally:
        env.close()
    assert in_jpeg(jpg) == {"red", "star"}
    assert in_sidecar(side) == {"red", "star", "blue", "circle"}
    env = Env(tmp_path, SHAPES_CHECKPOINT, tagging, EMBEDDED, model=SHAPES_CONFIG)
    try:
        if step == "sync":
            env.use(["blue", "star", "circle"])  # red taken off the list
            env.run(jpg, png)
            assert in_jpeg(jpg) == {"star"}
            assert in_sidecar(side) == {"star", "blue", "circle"}
        else:
            assert env.pipeline.untag(str(jpg)).status == Status.UNTAGGED
            assert in_jpeg(jpg) == set()
            assert in_sidecar(side) == {"blue", "circle"}
            assert env.pipeline.untag(str(png)).status == Status.UNTAGGED
            assert in_sidecar(side) == set()
    finally:
        env.close()


@pytest.mark.parametrize("op", ["rename", "delete"])
def test_a_jpeg_renamed_or_deleted_leaves_the_persons_keyword_in_its_raws_sidecar(tmp_path: Path,
                                                                                 tiny_checkpoint: Path,
                                                                                 op: str) -> None:
    """The JPEG has `forest` from tagwatch in itself; the RAW's sidecar has the person's `forest`:
    the JPEG renamed or deleted takes nothing out of that sidecar, which was never its."""
    env = Env(tmp_path, tiny_checkpoint, TaggingConfig(threshold=-1.0, top_k=2), EMBEDDED)
    try:
        env.use(["beach", "forest"])
        jpg, png = pair(tmp_path / "in")
        side = tmp_path / "in" / "IMG_1.xmp"
        subprocess.run(["exiftool", "-q", "-XMP-dc:Subject=forest", "-o", str(side)], check=True)
        env.run(png, jpg)
        assert in_jpeg(jpg) == in_sidecar(side) == {"beach", "forest"}
        if op == "rename":
            renamed = jpg.rename(tmp_path / "in" / "IMG_3.jpg")
            env.pipeline.apply([Move(str(jpg), str(renamed))])
            assert in_jpeg(renamed) == {"beach", "forest"}
            assert not (tmp_path / "in" / "IMG_3.xmp").exists()
        else:
            jpg.unlink()
            env.pipeline.apply([Delete(str(jpg))])
        assert in_sidecar(side) == {"beach", "forest"}
        assert env.pipeline.untag(str(png)).status == Status.UNTAGGED
        assert in_sidecar(side) == {"forest"}
    finally:
        env.close()


@pytest.mark.parametrize("persons", [True, False])
@pytest.mark.parametrize("op", ["rename", "delete", "pair moved", "pair moved, JPEG first"])
def test_the_raw_of_a_pair_whose_jpeg_embeds_renamed_or_deleted_takes_its_sidecar_along(
        tmp_path: Path, tiny_checkpoint: Path, caplog: pytest.LogCaptureFixture, op: str,
        persons: bool) -> None:
    """The JPEG embeds its keywords, so IMG_1.xmp is the RAW's alone (the PNG here).  `mv IMG_1.png
    IMG_3.png` under the daemon wrote the RAW's keywords of tagwatch's into a new IMG_3.xmp and left
    them, and the person's `Tante Anna`, in IMG_1.xmp: the RAW lost the person's keyword and the
    old sidecar kept keywords nobody's ledger had.  Deleting the RAW left its keywords of tagwatch's
    in IMG_1.xmp (for the next IMG_1.png the camera's counter brings, the person's), and the sidecar
    tagwatch made, holding nothing else, stayed.  Both were kept because the JPEG holds the same
    keywords in its own fields, which are not that sidecar.  The pair moved into another folder
    (`mv IMG_1.* sub/`) likewise left the sidecar, the person's keyword in it, behind, and the JPEG
    was logged writing "its keywords" into the RAW's new sidecar."""
    env = Env(tmp_path, tiny_checkpoint, TaggingConfig(threshold=-1.0, top_k=2), EMBEDDED)
    try:
        env.use(["beach", "forest"])
        jpg, png = pair(tmp_path / "in")
        side = tmp_path / "in" / "IMG_1.xmp"
        env.run(png, jpg)
        if persons:
            subprocess.run(["exiftool", "-q", "-overwrite_original", "-XMP-dc:Subject+=Tante Anna",
                            "-XMP-lr:HierarchicalSubject+=People|Tante Anna", str(side)], check=True)
            env.run(png)
        mine = {"Tante Anna"} if persons else set()
        assert in_jpeg(jpg) == {"beach", "forest"}
        assert in_sidecar(side) == {"beach", "forest"} | mine
        if op == "rename":
            renamed = png.rename(tmp_path / "in" / "IMG_3.png")
            with caplog.at_level("INFO", logger="tagwatch"):
                env.pipeline.apply([Move(str(png), str(renamed))])
            assert in_sidecar(tmp_path / "in" / "IMG_3.xmp") == {"beach", "forest"} | mine
            assert not side.exists(), "moved along with the RAW, whose alone it was"
            assert env.pipeline.untag(str(renamed)).status == Status.UNTAGGED
            assert in_sidecar(tmp_path / "in" / "IMG_3.xmp") == mine
        elif op.startswith("pair moved"):
            sub = tmp_path / "in" / "sub"
            sub.mkdir()
            moves = [Move(str(png), str(sub / png.name)), Move(str(jpg), str(sub / jpg.name))]
            if op.endswith("JPEG first"):
                moves.reverse()
            with caplog.at_level("INFO", logger="tagwatch"):
                for move in moves:  # the daemon takes up the first before `mv` moves the second
                    Path(move.src).rename(move.dst)
                    env.pipeline.apply([move])
            assert in_sidecar(sub / "IMG_1.xmp") == {"beach", "forest"} | mine
            assert not side.exists(), "moved along with the RAW, whose alone it was"
            assert "its keywords written" not in caplog.text and "WARNING" not in caplog.text, caplog.text
            jpg = sub / jpg.name
        else:
            png.unlink()
            with caplog.at_level("INFO", logger="tagwatch"):
                env.pipeline.apply([Delete(str(png))])
            if persons:
                assert in_sidecar(side) == mine
                assert "taken out of its sidecar IMG_1.xmp" in caplog.text
            else:
                assert not side.exists(), "tagwatch made it, and it holds nothing now"
                assert "its sidecar IMG_1.xmp removed" in caplog.text
        assert in_jpeg(jpg) == {"beach", "forest"}, "the JPEG's own fields are untouched"
    finally:
        env.close()


def test_the_raws_keywords_are_said_to_be_in_its_own_sidecar_beside_a_jpeg_that_embeds(
        tmp_path: Path, tiny_checkpoint: Path, caplog: pytest.LogCaptureFixture) -> None:
    """`checked …/IMG_1.png: forest, beach (already in the sidecar it shares with IMG_1.jpg)`, of the
    pair copied: the JPEG embeds its keywords and never reads IMG_1.xmp, which is the RAW's alone."""
    env = Env(tmp_path, tiny_checkpoint, TaggingConfig(threshold=-1.0, top_k=2), EMBEDDED)
    try:
        env.use(["beach", "forest"])
        jpg, png = pair(tmp_path / "in")
        env.run(png, jpg)
        copy = Path(shutil.copytree(tmp_path / "in", tmp_path / "copy")) / png.name  # the pair copied
        with caplog.at_level("INFO", logger="tagwatch"):
            env.run(copy)
        lines = [r.getMessage() for r in caplog.records if str(copy) in r.getMessage()]
        said = [line for line in lines if line.startswith(f"checked {copy}")]  # ", a copy of …"
        assert said and said[0].endswith(" (already in its sidecar)"), lines
    finally:
        env.close()


@pytest.mark.parametrize("companion", ["IMG_1.AAE", "IMG_1.THM"])
@pytest.mark.parametrize("op", ["rename", "delete"])
def test_an_iphone_edit_record_or_a_thumbnail_beside_a_photo_shares_no_sidecar(
        tmp_path: Path, tiny_checkpoint: Path, caplog: pytest.LogCaptureFixture, op: str,
        companion: str) -> None:
    """An iPhone's edited photo comes with IMG_1.AAE, its edit record (a plist), as a video with
    a camera's IMG_1.THM: neither is a picture any app keeps an XMP sidecar for, yet each was taken
    for a photo sharing IMG_1.xmp.  `mv IMG_1.png IMG_3.png` left the person's `Tante Anna` behind in
    IMG_1.xmp and logged `…/IMG_1.AAE: beach, forest taken out of its sidecar`; deleted, the photo
    left the sidecar tagwatch made."""
    env = Env(tmp_path, tiny_checkpoint, TaggingConfig(threshold=-1.0, top_k=2),
              WriteConfig(target="sidecar", sidecar="photo.xmp"))
    try:
        env.use(["beach", "forest"])
        folder = tmp_path / "in"
        folder.mkdir()
        png = noise_png(folder / "IMG_1.png", seed=2)
        (folder / companion).write_text('<?xml version="1.0"?><plist version="1.0"><dict/></plist>\n')
        env.run(png)
        side = folder / "IMG_1.xmp"
        assert in_sidecar(side) == {"beach", "forest"}
        with caplog.at_level("INFO", logger="tagwatch"):
            if op == "rename":
                subprocess.run(["exiftool", "-q", "-overwrite_original", "-XMP-dc:Subject+=Tante Anna",
                                str(side)], check=True)
                env.run(png)
                renamed = png.rename(folder / "IMG_3.png")
                env.pipeline.apply([Move(str(png), str(renamed))])
                assert in_sidecar(folder / "IMG_3.xmp") == {"beach", "forest", "Tante Anna"}
                assert not side.exists()
            else:
                png.unlink()
                env.pipeline.apply([Delete(str(png))])
                assert not side.exists(), "tagwatch made it, and it holds nothing now"
        assert companion not in caplog.text, caplog.text
        assert (folder / companion).exists()
    finally:
        env.close()


def test_the_review_page_says_of_a_shared_sidecar_what_the_write_does_with_it(
        tmp_path: Path, tiny_checkpoint: Path) -> None:
    """The photo page's *Writing into the file* line knew nothing of a sidecar two photos share: in
    overwrite it said the person's `Tante Anna` was going out of the JPEG (its write, beside the
    RAW's keywords, works as sync and keeps it) and the JPEG's `beach` out of the RAW's sidecar (the
    RAW's write keeps it), and it said `forest` was on its way into the JPEG after a person had taken
    it out of the sidecar (the write leaves it out).  None of those is ever written, so the page
    said them, and polled, for good.  The page now takes the write's decision
    (``Writeback.kept_beside``, ``shared.mates``); each answer is checked against the scan's own
    write, after which nothing is left on its way."""
    from test_ownership import pending

    jpg, png = pair(tmp_path / "in")
    side = tmp_path / "in" / "IMG_1.xmp"
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[tmp_path / "in"], tags=["beach"],
                          top_k=2, extra='[write]\ntarget = "both"\nsidecar = "photo.xmp"\n')
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace("top_k = 2\n", 'top_k = 2\nmode = "overwrite"\n'), encoding="utf-8")
    tags = tmp_path / "conf" / "tags.txt"

    def scan(photo: Path) -> str:
        result = tagwatch("scan", str(photo), "--config", str(config))
        assert result.returncode == 0, result.stderr
        return result.stderr

    scan(jpg)  # beach, into the JPEG and the sidecar
    tags.write_text("mountain\n", encoding="utf-8")
    scan(png)  # mountain: the RAW's, from tagwatch
    assert in_sidecar(side) == {"beach", "mountain"}
    # the JPEG (target both) beside the RAW's mountain: its overwrite works as sync, a person's keyword
    # saved into it since stays
    tags.write_text("beach\n", encoding="utf-8")
    subprocess.run(["exiftool", "-q", "-overwrite_original", "-IPTC:Keywords+=Tante Anna",
                    "-XMP-dc:Subject+=Tante Anna", str(jpg)], check=True)
    assert pending(config, jpg) == []
    assert "written as in sync mode, not overwrite" in scan(jpg)
    assert set(exif_keywords(jpg)["iptc"]) == {"Tante Anna", "beach"}, "kept, as the page said"
    assert pending(config, jpg) == []
    # the RAW, written through the sidecar alone: the JPEG's beach stays there, its own mountain goes
    tags.write_text("forest\ncity street\n", encoding="utf-8")
    assert pending(config, png) == ["adding 'forest'", "adding 'city street'", "taking out 'mountain'"]
    scan(png)
    assert in_sidecar(side) == {"beach", "forest", "city street"}, "as the page said"
    assert pending(config, png) == []
    # a person takes the RAW's forest out of the sidecar (one of the two its write added): out of the
    # JPEG too, whose one prediction it is then, so the JPEG's write has nothing to do
    subprocess.run(["exiftool", "-q", "-overwrite_original", "-XMP-dc:Subject-=forest",
                    "-XMP-lr:HierarchicalSubject-=forest", str(side)], check=True)
    assert "forest taken out of it by a person" in scan(png)
    tags.write_text("forest\n", encoding="utf-8")
    assert pending(config, jpg) == []
    scan(jpg)
    assert "forest" not in set(exif_keywords(jpg)["iptc"]) | in_sidecar(side), "left out, as the page said"
    assert pending(config, jpg) == []
