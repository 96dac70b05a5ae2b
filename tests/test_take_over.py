"""``scan --take-over LIST``: a library another tagger (rtag) wrote keywords into is handed over to
tagwatch.  Without it those keywords are the person's: sync never replaces them and untag never
takes them out, so an rtag user had no way to let tagwatch manage what rtag wrote.  Real CLI, real
JPEGs, exiftool reading back."""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import exif_keywords, noise_jpeg, tagwatch, write_config

RTAG_LIST = "# the tags file rtag used\nping-pong ball\nloudspeaker, speaker, speaker unit\nenvelope\n"


def rtagged(path: Path, seed: int) -> Path:
    """A photo as rtag leaves it: its keywords in IPTC only, and one the person typed by hand."""
    photo = noise_jpeg(path, seed=seed)
    subprocess.run(["exiftool", "-q", "-overwrite_original", "-charset", "iptc=UTF8",
                    "-IPTC:Keywords=ping-pong ball", "-IPTC:Keywords=loudspeaker, speaker, speaker unit",
                    "-IPTC:Keywords=Tante Renée", str(photo)], check=True)
    return photo


def rtag_setup(tmp_path: Path, checkpoint: Path) -> tuple[Path, Path]:
    """rtag's tags file, and a config tagging with tagwatch's own list (two tags a photo)."""
    tags = tmp_path / "rtag-tags.txt"
    tags.write_text(RTAG_LIST, encoding="utf-8")
    return tags, write_config(tmp_path / "conf", checkpoint, tags=["beach", "forest", "mountain"], top_k=2)


def test_sync_replaces_what_rtag_wrote_and_keeps_what_the_person_typed(tmp_path: Path,
                                                                      tiny_checkpoint: Path) -> None:
    photo = rtagged(tmp_path / "lib" / "a.jpg", seed=81)
    tags, config = rtag_setup(tmp_path, tiny_checkpoint)
    scan = ["scan", "--config", str(config), "--take-over", str(tags), "--mode", "sync"]
    plain = tagwatch("scan", "--config", str(config), "--mode", "sync", "--dry-run", str(photo))
    assert "would take out" not in plain.stdout, plain.stdout  # the person's, without --take-over

    dry = tagwatch(*scan, "--dry-run", str(photo))
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.rstrip().endswith('; would take out tagwatch\'s no longer predicted: '
                                        '"loudspeaker, speaker, speaker unit", ping-pong ball'), dry.stdout
    assert "Tante Renée" in exif_keywords(photo)["iptc"] and "ping-pong ball" in exif_keywords(photo)["iptc"]

    real = tagwatch(*scan, str(photo))
    assert real.returncode == 0, real.stderr
    assert f'{photo}: taken over, tagwatch\'s from now on: "loudspeaker, speaker, speaker unit", ' \
           "ping-pong ball" in real.stderr, real.stderr
    kept = exif_keywords(photo)["iptc"]
    assert "Tante Renée" in kept and len(kept) == 3, kept  # the person's and tagwatch's two
    assert not {"ping-pong ball", "loudspeaker, speaker, speaker unit"} & set(kept)
    untag = tagwatch("untag", "--config", str(config), str(photo))
    assert untag.returncode == 0, untag.stderr
    assert exif_keywords(photo)["iptc"] == ["Tante Renée"]


def test_append_makes_them_tagwatchs_for_untag_even_in_a_photo_tagged_already(tmp_path: Path,
                                                                             tiny_checkpoint: Path) -> None:
    """The photo was tagged by tagwatch before the take-over (a scan would pass it over as done)."""
    photo = rtagged(tmp_path / "lib" / "a.jpg", seed=82)
    tags, config = rtag_setup(tmp_path, tiny_checkpoint)
    assert tagwatch("scan", "--config", str(config), str(photo)).returncode == 0
    assert len(exif_keywords(photo)["iptc"]) == 5
    taken = tagwatch("scan", "--config", str(config), "--take-over", str(tags), str(photo))
    assert taken.returncode == 0, taken.stderr
    assert "taken over" in taken.stderr and len(exif_keywords(photo)["iptc"]) == 5, taken.stderr
    assert tagwatch("untag", "--config", str(config), str(photo)).returncode == 0
    assert exif_keywords(photo)["iptc"] == ["Tante Renée"]


def test_a_take_over_list_that_cannot_be_read_is_one_line(tmp_path: Path, tiny_checkpoint: Path) -> None:
    photo = noise_jpeg(tmp_path / "a.jpg", seed=83)
    config = write_config(tmp_path / "conf", tiny_checkpoint)
    missing = tagwatch("scan", "--config", str(config), "--take-over", str(tmp_path / "nope.txt"), str(photo))
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines()[-1].endswith(
        f"--take-over {tmp_path / 'nope.txt'}: cannot read it: No such file or directory"), missing.stderr
