"""The tag-list side of the command line, as a person meets it: naming a tag (`explain --tag`) or a
list (`--tags`) the way they think of it, and `tags check` output a person can read to its end.

The shapes lab (``shapes_lab.py``) has every vector and prompt cached, so no command here starts the
model.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from conftest import tagwatch
from tagwatch.config import builtin_tag_list


def run(lab: Any, *args: str) -> Any:
    return tagwatch(*args, "--config", str(lab.config))


def test_explain_finds_a_tag_named_in_another_case_and_hints_at_a_typo(shapes_lab: Any) -> None:
    """A list's keywords are one tag whatever their case, yet `explain --tag RED` said
    `'RED': not in the tag list`, and gave no hint, where calibrate gives one."""
    photo = str(shapes_lab.library / "red-circle.jpg")
    upper = run(shapes_lab, "explain", "--tag", "RED", "--tag", "Circle", photo)
    assert upper.returncode == 0, upper.stderr
    lines = [line for line in upper.stdout.splitlines()[1:] if not line.startswith("not tagged yet: ")]
    assert [line.split()[2] for line in lines] == ["red", "circle"]
    assert all("TAGGED" in line for line in lines)

    typo = run(shapes_lab, "explain", "--tag", "Rde", photo)
    assert typo.returncode == 2
    assert typo.stderr.strip().endswith("'Rde': not in the tag list "
                                        f"{shapes_lab.config.parent / 'tags.txt'} (did you mean 'red'?)")


def test_a_missing_tag_list_named_like_a_built_in_one_names_the_built_in_lists(shapes_lab: Any) -> None:
    """`--tags photo_tags` said only `…/photo_tags: tag list does not exist`: the built-in list is
    `photo-tags`, named without a path."""
    photo = str(shapes_lab.library / "red-circle.jpg")
    near = run(shapes_lab, "scan", "--dry-run", "--tags", "photo_tags", photo)
    assert near.returncode == 2
    assert near.stderr.strip().endswith("/photo_tags: tag list does not exist (did you mean the built-in "
                                        "list 'photo-tags'? the built-in lists are photo-tags and "
                                        "imagenet-1k)"), near.stderr
    far = run(shapes_lab, "scan", "--dry-run", "--tags", "holiday.txt", photo)
    assert far.returncode == 2
    assert far.stderr.strip().endswith("/holiday.txt: tag list does not exist (the built-in lists, named "
                                       "without a path, are photo-tags and imagenet-1k)"), far.stderr


def test_tags_check_takes_a_built_in_lists_name(shapes_lab: Any) -> None:
    """`tags check photo-tags` answered "tag list does not exist (did you mean the built-in list
    'photo-tags'?)": the name it was given, taken by the config's `tags` and --tags."""
    result = run(shapes_lab, "tags", "check", "imagenet-1k", "--pairs", "1")
    assert result.returncode == 0, result.stderr
    listed = builtin_tag_list("imagenet-1k")
    assert result.stdout.startswith(f"{listed}: 999 tags, 999 prompts"), result.stdout


SAME = "".join(f'[[tag]]\nkeyword = "red {i}"\nprompts = ["a photo of a red."]\n\n' for i in range(8))


def test_tags_check_lists_the_closest_pairs_and_counts_the_rest(shapes_lab: Any, tmp_path: Path) -> None:
    """Every near-duplicate pair was printed: 33,125 lines for the photo vocabulary under the test
    model.  The 20 most similar are listed, then how many more, and `--pairs 0` lists them all."""
    tags = tmp_path / "same.toml"
    tags.write_text(SAME, encoding="utf-8")  # 8 tags with one prompt: 28 pairs, each cosine 1
    pair = re.compile(r"^  1\.0000  red \d  ~  red \d$")
    checked = run(shapes_lab, "tags", "check", str(tags))
    assert checked.returncode == 0, checked.stderr
    lines = checked.stdout.splitlines()
    assert any(line.startswith("near-duplicates: 28 pairs of tags") for line in lines)
    assert sum(bool(pair.match(line)) for line in lines) == 20
    assert lines[-1] == "  ... and 8 more pairs (--pairs 0 lists them all)"
    every = run(shapes_lab, "tags", "check", "--pairs", "0", str(tags)).stdout.splitlines()
    assert sum(bool(pair.match(line)) for line in every) == 28 and "more pairs" not in every[-1]
