"""The review page's counts and its saves, as two users met them (reports xS #5, xP #3 and #6): a
real daemon hosting the page in the default ``append`` mode, the trained shapes model, real JPEGs
read back with exiftool, and Debian's chromium through its chromedriver.

* After a tag's threshold was raised, the *Tags* list, the tag page and the grid's tag filter counted
  only the photos the list predicted it for now ("pastel: 8 photos") while 24 files still carried
  the pastel tagwatch had written, and the filter could not find them to reject it.
* The Status tab said "watching 1 folders".
* With the config folder read-only (the sandbox of a systemd unit an older tagwatch wrote), saving
  a correction answered a bare "Internal Server Error" and logged a traceback.

The database lives outside the config folder, as under the systemd unit (``~/.local/share``
against ``~/.config``), so the config folder alone can be made read-only.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

import synthetic
from conftest import (
    REPO,
    SHAPES_CHECKPOINT,
    SHAPES_CONFIG,
    Daemon,
    chromium,
    exif_keywords,
    read_only_folder,
    status,
    tagwatch,
    wait_for,
)
from test_web import THRESHOLD, chips, screenshot, tags_toml, text

pytestmark = pytest.mark.xdist_group("web-counts")  # one worker: one daemon, one browser

STARS = ["red", "green", "blue", "orange", "yellow", "purple"]
PHOTOS = [(colour, "star") for colour in STARS] + [("red", "circle"), ("blue", "circle")]
REJECT = '#file-keywords button[data-action="remove"][data-keyword="star"]'  # star's ✕ on a photo page


@dataclass
class Library:
    root: Path
    conf: Path
    config: Path
    daemon: Daemon
    base: str
    token: str


def name(colour: str, shape: str) -> str:
    return f"{colour}-{shape}.jpg"


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Library]:
    """Eight shape photos in one watched folder, tagged by a daemon (append mode, the default) that
    hosts the review page; the database in a folder of its own, beside the config folder."""
    base = tmp_path_factory.mktemp("web-counts")
    root, conf = base / "photos", base / "conf"
    root.mkdir()
    for number, (colour, shape) in enumerate(PHOTOS):
        photo = synthetic.make_photo(colour, shape, 900 + number, (320, 240))
        photo.save(root / name(colour, shape), quality=88)
    conf.mkdir()
    (conf / "tags.toml").write_text(tags_toml(), encoding="utf-8")
    config = conf / "config.toml"
    config.write_text("\n".join([
        f"watch = [{json.dumps(str(root))}]", 'tags = "tags.toml"', 'overrides = "overrides.toml"',
        f"database = {json.dumps(str(base / 'state' / 'tagwatch.db'))}", "[model]",
        f"name = {json.dumps(str(SHAPES_CONFIG))}", f"pretrained = {json.dumps(str(SHAPES_CHECKPOINT))}",
        "[tagging]", f"threshold = {THRESHOLD}", "top_k = 3",
        # quiet_ms: a photo cut short fails after 1 s unchanged, not 5 (the last error's test)
        "[batch]", "size = 8", "max_wait_ms = 100", "settle_ms = 300", "quiet_ms = 1000",
        "[web]", "enabled = true", "port = 0", ""]), encoding="utf-8")
    daemon = Daemon(config, base / "daemon.log").start()
    try:
        port = int(re.search(r"review page on http://127\.0\.0\.1:(\d+)/", daemon.log()).group(1))
        token = (base / "state" / "web-token").read_text().strip()
        wait_for(lambda: status(config)["tagged"] == len(PHOTOS), timeout=120, interval=0.3)
        yield Library(root, conf, config, daemon, f"http://127.0.0.1:{port}", token)
    finally:
        assert daemon.stop() == 0


@pytest.fixture(scope="module")
def browser(library: Library) -> Iterator[object]:
    with chromium() as driver:
        driver.get(f"{library.base}/?token={library.token}")
        yield driver


def words(driver: object, selector: str) -> str:
    """The text of ``selector`` with its white space as one space each."""
    return " ".join(text(driver, selector).split())


def carrying(library: Library, keyword: str) -> set[str]:
    """The photos whose file carries ``keyword``, as exiftool reads them."""
    return {p.name for p in library.root.glob("*.jpg") if keyword in exif_keywords(p)["iptc"]}


def test_a_keyword_the_files_carry_is_counted_and_found_after_its_threshold_was_raised(
        library: Library, browser) -> None:
    """Raise star's threshold in append mode: the files keep the star tagwatch wrote.  The Tags list
    and the tag page say how many files carry it and how many the list predicts now, in words; the
    grid's filter lists every file carrying it, marks those no longer predicted, and a ✕ there
    takes it out of the file."""
    from selenium.webdriver.common.by import By

    stars = {name(colour, "star") for colour in STARS}
    assert carrying(library, "star") == stars
    exported = tagwatch("export", "--scores", "--config", str(library.config), str(library.root))
    assert exported.returncode == 0, exported.stderr
    scores = sorted((record["star"], Path(path).name) for path, record in json.loads(exported.stdout).items()
                    if "star" in record)
    assert {photo for _, photo in scores} == stars
    # the new threshold in the widest gap between two star photos' scores: some stay predicted, some not
    gap = max(range(1, len(scores)), key=lambda i: scores[i][0] - scores[i - 1][0])
    threshold = round((scores[gap - 1][0] + scores[gap][0]) / 2, 4)
    predicted = {photo for score, photo in scores if score > threshold}
    kept = stars - predicted
    assert predicted and kept
    mark = len(library.daemon.log())
    tags = library.conf / "tags.toml"
    raised = f'keyword = "star"  # shape\nthreshold = {threshold}\n'
    tags.write_text(tags.read_text(encoding="utf-8").replace('keyword = "star"  # shape\n', raised),
                    encoding="utf-8")
    library.daemon.wait_log("re-scored", since=mark)
    assert carrying(library, "star") == stars, "append mode takes no keyword out"

    browser.get(f"{library.base}/tags")
    row = 'tr[data-keyword="star"]'
    assert words(browser, f"{row} td.carried") == str(len(stars))
    assert words(browser, f"{row} td.predicted") == str(len(predicted))
    headers = words(browser, "table.tags thead")
    assert "in the files" in headers and "predicted now" in headers
    assert 'With [tagging] mode = "append" a photo keeps a keyword tagwatch wrote' in words(browser,
                                                                                          "p.summary")
    red = 'tr[data-keyword="red"]'  # a tag nothing changed shows the same number twice
    assert words(browser, f"{red} td.carried") == words(browser, f"{red} td.predicted")

    browser.find_element(By.CSS_SELECTOR, f"{row} a").click()
    wait_for(lambda: words(browser, "#carried") != "")
    counts = words(browser, "#counts")
    assert f"{len(predicted)} predicted now (top_k, levels and corrections applied)" in counts, counts
    assert (f"{len(stars)} carry star in the file: {len(kept)} of them keep the star tagwatch wrote before "
            '([tagging] mode = "append" never takes out a keyword tagwatch wrote), see them to reject it'
            ) in counts

    browser.find_element(By.LINK_TEXT, "see them").click()
    wait_for(lambda: "carrying" in words(browser, "#summary"))
    cards = {c.get_attribute("data-path"): c for c in browser.find_elements(By.CSS_SELECTOR, "li.card")}
    assert {Path(p).name for p in cards} == stars, "the filter finds every file carrying it"
    summary = words(browser, "#summary")
    assert summary.startswith(f"{len(stars)} photos carrying star"), summary
    assert (f"({len(predicted)} of them predicted now; the other {len(kept)} keep the star tagwatch wrote "
            'before: [tagging] mode = "append" never takes out a keyword tagwatch wrote, so ✕ on a '
            "photo's star takes it out)") in summary
    marked = {Path(p).name for p, c in cards.items() if c.find_elements(By.CSS_SELECTOR, ".kept")}
    assert marked == kept
    screenshot(browser, "web-counts-filter")

    # the person's goal: find a photo that keeps it, and take it out
    photo = sorted(kept)[0]
    browser.find_element(By.CSS_SELECTOR, f'li.card[data-path="{library.root / photo}"] a').click()
    assert chips(browser, "#file-keywords")["star"] == "ours"
    browser.find_element(By.CSS_SELECTOR, REJECT).click()
    wait_for(lambda: chips(browser, "#file-keywords").get("star") == "rejected")
    wait_for(lambda: "star" not in exif_keywords(library.root / photo)["iptc"])
    browser.get(f"{library.base}/tags")
    wait_for(lambda: words(browser, f"{row} td.carried") == str(len(stars) - 1))
    assert words(browser, f"{row} td.predicted") == str(len(predicted))


def test_the_status_tab_counts_one_folder_in_the_singular(library: Library, browser) -> None:
    """It said "watching 1 folders", where `tagwatch status` says "1 folder"."""
    browser.get(f"{library.base}/status")
    wait_for(lambda: "watching" in words(browser, "#status"))
    shown = words(browser, "#status")
    assert "watching 1 folder," in shown and "1 folders" not in shown, shown


def test_the_status_tab_says_a_refused_tag_list_is_not_in_use_as_tagwatch_status_does(
        library: Library, browser) -> None:
    """A desk editor's broken edit of the tag list: `tagwatch status` says NOT IN USE with the reason,
    the Status tab said all was well (the page's own tag views named it, the daemon's refusal no)."""
    with library.daemon.restoring(library.conf / "tags.toml", "tag list ") as tags:
        mark = len(library.daemon.log())
        broken = '\n[[tag]]\nkeyword = "Polizei"\nparent = "Blaulicht"\n'
        tags.write_text(tags.read_text(encoding="utf-8") + broken, encoding="utf-8")
        library.daemon.wait_log("tag list not reloaded", since=mark)
        wait_for(lambda: "tag list" in status(library.config)["daemon"]["rejected"])
        reason = status(library.config)["daemon"]["rejected"]["tag list"]
        assert "parent 'Blaulicht' of 'Polizei' is not a keyword in this list" in reason
        browser.get(f"{library.base}/status")
        wait_for(lambda: "not in use" in words(browser, "#status"))
        assert (f"not in usethe tag list on disk, refused: {reason}; the previous one is in use until it "
                "is fixed") in words(browser, "#status")  # (a <dt> and its <dd>: no space between)
    wait_for(lambda: "not in use" not in words(browser, "#status"))  # the panel follows by itself


def test_the_status_tab_marks_the_last_error_resolved_once_its_photo_is_tagged_or_gone(
        library: Library, browser) -> None:
    """A photo copied cut short fails, is copied again whole and tagged: the Status tab kept naming it
    as the last error, as `tagwatch status` did.  Both now say it was tagged since, and when."""
    photo = library.root / "cut.jpg"
    synthetic.make_photo("green", "circle", 990, (320, 240)).save(library.conf / "whole.jpg", quality=88)
    whole = (library.conf / "whole.jpg").read_bytes()
    browser.get(f"{library.base}/status")
    try:
        photo.write_bytes(whole[:1500])
        wait_for(lambda: (status(library.config)["daemon"].get("last_error") or {}).get("path") == str(photo))
        reason = status(library.config)["daemon"]["last_error"]["reason"]
        wait_for(lambda: f"cut.jpg: {reason}" in words(browser, "#status"))
        photo.write_bytes(whole)
        wait_for(lambda: f"cut.jpg: {reason} (tagged since) at " in words(browser, "#status"))
        shown = tagwatch("status", "--config", str(library.config)).stdout
        assert f"cut.jpg: {reason} (tagged since) at " in shown, shown
    finally:  # the library as it was for the other tests
        photo.unlink(missing_ok=True)
        wait_for(lambda: status(library.config)["files"] == len(PHOTOS))


def untouched(library: Library) -> list[str]:
    """The star photos whose file carries tagwatch's star and that no correction names (another test
    of the module may have rejected it on one): by name."""
    overrides = library.conf / "overrides.toml"
    rules = overrides.read_text(encoding="utf-8") if overrides.exists() else ""
    return sorted(photo for photo in carrying(library, "star") if str(library.root / photo) not in rules)


def refused(browser: object, base: str, photo: str) -> str:
    """Reject the star of ``photo`` in the browser; the error banner the page answers with."""
    from selenium.webdriver.common.by import By

    browser.get(f"{base}/photo/0/{photo}")  # type: ignore[attr-defined]
    assert chips(browser, "#file-keywords")["star"] == "ours"
    browser.find_element(By.CSS_SELECTOR, REJECT).click()  # type: ignore[attr-defined]
    wait_for(lambda: words(browser, "p.banner.error") != "")
    return words(browser, "p.banner.error")


def nothing_saved(library: Library, photo: str, before: dict[Path, bytes]) -> None:
    """The config folder as it was (no overrides file, no temporary one left), the photo untouched."""
    assert {p: p.read_bytes() for p in library.conf.iterdir()} == before
    assert "star" in exif_keywords(library.root / photo)["iptc"]


def can_mount_read_only(folder: Path) -> bool:
    """Can this user bind-mount a folder read-only in a mount namespace of its own (root, here)?"""
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", 'mount -o bind,ro "$0" "$0" && ! touch "$0/.probe"',
                            str(folder)], capture_output=True)
    return probe.returncode == 0 and not (folder / ".probe").exists()


def test_a_correction_a_read_only_config_folder_cannot_take_is_refused_with_the_reason(
        library: Library, browser, tmp_path: Path) -> None:
    """As the old unit's sandbox does it: `tagwatch web` in a mount namespace where the config
    folder is a read-only bind mount (EROFS, even to root).  The page answers with one line naming
    the file, the cause and `tagwatch service install`; nothing is written and the page goes on."""
    from selenium.webdriver.common.by import By

    if not can_mount_read_only(library.conf):
        pytest.skip("cannot bind-mount a folder read-only here (needs root and unshare)")
    before = {p: p.read_bytes() for p in library.conf.iterdir()}
    log = tmp_path / "web.log"
    with log.open("wb") as err:
        web = subprocess.Popen(
            ["unshare", "-m", "sh", "-c", 'mount -o bind,ro "$0" "$0" && exec "$@"', str(library.conf),
             sys.executable, "-m", "tagwatch", "web", "--config", str(library.config), "--port", "0"],
            stdout=subprocess.PIPE, stderr=err, cwd=REPO, text=True)
    try:
        line = web.stdout.readline()  # type: ignore[union-attr]
        match = re.fullmatch(r"review page: (http://127\.0\.0\.1:\d+)/\?token=(\S+)\n", line)
        assert match, line + log.read_text()
        base = match.group(1)
        browser.get(f"{base}/?token={match.group(2)}")
        photo = untouched(library)[0]
        error = refused(browser, base, photo)
        overrides = library.conf / "overrides.toml"
        assert error.startswith(f"Nothing was saved: cannot write the overrides file {overrides}: read-only "
                                f"file system (in its folder {library.conf}). If tagwatch runs as a systemd "
                                "service whose unit an older tagwatch wrote, its sandbox keeps that folder "
                                "read-only: run `tagwatch service install` again"), error
        assert "(docs/service.md, Upgrading)" in error
        nothing_saved(library, photo, before)
        # the page goes on: its photo, its grid
        assert chips(browser, "#file-keywords")["star"] == "ours"
        browser.get(f"{base}/")
        wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, "li.card")) == len(PHOTOS))
    finally:
        web.terminate()
        assert web.wait(timeout=30) == 0
    logged = log.read_text(encoding="utf-8")
    assert "Traceback" not in logged and "Internal Server Error" not in logged, logged
    assert f"review page: remove 'star' for {library.root / photo} refused: Nothing was saved" in logged


def test_a_correction_an_unwritable_config_folder_cannot_take_is_refused_on_the_daemons_page(
        library: Library, browser) -> None:
    """The daemon's own page, its config folder refusing new files (chmod for a user, the immutable
    attribute for root): the same one-line refusal, with the cause the system gives; a threshold
    saved on a tag's page too (the tag list lives there)."""
    from selenium.webdriver.common.by import By

    photo = untouched(library)[-1]
    before = {p: p.read_bytes() for p in library.conf.iterdir()}
    mark = len(library.daemon.log())
    with read_only_folder(library.conf):
        error = refused(browser, library.base, photo)
        browser.get(f"{library.base}/tag/red")
        field = browser.find_element(By.ID, "threshold")
        field.clear()
        field.send_keys("0.5")
        browser.find_element(By.ID, "save-threshold").click()
        wait_for(lambda: words(browser, "p.banner.error") != "")
        threshold = words(browser, "p.banner.error")
        nothing_saved(library, photo, before)
    cause = "operation not permitted" if "operation not permitted" in error else "permission denied"
    overrides = library.conf / "overrides.toml"
    assert error.startswith(f"Nothing was saved: cannot write the overrides file {overrides}: {cause} "
                            f"(in its folder {library.conf}). Let the user the review page runs as ("), error
    assert "run `tagwatch service install` again" in error
    assert threshold.startswith(f"Nothing was saved: cannot write the tag list {library.conf / 'tags.toml'}: "
                                f"{cause} (in its folder {library.conf})."), threshold
    logged = library.daemon.log()[mark:]
    assert "Traceback" not in logged and "refused: Nothing was saved" in logged, logged
    # writable again: the same correction is saved and reaches the file
    browser.get(f"{library.base}/photo/0/{photo}")
    assert chips(browser, "#file-keywords")["star"] == "ours"
    browser.find_element(By.CSS_SELECTOR, REJECT).click()
    wait_for(lambda: "star" not in exif_keywords(library.root / photo)["iptc"])


def test_the_page_answering_a_saved_threshold_says_its_photos_wait_for_the_re_tag(
        library: Library, browser, tmp_path: Path) -> None:
    """xY #3: right after "Save threshold" the tag page read "2 score above the threshold 0.500;
    4 predicted now": the photos' predictions were the old threshold's until the daemon re-scored
    them.  A `tagwatch web` beside a daemon that is busy (held here with SIGSTOP, so the answer is
    rendered before any re-score) says how many photos still wait for the list as saved and gives
    their counts as last tagged, never as "predicted now"; the panel then follows the re-score by
    itself, with no reload, to the counts of the saved threshold."""
    from selenium.webdriver.common.by import By

    exported = tagwatch("export", "--scores", "--config", str(library.config), str(library.root))
    assert exported.returncode == 0, exported.stderr
    scores = sorted(record["circle"] for record in json.loads(exported.stdout).values() if "circle" in record)
    assert len(scores) == 2, scores  # red-circle and blue-circle
    threshold = round((scores[0] + scores[1]) / 2, 4)  # one of them keeps it, in the saved list
    with page_beside(library, browser, tmp_path / "web.log") as base:
        browser.get(f"{base}/tag/circle")
        before = words(browser, "#counts")
        assert "2 predicted now (top_k, levels and corrections applied); 2 carry circle in the file." \
            in before, before
        with library_held(library):
            save_threshold(browser, threshold)
            answer = words(browser, "#counts")
            assert f"1 score above the threshold {threshold:.3f};" in answer, answer
            assert (f"{len(PHOTOS)} photos still to re-tag with the tag list as it is now: as last tagged, "
                    "2 predicted and 2 carry circle in the file.") in answer, answer
            assert "predicted now" not in answer
        # the re-score reaches the photos: the same page, polling, shows the saved threshold's counts
        wait_for(lambda: "predicted now" in words(browser, "#counts"))
        after = words(browser, "#counts")
        assert "1 score above the threshold" in after and "1 predicted now" in after, after
        assert "2 carry circle in the file: 1 of them keep the circle tagwatch wrote before" in after, after
        assert not browser.find_elements(By.ID, "behind")


@contextmanager
def page_beside(library: Library, browser: object, log: Path) -> Iterator[str]:
    """A `tagwatch web` of the module's config beside its daemon, ``browser`` signed in to it: its
    address.  Stopped (cleanly) on the way out."""
    with log.open("wb") as err:
        web = subprocess.Popen([sys.executable, "-m", "tagwatch", "web", "--config", str(library.config),
                                "--port", "0"], stdout=subprocess.PIPE, stderr=err, cwd=REPO, text=True)
    try:
        line = web.stdout.readline()  # type: ignore[union-attr]
        match = re.fullmatch(r"review page: (http://127\.0\.0\.1:\d+)/\?token=(\S+)\n", line)
        assert match, line + log.read_text()
        browser.get(f"{match.group(1)}/?token={match.group(2)}")  # type: ignore[attr-defined]
        yield match.group(1)
    finally:
        web.terminate()
        assert web.wait(timeout=30) == 0


@contextmanager
def library_held(library: Library) -> Iterator[None]:
    """The daemon stopped (SIGSTOP) meanwhile: a page rendered inside is rendered before any re-score;
    it re-scores what it missed once it goes on."""
    library.daemon.signal(signal.SIGSTOP)
    try:
        yield
    finally:
        library.daemon.signal(signal.SIGCONT)


def save_threshold(browser: object, threshold: float) -> None:
    """Type ``threshold`` into the tag page open in ``browser`` and save it."""
    from selenium.webdriver.common.by import By

    field = browser.find_element(By.ID, "threshold")  # type: ignore[attr-defined]
    field.clear()
    field.send_keys(str(threshold))
    browser.find_element(By.ID, "save-threshold").click()  # type: ignore[attr-defined]
    wait_for(lambda: "wrote 1 threshold into" in words(browser, ".banner.ok"))


def test_the_tags_list_and_the_tag_filter_say_their_photos_wait_for_the_re_tag_too(
        library: Library, browser, tmp_path: Path) -> None:
    """During a re-tag only the tag page was honest: the *Tags* list and the grid's tag filter gave
    the last re-score's counts as "predicted now".  With red's threshold saved above every score and
    the daemon held before it re-scores, both say how many photos are still to re-tag and give their
    counts as last tagged, in the tag page's words; then each follows the re-score by itself, with no
    reload, to the saved threshold's counts (none predicted, every file keeping its red)."""
    from selenium.webdriver.common.by import By

    red = {p.name for p in library.root.glob("red-*.jpg")}
    assert carrying(library, "red") == red and len(red) == 2
    row = 'tr[data-keyword="red"]'
    with page_beside(library, browser, tmp_path / "web.log") as base:
        browser.get(f"{base}/tags")
        assert words(browser, f"{row} td.carried") == words(browser, f"{row} td.predicted") == "2"
        assert not browser.find_elements(By.ID, "behind")
        with library_held(library):
            browser.get(f"{base}/tag/red")
            save_threshold(browser, 0.99)
            browser.get(f"{base}/tags")
            told = words(browser, "#retag")
            assert told == (f"{len(PHOTOS)} photos still to re-tag with the tag list as it is now: the "
                            "counts below are as last tagged, in the files and predicted."), told
            headers = words(browser, "table.tags thead")
            assert "predicted as last tagged" in headers and "predicted now" not in headers, headers
            assert words(browser, f"{row} td.threshold") == "0.990"
            assert words(browser, f"{row} td.carried") == words(browser, f"{row} td.predicted") == "2"
            screenshot(browser, "web-counts-tags-during-retag")
            tags_tab = browser.current_window_handle
            browser.switch_to.new_window("tab")
            browser.get(f"{base}/?tag=red")
            summary = words(browser, "#summary")
            assert summary.startswith(f"2 photos carrying red ({len(PHOTOS)} photos still to re-tag with the "
                                      "tag list as it is now: as last tagged, 2 of them predicted)"), summary
            assert "predicted now" not in summary
            assert not browser.find_elements(By.CSS_SELECTOR, ".kept")
            screenshot(browser, "web-counts-filter-during-retag")
        # the re-score reaches the photos: the grid, polling, shows the saved threshold's counts
        wait_for(lambda: "predicted now" in words(browser, "#summary"))
        summary = words(browser, "#summary")
        assert ("2 photos carrying red (0 of them predicted now; the other 2 keep the red tagwatch wrote "
                "before") in summary, summary
        kept = [words(browser, f'li.card[data-path="{library.root / photo}"] .kept') for photo in sorted(red)]
        assert kept == ["red: not predicted now"] * 2, kept
        assert not browser.find_elements(By.ID, "behind")
        screenshot(browser, "web-counts-retagged-filter")
        # ... and so does the Tags list, left open in the other tab
        browser.close()
        browser.switch_to.window(tags_tab)
        wait_for(lambda: "predicted now" in words(browser, "table.tags thead"))
        assert not browser.find_elements(By.ID, "retag")
        assert words(browser, f"{row} td.carried") == "2" and words(browser, f"{row} td.predicted") == "0"
    assert carrying(library, "red") == red, "append mode takes no keyword out"


def test_a_page_following_a_re_tag_keeps_what_is_typed_and_stops_where_the_re_tag_stands_still(
        library: Library, browser, tmp_path: Path) -> None:
    """Review L4: the grid's tag filter and the *Tags* list reloaded every second while a re-tag was
    on its way, and asked for ever where it never ends (photos the daemon will not re-tag).  Now the
    counts change in place: the filter's text box keeps its focus and what the person typed while
    the re-score moves them, and a photo of the grid a person tabbed to keeps the focus.  Where the
    count stands (the daemon held here), the page asks less often, then stops and says so; the
    re-tag done meanwhile is not followed, and a reload looks again."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    def typing_kept() -> tuple[str, str]:
        """The focused element's name and the filter box's text, as the person sees them."""
        return tuple(browser.execute_script(
            "return [document.activeElement.name || '', document.querySelector('input[name=tag]').value]"))

    with page_beside(library, browser, tmp_path / "web.log") as base:
        # the counts move while the person types in the filter box
        with library_held(library):
            browser.get(f"{base}/tag/green")
            save_threshold(browser, 0.99)
            browser.get(f"{base}/?tag=green")
            assert "still to re-tag" in words(browser, "#summary")
            browser.execute_script("window.notReloaded = true")
            box = browser.find_element(By.NAME, "tag")
            box.click()
            box.send_keys(Keys.END, " and bl")  # not submitted: typing
            assert typing_kept() == ("tag", "green and bl")
        wait_for(lambda: "predicted now" in words(browser, "#summary"))
        assert typing_kept() == ("tag", "green and bl")
        assert browser.execute_script("return window.notReloaded === true"), "the page was reloaded"
        assert not browser.find_elements(By.ID, "behind")

        # ... and while a person tabbing through the grid is on a photo: the cards are swapped, the
        # focus stays on that photo (the whole results were swapped before, and the focus with them)
        orange = str(library.root / name("orange", "star"))
        with library_held(library):
            browser.get(f"{base}/tag/orange")
            save_threshold(browser, 0.99)
            browser.get(f"{base}/?tag=orange")
            assert "still to re-tag" in words(browser, "#summary")
            browser.execute_script("document.querySelector(arguments[0]).focus()",
                                   f'li.card[data-path="{orange}"] a.thumb')
        wait_for(lambda: "predicted now" in words(browser, "#summary"))
        on = browser.execute_script("const e = document.activeElement.closest('li.card'); "
                                    "return e ? e.dataset.path : document.activeElement.tagName")
        assert on == orange, on

        # the count stands still: each ask that finds it so waits twice as long (the first followed
        # here, in the browser), and the fourth stops asking and says so: the page is opened as the
        # third such ask leaves it (what its htmx ask carries), not waited 2 + 4 + 8 s for; the
        # whole sequence is test_a_page_asks_less_often_while_the_count_stands_and_stops
        def asks() -> tuple[str, str]:
            return tuple(browser.execute_script(  # in one go: htmx may swap it between two reads
                "const e = document.getElementById('retag'); "
                "return e ? [e.getAttribute('hx-get') || '', e.getAttribute('hx-trigger') || ''] : ['', '']"))

        with library_held(library):
            browser.get(f"{base}/tag/blue")
            save_threshold(browser, 0.99)
            browser.get(f"{base}/tags")
            assert "still to re-tag" in words(browser, "#retag")
            assert "quiet=0" in asks()[0] and "delay:2s" in asks()[1], asks()
            wait_for(lambda: "quiet=1" in asks()[0])  # asked, found it unchanged: next in 4 s
            assert "delay:4s" in asks()[1], asks()
            behind = int(words(browser, "#behind").split()[0])
            browser.get(f"{base}/tags?was={behind}&quiet=3")
            told = words(browser, "#retag")
            assert "this page stopped following the re-tag: reload to look again" in told, told
            assert not browser.find_elements(By.CSS_SELECTOR, "[hx-trigger]"), "still asking"
        # the daemon re-tags (another tab sees it done); this one no longer asks, so it stays as it was
        tags_tab = browser.current_window_handle
        browser.switch_to.new_window("tab")
        browser.get(f"{base}/tags")
        wait_for(lambda: not browser.find_elements(By.ID, "retag") and "predicted now" in words(
            browser, "table.tags thead"), interval=1)
        browser.close()
        browser.switch_to.window(tags_tab)
        assert words(browser, "#retag") == told
        browser.find_element(By.CSS_SELECTOR, "#retag-stopped a").click()  # reload: looks again
        wait_for(lambda: "predicted now" in words(browser, "table.tags thead"))
        assert not browser.find_elements(By.ID, "retag")


def test_a_page_asks_less_often_while_the_count_stands_and_stops() -> None:
    """How a page follows a re-tag (library.Follow, what each htmx ask carries): 2, 4, 8, 16 s
    between asks while the count of photos still to re-tag stands, then no more asks (the page says
    so); 2 s again whenever the count moves.  Asking every second, for ever where the count stood,
    reloaded the grid and the Tags list under the person's hands (review L4)."""
    from tagwatch.web.library import Follow

    follow, waits = Follow(7), []
    while not follow.stopped:
        waits.append(follow.wait)
        follow = Follow.after(7, *(dict(pair.split("=") for pair in follow.query().split("&"))[k]
                                   for k in ("was", "quiet")))
    assert waits == [2, 4, 8, 16]
    assert Follow.after(6, "7", "3").wait == 2 and not Follow.after(6, "7", "3").stopped  # it moved
    assert Follow.after(7, None, None).wait == 2  # a page opened, not asked for
    assert Follow.after(7, "7", "9").stopped  # a forged count of asks stops, never asks faster
