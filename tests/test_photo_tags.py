"""The shipped photo vocabulary (config/photo-tags.toml), the default tag list: it holds what people
search a photo library for, it places its concepts in WordNet's hierarchy at the level people
speak of them, and ImageNet-1k stays one name away.  Plain lists are placed when their words are
clear (what ``tags check`` says of the others is in test_expansion.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import REPO
from tagwatch.calibrate import save_thresholds
from tagwatch.cli import main as cli_main
from tagwatch.config import TaggingConfig, builtin_tag_list, load_config
from tagwatch.tagger import Expansion
from tagwatch.vocabulary import Vocabulary, load_configured, load_vocabulary

# The concepts the photo vocabulary must hold (what a new user searched for and ImageNet-1k lacks)
REQUIRED = [
    "person", "portrait", "child", "dog", "cat", "bird", "horse", "car", "bicycle", "boat", "airplane",
    "train", "beach", "mountain", "forest", "lake", "river", "sea", "desert", "snow", "city", "street",
    "building", "church", "bridge", "food", "cake", "wine", "flower", "tree", "sunset", "night", "fog",
    "rain", "wedding", "birthday", "concert", "sport", "football", "black and white", "silhouette",
    "macro", "aerial", "landscape", "architecture", "interior", "garden", "market", "museum", "festival",
]


@pytest.fixture(scope="module")
def photo_tags() -> Vocabulary:
    return load_configured(builtin_tag_list(), TaggingConfig())


def test_the_default_list_is_the_photo_vocabulary(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path, ""))  # a config that names no list
    assert config.tags == builtin_tag_list("photo-tags")
    assert config.tags.read_bytes() == (REPO / "config" / "photo-tags.toml").read_bytes()
    assert (config.tagging.expand, config.tagging.expand_depth) == ("parents", 3)
    imagenet = load_config(_config(tmp_path, 'tags = "imagenet-1k"\n'))  # rtag's list, by name
    assert imagenet.tags == builtin_tag_list("imagenet-1k") and imagenet.tags.suffix == ".txt"
    assert len(load_vocabulary(imagenet.tags, ("a photo of a {}.",)).tags) == 999


def _config(folder: Path, text: str) -> Path:
    path = folder / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_it_holds_what_people_search_for(photo_tags: Vocabulary) -> None:
    keywords = set(photo_tags.keywords)
    assert [concept for concept in REQUIRED if concept not in keywords] == []
    assert 1000 <= len(photo_tags.tags) <= 2000
    assert not photo_tags.warnings  # no duplicate
    named = [tag for tag in photo_tags.tags if tag.synset]
    assert len(named) >= 0.9 * len(photo_tags.tags)  # WordNet has a place for nearly all of them


def test_golden_retriever_is_a_dog_is_an_animal(photo_tags: Vocabulary) -> None:
    tags = {tag.keyword: tag for tag in photo_tags.tags}
    assert tags["golden retriever"].path == "animal|dog|golden retriever"
    assert tags["dog"].path == "animal|dog" and tags["animal"].path == "animal"
    predicted = [("golden retriever", 0.31), ("Labrador retriever", 0.29), ("beach", 0.27)]
    expanded = Expansion.of(photo_tags, TaggingConfig())(predicted)
    assert expanded == [*predicted, ("dog", 0.31), ("animal", 0.31)]
    # the levels are the words people use, never WordNet's upper ones
    levels = {parent for tag in photo_tags.tags for parent in tag.parents}
    assert not levels & {"entity", "object", "whole", "organism", "artifact", "mammal", "canine",
                         "placental", "vertebrate", "retriever", "hunting dog"}
    assert {"animal", "dog", "bird", "vehicle", "food", "building", "sport", "plant"} <= levels
    assert tags["eagle"].path == "animal|bird|bird of prey|eagle"
    assert tags["soccer"].path == "sport|football|soccer"
    assert tags["rose"].path == "plant|flower|rose"  # an explicit parent where WordNet says shrub


def test_a_plain_list_is_placed_where_its_words_are_clear(tmp_path: Path) -> None:
    plain = tmp_path / "tags.txt"
    plain.write_text("Golden Retrievers\ndog\ncrane\nbeach\nxyzzy\n", encoding="utf-8")
    vocabulary = load_configured(plain, TaggingConfig())
    paths = {tag.keyword: tag.path for tag in vocabulary.tags}
    # "dog" is a tag of this list; "animal" comes from the photo vocabulary, as a level above it
    assert paths["Golden Retrievers"] == "animal|dog|Golden Retrievers" and paths["dog"] == "animal|dog"
    assert [tag.path for tag in vocabulary.ancestors] == ["animal"]
    assert paths["crane"] == "crane" and paths["xyzzy"] == "xyzzy"
    assert vocabulary.unplaced == (f"{plain}:3: 'crane': ambiguous: 5 noun senses, none dominant",
                                   f"{plain}:5: 'xyzzy': not a noun in WordNet 3.0")
    flat = load_configured(plain, TaggingConfig(expand="none"))  # as before expansion: rtag's list
    assert all(not tag.parents for tag in flat.tags) and flat.fingerprint() != vocabulary.fingerprint()


def test_a_synset_and_the_stop_list_shape_the_hierarchy(tmp_path: Path) -> None:
    rich = tmp_path / "tags.toml"
    rich.write_text('[[tag]]\nkeyword = "goldie"\nsynset = "n02099601"\n\n'
                    '[[tag]]\nkeyword = "hound"\nsynset = "dog.n.01"\n', encoding="utf-8")
    vocabulary = load_configured(rich, TaggingConfig())
    assert [tag.path for tag in vocabulary.tags] == ["animal|hound|goldie", "animal|hound"]
    no_animal = load_configured(rich, TaggingConfig(expand_stop=("Animal",)))
    assert [tag.path for tag in no_animal.tags] == ["hound|goldie", "hound"]
    rich.write_text('[[tag]]\nkeyword = "dog"\nsynset = "dog.n.99"\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"tags\.toml:1: synset 'dog\.n\.99': 'dog' has 7 noun senses"):
        load_configured(rich, TaggingConfig())


def test_tags_senses_shows_each_meaning_to_pick_a_synset(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["tags", "senses", "crane", "Golden Retrievers"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "crane: 5 noun senses (ambiguous: 5 noun senses, none dominant)"
    assert any(line.split()[:2] == ["crane.n.05", "n02012849"] and "(under wading bird < aquatic bird < bird"
               in line for line in lines)
    assert lines[-2] == "Golden Retrievers: 1 noun sense (a plain list uses golden_retriever.n.01)"
    assert lines[-1].split()[:3] == ["*", "golden_retriever.n.01", "n02099601"]


def test_thresholds_for_the_builtin_vocabulary_go_beside_the_config_never_into_the_package(
        tmp_path: Path) -> None:
    """Calibrating (or the review page's tag page) with the default list, which is rich: the
    installed copy stays as shipped, a copy with the thresholds is written beside the config."""
    config = load_config(_config(tmp_path, ""))
    shipped = config.tags.read_bytes()
    said = save_thresholds(config, ["dog", "beach"], {"dog": 0.31, "beach": 0.27})
    assert config.tags.read_bytes() == shipped
    twin = tmp_path / "photo-tags.toml"
    assert said.endswith('tags = "photo-tags.toml"') and str(twin) in said
    text = twin.read_text(encoding="utf-8")
    assert text.startswith(shipped.decode("utf-8")[:200])  # the shipped list, its comments kept
    calibrated = load_vocabulary(twin, ("a photo of a {}.",))
    own = {tag.keyword: tag.threshold for tag in calibrated.tags}
    assert (own["dog"], own["beach"], own["cat"]) == (0.31, 0.27, None)
    assert len(calibrated.tags) == len(load_vocabulary(config.tags, ("a photo of a {}.",)).tags)
