"""Where keywords land, read back the way each photo app reads them (exiftool as the reader).

The reader rules come from the apps' sources and docs: digiKam takes the first non-empty of TagsList,
lr:hierarchicalSubject, dc:subject, IPTC Keywords; Immich reads TagsList, else HierarchicalSubject,
else IPTC Keywords (never dc:subject); Apple Photos reads dc:subject; PhotoPrism reads embedded IPTC
Keywords and a sidecar's dc:subject; Windows merges IPTC and XMP.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import config_with_vectors, exiftool_read, noise_jpeg, tagwatch, write_config
from tagwatch.config import WriteConfig
from tagwatch.formats import jpeg_key
from tagwatch.metadata import ExifTool, KeywordWriter, MetadataError

WORDS = ["beach", "Ünïcödé tag", "日本語"]
FIELDS = ("XMP-digiKam:TagsList", "XMP-lr:HierarchicalSubject", "XMP-dc:Subject", "IPTC:Keywords")


@pytest.fixture(scope="module")
def exiftool() -> ExifTool:
    tool = ExifTool()
    yield tool
    tool.close()


def fields(path: Path) -> dict[str, list[str]]:
    """Every keyword field of a file (photo or sidecar), read by a separate exiftool."""
    if not path.exists():
        return {tag: [] for tag in FIELDS}
    out = subprocess.run(["exiftool", "-j", "-G1", "-charset", "iptc=UTF8", *[f"-{t}" for t in FIELDS],
                          str(path)], check=True, capture_output=True, text=True).stdout
    record = json.loads(out)[0]
    return {tag: [str(v) for v in (record.get(tag) if isinstance(record.get(tag), list)
                                   else [record[tag]] if tag in record else [])] for tag in FIELDS}


def first(record: dict[str, list[str]], order: tuple[str, ...]) -> list[str]:
    return next((record[tag] for tag in order if record[tag]), [])


def readers(photo: Path, sidecar: Path) -> dict[str, set[str]]:
    """What each app shows for this photo (leaf keywords: a hierarchical `a|b` shows as `b`)."""
    embedded, side = fields(photo), fields(sidecar)
    leaf = lambda values: {v.replace("/", "|").rsplit("|", 1)[-1] for v in values}  # noqa: E731
    digikam_order = ("XMP-digiKam:TagsList", "XMP-lr:HierarchicalSubject", "XMP-dc:Subject", "IPTC:Keywords")
    immich_order = ("XMP-digiKam:TagsList", "XMP-lr:HierarchicalSubject", "IPTC:Keywords")
    # digiKam and Immich read the sidecar over the photo: a field present there wins
    merged = {tag: side[tag] or embedded[tag] for tag in FIELDS}
    return {
        "digiKam": leaf(first(merged, digikam_order)),
        "Immich": leaf(first(merged, immich_order)),
        "Apple Photos": set(embedded["XMP-dc:Subject"]),
        "PhotoPrism": set(embedded["IPTC:Keywords"]) | set(side["XMP-dc:Subject"]),
        "Windows": set(embedded["IPTC:Keywords"]) | set(embedded["XMP-dc:Subject"]),
    }


def with_person_tags(photo: Path) -> Path:
    """A photo a person already tagged in digiKam: TagsList and hierarchical keywords present."""
    subprocess.run(["exiftool", "-q", "-overwrite_original", "-XMP-digiKam:TagsList=People/Anna",
                    "-XMP-lr:HierarchicalSubject=People|Anna", "-XMP-dc:Subject=Anna",
                    "-charset", "iptc=UTF8", "-IPTC:Keywords=Anna", str(photo)], check=True)
    return photo


@pytest.mark.parametrize("target", ["embedded", "both"])
def test_every_app_sees_keywords_written_into_the_photo(tmp_path: Path, exiftool: ExifTool,
                                                       target: str) -> None:
    writer = KeywordWriter(exiftool, WriteConfig(target=target))
    plain = noise_jpeg(tmp_path / "plain.jpg", seed=1)
    tagged = with_person_tags(noise_jpeg(tmp_path / "digikam.jpg", seed=2))
    for photo in (plain, tagged):
        writer.add(photo, WORDS)
    sidecar = writer.sidecar_for(plain)
    assert (sidecar.exists(), sidecar.name) == (target == "both", "plain.jpg.xmp")
    for app, shown in readers(plain, writer.sidecar_for(plain)).items():
        assert set(WORDS) <= shown, (app, shown)
    for app, shown in readers(tagged, writer.sidecar_for(tagged)).items():
        assert {*WORDS, "Anna"} <= shown, (app, shown)
    record = fields(tagged)  # the person's hierarchy is kept, ours is added flat beside it
    assert record["XMP-digiKam:TagsList"] == ["People/Anna", *WORDS]
    assert record["XMP-lr:HierarchicalSubject"] == ["People|Anna", *WORDS]


def test_a_sidecar_target_leaves_the_photo_byte_identical(tmp_path: Path, exiftool: ExifTool) -> None:
    writer = KeywordWriter(exiftool, WriteConfig(target="sidecar", sidecar="photo.xmp"))
    photo = noise_jpeg(tmp_path / "p.jpg", seed=1)
    data = photo.read_bytes()
    assert writer.add(photo, WORDS) == WORDS
    assert photo.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.jpg", "p.xmp"]
    shown = readers(photo, tmp_path / "p.xmp")
    # Apple Photos and Windows read no sidecar: docs/keywords.md says so for this target
    assert all(set(WORDS) <= shown[app] for app in ("digiKam", "Immich", "PhotoPrism")), shown


def test_formats_we_do_not_write_into_always_get_a_sidecar(tmp_path: Path, exiftool: ExifTool) -> None:
    writer = KeywordWriter(exiftool, WriteConfig(target="embedded"))
    png = tmp_path / "scan.png"
    Image.new("RGB", (32, 24), (200, 30, 30)).save(png)
    data = png.read_bytes()
    writer.add(png, WORDS)
    assert png.read_bytes() == data
    side = fields(tmp_path / "scan.png.xmp")
    assert side["XMP-dc:Subject"] == side["XMP-lr:HierarchicalSubject"] == WORDS


@pytest.mark.parametrize("target", ["embedded", "both"])
@pytest.mark.parametrize("fmt", ["png", "webp", "tiff", "heic", "dng"])
def test_a_picture_saved_with_a_jpg_name_gets_the_sidecar_of_its_format(tmp_path: Path, exiftool: ExifTool,
                                                                        fmt: str, target: str) -> None:
    """A screenshot saved as PNG under ``shot.jpg`` is decoded as the PNG it is; its keywords went to
    exiftool as a JPEG's, which refused ("Not a valid JPG (looks more like a PNG)") and the photo got
    none.  Every format the docs list gets its sidecar whatever the name, and untag finds it there."""
    from test_imaging import encode, red_picture

    writer = KeywordWriter(exiftool, WriteConfig(target=target))
    photo = tmp_path / "shot.jpg"
    photo.write_bytes(encode(red_picture(5), fmt))
    data = photo.read_bytes()
    assert writer.add(photo, WORDS) == WORDS
    assert photo.read_bytes() == data
    side = fields(tmp_path / "shot.jpg.xmp")
    assert side["XMP-dc:Subject"] == side["XMP-lr:HierarchicalSubject"] == WORDS
    assert readers(photo, tmp_path / "shot.jpg.xmp")["digiKam"] == set(WORDS)
    writer.apply(writer.plan_untag(photo, WORDS, []))
    assert photo.read_bytes() == data
    assert fields(tmp_path / "shot.jpg.xmp")["XMP-dc:Subject"] == []


@pytest.mark.parametrize("name", ["photo.png", "photo.webp", "photo.tif", "photo.heic", "photo.dng"])
def test_a_jpeg_under_another_formats_name_gets_a_sidecar_never_a_rewrite(tmp_path: Path, exiftool: ExifTool,
                                                                         name: str) -> None:
    """exiftool picks its writer by the name and refuses a JPEG named .png; writing it anyway would
    still leave a JPEG that apps trusting the name misread.  So the photo stays byte-identical, even
    with target embedded, and its keywords go to its sidecar."""
    writer = KeywordWriter(exiftool, WriteConfig(target="embedded"))
    photo = noise_jpeg(tmp_path / name, seed=4)
    data = photo.read_bytes()
    assert not writer.embeds(photo)
    assert writer.add(photo, WORDS) == WORDS
    assert photo.read_bytes() == data
    assert fields(tmp_path / f"{name}.xmp")["XMP-dc:Subject"] == WORDS
    assert sorted(p.name for p in tmp_path.iterdir()) == [name, f"{name}.xmp"]


def test_an_existing_sidecar_is_merged_never_clobbered(tmp_path: Path, exiftool: ExifTool) -> None:
    """darktable keeps its whole edit history in photo.jpg.xmp: it must survive our keywords."""
    writer = KeywordWriter(exiftool, WriteConfig(target="sidecar"))
    photo = noise_jpeg(tmp_path / "p.jpg", seed=1)
    sidecar = tmp_path / "p.jpg.xmp"
    subprocess.run(["exiftool", "-q", "-XMP-dc:Subject=holiday", "-XMP-xmp:Rating=4",
                    "-XMP-dc:Description=edited in darktable", "-o", str(sidecar)], check=True)
    sidecar.chmod(0o640)
    before = json.loads(exiftool_read("-j", "-G1", "-XMP:all", str(sidecar)))[0]
    assert writer.add(photo, ["beach", "holiday"]) == ["beach"]  # holiday was the person's
    after = json.loads(exiftool_read("-j", "-G1", "-XMP:all", str(sidecar)))[0]
    assert after.pop("XMP-dc:Subject") == ["holiday", "beach"]
    assert after.pop("XMP-lr:HierarchicalSubject") == ["holiday", "beach"]  # so that Immich sees them
    before.pop("XMP-dc:Subject")
    assert after == before and oct(sidecar.stat().st_mode & 0o777) == "0o640"


@pytest.mark.parametrize("naming", ["photo.jpg.xmp", "photo.xmp"])
def test_an_embedded_target_leaves_the_jpegs_sidecar_of_another_app_untouched(
        tmp_path: Path, exiftool: ExifTool, naming: str) -> None:
    """With target embedded, a JPEG whose sidecar darktable or digiKam keeps (p.jpg.xmp: the person's
    `holiday`, a rating) had that sidecar rewritten at each tagging: tagwatch wrote nothing of its
    own there, but gave it an lr:hierarchicalSubject holding a copy of `holiday` (the rule for a
    sidecar tagwatch writes keywords into), and darktable found its XMP changed on disk."""
    writer = KeywordWriter(exiftool, WriteConfig(target="embedded", sidecar=naming))
    photo = noise_jpeg(tmp_path / "p.jpg", seed=1)
    sidecar = tmp_path / ("p.jpg.xmp" if naming == "photo.jpg.xmp" else "p.xmp")
    subprocess.run(["exiftool", "-q", "-XMP-dc:Subject=holiday", "-XMP-xmp:Rating=4", "-o", str(sidecar)],
                   check=True)
    before = sidecar.read_bytes()
    plan = writer.plan(photo, ["beach"])
    assert [edit.path for edit in plan.edits] == [photo]
    writer.apply(plan)
    assert set(fields(photo)["XMP-dc:Subject"]) == {"beach"}
    assert sidecar.read_bytes() == before


def test_a_hierarchy_prefix_files_our_keywords_under_it(tmp_path: Path, exiftool: ExifTool) -> None:
    writer = KeywordWriter(exiftool, WriteConfig(hierarchy_prefix="auto|clip"))
    plain = noise_jpeg(tmp_path / "plain.jpg", seed=1)
    tagged = with_person_tags(noise_jpeg(tmp_path / "digikam.jpg", seed=2))
    for photo in (plain, tagged):
        writer.add(photo, ["beach"])
    assert fields(plain)["XMP-lr:HierarchicalSubject"] == ["auto|clip|beach"]
    assert fields(plain)["XMP-dc:Subject"] == fields(plain)["IPTC:Keywords"] == ["beach"]
    assert fields(plain)["XMP-digiKam:TagsList"] == []
    assert fields(tagged)["XMP-digiKam:TagsList"] == ["People/Anna", "auto/clip/beach"]
    assert readers(tagged, tmp_path / "none.xmp")["digiKam"] == {"Anna", "beach"}
    assert writer.plan(tagged, ["beach"]).edits == []  # already there, under the prefix


def test_permissions_owner_and_the_mtime_policy(tmp_path: Path, exiftool: ExifTool) -> None:
    keep = KeywordWriter(exiftool, WriteConfig(mtime="keep"))
    update = KeywordWriter(exiftool, WriteConfig(mtime="update"))
    a, b = noise_jpeg(tmp_path / "a.jpg", seed=1), noise_jpeg(tmp_path / "b.jpg", seed=2)
    old = 1_500_000_000_000_000_000
    for photo in (a, b):
        photo.chmod(0o604)
        os.utime(photo, ns=(old, old))
    keep.add(a, ["beach"])
    update.add(b, ["beach"])
    assert a.stat().st_mtime_ns == old and b.stat().st_mtime_ns > old
    assert {oct(p.stat().st_mode & 0o777) for p in (a, b)} == {"0o604"}
    assert {(p.stat().st_uid, p.stat().st_gid) for p in (a, b)} == {(os.getuid(), os.getgid())}


@pytest.mark.skipif(os.geteuid() != 0, reason="only root may give a file to another user")
def test_the_owner_is_kept_where_allowed(tmp_path: Path, exiftool: ExifTool) -> None:
    photo = noise_jpeg(tmp_path / "p.jpg", seed=1)
    os.chown(photo, 4321, 4322)
    KeywordWriter(exiftool, WriteConfig(target="both")).add(photo, ["beach"])
    assert (photo.stat().st_uid, photo.stat().st_gid) == (4321, 4322)
    sidecar = tmp_path / "p.jpg.xmp"  # a new sidecar belongs to the photo's owner, not to us
    assert (sidecar.stat().st_uid, sidecar.stat().st_gid) == (4321, 4322)


def test_a_read_only_photo_is_refused_untouched(tmp_path: Path, exiftool: ExifTool) -> None:
    writer = KeywordWriter(exiftool)
    photo = noise_jpeg(tmp_path / "p.jpg", seed=1)
    photo.chmod(0o444)
    data = photo.read_bytes()
    with pytest.raises(MetadataError, match="read-only"):
        writer.add(photo, ["beach"])
    assert photo.read_bytes() == data and os.listdir(tmp_path) == ["p.jpg"]


def test_sync_removes_only_ours_and_untag_restores_what_overwrite_took(tmp_path: Path,
                                                                     exiftool: ExifTool) -> None:
    writer = KeywordWriter(exiftool, WriteConfig(target="both"))
    photo = noise_jpeg(tmp_path / "p.jpg", seed=1)
    key = jpeg_key(photo.read_bytes())
    subprocess.run(["exiftool", "-q", "-overwrite_original", "-charset", "iptc=UTF8", "-IPTC:Keywords=Anna",
                    "-XMP-dc:Subject=Anna", str(photo)], check=True)
    plan = writer.plan(photo, ["beach", "Anna"], mode="sync")
    writer.apply(plan)
    assert plan.ours == ["beach"]
    plan = writer.plan(photo, ["forest"], mode="sync", owned=["beach"])  # beach is ours: it goes
    writer.apply(plan)
    assert (plan.removed, plan.ours) == (["beach"], ["forest"])
    assert fields(photo)["IPTC:Keywords"] == ["Anna", "forest"]
    assert fields(writer.sidecar_for(photo))["XMP-dc:Subject"] == ["Anna", "forest"]
    plan = writer.plan(photo, ["sea"], mode="overwrite", owned=["forest"])
    writer.apply(plan)
    assert (plan.dropped, plan.removed, plan.ours) == (["Anna"], ["forest"], ["sea"])
    assert fields(photo)["IPTC:Keywords"] == fields(photo)["XMP-dc:Subject"] == ["sea"]
    plan = writer.plan_untag(photo, owned=["sea"], dropped=["Anna"])
    writer.apply(plan)
    assert fields(photo)["IPTC:Keywords"] == fields(photo)["XMP-dc:Subject"] == ["Anna"]
    assert jpeg_key(photo.read_bytes()) == key


@pytest.mark.parametrize("mode", ["append", "sync"])
def test_a_keyword_of_ours_a_person_re_filed_under_their_parent_stays_filed_there(
        tmp_path: Path, exiftool: ExifTool, mode: str) -> None:
    """digiKam: green dragged from tagwatch's Farbe to the person's own "Meine Farben" (both trees).
    The next write put Farbe|green and Farbe/green back beside theirs: green twice in digiKam's tree."""
    writer = KeywordWriter(exiftool)
    photo = with_person_tags(noise_jpeg(tmp_path / "p.jpg", seed=3))
    paths = {"green": "Farbe|green", "star": "Form|star"}
    owned = {"owned": ["green", "star"], "owned_paths": {"green": ("Farbe|green",), "star": ("Form|star",)}}
    writer.apply(writer.plan(photo, ["green", "star"], paths=paths))
    subprocess.run(["exiftool", "-q", "-overwrite_original", "-XMP-lr:HierarchicalSubject-=Farbe|green",
                    "-XMP-lr:HierarchicalSubject+=Meine Farben|green", "-XMP-digiKam:TagsList-=Farbe/green",
                    "-XMP-digiKam:TagsList+=Meine Farben/green", str(photo)], check=True)
    plan = writer.plan(photo, ["green", "star"], mode=mode, paths=paths, **owned)
    assert not plan.changes, plan.edits
    record = fields(photo)
    assert sorted(record["XMP-lr:HierarchicalSubject"]) == ["Form|star", "Meine Farben|green", "People|Anna"]
    assert sorted(record["XMP-digiKam:TagsList"]) == ["Form/star", "Meine Farben/green", "People/Anna"]
    # a keyword of ours taken out of one tree only is still completed there from the other fields
    subprocess.run(["exiftool", "-q", "-overwrite_original", "-XMP-lr:HierarchicalSubject-=Form|star",
                    str(photo)], check=True)
    writer.apply(writer.plan(photo, ["green", "star"], mode=mode, paths=paths, **owned))
    assert sorted(fields(photo)["XMP-lr:HierarchicalSubject"]) == ["Form|star", "Meine Farben|green",
                                                                   "People|Anna"]


def test_a_parent_path_goes_into_both_hierarchical_fields(tmp_path: Path, exiftool: ExifTool) -> None:
    paths = {"golden retriever": "animal|dog|golden retriever", "dog": "animal|dog"}
    for prefix, expect_lr, expect_tags in (
            ("", "animal|dog|golden retriever", "animal/dog/golden retriever"),
            ("auto|clip", "auto|clip|animal|dog|golden retriever", "auto/clip/animal/dog/golden retriever")):
        writer = KeywordWriter(exiftool, WriteConfig(hierarchy_prefix=prefix))
        photo = with_person_tags(noise_jpeg(tmp_path / f"digikam{len(prefix)}.jpg", seed=2))
        plan = writer.plan(photo, ["golden retriever", "beach"], paths=paths)
        writer.apply(plan)
        assert plan.ours == ["golden retriever", "beach"]
        assert plan.paths == {"golden retriever": ("animal|dog|golden retriever",), "beach": ("beach",)}
        record = fields(photo)
        assert record["IPTC:Keywords"] == record["XMP-dc:Subject"] == ["Anna", "golden retriever", "beach"]
        assert record["XMP-lr:HierarchicalSubject"] == ["People|Anna", expect_lr,
                                                        f"{prefix}|beach" if prefix else "beach"]
        assert record["XMP-digiKam:TagsList"][1] == expect_tags
        assert readers(photo, tmp_path / "none.xmp")["digiKam"] == {"Anna", "golden retriever", "beach"}
        # untag with the ledger's paths takes out exactly what was written
        writer.apply(writer.plan_untag(photo, ["golden retriever", "beach"], [],
                                       {"golden retriever": ["animal|dog|golden retriever"]}))
        assert fields(photo) == fields(with_person_tags(noise_jpeg(tmp_path / "fresh.jpg", seed=2)))


def noise_png(path: Path) -> Path:
    """A PNG of random pixels (a format tagwatch writes through a sidecar only)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def untag_db(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> Path:
    """The database of the untag tests below, each naming it from a config of its own
    (``write_config(database=…)``): its pictures' vectors (noise_png's, seeds 4 and 5) and the tag
    list's are cached by one dry run (``conftest.config_with_vectors``), so no scan of theirs starts a
    model (about 2 CPU-seconds each).  Each test untags only its own folder."""
    config = config_with_vectors(tmp_path_factory.mktemp("untag-db"), tiny_checkpoint, (4, 5),
                                 fill=lambda folder: noise_png(folder / "a.png"), top_k=2)
    return config.parent / "state" / "tagwatch.db"


def sidecar_before_tagwatch(photo: Path, *args: str) -> Path:
    """A person's sidecar that exists before tagwatch (Lightroom, darktable): dc:subject only, or
    ``args``; returns it."""
    side = photo.with_name(photo.name + ".xmp")
    subprocess.run(["exiftool", "-q", *(args or ("-XMP-dc:Subject=Reise",)), "-o", str(side)], check=True)
    return side


@pytest.mark.xdist_group("untag-db")  # one worker builds untag_db once
@pytest.mark.parametrize("mode", ["append", "sync", "overwrite"])
def test_untag_gives_a_persons_sidecar_back_without_the_field_tagwatch_created(
        tmp_path: Path, tiny_checkpoint: Path, untag_db: Path, mode: str) -> None:
    """A PNG's sidecar held only the person's dc:subject `Reise`; tagwatch added an
    lr:hierarchicalSubject starting with a copy of `Reise` (Immich reads no dc:subject), and untag left
    that field behind holding the copy: the ledger recorded the fields it created for a JPEG only."""
    folder = tmp_path / "lib"
    folder.mkdir()
    png = noise_png(folder / "a.png")
    side = sidecar_before_tagwatch(png)
    before = fields(side)
    assert before["XMP-dc:Subject"] == ["Reise"] and not before["XMP-lr:HierarchicalSubject"]
    config = write_config(tmp_path / "conf", tiny_checkpoint, top_k=2, database=untag_db)
    config.write_text(config.read_text().replace("top_k = 2\n", f'top_k = 2\nmode = "{mode}"\n'))
    assert tagwatch("scan", "--config", str(config), str(folder)).returncode == 0
    tagged = fields(side)
    assert len(tagged["XMP-lr:HierarchicalSubject"]) >= 2
    assert ("Reise" in tagged["XMP-lr:HierarchicalSubject"]) == (mode != "overwrite")
    result = tagwatch("untag", "--config", str(config), str(folder))
    assert result.returncode == 0, result.stderr
    assert fields(side) == before


@pytest.mark.xdist_group("untag-db")  # one worker builds untag_db once
def test_untag_gives_back_the_photos_and_its_sidecars_created_fields_each_its_own(
        tmp_path: Path, tiny_checkpoint: Path, untag_db: Path) -> None:
    """Target "both": tagwatch creates dc:subject and lr:hierarchicalSubject in the photo (copies of
    its IPTC `Toskana`) and an lr:hierarchicalSubject in the person's existing sidecar (a copy of its
    `Reise`); the ledger keeps one record per field name, so the two fields of one name must not
    share one.  Untag gives both files back as they were."""
    folder = tmp_path / "lib"
    folder.mkdir()
    photo = noise_jpeg(folder / "p.jpg", seed=4)
    subprocess.run(["exiftool", "-q", "-overwrite_original", "-charset", "iptc=UTF8",
                    "-IPTC:Keywords=Toskana", str(photo)], check=True)
    side = sidecar_before_tagwatch(photo)
    photo_before, side_before = fields(photo), fields(side)
    assert not photo_before["XMP-dc:Subject"] and not side_before["XMP-lr:HierarchicalSubject"]
    config = write_config(tmp_path / "conf", tiny_checkpoint, top_k=2,
                          extra='[write]\ntarget = "both"\nhierarchy_prefix = "auto"\n', database=untag_db)
    assert tagwatch("scan", "--config", str(config), str(folder)).returncode == 0
    assert "Toskana" in fields(photo)["XMP-lr:HierarchicalSubject"]
    assert "Reise" in fields(side)["XMP-lr:HierarchicalSubject"]
    result = tagwatch("untag", "--config", str(config), str(folder))
    assert result.returncode == 0, result.stderr
    assert (fields(photo), fields(side)) == (photo_before, side_before)


@pytest.mark.xdist_group("untag-db")  # one worker builds untag_db once
def test_a_sidecar_tagwatch_created_is_kept_by_untag_with_the_persons_keywords(
        tmp_path: Path, tiny_checkpoint: Path, untag_db: Path) -> None:
    """The documented exception: a sidecar tagwatch created starts with the photo's keywords (apps
    reading it instead of the photo must see them); untag takes ours out and keeps it, theirs in it."""
    folder = tmp_path / "lib"
    folder.mkdir()
    photo = noise_jpeg(folder / "p.jpg", seed=5)
    subprocess.run(["exiftool", "-q", "-overwrite_original", "-XMP-dc:Subject=Reise", str(photo)], check=True)
    config = write_config(tmp_path / "conf", tiny_checkpoint, top_k=2, extra='[write]\ntarget = "sidecar"\n',
                          database=untag_db)
    assert tagwatch("scan", "--config", str(config), str(folder)).returncode == 0
    side = folder / "p.jpg.xmp"
    assert len(fields(side)["XMP-dc:Subject"]) == 3
    assert tagwatch("untag", "--config", str(config), str(folder)).returncode == 0
    left = fields(side)
    assert (left["XMP-dc:Subject"], left["XMP-lr:HierarchicalSubject"]) == (["Reise"], ["Reise"])
