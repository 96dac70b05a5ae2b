"""Calibration: F1-best per-tag thresholds from example folders, written into the tag list.

Unit tests on constructed scores check the numbers; CLI tests run `tagwatch calibrate` on real JPEGs
with the tiny model, and the end-to-end test checks that the next `tagwatch scan` writes different
keywords into a real file because of it.
"""

from __future__ import annotations

import json
import re
import shutil
import stat
import tomllib
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import TAGS, exif_keywords, exiftool_read, noise_jpeg, tagwatch, write_config
from tagwatch.atomic import write_atomic
from tagwatch.calibrate import (
    BELOW_ZERO,
    CalibrationError,
    calibrate,
    doubts,
    kept_line,
    labels,
    read_examples,
    render_table,
    rich_from_plain,
    set_thresholds,
    to_write,
)
from tagwatch.scoring import (
    average_precision,
    best_threshold,
    choose,
    counts,
    mean_average_precision,
    tag_thresholds,
)

# -- metrics -------------------------------------------------------------------------------------


def test_best_threshold_maximises_f1_in_the_middle_of_the_widest_gap() -> None:
    scores = np.array([0.5, 0.45, 0.4, 0.1], np.float32)
    truth = np.array([True, False, True, False])
    # cut below 0.5: F1 2/3; below 0.45: 1/2; below 0.4: 4/5 (best); below 0.1: 2/3
    threshold, f1 = best_threshold(scores, truth)
    assert f1 == pytest.approx(0.8)
    assert threshold == 0.25  # the middle of (0.1, 0.4), as a short decimal
    assert ((scores > threshold) == [True, True, True, False]).all()


def test_best_threshold_separates_close_scores_exactly_in_float32() -> None:
    low, high = np.float32(0.2500001), np.float32(0.2500003)
    threshold, f1 = best_threshold(np.array([high, low]), np.array([True, False]))
    assert f1 == 1.0
    assert np.float32(high) > np.float32(threshold) >= np.float32(low)


def test_equal_scores_are_never_split() -> None:
    threshold, f1 = best_threshold(np.array([0.3, 0.3, 0.1], np.float32), np.array([True, False, False]))
    assert f1 == pytest.approx(2 / 3)  # the two 0.3s go together
    assert 0.1 < threshold < 0.3


def test_average_precision_of_a_known_ranking() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    assert average_precision(scores, np.array([1, 0, 1, 0])) == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert average_precision(scores, np.array([0, 0, 0, 1])) == pytest.approx(1 / 4)
    assert average_precision(scores, np.array([0, 0, 0, 0])) is None
    table = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3]])
    mean, per_tag = mean_average_precision(table, np.array([[1, 0], [0, 0], [0, 0]], bool))
    assert per_tag == [1.0, None] and mean == 1.0  # a tag without positives is not averaged


def test_choose_honours_per_tag_thresholds_and_top_k() -> None:
    scores = np.array([[0.30, 0.26, 0.40, 0.10]], np.float32)
    assert choose(scores, 0.25, 10) == [[2, 0, 1]]  # one global threshold: the daemon's selection
    assert choose(scores, np.array([0.35, 0.2, 0.5, 0.0], np.float32), 10) == [[1, 3]]
    assert choose(scores, np.array([0.35, 0.2, 0.5, 0.0], np.float32), 1) == [[1]]


@dataclass(frozen=True)
class FakeTag:
    """What calibrate reads from a tag list entry (a rich list's tag has these attributes)."""

    keyword: str
    threshold: float | None = None
    parent: str | None = None


def test_before_and_after_numbers_on_a_constructed_case(tmp_path: Path) -> None:
    keywords = ["beach", "forest", "city"]
    folders = {"beach": ["b1", "b2"], "forest": ["f1"], "none": ["n1", "n2"]}
    data = labels(folders, keywords, {}, tmp_path)
    assert data.pictures == ["b1", "b2", "f1", "n1", "n2"] and data.columns == [0, 1]
    #                  beach  forest  city
    scores = np.array([[0.30, 0.10, 0.5],   # b1
                       [0.26, 0.12, 0.5],   # b2
                       [0.27, 0.31, 0.5],   # f1
                       [0.20, 0.33, 0.5],   # n1
                       [0.10, 0.05, 0.5]],  # n2
                      np.float32)
    tags = [FakeTag("beach", threshold=0.28), FakeTag("forest"), FakeTag("city")]
    results = calibrate(scores, data, keywords, tag_thresholds(tags, 0.25))
    beach, forest = results
    # beach before, own threshold 0.28: only b1 passes -> precision 1, recall 1/2
    assert (beach.before, beach.positives, beach.negatives) == (0.28, 2, 3)
    assert (beach.before_counts.tp, beach.before_counts.fp, beach.before_counts.fn) == (1, 0, 1)
    # after: the best cut takes b1, f1 and b2 (F1 0.8), between n1 0.20 and b2 0.26
    assert beach.after == 0.23
    assert (beach.after_counts.tp, beach.after_counts.fp, beach.after_counts.fn) == (2, 1, 0)
    assert beach.after_counts.precision == pytest.approx(2 / 3) and beach.after_counts.recall == 1.0
    # forest before, global 0.25: f1 and n1 pass -> precision 1/2; after: above n1 is impossible
    # without losing f1, so the best is the same cut at F1 2/3, in the middle of its gap
    assert (forest.before_counts.tp, forest.before_counts.fp, forest.before_counts.fn) == (1, 1, 0)
    assert forest.after_counts.f1 == pytest.approx(2 / 3)
    assert 0.12 < forest.after < 0.31
    table = render_table(results)
    row = next(line for line in table.splitlines() if line.startswith("beach"))
    assert row.split() == ["beach", "2", "3", "0.28", "0.23", "100%", "67%", "50%", "100%", "67%", "80%"]


def test_a_threshold_below_zero_is_not_written_and_one_from_few_examples_is_doubted(tmp_path: Path) -> None:
    """Three circles, one scoring -0.11 (the model does not see a circle in it), and two squares far
    below: circle's F1-best threshold was -0.12, F1 100%, written, and squares scoring above it got
    circle.  A threshold below 0 is not written, and a warning says why and what to do; a threshold
    that is written from fewer than 5 positives or negatives is said to be a guess."""
    keywords = ["circle", "square"]
    folders = {"circle": ["c1", "c2", "c3"], "square": ["s1", "s2"]}
    data = labels(folders, keywords, {}, tmp_path)
    #                   circle  square
    scores = np.array([[0.62, 0.05],    # c1
                       [0.58, 0.02],    # c2
                       [-0.11, 0.01],   # c3: a circle the model does not see
                       [-0.20, 0.60],   # s1
                       [-0.30, 0.64]],  # s2
                      np.float32)
    tags = [FakeTag("circle"), FakeTag("square", threshold=0.62)]  # square misses s1 at 0.62
    circle, square = calibrate(scores, data, keywords, tag_thresholds(tags, 0.45))
    assert circle.after < 0 and circle.after_counts.f1 == 1.0 and circle.kept == BELOW_ZERO
    assert to_write([circle, square]) == {"square": square.after}
    assert kept_line([circle, square]) == (f"left at the threshold they have: circle ({circle.after:g} "
                                           "calibrated: below 0, not written)")
    assert render_table([circle]).splitlines()[2].endswith("kept: below 0, not written")
    said = doubts(circle, tmp_path)
    assert said is not None and said.startswith(f"'circle': calibrated to {circle.after:g}, below 0, and "
                                                "not written (it keeps 0.45)")
    assert f"take it out of {tmp_path / 'circle'}, or add more examples" in said
    said = doubts(square, tmp_path)  # 2 positives, 3 negatives: written, and said to be a guess
    assert said == (f"'square': its threshold {square.after:g} comes from 2 positives and 3 negatives, "
                    "too few to trust (F1 100% on so few says little about your other photos); add "
                    f"examples, 10 or more of each (photos that should get it in {tmp_path / 'square'}, "
                    f"that should not in {tmp_path / 'none'}), and calibrate again")
    many = {"circle": [f"c{i}" for i in range(5)], "none": [f"n{i}" for i in range(5)]}
    wide = np.array([[0.6 - i / 100] for i in range(5)] + [[0.1 - i / 100] for i in range(5)], np.float32)
    (enough,) = calibrate(wide, labels(many, ["circle"], {}, tmp_path), ["circle"], np.array([0.58]))
    assert not enough.kept and doubts(enough, tmp_path) is None


CAL_TAGS = """\
[[tag]]
keyword = "circle"

[[tag]]
keyword = "red"

[[tag]]
keyword = "beach"
"""


def test_calibrate_writes_only_thresholds_that_change_and_improve_as_the_review_page_does(
        tmp_path: Path) -> None:
    """`calibrate` wrote `threshold = 0.36` under a tag whose calibrated value was the global 0.36 it
    followed, pinning it there (the review page writes nothing for an unchanged value), and moved red
    from 0.36 to 0.4 at the same F1.  Now both keep the threshold they have, the table and a line
    say why, and only a threshold that does better on the examples is written."""
    from tagwatch.cli.calibrate import Calibration, write
    from tagwatch.config import Config, TaggingConfig

    keywords = ["circle", "red", "beach"]
    folders = {"circle": ["c1", "c2"], "red": ["r1"], "beach": ["b1"], "none": ["n1", "n2"]}
    data = labels(folders, keywords, {}, tmp_path)
    #                  circle  red   beach
    scores = np.array([[0.50, 0.10, 0.10],   # c1
                       [0.60, 0.10, 0.10],   # c2
                       [0.10, 0.70, 0.10],   # r1: red is perfect at 0.36 already (F1 100%)
                       [0.10, 0.10, 0.30],   # b1: beach misses it at 0.36
                       [0.22, 0.10, 0.10],   # n1: circle's widest gap is (0.22, 0.50): 0.36
                       [0.20, 0.10, 0.10]],  # n2
                      np.float32)
    tags = [FakeTag(k) for k in keywords]
    results = calibrate(scores, data, keywords, tag_thresholds(tags, 0.36))
    assert [(r.keyword, r.after, r.kept) for r in results] == [
        ("circle", 0.36, "its threshold already"), ("red", 0.4, "F1 no better"), ("beach", 0.2, "")]
    table = {line.split()[0]: line for line in render_table(results).splitlines()[2:]}
    assert table["circle"].endswith("kept: its threshold already")
    assert table["red"].endswith("kept: F1 no better") and not table["beach"].endswith("better")

    listed = tmp_path / "tags.toml"
    listed.write_text(CAL_TAGS, encoding="utf-8")
    config = Config(tags=listed, tagging=TaggingConfig(threshold=0.36), source=tmp_path / "config.toml")
    said = write(config, Calibration(results, keywords, 6, 6, 0))
    assert said == f"wrote 1 threshold into {listed}"
    assert listed.read_text(encoding="utf-8") == CAL_TAGS.replace(
        'keyword = "beach"\n', 'keyword = "beach"\nthreshold = 0.2\n')  # circle and red still follow 0.36
    only_kept = [r for r in results if r.kept]
    listed.write_text(CAL_TAGS, encoding="utf-8")
    assert write(config, Calibration(only_kept, keywords, 6, 6, 0)).startswith("nothing written")
    assert listed.read_text(encoding="utf-8") == CAL_TAGS


def test_a_twin_already_there_names_the_tags_line_that_would_use_it(tmp_path: Path) -> None:
    """The second `calibrate` of a .txt list kept outside the config's folder said `set tags =
    "plain.toml"`, a file the config's folder does not hold, while the first run's success message
    gave the whole path.  Both now give the line that names the twin from the config's folder."""
    from tagwatch.calibrate import save_thresholds
    from tagwatch.config import Config

    conf, lists = tmp_path / "conf", tmp_path / "lists"
    for folder in (conf, lists):
        folder.mkdir()
        (folder / "plain.txt").write_text("red\n", encoding="utf-8")
        (folder / "plain.toml").write_text('[[tag]]\nkeyword = "red"\n', encoding="utf-8")
    elsewhere = Config(tags=lists / "plain.txt", source=conf / "config.toml")
    with pytest.raises(CalibrationError) as refused:
        save_thresholds(elsewhere, ["red"], {"red": 0.3})
    twin = lists / "plain.toml"
    assert str(refused.value) == (f'{twin} already exists; set tags = "{twin}" in the config to calibrate '
                                  "it, or move it away")
    beside = Config(tags=conf / "plain.txt", source=conf / "config.toml")
    with pytest.raises(CalibrationError, match=r'; set tags = "plain\.toml" in the config'):
        save_thresholds(beside, ["red"], {"red": 0.3})


def test_a_child_tags_examples_say_nothing_about_its_parent(tmp_path: Path) -> None:
    keywords = ["animal", "dog", "golden retriever"]
    ancestors = {"golden retriever": ("animal", "dog"), "dog": ("animal",)}
    folders = {"golden retriever": ["g1"], "dog": ["d1", "g1"], "none": ["n1"]}
    data = labels(folders, keywords, ancestors, tmp_path)
    g1, d1, n1 = (data.pictures.index(p) for p in ("g1", "d1", "n1"))
    assert data.truth[g1].tolist() == [False, True, True]
    assert data.considered[g1].tolist() == [False, True, True]  # not a negative of animal
    assert data.considered[d1].tolist() == [False, True, True]
    assert data.considered[n1].all() and not data.truth[n1].any()
    assert counts(data.truth, data.truth, data.considered)[0].tp == 0


def test_a_folder_that_names_no_tag_is_an_error_with_a_hint(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match=r"/beech: no tag with the keyword 'beech' in the tag list "
                                               r"\(did you mean 'beach'\?\)"):
        labels({"beech": ["x"]}, ["beach", "forest"], {}, tmp_path)
    # the keyword the folder's name begins comes first (difflib's ratio alone said 'triangle')
    with pytest.raises(CalibrationError, match=r"\(did you mean 'orange, \"tangerine\"'"):
        labels({"orange": ["x"]}, ["triangle", 'orange, "tangerine"'], {}, tmp_path)


def test_read_examples_finds_photos_and_skips_hidden(tmp_path: Path) -> None:
    noise_jpeg(tmp_path / "beach" / "a.jpg", seed=1)
    noise_jpeg(tmp_path / "beach" / "more" / "b.JPG", seed=2)
    noise_jpeg(tmp_path / "beach" / ".hidden.jpg", seed=3)
    (tmp_path / "beach" / "notes.txt").write_text("not a photo")
    noise_jpeg(tmp_path / ".trash" / "c.jpg", seed=4)
    (tmp_path / "none").mkdir()
    folders = read_examples(tmp_path)
    beach = tmp_path / "beach"
    assert folders == {"beach": [str(beach / "a.jpg"), str(beach / "more" / "b.JPG")], "none": []}
    with pytest.raises(CalibrationError, match="holds no example folders"):
        read_examples(tmp_path / "none")


# -- editing the tag list ------------------------------------------------------------------------

RICH = """\
# My tags.  Calibrated thresholds land in each [[tag]] table.
templates = ["a photo of a {}.", "a picture of a {}."]

[[tag]]
keyword = "beach"          # sand and sea
prompts = [
  "a photo of a beach.",
  "sand, sea and sky.",
]

[[tag]]
# the forest was too eager
keyword = "forest"
threshold = 0.3            # hand-tuned
parent = "nature"

[[tag]]
keyword = "nature"
"""


def test_thresholds_are_replaced_or_inserted_and_everything_else_survives(tmp_path: Path) -> None:
    source = tmp_path / "tags.toml"
    text = set_thresholds(RICH, {"beach": 0.2712, "forest": 0.23}, source)
    doc = tomllib.loads(text)
    assert [(t["keyword"], t.get("threshold")) for t in doc["tag"]] == [
        ("beach", 0.2712), ("forest", 0.23), ("nature", None)]
    assert doc["tag"][0]["prompts"] == ["a photo of a beach.", "sand, sea and sky."]
    assert doc["tag"][1]["parent"] == "nature"
    old, new = RICH.splitlines(), text.splitlines()
    assert new[new.index('keyword = "beach"          # sand and sea') + 1] == "threshold = 0.2712"
    assert "threshold = 0.23            # hand-tuned" in new  # the comment on the line stays
    assert [line for line in new if not line.startswith("threshold")] == [
        line for line in old if not line.startswith("threshold")]  # nothing else moved or changed
    # editing again replaces, never duplicates
    again = set_thresholds(text, {"beach": 0.3}, source)
    assert again.count("threshold = ") == 2 and tomllib.loads(again)["tag"][0]["threshold"] == 0.3


def test_windows_line_endings_and_a_last_line_without_newline(tmp_path: Path) -> None:
    text = '[[tag]]\r\nkeyword = "a"\r\n\r\n[[tag]]\r\nkeyword = "b"'
    result = set_thresholds(text, {"b": 0.5, "a": 0.1}, tmp_path / "t.toml")
    assert result == ('[[tag]]\r\nkeyword = "a"\r\nthreshold = 0.1\r\n\r\n'
                      '[[tag]]\r\nkeyword = "b"\r\nthreshold = 0.5\r\n')


def test_a_keyword_written_with_extra_spaces_is_found_and_a_missing_one_is_an_error(tmp_path: Path) -> None:
    text = '[[tag]]\nkeyword = " golden   retriever "\n'
    assert tomllib.loads(set_thresholds(text, {"golden retriever": 0.2}, tmp_path / "t.toml"))["tag"][0][
        "threshold"] == 0.2
    with pytest.raises(CalibrationError, match=r"no \[\[tag\]\] table with keyword 'dog'"):
        set_thresholds(text, {"dog": 0.2}, tmp_path / "t.toml")


def test_a_layout_it_cannot_edit_safely_is_refused_with_the_values(tmp_path: Path) -> None:
    inline = 'tag = [{ keyword = "a" }]\n'
    with pytest.raises(CalibrationError, match=r"cannot find one \[\[tag\]\] line per tag table"):
        set_thresholds(inline, {"a": 0.2}, tmp_path / "t.toml")
    quoted = '[[tag]]\nkeyword = "a"\n"threshold" = 0.4\n'  # a key style the text edit does not know
    with pytest.raises(CalibrationError, match=r"set them by hand: 'a': threshold = 0.2"):
        set_thresholds(quoted, {"a": 0.2}, tmp_path / "t.toml")


def test_plain_list_becomes_a_rich_list_with_the_same_tags(tmp_path: Path) -> None:
    keywords = ['say "cheese"', "back\\slash", "日本語", "Ünïcödé tag"]
    text = rich_from_plain(keywords, {"日本語": 0.21}, tmp_path / "tags.txt")
    doc = tomllib.loads(text)
    assert [t["keyword"] for t in doc["tag"]] == keywords
    assert [t.get("threshold") for t in doc["tag"]] == [None, None, 0.21, None]


def test_write_atomic_keeps_the_mode_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "tags.toml"
    path.write_text("old\n")
    path.chmod(0o640)
    link = tmp_path / "link.toml"
    link.symlink_to(path)
    write_atomic(link, "new\n")
    assert link.is_symlink() and path.read_text() == "new\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.toml", "tags.toml"]


# -- the command -------------------------------------------------------------------------------

def _examples(root: Path) -> Path:
    """beach/ and forest/ with two example photos each, none/ with three."""
    for i in range(2):
        noise_jpeg(root / "beach" / f"b{i}.jpg", seed=100 + i)
        noise_jpeg(root / "forest" / f"f{i}.jpg", seed=200 + i)
    for i in range(3):
        noise_jpeg(root / "none" / f"n{i}.jpg", seed=300 + i)
    return root


def _table(stdout: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split()[1:] for line in stdout.splitlines()
            if line.split() and line.split()[0] in TAGS}


def test_calibrate_a_plain_list_writes_a_rich_twin_and_says_how_to_use_it(tmp_path: Path,
                                                                          config_file) -> None:
    config = config_file(threshold=0.25)
    examples = _examples(tmp_path / "examples")
    result = tagwatch("calibrate", str(examples), "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "7 example photos (7 encoded now, the rest from the cache)" in result.stdout
    rows = _table(result.stdout)
    assert set(rows) == {"beach", "forest"}
    for row in rows.values():
        positives, negatives, before = int(row[0]), int(row[1]), float(row[2])
        assert (positives, negatives, before) == (2, 5, 0.25)
        f1_before, f1_after = (float(x.rstrip("%")) for x in row[8:10])
        assert f1_after >= f1_before  # the old threshold was one of the cuts it chose from
    twin = config.parent / "tags.toml"
    doc = tomllib.loads(twin.read_text(encoding="utf-8"))
    assert [t["keyword"] for t in doc["tag"]] == TAGS
    thresholds = {t["keyword"]: t.get("threshold") for t in doc["tag"]}
    assert thresholds == {**dict.fromkeys(TAGS), "beach": float(rows["beach"][3]),
                          "forest": float(rows["forest"][3])}
    assert 'tags = "tags.toml"' in result.stdout
    assert (config.parent / "tags.txt").read_text(encoding="utf-8") == "\n".join(TAGS) + "\n"

    dry = tagwatch("calibrate", "--dry-run", str(examples), "--config", str(config))
    assert dry.returncode == 0, dry.stderr
    assert "(0 encoded now" in dry.stdout and "dry run: the tag list was not changed" in dry.stdout
    again = tagwatch("calibrate", str(examples), "--config", str(config))
    assert again.returncode == 2 and f"{twin} already exists" in again.stderr

    (examples / "beech").mkdir()
    typo = tagwatch("calibrate", "--dry-run", str(examples), "--config", str(config))
    assert typo.returncode == 2
    assert typo.stderr.strip() == (f"tagwatch: error: {examples / 'beech'}: no tag with the keyword 'beech' "
                                   "in the tag list (did you mean 'beach'?)")


HIERARCHY = """\
[[tag]]
keyword = "pet"

[[tag]]
keyword = "dog"
parent = "pet"

[[tag]]
keyword = "golden retriever"
parent = "dog"
"""


def test_calibrate_from_the_command_line_counts_no_child_example_as_a_negative_of_its_ancestors(
        shapes_lab: Any, tmp_path: Path) -> None:
    """A photo of a golden retriever is also a dog and a pet: it must not count against them.
    (The command once read a ``parent`` attribute the tags do not have, so every child example was
    counted as a negative of its parent and grandparent.)  Only the folders matter here, not what
    the photos show: six different pictures (copies of one would be one picture)."""
    hierarchy = tmp_path / "tags.toml"
    hierarchy.write_text(HIERARCHY, encoding="utf-8")
    examples = tmp_path / "examples"
    seed = 4100
    for name, count in {"pet": 1, "dog": 2, "golden retriever": 1, "none": 2}.items():
        for i in range(count):
            seed += 1
            noise_jpeg(examples / name / f"{i}.jpg", seed=seed)
    result = tagwatch("calibrate", "--dry-run", "--tags", str(hierarchy), str(examples),
                      "--config", str(shapes_lab.config))
    assert result.returncode == 0, result.stderr
    assert "6 example photos (" in result.stdout
    rows = {keyword: re.split(r"\s{2,}", line.strip())[1:3] for line in result.stdout.splitlines()
            for keyword in ("pet", "dog", "golden retriever") if line.startswith(keyword + " ")}
    # positives, negatives: pet's negatives are none/ only; dog's are pet/ and none/
    assert rows == {"pet": ["1", "2"], "dog": ["2", "3"], "golden retriever": ["1", "5"]}


def test_the_same_picture_in_two_folders_is_a_positive_of_both_and_counted_once(
        shapes_lab: Any, tmp_path: Path) -> None:
    """The docs say the same photo in two folders is a positive for both; examples were keyed by path,
    so a red circle copied into red/ and circle/ was also a negative of each other tag: red had 3
    negatives and 50% precision where every red prediction is a red photo.  A copy is the same
    picture (its content key, as the cache knows): a positive of both, a negative of neither, once."""
    examples = tmp_path / "examples"
    for folder, photo, name in (("red", "red-circle.jpg", "a.jpg"), ("circle", "red-circle.jpg", "b.jpg"),
                                ("none", "blue-square.jpg", "c.jpg"),
                                ("none", "green-triangle.jpg", "d.jpg")):
        (examples / folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(shapes_lab.library / photo, examples / folder / name)
    result = shapes_lab.run("calibrate", "--dry-run", str(examples))
    assert "4 example photos: 3 pictures, copies counted once (0 encoded now" in result.stdout
    rows = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()
            if line.startswith(("red ", "circle "))}
    assert set(rows) == {"red", "circle"}
    for row in rows.values():  # pos, neg, threshold before; precision, recall and F1 before and after
        assert row[:3] + row[4:10] == ["1", "2", "0.45"] + ["100%"] * 6


def test_a_picture_filed_under_a_tag_and_under_none_is_said_and_counted_for_the_tag(
        shapes_lab: Any, tmp_path: Path) -> None:
    """A copy of a red circle in red/ and in none/ counted as red's example without a word: the
    person meant one of the two, and the counts hid which was taken."""
    examples = tmp_path / "examples"
    for folder, photo, name in (("red", "red-circle.jpg", "a.jpg"), ("none", "red-circle.jpg", "b.jpg"),
                                ("none", "blue-square.jpg", "c.jpg")):
        (examples / folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(shapes_lab.library / photo, examples / folder / name)
    result = shapes_lab.run("calibrate", "--dry-run", str(examples))
    assert (f"{examples / 'none' / 'b.jpg'}: the same picture is in red/ too: counted as an example of red, "
            "not of a photo that should get no tag") in result.stderr, result.stderr
    assert "c.jpg" not in result.stderr
    (row,) = [line.split()[1:3] for line in result.stdout.splitlines() if line.startswith("red ")]
    assert row == ["1", "1"]  # the red circle a positive, the blue square its negative


def test_folders_name_tags_as_keywords_are_compared_decomposed_or_in_another_case(
        shapes_lab: Any, tmp_path: Path) -> None:
    """A folder a Mac or an SMB share wrote decomposed (E + U+0301) was refused with a message naming
    the same-looking keyword twice ('no tag with the keyword 'Étoile' … did you mean 'Étoile'?').
    Folder names are compared as tagwatch compares keywords: normalisation and case aside."""
    tags = tmp_path / "tags.txt"
    tags.write_text("Étoile\nred\n", encoding="utf-8")
    decomposed = unicodedata.normalize("NFD", "Étoile")
    assert decomposed != "Étoile"
    examples = tmp_path / "examples"
    for folder, photo in ((decomposed, "green-triangle.jpg"), ("RED", "red-circle.jpg"),
                          ("None", "blue-square.jpg")):
        (examples / folder).mkdir(parents=True)
        shutil.copy(shapes_lab.library / photo, examples / folder)
    result = shapes_lab.run("calibrate", "--dry-run", "--tags", str(tags), str(examples))
    rows = {line.split()[0]: line.split()[1:3] for line in result.stdout.splitlines()
            if line.startswith(("Étoile ", "red "))}
    assert rows == {"Étoile": ["1", "2"], "red": ["1", "2"]}  # the list's spelling; None/ holds negatives


TAGS_TOML = """\
# Holiday tags (this comment must survive calibration)
[[tag]]
keyword = "beach"   # sand and sea

[[tag]]
keyword = "forest"
threshold = 0.97    # far too strict, and no examples: calibrate leaves it

[[tag]]
keyword = "mountain"
"""


def test_calibrate_changes_the_keywords_the_next_scan_writes(tmp_path: Path, tiny_checkpoint: Path) -> None:
    conf = tmp_path / "conf"
    # threshold 1.0: no cosine is above it, so before calibration no tag is written at all
    config = write_config(conf, tiny_checkpoint, tags=["unused"], threshold=1.0, top_k=3)
    config.write_text(config.read_text(encoding="utf-8").replace('tags = "tags.txt"', 'tags = "tags.toml"'),
                      encoding="utf-8")
    (conf / "tags.toml").write_text(TAGS_TOML, encoding="utf-8")
    photo = noise_jpeg(tmp_path / "lib" / "holiday.jpg", seed=7)
    first = tagwatch("scan", "--config", str(config), str(photo))
    assert first.returncode == 0, first.stderr
    assert exif_keywords(photo)["iptc"] == []

    # The holiday photo (a copy) is the one beach example, so beach's F1-best threshold lies just
    # below its score whatever the random model scores; three other photos are negatives.
    examples = tmp_path / "examples"
    (examples / "beach").mkdir(parents=True)
    shutil.copyfile(photo, examples / "beach" / "copy.jpg")
    for i in range(3):
        noise_jpeg(examples / "none" / f"n{i}.jpg", seed=300 + i)
    result = tagwatch("calibrate", str(examples), "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "4 example photos (3 encoded now" in result.stdout  # the holiday photo's came from the cache
    text = (conf / "tags.toml").read_text(encoding="utf-8")
    assert "# Holiday tags (this comment must survive calibration)" in text
    assert 'keyword = "beach"   # sand and sea' in text
    assert "threshold = 0.97    # far too strict, and no examples: calibrate leaves it" in text
    doc = tomllib.loads(text)
    beach = float(re.search(r"^beach .*$", result.stdout, re.M).group(0).split()[4])
    assert [t.get("threshold") for t in doc["tag"]] == [beach, 0.97, None]

    second = tagwatch("scan", "--config", str(config), str(photo))
    assert second.returncode == 0, second.stderr
    assert exif_keywords(photo) == {"iptc": ["beach"], "xmp": ["beach"]}


def _written(photo: Path) -> dict[str, list[str]]:
    """The keywords and hierarchical keywords exiftool reads back from ``photo``."""
    out = exiftool_read("-j", "-charset", "iptc=UTF8", "-IPTC:Keywords", "-XMP-dc:Subject",
                        "-XMP-lr:HierarchicalSubject", str(photo))
    record = json.loads(out)[0]
    return {key: sorted(map(str, value if isinstance(value, list) else [value]))
            for key in ("Keywords", "Subject", "HierarchicalSubject") if (value := record.get(key))}


def test_the_rich_twin_of_a_plain_list_writes_the_same_keywords_under_the_same_paths(
        shapes_lab: Any, tmp_path: Path) -> None:
    """A plain list's tags are placed in WordNet (green under colour, golden retriever under dog and
    animal); a rich tag only by a synset it names.  The twin `calibrate` wrote held keywords alone,
    so switching to it, as calibrate says to, took every level out of every photo.  The twin names
    each placed tag's sense: a scan with it writes exactly what a scan with the .txt wrote."""
    plain = tmp_path / "plain.txt"
    lab = (shapes_lab.config.parent / "tags.txt").read_text(encoding="utf-8")
    plain.write_text(lab + "color\npolygon\n", encoding="utf-8")  # levels for green and square
    examples = tmp_path / "examples"
    for folder, photo in (("green", "green-triangle.jpg"), ("square", "blue-square.jpg"),
                          ("none", "red-circle.jpg")):
        (examples / folder).mkdir(parents=True)
        shutil.copy(shapes_lab.library / photo, examples / folder / photo)
    # a global threshold no true tag passes, beside the lab's (its database): calibration improves
    # green's and square's F1 and writes them (a threshold no better than the one in use is not written)
    strict = shapes_lab.config.with_name("strict.toml")
    lab = shapes_lab.config.read_text(encoding="utf-8")
    strict.write_text(re.sub(r"^threshold = .*$", "threshold = 0.9", lab, flags=re.M), encoding="utf-8")
    result = tagwatch("calibrate", "--tags", str(plain), str(examples), "--config", str(strict))
    assert result.returncode == 0, result.stderr
    assert "the WordNet sense of the 9 it places (the same levels above them)" in result.stdout
    twin = tmp_path / "plain.toml"
    assert f'tags = "{twin}"' in result.stdout
    doc = tomllib.loads(twin.read_text(encoding="utf-8"))
    assert {t["keyword"]: t["synset"] for t in doc["tag"] if "synset" in t} == {
        "yellow": "yellow.n.01", "green": "green.n.01", "square": "square.n.01",
        "horizontal bar": "horizontal_bar.n.01", "dog": "dog.n.01",
        "golden retriever": "golden_retriever.n.01", "car": "car.n.01", "color": "color.n.01",
        "polygon": "polygon.n.01"}

    checks = [[line for line in shapes_lab.run("tags", "check", str(path)).stdout.splitlines()
               if not line.startswith(("not placed in WordNet", f"  {plain}:"))]  # (a .txt's own note)
              for path in (plain, twin)]
    assert checks[0][1:] == checks[1][1:]  # the same levels, deepest path and near-duplicates
    assert "deepest path: animal|dog|golden retriever" in checks[1]
    assert checks[0][0].endswith("0 with their own threshold, 6 with a parent")
    assert checks[1][0].endswith("2 with their own threshold, 6 with a parent")

    written = {}
    for path in (plain, twin):
        photos = shapes_lab.copy(tmp_path / f"with-{path.suffix[1:]}")
        shapes_lab.run("scan", "--tags", str(path), *map(str, photos.values()))
        written[path.suffix] = {name: _written(photo) for name, photo in photos.items()}
    assert written[".toml"] == written[".txt"]
    paths = {name: found.get("HierarchicalSubject") for name, found in written[".txt"].items()}
    assert paths == {"green-triangle.jpg": ["color", "color|green", "triangle"], "red-circle.jpg": None,
                     "blue-square.jpg": ["blue", "polygon", "polygon|square"]}


def test_a_tag_calibrated_from_positives_alone_is_warned_about(shapes_lab: Any, tmp_path: Path) -> None:
    """With only `green/` and no `none/`, green's threshold came from its positives alone and nothing
    said so: one warning names the tag and where negatives go; with a negative, none."""
    examples = tmp_path / "examples"
    (examples / "green").mkdir(parents=True)
    shutil.copy(shapes_lab.library / "green-triangle.jpg", examples / "green")
    alone = shapes_lab.run("calibrate", "--dry-run", str(examples))
    warnings = [line for line in alone.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 1, alone.stderr
    assert warnings[0].endswith(
        "'green': no negative example: its threshold comes from its 1 positive alone, so nothing says "
        f"how low another photo may score; add photos that should not get it to {examples / 'none'} "
        "(or examples of other tags in their folders)")
    assert re.search(r"^green +1 +0 ", alone.stdout, re.M)  # still calibrated, and shown

    (examples / "none").mkdir()
    shutil.copy(shapes_lab.library / "red-circle.jpg", examples / "none")
    paired = shapes_lab.run("calibrate", "--dry-run", str(examples))
    assert "WARNING" not in paired.stderr, paired.stderr
    assert re.search(r"^green +1 +1 ", paired.stdout, re.M)


def test_calibrate_says_a_threshold_below_zero_is_not_written_and_why(shapes_lab: Any,
                                                                      tmp_path: Path) -> None:
    """Two circles and four photos of noise filed as circles (the model sees no circle in them, and
    scores them near or below 0): circle's F1-best threshold fell below 0, and was written."""
    import synthetic

    examples = tmp_path / "examples"
    (examples / "circle").mkdir(parents=True)
    (examples / "none").mkdir()
    for i, colour in enumerate(["red", "green"]):
        synthetic.make_photo(colour, "circle", seed=100 + i).save(examples / "circle" / f"{colour}.jpg")
    for i in range(4):
        noise_jpeg(examples / "circle" / f"noise{i}.jpg", 50 + i)
    for i, colour in enumerate(["red", "green", "blue"]):
        synthetic.make_photo(colour, "square", seed=200 + i).save(examples / "none" / f"{colour}.jpg")
    result = shapes_lab.run("calibrate", "--dry-run", str(examples))
    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if line.startswith("circle "))
    after = float(row.split()[4])
    assert after < 0 and row.endswith("kept: below 0, not written"), result.stdout
    warnings = [line for line in result.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and f"'circle': calibrated to {row.split()[4]}, below 0, and not written" in \
        warnings[0], result.stderr
