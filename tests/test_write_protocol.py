"""The write protocol against a photo app that saves at the worst moment.

A second process (exiftool, as a photo app would: a new file renamed over the photo) saves the photo
exactly inside the window that matters: after tagwatch built its new version and before that version
is put in place, or just after.  These windows are microseconds wide in real life (the daemon-level
race test in test_reliability.py meets them by chance, thousands of saves at a time); here each is
opened on purpose, at the system call that closes it, so every run checks it.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import exif_keywords, noise_jpeg
from tagwatch import atomic
from tagwatch.metadata import ExifTool, FileChanged, KeywordWriter, is_temp_file


@pytest.fixture(scope="module")
def writer() -> Iterator[KeywordWriter]:
    tool = ExifTool()
    yield KeywordWriter(tool)
    tool.close()


def app_save(photo: Path, keyword: str) -> None:
    """A person adds a keyword in a photo app, which saves a new file over the photo."""
    subprocess.run(["exiftool", "-q", "-overwrite_original", f"-XMP-dc:Subject+={keyword}",
                    f"-IPTC:Keywords+={keyword}", str(photo)], check=True)


def app_prepare(photo: Path, keyword: str, name: str, source: Path | None = None) -> Callable[[], None]:
    """A photo app that read the photo (or ``source``, its own earlier save) now and saves its edit
    later: the new file is written now, and the returned call renames it over the photo, as the
    app's own atomic save does."""
    saved = photo.with_name(name)
    subprocess.run(["exiftool", "-q", f"-XMP-dc:Subject+={keyword}", f"-IPTC:Keywords+={keyword}",
                    "-o", str(saved), str(source or photo)], check=True)
    return lambda: os.rename(saved, photo)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if is_temp_file(p.name) or p.name.endswith("_tmp"))


def save_before_call(monkeypatch: pytest.MonkeyPatch, saves: list[Callable[[], None]],
                     after: bool = False) -> None:
    """Run the next of ``saves`` right before (or after) each call that puts a file in place: the
    name exchange, or, where exchanging is impossible, the final rename."""
    real_exchange, real_replace = atomic.exchange, os.replace

    def hooked(real: Callable[..., object]) -> Callable[..., object]:
        def call(*args: object) -> object:
            if not after and saves:
                saves.pop(0)()
            result = real(*args)
            if after and saves:
                saves.pop(0)()
            return result
        return call

    monkeypatch.setattr(atomic, "exchange", hooked(real_exchange), raising=False)
    monkeypatch.setattr(os, "replace", hooked(real_replace))


def test_a_save_landing_just_before_our_write_is_kept(tmp_path: Path, writer: KeywordWriter,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    photo = noise_jpeg(tmp_path / "p.jpg", seed=1)
    plan = writer.plan(photo, ["beach"])
    save_before_call(monkeypatch, [lambda: app_save(photo, "Anna")])
    with pytest.raises(FileChanged):
        writer.apply(plan)
    monkeypatch.undo()
    assert exif_keywords(photo) == {"iptc": ["Anna"], "xmp": ["Anna"]}  # the person's save, whole
    assert leftovers(tmp_path) == []
    writer.apply(writer.plan(photo, ["beach"]))  # the retry: both
    assert exif_keywords(photo) == {"iptc": ["Anna", "beach"], "xmp": ["Anna", "beach"]}


def test_a_second_save_during_the_swap_back_wins(tmp_path: Path, writer: KeywordWriter,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Saves land before our swap and again before the swap that puts the first one back: the
    newest save ends in place, nothing of ours does, and no file is left behind."""
    photo = noise_jpeg(tmp_path / "p.jpg", seed=2)
    plan = writer.plan(photo, ["beach"])
    first = app_prepare(photo, "Anna", "p.jpg_first")  # the app read the photo before our write
    # ... and edits its own save again
    second = app_prepare(photo, "Bob", "p.jpg_second", source=tmp_path / "p.jpg_first")
    save_before_call(monkeypatch, [first, second])
    with pytest.raises(FileChanged):
        writer.apply(plan)
    monkeypatch.undo()
    assert exif_keywords(photo) == {"iptc": ["Anna", "Bob"], "xmp": ["Anna", "Bob"]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.jpg"]


def test_the_stat_returned_is_that_of_the_version_written(tmp_path: Path, writer: KeywordWriter,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A save landing just after our write must look like a change to whoever records the write."""
    photo = noise_jpeg(tmp_path / "p.jpg", seed=3)
    plan = writer.plan(photo, ["beach"])
    save_before_call(monkeypatch, [app_prepare(photo, "Anna", "p.jpg_app")], after=True)
    written = writer.apply(plan)
    monkeypatch.undo()
    now = photo.lstat()
    assert written is not None and (written.st_ino, written.st_size) != (now.st_ino, now.st_size)
    assert exif_keywords(photo)["iptc"] == ["Anna"]  # built from the old version: ours are gone
    assert writer.plan(photo, ["beach"], before=now).changes  # and will be written again


def test_without_exchange_a_changed_file_is_still_never_replaced(tmp_path: Path, writer: KeywordWriter,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The fallback (no renameat2: another OS, or a file system that refuses it) checks, then
    renames: a save before the check is kept; only one inside the microseconds between the check and
    the rename can be replaced, which the documentation states."""
    photo = noise_jpeg(tmp_path / "p.jpg", seed=4)
    with atomic.no_exchange():
        plan = writer.plan(photo, ["beach"])
        app_save(photo, "Anna")
        with pytest.raises(FileChanged):
            writer.apply(plan)
        assert exif_keywords(photo)["iptc"] == ["Anna"]
        written = writer.apply(writer.plan(photo, ["beach"]))
    assert exif_keywords(photo)["iptc"] == ["Anna", "beach"]
    assert (written.st_ino, written.st_size) == (photo.lstat().st_ino, photo.lstat().st_size)
    assert leftovers(tmp_path) == []


def test_filled_fields_ride_in_the_same_protected_write(tmp_path: Path, writer: KeywordWriter,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A place's fields go in the keywords' write: a save landing before the swap keeps the person's
    version whole, with neither our keywords nor our city in it."""
    photo = noise_jpeg(tmp_path / "p.jpg", seed=5)
    plan = writer.plan(photo, ["beach"], fill={"XMP-photoshop:City": "Firenze"})
    save_before_call(monkeypatch, [app_prepare(photo, "Anna", "p.jpg_app")])
    with pytest.raises(FileChanged):
        writer.apply(plan)
    monkeypatch.undo()
    city = ["exiftool", "-s3", "-XMP-photoshop:City", str(photo)]
    assert subprocess.run(city, capture_output=True, text=True).stdout.strip() == ""
    assert exif_keywords(photo)["iptc"] == ["Anna"]
    written = writer.apply(writer.plan(photo, ["beach"], fill={"XMP-photoshop:City": "Firenze"}))
    assert subprocess.run(city, capture_output=True, text=True).stdout.strip() == "Firenze"
    assert exif_keywords(photo)["iptc"] == ["Anna", "beach"] and written.st_ino == photo.lstat().st_ino
