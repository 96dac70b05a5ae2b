"""XMP that other programs got wrong: tagwatch rewrites a packet only when it can prove nothing in it
is lost, and otherwise leaves it byte for byte and says so.  The damage classes and the figures in
docs/metadata-safety.md come from scripts/xmp_damage.py; exiv2 (digiKam's and darktable's XMP
library) is the second reader."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import exif_keywords, exiftool_read, noise_jpeg
from tagwatch.metadata import ExifTool, KeywordWriter, MetadataError
from xmp_damage import CLASSES, exiv2_reads, with_xmp, xmp_segment


@pytest.fixture(scope="module")
def writer() -> Iterator[KeywordWriter]:
    tool = ExifTool()
    yield KeywordWriter(tool)
    tool.close()


def xmp_values(photo: Path) -> dict[str, set[str]]:
    """Every XMP property exiftool reads (each copy of a repeated one folded into one set)."""
    out = exiftool_read("-j", "-a", "-G1:4", "-XMP:all", str(photo))
    found: dict[str, set[str]] = {}
    for key, value in json.loads(out)[0].items():
        if key != "SourceFile":
            parts = key.split(":")
            found.setdefault(f"{parts[0]}:{parts[-1]}", set()).update(
                map(str, value if isinstance(value, list) else [value]))
    return found


@pytest.mark.parametrize("damage", list(CLASSES))
def test_a_packet_is_rewritten_only_when_nothing_in_it_is_lost(damage: str, tmp_path: Path,
                                                               writer: KeywordWriter,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    packet, expected = CLASSES[damage]
    photo = with_xmp(noise_jpeg(tmp_path / "p.jpg", seed=1), packet)
    before, properties, readable = xmp_segment(photo), xmp_values(photo), exiv2_reads(photo)
    persons = list(writer.read(photo).xmp)  # none where exiftool cannot read the packet whole
    with caplog.at_level("INFO", logger="tagwatch"):
        assert writer.add(photo, ["beach"]) == ["beach"]
    # the new IPTC Keywords carries the person's XMP keywords too: an app that cannot read the packet
    # (exiv2, below) falls back to IPTC
    assert exif_keywords(photo)["iptc"] == [*persons, "beach"]
    if expected == "left":
        assert xmp_segment(photo) == before  # every byte of the person's packet is still there
        assert any(r.levelname == "WARNING" and str(photo) in r.getMessage() for r in caplog.records)
        return
    after = xmp_values(photo)
    assert after.pop("XMP-dc:Subject") == properties.pop("XMP-dc:Subject", set()) | {"beach"}
    after.pop("XMP-x:XMPToolkit")
    assert after == properties  # nothing else changed (a repeated equal value counts once)
    if expected == "rewritten" and readable is not None:
        assert (readable, exiv2_reads(photo)) == (False, True)  # XMP-first apps see all of it now


@pytest.mark.skipif(shutil.which("exiv2") is None, reason="exiv2 is not installed")
def test_exiv2_reads_the_person_s_keywords_once_the_repetition_is_gone(tmp_path: Path,
                                                                       writer: KeywordWriter) -> None:
    photo = with_xmp(noise_jpeg(tmp_path / "p.jpg", seed=2), CLASSES["property twice, same value"][0])
    writer.add(photo, ["beach"])
    out = subprocess.run(["exiv2", "-px", str(photo)], capture_output=True, text=True).stdout
    assert "Xmp.dc.subject                               XmpBag      3  grandma, Venice, beach" in out
    assert "Xmp.exif.Make                                XmpText     5  Canon" in out


def test_a_sidecar_that_cannot_be_read_whole_is_left_alone(tmp_path: Path, writer: KeywordWriter) -> None:
    """A sidecar is all XMP: exiftool would rebuild it from what it could read, so it is refused."""
    photo = noise_jpeg(tmp_path / "p.jpg", seed=3)
    sidecar = tmp_path / "p.jpg.xmp"
    sidecar.write_bytes(CLASSES["closing tag misspelt"][0])
    with pytest.raises(MetadataError, match=r"its sidecar p\.jpg\.xmp cannot be read whole"):
        writer.add(photo, ["beach"])
    assert sidecar.read_bytes() == CLASSES["closing tag misspelt"][0]
