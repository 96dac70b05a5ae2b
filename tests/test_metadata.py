"""The keyword writer on real files, read back by exiftool as a separate process."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import CORPUS, exif_keywords, exiftool_read, noise_jpeg
from tagwatch.formats import jpeg_key
from tagwatch.metadata import ExifTool, FileChanged, KeywordWriter, MetadataError, is_temp_file


@pytest.fixture(scope="module")
def writer() -> KeywordWriter:
    tool = ExifTool()
    yield KeywordWriter(tool)
    tool.close()


def copy_from_corpus(name: str, folder: Path) -> Path:
    target = folder / name
    shutil.copyfile(CORPUS / name, target)
    return target


def exif_json(path: Path, *tags: str) -> dict[str, object]:
    out = exiftool_read("-j", "-G1", *tags, str(path))
    return json.loads(out)[0]


def test_keywords_land_in_iptc_and_xmp_exactly(tmp_path: Path, writer: KeywordWriter) -> None:
    photo = noise_jpeg(tmp_path / "p.jpg", seed=1)
    os.chmod(photo, 0o640)
    key = jpeg_key(photo.read_bytes())
    keywords = ["beach", "Ünïcödé tag", "日本語", "2019", "1.50"]
    ours = writer.add(photo, keywords)
    assert ours == keywords
    assert exif_keywords(photo) == {"iptc": keywords, "xmp": keywords}
    assert exif_json(photo, "-IPTC:CodedCharacterSet")["IPTC:CodedCharacterSet"] == "UTF8"
    assert jpeg_key(photo.read_bytes()) == key  # the picture's bytes are untouched
    assert stat.S_IMODE(photo.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.jpg"]  # no backup, no temp file


def test_existing_keywords_are_kept_and_never_claimed(tmp_path: Path, writer: KeywordWriter) -> None:
    photo = copy_from_corpus("exiftool__IPTC.jpg", tmp_path)
    assert exif_keywords(photo)["iptc"] == ["ExifTool", "Test", "IPTC"]
    ours = writer.add(photo, ["Test", "harbour"])
    assert ours == ["harbour"]  # "Test" was the user's before we came
    found = exif_keywords(photo)
    assert found["iptc"] == ["ExifTool", "Test", "IPTC", "harbour"]
    assert found["xmp"] == ["ExifTool", "Test", "IPTC", "harbour"]  # the new dc:subject: theirs, then ours


def test_a_file_that_already_has_the_keywords_is_not_rewritten(tmp_path: Path, writer: KeywordWriter) -> None:
    photo = noise_jpeg(tmp_path / "p.jpg", seed=2)
    writer.add(photo, ["beach", "日本語"])
    before = (photo.read_bytes(), photo.stat().st_mtime_ns, photo.stat().st_ino)
    plan = writer.plan(photo, ["日本語", "beach"])
    assert not plan.changes and plan.ours == []
    writer.apply(plan)
    assert (photo.read_bytes(), photo.stat().st_mtime_ns, photo.stat().st_ino) == before


def test_legacy_latin1_iptc_is_converted_not_garbled(tmp_path: Path, writer: KeywordWriter) -> None:
    photo = copy_from_corpus("derived__latin1kw__exiftool__Canon.jpg", tmp_path)
    existing = writer.read(photo)
    assert existing.iptc == ("Café", "Zürich") and existing.latin1_iptc
    writer.add(photo, ["Ünïcödé tag"])
    assert exif_keywords(photo)["iptc"] == ["Café", "Zürich", "Ünïcödé tag"]
    record = exif_json(photo, "-charset", "iptc=UTF8", "-IPTC:all")
    assert record["IPTC:Caption-Abstract"] == "Straße in Zürich"  # other IPTC text converted too
    assert record["IPTC:CodedCharacterSet"] == "UTF8"


def test_undeclared_utf8_iptc_is_recognised(tmp_path: Path, writer: KeywordWriter) -> None:
    # Cyrillic U+0441 is D1 81 and U+6771 E6 9D B1: bytes undefined in cp1252 must not matter
    words = ["Café", "сосна", "東京"]
    photo = noise_jpeg(tmp_path / "p.jpg", seed=3)
    subprocess.run(["exiftool", "-q", "-overwrite_original", "-charset", "iptc=UTF8",
                    *[f"-IPTC:Keywords={w}" for w in words], str(photo)], check=True)
    assert "IPTC:CodedCharacterSet" not in exif_json(photo, "-IPTC:all")
    existing = writer.read(photo)
    assert existing.iptc == tuple(words) and not existing.latin1_iptc
    writer.add(photo, ["日本語"])
    assert exif_keywords(photo)["iptc"] == [*words, "日本語"]


def mwg_keywords(photo: Path) -> list[str]:
    """The keywords an MWG reader (Lightroom, Photoshop) shows: the XMP while Photoshop's IPTCDigest
    matches the IPTC (or there is none), the IPTC once another program changed it (a stale digest)."""
    return exif_json(photo, "-use", "MWG", "-MWG:Keywords").get("MWG:Keywords", [])


STALE = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize("digest", ["new", STALE])
def test_a_current_iptc_digest_is_refreshed_and_a_stale_one_left_stale(digest: str, tmp_path: Path,
                                                                       writer: KeywordWriter) -> None:
    """exiftool__MWG.jpg has different keywords in IPTC and XMP: which an MWG reader shows must not
    flip because tagwatch wrote the file."""
    photo = copy_from_corpus("exiftool__MWG.jpg", tmp_path)
    subprocess.run(["exiftool", "-q", "-overwrite_original", f"-Photoshop:IPTCDigest={digest}", str(photo)],
                   check=True)
    shown = mwg_keywords(photo)
    assert shown == (["RIGHT1of2-XMP-Keywords", "RIGHT2of2-XMP-Keywords"] if digest == "new"
                     else ["WRONG1of2-IPTC-Keywords", "WRONG2of2-IPTC-Keywords"])
    writer.add(photo, ["harbour"])
    assert mwg_keywords(photo) == [*shown, "harbour"]
    record = exif_json(photo, "-Photoshop:IPTCDigest", "-File:CurrentIPTCDigest")
    if digest == "new":  # kept current: the XMP is still in step with the IPTC
        assert record["Photoshop:IPTCDigest"] == record["File:CurrentIPTCDigest"]
    else:  # still says that another program changed the IPTC after the XMP
        assert record["Photoshop:IPTCDigest"] == STALE


def test_a_file_changed_during_the_write_is_left_alone(tmp_path: Path, writer: KeywordWriter) -> None:
    photo = noise_jpeg(tmp_path / "p.jpg", seed=4)
    plan = writer.plan(photo, ["beach"])
    noise_jpeg(photo, seed=5)  # another program saves a new version meanwhile
    replaced = photo.read_bytes()
    with pytest.raises(FileChanged):
        writer.apply(plan)
    assert photo.read_bytes() == replaced
    assert not [p for p in tmp_path.iterdir() if is_temp_file(p.name)]


def test_a_file_replaced_after_its_pixels_were_read_is_not_written(tmp_path: Path,
                                                                   writer: KeywordWriter) -> None:
    """The tags were predicted for the picture as read; a newer picture must not receive them."""
    photo = noise_jpeg(tmp_path / "p.jpg", seed=4)
    read_at = photo.stat()
    noise_jpeg(tmp_path / "new.jpg", seed=5).replace(photo)  # an editor's atomic save
    saved = photo.read_bytes()
    with pytest.raises(FileChanged):
        writer.plan(photo, ["beach"], before=read_at)
    assert photo.read_bytes() == saved


def test_hard_links_and_symlinks_are_refused_untouched(tmp_path: Path, writer: KeywordWriter) -> None:
    photo = noise_jpeg(tmp_path / "p.jpg", seed=4)
    original = photo.read_bytes()
    os.link(photo, tmp_path / "backup.jpg")
    with pytest.raises(MetadataError, match="2 hard links; replacing it would split them"):
        writer.add(photo, ["beach"])
    (tmp_path / "backup.jpg").unlink()
    os.symlink(photo, tmp_path / "link.jpg")
    with pytest.raises(MetadataError, match="a symbolic link"):
        writer.add(tmp_path / "link.jpg", ["beach"])
    assert (tmp_path / "link.jpg").is_symlink() and photo.read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.jpg", "p.jpg"]


def test_a_hard_linked_photo_with_target_both_gets_its_sidecar(tmp_path: Path) -> None:
    """target = "both": the photo cannot be replaced without splitting its hard links, but its
    sidecar can carry the keywords (the whole photo was refused, sidecar included)."""
    from tagwatch.config import WriteConfig

    photo = noise_jpeg(tmp_path / "p.jpg", seed=4)
    original = photo.read_bytes()
    os.link(photo, tmp_path / "backup.jpg")
    tool = ExifTool()
    try:
        KeywordWriter(tool, WriteConfig(target="both")).add(photo, ["beach"])
    finally:
        tool.close()
    assert photo.read_bytes() == original and os.stat(photo).st_nlink == 2
    assert exif_keywords(tmp_path / "p.jpg.xmp")["xmp"] == ["beach"]
    with pytest.raises(MetadataError, match='with \\[write\\] target = "sidecar" or "both"'):
        writer_embedded = KeywordWriter(ExifTool())
        try:
            writer_embedded.add(photo, ["forest"])
        finally:
            writer_embedded.exiftool.close()


def test_extended_attributes_survive_the_replace(tmp_path: Path, writer: KeywordWriter) -> None:
    photo = noise_jpeg(tmp_path / "p.jpg", seed=4)
    try:
        os.setxattr(photo, "user.xdg.comment", b"from grandma")
    except OSError as exc:
        pytest.skip(f"this file system has no user extended attributes ({exc.strerror})")
    writer.add(photo, ["beach"])
    assert exif_keywords(photo)["iptc"] == ["beach"]
    assert os.getxattr(photo, "user.xdg.comment") == b"from grandma"


def test_a_failed_write_leaves_the_file_byte_identical(tmp_path: Path, writer: KeywordWriter) -> None:
    fake = tmp_path / "fake.jpg"
    fake.write_text("not a photo\n")
    with pytest.raises(MetadataError, match="Not a valid JPG"):
        writer.add(fake, ["beach"])
    assert fake.read_text() == "not a photo\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fake.jpg"]


def test_odd_file_names_pass_through_the_argument_protocol(tmp_path: Path, writer: KeywordWriter) -> None:
    for name in ("  leading spaces.jpg", "line\nbreak.jpg", "ünï cödé 日本.jpg", "-dash.jpg", "#hash.jpg"):
        photo = noise_jpeg(tmp_path / name, seed=6)
        assert writer.add(photo, ["beach"]) == ["beach"], name
        assert exif_keywords(photo)["iptc"] == ["beach"], name


def with_duplicate_xmp(path: Path) -> Path:
    """Insert an XMP packet holding one property twice, as GIMP 2.8 writes them."""
    packet = (b"<x:xmpmeta xmlns:x='adobe:ns:meta/'><rdf:RDF "
              b"xmlns:rdf='http://www.w3.org/1999/02/22-rdf-syntax-ns#'>"
              b"<rdf:Description xmlns:exif='http://ns.adobe.com/exif/1.0/'><exif:Make>A</exif:Make>"
              b"</rdf:Description><rdf:Description xmlns:exif='http://ns.adobe.com/exif/1.0/'>"
              b"<exif:Make>B</exif:Make></rdf:Description></rdf:RDF></x:xmpmeta>")
    body = b"http://ns.adobe.com/xap/1.0/\x00" + packet
    data = path.read_bytes()
    path.write_bytes(data[:2] + b"\xff\xe1" + (len(body) + 2).to_bytes(2, "big") + body + data[2:])
    return path


def test_malformed_xmp_is_left_alone_and_reported(tmp_path: Path, writer: KeywordWriter,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    photo = with_duplicate_xmp(noise_jpeg(tmp_path / "gimp.jpg", seed=7))
    xmp_before = exif_json(photo, "-XMP:all")
    with caplog.at_level("WARNING", logger="tagwatch"):
        assert writer.add(photo, ["beach", "日本語"]) == ["beach", "日本語"]
    assert exif_keywords(photo) == {"iptc": ["beach", "日本語"], "xmp": []}
    assert exif_json(photo, "-XMP:all") == {**xmp_before, "SourceFile": str(photo)}
    assert [r.getMessage() for r in caplog.records] == [
        f"{photo}: keywords written to IPTC only; exiftool left the XMP untouched "
        "([Minor] Duplicate XMP property: exif:Make; rewriting it would also change XMP-exif:Make "
        "(A, B -> A))"]  # the two values differ: dropping one would lose it
    # Written again (a re-score): the IPTC holds every keyword, the XMP still cannot be written, so
    # the file is left as it is, not replaced by an identical copy (new inode and time: backups
    # copied it again after every tag-list edit)
    before = photo.stat()
    caplog.clear()
    with caplog.at_level("WARNING", logger="tagwatch"):  # ours (owned): every field should hold them
        writer.apply(writer.plan(photo, ["beach", "日本語"], owned=["beach", "日本語"]))
    after = photo.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert caplog.records == []  # and no warning for a write that did not happen


def _alive(pid: int) -> bool:
    """Running, not merely an unreaped zombie (a container's PID 1 may never reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux-only")
def test_exiftool_dies_with_a_killed_daemon_and_outlives_the_thread_that_started_it() -> None:
    """``exiftool -stay_open`` ignores end of input: a SIGKILLed daemon must not leave it running."""
    script = textwrap.dedent("""
        import sys, threading
        from tagwatch.exiftool import ExifTool
        tool = ExifTool()
        starter = threading.Thread(target=tool.execute, args=("-ver",))
        starter.start(); starter.join()          # first use on a thread that then ends
        assert tool.execute("-ver")[0].strip()   # still the same live process
        print(tool._proc.pid, flush=True)
        sys.stdin.read()
    """)
    daemon = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert daemon.stdout is not None
    pid = int(daemon.stdout.readline())
    assert _alive(pid)
    daemon.kill()
    daemon.wait()
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid), f"exiftool {pid} outlived its killed parent"


def test_warming_exiftool_up_without_it_raises_nothing(tmp_path: Path) -> None:
    """The daemon's start warms exiftool up aside; where it is missing the first real write says so."""
    writer = KeywordWriter(ExifTool("no-such-exiftool"))
    writer.warm_up(tmp_path)
    with pytest.raises(MetadataError):
        writer.exiftool.execute("-ver")


# Corpus files whose keywords a person put in one of the two flat fields only
IPTC_ONLY = {"pillow__iptc.jpg": ["HvK", "2006", "summer", "July", "holiday", "Hungary", "Budapest"],
             "derived__latin1kw__exiftool__Canon.jpg": ["Café", "Zürich"],
             "exiftool__IPTC.jpg": ["ExifTool", "Test", "IPTC"]}


@pytest.mark.parametrize("name", IPTC_ONLY)
def test_a_new_dc_subject_carries_the_persons_iptc_keywords(name: str, tmp_path: Path,
                                                            writer: KeywordWriter) -> None:
    """Apple Photos reads only dc:subject, digiKam the first non-empty field: a dc:subject holding
    only ours would hide every keyword the person put in IPTC."""
    photo = copy_from_corpus(name, tmp_path)
    persons = IPTC_ONLY[name]
    existing = writer.read(photo)  # Latin-1 IPTC read right
    assert (existing.iptc, existing.xmp) == (tuple(persons), ())
    plan = writer.plan(photo, ["harbour", "日本語"])
    writer.apply(plan)
    assert plan.ours == ["harbour", "日本語"]  # the person's copied in, never claimed
    assert exif_keywords(photo) == {"iptc": [*persons, "harbour", "日本語"],
                                    "xmp": [*persons, "harbour", "日本語"]}
    writer.apply(writer.plan_untag(photo, plan.ours, [], filled=plan.fills))
    assert exif_keywords(photo) == {"iptc": persons, "xmp": []}  # the dc:subject tagwatch made goes


@pytest.mark.parametrize("how", ["a correction", "added since"])
def test_a_new_dc_subject_that_untag_leaves_keeps_the_persons_keywords_beside_what_it_keeps(
        how: str, tmp_path: Path, writer: KeywordWriter) -> None:
    """Untag took the copies of the person's IPTC keywords out of the dc:subject and
    lr:hierarchicalSubject tagwatch created but left a correction's keyword (the person's word,
    which untag keeps) in them: alone there, it hid the family's seven keywords from digiKam,
    Immich and Apple Photos, which read those fields first.  The same for a keyword a person added
    to the new field since."""
    photo = copy_from_corpus("pillow__iptc.jpg", tmp_path)
    persons = IPTC_ONLY["pillow__iptc.jpg"]
    word = "Budapest trip" if how == "a correction" else "Grandma"
    plan = writer.plan(photo, ["harbour", word] if how == "a correction" else ["harbour"],
                       paths={"harbour": "place|harbour"})
    writer.apply(plan)
    if how == "added since":
        subprocess.run(["exiftool", "-q", "-overwrite_original", f"-XMP-dc:Subject+={word}",
                        f"-XMP-lr:HierarchicalSubject+={word}", str(photo)], check=True)
    writer.apply(writer.plan_untag(photo, ["harbour"], [], owned_paths={"harbour": ("place|harbour",)},
                                   filled=plan.fills))
    found = exif_keywords(photo)
    assert found["xmp"] == [*persons, word], found
    assert found["iptc"] == (persons if how == "added since" else [*persons, word]), found
    out = exiftool_read("-j", "-XMP-lr:HierarchicalSubject", str(photo))
    assert json.loads(out, parse_int=str)[0]["HierarchicalSubject"] == [*persons, word]


def test_a_new_iptc_keywords_carries_the_persons_xmp_keywords(tmp_path: Path, writer: KeywordWriter) -> None:
    photo = copy_from_corpus("exiftool__XMP.jpg", tmp_path)
    persons = ["ExifTool", "Test", "XMP"]
    assert exif_keywords(photo) == {"iptc": [], "xmp": persons}
    plan = writer.plan(photo, ["harbour"])
    writer.apply(plan)
    assert plan.ours == ["harbour"]
    assert exif_keywords(photo) == {"iptc": [*persons, "harbour"], "xmp": [*persons, "harbour"]}
    writer.apply(writer.plan_untag(photo, plan.ours, [], filled=plan.fills))
    assert exif_keywords(photo) == {"iptc": [], "xmp": persons}


@pytest.mark.parametrize("name, before", [
    ("exiftool__ExifTool.jpg", {"iptc": ["jambalaya"], "xmp": ["ExifTool", "Test", "XMP"]}),
    ("pillow__iptc.jpg", {"iptc": IPTC_ONLY["pillow__iptc.jpg"], "xmp": []}),
])
def test_untag_after_overwrite_gives_each_field_back_as_it_was(name: str, before: dict[str, list[str]],
                                                              tmp_path: Path, writer: KeywordWriter) -> None:
    """Each field gets back its own keywords in their order, and a field overwrite created goes."""
    photo = copy_from_corpus(name, tmp_path)
    assert exif_keywords(photo) == before
    plan = writer.plan(photo, ["harbour", "Test"], mode="overwrite")  # Test: the person's, if present
    writer.apply(plan)
    assert exif_keywords(photo) == {"iptc": ["harbour", "Test"], "xmp": ["harbour", "Test"]}
    writer.apply(writer.plan_untag(photo, plan.ours, plan.dropped, filled=plan.fills))
    assert exif_keywords(photo) == before


def test_warming_up_leaves_nothing_and_clears_what_a_killed_daemon_left(
        tmp_path: Path, writer: KeywordWriter) -> None:
    """Each daemon start warms exiftool up on a scrap photo; one killed (or failing at once) while it
    wrote left its scrap behind, a thousand after a few days of restarts."""
    finished = subprocess.Popen(["true"])  # a PID that has ended
    finished.wait()
    folder = tmp_path / "exiftool-warm-up"
    folder.mkdir(mode=0o700)
    left = [folder / f"{finished.pid}.jpg", folder / f"{finished.pid}.jpg_exiftool_tmp"]
    for path in left:
        path.write_bytes(b"scrap")
    alive = folder / f"{os.getppid()}.jpg"  # a live process's scrap, being written
    alive.write_bytes(b"scrap")
    writer.warm_up(tmp_path)
    assert sorted(tmp_path.iterdir()) == [folder]
    assert list(folder.iterdir()) == [alive]
