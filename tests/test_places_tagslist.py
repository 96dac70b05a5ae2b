"""digiKam's TagsList splits a path on '/': a '/' inside a place name or a keyword (Biel/Bienne,
AC/DC) is written there as the look-alike DIVISION SLASH (U+2215), one level as digiKam shows it,
while IPTC, dc:subject and lr:hierarchicalSubject (which splits on '|') keep the '/'.

Real JPEGs that already hold a TagsList (digiKam's own field: tagwatch writes it only there), the real
GeoNames data, a rich tag list with parents, and a separate exiftool reading back what was written.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import Env, noise_jpeg
from tagwatch.config import PlacesConfig, TaggingConfig
from tagwatch.outcomes import Status
from tagwatch.vocabulary import parse_rich_tag_list
from test_writer_targets import fields

TAGS = """
[[tag]]
keyword = "AC/DC"
parent = "band"

[[tag]]
keyword = "band"

[[tag]]
keyword = "black/white"
"""
BIEL = ["-GPSLatitude=47.137", "-GPSLatitudeRef=N", "-GPSLongitude=7.246", "-GPSLongitudeRef=E"]
SLASH = "\u2215"
TAGS_LIST = "XMP-digiKam:TagsList"


def photo_of(folder: Path, seed: int) -> Path:
    """A geotagged JPEG that digiKam has tagged (a person's tag Anna under People, in TagsList)."""
    photo = noise_jpeg(folder / f"concert-{seed}.jpg", seed=seed)
    subprocess.run(["exiftool", "-q", "-overwrite_original", *BIEL, "-XMP-digiKam:TagsList=People/Anna",
                    "-XMP-dc:Subject=Anna", "-IPTC:Keywords=Anna", str(photo)], check=True)
    return photo


def use(env: Env, text: str, mode: str = "append") -> None:
    tagging = TaggingConfig(threshold=-1.0, top_k=10, mode=mode)
    env.pipeline.use_vocabulary(parse_rich_tag_list(text, ("a photo of a {}.",), env.root / "tags.toml"),
                                tagging)


def test_a_slash_in_a_place_or_keyword_is_one_level_in_digikams_tagslist_and_untag_takes_it_out(
        tmp_path: Path, tiny_checkpoint: Path) -> None:
    env = Env(tmp_path, tiny_checkpoint, TaggingConfig(threshold=-1.0, top_k=10), places=PlacesConfig())
    try:
        use(env, TAGS)
        photo, older = photo_of(tmp_path / "in", 1), photo_of(tmp_path / "in", 2)
        before = fields(photo)
        assert env.run(photo, older) == {photo.name: Status.TAGGED, older.name: Status.TAGGED}
        got = fields(photo)
        assert set(got[TAGS_LIST]) == {
            "People/Anna", "band", f"band/AC{SLASH}DC", f"black{SLASH}white", "places/Switzerland",
            "places/Switzerland/Bern", f"places/Switzerland/Bern/Biel{SLASH}Bienne"}
        flat = {"AC/DC", "black/white", "Biel/Bienne"}
        assert set(got["IPTC:Keywords"]) == set(got["XMP-dc:Subject"]) >= flat
        assert {"band|AC/DC", "black/white", "places|Switzerland|Bern|Biel/Bienne"} <= set(
            got["XMP-lr:HierarchicalSubject"])

        # sync: the tags no longer predicted come out of TagsList exactly as they were written
        use(env, '[[tag]]\nkeyword = "band"\n', mode="sync")
        assert env.pipeline.retag()[1] == 2
        assert set(fields(photo)[TAGS_LIST]) == {
            "People/Anna", "band", "places/Switzerland", "places/Switzerland/Bern",
            f"places/Switzerland/Bern/Biel{SLASH}Bienne"}
        assert env.pipeline.untag(str(photo)).status == Status.UNTAGGED
        assert fields(photo) == before

        # A photo written by a tagwatch from before, with the split paths: untag takes those out too
        legacy = [v.replace(SLASH, "/") for v in fields(older)[TAGS_LIST]]
        subprocess.run(["exiftool", "-q", "-overwrite_original", "-XMP-digiKam:TagsList=",
                        *(f"-XMP-digiKam:TagsList={v}" for v in legacy), str(older)], check=True)
        assert "places/Switzerland/Bern/Biel/Bienne" in fields(older)[TAGS_LIST]
        assert env.pipeline.untag(str(older)).status == Status.UNTAGGED
        assert fields(older)[TAGS_LIST] == ["People/Anna"]
    finally:
        env.close()
