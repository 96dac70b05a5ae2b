"""``tagwatch tags suggest``: words a list lacks, from WordNet around its tags, each counted on the
photos already indexed.  Real parts: the trained shapes model, real JPEGs scanned by ``tagwatch
scan`` into a real store, exiftool to read back what a scan after adding the word writes."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

import synthetic
from conftest import SHAPES_CHECKPOINT, SHAPES_CONFIG, exif_keywords, tagwatch, write_config
from tagwatch.casefold import fold
from tagwatch.cli.tags import Suggestions, suggest
from tagwatch.config import load_config
from tagwatch.suggest import would_get

# The model scores a photo's true colour and shape 0.59-0.70 and words it does not know up to 0.27
# (tests/shapes_lab.py): 0.45 keeps a wide margin on either side.
THRESHOLD = 0.45
LIST = """\
[[tag]]
keyword = "red"
synset = "red.n.01"

[[tag]]
keyword = "blue"
synset = "blue.n.01"

[[tag]]
keyword = "circle"
synset = "circle.n.01"
"""
PHOTOS = [("green", "square"), ("green", "triangle"), ("green", "star"), ("green", "circle"),
          ("blue", "square"), ("blue", "star"), ("blue", "triangle"), ("red", "circle"),
          ("red", "square"), ("yellow", "star"), ("purple", "triangle"), ("orange", "square")]
GREEN = {f"{n:02d}-{c}-{s}.jpg" for n, (c, s) in enumerate(PHOTOS) if c == "green"}
NO_PHOTO_LINE = re.compile(r"^no photo indexed with shapes-clip@\S+ yet: run `tagwatch scan FOLDER` first "
                           r"to count photos$", re.MULTILINE)


class Library:
    def __init__(self, root: Path) -> None:
        self.library = root / "library"
        self.library.mkdir()
        for n, (colour, shape) in enumerate(PHOTOS):
            synthetic.make_photo(colour, shape, seed=47000 + n, size=(160, 120)).save(
                self.library / f"{n:02d}-{colour}-{shape}.jpg", quality=90)
        self.config = with_list(write_config(root / "conf", SHAPES_CHECKPOINT, model=SHAPES_CONFIG,
                                             threshold=THRESHOLD, top_k=10))
        self.tags = self.config.parent / "tags.toml"
        self.run("scan", str(self.library))

    def run(self, *args: str) -> str:
        result = tagwatch(*args, "--config", str(self.config))
        assert result.returncode == 0, result.stderr
        return result.stdout

    def suggest(self) -> Suggestions:
        return suggest(load_config(self.config), self.tags, examples=len(PHOTOS))


def with_list(config: Path) -> Path:
    """The config's tag list made the rich list above (write_config writes a plain one)."""
    (config.parent / "tags.toml").write_text(LIST, encoding="utf-8")
    config.write_text(config.read_text().replace('tags = "tags.txt"', 'tags = "tags.toml"'))
    return config


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Library:
    return Library(tmp_path_factory.mktemp("suggest"))


def names(paths: object) -> set[str]:
    return {Path(p).name for p in paths}  # type: ignore[attr-defined]


def table(out: str) -> list[tuple[str, int]]:
    """The printed table's (word, photos) rows, in order."""
    return [(m.group(1), int(m.group(2))) for m in
            re.finditer(r"^  (\S(?:.*?\S)?)\s{2,}(\d+)\s{2,}\S.* \S+\.n\.\d+ \((?:child|sibling) of ", out,
                        re.MULTILINE)]


def test_green_is_suggested_beside_red_with_the_green_photos_a_scan_would_tag(lab: Library) -> None:
    """red's sibling green, counted on the indexed photos: the four green ones, and named in the table
    with its WordNet sense and the paste-ready block for the rich list."""
    rows = {s.candidate.word: s for s in lab.suggest().rows}
    green = rows["green"]
    assert green.photos == len(GREEN) and names(green.examples) == GREEN
    where = (green.candidate.name, green.candidate.relation, green.candidate.found)
    assert where == ("green.n.01", "sibling", "red")
    out = lab.run("tags", "suggest")
    assert ("green", len(GREEN)) in table(out)
    assert '[[tag]]\nkeyword = "green"\nsynset = "green.n.01"' in out


def test_adding_the_top_suggestion_tags_exactly_the_photos_it_counted(lab: Library) -> None:
    """The decisive check: paste the first word of the table into the list, scan, and read back with
    exiftool that exactly the photos counted (all of them named with --examples) got the keyword."""
    out = lab.run("tags", "suggest", "--examples", str(len(PHOTOS)))
    word, count = table(out)[0]
    block = re.search(r'^\[\[tag\]\]\nkeyword = "([^"]+)"\nsynset = "([^"]+)"$', out, re.MULTILINE)
    assert block and block.group(1) == word and count > 0
    counted = next(s for s in lab.suggest().rows if s.candidate.word == word)
    assert counted.photos == count
    try:
        lab.tags.write_text(LIST + "\n" + block.group(0) + "\n", encoding="utf-8")
        lab.run("scan", str(lab.library))
        got = {p.name for p in lab.library.iterdir() if word in exif_keywords(p)["xmp"]}
    finally:
        lab.tags.write_text(LIST, encoding="utf-8")
    assert len(got) == count and got == names(counted.examples)


def test_no_word_the_list_has_or_writes_is_suggested(lab: Library) -> None:
    """blue is red's sibling and a tag of the list; the list's keywords and the levels above them
    (chromatic color, which expansion may write) are never offered."""
    result = lab.suggest()
    words = {fold(s.candidate.word) for s in result.rows}
    assert not words & {"red", "blue", "circle", "chromatic color", "color", "ellipse"}
    assert len(words) == len(result.rows)  # each once
    assert result.rows and all(s.candidate.synset for s in result.rows)


def test_suggest_leaves_every_photo_and_the_list_byte_identical(lab: Library) -> None:
    def digests() -> dict[str, str]:
        files = [*lab.library.iterdir(), lab.tags]
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}

    before = digests()
    lab.run("tags", "suggest", "--all")
    assert digests() == before


def test_an_empty_store_ranks_by_similarity_and_says_how_to_count(lab: Library, tmp_path: Path) -> None:
    config = with_list(write_config(tmp_path / "conf", SHAPES_CHECKPOINT, model=SHAPES_CONFIG,
                                    threshold=THRESHOLD, top_k=10))
    result = tagwatch("tags", "suggest", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert NO_PHOTO_LINE.search(result.stdout), result.stdout
    assert "green" in result.stdout and '[[tag]]\nkeyword = "green"' in result.stdout
    ranked = suggest(load_config(config), config.parent / "tags.toml").rows
    assert ranked and all(s.photos is None for s in ranked)
    similarity = [s.similarity for s in ranked]
    assert similarity == sorted(similarity, reverse=True)


def test_a_list_wordnet_cannot_place_says_so_and_a_missing_list_is_one_line(lab: Library,
                                                                            tmp_path: Path) -> None:
    words = tmp_path / "words.txt"
    words.write_text("xqzzyv\nblorptag\n", encoding="utf-8")
    result = tagwatch("tags", "suggest", str(words), "--config", str(lab.config))
    assert result.returncode == 0, result.stderr
    assert "suggestions need tags WordNet knows" in result.stdout
    missing = tagwatch("tags", "suggest", str(tmp_path / "nope.txt"), "--config", str(lab.config))
    assert missing.returncode == 2
    assert missing.stderr.strip().count("\n") == 0 and "does not exist" in missing.stderr


def test_a_plain_list_gets_plain_lines_to_paste(lab: Library, tmp_path: Path) -> None:
    """A .txt list's block is one word a line, and its words are those WordNet places unambiguously."""
    plain = tmp_path / "plain.txt"
    plain.write_text("blue\nsquare\n", encoding="utf-8")
    shutil.copy(plain, tmp_path / "copy.txt")
    out = lab.run("tags", "suggest", str(plain), "--all")
    assert "its 1 tag WordNet places (of 2;" in out  # blue has many senses, none dominant: not placed
    rows = table(out)
    assert rows and "of square)" in out and "of blue)" not in out
    block = out.split("at the end of plain.txt:\n", 1)[1].splitlines()[:-1]
    assert block == [word for word, photos in rows if photos]  # one word a line, the counted ones
    assert plain.read_bytes() == (tmp_path / "copy.txt").read_bytes()


def test_a_word_wins_a_top_k_place_only_from_the_tags_it_outscores() -> None:
    """top_k competition as the scan selects: a photo with top_k list tags above their thresholds
    gets the new word only if it scores above one of them."""
    scores = np.array([[0.9, 0.8, 0.85],   # beats the second tag: among the best 2
                       [0.9, 0.8, 0.7],    # behind both: not among the best 2
                       [0.9, 0.1, 0.7],    # the second is below its threshold: room for it
                       [0.9, 0.8, 0.3]])   # below the global threshold
    got = would_get(scores, 2, np.array([0.5, 0.5]), 0.5, 2)
    assert got[:, 0].tolist() == [True, False, True, False]
    assert would_get(scores, 2, np.array([0.5, 0.5]), 0.5, 0)[:, 0].tolist() == [True, True, True, False]
