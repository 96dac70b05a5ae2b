"""Draw docs/images/tagged-photo.jpg: a photo tagged by ``tagwatch scan``, beside its keywords as
exiftool reads them back from the file.

Nothing is staged: the photo is one of the test model's synthetic pictures (the only model here that
knows what it sees, and nothing is downloaded), tagged by the real command with the committed test
model, and the text on the right is exiftool's own output for the tagged file.

    .venv/bin/python scripts/readme_picture.py [--out docs/images/tagged-photo.jpg]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

import synthetic

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "tests" / "data" / "shapes-clip.json"
WEIGHTS = REPO / "tests" / "data" / "shapes-clip.safetensors"
COMMAND = ("-IPTC:Keywords", "-XMP-dc:Subject")


def tag_a_photo(folder: Path) -> tuple[Path, list[str]]:
    """A red circle tagged by ``tagwatch scan``; returns it and exiftool's lines about its keywords."""
    photo = folder / "photos" / "red-circle.jpg"
    photo.parent.mkdir()
    synthetic.make_photo("red", "circle", seed=4242, size=(480, 360)).save(photo, quality=92)
    (folder / "tags.txt").write_text("\n".join([*synthetic.COLOURS, *synthetic.SHAPES]) + "\n")
    threshold = json.loads((REPO / "tests" / "data" / "shapes-clip.train.json").read_text())["threshold"]
    (folder / "config.toml").write_text(
        f'tags = "tags.txt"\ndatabase = "tagwatch.db"\n[model]\nname = {json.dumps(str(MODEL))}\n'
        f"pretrained = {json.dumps(str(WEIGHTS))}\n[tagging]\nthreshold = {threshold}\n")
    subprocess.run([sys.executable, "-m", "tagwatch", "scan", "--config", str(folder / "config.toml"),
                    str(photo)], check=True)
    shown = subprocess.run(["exiftool", *COMMAND, str(photo)], check=True, capture_output=True,
                           text=True).stdout
    return photo, [line.rstrip() for line in shown.splitlines()]


def draw(photo: Path, lines: list[str], out: Path) -> None:
    picture = Image.open(photo).convert("RGB")
    try:  # exiftool aligns its columns with spaces: a monospaced font keeps them aligned
        font: ImageFont.FreeTypeFont | ImageFont.ImageFont = ImageFont.truetype("DejaVuSansMono.ttf", 16)
    except OSError:
        font = ImageFont.load_default(size=16)
    pad, line_height = 24, 26
    text = [f"$ exiftool {' '.join(COMMAND)} {photo.name}", *lines]
    width = max(int(font.getlength(t)) for t in text) + 2 * pad
    canvas = Image.new("RGB", (picture.width + width, picture.height), (30, 32, 36))
    canvas.paste(picture, (0, 0))
    pen = ImageDraw.Draw(canvas)
    top = (picture.height - line_height * len(text)) // 2
    for i, line in enumerate(text):
        pen.text((picture.width + pad, top + i * line_height), line, font=font,
                 fill=(140, 200, 140) if i == 0 else (235, 235, 235))
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out, quality=85, optimize=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images" / "tagged-photo.jpg")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        photo, lines = tag_a_photo(Path(folder))
        draw(photo, lines, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
