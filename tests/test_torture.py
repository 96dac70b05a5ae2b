"""Tag every file of the shared metadata corpus and prove that nothing but the keywords changed.

Why: tagwatch writes into people's own photos, and a photo app's metadata is only as safe as its
strangest file.  The corpus (../shared/corpus/metadata, see its SOURCES.md) is real JPEG/MPO files from
exiftool's and Pillow's test suites: maker notes, extended XMP, IPTC in Latin-1 and UTF-8, metadata
trailers, multi-picture files, broken headers, files cut short.  Each is copied, tagged with four
keywords (two of them non-ASCII) through one long-lived exiftool, and compared with what a separate
exiftool process read from an untouched twin: the keywords are exact in IPTC and XMP, the old ones are
kept, every other tag (binary blocks byte for byte) is unchanged but for the normalisations listed in
NORMALISED (docs/keywords.md, "What changes in a photo, byte by byte"), the picture and everything
after its EOI are byte-identical, and no file is left beside the photo.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import CORPUS, corpus_files
from tagwatch.formats import ImageError, jpeg_key
from tagwatch.metadata import ExifTool, KeywordWriter, MetadataError

# The corpus tagged once for the module (module-scoped fixtures) is tagged again on each pytest-xdist
# worker that runs one of the module's tests: keep them on one worker (scripts/test: --dist loadgroup)
pytestmark = pytest.mark.xdist_group("torture")

KEYWORDS = ["tagwatch", "Ünïcödé tag", "日本語", "beach"]
# -G1:4 names each repeat of a tag in one group (Copy1, Copy2…): plain -a -G1 -j silently keeps only
# the first.  -b puts binary blocks (thumbnails, previews, an MPO's second picture) in as base64.
READ = ["exiftool", "-a", "-G1:4", "-s", "-j", "-b"]
KEYWORD_TAG = re.compile(r"IPTC\d*:Keywords|XMP-dc:Subject")
STALE_DIGEST = "IPTCDigest is not current"

# What exiftool changes besides the keywords ("Group:Tag" pattern -> why it is harmless).
NORMALISED = {
    r"IPTC\d*:Keywords|XMP-dc:Subject": "the keywords themselves, checked exactly (IPTC2: a trailer's copy)",
    r"IPTC\d*:CodedCharacterSet": "IPTC is declared UTF-8 (1:90), so every reader decodes the keywords right",
    r"IPTC\d*:(Envelope|Application)RecordVersion": "the version datasets IIM requires in a record it writes",
    r"File:CurrentIPTCDigest": "exiftool's MD5 of the IPTC block, computed when reading, not stored",
    r"Photoshop:IPTCDigest": "refreshed where it was current, so Photoshop and Lightroom do not take the "
                             "new IPTC for stale (a stale one stays stale: checked exactly)",
    r"XMP-x:XMPToolkit": "names the program that last wrote the XMP packet: now exiftool",
    r"XMP-xmpNote:HasExtendedXMP": "extended XMP merged into the main packet when it fits one segment; "
                                   "this GUID of the extension goes, every property stays",
    r"IFD1:ThumbnailOffset|MPImage\d+:MPImageStart": "where data that moved now starts; the data itself "
                                                     "is compared byte for byte",
    r"System:(Directory|FileSize|File\w+Date)": "the file system's record (and the twin's folder)",
}
ALLOWED = re.compile("|".join(f"(?:{pattern})" for pattern in NORMALISED))
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")  # as in tagwatch.formats
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})


@dataclass
class Tagged:
    photo: Path
    old: bytes
    new: bytes
    before: dict[str, list[object]]  # Group:Tag -> every value, read from an untouched twin
    after: dict[str, list[object]]
    outcome: list[str] | MetadataError


def fold(record: dict[str, object]) -> dict[str, list[object]]:
    """``Group:CopyN:Tag`` -> ``Group:Tag`` with all values in order; list tags flattened."""
    folded: dict[str, list[object]] = {}
    for key, value in record.items():
        if key != "SourceFile":
            group, *_, tag = key.split(":")
            folded.setdefault(f"{group}:{tag}", []).extend(value if isinstance(value, list) else [value])
    return folded


def read_json(out: bytes) -> dict[str, dict[str, list[object]]]:
    return {Path(str(r["SourceFile"])).name: fold(r) for r in json.loads(out)}


def created_with(before: dict[str, list[object]], tag: str) -> list[object]:
    """What a flat keyword field the file lacked holds before ours once tagwatch creates it: the
    person's keywords from the other flat field (every IPTC copy, for dc:subject), kept in step."""
    if tag == "XMP-dc:Subject":
        copies = sorted((k for k in before if re.fullmatch(r"IPTC\d*:Keywords", k)),
                        key=lambda k: (k != "IPTC:Keywords", k))
        return list(dict.fromkeys(v for k in copies for v in before[k]))
    if tag == "IPTC:Keywords":  # a new APP13 copy: a trailer's copy's keywords, else dc:subject's
        copies = [v for k in sorted(before) if re.fullmatch(r"IPTC\d+:Keywords", k) for v in before[k]]
        return list(dict.fromkeys(copies)) or list(before.get("XMP-dc:Subject", []))
    return []


def split_first_image(data: bytes) -> tuple[bytes, bytes]:
    """(what draws the first picture, what follows its EOI), by jpeg_key's marker walk.

    The first part is every segment but APPn and COM plus each scan's entropy-coded data, up to the
    end of the file when it is cut short; the second is an MPO's further pictures, an Ultra HDR gain
    map or a metadata trailer.
    """
    pixels, pos = bytearray(), 2
    while pos + 2 <= len(data):
        if data[pos] != 0xFF or data[pos + 1] == 0xFF:  # junk or fill bytes between segments
            pos += 1
            continue
        marker = data[pos + 1]
        if marker == 0xD9:
            return bytes(pixels + data[pos:pos + 2]), data[pos + 2:]
        end = pos + 2 if marker in _STANDALONE else pos + 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
        if not (0xE0 <= marker <= 0xEF or marker == 0xFE):
            pixels += data[pos:end]
        pos = end
        if marker == 0xDA:
            found = _NEXT_MARKER.search(data, pos)
            stop = found.start() if found else len(data)
            pixels += data[pos:stop]
            pos = stop
    return bytes(pixels + data[pos:]), b""


def key_or_reason(data: bytes) -> bytes | str:
    try:
        return jpeg_key(data)
    except ImageError as exc:
        return str(exc)


@pytest.fixture(scope="module")
def writer() -> Iterator[KeywordWriter]:
    tool = ExifTool()
    yield KeywordWriter(tool)
    tool.close()


@pytest.fixture(scope="module")
def tagged(tmp_path_factory: pytest.TempPathFactory, writer: KeywordWriter) -> dict[str, Tagged]:
    """Tag a copy of every corpus file (one folder each) while one exiftool reads untouched twins."""
    root, twins = tmp_path_factory.mktemp("tagged"), tmp_path_factory.mktemp("twins")
    photos: list[Path] = []
    for source in corpus_files():
        shutil.copyfile(source, twins / source.name)
        (root / source.name).mkdir()
        photos.append(shutil.copyfile(source, root / source.name / source.name))
    # IPTC without a 1:90 declaration is Latin-1 in this corpus (SOURCES.md: derived__latin1kw__*);
    # declared IPTC is read by its declaration whatever -charset says.
    with (twins / "before.json").open("wb") as out:
        reading = subprocess.Popen([*READ, "-charset", "iptc=Latin", *(str(twins / p.name) for p in photos)],
                                   stdout=out, stderr=subprocess.DEVNULL)
        outcomes: dict[str, list[str] | MetadataError] = {}
        for photo in photos:
            try:
                outcomes[photo.name] = writer.add(photo, KEYWORDS)
            except MetadataError as exc:
                outcomes[photo.name] = exc
        reading.wait()
    before = read_json((twins / "before.json").read_bytes())
    after = read_json(subprocess.run([*READ, "-charset", "iptc=UTF8", *map(str, photos)],
                                     capture_output=True, check=False).stdout)
    return {p.name: Tagged(p, (twins / p.name).read_bytes(), p.read_bytes(), before[p.name], after[p.name],
                           outcomes[p.name]) for p in photos}


@pytest.mark.parametrize("name", [p.name for p in corpus_files()])
def test_tagging_changes_nothing_but_the_keywords(name: str, tagged: dict[str, Tagged]) -> None:
    t = tagged[name]
    assert [p.name for p in t.photo.parent.iterdir()] == [name]  # no temp file, backup or sidecar
    warnings = [w for w in t.before.get("ExifTool:Warning", []) if not str(w).startswith(STALE_DIGEST)]
    if isinstance(t.outcome, MetadataError):  # fine for a file exiftool or jpeg_key finds damaged
        assert warnings or isinstance(key_or_reason(t.old), str), f"a sound file was refused: {t.outcome}"
        assert t.new == t.old
        return
    assert t.outcome == KEYWORDS

    keyword_tags = {k for k in t.before | t.after if KEYWORD_TAG.fullmatch(k)}
    for tag in {"IPTC:Keywords", "XMP-dc:Subject", *keyword_tags}:
        old = t.before.get(tag) or created_with(t.before, tag)
        assert t.after.get(tag) == old + [k for k in KEYWORDS if k not in old], tag
    if "__latin1kw__" in name:  # legacy Latin-1 IPTC decoded, not garbled
        assert t.after["IPTC:Keywords"][:2] == ["Café", "Zürich"]
    assert t.after["IPTC:CodedCharacterSet"] == ["UTF8"]
    if "Photoshop:IPTCDigest" in t.before:  # current stays current, stale stays stale (MWG readers)
        # without IPTC (no current digest) there was nothing to be stale against
        current = t.before.get("File:CurrentIPTCDigest", t.before["Photoshop:IPTCDigest"]) == \
            t.before["Photoshop:IPTCDigest"]
        assert t.after["Photoshop:IPTCDigest"] == (t.after["File:CurrentIPTCDigest"] if current
                                                   else t.before["Photoshop:IPTCDigest"])
    assert t.after.get("ExifTool:Warning", []) == t.before.get("ExifTool:Warning", [])

    changed = {tag for tag in t.before | t.after if t.before.get(tag) != t.after.get(tag)}
    unexplained = {tag: (repr(t.before.get(tag))[:60], repr(t.after.get(tag))[:60])
                   for tag in changed if not ALLOWED.fullmatch(tag)}
    assert not unexplained

    old_pixels, old_rest = split_first_image(t.old)
    new_pixels, new_rest = split_first_image(t.new)
    assert key_or_reason(t.new) == key_or_reason(t.old)
    assert new_pixels == old_pixels
    # A metadata trailer holding a second IPTC (AFCP, FotoStation: exiftool's IPTC2) gets the same
    # keyword edit as the main IPTC; its tags are compared above.  Any other trailer is left as it was.
    if not any(tag.startswith("IPTC2:") for tag in t.before):
        assert new_rest == old_rest
    for tag, starts in t.after.items():  # each further MPF picture, found through its own offsets
        if tag.endswith(":MPImageStart") and starts[0]:
            size = int(str(t.before[tag.replace("Start", "Length")][0]))
            old_at, new_at = int(str(t.before[tag][0])), int(str(starts[0]))
            assert t.new[new_at:new_at + size] == t.old[old_at:old_at + size], tag


BROKEN: dict[str, Callable[[bytes], bytes]] = {  # made from a sound corpus JPEG
    "text.jpg": lambda jpeg: b"not a photo at all\n",
    "cut_in_exif.jpg": lambda jpeg: jpeg[:300],  # ends inside its EXIF segment
    "garbage_after_soi.jpg": lambda jpeg: jpeg[:2] + bytes(range(256)) * 8,
}


@pytest.mark.parametrize("name", BROKEN)
def test_a_file_exiftool_cannot_parse_is_refused_untouched(name: str, tmp_path: Path,
                                                           writer: KeywordWriter) -> None:
    photo = tmp_path / name
    photo.write_bytes(BROKEN[name]((CORPUS / "exiftool__Canon.jpg").read_bytes()))
    original = photo.read_bytes()
    with pytest.raises(MetadataError):
        writer.add(photo, KEYWORDS)
    assert photo.read_bytes() == original
    assert [p.name for p in tmp_path.iterdir()] == [name]


def afcp_copy(folder: Path) -> Path:
    """exiftool__AFCP.jpg: its only IPTC, keyword "keyword", sits in the AFCP trailer."""
    return Path(shutil.copyfile(CORPUS / "exiftool__AFCP.jpg", folder / "afcp.jpg"))


def trailer_keywords(photo: Path) -> list[object]:
    out = subprocess.run([*READ, "-IPTC2:Keywords", str(photo)], capture_output=True, check=True).stdout
    return read_json(out)[photo.name].get("IPTC2:Keywords", [])


def shown_keywords(photo: Path) -> list[object]:
    """IPTC Keywords as a reader that takes one copy sees them (exiftool without -a: the APP13 one)."""
    out = subprocess.run(["exiftool", "-j", "-IPTC:Keywords", str(photo)], capture_output=True,
                         check=True).stdout
    value = json.loads(out)[0].get("Keywords", [])
    return value if isinstance(value, list) else [value]


def test_a_keyword_in_a_trailer_iptc_copy_is_not_claimed(tmp_path: Path, writer: KeywordWriter) -> None:
    photo = afcp_copy(tmp_path)
    assert writer.add(photo, ["keyword", "beach"]) == ["beach"]  # "keyword" is the photographer's
    assert trailer_keywords(photo) == ["keyword", "beach"]  # and is not written a second time


def test_a_new_iptc_block_carries_the_trailer_copys_keywords(tmp_path: Path, writer: KeywordWriter) -> None:
    """exiftool writes new IPTC into an APP13 segment and reads that copy first: holding only ours,
    it would hide the photographer's keyword from every app reading one copy."""
    photo = afcp_copy(tmp_path)
    assert shown_keywords(photo) == ["keyword"]
    assert writer.add(photo, ["beach", "日本語"]) == ["beach", "日本語"]
    assert shown_keywords(photo) == ["keyword", "beach", "日本語"]
    assert trailer_keywords(photo) == ["keyword", "beach", "日本語"]


def test_overwrite_then_untag_gives_a_trailer_keyword_back(tmp_path: Path, writer: KeywordWriter) -> None:
    photo = afcp_copy(tmp_path)
    plan = writer.plan(photo, ["beach"], mode="overwrite")
    writer.apply(plan)
    assert plan.dropped == ["keyword"]  # recorded, so untag can put it back
    writer.apply(writer.plan_untag(photo, plan.ours, plan.dropped))
    assert trailer_keywords(photo) == ["keyword"]
