"""Which keywords a photo gets, under which path, and what the log and summary say of them.

Real JPEGs, the real pipeline and store, exiftool writing and an independent exiftool reading back;
the cases come from an archivist's report: a town that is also a tag, an override spelt in another
case than the list, keywords a person had already, and a sidecar for a photo given nothing.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from conftest import (
    Env,
    config_with_vectors,
    exif_keywords,
    exiftool_read,
    noise_jpeg,
    tagwatch,
    write_config,
)
from tagwatch.cli.status import COUNTS, render
from tagwatch.config import PlacesConfig, TaggingConfig, WriteConfig
from tagwatch.outcomes import Outcome, Status
from tagwatch.overrides import parse_overrides
from tagwatch.places import Geocoder
from tagwatch.vocabulary import parse_rich_tag_list

HIERARCHICAL = "XMP-lr:HierarchicalSubject"
EIFFEL = ["-GPSLatitude=48.8584", "-GPSLatitudeRef=N", "-GPSLongitude=2.2945", "-GPSLongitudeRef=E"]
ROME = ["-GPSLatitude=41.8986", "-GPSLatitudeRef=N", "-GPSLongitude=12.4769", "-GPSLongitudeRef=E"]


@pytest.fixture(scope="module")
def geocoder() -> Geocoder:
    """One gazetteer for the module (~1 s to load)."""
    return Geocoder()


@pytest.fixture(scope="module")
def red_circle(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> Path:
    """The config (tags red and circle, two a photo) of the four tests that start from it, with their
    pictures' vectors cached (``conftest.config_with_vectors``): their scans start no model."""
    return config_with_vectors(tmp_path_factory.mktemp("red-circle"), tiny_checkpoint,
                               (21, 22, 23, 26, 27, 28), tags=["red", "circle"], top_k=2)


def exiftool(photo: Path, *args: str) -> None:
    """Edit ``photo`` as another program would."""
    subprocess.run(["exiftool", "-q", "-overwrite_original", "-codedcharacterset=utf8", *args, str(photo)],
                   check=True, capture_output=True)


def fields(photo: Path, *tags: str) -> dict[str, list[str]]:
    """``tags`` as an independent exiftool reads them (UTF-8), each as a list; absent ones left out."""
    out = exiftool_read("-j", "-G1", "-charset", "iptc=UTF8", *(f"-{t}" for t in tags), str(photo))
    record = json.loads(out, parse_float=str, parse_int=str)[0]
    record.pop("SourceFile")
    return {k: [str(x) for x in v] if isinstance(v, list) else [str(v)] for k, v in record.items()}


def rich_list(env: Env, text: str) -> None:
    env.pipeline.use_vocabulary(parse_rich_tag_list(text, ("a photo of a {}.",), env.root / "tags.toml"))


def test_a_tag_that_is_also_the_town_keeps_the_place_path_whole(tmp_path: Path, tiny_checkpoint: Path,
                                                                 geocoder: Geocoder) -> None:
    """Report §5: `paris` on the list (under `city`) and the photo taken at the Eiffel tower wrote
    `places|France|Île-de-France` but no `…|Paris`: the photo was missing from its town in Lightroom,
    digiKam and Immich while the log said `place: … Paris`.  The flat keyword is written once, as the
    list spells it; the place path stays whole; untag takes it all out; a GPS edit to Rome puts the
    keyword back under the tag's own path."""
    env = Env(tmp_path, tiny_checkpoint, TaggingConfig(threshold=-1.0, top_k=3), places=PlacesConfig())
    env.pipeline.places.geocoder = geocoder
    try:
        rich_list(env, '[[tag]]\nkeyword = "city"\n[[tag]]\nkeyword = "paris"\nparent = "city"\n'
                       '[[tag]]\nkeyword = "red"\n')
        photo = noise_jpeg(tmp_path / "in" / "eiffel.jpg", seed=7)
        exiftool(photo, *EIFFEL)
        assert env.run(photo) == {"eiffel.jpg": Status.TAGGED}
        flat = exif_keywords(photo)
        hierarchy = fields(photo, HIERARCHICAL)[HIERARCHICAL]
        assert "places|France|Île-de-France|Paris" in hierarchy, hierarchy
        assert {"places|France", "places|France|Île-de-France"} <= set(hierarchy)
        for found in flat.values():  # one flat keyword, as the list spells it
            assert [k for k in found if k.casefold() == "paris"] == ["paris"], found
            assert {"France", "Île-de-France", "city", "red"} <= set(found)

        exiftool(photo, *ROME)  # a metadata edit: the tag stays predicted, the town changes
        assert env.run(photo) == {"eiffel.jpg": Status.TAGGED}
        hierarchy = fields(photo, HIERARCHICAL)[HIERARCHICAL]
        assert "city|paris" in hierarchy and "places|Italy|Lazio|Rome" in hierarchy
        assert not [h for h in hierarchy if "France" in h], hierarchy

        assert env.pipeline.untag(str(photo)).status == Status.UNTAGGED
        assert fields(photo, "IPTC:Keywords", "XMP-dc:Subject", HIERARCHICAL) == {}
    finally:
        env.close()


def test_an_override_add_in_another_case_gets_the_list_tags_path(tmp_path: Path,
                                                                  tiny_checkpoint: Path) -> None:
    """Report §7: `add = ["Blue"]` with `blue` under `colour` on the list wrote a flat `Blue` into
    lr:hierarchicalSubject, while `add = ["blue"]` got `colour|blue`.  Keywords are compared without
    regard to case: both get the list's path, as the list spells it (docs/overrides.md)."""
    env = Env(tmp_path, tiny_checkpoint, TaggingConfig(threshold=-1.0, top_k=1))
    root = tmp_path / "in"
    try:
        rich_list(env, '[[tag]]\nkeyword = "colour"\nthreshold = 1.0\n'  # these two: never predicted
                       '[[tag]]\nkeyword = "red"\nparent = "colour"\n'
                       '[[tag]]\nkeyword = "blue"\nparent = "colour"\nthreshold = 1.0\n')
        upper, lower = noise_jpeg(root / "upper.jpg", seed=8), noise_jpeg(root / "lower.jpg", seed=9)
        env.pipeline.use_overrides(parse_overrides(
            f'[[override]]\npath = "{upper}"\nadd = ["Blue"]\n'
            f'[[override]]\npath = "{lower}"\nadd = ["blue"]\n',
            tmp_path / "overrides.toml", [root]))
        assert env.run(upper, lower) == {"upper.jpg": Status.TAGGED, "lower.jpg": Status.TAGGED}
        for photo, flat in ((upper, "Blue"), (lower, "blue")):
            hierarchy = fields(photo, HIERARCHICAL)[HIERARCHICAL]
            assert "colour|blue" in hierarchy and flat not in hierarchy, hierarchy
            assert flat in exif_keywords(photo)["iptc"]
    finally:
        env.close()


def test_the_log_and_summary_say_what_was_written(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """Report §17: `tagged …: circle, red` for a photo holding the person's `RED` (no red written);
    `no tag above threshold` for a photo whose two predictions an override removed; and `2 tagged`
    for a scan that wrote into one photo.  Every photo here gets both tags predicted."""
    root = tmp_path / "in"
    theirs, corrected, plain = (noise_jpeg(root / f"{n}.jpg", seed=s)
                                for n, s in (("a", 17), ("b", 18), ("c", 19)))
    exiftool(theirs, "-IPTC:Keywords=RED", "-XMP-dc:Subject=RED")
    config = write_config(tmp_path / "conf", tiny_checkpoint, tags=["red", "circle"], top_k=2)
    config.write_text(config.read_text().replace('tags = "tags.txt"',
                                                 'tags = "tags.txt"\noverrides = "o.toml"'))
    (config.parent / "o.toml").write_text(f'[[override]]\npath = "{corrected}"\nremove = ["red", "circle"]\n')
    dry = tagwatch("scan", "--dry-run", str(corrected), "--config", str(config)).stdout  # said the same way
    assert dry in (f"{corrected}\tremoved by an override: {names}\n"
                   for names in ("red, circle", "circle, red")), dry
    result = tagwatch("scan", str(root), "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert f"tagged {theirs}: circle; already in the file: red" in result.stderr
    assert exif_keywords(theirs) == {"iptc": ["RED", "circle"], "xmp": ["RED", "circle"]}
    line = next(line for line in result.stderr.splitlines() if f" {corrected}: " in line)
    said = line.split("INFO ", 1)[1]
    assert said in (f"checked {corrected}: removed by an override: {names}; nothing to write"
                    for names in ("red, circle", "circle, red")), line
    assert exif_keywords(corrected) == {"iptc": [], "xmp": []}
    assert f"tagged {plain}: " in result.stderr
    assert "scan: 3 photos: 2 tagged, 1 unchanged" in result.stderr


def test_no_sidecar_for_a_photo_given_nothing_of_tagwatchs(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """Report §14: with target "sidecar", a photo that got no prediction but held a person's
    keywords got a new XMP sidecar ("fields brought up to date") holding their keywords alone, which
    untag left behind; so did one predicted only keywords it had already.  A photo given a keyword
    still gets its sidecar."""
    env = Env(tmp_path, tiny_checkpoint, TaggingConfig(threshold=0.99), write=WriteConfig(target="sidecar"),
              places=PlacesConfig())  # places on, as by default: the write is planned for every photo
    root = tmp_path / "in"
    try:
        oma, persons, plain = (noise_jpeg(root / f"{n}.jpg", seed=s)
                               for n, s in (("oma", 15), ("p", 16), ("c", 17)))
        exiftool(oma, "-IPTC:Keywords=Oma Käthe")
        exiftool(persons, "-IPTC:Keywords=red", "-IPTC:Keywords=Circle")
        before = {p: p.read_bytes() for p in (oma, persons)}
        assert env.run(oma) == {"oma.jpg": Status.TAGGED}
        env.use(["red", "circle"], TaggingConfig(threshold=-1.0, top_k=2))
        assert env.run(persons, plain) == {"p.jpg": Status.TAGGED, "c.jpg": Status.TAGGED}
        assert sorted(p.name for p in root.iterdir()) == ["c.jpg", "c.jpg.xmp", "oma.jpg", "p.jpg"]
        assert {p: p.read_bytes() for p in (oma, persons)} == before
        assert sorted(fields(root / "c.jpg.xmp", "XMP-dc:Subject")["XMP-dc:Subject"]) == ["circle", "red"]
        for photo in (oma, persons):  # nor does untag make one, to take nothing out of it
            assert env.pipeline.untag(str(photo)).status == Status.UNCHANGED
        assert sorted(p.name for p in root.iterdir()) == ["c.jpg", "c.jpg.xmp", "oma.jpg", "p.jpg"]
    finally:
        env.close()


def test_a_keyword_a_correction_adds_follows_its_parent_renamed_in_the_list(tmp_path: Path,
                                                                           tiny_checkpoint: Path) -> None:
    """A user's report: a correction's `add = ["Blue"]` went under the list's `colour|blue`; the list's
    parent renamed to `color`, tagwatch's own keywords moved and Blue stayed under `colour|blue`, a
    `colour` node no list names left in every keyword tree, untag or not.  Its path follows the list
    as ours do; the keyword itself stays the person's (untag leaves it, under the list's path)."""
    env = Env(tmp_path, tiny_checkpoint, TaggingConfig(threshold=1.0, mode="sync"))  # nothing predicted
    try:
        photo = noise_jpeg(tmp_path / "in" / "a.jpg", seed=24)
        env.pipeline.use_overrides(parse_overrides(f'[[override]]\npath = "{photo}"\nadd = ["Blue"]\n',
                                                   tmp_path / "o.toml", [photo.parent]))
        listed = '[[tag]]\nkeyword = "{0}"\n[[tag]]\nkeyword = "blue"\nparent = "{0}"\n'
        rich_list(env, listed.format("colour"))
        assert env.run(photo) == {"a.jpg": Status.TAGGED}
        assert fields(photo, HIERARCHICAL)[HIERARCHICAL] == ["colour|blue"]
        for parent in ("color", "hue"):
            rich_list(env, listed.format(parent))
            env.pipeline.retag()
            assert fields(photo, HIERARCHICAL)[HIERARCHICAL] == [f"{parent}|blue"]
            assert exif_keywords(photo) == {"iptc": ["Blue"], "xmp": ["Blue"]}
        assert env.pipeline.untag(str(photo)).status == Status.UNCHANGED  # nothing of ours in it
        assert fields(photo, HIERARCHICAL)[HIERARCHICAL] == ["hue|blue"]
        assert exif_keywords(photo)["iptc"] == ["Blue"]
    finally:
        env.close()


def test_a_tag_deleted_from_the_list_reads_no_photo_in_append_mode(tmp_path: Path,
                                                                   tiny_checkpoint: Path) -> None:
    """A user's report (24,000 photos): deleting one tag from the list in append mode, which never
    takes a keyword out, read the metadata of the 6,093 photos that had it, wrote nothing, took 35 s
    and counted them all "unchanged" in status.  Such a photo is left as it is, unread and uncounted;
    in sync mode the same edit still takes the keyword out."""
    tagging = TaggingConfig(threshold=-1.0, top_k=3)
    env = Env(tmp_path, tiny_checkpoint, tagging)
    try:
        photo = noise_jpeg(tmp_path / "in" / "a.jpg", seed=25)
        env.use(["red", "circle", "beach"], tagging)
        assert env.run(photo) == {"a.jpg": Status.TAGGED}
        assert sorted(exif_keywords(photo)["iptc"]) == ["beach", "circle", "red"]
        seen: list[Outcome] = []
        env.use(["red", "circle"], tagging)  # beach deleted from the list
        assert env.pipeline.retag(seen.extend) == (1, 0)
        assert seen == []  # not read, not counted: nothing of it could change
        assert sorted(exif_keywords(photo)["iptc"]) == ["beach", "circle", "red"]  # append keeps ours
        env.use(["red"], TaggingConfig(threshold=-1.0, top_k=3, mode="sync"))
        assert env.pipeline.retag(seen.extend) == (1, 1)
        assert [(Path(o.path).name, o.wrote) for o in seen] == [("a.jpg", True)]
        assert exif_keywords(photo)["iptc"] == ["red"]
    finally:
        env.close()


def test_a_long_re_scoring_is_counted_as_it_goes_and_status_names_what_it_only_checked(
        tmp_path: Path, tiny_checkpoint: Path) -> None:
    """A user's report: for the 140 s a tag-list edit took to rewrite 6,093 photos, `tagwatch status`
    said "0 tagged … 0 photos/min", then jumped; and once a re-scoring had only checked photos it said
    "0 tagged … 4882.61 photos/min".  The re-scoring tells the daemon's count every 50 photos, and
    status names the checked ones beside the rate that includes them."""
    tagging = TaggingConfig(threshold=-1.0, top_k=1, mode="sync")
    env = Env(tmp_path, tiny_checkpoint, tagging)
    try:
        photos = [noise_jpeg(tmp_path / "in" / f"{i:03d}.jpg", seed=100 + i) for i in range(60)]
        env.use(["beach"], tagging)
        assert set(env.run(*photos).values()) == {Status.TAGGED}
        told: list[list[Outcome]] = []
        env.use(["forest"], tagging)  # every photo's one keyword changes
        assert env.pipeline.retag(lambda outcomes: told.append(list(outcomes))) == (60, 60)
        assert [len(t) for t in told] == [50, 10]  # the first 50 counted before the last was written
    finally:
        env.close()
    daemon = {"pid": 1, "uptime_s": 60, "folders": 1, "model_loaded": False, "queue": 0,
              "tagged_since_start": 0, "failed_since_start": 0, "unchanged_since_start": 8593,
              "tagged_per_min": 4882.61}
    report = {"daemon": daemon, "database": "tw.db", "model": "m", **dict.fromkeys(COUNTS, 0)}
    line = next(line for line in render(report, []).splitlines() if line.startswith("queue"))
    assert line.startswith("queue     0 waiting; 0 tagged and 0 failed since start, 8593 checked with "
                           "nothing to write; 4882.61 photos/min over the last 5 min"), line


@pytest.mark.xdist_group("red-circle")  # one worker builds red_circle once
def test_a_touched_photo_is_no_news_and_a_photo_with_no_tag_is_counted_so(tmp_path: Path,
                                                                          red_circle: Path) -> None:
    """A user's report (24,000 photos): a first index ended "22800 tagged, 1200 unchanged", read as
    1,200 photos skipped (they had no tag above the threshold); and touching 5,836 tagged photos gave
    5,836 "tagged … (already in the file)" lines for photos nothing was written into."""
    photo = noise_jpeg(tmp_path / "in" / "a.jpg", seed=26)
    blank = noise_jpeg(tmp_path / "other" / "b.jpg", seed=27)
    config = red_circle
    assert tagwatch("scan", str(photo), "--config", str(config)).returncode == 0
    data = photo.read_bytes()
    os.utime(photo)  # touched: same bytes, new times
    again = tagwatch("scan", str(photo), "--config", str(config))
    assert again.returncode == 0, again.stderr
    assert str(photo) not in again.stderr and photo.read_bytes() == data, again.stderr
    assert "scan: 1 photo: 1 unchanged" in again.stderr
    none = tagwatch("scan", "--threshold", "1", str(blank), "--config", str(config))
    assert f"checked {blank}: no tag above threshold 1.0; nothing to write" in none.stderr, none.stderr
    assert "scan: 1 photo: 1 with no tag above the threshold" in none.stderr, none.stderr


@pytest.mark.xdist_group("red-circle")  # one worker builds red_circle once
def test_a_dry_run_names_the_keywords_of_ours_a_sync_scan_would_take_out(tmp_path: Path,
                                                                          red_circle: Path) -> None:
    """A user's report: in sync mode, `scan --dry-run --threshold 0.65` (the documented way to try a
    threshold) listed what stays and called the photo "already in the file", and the scan after it
    took four keywords out.  The dry run names them, counts the photo as the scan does, and a photo
    with nothing to write counts unchanged in both."""
    photo = noise_jpeg(tmp_path / "in" / "a.jpg", seed=22)
    blank = noise_jpeg(tmp_path / "in" / "b.jpg", seed=23)
    config = red_circle
    assert tagwatch("scan", str(photo), "--config", str(config)).returncode == 0
    written = exif_keywords(photo)["iptc"]
    assert sorted(written) == ["circle", "red"]

    def dry(*flags: str) -> tuple[str, str]:
        result = tagwatch("scan", "--dry-run", "--mode", "sync", *flags, str(photo), str(blank),
                          "--config", str(config))
        assert result.returncode == 0, result.stderr
        lines = dict(line.split("\t") for line in result.stdout.splitlines())
        return lines[str(photo)], result.stderr

    line, stderr = dry("--top-k", "1")
    kept, _, taken = line.partition("; would take out tagwatch's no longer predicted: ")
    assert re.fullmatch(r"(red|circle) \([-\d.]+\)", kept), line
    assert taken == ({"red", "circle"} - {kept.split(" ")[0]}).pop(), line
    line, stderr = dry("--threshold", "1")
    nothing, _, taken_all = line.partition("; would take out tagwatch's no longer predicted: ")
    assert nothing == "(no tag above threshold)" and sorted(taken_all.split(", ")) == ["circle", "red"], line
    assert "scan: 2 photos: 1 tagged, 1 with no tag above the threshold (dry run: no file written)" in stderr
    assert exif_keywords(photo)["iptc"] == written  # a dry run writes nothing
    real = tagwatch("scan", "--mode", "sync", "--top-k", "1", str(photo), "--config", str(config))
    assert real.returncode == 0, real.stderr
    assert exif_keywords(photo)["iptc"] == [kept.split(" ")[0]]
    assert f"took out tagwatch's no longer predicted: {taken}" in real.stderr, real.stderr


@pytest.mark.xdist_group("red-circle")  # one worker builds red_circle once
def test_a_dry_run_of_overwrite_names_the_persons_keywords_the_scan_would_take_out(
        tmp_path: Path, red_circle: Path) -> None:
    """An rtag user's report: `scan --dry-run --mode overwrite` said "(already in the file)" and
    "1 unchanged" for a photo whose own keywords (rtag's "ping-pong ball", the person's "Tante Renée")
    the real scan then deleted.  The dry run names them and counts the photo as the scan does."""
    photo = noise_jpeg(tmp_path / "in" / "a.jpg", seed=28)
    config = red_circle
    exiftool(photo, "-IPTC:Keywords=red", "-IPTC:Keywords=circle", "-IPTC:Keywords=ping-pong ball",
             "-IPTC:Keywords=Tante Renée")  # tagged by rtag, a name added by hand
    dry = tagwatch("scan", "--dry-run", "--mode", "overwrite", str(photo), "--config", str(config))
    assert dry.returncode == 0, dry.stderr
    line = dry.stdout.strip().split("\t")[1]
    assert line.endswith("; would take out, as overwrite mode does: Tante Renée, ping-pong ball"), line
    assert "scan: 1 photo: 1 tagged (dry run: no file written)" in dry.stderr, dry.stderr
    real = tagwatch("scan", "--mode", "overwrite", str(photo), "--config", str(config))
    assert real.returncode == 0, real.stderr
    assert sorted(exif_keywords(photo)["iptc"]) == ["circle", "red"]
    assert "took out, as overwrite mode does: Tante Renée, ping-pong ball" in real.stderr, real.stderr
    # a photo holding nothing but its predictions: unchanged in both
    again = tagwatch("scan", "--dry-run", "--mode", "overwrite", str(photo), "--config", str(config))
    assert "scan: 1 photo: 1 unchanged" in again.stderr, again.stderr


def test_a_dry_run_of_overwrite_keeps_the_persons_keywords_where_they_took_every_prediction_out(
        tmp_path: Path, tiny_checkpoint: Path) -> None:
    """Review L1: a person took tagwatch's "red" and "circle" out of a photo that also holds their
    own "Tante Renée", and the tag list became just those two.  With every prediction taken out
    there is nothing to write, so the scan writes as append and keeps their keyword; the dry run
    decided overwrite before leaving the taken-out keywords out, and said it would take "Tante
    Renée" out.  Dry run and scan now say and do the same: the keyword stays."""
    photo = noise_jpeg(tmp_path / "in" / "a.jpg", seed=28)
    config = write_config(tmp_path / "conf", tiny_checkpoint, tags=["red", "circle", "square"], top_k=3)
    exiftool(photo, "-IPTC:Keywords=Tante Renée", "-XMP-dc:Subject=Tante Renée")
    assert tagwatch("scan", str(photo), "--config", str(config)).returncode == 0
    assert sorted(exif_keywords(photo)["iptc"]) == ["Tante Renée", "circle", "red", "square"]
    # the person takes two of ours out (not every one the write added: no stale save)
    exiftool(photo, "-IPTC:Keywords-=red", "-IPTC:Keywords-=circle", "-XMP-dc:Subject-=red",
             "-XMP-dc:Subject-=circle")
    (tmp_path / "conf" / "tags.txt").write_text("red\ncircle\n", encoding="utf-8")
    dry = tagwatch("scan", "--dry-run", "--mode", "overwrite", str(photo), "--config", str(config))
    assert dry.returncode == 0, dry.stderr
    line = dry.stdout.strip().split("\t")[1]
    assert "Tante" not in line, line
    real = tagwatch("scan", "--mode", "overwrite", str(photo), "--config", str(config))
    assert real.returncode == 0, real.stderr
    assert sorted(exif_keywords(photo)["iptc"]) == ["Tante Renée", "square"], real.stderr
    assert "overwrite mode" not in real.stderr, real.stderr
    again = tagwatch("scan", "--dry-run", "--mode", "overwrite", str(photo), "--config", str(config))
    assert "Tante" not in again.stdout, again.stdout


@pytest.mark.xdist_group("red-circle")  # one worker builds red_circle once
def test_a_dry_run_leaves_out_a_keyword_a_person_took_out_since_the_last_scan(tmp_path: Path,
                                                                             red_circle: Path) -> None:
    """Report §9: the person took `circle` out of a tagged photo; the dry run still listed it as to
    be written, and only a real scan (which records the removal) made the dry run right."""
    photo = noise_jpeg(tmp_path / "in" / "a.jpg", seed=21)
    config = red_circle
    assert tagwatch("scan", str(photo), "--config", str(config)).returncode == 0
    exiftool(photo, "-IPTC:Keywords-=circle", "-XMP-dc:Subject-=circle")
    dry = tagwatch("scan", "--dry-run", str(photo), "--config", str(config))
    assert dry.returncode == 0, dry.stderr
    line = next(line for line in dry.stdout.splitlines() if line.startswith(str(photo)))
    assert re.fullmatch(rf"{re.escape(str(photo))}\tred \([-\d.]+\) \(already in the file\)", line), line
    assert "scan: 1 photo: 1 unchanged (dry run: no file written)" in dry.stderr, dry.stderr
    real = tagwatch("scan", str(photo), "--config", str(config))
    assert "circle taken out of it by a person" in real.stderr, real.stderr
    assert exif_keywords(photo)["iptc"] == ["red"]
