"""A level the photo vocabulary names (``green``, ``dog``) is the list's own tag when the list spells
it otherwise (``Green``, ``Dog``): one keyword in one spelling, never both.  Real parts: the trained
shapes model, a real JPEG scanned by ``tagwatch scan``, exiftool to read back what it wrote."""

from __future__ import annotations

import json
from pathlib import Path

import synthetic
from conftest import SHAPES_CHECKPOINT, SHAPES_CONFIG, exif_keywords, exiftool_read, tagwatch, write_config
from tagwatch.vocabulary import parse_rich_tag_list

GREEN = """\
templates = ["a photo of a {}."]

[[tag]]
keyword = "Green"

[[tag]]
keyword = "sage green"
synset = "sage_green.n.01"
"""
DOGS = """\
[[tag]]
keyword = "Dog"

[[tag]]
keyword = "Animal"

[[tag]]
keyword = "golden retriever"
synset = "golden_retriever.n.01"

[[tag]]
keyword = "poodle"
synset = "poodle.n.01"
"""


def hierarchical(path: Path) -> list[str]:
    out = exiftool_read("-j", "-XMP-lr:HierarchicalSubject", str(path))
    value = json.loads(out)[0].get("HierarchicalSubject", [])
    return [value] if isinstance(value, str) else [str(v) for v in value]


def test_a_capitalised_tag_is_the_level_of_a_child_placed_under_its_word(tmp_path: Path) -> None:
    """The report's case: `Green` (no synset) and `sage green` under WordNet's green.  The photo gets
    `Green` once, in IPTC, dc:subject and lr:hierarchicalSubject (`Green|sage green`), never a
    second `green`; `tags check` names no level `green` and shows the path under `Green`."""
    photos = tmp_path / "photos"
    photos.mkdir()
    photo = photos / "g.jpg"
    synthetic.make_photo("green", "horizontal bar", 9970000, (320, 240)).save(photo, quality=90)
    config = write_config(tmp_path / "conf", SHAPES_CHECKPOINT, model=SHAPES_CONFIG, threshold=0.36,
                          top_k=5)
    tags = config.parent / "tags.toml"
    tags.write_text(GREEN, encoding="utf-8")
    config.write_text(config.read_text().replace('tags = "tags.txt"', 'tags = "tags.toml"'))

    check = tagwatch("tags", "check", str(tags), "--config", str(config))
    assert check.returncode == 0, check.stderr
    assert "deepest path: Green|sage green" in check.stdout, check.stdout
    assert "levels above the tags" not in check.stdout  # Green is the list's, no level of its own

    scan = tagwatch("scan", str(photos), "--config", str(config))
    assert scan.returncode == 0, scan.stderr
    got = exif_keywords(photo)
    assert "sage green" in got["xmp"], got  # the child was predicted: the level is written too
    for field in (got["iptc"], got["xmp"]):
        assert [k for k in field if k.casefold() == "green"] == ["Green"], got
    paths = hierarchical(photo)
    assert "Green|sage green" in paths and not any(p.split("|")[0] == "green" for p in paths), paths


def test_every_level_takes_the_lists_spelling(tmp_path: Path) -> None:
    """`Dog` and `Animal` are the list's; a poodle sits under the list's `Dog`, with no `dog` or
    `animal` level beside them."""
    vocabulary = parse_rich_tag_list(DOGS, ("a photo of a {}.",), tmp_path / "dogs.toml")
    paths = {tag.keyword: tag.path for tag in vocabulary.tags}
    assert paths["poodle"] == "Dog|poodle" and paths["golden retriever"] == "Dog|golden retriever"
    assert not {tag.keyword.casefold() for tag in vocabulary.ancestors} & {"dog", "animal"}
