"""A sidecar spelled with an upper-case extension: Photo Mechanic and Windows ingest tools write
``IMG_1.XMP`` beside ``IMG_1.CR2``, and cards and NAS shares keep it so.  tagwatch writes into the
sidecar there is, whatever the case of its extension, and never makes a second one beside it; it moves
it with its photo, reads it for GPS, and its watcher takes an edit of it for an edit of the photo's.
Real files, real exiftool reading back, the real pipeline and daemon.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import Daemon, Env, exif_keywords, exiftool_read, status, wait_for, write_config
from tagwatch.config import TaggingConfig, WriteConfig
from tagwatch.metadata import Keywords
from tagwatch.outcomes import Status
from tagwatch.queue import Delete, Move
from test_shared_sidecar import TAGS4, noise_png, pair


def persons_sidecar(path: Path, *args: str) -> Path:
    """A sidecar another app wrote: rating 5 and the keyword ``portfolio``."""
    subprocess.run(["exiftool", "-q", "-o", str(path), "-XMP-xmp:Rating=5", "-XMP-dc:Subject=portfolio",
                    *args], check=True)
    return path


def in_sidecar(path: Path) -> set[str]:
    return set(exif_keywords(path)["xmp"])


def rating(path: Path) -> str:
    return exiftool_read("-s3", "-XMP-xmp:Rating", str(path)).strip()


@pytest.mark.parametrize("naming", ["photo.xmp", "photo.jpg.xmp"])
def test_an_upper_case_sidecar_is_the_photos_sidecar(tmp_path: Path, tiny_checkpoint: Path,
                                                      naming: str) -> None:
    """Issue: an IMG_1.XMP was ignored, and a second IMG_1.xmp made beside it without the person's
    rating and keywords."""
    env = Env(tmp_path, tiny_checkpoint, TaggingConfig(threshold=-1.0, top_k=2),
              WriteConfig(target="sidecar", sidecar=naming))
    try:
        env.use(TAGS4)
        folder = tmp_path / "in"
        folder.mkdir()
        photo = noise_png(folder / "IMG_1.png", seed=3)
        name = "IMG_1.XMP" if naming == "photo.xmp" else "IMG_1.png.XMP"
        side = persons_sidecar(folder / name)
        [outcome] = env.pipeline.process([str(photo)])
        own = {k for k, _ in outcome.tags}
        assert outcome.status == Status.TAGGED and len(own) == 2
        assert sorted(p.name for p in folder.iterdir()) == sorted(["IMG_1.png", name])  # no second one
        assert in_sidecar(side) == own | {"portfolio"} and rating(side) == "5"
        assert env.run(photo) == {"IMG_1.png": Status.UNCHANGED}

        # Renamed by a file manager: the sidecar goes along, spelled as it was
        moved = photo.rename(folder / "IMG_2.png")
        env.pipeline.apply([Move(str(photo), str(moved))])
        side = folder / ("IMG_2.XMP" if naming == "photo.xmp" else "IMG_2.png.XMP")
        assert sorted(p.name for p in folder.iterdir()) == sorted(["IMG_2.png", side.name])
        assert in_sidecar(side) == own | {"portfolio"}

        # Untagged: tagwatch's keywords out of it, the person's kept, in the same file
        assert env.pipeline.untag(str(moved)).status == Status.UNTAGGED
        assert sorted(p.name for p in folder.iterdir()) == sorted(["IMG_2.png", side.name])
        assert in_sidecar(side) == {"portfolio"} and rating(side) == "5"

        # GPS a geotagger wrote into the other naming's sidecar, upper-case too
        other = folder / ("IMG_2.png.XMP" if naming == "photo.xmp" else "IMG_2.XMP")
        persons_sidecar(other, "-XMP-exif:GPSLatitude=48.85", "-XMP-exif:GPSLatitudeRef=N",
                        "-XMP-exif:GPSLongitude=2.35", "-XMP-exif:GPSLongitudeRef=E")
        assert env.pipeline.writer is not None
        gps = env.pipeline.writer.sidecar_gps(moved, Keywords())
        assert gps and any("48" in str(value) for value in gps.values()), gps
    finally:
        env.close()


def test_a_deleted_photo_takes_its_keywords_out_of_an_upper_case_sidecar_it_shared(
        tmp_path: Path, tiny_checkpoint: Path) -> None:
    """The stem mates of photo.xmp naming are found through IMG_1.XMP too: deleting IMG_1.jpg takes
    its keywords out of the sidecar IMG_1.png still uses."""
    env = Env(tmp_path, tiny_checkpoint, TaggingConfig(threshold=-1.0, top_k=3),
              WriteConfig(target="sidecar", sidecar="photo.xmp"))
    try:
        env.use(TAGS4)
        folder = tmp_path / "in"
        jpg, png = pair(folder)
        side = persons_sidecar(folder / "IMG_1.XMP")
        own = {Path(o.path).name: {k for k, _ in o.tags} for o in env.pipeline.process([str(jpg), str(png)])}
        assert sorted(p.name for p in folder.iterdir()) == sorted(["IMG_1.XMP", "IMG_1.jpg", "IMG_1.png"])
        assert in_sidecar(side) == own["IMG_1.jpg"] | own["IMG_1.png"] | {"portfolio"}
        jpg.unlink()
        env.pipeline.apply([Delete(str(jpg))])
        assert in_sidecar(side) == own["IMG_1.png"] | {"portfolio"}
    finally:
        env.close()


def test_the_watcher_takes_an_edit_of_an_upper_case_sidecar_for_an_edit_of_the_photos(
        tmp_path: Path, tiny_checkpoint: Path, daemon_factory) -> None:
    """A keyword of tagwatch's taken out of IMG_1.XMP in another app is noticed, as in IMG_1.xmp."""
    folder = tmp_path / "in"
    folder.mkdir()
    side = persons_sidecar(folder / "IMG_1.XMP")
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[folder], tags=TAGS4, top_k=2,
                          extra='[write]\ntarget = "sidecar"\nsidecar = "photo.xmp"\n')
    daemon: Daemon = daemon_factory(config).start()
    photo = noise_png(folder / "IMG_1.png", seed=4)
    wait_for(lambda: status(config)["tagged"] == 1)
    ours = sorted(in_sidecar(side) - {"portfolio"})
    assert len(ours) == 2 and not (folder / "IMG_1.xmp").exists()
    # One of the two keywords its write put in taken out, at once: a save built from the version before
    # that write (writeback.STALE_SAVE_NS) would lack both, so no wait makes this a person's edit
    mark = len(daemon.log())
    subprocess.run(["exiftool", "-q", "-overwrite_original", f"-XMP-dc:Subject-={ours[0]}",
                    f"-XMP-lr:HierarchicalSubject-={ours[0]}", str(side)], check=True)
    daemon.wait_log(f"{photo}: {ours[0]} taken out of it by a person", since=mark)
    assert daemon.stop() == 0
    assert in_sidecar(side) == {ours[1], "portfolio"}
