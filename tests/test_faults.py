"""Faults and bad input, on the real daemon: a full disk, permissions, symbolic links, a decompression
bomb.  Each must cost one log line naming the file and the reason, leave the photo as it was, and
never stop the daemon; passing troubles (space comes back, a chmod) heal by themselves.

One daemon serves the module.  It logs as JSON (``--log-format json``), so the tests read its lines
as records (event, path, reason, tags) and also prove every line of a real run parses.  As root it
runs without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, so file modes bind it as they bind a user.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import CORPUS, Daemon, exif_keywords, noise_jpeg, status, tagwatch, wait_for, write_config
from procstats import status_kb
from tagwatch.status import state_path

# One daemon for the module (a module-scoped fixture) is built on each pytest-xdist worker that runs
# one of the module's tests: keep them on one worker (scripts/test: --dist loadgroup), built once
pytestmark = pytest.mark.xdist_group("faults")

PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_SETPCAP = 1, 2, 8
MAX_MEGAPIXELS = 20
TMPFS_BYTES = 1 << 20


def drop_file_capabilities() -> tuple[bool, Callable[[], None] | None]:
    """Whether file modes will bind the daemon, and the preexec_fn that makes it so for root:
    it removes the capabilities that let root ignore file modes from the bounding set, so the
    exec'd daemon starts without them."""
    dac = 1 << CAP_DAC_OVERRIDE | 1 << CAP_DAC_READ_SEARCH
    own = effective_capabilities(os.getpid())
    if os.geteuid() != 0 and not own & dac:
        return True, None
    if not own & 1 << CAP_SETPCAP:
        return False, None
    libc = ctypes.CDLL(None, use_errno=True)  # loaded here: the child must not dlopen after fork

    def preexec() -> None:
        for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
            if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")
    return True, preexec


def effective_capabilities(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    raise AssertionError("no CapEff in /proc status")


def mount_tmpfs(folder: Path) -> str | None:
    """Mount a 1 MiB tmpfs on ``folder``; None, or why it cannot be done here."""
    if os.geteuid() != 0:
        return "mounting a small tmpfs needs root (CAP_SYS_ADMIN); run the suite as root to test a full disk"
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES},mode=0755", "tmpfs",
                             str(folder)], capture_output=True, text=True)
    if result.returncode != 0:
        return f"cannot mount a tmpfs here: {result.stderr.strip()}"
    return None


def records(daemon: Daemon) -> list[dict[str, object]]:
    """Every line the daemon logged, parsed: a line that is not one JSON object fails the test."""
    return [json.loads(line) for line in daemon.log().splitlines() if line.strip()]


def about(daemon: Daemon, path: Path, event: str | None = None) -> list[dict[str, object]]:
    return [r for r in records(daemon) if r.get("path") == str(path) and event in (None, r["event"])]


def complaints(daemon: Daemon, path: Path) -> list[dict[str, object]]:
    """Lines at WARNING or above about ``path`` (or naming it in their message)."""
    return [r for r in records(daemon) if r["level"] in ("warning", "error")
            and (r.get("path") == str(path) or str(path) in str(r["message"]))]


def tagged(path: Path) -> bool:
    found = exif_keywords(path)
    return len(found["iptc"]) == 3 and sorted(found["iptc"]) == sorted(found["xmp"])


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> Iterator[Daemon]:
    base = tmp_path_factory.mktemp("faults")
    root, small, outside = base / "photos", base / "small", base / "outside"
    for folder in (root / "perm", root / "links", root / "bombs", small, outside):
        folder.mkdir(parents=True)
    # Links in place before the start: the first scan walks past them too.
    noise_jpeg(outside / "outside.jpg", seed=90)
    (root / "links" / "up").symlink_to("..")  # a loop: photos/links/up/links/up/...
    (root / "links" / "out").symlink_to(outside)  # a way out of the watched root
    (root / "links" / "file.jpg").symlink_to(outside / "outside.jpg")
    no_tmpfs = mount_tmpfs(small)
    config = write_config(base / "conf", tiny_checkpoint, watch=[root, small], top_k=3)
    config.write_text(f"max_megapixels = {MAX_MEGAPIXELS}\n" + config.read_text(encoding="utf-8"),
                      encoding="utf-8")
    modes_bind, preexec = drop_file_capabilities()
    daemon = Daemon(config, base / "daemon.log", args=["--log-format", "json"], preexec_fn=preexec)
    try:
        daemon.start()
        assert daemon.proc is not None
        if modes_bind:  # the permission tests mean what they say only if the override is really gone
            dac = 1 << CAP_DAC_OVERRIDE | 1 << CAP_DAC_READ_SEARCH
            assert not effective_capabilities(daemon.proc.pid) & dac
        warm = noise_jpeg(root / "warm.jpg", seed=91)  # the model is loaded before any test measures
        wait_for(lambda: tagged(warm))
        daemon.root, daemon.small, daemon.outside = root, small, outside  # type: ignore[attr-defined]
        daemon.no_tmpfs, daemon.modes_bind = no_tmpfs, modes_bind  # type: ignore[attr-defined]
        yield daemon
        assert daemon.stop() == 0
        records(daemon)  # the whole run, start to stop, is JSON lines
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.kill()
        if no_tmpfs is None:
            subprocess.run(["umount", "-l", str(small)], check=False)


def test_a_full_disk_leaves_the_photo_intact_and_tagging_resumes_when_space_returns(faulty: Daemon) -> None:
    small: Path = faulty.small  # type: ignore[attr-defined]
    if faulty.no_tmpfs:  # type: ignore[attr-defined]
        pytest.skip(faulty.no_tmpfs)  # type: ignore[attr-defined]
    source = noise_jpeg(small.parent / "full-source.jpg", seed=92, size=(480, 360))
    original = source.read_bytes()
    pages = -(-len(original) // 4096) + 1
    free = os.statvfs(small).f_bavail * os.statvfs(small).f_frsize
    filler = small / "filler.bin"
    with filler.open("wb") as handle:  # leave room for the photo, not for a rewritten copy of it
        handle.write(b"\0" * (free - pages * 4096))
    photo = small / "full.jpg"
    shutil.copyfile(source, photo)

    first = wait_for(lambda: about(faulty, photo, "retrying"))[0]  # type: ignore[index]
    assert "no space left on device" in str(first["reason"])
    state = state_path(faulty.config.parent / "state" / "tagwatch.db")

    def error_time() -> float | None:
        error = json.loads(state.read_text())["last_error"] or {}
        return error.get("time") if error.get("path") == str(photo) else None

    seen = wait_for(error_time)
    wait_for(lambda: (error_time() or 0) > seen)  # it tried again, still full: no new line for that
    assert photo.read_bytes() == original
    assert sorted(os.listdir(small)) == ["filler.bin", "full.jpg"]  # no temp file left behind
    assert exif_keywords(photo) == {"iptc": [], "xmp": []}

    filler.unlink()  # space returns; nothing touches the photo
    wait_for(lambda: tagged(photo) and about(faulty, photo, "tagged"))  # the line follows the file's rename
    assert len(about(faulty, photo, "tagged")) == 1
    assert len(complaints(faulty, photo)) == 1, complaints(faulty, photo)
    # status no longer calls it an error that will be retried: it was, and the photo is done
    wait_for(lambda: (json.loads(state.read_text())["last_error"] or {}).get("resolved"))
    report = tagwatch("status", "--config", str(faulty.config))
    line = next(line for line in report.stdout.splitlines() if line.startswith("last error"))
    assert "no space left on device" in line and "(retried: done since) at " in line, line
    assert "will retry" not in line


def needs_modes(daemon: Daemon) -> None:
    if not daemon.modes_bind:  # type: ignore[attr-defined]
        pytest.skip("root here cannot drop CAP_DAC_OVERRIDE (no CAP_SETPCAP): file modes would not bind "
                    "the daemon")


def test_an_unreadable_photo_is_reported_once_and_tagged_after_chmod(faulty: Daemon) -> None:
    needs_modes(faulty)
    root: Path = faulty.root  # type: ignore[attr-defined]
    staging = root.parent / "staging"
    locked = noise_jpeg(staging / "locked.jpg", seed=93)
    locked.chmod(0o000)
    os.rename(locked, root / "perm" / "locked.jpg")
    locked = root / "perm" / "locked.jpg"
    record = wait_for(lambda: about(faulty, locked, "skipped"))[0]  # type: ignore[index]
    assert record["reason"] == "cannot read: Permission denied"

    after = noise_jpeg(root / "perm" / "after.jpg", seed=94)  # the daemon keeps going
    wait_for(lambda: tagged(after))
    locked.chmod(0o644)  # an attribute change, no new content: the daemon must hear of it
    wait_for(lambda: tagged(locked))
    assert len(complaints(faulty, locked)) == 1, complaints(faulty, locked)


def test_a_read_only_photo_is_left_alone_until_made_writable(faulty: Daemon) -> None:
    """tagwatch's own rule (it reads the mode), so it holds for root with every capability too."""
    root: Path = faulty.root  # type: ignore[attr-defined]
    source = noise_jpeg(root.parent / "staging" / "ro.jpg", seed=95)
    original = source.read_bytes()
    source.chmod(0o444)
    photo = root / "perm" / "ro.jpg"
    os.rename(source, photo)
    record = wait_for(lambda: about(faulty, photo, "skipped"))[0]  # type: ignore[index]
    assert "read-only" in str(record["reason"])
    assert photo.read_bytes() == original and os.stat(photo).st_mode & 0o777 == 0o444
    photo.chmod(0o644)
    wait_for(lambda: tagged(photo))
    assert len(complaints(faulty, photo)) == 1, complaints(faulty, photo)


def test_a_folder_that_takes_no_new_files_is_tried_again_after_its_chmod(faulty: Daemon) -> None:
    """tagwatch writes a copy beside the photo and renames it over: a folder without write permission
    fails the photo; the chmod that cures it is an attribute change of the folder, not of the photo,
    and it must make tagwatch try again."""
    needs_modes(faulty)
    root: Path = faulty.root  # type: ignore[attr-defined]
    folder = root / "perm" / "no-new-files"
    folder.mkdir()
    source = noise_jpeg(root.parent / "staging" / "in-ro.jpg", seed=101)
    folder.chmod(0o555)
    try:
        photo = folder / "in-ro.jpg"
        os.rename(source, photo)  # the test may (root, with its override); the daemon may not write here
        record = wait_for(lambda: about(faulty, photo, "skipped"))[0]  # type: ignore[index]
        assert str(record["reason"]).endswith(f"cannot create a file in {folder}: Permission denied")
        folder.chmod(0o755)
        wait_for(lambda: tagged(photo))
        assert len(complaints(faulty, photo)) == 1, complaints(faulty, photo)
    finally:
        folder.chmod(0o755)


def test_symbolic_links_are_never_followed_and_nothing_outside_is_written(faulty: Daemon) -> None:
    root: Path = faulty.root  # type: ignore[attr-defined]
    outside: Path = faulty.outside  # type: ignore[attr-defined]
    before = {p.name: p.read_bytes() for p in outside.iterdir()}
    # New links while running (a folder holding two, moved in whole: watchdog reports a link to a
    # folder found in a new folder as a new folder), and a change outside a followed link would see
    staged = root.parent / "staging" / "again"
    staged.mkdir(parents=True)
    (staged / "up").symlink_to("../..")
    (staged / "out").symlink_to(outside)
    os.rename(staged, root / "links" / "again")
    (root / "links" / "new.jpg").symlink_to(outside / "outside.jpg")
    noise_jpeg(outside / "later.jpg", seed=96)
    before["later.jpg"] = (outside / "later.jpg").read_bytes()
    photo = noise_jpeg(root / "links" / "real.jpg", seed=97)  # ...and the daemon keeps tagging
    wait_for(lambda: tagged(photo))
    wait_for(lambda: about(faulty, root / "links" / "new.jpg", "skipped"))

    assert {p.name: p.read_bytes() for p in outside.iterdir()} == before
    for name in before:
        assert exif_keywords(outside / name) == {"iptc": [], "xmp": []}
    through_links = [r for r in records(faulty) if "/up/" in str(r.get("path"))
                     or "/out/" in str(r.get("path")) or str(outside) in str(r.get("path"))]
    assert through_links == []
    link = about(faulty, root / "links" / "new.jpg")
    assert [r["reason"] for r in link] == ["a symbolic link (not followed)"]
    assert os.path.islink(root / "links" / "new.jpg")


def test_a_decompression_bomb_is_refused_without_decoding(faulty: Daemon) -> None:
    root: Path = faulty.root  # type: ignore[attr-defined]
    data = bytearray(noise_jpeg(root.parent / "bomb-source.jpg", seed=98, size=(64, 64)).read_bytes())
    sof = data.index(b"\xff\xc0")  # baseline frame header: length, precision, height, width
    data[sof + 5:sof + 9] = (40000).to_bytes(2, "big") * 2
    assert len(data) < 10_000  # a few KB that claim 1600 megapixels
    assert faulty.proc is not None
    peak_before = status_kb(faulty.proc.pid).get("VmHWM")
    assert peak_before is not None, "no VmHWM in /proc status"
    bomb = root / "bombs" / "bomb.jpg"
    bomb.write_bytes(bytes(data))
    record = wait_for(lambda: about(faulty, bomb, "skipped"))[0]  # type: ignore[index]
    assert record["reason"] == (f"refused: 1600.0 megapixels, over the limit of {MAX_MEGAPIXELS} "
                                "(max_megapixels); could be a decompression bomb, so it was not decoded")
    after = noise_jpeg(root / "bombs" / "after.jpg", seed=99)
    wait_for(lambda: tagged(after))
    peak_after = status_kb(faulty.proc.pid).get("VmHWM")
    assert peak_after is not None, "no VmHWM in /proc status"
    # Decoding it would take 4.8 GB; the daemon's peak memory did not move by even a tenth of that
    assert peak_after - peak_before < 200 * 1024
    assert exif_keywords(bomb) == {"iptc": [], "xmp": []} and len(complaints(faulty, bomb)) == 1


def test_json_log_lines_carry_the_facts(faulty: Daemon) -> None:
    root: Path = faulty.root  # type: ignore[attr-defined]
    photo = noise_jpeg(root / "perm" / "json.jpg", seed=100)
    wait_for(lambda: tagged(photo) and about(faulty, photo, "tagged"))  # the line follows the file's rename
    (line,) = about(faulty, photo, "tagged")
    assert line["level"] == "info"
    assert sorted(line["tags"]) == sorted(exif_keywords(photo)["iptc"])  # type: ignore[arg-type]
    assert str(line["time"])[:4].isdigit() and "T" in str(line["time"])
    moved = root / "perm" / "json-moved.jpg"
    os.rename(photo, moved)
    (move,) = wait_for(lambda: about(faulty, moved, "moved"))  # type: ignore[misc]
    assert move["from"] == str(photo)
    link = root / "perm" / "json-link.jpg"  # this test's own skip: other tests' may run in another worker
    link.symlink_to(faulty.outside / "outside.jpg")  # type: ignore[attr-defined]
    (skip,) = wait_for(lambda: about(faulty, link, "skipped"))  # type: ignore[misc]
    assert skip["reason"] == "a symbolic link (not followed)"
    assert {r["event"] for r in records(faulty)} >= {"tagged", "moved", "skipped", "log"}


def test_pillow_warnings_are_one_log_line_naming_the_photo(tmp_path: Path, config_file) -> None:
    """Pillow warns about damage it works around; each warning is one line in the log's format that
    names the photo (Python's own are two lines, no file name, and no JSON).  The decodes run in
    threads, so the file named is the one each thread decodes."""
    photos = tmp_path / "photos"
    photos.mkdir()
    exif, mpo = "pillow__hopper_bad_exif.jpg", "pillow__sugarshack_bad_mpo_header.jpg"
    for name in (exif, mpo):
        (photos / name).write_bytes((CORPUS / name).read_bytes())
    result = tagwatch("--log-format", "json", "scan", "-v", "--config", str(config_file()), str(photos))
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines()]  # no stray line: all JSON
    warned = [(Path(r["path"]).name, r["level"], r["reason"]) for r in lines if "reason" in r]
    assert sorted(warned) == [  # the damaged EXIF is worth a warning, an MPO header read as a JPEG not
        (exif, "warning", "Corrupt EXIF data. Expecting to read 12 bytes but only got 2."),
        (mpo, "debug", "Image appears to be a malformed MPO file, it will be interpreted as a base JPEG "
                       "file"),
    ]
    assert all(len(exif_keywords(photos / name)["iptc"]) == 3 for name in (exif, mpo))


def test_a_folder_that_cannot_be_listed_keeps_its_photos_records_and_is_taken_up_once_it_can(
        tmp_path: Path, tiny_checkpoint: Path) -> None:
    """A folder the daemon cannot list at its start (chmod 000): its photos are not deleted from the
    store (they may be fine); once a chmod lets it in, the folder is scanned and watched, no restart."""
    modes_bind, preexec = drop_file_capabilities()
    if not modes_bind:
        pytest.skip("root here cannot drop CAP_DAC_OVERRIDE (no CAP_SETPCAP): file modes would not bind "
                    "the daemon")
    root = tmp_path / "photos"
    secret = root / "secret"
    known = noise_jpeg(secret / "s.jpg", seed=102)
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[root], top_k=3)
    scanned = tagwatch("scan", "--config", str(config), str(root))
    assert scanned.returncode == 0, scanned.stderr
    assert tagged(known)
    secret.chmod(0o000)
    daemon = Daemon(config, tmp_path / "daemon.log", preexec_fn=preexec)
    try:
        daemon.start()
        daemon.wait_log(f"{secret}: cannot list folder: Permission denied")
        daemon.wait_log("scan: ")
        early = noise_jpeg(secret / "early.jpg", seed=103)  # the test may write there; the daemon not see
        secret.chmod(0o755)
        wait_for(lambda: tagged(early))
        mark = daemon.wait_log(f"{secret}: the folder can be listed now").index("can be listed now")
        daemon.wait_log(f"scan of {root}:", since=mark)
        later = noise_jpeg(secret / "later.jpg", seed=104)  # seen only if the folder is watched now
        wait_for(lambda: tagged(later))
        log = daemon.log()
        assert not any(said in log for said in (f"{known}: deleted", f"tagged {known}", f"checked {known}"))
        assert status(config)["tagged"] == 3  # the record of s.jpg was kept
    finally:
        secret.chmod(0o755)
        assert daemon.stop() == 0
