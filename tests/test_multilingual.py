"""Tag lists in German and Japanese: they load, validate and are written into photos exactly.

A multilingual CLIP (``xlm-roberta-base-ViT-B-32``) needs its tokenizer from the model hub, which this
machine cannot reach; the tiny CLIP's tokenizer reads UTF-8 too, so everything up to the keyword in the
file is the same path a multilingual model takes.
"""

from __future__ import annotations

import json
from pathlib import Path

from conftest import Env, exiftool_read, noise_jpeg, tagwatch, write_config
from tagwatch.config import TaggingConfig
from tagwatch.vocabulary import load_vocabulary

GERMAN = ["Hund", "Straße", "Käsekuchen", "Schloss Neuschwanstein", "Übergrößenträger", "Ärger über Öl"]
JAPANESE = """\
templates = ["{}の写真"]

[[tag]]
keyword = "動物"

[[tag]]
keyword = "犬"
parent = "動物"
prompts = ["公園で遊ぶ犬の写真", "柴犬の写真"]

[[tag]]
keyword = "桜"
synonyms = ["さくら", "桜の花"]

[[tag]]
keyword = "富士山"
threshold = -1.0

[[tag]]
keyword = "東京スカイツリーの夜景と隅田川の花火大会"   # 21 characters, 63 bytes: fits IPTC
"""


def read_back(photo: Path) -> dict[str, list[str]]:
    out = exiftool_read("-j", "-G1", "-charset", "iptc=UTF8", "-IPTC:Keywords", "-IPTC:CodedCharacterSet",
                        "-XMP-dc:Subject", "-XMP-lr:HierarchicalSubject", str(photo))
    record = json.loads(out)[0]
    as_list = lambda v: [] if v is None else [str(x) for x in v] if isinstance(v, list) else [str(v)]  # noqa: E731
    assert record.get("IPTC:CodedCharacterSet") == "UTF8"  # declared, so every reader decodes it
    return {name: as_list(record.get(tag)) for name, tag in (
        ("iptc", "IPTC:Keywords"), ("xmp", "XMP-dc:Subject"), ("hierarchical", "XMP-lr:HierarchicalSubject"))}


def test_a_german_plain_list_loads_and_is_written_exactly(tmp_path: Path, tiny_checkpoint: Path) -> None:
    tags = tmp_path / "stichwörter.txt"
    tags.write_text("# deutsche Stichwörter\n" + "\n".join(GERMAN) + "\n", encoding="utf-8")
    vocabulary = load_vocabulary(tags, ("ein Foto von {}.",))
    assert vocabulary.keywords == GERMAN and vocabulary.tags[1].prompts == ("ein Foto von Straße.",)
    env = Env(tmp_path, tiny_checkpoint, TaggingConfig(threshold=-1.0, top_k=len(GERMAN)))
    try:
        env.pipeline.use_vocabulary(vocabulary)
        photo = noise_jpeg(tmp_path / "Fotos" / "Ausflug.jpg", seed=1)
        env.run(photo)
    finally:
        env.close()
    found = read_back(photo)
    assert sorted(found["iptc"]) == sorted(found["xmp"]) == sorted(GERMAN)


def test_a_japanese_rich_list_is_checked_and_written_exactly(tmp_path: Path, tiny_checkpoint: Path) -> None:
    config = write_config(tmp_path / "conf", tiny_checkpoint, top_k=10)
    tags = config.parent / "タグ.toml"
    tags.write_text(JAPANESE, encoding="utf-8")
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace('"tags.txt"', '"タグ.toml"'), encoding="utf-8")
    check = tagwatch("tags", "check", "--config", str(config), str(tags))
    assert check.returncode == 0, check.stderr
    assert "5 tags, 8 prompts" in check.stdout
    assert "1 with their own threshold, 1 with a parent" in check.stdout
    photo = noise_jpeg(tmp_path / "写真" / "旅行.jpg", seed=2)
    result = tagwatch("scan", "--config", str(config), str(photo))
    assert result.returncode == 0, result.stderr
    found = read_back(photo)
    keywords = ["動物", "犬", "桜", "富士山", "東京スカイツリーの夜景と隅田川の花火大会"]
    assert sorted(found["iptc"]) == sorted(found["xmp"]) == sorted(keywords)
    assert "動物|犬" in found["hierarchical"]  # the parent path, in Japanese

    tags.write_text(JAPANESE + '\n[[tag]]\nkeyword = "' + "あ" * 22 + '"\n', encoding="utf-8")
    check = tagwatch("tags", "check", "--config", str(config), str(tags))
    assert check.returncode == 2
    too_long = "あ" * 22
    assert (f"{tags}:22: keyword '{too_long}'… is 66 bytes in UTF-8; IPTC keywords hold at most 64"
            in check.stderr)
