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
from conftest import (
    SHAPES_CHECKPOINT,
    SHAPES_CONFIG,
    config_with_vectors,
    database_copy,
    exif_keywords,
    tagwatch,
    write_config,
)
from tagwatch.casefold import fold
from tagwatch.cli.tags import Suggestions, suggest
from tagwatch.config import load_config
from tagwatch.suggest import would_get
from tagwatch.tagger import select

# One scanned library for the module (a module-scoped fixture) is built on each pytest-xdist worker that runs
# one of the module's tests: keep them on one worker (scripts/test: --dist loadgroup), built once
pytestmark = pytest.mark.xdist_group("suggest")

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


def library_photos(folder: Path) -> None:
    """The PHOTOS as JPEGs in ``folder`` (made)."""
    folder.mkdir(parents=True)
    for n, (colour, shape) in enumerate(PHOTOS):
        synthetic.make_photo(colour, shape, seed=47000 + n, size=(160, 120)).save(
            folder / f"{n:02d}-{colour}-{shape}.jpg", quality=90)


def outside_photos(folder: Path) -> None:
    """Three green stars in ``folder`` (made): photos indexed outside the watched library."""
    folder.mkdir(parents=True)
    for k in range(3):
        synthetic.make_photo("green", "star", seed=48000 + k, size=(160, 120)).save(
            folder / f"g{k}.jpg", quality=90)


class Library:
    def __init__(self, root: Path, known: Path) -> None:
        self.library = root / "library"
        library_photos(self.library)
        self.config = with_list(write_config(root / "conf", SHAPES_CHECKPOINT, model=SHAPES_CONFIG,
                                             threshold=THRESHOLD, top_k=10,
                                             database=database_copy(known, root / "db")))
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
def known(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A config (the rich LIST) whose database holds the image vectors of the library's photos and of
    the outside ones, and the prompt vectors of LIST and of the words `tags suggest` finds for it: one
    dry run and one `tags suggest` start the model.  The library (``lab``) and ``watched`` scan and
    count on copies of it (a database of their own, holding no file's record): neither their scans
    nor the suggestions for LIST start a model child (~3-4 CPU-seconds each).  A store's first
    suggestions, encoding every word, stay checked from scratch by
    ``test_an_empty_store_ranks_by_similarity_and_says_how_to_count``."""
    def pictures(folder: Path) -> None:
        library_photos(folder / "library")
        outside_photos(folder / "outside")

    config = with_list(config_with_vectors(tmp_path_factory.mktemp("suggest-known"), SHAPES_CHECKPOINT,
                                           fill=pictures, model=SHAPES_CONFIG, tags=["red", "blue", "circle"],
                                           threshold=THRESHOLD, top_k=10))
    result = tagwatch("tags", "suggest", "--config", str(config))  # LIST's and its candidates' prompts
    assert result.returncode == 0, result.stderr
    return config


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, known: Path) -> Library:
    """The library scanned (from the cached vectors) into a database of its own."""
    return Library(tmp_path_factory.mktemp("suggest"), known)


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
    assert rows and "of square" in out and "of blue" not in out
    block = out.split("at the end of plain.txt:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    result = suggest(load_config(lab.config), plain)
    keeps = {s.candidate.word for s in result.rows if s.candidate.plain_sense is None}
    assert block == [word for word, photos in rows if photos and word in keeps]  # one word a line
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



@pytest.mark.parametrize("top_k", [0, 1, 3])
def test_would_get_is_what_tagging_selects_with_the_word_added_over_random_scores(top_k: int) -> None:
    """``would_get`` is a fast copy of tagging's rule (:func:`tagger.select`), and `tags suggest`
    promises its counts are exactly what a scan writes: over many random score matrices and
    thresholds (one for all, or each tag its own; scores drawn near them), each candidate's column
    is what ``select`` gives for the list plus that candidate alone."""
    rng = np.random.default_rng(20260)
    for _ in range(300):
        photos, listed, candidates = (int(rng.integers(1, 12)), int(rng.integers(0, 7)),
                                      int(rng.integers(1, 5)))
        threshold = float(rng.uniform(0.1, 0.4))
        own = (np.full(listed, threshold) if rng.random() < 0.3
               else rng.uniform(0.05, 0.45, listed)).astype(np.float32)
        scores = rng.uniform(0.0, 0.5, (photos, listed + candidates)).astype(np.float32)
        got = would_get(scores, listed, own, threshold, top_k)
        assert got.shape == (photos, candidates)
        for c in range(candidates):
            alone = scores[:, [*range(listed), listed + c]]
            limits = np.append(own, np.float32(threshold))
            chosen = select(alone, limits, top_k)
            assert got[:, c].tolist() == [listed in row for row in chosen], (scores, own, threshold, c)


# -- where the pasted words sit, and what the counts promise (xS #2-#4, #6-#10) ------------------------

def pasted_rich(result: Suggestions, words: list[str]) -> dict[str, str | None]:
    """Each of ``words`` pasted into the list as its [[tag]] (the sense kept), parsed as the daemon
    parses it: word → its parent."""
    from tagwatch.suggest import paste_block, rich_form
    from tagwatch.vocabulary import parse_rich_tag_list, parse_tag_list
    from tagwatch.wordnet import WordNet
    chosen = [s.candidate for s in result.rows if s.candidate.word in words]
    text = result.source.read_text(encoding="utf-8")
    if result.source.suffix == ".txt":  # the words in the senses expansion places them in
        text = rich_form(parse_tag_list(text, ("{}",), result.source, place=True), WordNet())
    parsed = parse_rich_tag_list(text + "\n" + paste_block(True, chosen), ("{}",), result.source)
    return {t.keyword: (t.parents[-1] if t.parents else None) for t in parsed.tags}


def test_a_rich_tag_without_synset_is_not_looked_around(lab: Library, tmp_path: Path) -> None:
    """`Dog` and `Animal` name no synset: the list does not place them, so no word is found from them
    (the report's "poodle (child of Dog)" landed under a second `dog`); the header says why."""
    dogs = tmp_path / "dogs.toml"
    dogs.write_text('[[tag]]\nkeyword = "Dog"\n\n[[tag]]\nkeyword = "Animal"\n\n[[tag]]\n'
                    'keyword = "golden retriever"\nsynset = "golden_retriever.n.01"\n', encoding="utf-8")
    result = suggest(load_config(lab.config), dogs, limit=0)
    assert result.found is not None and result.found.placed == 1
    assert {s.candidate.found for s in result.rows} == {"golden retriever"}
    assert "poodle" not in {s.candidate.word for s in result.rows}
    out = lab.run("tags", "suggest", str(dogs), "--limit", "3")
    assert "(of 3; the others name no synset" in out and "tags check` names the others" not in out


def test_siblings_sit_under_the_parent_tagwatch_gives_the_tag(lab: Library, tmp_path: Path) -> None:
    """A plain kitten is animal|cat|kitten and pancake food|pancake: their siblings are the kinds
    under cat and food, not WordNet's young mammals (lamb, calf) or cakes; and every row's
    'sibling of X under P' / 'child of X' is where the pasted word lands."""
    listed = tmp_path / "kp.txt"
    listed.write_text("kitten\npancake\n", encoding="utf-8")
    result = suggest(load_config(lab.config), listed, limit=0, every=True)
    words = {s.candidate.word: s.candidate for s in result.rows}
    assert words and not {"lamb", "calf", "foal", "cheesecake", "cupcake"} & set(words)
    assert {c.parent for c in words.values() if c.relation == "sibling" and c.found == "kitten"} <= {"cat"}
    landed = pasted_rich(result, list(words))
    for c in words.values():
        assert landed[c.word] == c.parent, (c, landed[c.word])
    green = tmp_path / "green.toml"
    green.write_text('[[tag]]\nkeyword = "Green"\n\n[[tag]]\nkeyword = "sage green"\n'
                     'synset = "sage_green.n.01"\n', encoding="utf-8")
    shades = suggest(load_config(lab.config), green, limit=0, every=True)
    assert shades.rows and all(s.candidate.parent == "Green" for s in shades.rows)
    assert "sibling of sage green under Green" in lab.run("tags", "suggest", str(green), "--all")


def test_a_plain_list_pastes_only_words_it_reads_in_the_sense_found(lab: Library, tmp_path: Path) -> None:
    """head was found as the domestic animal (head.n.02) beside dog; a plain list reads head as the
    body part, and mare as nothing: those are named apart, with the .toml form, never in the block."""
    listed = tmp_path / "tags2.txt"
    listed.write_text("dog\nhorse\ncircle\n", encoding="utf-8")
    out = lab.run("tags", "suggest", str(listed), "--limit", "0", "--all", "--examples", "0")
    block = out.split("at the end of tags2.txt:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert "head" not in block and "mare" not in block
    assert "#   head → head.n.02 (a plain list reads it as head.n.01)" in out
    assert re.search(r"^#   mare → mare\.n\.01 \(a plain list leaves it flat: ambiguous", out, re.MULTILINE)
    from tagwatch.vocabulary import parse_tag_list
    placed = parse_tag_list(listed.read_text() + "\n".join(block) + "\n", ("{}",), listed, place=True)
    result = suggest(load_config(lab.config), listed, limit=0, every=True)
    found = {s.candidate.word: s.candidate for s in result.rows}
    for tag in placed.tags[3:]:  # each pasted word in the sense the table named, under its parent
        assert tag.synset == found[tag.keyword].synset
        assert (tag.parents[-1] if tag.parents else None) == found[tag.keyword].parent


def test_limit_caps_the_table_with_all_too(lab: Library) -> None:
    """--all adds the words no photo gets; --limit still caps the rows, and the hint names --limit."""
    out = lab.run("tags", "suggest", "--all", "--limit", "3", "--examples", "0")
    assert len(table(out)) == 3
    assert "more: --limit 0 lists every one" in out and "--all lists every one" not in out
    assert len(table(lab.run("tags", "suggest", "--all", "--limit", "0"))) > 3


def test_expand_none_places_no_plain_word(lab: Library, tmp_path: Path) -> None:
    """With expand = "none" a plain list is its lines: suggest looks nothing up and says so, rather
    than pointing at a `tags check` that names nothing."""
    config = tmp_path / "none.toml"
    config.write_text(lab.config.read_text().replace("[tagging]\n", '[tagging]\nexpand = "none"\n'),
                      encoding="utf-8")
    listed = tmp_path / "mine.txt"
    listed.write_text("red\ngreen\nstar\n", encoding="utf-8")
    result = tagwatch("--config", str(config), "tags", "suggest", str(listed))
    assert result.returncode == 0, result.stderr
    assert 'expand = "none" a plain list is its lines' in result.stdout
    assert "sibling of" not in result.stdout and "tags check" not in result.stdout


def test_a_built_in_list_is_pasted_into_your_own_copy(lab: Library) -> None:
    out = lab.run("tags", "suggest", "photo-tags", "--limit", "2", "--examples", "0")
    assert "at the end of your own copy of photo-tags.toml, not the package's file (`tagwatch init`" in out
    assert "at the end of photo-tags.toml:" not in out


def scanned(folder: Path, word: str) -> set[str]:
    return {p.name for p in folder.iterdir() if p.suffix == ".jpg" and word in exif_keywords(p)["xmp"]}


@pytest.fixture
def watched(tmp_path: Path, known: Path) -> tuple[Path, Path, Path]:
    """The library under `watch` with top_k 2 (so added words compete), and three green photos
    indexed by a scan outside it (from the cached vectors, into a database of the test's own);
    returns (config, library, outside)."""
    library, outside = tmp_path / "library", tmp_path / "outside"
    library_photos(library)
    outside_photos(outside)
    config = with_list(write_config(tmp_path / "conf", SHAPES_CHECKPOINT, model=SHAPES_CONFIG,
                                    threshold=THRESHOLD, top_k=2, watch=[library],
                                    database=database_copy(known, tmp_path / "db")))
    assert tagwatch("scan", str(library), str(outside), "--config", str(config)).returncode == 0
    return config, library, outside


def test_the_block_counts_are_what_pasting_the_whole_block_writes(watched: tuple[Path, Path, Path]) -> None:
    """Each word's 'photos' is for it alone; 'block' is for the whole block pasted, the words competing
    for top_k: paste it, scan, and exiftool finds exactly the block counts."""
    config, library, _ = watched
    out = tagwatch("tags", "suggest", "--limit", "5", "--config", str(config)).stdout
    assert "if it alone is added" in out and "'block' is each word's count with the whole block" in out
    result = suggest(load_config(config), config.parent / "tags.toml", limit=5)
    block = {s.candidate.word: s.together for s in result.shown if s.together is not None}
    alone = {s.candidate.word: s.photos for s in result.shown}
    assert len(block) >= 3 and any(block[w] != alone[w] for w in block)  # top_k 2: they compete
    pasted = out.split("at the end of tags.toml:\n", 1)[1].split("\n(nothing was written", 1)[0]
    (config.parent / "tags.toml").write_text(LIST + "\n" + pasted + "\n", encoding="utf-8")
    assert tagwatch("scan", str(library), "--config", str(config)).returncode == 0
    assert {w: len(scanned(library, w)) for w in block} == block


def test_photos_outside_the_watched_folders_are_counted_apart(watched: tuple[Path, Path, Path]) -> None:
    """green gets the four green photos of the watched library (what the daemon's re-score writes)
    and, apart, the three green ones a scan indexed outside it; a scan of the library alone (the
    daemon's reach) writes exactly the first, one naming the outside folder the rest."""
    config, library, outside = watched
    result = suggest(load_config(config), config.parent / "tags.toml")
    green = next(s for s in result.rows if s.candidate.word == "green")
    assert (green.photos, green.outside) == (len(GREEN), 3)
    out = tagwatch("tags", "suggest", "--config", str(config)).stdout
    assert "of the 12 photos indexed with" in out and "under the watched folders" in out
    assert "elsewhere: of the 3 photos indexed outside the watched folders" in out
    green_tag = '\n[[tag]]\nkeyword = "green"\nsynset = "green.n.01"\n'
    (config.parent / "tags.toml").write_text(LIST + green_tag, encoding="utf-8")
    assert tagwatch("scan", str(library), "--config", str(config)).returncode == 0
    assert scanned(library, "green") == GREEN and not scanned(outside, "green")
    assert tagwatch("scan", str(outside), "--config", str(config)).returncode == 0
    assert len(scanned(outside, "green")) == green.outside
