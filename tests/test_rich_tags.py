"""The rich tag list (``.toml``): parsing and its errors, per-tag thresholds, prompts and synonyms,
parents, each proven on real JPEGs read back by exiftool.

The tiny CLIP has random weights, so no score is known in advance: every threshold below is placed
between scores the tagger itself reports for the photo at hand.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import Env, exif_keywords, noise_jpeg
from tagwatch.config import TaggingConfig
from tagwatch.outcomes import Status
from tagwatch.tagger import select, thresholds
from tagwatch.vocabulary import (
    Vocabulary,
    VocabularyError,
    load_vocabulary,
    parse_rich_tag_list,
    parse_tag_list,
)

TEMPLATES = ("a photo of a {}.",)
EXAMPLE = """\
# the example of the format note
templates = ["a photo of a {}.", "a picture of a {}."]

[[tag]]
keyword = "golden retriever"
prompts = ["a photo of a golden retriever, a kind of dog."]
synonyms = ["goldie"]
threshold = 0.27
parent = "dog"

[[tag]]
keyword = "dog"
parent = "animal"

[[tag]]
keyword = "animal"
"""


def rich(text: str, name: str = "tags.toml", templates: tuple[str, ...] = TEMPLATES) -> Vocabulary:
    return parse_rich_tag_list(text, templates, Path(name))


# -- parsing ---------------------------------------------------------------------------------------

def test_the_example_parses_into_prompts_thresholds_and_paths(tmp_path: Path) -> None:
    path = tmp_path / "tags.toml"
    path.write_text(EXAMPLE, encoding="utf-8")
    vocabulary = load_vocabulary(path, TEMPLATES)  # picked by the suffix
    golden, dog, animal = vocabulary.tags
    assert golden.prompts == ("a photo of a golden retriever, a kind of dog.",  # its own prompt, then
                              "a photo of a goldie.", "a picture of a goldie.")  # the synonym x templates
    assert dog.prompts == ("a photo of a dog.", "a picture of a dog.")  # the file's templates
    assert (golden.threshold, dog.threshold) == (0.27, None)
    assert golden.path == "animal|dog|golden retriever" and dog.path == "animal|dog"
    assert animal.path == "animal" and animal.parents == ()
    assert vocabulary.paths() == {"golden retriever": "animal|dog|golden retriever", "dog": "animal|dog"}
    assert thresholds(vocabulary, 0.25).tolist() == pytest.approx([0.27, 0.25, 0.25])
    # the same bytes named .txt are read as a plain list, which refuses a rich list's [[tag]] line
    # rather than write it (and `keyword = "dog"`) into photos as keywords
    plain = tmp_path / "tags.txt"
    shutil.copyfile(path, plain)
    refused = r"tags\.txt:\d+: '\[\[tag\]\]' begins a tag of the rich format.*\.toml"
    with pytest.raises(VocabularyError, match=refused):
        load_vocabulary(plain, TEMPLATES)


def test_a_rich_list_without_rich_fields_is_the_plain_list() -> None:
    """Same tags, same prompts, same fingerprint: converting tags.txt to tags.toml retags nothing."""
    text = 'templates = ["a photo of a {}."]\n[[tag]]\nkeyword = "beach"\n[[tag]]\nkeyword = "日本語"\n'
    as_toml, as_txt = rich(text), parse_tag_list("beach\n日本語\n", TEMPLATES, Path("t.txt"))
    assert as_toml.tags == as_txt.tags and as_toml.fingerprint() == as_txt.fingerprint()


@pytest.mark.parametrize("change", [
    ('threshold = 0.27', 'threshold = 0.28'),
    ('parent = "dog"', 'parent = "animal"'),
    ('synonyms = ["goldie"]', 'synonyms = ["goldie", "golden"]'),
    ('prompts = ["a photo of a golden retriever, a kind of dog."]', ''),
])
def test_fingerprint_changes_with_each_rich_field(change: tuple[str, str]) -> None:
    before = rich(EXAMPLE)
    after = rich(EXAMPLE.replace(*change))
    assert before.fingerprint() != after.fingerprint()


def test_duplicates_are_reported_once_and_the_first_wins() -> None:
    text = ('[[tag]]\nkeyword = "dog"\nthreshold = 0.3\n\n[[tag]]\nkeyword = "cat"\n\n'
            '[[tag]]\nkeyword = " dog "\nthreshold = 0.9\n\n[[tag]]\nkeyword = "dog"\n')
    vocabulary = rich(text)
    assert vocabulary.keywords == ["dog", "cat"] and vocabulary.tags[0].threshold == 0.3
    assert vocabulary.warnings == ("tags.toml:8: duplicate tag 'dog' (first on line 1, again on 2 lines); "
                                   "used once; the first one's settings apply, ignored: threshold = 0.9 "
                                   "(line 8)",)


def test_a_repeated_tag_says_which_of_its_settings_are_not_used() -> None:
    """A second `[[tag]]` for `red` with its own threshold was dropped with only "used once": the
    warning names each setting it gave, and where, as not used."""
    text = ('[[tag]]\nkeyword = "red"\n\n[[tag]]\nkeyword = "Red"\nthreshold = 0.5\n'
            'prompts = ["a red thing."]\n')
    vocabulary = rich(text)
    assert vocabulary.keywords == ["red"] and vocabulary.tags[0].threshold is None
    assert vocabulary.warnings == (
        "tags.toml:4: duplicate tag 'Red' (first on line 1 as 'red'); used once, written 'red' (tags that "
        "differ only in case are one tag); the first one's settings apply, ignored: threshold = 0.5 "
        '(line 4), prompts = ["a red thing."] (line 4)',)


def test_a_parent_is_the_lists_tag_whatever_its_case() -> None:
    """`parent = "Colour"` under a list whose tag is `colour` was "not a keyword in this list", where
    every other comparison of keywords ignores case: it is that tag, spelt as the list spells it."""
    vocabulary = rich('[[tag]]\nkeyword = "red"\nparent = "Colour"\n\n[[tag]]\nkeyword = "colour"\n')
    assert [tag.path for tag in vocabulary.tags] == ["colour|red", "colour"]
    with pytest.raises(VocabularyError, match="parent cycle: red → red"):
        rich('[[tag]]\nkeyword = "red"\nparent = "RED"\n')


@pytest.mark.parametrize(("text", "message"), [
    ('[[tag]]\nkeyword = "a"\n\n[[tag]]\nkeyword = "b"\ntreshold = 0.3\n',
     "tags.toml:4: unknown key 'treshold' (known: keyword, prompts, synonyms, threshold, parent, synset)"),
    ('[[tag]]\nkeyword = "a"\n[[tag]]\nprompts = ["x"]\n', "tags.toml:3: the tag has no keyword"),
    ('[[tag]]\nkeyword = "a"\nthreshold = "0.3"\n', "tags.toml:1: threshold must be a number in [-1, 1]"),
    ('[[tag]]\nkeyword = "a"\nthreshold = 1.5\n', "tags.toml:1: threshold must be a cosine similarity"),
    ('[[tag]]\nkeyword = "a"\nthreshold = true\n', "tags.toml:1: threshold must be a number"),
    ('[[tag]]\nkeyword = "a"\nprompts = "a photo"\n', "tags.toml:1: prompts must be a list of strings"),
    ('[[tag]]\nkeyword = "a"\nprompts = []\n', "tags.toml:1: prompts must hold at least one prompt"),
    ('[[tag]]\nkeyword = "a"\nprompts = ["a {} photo"]\n', "tags.toml:1: prompt 'a {} photo' contains"),
    ('[[tag]]\nkeyword = "a"\nsynonyms = [1]\n', "tags.toml:1: synonyms must be a list of strings"),
    ('[[tag]]\nkeyword = "a"\n\n[[tag]]\nkeyword = "b"\nparent = "c"\n',
     "tags.toml:4: parent 'c' of 'b' is not a keyword in this list"),
    ('[[tag]]\nkeyword = "a"\nparent = "b"\n[[tag]]\nkeyword = "b"\nparent = "a"\n',
     "tags.toml:1: parent cycle: a → b → a"),
    ('[[tag]]\nkeyword = "a"\nparent = "a"\n', "tags.toml:1: parent cycle: a → a"),
    ('[[tag]]\nkeyword = "ok"\n[[tag]]\nkeyword = "' + "ü" * 33 + '"\n',
     "tags.toml:3: keyword '" + "ü" * 33 + "'… is 66 bytes in UTF-8; IPTC keywords hold at most 64"),
    ('[[tag]]\nkeyword = "animal|dog"\n', "tags.toml:1: keyword 'animal|dog' contains '|'"),
    ('[[tag]]\nkeyword = "   "\n', "tags.toml:1: empty keyword"),
    ('[[tag]]\nkeyword = "a"\n\n[[tag]\nkeyword = "b"\n', "tags.toml:4: not valid TOML: "),
    ('templates = ["a photo"]\n[[tag]]\nkeyword = "a"\n',
     "tags.toml:1: templates entry 'a photo' must contain '{}' exactly once"),
    ('threshold = 0.3\n[[tag]]\nkeyword = "a"\n',
     "tags.toml:1: unknown key 'threshold' (known: templates, wordnet_synonyms, tag)"),
    ('# nothing yet\n', "tags.toml: the tag list holds no tags"),
    ('tag = [{keyword = "a"}, {keyword = "b", parent = "x"}]\n', "tags.toml: tag #2: parent 'x' of 'b'"),
])
def test_errors_name_the_file_and_the_line_of_the_tag(text: str, message: str) -> None:
    with pytest.raises(VocabularyError) as caught:
        rich(text)
    assert str(caught.value).startswith(message), str(caught.value)
    assert "\n" not in str(caught.value)


def test_per_tag_thresholds_are_one_vectorised_comparison() -> None:
    scores = np.array([[0.30, 0.26, 0.50, 0.10],
                       [0.20, 0.40, 0.27, 0.90]], np.float32)
    limits = np.array([0.25, 0.25, 0.60, -1.0], np.float32)  # tag 2 is strict, tag 3 lenient
    assert select(scores, limits, 10) == [[0, 1, 3], [3, 1]]
    # a tag below its own threshold never takes a top_k place from one above its own
    assert select(scores, limits, 1) == [[0], [3]]
    assert select(scores, 0.25, 10) == [[2, 0, 1], [3, 1, 2]]  # one number still works


# -- on real files ---------------------------------------------------------------------------------

@pytest.fixture
def env(tmp_path: Path, tiny_checkpoint: Path) -> Env:
    env = Env(tmp_path, tiny_checkpoint, TaggingConfig(threshold=-1.0, top_k=10))
    yield env
    env.close()


def use(env: Env, text: str, tagging: TaggingConfig | None = None) -> Vocabulary:
    vocabulary = rich(text, str(env.root / "tags.toml"))
    env.pipeline.use_vocabulary(vocabulary, tagging)
    return vocabulary


def scores(env: Env, photo: Path) -> dict[str, float]:
    """What the tagger scores each tag of the list in use for this photo (as `tagwatch explain`)."""
    assert env.pipeline.tags is not None
    row = env.pipeline.tags.scores(env.pipeline.vector_for(str(photo)))[0]
    return dict(zip(env.pipeline.tags.keywords, row.tolist(), strict=True))


def tag_block(keyword: str, **fields: object) -> str:
    lines = ["[[tag]]", f'keyword = "{keyword}"']
    for name, value in fields.items():
        if isinstance(value, list):
            lines.append(f"{name} = [{', '.join(repr(v).replace(chr(39), chr(34)) for v in value)}]")
        elif isinstance(value, float):
            lines.append(f"{name} = {value!r}")
        else:
            lines.append(f'{name} = "{value}"')
    return "\n".join(lines) + "\n"


def keywords_in(photo: Path) -> set[str]:
    found = exif_keywords(photo)
    assert set(found["iptc"]) == set(found["xmp"])
    return set(found["iptc"])


def test_a_tags_own_threshold_decides_whether_it_is_written(env: Env, tmp_path: Path) -> None:
    photo = noise_jpeg(tmp_path / "in" / "p.jpg", seed=5)
    words = ["beach", "forest", "mountain", "city street"]
    use(env, "".join(tag_block(w) for w in words))
    observed = scores(env, photo)
    best, worst = max(words, key=observed.get), min(words, key=observed.get)
    # the best tag gets a threshold just above its score, the worst one just below its score
    text = "".join(tag_block(w, threshold=observed[w] + 0.005) if w == best
                   else tag_block(w, threshold=observed[w] - 0.005) if w == worst
                   else tag_block(w) for w in words)
    use(env, text)  # global threshold -1: every tag without its own passes
    assert env.run(photo) == {"p.jpg": Status.TAGGED}
    assert keywords_in(photo) == set(words) - {best}

    # the global threshold now above every score: only the worst tag's own threshold lets it in
    high = TaggingConfig(threshold=min(1.0, max(observed.values()) + 0.01), top_k=10, mode="sync")
    encoded = env.encoded()
    use(env, text, high)
    assert env.pipeline.retag()[0] == 1
    assert env.encoded() == encoded  # re-scored from the cached vector
    assert keywords_in(photo) == {worst}


def test_prompts_and_synonyms_change_what_is_written(env: Env, tmp_path: Path) -> None:
    original = noise_jpeg(tmp_path / "in" / "p.jpg", seed=6)
    copies = {name: shutil.copyfile(original, tmp_path / "in" / f"{name}.jpg")
              for name in ("plain", "prompted", "unsynonymed", "synonym")}  # one picture: encoded once
    candidates = ["harbour", "meadow", "desert", "glacier", "canyon", "volcano", "lagoon", "bazaar"]
    sentences = ["boats moored in a quiet harbour at dawn", "a crowded night market with lanterns",
                 "snow falling on a frozen lake", "an old lighthouse on a rocky cliff",
                 "children playing football in the rain", "a bowl of ramen on a wooden table"]
    probe = "".join(tag_block(w) for w in candidates) + "".join(
        tag_block(f"s{i}", prompts=[s]) for i, s in enumerate(sentences))
    use(env, probe)
    observed = scores(env, original)
    keyword = min(candidates, key=observed.get)  # "a photo of a KEYWORD." scores lowest
    sentence_tag = max((f"s{i}" for i in range(len(sentences))), key=observed.get)
    sentence = sentences[int(sentence_tag[1:])]
    assert observed[sentence_tag] > observed[keyword] + 0.01  # the observed gap the test relies on
    middle = (observed[sentence_tag] + observed[keyword]) / 2

    # Its own prompt lifts the tag over a threshold that the template-made prompt stays under
    use(env, tag_block(keyword, threshold=middle) + tag_block("control"))
    env.run(copies["plain"])
    use(env, tag_block(keyword, prompts=[sentence], threshold=middle) + tag_block("control"))
    assert abs(scores(env, original)[keyword] - observed[sentence_tag]) < 1e-6  # the prompt's own score
    env.run(copies["prompted"])
    assert keywords_in(copies["plain"]) == {"control"}
    assert keywords_in(copies["prompted"]) == {keyword, "control"}

    # A synonym's prompts join the average: the tag scores differently, and the written tags follow
    synonym = max(candidates, key=observed.get)
    use(env, tag_block(keyword, synonyms=[synonym]))
    averaged = scores(env, original)[keyword]
    assert abs(averaged - observed[keyword]) > 0.002
    between = (averaged + observed[keyword]) / 2
    use(env, tag_block(keyword, threshold=between) + tag_block("control"))
    env.run(copies["unsynonymed"])
    use(env, tag_block(keyword, synonyms=[synonym], threshold=between) + tag_block("control"))
    env.run(copies["synonym"])
    assert (keyword in keywords_in(copies["synonym"])) == (averaged > between)
    assert (keyword in keywords_in(copies["unsynonymed"])) == (observed[keyword] > between)
    assert keywords_in(copies["synonym"]) != keywords_in(copies["unsynonymed"])
    assert env.encoded() == 1


def test_parents_give_the_hierarchical_keyword_and_flat_ones_stay_flat(env: Env, tmp_path: Path) -> None:
    photo = noise_jpeg(tmp_path / "in" / "p.jpg", seed=7)
    use(env, EXAMPLE.replace("threshold = 0.27", "threshold = -1.0"))
    env.run(photo)
    fields = exif_fields(photo)
    assert set(fields["IPTC:Keywords"]) == set(fields["XMP-dc:Subject"]) == {"golden retriever", "dog",
                                                                             "animal"}
    assert set(fields["XMP-lr:HierarchicalSubject"]) == {"animal|dog|golden retriever", "animal|dog",
                                                         "animal"}
    assert fields["XMP-digiKam:TagsList"] == []  # written only where digiKam already keeps it


def exif_fields(path: Path) -> dict[str, list[str]]:
    from test_writer_targets import fields

    return fields(path)
