#!/usr/bin/env python3
"""XMP packets other programs get wrong, and what happens to a person's keywords in them.

Each class is an embedded XMP packet holding a person's keywords (grandma, Venice) and one kind of
damage seen in the wild.  For each, this prints exiftool's warning on reading it, what exiftool's
own write of one keyword does to the packet, what tagwatch does, and whether exiv2 (the XMP library
of digiKam, darktable, gThumb) can read the packet before and after.  The figures in
docs/metadata-safety.md come from this script; tests/test_metadata_safety.py holds tagwatch to them.

    .venv/bin/python scripts/xmp_damage.py
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

XMP_ID = b"http://ns.adobe.com/xap/1.0/\x00"
HEAD = (b"<?xpacket begin='\xef\xbb\xbf' id='W5M0MpCehiHzreSzNTczkc9d'?><x:xmpmeta xmlns:x='adobe:ns:meta/'>"
        b"<rdf:RDF xmlns:rdf='http://www.w3.org/1999/02/22-rdf-syntax-ns#'>")
TAIL = b"</rdf:RDF></x:xmpmeta><?xpacket end='w'?>"


def subject(*words: str) -> bytes:
    items = b"".join(b"<rdf:li>" + w.encode() + b"</rdf:li>" for w in words)
    return (b"<rdf:Description rdf:about='' xmlns:dc='http://purl.org/dc/elements/1.1/'><dc:subject>"
            b"<rdf:Bag>" + items + b"</rdf:Bag></dc:subject></rdf:Description>")


def make(value: str) -> bytes:
    return (b"<rdf:Description rdf:about='' xmlns:exif='http://ns.adobe.com/exif/1.0/'><exif:Make>"
            + value.encode() + b"</exif:Make></rdf:Description>")


PERSON = subject("grandma", "Venice")
# class -> (packet, what tagwatch does with it: "left" = untouched, keywords to IPTC only; "rewritten")
CLASSES: dict[str, tuple[bytes, str]] = {
    "sound": (HEAD + PERSON + TAIL, "written"),
    "closing tag missing": (HEAD + PERSON.replace(b"</rdf:Bag>", b"") + TAIL, "left"),
    "closing tag misspelt": (HEAD + PERSON.replace(b"</dc:subject>", b"</dc:subjekt>") + TAIL, "left"),
    "packet cut short": ((HEAD + PERSON + TAIL)[:-60], "left"),
    "not XML at all": (b"grandma, Venice <<<>>>", "left"),
    "blank": (b"     ", "left"),
    "property twice, same value": (HEAD + PERSON + make("Canon") + make("Canon") + TAIL, "rewritten"),
    "property twice, two values": (HEAD + PERSON + make("Canon") + make("Nikon") + TAIL, "left"),
    "keywords twice, two lists": (HEAD + PERSON + subject("uncle", "Venice") + TAIL, "left"),
}


def with_xmp(photo: Path, packet: bytes) -> Path:
    """Put ``packet`` into a JPEG as its XMP (an APP1 segment right after SOI)."""
    body = XMP_ID + packet
    data = photo.read_bytes()
    photo.write_bytes(data[:2] + b"\xff\xe1" + (len(body) + 2).to_bytes(2, "big") + body + data[2:])
    return photo


def xmp_segment(photo: Path) -> bytes:
    """The photo's first XMP segment, byte for byte."""
    data = photo.read_bytes()
    start = data.index(XMP_ID)
    return data[start:start - 2 + int.from_bytes(data[start - 2:start], "big")]


def plain_jpeg(path: Path) -> Path:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 120, 40)).save(buffer, "JPEG")
    path.write_bytes(buffer.getvalue())
    return path


def exiftool_read(photo: Path) -> dict[str, object]:
    out = subprocess.run(["exiftool", "-j", "-a", "-G1:4", "-XMP-dc:Subject", "-IPTC:Keywords",
                          "-ExifTool:Warning", str(photo)], capture_output=True, text=True).stdout
    record = json.loads(out)[0]
    record.pop("SourceFile")
    return record


def exiv2_reads(photo: Path) -> bool | None:
    """Can exiv2 decode the photo's XMP? None where exiv2 is not installed."""
    if shutil.which("exiv2") is None:
        return None
    result = subprocess.run(["exiv2", "-px", str(photo)], capture_output=True, text=True)
    return "Failed to decode XMP" not in result.stderr


def main() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "daemon"))
    import logging

    from tagwatch.metadata import ExifTool, KeywordWriter, MetadataError

    logging.disable(logging.WARNING)  # what tagwatch says is in the table
    tool = ExifTool()
    writer = KeywordWriter(tool)
    print("| damage | exiftool's warning on reading | exiftool alone adding 'beach': dc:subject after "
          "| tagwatch adding 'beach' | exiv2 reads the XMP before / after |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for n, (name, (packet, _)) in enumerate(CLASSES.items()):
            photo = with_xmp(plain_jpeg(Path(folder) / f"{n}.jpg"), packet)
            warnings = [str(v) for k, v in exiftool_read(photo).items() if k.endswith("Warning")]
            alone = Path(folder) / f"{n}-exiftool.jpg"
            subprocess.run(["exiftool", "-q", "-q", "-XMP-dc:Subject+=beach", "-o", str(alone), str(photo)])
            values = [v for k, v in exiftool_read(alone).items() if k.startswith("XMP-dc:")]
            shown = [", ".join(map(str, v)) if isinstance(v, list) else str(v) for v in values]
            kept = " / ".join(text if len(text) < 40 else "a garbled value holding the XML" for text in shown)
            if xmp_segment(alone) == xmp_segment(photo):
                kept = "packet untouched, keyword not written"
            before = exiv2_reads(photo)
            original = xmp_segment(photo)
            try:
                writer.add(photo, ["beach"])
                found = exiftool_read(photo)
                where = " and ".join(g for g, tag in (("IPTC", "IPTC:Keywords"), ("XMP", "XMP-dc:Subject"))
                                     if "beach" in json.dumps(found.get(tag)))
                outcome = f"keywords in {where}; XMP " + (
                    "kept byte for byte" if xmp_segment(photo) == original else "rewritten")
            except MetadataError as exc:
                outcome = f"refused: {exc}"
            print(f"| {name} | {'; '.join(warnings) or '-'} | {kept or 'nothing'} | {outcome} "
                  f"| {before} / {exiv2_reads(photo)} |")
    tool.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
