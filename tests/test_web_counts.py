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
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import synthetic
from conftest import (
    SHAPES_CHECKPOINT,
    SHAPES_CONFIG,
    Daemon,
    exif_keywords,
    status,
    tagwatch,
    wait_for,
)
from test_web import CHROMEDRIVER, CHROMIUM, THRESHOLD, chips, screenshot, tags_toml, text

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
        "[batch]", "size = 8", "max_wait_ms = 100", "settle_ms = 300",
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
    if not CHROMEDRIVER.exists() or not CHROMIUM.exists():
        pytest.skip("chromium and chromium-driver are not installed (scripts/setup-env installs them "
                    "as root)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tempfile.mkdtemp(prefix="tagwatch-chromium-")
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--no-first-run",
                     "--window-size=1280,900", f"--user-data-dir={profile}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.get(f"{library.base}/?token={library.token}")
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


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
    assert "star" not in exif_keywords(library.root / photo)["iptc"]
    browser.get(f"{library.base}/tags")
    wait_for(lambda: words(browser, f"{row} td.carried") == str(len(stars) - 1))
    assert words(browser, f"{row} td.predicted") == str(len(predicted))


def test_the_status_tab_counts_one_folder_in_the_singular(library: Library, browser) -> None:
    """It said "watching 1 folders", where `tagwatch status` says "1 folder"."""
    browser.get(f"{library.base}/status")
    wait_for(lambda: "watching" in words(browser, "#status"))
    shown = words(browser, "#status")
    assert "watching 1 folder," in shown and "1 folders" not in shown, shown
