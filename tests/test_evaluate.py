"""scripts/evaluate.py on small synthetic datasets: the tables, the arithmetic, and that evaluating
another template or tag list encodes no image again.  Most tests use the random-weight tiny model, so
they check the arithmetic; the last one evaluates the committed shapes model on held-out photos from
``scripts/synthetic.py`` and requires the accuracy it really has."""

from __future__ import annotations

import json
import subprocess
import sys
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from conftest import REPO, write_config
from tagwatch.config import load_config
from tagwatch.formats import content_key
from tagwatch.model import model_identity
from tagwatch.store import Store
from tagwatch.tagger import normalize

EVALUATE = REPO / "scripts" / "evaluate.py"
COLOURS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 60, 220), "yellow": (230, 210, 40),
           "white": (245, 245, 245), "black": (15, 15, 15)}
SHAPES = ("circle", "square", "triangle")


def shape_jpeg(path: Path, colour: str, shape: str, seed: int) -> Path:
    """A coloured shape on a grey background, placed and sized by ``seed``."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (96, 96), tuple(int(v) for v in rng.integers(90, 160, 3)))
    draw = ImageDraw.Draw(image)
    size = int(rng.integers(30, 60))
    x, y = (int(v) for v in rng.integers(4, 92 - size, 2))
    box = (x, y, x + size, y + size)
    fill = COLOURS[colour]
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([(x, y + size), (x + size, y + size), (x + size // 2, y)], fill=fill)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, "JPEG", quality=90)
    return path


def evaluate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(EVALUATE), *args], capture_output=True, text=True,
                          timeout=120, cwd=REPO)


@pytest.fixture
def config(tmp_path: Path, tiny_checkpoint: Path) -> Path:
    return write_config(tmp_path / "conf", tiny_checkpoint, tags=["red", "green", "circle", "square"],
                        threshold=0.0, top_k=2)


def test_class_folders_give_rtags_table_and_reuse_cached_vectors(tmp_path: Path, config: Path) -> None:
    dataset = tmp_path / "classes"
    for n, colour in enumerate(COLOURS):  # folders named like ImageNet synsets, mapped to colour tags
        for i in range(3):
            shape_jpeg(dataset / f"n{n:04d}" / f"{i}.jpg", colour, SHAPES[i], seed=10 * n + i)
    mapping = tmp_path / "mapping.txt"
    mapping.write_text("# folder tag\n" + "".join(f"n{n:04d} {c}\n" for n, c in enumerate(COLOURS)))

    first = evaluate("classes", str(dataset), "--mapping", str(mapping), "--config", str(config), "--json")
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout)
    assert (result["images"], result["classes"], result["encoded"]) == (18, 6, 18)
    assert [row["prompts"] for row in result["rows"]] == [["{}"], ["a photo of a {}."]]
    for row in result["rows"]:
        assert 0 <= row["top1"] <= row["top5"] <= 1
        assert row["top1"] * 18 == round(row["top1"] * 18)  # a share of 18 photos

    # the arithmetic, checked against vectors read straight from the store
    cfg = load_config(config)
    store = Store(cfg.database)
    identity = model_identity(cfg.model)
    try:
        images, truth = [], []
        for n in range(6):
            for i in range(3):
                key = content_key((dataset / f"n{n:04d}" / f"{i}.jpg").read_bytes())
                images.append(store.image_vectors([key], identity)[key])
                truth.append(n)
        texts = store.text_vectors(list(COLOURS), identity)  # the bare row's prompts are the tags
    finally:
        store.close()
    scores = normalize(np.stack(images)) @ normalize(np.stack([texts[c] for c in COLOURS])).T
    top1 = float(np.mean(scores.argmax(axis=1) == np.array(truth)))
    assert result["rows"][0]["top1"] == pytest.approx(top1)

    # another template: no image encoded again; the table is rtag's Table II plus the extra row
    again = evaluate("classes", str(dataset), "--mapping", str(mapping), "--config", str(config),
                     "--template", "a picture of a {}.")
    assert again.returncode == 0, again.stderr
    lines = again.stdout.splitlines()
    assert lines[0] == "classes: 18 photos in 6 classes; 0 encoded now, the rest from the cache"
    assert lines[1].split() == ["Model", "Top-1", "accuracy", "Top-5", "accuracy"]
    assert lines[2].startswith("classes [tag] ") and lines[3].startswith("classes a photo of a [tag]. ")
    assert lines[4].startswith("classes a picture of a [tag]. ")
    assert lines[2].split()[-2:] == [f"{100 * row:.2f}%" for row in (result["rows"][0]["top1"],
                                                                      result["rows"][0]["top5"])]

    unmapped = evaluate("classes", str(dataset), "--mapping", str(tmp_path / "nothing.txt"), "--config",
                        str(config))
    assert unmapped.returncode == 2 and "nothing.txt: cannot read mapping" in unmapped.stderr


def test_multi_label_csv_gives_precision_recall_f1_and_map(tmp_path: Path, config: Path) -> None:
    photos = tmp_path / "photos"
    rows = ["file,labels"]
    for i in range(12):
        colour, shape = ("red", "green", "blue")[i % 3], SHAPES[i % 2]  # blue is not a tag: ignored
        shape_jpeg(photos / f"p{i}.jpg", colour, shape, seed=i)
        rows.append(f"photos/p{i}.jpg,{colour};{shape}")
    labels = tmp_path / "labels.csv"
    labels.write_text("\n".join(rows) + "\n")

    first = evaluate("labels", str(labels), "--config", str(config), "--json")
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout)
    assert (result["images"], result["tags"], result["encoded"]) == (12, 4, 12)
    assert result["unknown_labels"] == {"blue": 4}
    (summary,) = result["summaries"]  # a plain list has no per-tag thresholds: one row
    assert summary["thresholds"] == "global 0"
    per_tag = {t["tag"]: t for t in result["per_tag"]}
    assert [per_tag[t]["positives"] for t in ("red", "green", "circle", "square")] == [4, 4, 6, 6]
    assert 0 <= result["map"] <= 1
    assert result["map"] == pytest.approx(np.mean([t["ap"] for t in result["per_tag"]]))
    assert summary["predicted"] <= 2 * 12  # top_k 2
    for t in per_tag.values():
        assert t["threshold"] == 0.0

    # threshold -1 and top_k 2: every photo gets exactly two tags, so the counts are known
    forced = json.loads(evaluate("labels", str(labels), "--config", str(config), "--threshold", "-1",
                                 "--json").stdout)
    (summary,) = forced["summaries"]
    assert summary["predicted"] == 24 and forced["encoded"] == 0
    true_pairs = 4 + 4 + 6 + 6  # labels that are tags in the list
    assert summary["precision"] * 24 == pytest.approx(summary["recall"] * true_pairs)  # both count TP

    other = tmp_path / "other.txt"  # another tag list: re-scored from the cache, nothing encoded
    other.write_text("circle\nsquare\ntriangle\n")
    text = evaluate("labels", str(labels), "--config", str(config), "--tags", str(other))
    assert text.returncode == 0, text.stderr
    assert "12 photos, 3 tags, top_k 2; 0 encoded now, the rest from the cache" in text.stdout
    assert "label 'red' (4 photos) is not a tag in the list: ignored" in text.stdout
    assert any(line.startswith("mAP ") for line in text.stdout.splitlines())
    assert any(line.split()[:2] == ["triangle", "0"] for line in text.stdout.splitlines())


def test_labels_and_class_folders_name_tags_as_keywords_are_compared(tmp_path: Path, config: Path) -> None:
    """A label written decomposed (as macOS writes É) or in another case was 'not a tag in the list:
    ignored', so that tag's every prediction counted as a false positive; a class folder so named
    was refused.  They name the tag, as keywords are compared everywhere in tagwatch."""
    tags = tmp_path / "accents.txt"
    tags.write_text("Étoile\nred\ncircle\n", encoding="utf-8")
    star = unicodedata.normalize("NFD", "Étoile")
    rows = ["file,labels"]
    for i in range(4):
        shape_jpeg(tmp_path / "photos" / f"p{i}.jpg", "red", SHAPES[i % 2], seed=40 + i)
        rows.append(f"photos/p{i}.jpg,{star};Red" if i % 2 else f"photos/p{i}.jpg,CIRCLE")
    labels = tmp_path / "labels.csv"
    labels.write_text("\n".join(rows) + "\n", encoding="utf-8")
    result = evaluate("labels", str(labels), "--tags", str(tags), "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "is not a tag in the list" not in result.stdout
    positives = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines()
                 if line.startswith(("Étoile ", "red ", "circle "))}
    assert positives == {"Étoile": "2", "red": "2", "circle": "2"}

    for i, folder in enumerate(("RED", star)):
        shape_jpeg(tmp_path / "classes" / folder / "0.jpg", "red", SHAPES[i], seed=50 + i)
    classes = evaluate("classes", str(tmp_path / "classes"), "--tags", str(tags), "--config", str(config))
    assert classes.returncode == 0, classes.stderr
    assert "classes tag list: accents.txt " in classes.stdout


def test_a_tag_without_positives_or_predictions_has_no_f1(tmp_path: Path, config: Path) -> None:
    """Such a tag showed precision —, recall — and F1 0.00%: F1 is as undefined as they are there.
    It shows —, is null in the JSON, and macro F1 averages the tags with a positive, as before."""
    tags = tmp_path / "tags.toml"  # square: a threshold no score passes, and no label names it
    tags.write_text('[[tag]]\nkeyword = "red"\n\n[[tag]]\nkeyword = "green"\n\n[[tag]]\n'
                    'keyword = "circle"\n\n[[tag]]\nkeyword = "square"\nthreshold = 1.0\n', encoding="utf-8")
    rows = ["file,labels"]
    for i in range(4):
        shape_jpeg(tmp_path / "photos" / f"p{i}.jpg", ("red", "green")[i % 2], "circle", seed=60 + i)
        rows.append(f"photos/p{i}.jpg,{('red', 'green')[i % 2]};circle")
    labels = tmp_path / "labels.csv"
    labels.write_text("\n".join(rows) + "\n", encoding="utf-8")
    args = ("labels", str(labels), "--tags", str(tags), "--threshold", "-1", "--config", str(config))
    text = evaluate(*args)
    assert text.returncode == 0, text.stderr
    square = next(line.split() for line in text.stdout.splitlines() if line.startswith("square "))
    assert square == ["square", "0", "1.0000", "—", "—", "—", "—"]  # precision, recall, F1, AP
    result = json.loads(evaluate(*args, "--json").stdout)
    per_tag = {t["tag"]: t for t in result["per_tag"]}
    assert per_tag["square"]["f1"] is None
    own = next(s for s in result["summaries"] if s["thresholds"] == "per-tag (tag list)")
    assert own["macro_f1"] == pytest.approx(np.mean([per_tag[t]["f1"] for t in ("red", "green", "circle")]))


def test_a_labels_csv_saved_with_a_byte_order_mark_reads_as_without(tmp_path: Path, config: Path) -> None:
    """Excel's "CSV UTF-8" starts the file with a byte-order mark: the header row became a photo
    ('\ufefffile: skipped: cannot read') and its 'labels' a label not in the list."""
    rows = ["file,labels"]
    for i in range(3):
        shape_jpeg(tmp_path / "photos" / f"p{i}.jpg", "red", "square", seed=70 + i)
        rows.append(f"photos/p{i}.jpg,red;square")
    labels = tmp_path / "labels.csv"
    labels.write_text("\n".join(rows) + "\n", encoding="utf-8-sig")
    assert labels.read_bytes().startswith(b"\xef\xbb\xbf")
    result = evaluate("labels", str(labels), "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr, result.stderr
    assert result.stdout.startswith("labels.csv: 3 photos, 4 tags, top_k 2;")
    assert "is not a tag in the list" not in result.stdout


def test_the_shapes_model_scores_high_on_synthetic_sets_and_a_bad_threshold_shows(tmp_path: Path) -> None:
    made = subprocess.run([sys.executable, str(REPO / "scripts" / "synthetic.py"), str(tmp_path / "syn"),
                           "--per-class", "1", "--blanks", "6"], capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    config = str(tmp_path / "syn" / "config.toml")

    classes = evaluate("classes", str(tmp_path / "syn" / "classes"), "--mapping",
                       str(tmp_path / "syn" / "classes" / "mapping.txt"), "--config", config, "--json")
    assert classes.returncode == 0, classes.stderr
    table = json.loads(classes.stdout)
    assert (table["images"], table["classes"]) == (36, 36)
    bare, template = table["rows"]
    assert template["prompts"] == ["a photo of a {}."]
    assert template["top1"] >= 0.95 and template["top5"] == 1.0
    assert bare["top1"] >= 0.5  # never trained on bare tags; still far above chance (1/36)

    labels_csv = str(tmp_path / "syn" / "labels" / "labels.csv")
    labels = evaluate("labels", labels_csv, "--config", config, "--json")
    assert labels.returncode == 0, labels.stderr
    scored = json.loads(labels.stdout)
    assert scored["encoded"] == 6  # the 36 shape photos have the class set's pixels: only the blanks are new
    summary = scored["summaries"][0]
    assert summary["precision"] >= 0.95 and summary["recall"] >= 0.95 and scored["map"] >= 0.95

    strict = json.loads(evaluate("labels", labels_csv, "--config", config, "--json",
                                 "--threshold", "0.99").stdout)
    assert strict["encoded"] == 0 and strict["summaries"][0]["recall"] < 0.5  # a threshold no tag reaches
