"""``tagwatch tags check``: validation with line numbers, and near-duplicate tags found from the
configured model's text vectors (cached in the store, encoded only once)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from conftest import TINY_CONFIG, tagwatch, write_config
from tagwatch.config import ModelConfig
from tagwatch.model import model_identity
from tagwatch.store import Store
from tagwatch.vocabulary import load_vocabulary

LIST = """\
templates = ["a photo of a {}.", "a picture of a {}."]

[[tag]]
keyword = "dog"

[[tag]]
keyword = "puppy"            # the same prompts as dog: they will always fire together
prompts = ["a photo of a dog.", "a picture of a dog."]

[[tag]]
keyword = "beach"

[[tag]]
keyword = "forest"
synonyms = ["woods"]

[[tag]]
keyword = "Ünïcödé tag"

[[tag]]
keyword = "beach"            # a duplicate: reported, the first one is used
"""
PAIR = re.compile(r"^  (\d\.\d{4})  (.+)  ~  (.+)$")


def expected_pairs(path: Path, database: Path, checkpoint: Path) -> set[tuple[str, str]]:
    """Near-duplicates worked out here from the cached prompt vectors (mean of unit vectors)."""
    vocabulary = load_vocabulary(path, ("a photo of a {}.",))
    store = Store(database)
    try:
        identity = model_identity(ModelConfig(name=str(TINY_CONFIG), pretrained=str(checkpoint)))
        cached = store.text_vectors(vocabulary.prompts(), identity)
    finally:
        store.close()
    assert len(cached) == len(vocabulary.prompts())  # every prompt was encoded and cached

    def unit(v: np.ndarray) -> np.ndarray:
        v = np.asarray(v, np.float64)
        return v / np.linalg.norm(v)

    vectors = [unit(np.mean([unit(cached[p]) for p in tag.prompts], axis=0)) for tag in vocabulary.tags]
    words = vocabulary.keywords
    return {(words[i], words[j]) for i in range(len(words)) for j in range(i + 1, len(words))
            if vectors[i] @ vectors[j] >= 0.95 - 1e-5}


def test_check_reports_near_duplicates_and_encodes_each_prompt_once(tmp_path: Path,
                                                                     tiny_checkpoint: Path) -> None:
    config = write_config(tmp_path / "conf", tiny_checkpoint)
    tags = tmp_path / "conf" / "rich.toml"
    tags.write_text(LIST, encoding="utf-8")
    result = tagwatch("tags", "check", "--config", str(config), str(tags))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"warning: {tags}:20: duplicate tag 'beach' (first on line 10); used once"
    assert lines[1] == (f"{tags}: 5 tags, 10 prompts (10 encoded now, 0 cached), 0 with their own "
                        "threshold, 0 with a parent")
    reported = {(m.group(2), m.group(3)) for m in map(PAIR.match, lines) if m}
    assert ("dog", "puppy") in reported
    assert re.search(r"^  1\.0000  dog  ~  puppy$", result.stdout, re.MULTILINE)
    assert reported == expected_pairs(tags, tmp_path / "conf" / "state" / "tagwatch.db", tiny_checkpoint)

    again = tagwatch("tags", "check", "--config", str(config), str(tags))
    assert "(0 encoded now, 10 cached)" in again.stdout  # the store's text vectors were reused
    assert again.stdout.splitlines()[2:] == lines[2:]


def test_check_fails_with_one_line_naming_the_line(tmp_path: Path, tiny_checkpoint: Path) -> None:
    config = write_config(tmp_path / "conf", tiny_checkpoint)
    bad = tmp_path / "conf" / "bad.toml"
    bad.write_text('[[tag]]\nkeyword = "dog"\n\n[[tag]]\nkeyword = "golden retriever"\nparent = "dgo"\n')
    result = tagwatch("tags", "check", "--config", str(config), str(bad))
    assert result.returncode == 2
    assert result.stderr.strip() == (f"tagwatch: error: {bad}:4: parent 'dgo' of 'golden retriever' is not a "
                                     "keyword in this list")
    assert result.stdout == ""
