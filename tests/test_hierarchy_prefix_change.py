"""A changed ``[write] hierarchy_prefix`` is carried into the photos tagwatch already tagged.

The ledger keeps each keyword's path without the prefix, and the store every prefix tagwatch wrote
paths under (``Store.prefixes``): the next re-score (``tagwatch scan``, the daemon's SIGHUP) moves
tagwatch's own paths from the old prefix to the new one, and ``untag`` takes them out under any of
them.  A person's paths stay, even one under the old prefix (``auto|custom``) whose keyword is not
tagwatch's.  Real JPEGs, exiftool reading back, the CLI and the daemon as a user runs them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

from conftest import TAGS, Daemon, noise_jpeg, status, tagwatch, wait_for, write_config

HIERARCHICAL, TAGS_LIST = "XMP-lr:HierarchicalSubject", "XMP-digiKam:TagsList"
FLAT = ("IPTC:Keywords", "XMP-dc:Subject")
FIELDS = (*FLAT, HIERARCHICAL, TAGS_LIST)
# a person's own paths: one of their tree, and one under the prefix tagwatch used first, whose
# keyword is no keyword of tagwatch's
PERSONS_LR = ["people|Anna", "auto|custom"]
PERSONS_TAGS = ["people/Anna", "auto/custom"]


def fields(path: Path) -> dict[str, list[str]]:
    """Every keyword field of ``path``, read by an exiftool of its own."""
    out = subprocess.run(["exiftool", "-j", "-G1", "-charset", "iptc=UTF8", *(f"-{t}" for t in FIELDS),
                          str(path)], check=True, capture_output=True, text=True).stdout
    record = json.loads(out)[0]
    return {tag: [str(v) for v in (record[tag] if isinstance(record.get(tag), list)
                                   else [record[tag]] if tag in record else [])] for tag in FIELDS}


def persons_photo(path: Path, seed: int) -> Path:
    """A JPEG with a person's keyword `Anna` and their paths in both keyword trees."""
    noise_jpeg(path, seed=seed)
    subprocess.run(["exiftool", "-q", "-overwrite_original", "-charset", "iptc=UTF8", "-IPTC:Keywords=Anna",
                    "-XMP-dc:Subject=Anna", *(f"-{HIERARCHICAL}={v}" for v in PERSONS_LR),
                    *(f"-{TAGS_LIST}={v}" for v in PERSONS_TAGS), str(path)], check=True)
    return path


def ours(record: dict[str, list[str]]) -> list[str]:
    """tagwatch's keywords in the photo: the flat ones that are not the person's."""
    return [k for k in record["IPTC:Keywords"] if k != "Anna"]


def set_prefix(config: Path, prefix: str) -> None:
    text = config.read_text(encoding="utf-8")
    head, _, _ = text.partition("[write]\n")
    config.write_text(f'{head}[write]\nhierarchy_prefix = "{prefix}"\n', encoding="utf-8")


def under(prefix: str, keywords: list[str]) -> tuple[list[str], list[str]]:
    """Our keywords' paths under ``prefix``: (lr:hierarchicalSubject's, TagsList's)."""
    return [f"{prefix}|{k}" for k in keywords], [f"{prefix}/{k}" for k in keywords]


def test_scan_moves_our_paths_to_the_new_prefix_and_untag_takes_out_every_prefix(
        tmp_path: Path, tiny_checkpoint: Path) -> None:
    """Tagged under "auto", the prefix changed to "tagwatch": a scan leaves the photos with tagwatch's
    paths under "tagwatch" only, the person's (`auto|custom` too) and every flat keyword as they were,
    and a second scan rewrites nothing.  A photo not scanned since keeps its "auto" paths, which
    untag takes out as it takes out the other photo's "tagwatch" ones: both photos are given back
    exactly as the person had them."""
    folder = tmp_path / "lib"
    folder.mkdir()
    moved = persons_photo(folder / "moved.jpg", seed=11)
    left = persons_photo(folder / "left.jpg", seed=12)
    before = {p: fields(p) for p in (moved, left)}
    config = write_config(tmp_path / "conf", tiny_checkpoint, top_k=3,
                          extra='[write]\nhierarchy_prefix = "auto"\n')
    result = tagwatch("scan", "--config", str(config), str(folder))
    assert result.returncode == 0, result.stderr
    tagged = {p: fields(p) for p in (moved, left)}
    for record in tagged.values():
        keywords = ours(record)
        assert len(keywords) == 3 and set(keywords) <= set(TAGS), record
        lr, tags_list = under("auto", keywords)
        assert sorted(record[HIERARCHICAL]) == sorted([*PERSONS_LR, *lr])
        assert sorted(record[TAGS_LIST]) == sorted([*PERSONS_TAGS, *tags_list])

    encoded = status(config)["encoded"]
    set_prefix(config, "tagwatch")
    result = tagwatch("scan", "--config", str(config), str(moved))
    assert result.returncode == 0, result.stderr
    assert status(config)["encoded"] == encoded  # from the cached vector: no image encoded again
    record = fields(moved)
    keywords = ours(tagged[moved])
    lr, tags_list = under("tagwatch", keywords)
    assert sorted(record[HIERARCHICAL]) == sorted([*PERSONS_LR, *lr])
    assert sorted(record[TAGS_LIST]) == sorted([*PERSONS_TAGS, *tags_list])
    assert {tag: record[tag] for tag in FLAT} == {tag: tagged[moved][tag] for tag in FLAT}
    assert fields(left) == tagged[left]  # not scanned: still under "auto"

    # nothing more to move: the photo is not written again
    st = moved.stat()
    content = moved.read_bytes()
    result = tagwatch("scan", "--config", str(config), str(moved))
    assert result.returncode == 0, result.stderr
    after = moved.stat()
    assert (after.st_ino, after.st_mtime_ns) == (st.st_ino, st.st_mtime_ns)
    assert moved.read_bytes() == content

    result = tagwatch("untag", "--config", str(config), str(folder))
    assert result.returncode == 0, result.stderr
    assert {p: fields(p) for p in (moved, left)} == before


def test_a_prefix_cleared_moves_our_paths_out_from_under_it(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """"auto" cleared to "": tagwatch's paths lose the prefix (`beach`, not `auto|beach`), the
    person's `auto|custom` stays where it is."""
    folder = tmp_path / "lib"
    folder.mkdir()
    photo = persons_photo(folder / "p.jpg", seed=13)
    config = write_config(tmp_path / "conf", tiny_checkpoint, top_k=2,
                          extra='[write]\nhierarchy_prefix = "auto"\n')
    assert tagwatch("scan", "--config", str(config), str(folder)).returncode == 0
    keywords = ours(fields(photo))
    assert len(keywords) == 2
    set_prefix(config, "")
    result = tagwatch("scan", "--config", str(config), str(folder))
    assert result.returncode == 0, result.stderr
    record = fields(photo)
    assert sorted(record[HIERARCHICAL]) == sorted([*PERSONS_LR, *keywords])
    assert sorted(record[TAGS_LIST]) == sorted([*PERSONS_TAGS, *keywords])


def test_the_daemon_moves_our_paths_when_a_sighup_brings_a_new_prefix(tmp_path: Path,
                                                                      tiny_checkpoint: Path) -> None:
    """The running daemon applies a changed hierarchy_prefix at SIGHUP, as a changed threshold: the
    photos it tagged are re-scored and their paths of tagwatch's moved, the person's kept."""
    root = tmp_path / "photos"
    root.mkdir()
    photo = persons_photo(tmp_path / "incoming.jpg", seed=14)
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[root], top_k=3,
                          extra='[write]\nhierarchy_prefix = "auto"\n')
    daemon = Daemon(config, tmp_path / "daemon.log").start()
    try:
        os.replace(photo, root / photo.name)
        photo = root / photo.name
        wait_for(lambda: len(ours(fields(photo))) == 3)
        keywords = ours(fields(photo))
        set_prefix(config, "auto|clip")
        mark = len(daemon.log())
        daemon.signal(signal.SIGHUP)
        log = daemon.wait_log("re-scored 1 photo, rewrote 1", since=mark)[mark:]
        assert "applied write.hierarchy_prefix" in log and "takes effect after a restart" not in log
        record = fields(photo)
        assert sorted(record[HIERARCHICAL]) == sorted([*PERSONS_LR, *(f"auto|clip|{k}" for k in keywords)])
        assert sorted(record[TAGS_LIST]) == sorted([*PERSONS_TAGS, *(f"auto/clip/{k}" for k in keywords)])
        assert ours(record) == keywords
    finally:
        assert daemon.stop() == 0
