"""IPTC text in other charsets than UTF-8, and IPTC's byte limits: a person's text is converted, left
alone or left out, never garbled or cut.  Real JPEGs, written by exiftool as other apps write them,
and read back by exiftool (and exiv2, which digiKam uses) as separate processes."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import CORPUS, exif_keywords, exiftool_read, noise_jpeg
from tagwatch.metadata import ExifTool, KeywordWriter


@pytest.fixture(scope="module")
def writer() -> KeywordWriter:
    tool = ExifTool()
    yield KeywordWriter(tool)
    tool.close()


def exiftool(photo: Path, *args: str) -> None:
    """Write as another app would (``-charset iptc=latin``: an old one's Latin-1)."""
    subprocess.run(["exiftool", "-q", "-overwrite_original", *args, str(photo)], check=True)


def iptc(photo: Path) -> dict[str, object]:
    """Every IPTC dataset as an independent reader finds it (1:90 says how to decode; undeclared:
    UTF-8, as most readers assume today)."""
    out = exiftool_read("-j", "-charset", "iptc=UTF8", "-IPTC:all", str(photo))
    record = json.loads(out, parse_float=str, parse_int=str)[0]
    record.pop("SourceFile")
    return record


def exiv2_keywords(photo: Path) -> list[bytes]:
    """The raw bytes of each IPTC keyword, as exiv2 prints them."""
    out = subprocess.run(["exiv2", "-pi", str(photo)], capture_output=True).stdout
    return [line.split(None, 3)[3] for line in out.splitlines()
            if line.startswith(b"Iptc.Application2.Keywords")]


def untag(writer: KeywordWriter, photo: Path, plan: object) -> None:
    writer.apply(writer.plan_untag(photo, plan.ours, plan.dropped, filled=plan.fills))  # type: ignore[attr-defined]


def test_iptc_declared_iso_8859_1_is_converted_before_utf8_is_declared(tmp_path: Path,
                                                                      writer: KeywordWriter) -> None:
    """1:90 = ESC - A (ISO 8859-1), as older newsroom and DAM tools write: re-declared UTF-8 with its
    Latin-1 bytes kept, Köln became K\\xf6ln, invalid UTF-8, in every reader, and stayed so after untag."""
    photo = noise_jpeg(tmp_path / "p.jpg", seed=1)
    exiftool(photo, "-charset", "iptc=latin", "-IPTC:CodedCharacterSet=ESC - A", "-IPTC:Keywords=Köln",
             "-IPTC:Caption-Abstract=Straße in Köln")
    assert writer.read(photo).iptc == ("Köln",)
    plan = writer.plan(photo, ["harbour"])
    writer.apply(plan)
    record = iptc(photo)
    assert record["CodedCharacterSet"] == "UTF8"
    assert record["Keywords"] == ["Köln", "harbour"]
    assert record["Caption-Abstract"] == "Straße in Köln"  # the person's other text too
    assert exiv2_keywords(photo) == ["Köln".encode(), b"harbour"]
    assert exif_keywords(photo)["xmp"] == ["Köln", "harbour"]
    untag(writer, photo, plan)
    record = iptc(photo)
    assert (record["Keywords"], record["Caption-Abstract"]) == ("Köln", "Straße in Köln")
    assert exif_keywords(photo) == {"iptc": ["Köln"], "xmp": []}


@pytest.mark.parametrize("latin, utf8, keywords", [
    # a Latin-1 caption by an old program beside UTF-8 keywords
    ("-IPTC:Caption-Abstract=Straße in Köln", ["Ürsel", "東京"], ["Ürsel", "東京"]),
    # a Latin-1 keyword added by another app after UTF-8 ones
    ("-IPTC:Keywords+=Jürgen", ["Ürsel"], ["Ürsel", "Jürgen"]),
])
def test_undeclared_iptc_is_decoded_value_by_value(latin: str, utf8: list[str], keywords: list[str],
                                                   tmp_path: Path, writer: KeywordWriter) -> None:
    """One Latin-1 value made the whole undeclared block Latin-1: Ürsel became Ãœrsel and 東京 æ±äº¬,
    in IPTC and in the dc:subject tagwatch created from it, and untag left the mojibake."""
    photo = noise_jpeg(tmp_path / "p.jpg", seed=2)
    exiftool(photo, "-charset", "iptc=utf8", *[f"-IPTC:Keywords={k}" for k in utf8])
    exiftool(photo, "-charset", "iptc=latin", latin)
    assert "CodedCharacterSet" not in iptc(photo)
    existing = writer.read(photo)
    assert existing.iptc == tuple(keywords) and existing.latin1_iptc
    plan = writer.plan(photo, ["harbour"])
    writer.apply(plan)
    assert exif_keywords(photo) == {"iptc": [*keywords, "harbour"], "xmp": [*keywords, "harbour"]}
    assert exiv2_keywords(photo) == [k.encode() for k in (*keywords, "harbour")]
    caption = latin.split("=", 1)[1] if "Caption" in latin else None
    assert iptc(photo).get("Caption-Abstract") == caption
    untag(writer, photo, plan)
    assert exif_keywords(photo) == {"iptc": keywords, "xmp": []}
    assert iptc(photo).get("Caption-Abstract") == caption


def test_our_utf8_keyword_survives_an_old_app_resaving_the_block(tmp_path: Path,
                                                                 writer: KeywordWriter) -> None:
    """An old app dropped 1:90 and added a Latin-1 keyword: tagwatch's own Großmutter became
    GroÃŸmutter, and was written again beside it (it looked absent), and untag left the mojibake."""
    photo = noise_jpeg(tmp_path / "p.jpg", seed=3)
    first = writer.plan(photo, ["red", "Großmutter"])
    writer.apply(first)
    exiftool(photo, "-IPTC:CodedCharacterSet=")
    exiftool(photo, "-charset", "iptc=latin", "-IPTC:Keywords+=Köln")
    assert writer.read(photo).iptc == ("red", "Großmutter", "Köln")
    again = writer.plan(photo, ["red", "Großmutter"], owned=first.ours)
    writer.apply(again)
    assert again.ours == [] and not again.changes  # every keyword is there: nothing to write
    assert exiv2_keywords(photo) == [b"red", "Großmutter".encode(), "Köln".encode("latin-1")]
    writer.apply(writer.plan_untag(photo, first.ours, [], filled=first.fills))
    assert exif_keywords(photo)["iptc"] == ["Köln"]


def test_iptc_in_a_charset_that_cannot_be_converted_is_left_as_it_is(
        tmp_path: Path, writer: KeywordWriter, caplog: pytest.LogCaptureFixture) -> None:
    """Latin-2 (ESC - B), which exiftool reads as cp1252: declaring UTF-8 over its bytes would garble
    them, and no UTF-8 of it can be written, so the keywords go to XMP and the IPTC stays."""
    photo = noise_jpeg(tmp_path / "p.jpg", seed=4)
    exiftool(photo, "-charset", "iptc=Latin2", "-IPTC:CodedCharacterSet=ESC - B", "-IPTC:Keywords=Łódź")
    raw = exiv2_keywords(photo)
    with caplog.at_level("WARNING", logger="tagwatch"):
        plan = writer.plan(photo, ["harbour"])
        writer.apply(plan)
    assert exiv2_keywords(photo) == raw and iptc(photo)["CodedCharacterSet"] == "ESC - B"
    assert exif_keywords(photo)["xmp"] == ["harbour"]  # the misread Łódź is not copied as mojibake
    assert [r.getMessage() for r in caplog.records] == [
        f"{photo}: its IPTC text is in a character set tagwatch cannot convert to UTF-8 (ESC - B); "
        "keywords written to XMP only, the IPTC left as it was"]
    caplog.clear()
    with caplog.at_level("WARNING", logger="tagwatch"):  # untag: ours were never in that IPTC
        untag(writer, photo, plan)
    assert exiv2_keywords(photo) == raw and exif_keywords(photo)["xmp"] == []
    assert caplog.records == [], [r.getMessage() for r in caplog.records]  # it said "written" again


def test_latin1_iptc_too_long_in_utf8_is_left_as_it_is(tmp_path: Path, writer: KeywordWriter) -> None:
    """A 60-letter Latin-1 keyword with umlauts is over 64 bytes in UTF-8: converting it would cut it."""
    photo = noise_jpeg(tmp_path / "p.jpg", seed=5)
    word = "Größenwahn" + "ü" * 50
    exiftool(photo, "-charset", "iptc=latin", f"-IPTC:Keywords={word}")
    before = photo.read_bytes()
    writer.apply(writer.plan(photo, ["harbour"]))
    assert photo.read_bytes() != before  # written: XMP
    record = exiftool_read("-j", "-charset", "iptc=latin", "-IPTC:all", str(photo))
    assert json.loads(record)[0]["Keywords"] == word and "CodedCharacterSet" not in json.loads(record)[0]
    assert exif_keywords(photo)["xmp"] == [word, "harbour"]


LONG = "Urgroßmutter Élise Müller-Lüdenscheidt bei der Hochzeit in Köln am Rhein 1952"


def test_a_persons_xmp_keyword_over_64_bytes_is_not_copied_cut_into_iptc(
        tmp_path: Path, writer: KeywordWriter, caplog: pytest.LogCaptureFixture) -> None:
    """It was copied truncated (... in K) into the IPTC Keywords tagwatch created, under a warning
    that said the IPTC was left untouched, and untag left the truncated copy and the block."""
    photo = noise_jpeg(tmp_path / "p.jpg", seed=6)
    exiftool(photo, f"-XMP-dc:Subject={LONG}", "-XMP-dc:Subject=Hochzeit")
    with caplog.at_level("WARNING", logger="tagwatch"):
        plan = writer.plan(photo, ["red"])
        writer.apply(plan)
    assert exif_keywords(photo) == {"iptc": ["Hochzeit", "red"], "xmp": [LONG, "Hochzeit", "red"]}
    assert [r.getMessage() for r in caplog.records] == [
        f"{photo}: the person's keyword '{LONG}' left out of the IPTC Keywords tagwatch created: longer "
        "than IPTC's 64 bytes, and a shortened copy would misspell it; kept in XMP only"]
    untag(writer, photo, plan)
    assert exif_keywords(photo) == {"iptc": [], "xmp": [LONG, "Hochzeit"]}
    assert iptc(photo) == {"CodedCharacterSet": "UTF8", "EnvelopeRecordVersion": "4"}  # the remnants


def test_untag_keeps_a_persons_application_record_version(tmp_path: Path, writer: KeywordWriter) -> None:
    """Its IPTC holds 1:90 and ApplicationRecordVersion 0 only: exiftool dropped record 2 with the
    last keyword untag took out."""
    photo = tmp_path / "ff00.jpg"
    shutil.copyfile(CORPUS / "pillow__jpeg_ff00_header.jpg", photo)
    photo.chmod(0o644)
    assert iptc(photo) == {"CodedCharacterSet": "UTF8", "ApplicationRecordVersion": "0"}
    plan = writer.plan(photo, ["red"])
    writer.apply(plan)
    assert exif_keywords(photo)["iptc"] == ["red"]
    untag(writer, photo, plan)
    record = iptc(photo)
    assert "Keywords" not in record and record["ApplicationRecordVersion"] == "0"


def test_a_persons_decomposed_keyword_is_the_composed_tag(tmp_path: Path, writer: KeywordWriter) -> None:
    """macOS apps write "Élise" decomposed (E + U+0301); the list's "Élise" is composed.  Compared by
    bytes they were two keywords, written side by side, and looking the same."""
    photo = noise_jpeg(tmp_path / "p.jpg", seed=9)
    decomposed = "E\u0301lise"
    exiftool(photo, "-codedcharacterset=utf8", f"-IPTC:Keywords={decomposed}",
             f"-XMP-dc:Subject={decomposed}")
    writer.apply(writer.plan(photo, ["\u00c9lise", "red"]))
    assert exif_keywords(photo) == {"iptc": [decomposed, "red"], "xmp": [decomposed, "red"]}
