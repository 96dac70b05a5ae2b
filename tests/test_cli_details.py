"""What a person trying the commands noticed: temporary files a killed command left, failures that
``status`` hid, ``explain`` on a photo set aside, paths through a linked watch folder, and wording.

The lab (``shapes_lab.py``) has every vector cached, so no command here encodes anything; the tests
that need a database of their own (``status`` and ``db rebuild`` answer for all of it) start from a
copy of one with the test model's prompts cached (``prompts``).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import (
    SHAPES_CHECKPOINT,
    SHAPES_CONFIG,
    config_with_vectors,
    database_copy,
    exif_keywords,
    exiftool_read,
    tagwatch,
    write_config,
)
from shapes_lab import Lab
from tagwatch.status import lock_path, state_path, write_state
from tagwatch.store import Store
from tagwatch.writeback import tagged_line


def dead_pid() -> int:
    """The PID of a process that has ended (a writer killed mid-write)."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    return gone.pid


@pytest.fixture(scope="module")
def prompts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``write_config``'s config for the test model, its tag list's prompts cached (one dry run over one
    picture): a test below that needs a database of its own copies this one (``database_copy``), and
    its scan of files that are no photo encodes nothing (it encoded every prompt: about 2 CPU-seconds)."""
    return config_with_vectors(tmp_path_factory.mktemp("prompts"), SHAPES_CHECKPOINT, (0,),
                               model=SHAPES_CONFIG)


def test_scan_and_untag_remove_temporary_files_a_killed_write_left(shapes_lab: Lab, tmp_path: Path) -> None:
    photos = shapes_lab.copy(tmp_path / "mine")
    folder = tmp_path / "mine"
    killed = dead_pid()
    stale = folder / f".{killed}-21.tagwatch-tmp"
    stale.write_bytes(b"\xff\xd8" + bytes(1 << 20))  # a megabyte of a photo half written
    in_flight = folder / f".{os.getpid()}-1.tagwatch-tmp"  # its writer still runs: left alone
    in_flight.write_bytes(b"\xff\xd8")
    shapes_lab.run("scan", "--dry-run", str(folder))
    assert stale.exists()  # a dry run changes nothing on disk
    result = shapes_lab.run("scan", str(folder))
    assert f"{stale}: removed a temporary file left by an interrupted write" in result.stderr
    assert not stale.exists() and in_flight.exists()
    stale.write_bytes(b"\xff\xd8")
    sidecar = folder / f".{killed}-22.tagwatch-tmp.xmp"
    sidecar.write_bytes(b"<x:xmpmeta")
    shapes_lab.run("untag", str(photos["red-circle.jpg"]))  # one photo: its folder is cleaned
    assert not stale.exists() and not sidecar.exists() and in_flight.exists()


@pytest.mark.xdist_group("cli-details-prompts")  # one worker builds `prompts` once
def test_status_shows_how_many_failures_it_leaves_out_and_names_them_as_the_log_does(
        tmp_path: Path, prompts: Path) -> None:
    config = write_config(tmp_path / "conf", SHAPES_CHECKPOINT, model=SHAPES_CONFIG)
    database_copy(prompts, config.parent / "state")  # its own: status counts every failure in it
    folder = tmp_path / "bad"
    folder.mkdir()
    names = [f"text{i}.jpg" for i in range(6)] + ["two\nlines.jpg"]
    for name in names:
        (folder / name).write_text("not a photo\n")
    assert tagwatch("scan", str(folder), "--config", str(config)).returncode == 1
    reason = "not an image format tagwatch reads"
    text = tagwatch("status", "--config", str(config)).stdout
    listed = [line for line in text.splitlines() if line.startswith("failed:")]
    assert len(listed) == 6 and "failed                    7" in text
    assert listed[-1] == "failed: and 2 more (tagwatch status --failed, or --json, lists all)"
    every = tagwatch("status", "--failed", "--config", str(config)).stdout
    assert sorted(every.splitlines()) == sorted(  # one line each, the line break written as the log does
        f"{folder}/{name}: {reason}".replace("\n", "\\n") for name in names)
    report = json.loads(tagwatch("status", "--json", "--config", str(config)).stdout)
    assert sorted(report["failures"], key=lambda f: f["path"]) == sorted(
        ({"path": str(folder / name), "reason": reason} for name in names), key=lambda f: f["path"])
    alone = json.loads(tagwatch("status", "--failed", "--json", "--config", str(config)).stdout)
    assert alone == report["failures"]  # --failed --json: the list alone, not the whole report


@pytest.mark.xdist_group("cli-details-prompts")  # one worker builds `prompts` once
def test_status_text_counts_the_files_recorded_deleted(tmp_path: Path, prompts: Path) -> None:
    """A photo deleted is recorded so (its vector stays cached): the text counts it as --json did."""
    config = write_config(tmp_path / "conf", SHAPES_CHECKPOINT, model=SHAPES_CONFIG)
    database_copy(prompts, config.parent / "state")
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "notes.jpg").write_text("not a photo\n")
    tagwatch("scan", str(folder), "--config", str(config))
    (folder / "notes.jpg").unlink()
    store = Store(config.parent / "state" / "tagwatch.db")  # as the daemon records a deletion it sees
    try:
        assert store.mark_deleted(str(folder / "notes.jpg"))
    finally:
        store.close()
    report = json.loads(tagwatch("status", "--json", "--config", str(config)).stdout)
    text = tagwatch("status", "--config", str(config)).stdout
    assert report["deleted"] >= 1 and f"deleted           {report['deleted']:>9}" in text, text


def test_status_writes_a_name_that_is_not_utf8_as_the_log_does(tmp_path: Path) -> None:
    """The daemon's last error names a file whose name is not valid UTF-8: the log writes it
    ``'…/bad\\udcff\\udcfename.jpg'``, and so does status, instead of the raw bytes."""
    config = tmp_path / "config.toml"
    config.write_text('database = "tagwatch.db"\n', encoding="utf-8")
    database = tmp_path / "tagwatch.db"
    path = os.fsdecode(bytes(tmp_path) + b"/bad\xff\xfename.jpg")
    reason = "the file name is not valid UTF-8; rename the file"
    fd = os.open(lock_path(database), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # a daemon holding the database, as the daemon does
        os.write(fd, str(os.getpid()).encode())
        write_state(state_path(database), {
            "pid": os.getpid(), "uptime_s": 60, "folders": 1, "model_loaded": True, "queue": 0,
            "tagged_since_start": 0, "failed_since_start": 1, "tagged_per_min": 0.0,
            "last_error": {"path": path, "reason": reason, "time": time.time()}, "updated": time.time()})
        result = subprocess.run([sys.executable, "-m", "tagwatch", "status", "--config", str(config)],
                                capture_output=True)
    finally:
        os.close(fd)
    assert result.returncode == 0, result.stderr
    assert f"{path!a}: {reason}".encode() in result.stdout
    assert b"\xff" not in result.stdout


def test_explain_says_a_photo_untag_set_aside_gets_nothing_until_a_scan_names_it(
        shapes_lab: Lab, tmp_path: Path) -> None:
    photo = shapes_lab.copy(tmp_path / "mine")["red-circle.jpg"]
    shapes_lab.run("scan", str(photo))
    shapes_lab.run("untag", str(photo))
    assert exif_keywords(photo)["iptc"] == []
    said = shapes_lab.run("explain", str(photo)).stdout
    assert (f"set aside by `tagwatch untag`: no keyword is written into it and the daemon leaves it alone; "
            f"`tagwatch scan {photo}` tags it again") in said
    verdicts = dict(re.findall(r"(?m)^ +\d+ +[-+]\d\.\d{4}  (.{40}) ?(.*)$", said))
    aside = "not written: set aside by untag (a scan naming it: TAGGED)"
    written = {tag.strip(): verdict for tag, verdict in verdicts.items() if verdict}
    assert written == {"red": aside, "circle": aside}
    shapes_lab.run("scan", str(photo))  # as the docs say: a scan naming it tags it again
    said = shapes_lab.run("explain", str(photo)).stdout
    assert "set aside" not in said and sorted(exif_keywords(photo)["iptc"]) == ["circle", "red"]


def test_a_photo_named_through_a_linked_folder_is_the_one_the_store_knows(
        shapes_lab: Lab, tmp_path: Path) -> None:
    """A watched folder that is a symbolic link is recorded as the folder it leads to (as a walk of
    it is); a photo named through the link must find that record, in untag and explain alike."""
    real, link = tmp_path / "realroot", tmp_path / "linkroot"
    photo = shapes_lab.copy(real)["red-circle.jpg"]
    link.symlink_to(real)
    shapes_lab.run("scan", str(link))
    result = shapes_lab.run("untag", str(link / "red-circle.jpg"))
    assert "untag: 1 file: 1 untagged" in result.stderr and "no record" not in result.stderr
    assert exif_keywords(photo)["iptc"] == []
    said = shapes_lab.run("explain", str(link / "red-circle.jpg")).stdout
    assert said.startswith(f"{photo}: ") and "set aside by `tagwatch untag`" in said


def lab_config(lab: Lab, folder: Path, first_line: str = "") -> Path:
    """The lab's config (its database: every vector cached) with ``first_line`` put at its top."""
    conf = lab.config.parent
    text = lab.config.read_text(encoding="utf-8")
    for name in ("tags.txt", "state/tagwatch.db"):
        text = text.replace(f'"{name}"', f'"{conf / name}"')
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.toml"
    path.write_text(f"{first_line}\n{text}", encoding="utf-8")
    return path


def test_a_missing_overrides_file_is_no_warning_for_a_one_shot_command(
        shapes_lab: Lab, tmp_path: Path) -> None:
    """Only the daemon watches for it to appear; every other command said it again."""
    config = lab_config(shapes_lab, tmp_path / "conf", 'overrides = "overrides.toml"')
    photo = shapes_lab.copy(tmp_path / "mine")["red-circle.jpg"]
    for command in (["scan", "--dry-run", str(photo)], ["explain", str(photo)]):
        result = tagwatch(*command, "--config", str(config))
        assert result.returncode == 0, result.stderr
        assert "does not exist yet" not in result.stderr
    assert "DEBUG" in tagwatch("explain", "-v", str(photo), "--config", str(config)).stderr


def test_explain_says_once_why_it_cannot_use_a_file_and_tells_what_image_is(
        shapes_lab: Lab, tmp_path: Path) -> None:
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo\n")
    result = tagwatch("explain", str(text), "--config", str(shapes_lab.config))
    assert result.returncode == 1  # as scan's for a file it cannot use
    assert result.stderr.count(str(text)) == 1, result.stderr
    assert result.stderr.rstrip().endswith(f"{text}: skipped: not an image format tagwatch reads")
    usage = " ".join(tagwatch("explain", "--help").stdout.split())
    assert "IMAGE a photo (tagged or not: explain writes nothing into it)" in usage


@pytest.mark.xdist_group("cli-details-prompts")  # one worker builds `prompts` once
def test_wording_a_rebuild_of_a_healthy_database_and_a_photo_that_gets_no_tag(
        shapes_lab: Lab, tmp_path: Path, prompts: Path) -> None:
    photo = shapes_lab.copy(tmp_path / "mine")["red-circle.jpg"]
    result = shapes_lab.run("scan", "--threshold", "0.99", str(photo))
    assert f"checked {photo}: no tag above threshold 0.99; nothing to write" in result.stderr
    assert f"tagged {photo}" not in result.stderr
    config = write_config(tmp_path / "conf", SHAPES_CHECKPOINT, model=SHAPES_CONFIG)
    database_copy(prompts, config.parent / "state")  # its own: the lab's is the other tests'
    (tmp_path / "notes.jpg").write_text("not a photo\n")
    assert tagwatch("scan", str(tmp_path / "notes.jpg"), "--config", str(config)).returncode == 1
    rebuilt = tagwatch("db", "rebuild", "--config", str(config))
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "; the previous file is kept as " in rebuilt.stdout and "damaged file" not in rebuilt.stdout


def test_a_keyword_holding_a_comma_is_quoted_in_the_line() -> None:
    """rtag wrote ImageNet's comma lists as keywords: an overwrite that took two out read as six."""
    line = tagged_line("/p/a.jpg", ["circle"], [], [], 0.36, wrote=False,
                       dropped=["loudspeaker, speaker, speaker unit", "ping-pong ball"])
    assert line == ('updated /p/a.jpg: circle; took out, as overwrite mode does: '
                    '"loudspeaker, speaker, speaker unit", ping-pong ball')


def test_a_photo_that_gets_only_its_place_is_logged_so() -> None:
    line = tagged_line("/p/a.jpg", [], ["Spain", "Madrid"], [], 0.36, wrote=True)
    assert line == "tagged /p/a.jpg: no tag above threshold 0.36; place: Spain, Madrid"
    line = tagged_line("/p/a.jpg", [], [], ["red"], 0.36, wrote=False)
    assert line == "checked /p/a.jpg: left out, as a person took them out: red; nothing to write"
    # "(already in the file)" is about the keywords, never about the one a person took out
    line = tagged_line("/p/a.jpg", ["circle"], ["Italy"], ["red"], 0.36, wrote=False)
    assert line == ("checked /p/a.jpg: circle; place: Italy (already in the file); left out, as a person "
                    "took them out: red")
    line = tagged_line("/p/a.jpg", ["circle"], [], [], 0.36, wrote=False, rewrote=True)  # a description out
    assert line == "tagged /p/a.jpg: circle (already in the file; fields brought up to date)"
    # a [places] root or a parent edit re-files them: said so (243 lines read "fields brought up to date")
    line = tagged_line("/p/a.jpg", ["circle"], ["Italy"], [], 0.36, wrote=False, rewrote=True,
                       respelled=["Italy"])
    assert line == ("tagged /p/a.jpg: circle; place: Italy (already in the file; re-filed under their new "
                    "paths: Italy)")


def test_json_log_lines_carry_places_and_what_a_person_took_out(shapes_lab: Lab, tmp_path: Path) -> None:
    """``--log-format json``: a tagged photo's ``tags`` are what it carries, with ``places`` and
    ``declined`` (documented in faults.md; the formatter dropped every field it did not list)."""
    photo = shapes_lab.copy(tmp_path / "mine")["red-circle.jpg"]
    florence = ["-GPSLatitude=43.7731", "-GPSLatitudeRef=N", "-GPSLongitude=11.2560", "-GPSLongitudeRef=E"]
    subprocess.run(["exiftool", "-q", "-overwrite_original", *florence, str(photo)], check=True)

    def tagged_record() -> dict:
        result = shapes_lab.run("--log-format", "json", "scan", str(photo))
        records = [json.loads(line) for line in result.stderr.splitlines()]
        return next(r for r in records if r["event"] == "tagged")

    first = tagged_record()
    assert first["places"] == ["Italy", "Tuscany", "Florence"] and "declined" not in first
    assert "red" in first["tags"]
    found = json.loads(exiftool_read("-j", "-HierarchicalSubject", "-TagsList", str(photo)))[0]
    gone = ("red", "Florence")  # a tag and a place, taken out of every field as Lightroom does
    paths = [f"-XMP-lr:HierarchicalSubject-={p}" for p in found.get("HierarchicalSubject", [])
             if p.split("|")[-1] in gone]
    paths += [f"-XMP-digiKam:TagsList-={p}" for p in found.get("TagsList", []) if p.split("/")[-1] in gone]
    flat = [f"-{field}-={k}" for k in gone for field in ("IPTC:Keywords", "XMP-dc:Subject")]
    subprocess.run(["exiftool", "-q", "-overwrite_original", *flat, *paths, str(photo)], check=True)
    again = tagged_record()
    assert sorted(again["declined"]) == ["Florence", "red"] and "red" not in again["tags"]
    assert again["places"] == ["Italy", "Tuscany"] and "circle" in again["tags"]  # as in the file


# -- what a data-minded archivist read in the lines (a newline in a name, a comma in a keyword) ------

QUOTED_LIST = """[[tag]]
keyword = 'red, "scarlet"'
prompts = ["a photo of a red."]

[[tag]]
keyword = "circle"
threshold = 0.5

[[tag]]
keyword = "square"
"""


def test_a_dry_run_gives_one_line_a_script_can_read_per_photo(shapes_lab: Lab, tmp_path: Path) -> None:
    """A line break in a file name split a photo's line in two, and ``red, "scarlet"`` read as
    three keywords closed early: the name is escaped as the log escapes it, the keyword quoted with
    its quotes doubled, so ``csv`` reads the keywords back."""
    import csv

    photos = shapes_lab.copy(tmp_path / "mine")
    odd = photos["red-circle.jpg"].rename(tmp_path / "mine" / "red\ncircle.jpg")
    tags = tmp_path / "quoted.toml"
    tags.write_text(QUOTED_LIST, encoding="utf-8")
    out = shapes_lab.run("scan", "--dry-run", "--tags", str(tags), str(tmp_path / "mine")).stdout
    lines = out.splitlines()
    assert len(lines) == 3, out  # one per photo
    (line,) = [line for line in lines if "circle.jpg" in line]
    name, _, keywords = line.partition("\t")
    assert name == str(odd).replace("\n", "\\n"), line
    read = [k.rsplit(" (", 1)[0] for k in next(csv.reader([keywords], skipinitialspace=True))]
    assert sorted(read) == ['circle', 'red, "scarlet"'], line

    explained = shapes_lab.run("explain", "--tags", str(tags), str(odd)).stdout
    assert explained.splitlines()[0].startswith(f"{tmp_path}/mine/red\\ncircle.jpg: threshold "), explained


def test_the_log_quotes_a_keyword_holding_quotes_so_that_it_reads_back() -> None:
    line = tagged_line("/p/a.jpg", ['orange, "tangerine"', "circle"], [], [], 0.36, wrote=True)
    assert line == 'tagged /p/a.jpg: "orange, ""tangerine""", circle'


def test_explain_suggests_the_tag_a_name_begins(shapes_lab: Lab, tmp_path: Path) -> None:
    """``--tag red`` on a list whose tag is ``red, "scarlet"`` suggested nothing of it (difflib's
    ratio alone); the keyword the typed name begins comes first."""
    photo = shapes_lab.copy(tmp_path / "mine")["red-circle.jpg"]
    tags = tmp_path / "quoted.toml"
    tags.write_text(QUOTED_LIST, encoding="utf-8")
    result = tagwatch("explain", "--tags", str(tags), "--tag", "red", str(photo), "--config",
                      str(shapes_lab.config))
    assert result.returncode == 2, result.stderr
    assert "(did you mean 'red, \"scarlet\"'" in result.stderr, result.stderr


def test_a_photo_with_no_tag_says_whose_threshold_it_missed(shapes_lab: Lab, tmp_path: Path) -> None:
    """With a tag's own threshold in the list, "no tag above threshold 0.45" was untrue of it."""
    photo = shapes_lab.copy(tmp_path / "mine")["blue-square.jpg"]
    tags = tmp_path / "own.toml"
    tags.write_text('[[tag]]\nkeyword = "circle"\nthreshold = 0.3\n\n[[tag]]\nkeyword = "triangle"\n',
                    encoding="utf-8")
    result = shapes_lab.run("scan", "--tags", str(tags), str(photo))
    assert (f"checked {photo}: no tag above its threshold (0.45, or the tag's own in the tag list); "
            "nothing to write") in result.stderr, result.stderr
    plain = tmp_path / "plain.txt"
    plain.write_text("circle\ntriangle\n", encoding="utf-8")
    photo = shapes_lab.copy(tmp_path / "yours")["blue-square.jpg"]
    result = shapes_lab.run("scan", "--tags", str(plain), str(photo))
    assert f"checked {photo}: no tag above threshold 0.45; nothing to write" in result.stderr, result.stderr


def test_a_dry_run_counts_a_read_only_photo_with_nothing_to_write_as_the_scan_does(
        shapes_lab: Lab, tmp_path: Path) -> None:
    """A read-only photo that gets no tag was "1 would fail" in the dry run; the scan checks it and
    counts it with no tag above the threshold.  One that gets a tag still would fail."""
    photos = shapes_lab.copy(tmp_path / "mine")
    for photo in photos.values():
        photo.chmod(0o444)
    dry = shapes_lab.run("scan", "--dry-run", "--threshold", "0.99", str(tmp_path / "mine"))
    real = shapes_lab.run("scan", "--threshold", "0.99", str(tmp_path / "mine"))
    counted = "scan: 3 photos: 3 with no tag above the threshold"
    assert f"{counted} (dry run: no file written)" in dry.stderr, dry.stderr
    assert counted in real.stderr, real.stderr
    tagging = shapes_lab.run("scan", "--dry-run", str(photos["red-circle.jpg"]))
    assert "(a scan would not write it: the file is read-only" in tagging.stdout, tagging.stdout
    assert "1 would fail" in tagging.stderr, tagging.stderr
