"""`tagwatch export`: each photo's tags re-scored from cached vectors, as JSON or CSV, never encoding."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import (
    REPO,
    SHAPES_CHECKPOINT,
    SHAPES_CONFIG,
    config_with_vectors,
    database_copy,
    exif_keywords,
    noise_jpeg,
    status,
    tagwatch,
    write_config,
)
from synthetic import make_photo
from tagwatch.export import display_path, render_csv, render_json, score
from tagwatch.tagger import TagMatrix


def export(config: Path, *args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """`tagwatch export` run from ``cwd`` (paths inside it are printed relative to it)."""
    return subprocess.run([sys.executable, "-m", "tagwatch", "export", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=120, cwd=cwd)


@pytest.fixture(scope="module")
def cached(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> Path:
    """``config_file()``'s config (every tag list word, three a photo) with the vectors of the pictures
    of seeds 0-3 and 9 cached (``conftest.config_with_vectors``).  Each test below starts from its own
    copy of that database (``database_copy``): export with no PATH lists every photo a database knows,
    and ``status`` counts its encodings, so no test may see another's; its scans of those pictures then
    start no model (about 2 CPU-seconds each).  A picture a test needs never encoded is of another seed."""
    return config_with_vectors(tmp_path_factory.mktemp("export-vectors"), tiny_checkpoint, (0, 1, 2, 3, 9))


@pytest.mark.xdist_group("export-cached")  # one worker builds `cached` once
def test_export_gives_the_keywords_scan_wrote_and_encodes_nothing(tmp_path: Path, config_file,
                                                                  cached: Path) -> None:
    config = config_file()  # threshold -1, top_k 3: every photo gets three tags
    database_copy(cached, config.parent / "state")  # the pictures' vectors cached: the scan encodes none
    photos = [noise_jpeg(tmp_path / "lib" / f"a{i}.jpg", seed=i) for i in range(3)]
    photos.append(noise_jpeg(tmp_path / "lib" / "sub" / "b.jpg", seed=9))
    assert tagwatch("scan", "--config", str(config), str(tmp_path / "lib")).returncode == 0
    encoded = status(config)["encoded"]

    result = export(config, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert list(doc) == ["lib/a0.jpg", "lib/a1.jpg", "lib/a2.jpg", "lib/sub/b.jpg"]  # relative, sorted
    for photo in photos:
        assert doc[str(photo.relative_to(tmp_path))] == exif_keywords(photo)["iptc"]  # same, same order
    assert "export: 4 photos" in result.stderr

    scored = json.loads(export(config, "--scores", cwd=tmp_path).stdout)
    for name, tags in scored.items():
        assert list(tags) == doc[name]
        values = list(tags.values())
        assert values == sorted(values, reverse=True) and all(-1 <= v <= 1 for v in values)

    rows = list(csv.reader(io.StringIO(export(config, "--format", "csv", cwd=tmp_path).stdout)))
    assert rows[0] == ["path", "tags"]
    assert {path: tags.split("; ") for path, tags in rows[1:]} == doc
    long = list(csv.reader(io.StringIO(export(config, "--format", "csv", "--scores", cwd=tmp_path).stdout)))
    assert long[0] == ["path", "tag", "score"] and len(long) == 1 + 4 * 3
    assert {(p, t): round(float(s), 4) for p, t, s in long[1:]} == {
        (p, t): s for p, tags in scored.items() for t, s in tags.items()}

    only = export(config, str(tmp_path / "lib" / "sub"))  # run from elsewhere: absolute paths
    assert json.loads(only.stdout) == {str(photos[3]): doc["lib/sub/b.jpg"]}

    # a new tag list and top_k 1, without scanning again: export re-scores the cached vectors and
    # gives the tag and score that scan would now write (its new prompts are encoded: the model
    # starts, and still encodes no image)
    config = config_file(tags=["lighthouse", "meadow", "Ünïcödé tag"], top_k=1)
    result = export(config, "--scores")
    assert result.returncode == 0, result.stderr
    rescored = json.loads(result.stdout)
    assert set(rescored) == {str(p) for p in photos}
    dry = tagwatch("scan", "--dry-run", "--config", str(config), str(tmp_path / "lib"))
    assert len(dry.stdout.strip().splitlines()) == 4
    for line in dry.stdout.strip().splitlines():
        path, tags = line.split("\t")
        tags = tags.removesuffix(" (already in the file)")  # its one tag is in it from the first scan
        keyword, value = tags.rsplit(" (", 1)
        assert list(rescored[path]) == [keyword]
        assert abs(rescored[path][keyword] - float(value.rstrip(")"))) < 1e-3
    assert status(config)["encoded"] == encoded  # not one image encoded by any export


@pytest.mark.xdist_group("export-cached")  # one worker builds `cached` once
def test_export_gives_what_is_written_not_a_keyword_a_person_took_out(tmp_path: Path, config_file,
                                                                      cached: Path) -> None:
    """A keyword a person took out of a photo is never written into it again, and a correction
    (overrides) changes what is: export listed the raw predictions, the declined keyword included."""
    config = config_file()
    database_copy(cached, config.parent / "state")
    config.write_text('overrides = "overrides.toml"\n' + config.read_text(encoding="utf-8"), encoding="utf-8")
    taken, corrected = (noise_jpeg(tmp_path / "lib" / f"{name}.jpg", seed=seed)
                        for name, seed in (("taken", 1), ("corrected", 2)))
    assert tagwatch("scan", "--config", str(config), str(tmp_path / "lib")).returncode == 0
    gone = exif_keywords(taken)["iptc"][0]
    subprocess.run(["exiftool", "-q", "-overwrite_original", f"-IPTC:Keywords-={gone}",
                    f"-XMP-dc:Subject-={gone}", "-XMP-lr:HierarchicalSubject=", str(taken)], check=True)
    dropped = exif_keywords(corrected)["iptc"][0]
    (config.parent / "overrides.toml").write_text(
        f'[[override]]\npath = "{corrected}"\nremove = ["{dropped}"]\nadd = ["holiday"]\n', encoding="utf-8")
    scanned = tagwatch("scan", "--config", str(config), str(tmp_path / "lib"))
    assert scanned.returncode == 0 and f"{gone} taken out of it by a person" in scanned.stderr, scanned.stderr

    doc = json.loads(export(config, cwd=tmp_path).stdout)
    assert {name: set(tags) for name, tags in doc.items()} == {  # what the files hold
        f"lib/{p.name}": set(exif_keywords(p)["iptc"]) for p in (corrected, taken)}
    assert doc["lib/taken.jpg"] == exif_keywords(taken)["iptc"] and gone not in doc["lib/taken.jpg"]
    assert dropped not in doc["lib/corrected.jpg"] and doc["lib/corrected.jpg"][-1] == "holiday"
    scored = json.loads(export(config, "--scores", cwd=tmp_path).stdout)  # valid JSON: no NaN
    assert scored["lib/corrected.jpg"]["holiday"] is None  # a correction's keyword has no score
    rows = list(csv.reader(io.StringIO(export(config, "--format", "csv", "--scores", cwd=tmp_path).stdout)))
    assert ["lib/corrected.jpg", "holiday", ""] in rows


@pytest.mark.xdist_group("export-cached")  # one worker builds `cached` once
def test_a_photo_set_aside_by_untag_is_exported_with_its_places(tmp_path: Path, config_file,
                                                               cached: Path) -> None:
    """export.md: a photo `untag` set aside is listed with what a scan naming it would write, its
    place keywords included (untag forgot its coordinates with the keywords it took out)."""
    config = config_file()
    database_copy(cached, config.parent / "state")  # the GPS tags leave its content key, seed 3's, as it was
    photo = noise_jpeg(tmp_path / "lib" / "paris.jpg", seed=3)
    subprocess.run(["exiftool", "-q", "-overwrite_original", "-GPSLatitude=48.8584", "-GPSLatitudeRef=N",
                    "-GPSLongitude=2.2945", "-GPSLongitudeRef=E", str(photo)], check=True)
    assert tagwatch("scan", "--config", str(config), str(photo)).returncode == 0
    written = exif_keywords(photo)["iptc"]
    assert "France" in written
    assert tagwatch("untag", "--config", str(config), str(photo)).returncode == 0
    assert exif_keywords(photo)["iptc"] == []
    doc = json.loads(export(config, cwd=tmp_path).stdout)
    assert set(doc["lib/paris.jpg"]) == set(written)


@pytest.mark.xdist_group("export-cached")  # one worker builds `cached` once
def test_photos_without_a_cached_vector_are_reported_not_guessed(tmp_path: Path, config_file,
                                                                 cached: Path) -> None:
    config = config_file()
    database_copy(cached, config.parent / "state")  # seeds 1 and 2 cached; 4 and 5, below, never encoded
    lib = tmp_path / "lib"
    kept, edited = noise_jpeg(lib / "kept.jpg", seed=1), noise_jpeg(lib / "edited.jpg", seed=2)
    truncated = lib / "truncated.jpg"
    truncated.write_bytes(kept.read_bytes()[:500])
    (lib / "empty.jpg").write_bytes(b"")  # said "not an image format tagwatch reads", unlike scan
    tagwatch("scan", "--config", str(config), str(lib))
    noise_jpeg(lib / "new.jpg", seed=5)  # never scanned
    noise_jpeg(edited, seed=4)  # new pixels since the scan: its old tags would be wrong
    moved = shutil.copyfile(kept, tmp_path / "elsewhere.jpg")  # same pixels: its vector is cached
    result = export(config, str(lib), str(moved))
    assert result.returncode == 0, result.stderr
    assert set(json.loads(result.stdout)) == {str(kept), str(moved)}
    not_encoded = "not exported: not encoded yet (`tagwatch scan` on it encodes and tags it)"
    assert f"{lib / 'new.jpg'}: {not_encoded}" in result.stderr
    assert f"{edited}: {not_encoded}" in result.stderr
    assert f"{truncated}: not exported: truncated JPEG" in result.stderr
    assert f"{lib / 'empty.jpg'}: not exported: empty file (0 bytes)" in result.stderr
    assert "export: 2 photos exported; 4 photos left out, each named above with why\n" in result.stderr

    everything = export(config)  # no PATH: every photo the database knows
    assert set(json.loads(everything.stdout)) == {str(kept)}
    assert f"{edited}: {not_encoded}" in everything.stderr


@pytest.mark.xdist_group("export-cached")  # one worker builds `cached` once
def test_a_photo_whose_name_is_not_utf8_is_left_out_and_named_as_scan_names_it(
        tmp_path: Path, config_file, cached: Path) -> None:
    """Report xV #1: a copy from an old card with a Latin-1 name was exported with the raw byte in
    the path, so no JSON or CSV reader could load the file (and a strict UTF-8 stdout ended in a
    traceback and nothing written); one never encoded was told `tagwatch scan` would encode it, which
    scan refuses.  Now both are left out, named on stderr as the log names them, with scan's reason."""
    config = config_file()
    database_copy(cached, config.parent / "state")  # seed 1 cached; seed 4, below, never encoded
    lib = tmp_path / "lib"
    good = noise_jpeg(lib / "good.jpg", seed=1)
    assert tagwatch("scan", "--config", str(config), str(lib)).returncode == 0
    copied = os.fsdecode(bytes(lib) + b"/caf\xe9 copy.jpg")
    shutil.copyfile(good, copied)  # the same picture: its vector is cached
    fresh = os.fsdecode(bytes(lib) + b"/gr\xfcn.jpg")
    noise_jpeg(Path(fresh), seed=4)
    reason = "not exported: the file name is not valid UTF-8; rename the file"
    # strict as under most UTF-8 locales (the traceback), lenient as under C.UTF-8 (the raw bytes)
    for errors, form in (("strict", "json"), ("surrogateescape", "csv")):
        result = subprocess.run(
            [sys.executable, "-m", "tagwatch", "export", "--config", str(config), "--format", form, str(lib)],
            capture_output=True, timeout=120, cwd=tmp_path,
            env={**os.environ, "PYTHONIOENCODING": f"utf-8:{errors}"})
        said = result.stderr.decode("utf-8")
        assert result.returncode == 0, said
        out = result.stdout.decode("utf-8")  # valid UTF-8, every byte of it
        if form == "json":
            assert json.loads(out) == {"lib/good.jpg": exif_keywords(good)["iptc"]}
        else:
            assert [row[0] for row in csv.reader(io.StringIO(out))] == ["path", "lib/good.jpg"]
        assert f"{copied!a}: {reason}\n" in said and f"{fresh!a}: {reason}\n" in said
        assert "not encoded yet" not in said and "Traceback" not in said
        assert "export: 1 photo exported; 2 photos left out, each named above with why\n" in said


def test_a_photos_score_does_not_depend_on_the_photos_exported_with_it(tmp_path: Path) -> None:
    """Report xN #5: `export --scores` gave red-circle's circle 0.6414 alone and 0.6413 beside other
    photos (explain: +0.6414), as a float32 product rounds with the batch's size.  A user diffing two
    exports saw scores move that had no reason to; at a threshold, the tag itself could."""
    library = tmp_path / "lib"
    library.mkdir()
    shots = [("red", "circle", 9000000), ("blue", "square", 9000001), ("green", "triangle", 9000002),
             ("yellow", "star", 9000003), ("purple", "circle", 9000004), ("orange", "square", 9000005)]
    photos = []
    for colour, shape, seed in shots:
        photos.append(library / f"{colour}-{shape}.jpg")
        make_photo(colour, shape, seed).save(photos[-1], quality=90)
    words = ["red", "green", "blue", "yellow", "purple", "orange", "circle", "square", "triangle", "star"]
    config = write_config(tmp_path / "conf", SHAPES_CHECKPOINT, model=SHAPES_CONFIG, tags=words,
                          threshold=-1.0, top_k=10)  # every tag of every photo exported, with its score
    assert tagwatch("scan", "--config", str(config), str(library)).returncode == 0

    def exported(*paths: Path) -> dict[tuple[str, str], str]:
        result = export(config, "--scores", "--format", "csv", *map(str, paths))
        assert result.returncode == 0, result.stderr
        return {(path, tag): value for path, tag, value in list(csv.reader(io.StringIO(result.stdout)))[1:]}

    together = exported(library)
    assert len(together) == len(photos) * len(words)
    for photo in photos:
        alone = exported(photo)
        assert alone == {key: value for key, value in together.items() if key[0] == str(photo)}
        assert exported(photo, photos[0] if photo != photos[0] else photos[1]).items() >= alone.items()
    explained = tagwatch("explain", "--config", str(config), "--tag", "circle", str(photos[0]))
    assert explained.returncode == 0, explained.stderr
    assert f"+{together[(str(photos[0]), 'circle')]}" in explained.stdout


def test_renderers_on_a_constructed_case() -> None:
    tags = TagMatrix(("sea", "sky, blue"), np.eye(2, dtype=np.float32))
    results = score({"/p/b.jpg": np.array([0.6, 0.8]), "/p/a.jpg": np.array([0.0, 1.0])}, tags, 0.7, 5)
    assert [(r.path, r.tags) for r in results] == [
        ("/p/a.jpg", [("sky, blue", 1.0)]), ("/p/b.jpg", [("sky, blue", 0.800000011920929)])]
    assert json.loads(render_json(results, "/p", False)) == {"a.jpg": ["sky, blue"], "b.jpg": ["sky, blue"]}
    assert json.loads(render_json(results, "/q", True)) == {"/p/a.jpg": {"sky, blue": 1.0},
                                                            "/p/b.jpg": {"sky, blue": 0.8}}
    assert render_csv(results, "/p", False) == 'path,tags\na.jpg,"sky, blue"\nb.jpg,"sky, blue"\n'
    none = score({"/p/c.jpg": np.array([-1.0, 0.0])}, tags, 0.7, 5)
    assert render_csv(none, "/p", True) == "path,tag,score\nc.jpg,,\n"
    assert display_path("/p/x.jpg", "/") == "p/x.jpg" and display_path("/px/y.jpg", "/p") == "/px/y.jpg"
