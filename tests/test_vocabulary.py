"""The plain-text tag list (rtag-compatible) and the shipped ImageNet-1k list."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import exif_keywords, noise_jpeg, tagwatch, write_config
from tagwatch.config import builtin_tag_list
from tagwatch.vocabulary import VocabularyError, load_vocabulary, parse_tag_list

TEMPLATES = ("a photo of a {}.",)


def test_comments_blanks_whitespace_and_duplicates(tmp_path: Path) -> None:
    text = "\ufeff# my tags\n\nbeach\n  sunset   sky \nbeach\n# again\nbeach\nforest\n"
    vocabulary = parse_tag_list(text, TEMPLATES, tmp_path / "tags.txt")
    assert vocabulary.keywords == ["beach", "sunset sky", "forest"]
    assert vocabulary.tags[0].prompts == ("a photo of a beach.",)
    # the duplicate is reported once, with where it first appeared
    assert len(vocabulary.warnings) == 1
    assert "tags.txt:5: duplicate tag 'beach' (first on line 3, again on 2 lines)" in vocabulary.warnings[0]


def test_tags_that_differ_only_in_case_are_one_tag_written_as_first_spelled(tmp_path: Path,
                                                                           tiny_checkpoint: Path) -> None:
    """`red` and `Red` in one list were both kept and both written into the photo; they are one tag,
    the first spelling, and the warning names both lines."""
    config = write_config(tmp_path / "conf", tiny_checkpoint, tags=["red", "blue", "Red", "RED"], top_k=3)
    photo = noise_jpeg(tmp_path / "photos" / "p.jpg", seed=5)
    result = tagwatch("scan", "--config", str(config), str(photo))
    assert result.returncode == 0, result.stderr
    assert sorted(exif_keywords(photo)["iptc"]) == ["blue", "red"]
    tags = tmp_path / "conf" / "tags.txt"
    warning = (f"{tags}:3: duplicate tag 'Red' (first on line 1 as 'red', again on 2 lines); used once, "
               "written 'red' (tags that differ only in case are one tag)")
    assert result.stderr.count(warning) == 1, result.stderr


def test_templates_make_one_prompt_each() -> None:
    vocabulary = parse_tag_list("dog\n", ("a photo of a {}.", "{}"), Path("t.txt"))
    assert vocabulary.tags[0].prompts == ("a photo of a dog.", "dog")
    assert vocabulary.prompts() == ["a photo of a dog.", "dog"]


def test_keyword_longer_than_iptc_allows_is_rejected_with_line_number() -> None:
    long = "ü" * 33  # 66 bytes in UTF-8, 33 characters
    with pytest.raises(VocabularyError, match=r"t\.txt:3: keyword .* is 66 bytes in UTF-8; IPTC keywords "
                                              r"hold at most 64"):
        parse_tag_list(f"ok\n# c\n{long}\n", TEMPLATES, Path("t.txt"))
    assert parse_tag_list("ü" * 32, TEMPLATES, Path("t.txt")).keywords == ["ü" * 32]  # exactly 64 bytes


def test_empty_or_unreadable_lists_are_errors(tmp_path: Path) -> None:
    with pytest.raises(VocabularyError, match="holds no tags"):
        parse_tag_list("# only a comment\n\n", TEMPLATES, tmp_path / "t.txt")
    with pytest.raises(VocabularyError, match="does not exist"):
        load_vocabulary(tmp_path / "missing.txt", TEMPLATES)
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("Café\n".encode("latin-1"))
    with pytest.raises(VocabularyError, match="not UTF-8"):
        load_vocabulary(bad, TEMPLATES)


def test_fingerprint_changes_with_keywords_or_prompts() -> None:
    a = parse_tag_list("dog\ncat\n", TEMPLATES, Path("t"))
    assert a.fingerprint() == parse_tag_list("# x\ndog\ncat\n", TEMPLATES, Path("t")).fingerprint()
    assert a.fingerprint() != parse_tag_list("dog\ncow\n", TEMPLATES, Path("t")).fingerprint()
    assert a.fingerprint() != parse_tag_list("dog\ncat\n", ("{}",), Path("t")).fingerprint()


def test_shipped_imagenet_list_is_clean() -> None:
    repo_copy = Path(__file__).resolve().parents[1] / "config" / "imagenet-1k.txt"
    assert builtin_tag_list("imagenet-1k").read_text() == repo_copy.read_text()
    vocabulary = load_vocabulary(builtin_tag_list("imagenet-1k"), TEMPLATES)
    assert len(vocabulary.tags) == 999 and not vocabulary.warnings
    keywords = set(vocabulary.keywords)
    assert {"loudspeaker", "Golden Retriever", "tench", "projectile", "missile"} <= keywords
    assert not [k for k in keywords if "," in k]  # one clean keyword per class, no synonym lists


def test_a_rich_list_under_another_name_is_refused_not_written_line_by_line(tmp_path: Path,
                                                                           tiny_checkpoint: Path) -> None:
    """A desk's rich list saved as `newsroom.tags` (or `tags.toml.txt`, a hidden extension) is read as
    plain text, and its lines went into the photos as keywords: `[[tag]]`, `keyword = "Polizei"`.  The
    rich format's `[[tag]]` header is no keyword: the list is refused, naming the line and the fix."""
    rich = '# newsroom\n[[tag]]\nkeyword = "Polizei"\nthreshold = 0.3\n'
    config = write_config(tmp_path / "conf", tiny_checkpoint, tags=["beach"])
    tags = tmp_path / "conf" / "tags.txt"
    tags.write_text(rich, encoding="utf-8")
    with pytest.raises(VocabularyError) as refused:
        parse_tag_list(rich, TEMPLATES, tags)
    assert str(refused.value) == (
        f"{tags}:2: '[[tag]]' begins a tag of the rich format, but this list is read as plain text (one "
        "keyword per line) as its name does not end in .toml: give it a .toml name")
    photo = noise_jpeg(tmp_path / "photos" / "p.jpg", seed=3)
    result = tagwatch("scan", "--config", str(config), str(photo))
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == f"tagwatch: error: {refused.value}"
    assert exif_keywords(photo) == {"iptc": [], "xmp": []}
    # the same text under a .toml name is the rich list it is
    renamed = tags.with_suffix(".toml")
    renamed.write_text(rich, encoding="utf-8")
    assert load_vocabulary(renamed, TEMPLATES).keywords == ["Polizei"]


def test_a_pipe_in_a_plain_keyword_is_refused_with_its_line(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """`Shapes|circle` (typed from a Lightroom or digiKam export) was written verbatim: a pipe in
    IPTC Keywords and dc:subject, and a level `Shapes` that is no tag in lr:hierarchicalSubject.  It is
    refused as a .toml list refuses it, naming the file and line: by `tags check`, by a scan (which
    writes nothing) and by the daemon at its start, each in one line."""
    config = write_config(tmp_path / "conf", tiny_checkpoint, tags=["beach", "Shapes|circle"],
                          watch=[tmp_path / "photos"])
    tags = tmp_path / "conf" / "tags.txt"
    reason = (f"{tags}:2: keyword 'Shapes|circle' contains '|', which separates the levels of a "
              "hierarchical keyword; a plain list holds one keyword per line: write 'circle' alone")
    photo = noise_jpeg(tmp_path / "photos" / "p.jpg", seed=3)
    for command in (("tags", "check", "--config", str(config), str(tags)),
                    ("scan", "--config", str(config), str(photo)),
                    ("run", "--config", str(config))):
        result = tagwatch(*command)
        assert result.returncode == 2, (command, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert result.stderr.startswith(f"tagwatch: error: {reason}"), result.stderr
    assert exif_keywords(photo) == {"iptc": [], "xmp": []}
