"""Tag expansion end to end, with the trained shapes model on real JPEGs read back by exiftool.

The tag list names WordNet synsets for the shapes and colours the model knows, and three levels
above them that no photo can score (threshold 1.0): ``colour`` above the colours, ``polygon`` and
``shape`` above the shapes, as WordNet orders them.  A red square is predicted "red" and "square";
expansion adds the levels, the hierarchical fields get their paths, ``untag`` takes out exactly
what tagwatch wrote, and changing the expansion or the list re-scores the cached vector without
encoding the photo again.  Also here: parent-level accuracy in ``scripts/evaluate.py``, and what
``tags check`` says of a plain list that WordNet places in part, and the levels ``explain`` and
``export`` show.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import evaluate
import synthetic
from conftest import SHAPES_CHECKPOINT, SHAPES_CONFIG, Env, shared_model, write_config
from tagwatch.cli import explain, export
from tagwatch.cli import main as cli_main
from tagwatch.config import Config, TaggingConfig, load_config
from tagwatch.metadata import ExifTool, KeywordWriter
from tagwatch.outcomes import Status
from tagwatch.store import Store
from tagwatch.tagger import Expansion
from tagwatch.vocabulary import Tag, Vocabulary, load_configured
from test_writer_targets import fields

THRESHOLD = json.loads((SHAPES_CHECKPOINT.parent / "shapes-clip.train.json").read_text())["threshold"]
LEVEL = "threshold = 1.0  # never predicted (a cosine is at most 1): written only as a level\n"
SHAPES_LIST = (
    "".join(f'[[tag]]\nkeyword = "{c}"\nsynset = "{c}.n.01"\n\n' for c in ("red", "green", "blue"))
    + "".join(f'[[tag]]\nkeyword = "{s}"\nsynset = "{n}"\n\n' for s, n in (
        ("circle", "circle.n.01"), ("square", "square.n.01"), ("triangle", "triangle.n.01"),
        ("star", "star.n.05")))
    + f'[[tag]]\nkeyword = "colour"\nsynset = "color.n.01"\n{LEVEL}\n'
    + f'[[tag]]\nkeyword = "polygon"\nsynset = "polygon.n.01"\n{LEVEL}\n'
    + f'[[tag]]\nkeyword = "shape"\nsynset = "shape.n.02"\n{LEVEL}'
)
IPTC, DC, LR, DIGIKAM = ("IPTC:Keywords", "XMP-dc:Subject", "XMP-lr:HierarchicalSubject",
                         "XMP-digiKam:TagsList")
PERSONS = {IPTC: ["Anna"], DC: ["Anna"], LR: ["people|Anna"], DIGIKAM: ["people/Anna"]}


@pytest.fixture
def env(tmp_path: Path) -> Env:
    env = Env(tmp_path, SHAPES_CHECKPOINT, TaggingConfig(threshold=THRESHOLD), model=SHAPES_CONFIG)
    yield env
    env.close()


def use(env: Env, text: str, tagging: TaggingConfig) -> Vocabulary:
    path = env.root / "shapes.toml"
    path.write_text(text, encoding="utf-8")
    vocabulary = load_configured(path, tagging)
    env.pipeline.use_vocabulary(vocabulary, tagging)
    return vocabulary


def red_square(folder: Path, seed: int = 90001) -> Path:
    """A held-out red square carrying a person's keyword in all four fields digiKam, Lightroom and
    the IPTC readers use."""
    path = folder / "red-square.jpg"
    folder.mkdir(parents=True, exist_ok=True)
    synthetic.make_photo("red", "square", seed, (160, 120)).save(path, quality=90)
    subprocess.run(["exiftool", "-q", "-overwrite_original", "-charset", "iptc=UTF8",
                    "-IPTC:CodedCharacterSet=UTF8", *[f"-{tag}={value}" for tag, values in PERSONS.items()
                                                      for value in values], str(path)], check=True)
    assert fields(path) == PERSONS
    return path


def test_a_level_is_written_once_within_the_depth_and_never_from_the_stop_list() -> None:
    tags = (Tag("golden retriever", ("p",), parents=("animal", "dog")),
            Tag("Labrador retriever", ("p",), parents=("animal", "dog")), Tag("beach", ("p",)))
    vocabulary = Vocabulary(tags, Path("tags.toml"))
    predicted = [("Labrador retriever", 0.4), ("golden retriever", 0.3), ("beach", 0.2)]
    both = [*predicted, ("dog", 0.4), ("animal", 0.4)]  # once each, with the best child's score
    assert Expansion.of(vocabulary, TaggingConfig())(predicted) == both
    assert Expansion.of(vocabulary, TaggingConfig(expand_depth=1))(predicted) == both[:4]
    assert Expansion.of(vocabulary, TaggingConfig(expand_stop=("dog",)))(predicted) == [*predicted,
                                                                                     ("animal", 0.4)]
    assert Expansion.of(vocabulary, TaggingConfig(expand="none"))(predicted) == predicted
    # a predicted level is not written twice
    assert Expansion.of(vocabulary, TaggingConfig())([("dog", 0.5), ("golden retriever", 0.3)]) == [
        ("dog", 0.5), ("golden retriever", 0.3), ("animal", 0.3)]


def test_expansion_writes_the_levels_and_untag_takes_out_exactly_them(env: Env, tmp_path: Path) -> None:
    tagging = TaggingConfig(threshold=THRESHOLD)  # the defaults: expand = "parents", depth 3
    vocabulary = use(env, SHAPES_LIST, tagging)
    assert {t.keyword: t.path for t in vocabulary.tags}["square"] == "shape|polygon|square"
    photo = red_square(tmp_path / "in")
    assert env.run(photo) == {"red-square.jpg": Status.TAGGED}

    flat = {"red", "square", "colour", "polygon", "shape"}  # predicted, then expanded
    paths = {"colour|red", "shape|polygon|square", "colour", "shape|polygon", "shape"}
    written = fields(photo)
    assert set(written[IPTC]) == set(written[DC]) == {"Anna", *flat}
    assert set(written[LR]) == {"people|Anna", *paths}
    assert set(written[DIGIKAM]) == {"people/Anna", *(p.replace("|", "/") for p in paths)}
    assert all(len(values) == len(set(values)) for values in written.values())  # each value once
    ledger = env.store.ledger(env.store.file(str(photo)).id)
    assert set(ledger) == flat  # the ledger owns the levels like any keyword of ours

    assert env.pipeline.untag(str(photo)).status == Status.UNTAGGED
    assert fields(photo) == PERSONS  # all of ours out, the person's untouched, in every field


def test_changing_expansion_or_the_list_rescores_without_encoding(env: Env, tmp_path: Path) -> None:
    sync = TaggingConfig(threshold=THRESHOLD, mode="sync")
    use(env, SHAPES_LIST, sync)
    photo = red_square(tmp_path / "in", seed=90002)
    env.run(photo)
    encoded = env.encoded()
    assert encoded == 1

    def ours() -> tuple[set[str], set[str]]:
        found = fields(photo)
        assert set(found[IPTC]) == set(found[DC])
        return set(found[IPTC]) - {"Anna"}, set(found[LR]) - {"people|Anna"}

    assert ours()[0] == {"red", "square", "colour", "polygon", "shape"}
    steps = [  # (tagging, list, keywords afterwards, hierarchical keywords afterwards)
        (TaggingConfig(threshold=THRESHOLD, mode="sync", expand="none"), SHAPES_LIST,
         {"red", "square"}, {"colour|red", "shape|polygon|square"}),
        (TaggingConfig(threshold=THRESHOLD, mode="sync", expand_depth=1), SHAPES_LIST,
         {"red", "square", "colour", "polygon"}, {"colour|red", "shape|polygon|square", "colour",
                                                  "shape|polygon"}),
        # the list loses its polygon level: square now sits right under shape
        (sync, SHAPES_LIST.replace('keyword = "polygon"\nsynset = "polygon.n.01"', 'keyword = "poly"'),
         {"red", "square", "colour", "shape"}, {"colour|red", "shape|square", "colour", "shape"}),
    ]
    for tagging, text, keywords, hierarchical in steps:
        use(env, text, tagging)
        assert env.pipeline.retag()[0] == 1  # the photo was re-scored
        assert ours() == (keywords, hierarchical)
        assert env.encoded() == encoded  # re-scored from the cached vector: not one image encoded


def test_parent_level_accuracy_counts_a_triangle_as_a_polygon(tmp_path: Path) -> None:
    """scripts/evaluate.py on class folders where two are mislabelled on purpose: triangles filed
    under "square" are wrong as leaves but right as polygons; circles filed under "star" are wrong at
    every level where a circle and a star differ."""
    root = tmp_path / "classes"
    for n, (folder, shown) in enumerate([("circle", "circle"), ("square", "square"), ("square", "triangle"),
                                         ("triangle", "triangle"), ("star", "star"), ("star", "circle")]):
        (root / folder).mkdir(parents=True, exist_ok=True)
        synthetic.make_photo("green", shown, 91000 + n, (160, 120)).save(root / folder / f"{n}.jpg")
    tags = tmp_path / "shapes.toml"
    tags.write_text(SHAPES_LIST, encoding="utf-8")
    config = load_config(write_config(tmp_path / "conf", SHAPES_CHECKPOINT, model=SHAPES_CONFIG))
    vectors = evaluate.Vectors(config, shared_model(SHAPES_CHECKPOINT, SHAPES_CONFIG))
    try:
        result = evaluate.evaluate_classes(vectors, root, None, [config.tagging.templates],
                                           load_configured(tags, config.tagging))
    finally:
        vectors.close()
    assert (result["images"], result["classes"], result["unplaced"]) == (6, 4, [])
    listed = result["rows"][-1]
    assert listed["prompts"] == ["tag list: shapes.toml"] and listed["top1"] == pytest.approx(4 / 6)
    by_depth = {level["depth"]: level for level in listed["parents"]}
    # WordNet depth 6 (first hypernym path): polygon, conic section (the circle's) and star
    assert by_depth[6]["ancestors"] == 3 and by_depth[6]["top1"] == pytest.approx(5 / 6)
    assert "polygon" in by_depth[6]["examples"]
    assert all(level["top1"] >= listed["top1"] for level in listed["parents"])


def test_tags_check_names_the_levels_and_the_words_wordnet_cannot_place(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path / "conf", SHAPES_CHECKPOINT, model=SHAPES_CONFIG,
                          tags=["golden retriever", "crane", "xyzzy"])
    tags = tmp_path / "conf" / "tags.txt"
    prompts = load_configured(tags, load_config(config).tagging).prompts()
    model = shared_model(SHAPES_CHECKPOINT, SHAPES_CONFIG)  # the session's child encodes the prompts
    with model.using() as encoder:                         # (any text), so `tags check` in-process
        vectors = encoder.encode_texts(prompts)            # finds them cached and starts no child
    store = Store(load_config(config).database)
    try:
        store.put_text_vectors(dict(zip(prompts, vectors, strict=True)), model.identity)
    finally:
        store.close()
    assert cli_main(["tags", "check", "--config", str(config), str(tags)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:6] == [
        f"{tags}: 3 tags, 3 prompts (0 encoded now, 3 cached), 0 with their own threshold, 1 with a parent",
        "levels above the tags, named by the photo vocabulary (written by expansion): animal, dog",
        "deepest path: animal|dog|golden retriever",
        "not placed in WordNet: 2 tags stay flat (expansion adds nothing to them; a .toml list can name "
        "each one's synset):",
        f"  {tags}:2: 'crane': ambiguous: 5 noun senses, none dominant",
        f"  {tags}:3: 'xyzzy': not a noun in WordNet 3.0",
    ]


# A stand-in the test model can see: "golden retriever" scored with red's prompt, so the red circle
# predicts it and expansion adds "dog" (a tag of the list, scored low) and "animal" (no tag of it,
# a level the photo vocabulary names).  Every prompt is one the shapes lab has cached.
STAND_IN = """
[[tag]]
keyword = "golden retriever"
prompts = ["a photo of a red."]
synset = "golden_retriever.n.01"

[[tag]]
keyword = "dog"
synset = "dog.n.01"

[[tag]]
keyword = "circle"
"""


def stand_in_config(shapes_lab: Any, conf: Path, tagging: str, watch: Path | None = None) -> Config:
    """The shapes lab's config with the stand-in list, these ``[tagging]`` lines and a copy of its
    database (every vector and prompt cached)."""
    (conf / "state").mkdir(parents=True)
    shutil.copy(shapes_lab.config.parent / "state" / "tagwatch.db", conf / "state" / "tagwatch.db")
    (conf / "tags.toml").write_text(STAND_IN, encoding="utf-8")
    text = shapes_lab.config.read_text(encoding="utf-8").replace('tags = "tags.txt"', 'tags = "tags.toml"')
    if watch is not None:
        text = text.replace("watch = []", f"watch = {json.dumps([str(watch)])}")
    text = text.replace("[tagging]\n", f"[tagging]\n{tagging}\n")
    (conf / "config.toml").write_text(text, encoding="utf-8")
    return load_config(conf / "config.toml")


@pytest.mark.parametrize("expand", ["parents", "none"])
def test_explain_and_export_show_the_levels_expansion_writes(shapes_lab: Any, tmp_path: Path,
                                                            expand: str) -> None:
    """What ``explain`` and ``export`` print is what the daemon writes: the levels above a tagged
    tag, each saying which tag it comes from; with ``expand = "none"`` none of them.  The lab's
    database has every vector, so neither command starts the model."""
    config = stand_in_config(shapes_lab, tmp_path / "conf", f'expand = "{expand}"')
    photo = str(shapes_lab.library / "red-circle.jpg")

    # rank and score, keyword, verdict: columns of "    1  +0.6512  golden retriever       TAGGED"
    lines = explain.render(explain.explain(config, photo), config).splitlines()[1:]
    shown = {line[16:56].strip(): (line[:16].split(), line[57:]) for line in lines}
    assert shown["golden retriever"][1] == shown["circle"][1] == "TAGGED"
    results, missing = export.export(config, [photo])
    assert missing == {}
    (exported,) = results
    score = dict(exported.tags)["golden retriever"]
    if expand == "parents":
        rank, verdict = shown["dog"]
        assert len(rank) == 2 and verdict.startswith("TAGGED: a level above golden retriever (its own score ")
        assert rank[1] == f"{score:+.4f}"  # export's score, the tag's below it: one score per keyword
        assert shown["animal"] == ([f"{score:+.4f}"], "TAGGED: a level above golden retriever")  # no rank
        assert exported.tags[2:] == [("dog", score), ("animal", score)]  # after the predictions
    else:
        assert shown["dog"][1] == "" and "animal" not in shown
        assert sorted(k for k, _ in exported.tags) == ["circle", "golden retriever"]


def test_the_review_page_counts_the_levels_among_what_a_photo_gets(shapes_lab: Any, tmp_path: Path) -> None:
    """In sync mode the photo page lists what tagwatch is about to change and polls until nothing
    is left: the levels it wrote are wanted, not "taking out 'animal'" for ever."""
    from tagwatch.web.library import Library

    photos = tmp_path / "photos"
    photos.mkdir()
    photo = Path(shutil.copy(shapes_lab.library / "red-circle.jpg", photos / "red-circle.jpg"))
    config = stand_in_config(shapes_lab, tmp_path / "conf", 'mode = "sync"', watch=photos)
    assert cli_main(["scan", "--config", str(config.source), str(photos)]) == 0  # encodes nothing
    assert set(fields(photo)[IPTC]) == {"golden retriever", "circle", "dog", "animal"}
    store, exiftool = Store(config.database), ExifTool()
    try:
        library = Library(config, store, KeywordWriter(exiftool, config.write), lambda: False)
        view = library.photo(str(photo), floor=-1.0)  # every score listed, dog's low one too
    finally:
        exiftool.close()
        store.close()
    assert view.pending == []
    verdicts = {line.keyword: line.verdict for line in view.lines}
    assert verdicts["dog"].startswith("tagged: a level above golden retriever (score and threshold of golden "
                                      "retriever; its own score ")


HAND_MADE_TOML = """\
[[tag]]
keyword = "pancake"
synset = "pancake.n.01"

[[tag]]
keyword = "cake"
synset = "cake.n.03"   # the baked goods, WordNet's parent of pancakes
threshold = 1.0        # never predicted: only a level could write it

[[tag]]
keyword = "kitten"
synset = "n02122948"

[[tag]]
keyword = "rose"
synset = "rose.n.01"
"""


def test_a_users_own_list_places_a_concept_where_the_photo_vocabulary_placed_it_by_hand(
        tmp_path: Path) -> None:
    """The photo vocabulary gives some concepts a parent by hand where WordNet's is no photographer's:
    pancakes are food (WordNet: cake), a kitten a cat (a young mammal), a rose a flower (a shrub).
    A user's own list with the same words got WordNet's places, so searching "cake" found pancakes;
    placed by WordNet (a .txt word, or a .toml synset), the same concept now takes the vocabulary's."""
    config = write_config(tmp_path / "conf", SHAPES_CHECKPOINT, model=SHAPES_CONFIG,
                          tags=["pancake", "kitten", "rose"], threshold=-1.0, top_k=3)  # every tag fires
    rich = tmp_path / "conf" / "food.toml"
    rich.write_text(HAND_MADE_TOML, encoding="utf-8")
    expected = {"food|pancake", "food", "animal|cat|kitten", "animal|cat", "animal", "plant|flower|rose",
                "plant|flower", "plant"}
    for name, extra in (("plain.jpg", ()), ("rich.jpg", ("--tags", str(rich)))):
        photo = tmp_path / "photos" / name
        photo.parent.mkdir(exist_ok=True)
        synthetic.make_photo("red", "circle", 90100, (160, 120)).save(photo, quality=90)
        result = subprocess.run([sys.executable, "-m", "tagwatch", "scan", "--config", str(config), *extra,
                                 str(photo)], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        written = fields(photo)
        assert set(written[LR]) == expected, name
        assert set(written[IPTC]) == {"pancake", "kitten", "rose", "food", "cat", "animal", "flower", "plant"}
