"""The parsed tag list kept in the data folder: read back only while everything that made it holds."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from tagwatch import hierarchy, listcache
from tagwatch.config import TaggingConfig, builtin_tag_list, load_config
from tagwatch.pipeline import load_tag_list
from tagwatch.vocabulary import VocabularyError, load_configured

LIST = """\
wordnet_synonyms = true

[[tag]]
keyword = "golden retriever"
synset = "golden_retriever.n.01"
threshold = 0.27

[[tag]]
keyword = "dog"
synset = "dog.n.01"

[[tag]]
keyword = "dog"
"""


def _no_parse(*args: object, **kwargs: object) -> None:
    raise AssertionError("the list was parsed again")


@pytest.fixture
def listed(tmp_path: Path) -> tuple[Path, Path]:
    """A rich list placed in WordNet (levels, synonyms, a duplicate's warning) and a data folder."""
    path = tmp_path / "tags.toml"
    path.write_text(LIST, encoding="utf-8")
    folder = tmp_path / "state"
    folder.mkdir()
    return path, folder


def test_a_second_load_reads_back_the_parsed_list(listed: tuple[Path, Path],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    path, folder = listed
    parsed = listcache.load(path, TaggingConfig(), folder)
    assert parsed == load_configured(path, TaggingConfig())
    golden = parsed.tags[0]
    assert golden.threshold == 0.27 and golden.path.endswith("dog|golden retriever")  # WordNet's levels
    assert any("duplicate" in w for w in parsed.warnings)
    assert (folder / listcache.NAME).is_file()
    monkeypatch.setattr(listcache, "load_configured", _no_parse)
    assert listcache.load(path, TaggingConfig(), folder) == parsed  # the same tags, levels and warnings


def test_an_edited_list_or_other_settings_are_parsed_again(listed: tuple[Path, Path]) -> None:
    path, folder = listed
    first = listcache.load(path, TaggingConfig(), folder)
    path.write_text(LIST + '\n[[tag]]\nkeyword = "beach"\n', encoding="utf-8")
    assert listcache.load(path, TaggingConfig(), folder).keywords == [*first.keywords, "beach"]
    other = TaggingConfig(templates=("a picture of a {}.",))
    assert listcache.load(path, other, folder).tags[1].prompts[0] == "a picture of a dog."
    assert listcache.load(path, TaggingConfig(), folder).tags[1].prompts[0] == "a photo of a dog."


def test_a_damaged_copy_is_parsed_again_and_replaced(listed: tuple[Path, Path],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    path, folder = listed
    parsed = listcache.load(path, TaggingConfig(), folder)
    for damage in (b"{not json", b'{"key": 3}', b"[]"):
        (folder / listcache.NAME).write_bytes(damage)
        assert listcache.load(path, TaggingConfig(), folder) == parsed
    monkeypatch.setattr(listcache, "load_configured", _no_parse)
    assert listcache.load(path, TaggingConfig(), folder) == parsed  # the damaged copy was replaced


def test_other_code_or_shipped_data_never_reads_the_copy(listed: tuple[Path, Path], tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """An upgrade (or a local edit of the parser, or of the shipped photo vocabulary whose concepts
    name the levels of any list) makes the kept copy another key."""
    path, folder = listed
    shipped = tmp_path / "photo-tags.toml"
    shutil.copyfile(hierarchy.photo_tags_path(), shipped)
    monkeypatch.setattr(hierarchy, "photo_tags_path", lambda: shipped)
    calls: list[Path] = []
    real = listcache.load_configured
    monkeypatch.setattr(listcache, "load_configured", lambda p, t: calls.append(p) or real(p, t))
    listcache.load(path, TaggingConfig(), folder)
    listcache.load(path, TaggingConfig(), folder)
    assert calls == [path]  # parsed once
    code = listcache._code()
    monkeypatch.setattr(listcache, "_code", lambda: code + b"# a newer parser")
    listcache.load(path, TaggingConfig(), folder)
    assert calls == [path] * 2
    with shipped.open("a", encoding="utf-8") as handle:
        handle.write("# a newer photo vocabulary\n")
    listcache.load(path, TaggingConfig(), folder)
    assert calls == [path] * 3


def test_errors_and_folders_that_cannot_keep_it(listed: tuple[Path, Path]) -> None:
    path, folder = listed
    with pytest.raises(VocabularyError, match=r"missing\.toml.*does not exist"):
        listcache.load(path.with_name("missing.toml"), TaggingConfig(), folder)
    path.write_text('[[tag]]\nkeyword = "dog"\nsynset = "dog.n.99"\n', encoding="utf-8")
    with pytest.raises(VocabularyError, match=r"tags\.toml"):
        listcache.load(path, TaggingConfig(), folder)
    path.write_text(LIST, encoding="utf-8")
    not_a_folder = folder / "file"
    not_a_folder.write_text("x")
    assert listcache.load(path, TaggingConfig(), not_a_folder).keywords == ["golden retriever", "dog"]


def test_the_daemon_and_commands_keep_it_beside_the_database(tmp_path: Path) -> None:
    """The shipped list through the config: kept in the data folder, equal to a fresh parse."""
    config_file = tmp_path / "config.toml"
    config_file.write_text('database = "state/tagwatch.db"\n', encoding="utf-8")
    (tmp_path / "state").mkdir()
    config = load_config(config_file)
    first = load_tag_list(config)
    assert (tmp_path / "state" / listcache.NAME).is_file()
    assert load_tag_list(config) == first == load_configured(builtin_tag_list(), config.tagging)
    config = dataclasses.replace(config, tagging=dataclasses.replace(config.tagging, expand="none"))
    assert load_tag_list(config) == load_configured(builtin_tag_list(), config.tagging)
