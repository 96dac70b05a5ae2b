"""The review page, in a real browser: Debian's chromium driven through its chromedriver (Selenium),
against a real daemon hosting the page (``[web] enabled = true``), the trained shapes model, real
JPEGs, and exiftool reading back what was written.

One daemon and one browser serve the whole module; each test works on photos of its own, so the
tests do not depend on their order.  Under pytest-xdist the module's tests go to one worker together
(``xdist_group``, with ``--dist loadgroup`` as scripts/test runs them): spread over two workers, each
would start its own daemon and browser.  Screenshots are kept as artefacts in ``test-artifacts/``
(``TAGWATCH_ARTIFACTS`` moves them).
"""

from __future__ import annotations

import html
import http.client
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

import pytest

import synthetic
from conftest import (
    REPO,
    SHAPES_CHECKPOINT,
    SHAPES_CONFIG,
    Daemon,
    chromium,
    exif_keywords,
    status,
    tagwatch,
    wait_for,
    write_config,
)
from tagwatch.config import load_config
from tagwatch.model import model_identity
from tagwatch.status import AlreadyRunning, hold_lock
from tagwatch.store import Store
from tagwatch.web.auth import Guard

pytestmark = pytest.mark.xdist_group("web")  # one worker: one daemon, one browser (see above)

ARTIFACTS = Path(os.environ.get("TAGWATCH_ARTIFACTS", REPO / "test-artifacts"))
THRESHOLD = json.loads((REPO / "tests" / "data" / "shapes-clip.train.json").read_text())["threshold"]
TAGS = [*synthetic.COLOURS, *synthetic.SHAPES]
# (folder, colour, shape): every photo of the module's library, named colour-shape.jpg
PHOTOS = [("2024", "red", "star"), ("2024", "green", "star"), ("2024", "blue", "square"),
          ("2024", "orange", "triangle"), ("2025", "yellow", "circle"), ("2025", "purple", "vertical bar"),
          ("2025", "orange", "circle"), ("2025", "blue", "horizontal bar")]
PERSONS = {"blue-square.jpg": "holiday"}  # keywords a person put in before tagwatch saw the photo


def photo_name(colour: str, shape: str) -> str:
    return f"{colour}-{shape.replace(' ', '-')}.jpg"


@dataclass
class Site:
    root: Path
    conf: Path
    config: Path
    daemon: Daemon
    base: str
    port: int
    token: str

    @property
    def csrf(self) -> str:
        return Guard(self.token, self.port).csrf

    def request(self, method: str, path: str, *, token: bool = True, body: str | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """A raw HTTP request: the path goes out exactly as written (``..`` and all)."""
        code, _, answer = self.exchange(method, path, token=token, body=body, headers=headers)
        return code, answer

    def exchange(self, method: str, path: str, *, token: bool = True, body: str | None = None,
                 headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """:meth:`request`, with the answer's headers (lower-case names)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        sent = {"Authorization": f"token {self.token}"} if token else {}
        if body is not None:
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        sent.update(headers or {})
        try:
            connection.request(method, path, body=body, headers=sent)
            response = connection.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            connection.close()

    def encoded(self) -> int:
        return status(self.config)["encoded"]


def tags_toml(extra: str = "") -> str:
    blocks = "".join(f'[[tag]]\nkeyword = "{k}"  # {"colour" if k in synthetic.COLOURS else "shape"}\n\n'
                     for k in TAGS)
    return f"# The shapes model's tags; the review page must keep these comments.\n\n{blocks}{extra}"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A watched library of shape photos, tagged by a daemon that hosts the review page."""
    base = tmp_path_factory.mktemp("web")
    root, conf = base / "photos", base / "conf"
    for number, (folder, colour, shape) in enumerate(PHOTOS):
        path = root / folder / photo_name(colour, shape)
        path.parent.mkdir(parents=True, exist_ok=True)
        synthetic.make_photo(colour, shape, 700 + number, (320, 240)).save(path, quality=88)
        if path.name in PERSONS:
            subprocess.run(["exiftool", "-q", "-overwrite_original", f"-IPTC:Keywords={PERSONS[path.name]}",
                            f"-XMP-dc:Subject={PERSONS[path.name]}", str(path)], check=True)
    conf.mkdir()
    (conf / "tags.toml").write_text(tags_toml(), encoding="utf-8")
    config = conf / "config.toml"
    config.write_text("\n".join([
        f"watch = [{json.dumps(str(root))}]", 'tags = "tags.toml"', 'overrides = "overrides.toml"',
        'database = "state/tagwatch.db"', "[model]", f"name = {json.dumps(str(SHAPES_CONFIG))}",
        f"pretrained = {json.dumps(str(SHAPES_CHECKPOINT))}",
        "[tagging]", f"threshold = {THRESHOLD}", "top_k = 3", 'mode = "sync"',
        "[batch]", "size = 8", "max_wait_ms = 100", "settle_ms = 300",
        "[web]", "enabled = true", "port = 0", ""]), encoding="utf-8")
    daemon = Daemon(config, base / "daemon.log").start()
    try:
        port = int(re.search(r"review page on http://127\.0\.0\.1:(\d+)/", daemon.log()).group(1))
        token = (conf / "state" / "web-token").read_text().strip()
        wait_for(lambda: status(config)["tagged"] == len(PHOTOS), timeout=120, interval=0.3)
        yield Site(root, conf, config, daemon, f"http://127.0.0.1:{port}", port, token)
    finally:
        assert daemon.stop() == 0
    assert token not in daemon.log(), "the token must never be logged"


@pytest.fixture(scope="module")
def browser(site: Site) -> Iterator[object]:
    """A browser logged in as a person is, with the address the page printed."""
    with chromium() as driver:
        driver.get(f"{site.base}/?token={site.token}")  # as printed: the page sets its cookie
        assert "token=" not in driver.current_url, "the token must leave the address bar"
        yield driver


@pytest.fixture
def tag_list(site: Site) -> Iterator[Path]:
    """The shared daemon's tag list, for a test that edits it (by hand or from the page): put back as it
    was afterwards, the reload waited for, so the module's other tests find the thresholds they expect
    whatever order they run in."""
    with site.daemon.restoring(site.conf / "tags.toml", f"{len(TAGS)} tags") as path:
        yield path


def screenshot(driver: object, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))  # type: ignore[attr-defined]
    return path


def chips(driver: object, scope: str) -> dict[str, str]:
    """keyword → owner class of the chips inside ``scope`` (a CSS selector), read in one go (htmx may
    swap the panel at any moment)."""
    found = driver.execute_script(  # type: ignore[attr-defined]
        "return Array.from(document.querySelectorAll(arguments[0] + ' li.chip'), "
        "c => [c.dataset.keyword, Array.from(c.classList).filter(x => x !== 'chip')[0]])", scope)
    return dict(found)


def text(driver: object, selector: str) -> str:
    """The text of the first element matching ``selector``, "" while there is none (a page loading,
    an htmx swap in flight): read in one go, never a stale element."""
    return driver.execute_script(  # type: ignore[attr-defined]
        "const e = document.querySelector(arguments[0]); return e ? e.textContent : ''", selector)


def dropped(site: Site, name: str, photos: dict[str, tuple[str, str]], seed: int) -> Path:
    """A new folder ``name`` of the watched library with ``photos`` (file name → colour, shape), each
    saved under a hidden name and renamed in, as a copy lands whole; returned once the daemon has
    written each one's two keywords."""
    folder = site.root / name
    folder.mkdir()
    for number, (file, (colour, shape)) in enumerate(photos.items()):
        temp = folder / f".incoming-{number}.jpg"
        synthetic.make_photo(colour, shape, seed + number, (320, 240)).save(temp, quality=88)
        temp.rename(folder / file)
    for file, (colour, shape) in photos.items():
        wait_for(lambda: set(exif_keywords(folder / file)["iptc"]) == {colour, shape})  # noqa: B023
    return folder


# -- what a person sees ------------------------------------------------------------------------------

def test_a_photo_dropped_into_the_folder_appears_in_the_grid_with_its_keywords(site: Site, browser) -> None:
    from selenium.webdriver.common.by import By

    dropped = site.root / "2025" / "red-circle.jpg"
    temp = dropped.with_name(".incoming.jpg")
    synthetic.make_photo("red", "circle", 760, (320, 240)).save(temp, quality=88)
    temp.rename(dropped)  # as a file manager or a sync tool drops it
    wait_for(lambda: set(exif_keywords(dropped)["iptc"]) == {"red", "circle"})

    browser.get(f"{site.base}/?show=recent")
    card = f'li.card[data-path="{dropped}"]'
    assert chips(browser, card) == {"red": "ours", "circle": "ours"}
    first = browser.find_elements(By.CSS_SELECTOR, "li.card")[0]
    assert first.get_attribute("data-path") == str(dropped), "recently tagged comes first"
    image = browser.find_element(By.CSS_SELECTOR, f"{card} img")
    wait_for(lambda: browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth",
                                            image))
    assert image.get_attribute("naturalWidth") == "320"  # the thumbnail, upright and decoded
    assert re.search(r"red 0\.\d{3}", image.get_attribute("title")), "scores on hover"
    # ours and the person's told apart, in the grid of all photos
    browser.get(f"{site.base}/?folder=0/2024")
    assert chips(browser, 'li.card[data-path$="/blue-square.jpg"]') == {
        "holiday": "person", "blue": "ours", "square": "ours"}
    browser.get(f"{site.base}/?tag=star")
    paths = {c.get_attribute("data-path") for c in browser.find_elements(By.CSS_SELECTOR, "li.card")}
    assert paths == {str(site.root / "2024" / "red-star.jpg"), str(site.root / "2024" / "green-star.jpg")}
    browser.get(f"{site.base}/")
    shot = screenshot(browser, "review-grid")
    assert shot.stat().st_size > 10_000
    for page, name in ((f"/photo/0/2024/{photo_name('blue', 'square')}", "review-photo"),
                       ("/tag/red?threshold=0.2", "review-tag"), ("/status", "review-status")):
        browser.get(site.base + page)
        wait_for(lambda: browser.execute_script("return document.readyState") == "complete")
        screenshot(browser, name)
    assert "running, pid" in text(browser, "#status")


def photo_page_at(driver: object, url: str, width: int, name: str) -> dict[str, int]:
    """The photo page ``url`` on a screen ``width`` px wide (Chrome's device emulation; under 800 px
    as a phone): how wide the page lays out, where the score table and its right-most button end, and
    how many score lines keep all their cells on one row.  A screenshot of the table is kept as
    ``name``."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {  # type: ignore[attr-defined]
        "width": width, "height": 844, "screenWidth": width, "screenHeight": 844, "deviceScaleFactor": 1,
        "mobile": width < 800})
    try:
        driver.get(url)  # type: ignore[attr-defined]
        wait_for(lambda: driver.execute_script("return document.readyState") == "complete")  # type: ignore[attr-defined]
        found = driver.execute_script(  # type: ignore[attr-defined]
            "const right = s => Math.max(0, ...Array.from(document.querySelectorAll(s), "
            "e => Math.ceil(e.getBoundingClientRect().right)));"
            "const rows = Array.from(document.querySelectorAll('table.scores tbody tr'));"
            "document.querySelector('table.scores').scrollIntoView();"
            "return {screen: screen.width, page: document.documentElement.scrollWidth, "
            "table: right('table.scores'), buttons: right('table.scores button'), lines: rows.length, "
            "one_row: rows.filter(r => new Set(Array.from(r.cells, c => c.getBoundingClientRect().top)).size "
            "== 1).length}")
        screenshot(driver, name)
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})  # type: ignore[attr-defined]
    return found


def test_the_photo_page_with_its_scores_fits_a_phone_screen(site: Site, browser) -> None:
    """xW #5: at 390 px the score table was 468 px wide: the page scrolled sideways and the reject
    buttons lay beyond the screen's right edge.  Every line shown (floor 0, the longest verdicts); on
    a phone a line's verdict goes under it, on a desktop each line stays one row."""
    url = f"{site.base}/photo/0/2025/{photo_name('blue', 'horizontal bar')}?floor=0"
    phone = photo_page_at(browser, url, 390, "review-photo-phone")
    assert phone["page"] <= phone["screen"] == 390, phone
    assert 0 < phone["buttons"] <= phone["table"] <= 390, phone
    desktop = photo_page_at(browser, url, 1280, "review-photo-scores")
    assert desktop["page"] <= desktop["screen"] == 1280, desktop
    assert desktop["one_row"] == desktop["lines"] == phone["lines"] > phone["one_row"], (desktop, phone)


def test_a_rejected_tag_leaves_the_file_and_stays_out_after_a_tag_list_edit(site: Site, browser,
                                                                            tag_list: Path) -> None:
    from selenium.webdriver.common.by import By

    photo = site.root / "2024" / "green-star.jpg"
    assert set(exif_keywords(photo)["iptc"]) == {"green", "star"}
    browser.get(f"{site.base}/photo/0/2024/green-star.jpg")
    assert chips(browser, "#file-keywords") == {"green": "ours", "star": "ours"}
    button = '#file-keywords button[data-action="{}"][data-keyword="star"]'
    browser.find_element(By.CSS_SELECTOR, button.format("remove")).click()
    # the page shows the correction saved, struck through, and writes it until exiftool reads it back
    wait_for(lambda: chips(browser, "#file-keywords") == {"green": "ours", "star": "rejected"})
    wait_for(lambda: exif_keywords(photo) == {"iptc": ["green"], "xmp": ["green"]})
    wait_for(lambda: not text(browser, "#pending"))
    # still predicted: the log says the correction took it out ("no longer predicted" before)
    assert f"updated {photo}: green; took out, as a correction asks: star" in site.daemon.log()
    overrides = (site.conf / "overrides.toml").read_text(encoding="utf-8")
    assert f'path = "{photo}"\nremove = ["star"]' in overrides
    encoded = site.encoded()

    # a tag-list edit re-scores every photo, "star" still predicted for it: the correction holds
    mark = len(site.daemon.log())
    tag_list.write_text(tag_list.read_text(encoding="utf-8").replace(
        'keyword = "star"  # shape\n', 'keyword = "star"  # shape\nthreshold = 0.3\n'), encoding="utf-8")
    site.daemon.wait_log(f"{len(TAGS)} tags", since=mark)
    log = site.daemon.log()[mark:]
    assert re.search(r"re-scored (\d+) photos?", log).group(1) != "0"
    assert exif_keywords(photo) == {"iptc": ["green"], "xmp": ["green"]}
    assert site.encoded() == encoded
    # and it can be taken back from the page
    browser.get(f"{site.base}/photo/0/2024/green-star.jpg")
    browser.find_element(By.CSS_SELECTOR, button.format("undo")).click()
    wait_for(lambda: chips(browser, "#file-keywords") == {"green": "ours", "star": "ours"})
    assert set(exif_keywords(photo)["iptc"]) == {"green", "star"}


def test_adding_a_keyword_in_the_browser_makes_it_the_persons(site: Site, browser) -> None:
    from selenium.webdriver.common.by import By

    photo = site.root / "2025" / "yellow-circle.jpg"
    browser.get(f"{site.base}/photo/0/2025/yellow-circle.jpg")
    browser.find_element(By.ID, "add-keyword").send_keys("Anna")
    browser.find_element(By.ID, "add-button").click()
    wait_for(lambda: chips(browser, "#file-keywords").get("Anna") == "yours")
    assert "Anna" in exif_keywords(photo)["iptc"]
    assert "Anna" in (site.conf / "overrides.toml").read_text(encoding="utf-8")


def test_a_photo_named_with_a_hash_or_a_question_mark_can_be_corrected(site: Site, browser) -> None:
    """``#`` and ``?`` end a URL's path unless encoded: the photo page's forms and redirects must
    encode them exactly once, as the grid's links do."""
    from selenium.webdriver.common.by import By

    photos = {"Party #2.jpg": ("purple", "triangle"), "What?.jpg": ("yellow", "square")}
    folder = dropped(site, "names", photos, 780)
    for name, (colour, shape) in photos.items():
        photo, url = folder / name, f"/photo/0/names/{quote(name)}"
        browser.get(f"{site.base}/?folder=0/names")
        browser.find_element(By.CSS_SELECTOR, f'li.card[data-path="{photo}"] a').click()
        assert browser.current_url == site.base + url
        browser.find_element(By.CSS_SELECTOR,
                             f'#file-keywords button[data-action="remove"][data-keyword="{shape}"]').click()
        wait_for(lambda: chips(browser, "#file-keywords") == {colour: "ours", shape: "rejected"})  # noqa: B023
        assert browser.current_url.startswith(f"{site.base}{url}?note=rejected")
        wait_for(lambda: exif_keywords(photo) == {"iptc": [colour], "xmp": [colour]})  # noqa: B023
        # a POST to the photo's address, and the token's redirect, come back to that same address
        code, headers, _ = site.exchange("POST", url, body=f"action=undo&keyword={shape}&csrf={site.csrf}")
        assert (code, headers["location"]) == (303, f"{url}?note=restored&k={shape}")
        code, headers, _ = site.exchange("GET", f"{url}?token={site.token}", token=False)
        assert (code, headers["location"]) == (303, url)
        wait_for(lambda: set(exif_keywords(photo)["iptc"]) == {colour, shape})  # noqa: B023


def test_the_page_says_what_a_correction_will_and_will_not_do(site: Site) -> None:
    """A newsroom's findings: ↺ of an added keyword offered an undo that did nothing, a photo set
    aside by untag showed "Writing into the file…" for ever and its tags as "tagged", and an empty
    keyword or a photo deleted meanwhile gave bare error pages."""
    folder = dropped(site, "desk", {"typo.jpg": ("green", "circle"), "aside.jpg": ("yellow", "square"),
                                    "gone.jpg": ("red", "star")}, 790)

    def post(name: str, action: str, keyword: str) -> tuple[int, dict[str, str], str]:
        code, headers, body = site.exchange("POST", f"/photo/0/desk/{name}",
                                            body=f"action={action}&keyword={quote(keyword)}&csrf={site.csrf}")
        return code, headers, body.decode()

    # ↺ of a keyword written for a correction: the rule goes, the keyword stays, and the page says so
    typo = folder / "typo.jpg"
    assert post("typo.jpg", "add", "Dubiln")[0] == 303
    wait_for(lambda: "Dubiln" in exif_keywords(typo)["iptc"])
    code, headers, _ = post("typo.jpg", "undo", "Dubiln")
    assert (code, headers["location"]) == (303, "/photo/0/desk/typo.jpg?note=restored-add&k=Dubiln")
    page = site.request("GET", headers["location"])[1].decode()
    assert "&#39;Dubiln&#39; stays in the photo, as your own keyword" in page, page[-2000:]
    assert 'data-keyword="Dubiln" data-owner="person"' in page  # no ↺ that would do nothing
    assert 'data-action="undo" data-keyword="Dubiln"' not in page.replace("\n", " ")
    assert "Dubiln" in exif_keywords(typo)["iptc"]
    code, headers, _ = post("typo.jpg", "undo", "Dubiln")  # again, from a stale tab: nothing to take back
    page = site.request("GET", headers["location"])[1].decode()
    assert "No correction of &#39;Dubiln&#39; for this photo is left in" in page, page[-2000:]

    # a photo untag set aside: a correction is kept for the scan that brings it back, nothing pends
    aside = folder / "aside.jpg"
    assert tagwatch("untag", "--config", str(site.config), str(aside)).returncode == 0
    code, headers, _ = post("aside.jpg", "add", "Weather")
    page = site.request("GET", headers["location"])[1].decode()
    assert "nothing is written into the photo while untag has set it aside" in page
    assert "Writing into the file" not in page and ">tagged<" not in page
    assert "would be tagged (set aside by untag: `tagwatch scan` of it brings it back)" in page
    assert exif_keywords(aside)["iptc"] == []

    # an empty keyword, and a photo deleted while its page was open: the page says why, in its frame
    code, _, page = post("typo.jpg", "add", "   ")
    assert code == 400 and "Nothing was written: the keyword is empty." in page
    (folder / "gone.jpg").unlink()
    code, _, page = post("gone.jpg", "remove", "red")
    assert code == 404 and "not in the watched folders any more (deleted or renamed" in page
    assert "Nothing was written." in page and 'href="/"' in page
    code, _, page = site.exchange("POST", "/tag/no-such-tag", body=f"threshold=0.3&csrf={site.csrf}")
    assert code == 404 and "&#39;no-such-tag&#39; is not in the tag list" in page.decode()


def test_a_correction_of_a_photo_that_cannot_be_written_is_shown_saved_and_says_why(site: Site,
                                                                                   browser) -> None:
    """A photo made read-only (copied from a card or a NAS): ✕ answered "the photo follows in a
    moment", the daemon then refused the write, and the keyword panel, even reloaded, showed the
    keyword as an ordinary one with ✕, not struck through, no ↺, no word of the failure (only the
    File panel said "failed").  The page knows before the daemon tries: it promises nothing, shows
    the rejection saved, and says beside the keywords why nothing is written; the correction
    reaches the file once write permission is back."""
    from selenium.webdriver.common.by import By

    folder = dropped(site, "card", {"locked.jpg": ("blue", "star")}, 870)
    photo, page = folder / "locked.jpg", f"{site.base}/photo/0/card/locked.jpg"
    photo.chmod(0o444)
    try:
        browser.get(page)
        browser.find_element(By.CSS_SELECTOR,
                             '#file-keywords button[data-action="remove"][data-keyword="star"]').click()
        wait_for(lambda: "note=rejected" in browser.current_url)
        said = text(browser, "p.banner")
        assert said.startswith(f"Rejected 'star': written to {site.conf / 'overrides.toml'}; but nothing is "
                               "written into the photo while tagwatch cannot write it"), said
        assert "follows in a moment" not in said
        assert chips(browser, "#file-keywords") == {"blue": "ours", "star": "rejected"}
        assert browser.find_elements(By.CSS_SELECTOR, '#file-keywords button[data-action="undo"]'
                                                      '[data-keyword="star"]')
        assert "the file is read-only" in text(browser, "#unwritable")
        assert not text(browser, "#pending"), "nothing is on its way"
        # the daemon tries, and is refused: the page, reloaded, still shows the correction, and why
        site.daemon.wait_log(f"{photo}: skipped: keywords not written: the file is read-only")
        browser.get(page)
        assert chips(browser, "#file-keywords") == {"blue": "ours", "star": "rejected"}
        assert text(browser, "#unwritable").startswith(
            "Nothing is written into this photo now: keywords not written: the file is read-only")
        assert "Waiting for it: taking out 'star'." in text(browser, "#unwritable")
        assert set(exif_keywords(photo)["iptc"]) == {"blue", "star"}
    finally:
        photo.chmod(0o644)
    # write permission back (an attribute change the daemon sees): the correction reaches the file
    wait_for(lambda: exif_keywords(photo)["iptc"] == ["blue"])
    browser.get(page)
    wait_for(lambda: not text(browser, "#unwritable") and not text(browser, "#pending"))
    assert chips(browser, "#file-keywords") == {"blue": "ours", "star": "rejected"}
    photo.unlink()  # the module's other photos as they were: a tag page's neighbours count them
    site.daemon.wait_log(f"{photo}: deleted")


def test_the_tag_filter_ignores_case_and_leaves_out_a_keyword_a_person_took_out(site: Site) -> None:
    """`?tag=Purple` found nothing, and a photo a person took purple out of was still listed (and
    counted on the Tags page) as carrying it."""
    folder = dropped(site, "filter", dict.fromkeys(("kept.jpg", "taken.jpg"), ("purple", "triangle")), 800)
    kept, taken = folder / "kept.jpg", folder / "taken.jpg"
    time.sleep(1.1)  # a person's edit, a moment after tagwatch's write (not a write of ours settling)
    subprocess.run(["exiftool", "-q", "-overwrite_original", "-IPTC:Keywords-=purple",
                    "-XMP-dc:Subject-=purple", str(taken)], check=True)
    store = Store(site.conf / "state" / "tagwatch.db")
    try:
        wait_for(lambda: "purple" in store.ledger(store.file(str(taken)).id, "declined"))
    finally:
        store.close()
    for typed in ("purple", "Purple", "PURPLE"):
        page = site.request("GET", f"/?folder=0/filter&tag={typed}")[1].decode()
        assert f'data-path="{kept}"' in page, typed
        assert f'data-path="{taken}"' not in page, typed


@contextmanager
def page_alone(config: Path, root: Path) -> Iterator[Site]:
    """`tagwatch web` on its own (no daemon) for ``config``, as a person opens it beside `tagwatch
    scan`: a test with settings of its own leaves the module's daemon and photos as they were."""
    web = subprocess.Popen([sys.executable, "-m", "tagwatch", "web", "--config", str(config), "--port", "0"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=REPO, text=True)
    try:
        match = re.fullmatch(r"review page: http://127\.0\.0\.1:(\d+)/\?token=(\S+)\n",
                             web.stdout.readline())  # type: ignore[union-attr]
        assert match
        port, token = int(match.group(1)), match.group(2)
        yield Site(root, config.parent, config, None, f"http://127.0.0.1:{port}", port, token)  # type: ignore[arg-type]
    finally:
        web.terminate()
        assert web.wait(timeout=30) == 0


def ours(page: str) -> dict[str, str]:
    """keyword → hover text of each of tagwatch's keyword chips on a page."""
    chip = r'class="chip ours" title="([^"]*)" data-keyword="([^"]*)"'
    return {keyword: hint for hint, keyword in re.findall(chip, page)}


def test_a_level_shows_the_score_it_is_exported_with_and_says_which_tag_it_is_above(tmp_path: Path) -> None:
    """A level written because a tag below it matched (colour above red) showed its own score on the
    page, far below its threshold ("score -0.035, threshold 0.360") and nothing said why it was in
    the file, while export gave it the score of the best tag below it, as the docs say.  One score
    per keyword: the page shows export's, against that tag's threshold, and names the tag."""
    root = tmp_path / "photos"
    photo = root / "red-star.jpg"
    root.mkdir()
    synthetic.make_photo("red", "star", 701, (320, 240)).save(photo, quality=88)
    config = write_config(tmp_path / "conf", SHAPES_CHECKPOINT, model=SHAPES_CONFIG, watch=[root],
                          threshold=THRESHOLD)
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace('"tags.txt"', '"tags.toml"'), encoding="utf-8")
    # colour's own threshold out of reach: it is only ever written as a level (the model may score it well)
    levels = tags_toml().replace("  # colour\n", '  # colour\nparent = "colour"\n')
    (config.parent / "tags.toml").write_text(levels + '[[tag]]\nkeyword = "colour"\nthreshold = 0.99\n',
                                             encoding="utf-8")
    assert tagwatch("scan", "--config", str(config), str(photo)).returncode == 0
    assert set(exif_keywords(photo)["iptc"]) == {"red", "star", "colour"}
    exported = tagwatch("export", "--scores", "--config", str(config), str(photo))
    assert exported.returncode == 0, exported.stderr
    scores = json.loads(exported.stdout)[str(photo)]
    assert scores["colour"] == scores["red"]
    with page_alone(config, root) as site:
        page = site.request("GET", "/photo/0/red-star.jpg")[1].decode()
        grid = site.request("GET", "/")[1].decode()
    red = f"score {scores['red']:.3f}, threshold {THRESHOLD:.3f}"
    assert ours(page)["red"] == f"written by tagwatch; {red}"
    assert ours(page)["colour"] == f"written by tagwatch; {red} (a level above red: its score and threshold)"
    row = re.search(r'<tr class="(\w+)" data-keyword="colour">(.*?)</tr>', page, re.S)
    assert row.group(1) == "above", row.group(0)
    assert f'<td class="num">{scores["red"]:.3f}</td>' in row.group(2)
    assert "tagged: a level above red (score and threshold of red; its own score" in row.group(2)
    assert ours(grid)["colour"] == ours(page)["colour"]


def test_a_photo_scored_below_the_floor_is_not_said_to_have_no_vector(tmp_path: Path) -> None:
    """A photo tagwatch had scored (state done, its scores in `explain`) whose every score fell below
    the photo page's floor (the lowest threshold - 0.1) read "No cached vector for this photo yet: it
    is scored once tagwatch has seen it".  The page says no tag scores above the floor, and its link
    shows the scores; only a photo without a vector still says it has none."""
    root = tmp_path / "photos"
    root.mkdir()
    photo, unseen = root / "red-star.jpg", root / "unseen.jpg"
    synthetic.make_photo("red", "star", 702, (320, 240)).save(photo, quality=88)
    config = write_config(tmp_path / "conf", SHAPES_CHECKPOINT, model=SHAPES_CONFIG, watch=[root], tags=TAGS,
                          threshold=0.99)  # floor 0.89: above every score of the shapes model
    assert tagwatch("scan", "--config", str(config), str(photo)).returncode == 0
    synthetic.make_photo("blue", "square", 703, (320, 240)).save(unseen, quality=88)  # after the scan
    with page_alone(config, root) as site:
        code, body = site.request("GET", "/photo/0/red-star.jpg")
        page = body.decode()
        assert code == 200, page[-800:]
        assert "No cached vector" not in page
        assert "No tag scores above 0.890 for this photo" in page
        assert "state-done" in page and 'data-keyword="star"' not in page
        lower = re.search(r'<p id="no-scores">.*?<a href="\?floor=([-\d.]+)">show lower ones</a>', page)
        assert lower, page[-1500:]
        shown = site.request("GET", f"/photo/0/red-star.jpg?floor={lower.group(1)}")[1].decode()
        assert '<tr class="below" data-keyword="star">' in shown  # its best scores, each below 0.99
        assert "No tag scores above" not in shown
        fresh = site.request("GET", "/photo/0/unseen.jpg")[1].decode()
    assert "No cached vector for this photo yet: it is scored once tagwatch has seen it." in fresh


def test_the_keyword_panel_says_the_keywords_are_in_the_sidecar_where_they_are(tmp_path: Path) -> None:
    """A photo whose keywords tagwatch writes into its XMP sidecar (a RAW, a HEIC, a JPEG under
    ``[write] target = "sidecar"``) had its panel headed "Keywords in the file", while the log said
    "its sidecar".  The heading names the sidecar; a JPEG written into keeps "in the file"."""
    root = tmp_path / "photos"
    root.mkdir()
    photo = root / "red-star.jpg"
    synthetic.make_photo("red", "star", 704, (320, 240)).save(photo, quality=88)
    for target, heading in (("sidecar", "<h2>Keywords in its sidecar (red-star.jpg.xmp)</h2>"),
                            ("embedded", "<h2>Keywords in the file</h2>"),
                            ("both", "<h2>Keywords in the file (also in its sidecar red-star.jpg.xmp)</h2>")):
        config = write_config(tmp_path / target, SHAPES_CHECKPOINT, model=SHAPES_CONFIG, watch=[root],
                              tags=TAGS, threshold=THRESHOLD, extra=f'[write]\ntarget = "{target}"\n')
        with page_alone(config, root) as site:
            code, body = site.request("GET", "/photo/0/red-star.jpg")
        page = body.decode()
        assert code == 200, page[-800:]
        assert heading in page, (target, re.findall(r"<h2>Keywords in[^<]*</h2>", page))


def test_recently_tagged_lists_photos_written_not_those_only_checked_again(tmp_path: Path) -> None:
    """"Recently tagged" was ordered by the row's last change: a photo only checked again, nothing
    written (a touch, a mode switch), jumped to the top over one whose keywords were just written.
    It lists photos by when their keywords were written (or they were first tagged)."""
    root = tmp_path / "photos"
    root.mkdir()
    old, new = root / "red-star.jpg", root / "blue-square.jpg"
    synthetic.make_photo("red", "star", 705, (320, 240)).save(old, quality=88)
    synthetic.make_photo("blue", "square", 706, (320, 240)).save(new, quality=88)
    config = write_config(tmp_path / "conf", SHAPES_CHECKPOINT, model=SHAPES_CONFIG, watch=[root], tags=TAGS,
                          threshold=THRESHOLD)
    assert tagwatch("scan", "--config", str(config), str(old)).returncode == 0
    time.sleep(0.05)
    assert tagwatch("scan", "--config", str(config), str(new)).returncode == 0
    assert exif_keywords(new)["iptc"]
    time.sleep(0.05)
    later = time.time() + 5
    os.utime(old, (later, later))  # a touch: checked again, nothing to write
    again = tagwatch("scan", "--config", str(config), str(old))
    assert again.returncode == 0, again.stderr
    with page_alone(config, root) as site:
        grid = site.request("GET", "/?show=recent")[1].decode()
    assert re.findall(r'<li class="card state-\w+" data-path="([^"]+)"', grid) == [str(new), str(old)]


def test_the_page_of_a_photo_tagwatch_failed_on_says_it_failed_and_why(tmp_path: Path) -> None:
    """A photo tagwatch had seen and failed on (a truncated JPEG, state failed) read "No cached
    vector for this photo yet: it is scored once tagwatch has seen it".  It says it could not be
    tagged and why, as `tagwatch status` does."""
    root = tmp_path / "photos"
    root.mkdir()
    good, bad = root / "red-star.jpg", root / "bad.jpg"
    synthetic.make_photo("red", "star", 707, (320, 240)).save(good, quality=88)
    bad.write_bytes(good.read_bytes()[:500])
    config = write_config(tmp_path / "conf", SHAPES_CHECKPOINT, model=SHAPES_CONFIG, watch=[root], tags=TAGS,
                          threshold=THRESHOLD)
    assert tagwatch("scan", "--config", str(config), str(bad)).returncode == 1
    said = re.search(rf"failed: {re.escape(str(bad))}: (truncated JPEG .*)\n",
                     tagwatch("status", "--config", str(config)).stdout)
    assert said
    reason = html.escape(said.group(1), quote=False)
    with page_alone(config, root) as site:
        page = site.request("GET", "/photo/0/bad.jpg")[1].decode()
    assert "scored once tagwatch has seen it" not in page
    assert f'<p id="no-vector">No scores for this photo: tagwatch could not tag it ({reason}).</p>' in page


def test_the_page_a_daemon_serves_scores_with_the_threshold_a_sighup_applied(tmp_path: Path) -> None:
    """The daemon applied a new [tagging] threshold on SIGHUP, but the review page it serves kept
    the one it started with: it called it "the global one", showed keywords as tagged and "Writing
    into the file: adding 'circle'…" for a write the daemon would never make."""
    root = tmp_path / "photos"
    root.mkdir()
    synthetic.make_photo("red", "star", 702, (320, 240)).save(root / "red-star.jpg", quality=88)
    config = write_config(tmp_path / "conf", SHAPES_CHECKPOINT, model=SHAPES_CONFIG, watch=[root], tags=TAGS,
                          threshold=THRESHOLD, top_k=5, extra="[web]\nenabled = true\nport = 0\n")
    daemon = Daemon(config, tmp_path / "daemon.log").start()
    try:
        port = int(re.search(r"review page on http://127\.0\.0\.1:(\d+)/", daemon.log()).group(1))
        token = (tmp_path / "conf" / "state" / "web-token").read_text().strip()
        site = Site(root, config.parent, config, daemon, f"http://127.0.0.1:{port}", port, token)
        wait_for(lambda: status(config)["tagged"] == 1)

        def star() -> str:
            code, body = site.request("GET", "/tag/star")
            assert code == 200
            return " ".join(body.decode().split())

        assert f"above the threshold {THRESHOLD:.3f} (the global one)" in star()
        mark = len(daemon.log())
        config.write_text(config.read_text().replace(f"threshold = {THRESHOLD}", "threshold = 0.9"))
        daemon.signal(signal.SIGHUP)
        daemon.wait_log("reloaded: applied tagging.threshold", since=mark)
        assert "above the threshold 0.900 (the global one)" in star()
        photo = " ".join(site.request("GET", "/photo/0/red-star.jpg")[1].decode().split())
        assert "Writing into the file" not in photo and "0.900" in photo
    finally:
        assert daemon.stop() == 0


def test_tagwatch_web_beside_a_daemon_follows_a_sighup_as_the_daemon_does(tmp_path: Path) -> None:
    """The README's config edit (a threshold), then `pkill -HUP`: a `tagwatch web` run beside the
    daemon went on calling 0.360 the global threshold and counting photos by it, and a HUP that
    reached it (`pkill -HUP -f tagwatch`) ended it without a word.  It re-reads [tagging] as the
    daemon does, says so in one line, and a config it cannot read leaves the page as it was."""
    root = tmp_path / "photos"
    root.mkdir()
    synthetic.make_photo("red", "star", 704, (320, 240)).save(root / "red-star.jpg", quality=88)
    config = write_config(tmp_path / "conf", SHAPES_CHECKPOINT, model=SHAPES_CONFIG, watch=[root], tags=TAGS,
                          threshold=THRESHOLD)
    assert tagwatch("scan", "--config", str(config), str(root)).returncode == 0
    log = tmp_path / "web.log"
    with log.open("w") as err:
        web = subprocess.Popen([sys.executable, "-m", "tagwatch", "web", "--config", str(config),
                                "--port", "0"], stdout=subprocess.PIPE, stderr=err, cwd=REPO, text=True)
    try:
        match = re.fullmatch(r"review page: http://127\.0\.0\.1:(\d+)/\?token=(\S+)\n",
                             web.stdout.readline())  # type: ignore[union-attr]
        assert match
        site = Site(root, config.parent, config, None, f"http://127.0.0.1:{match.group(1)}",  # type: ignore[arg-type]
                    int(match.group(1)), match.group(2))

        def star() -> str:
            code, body = site.request("GET", "/tag/star")
            assert code == 200
            return " ".join(body.decode().split())

        assert f"above the threshold {THRESHOLD:.3f} (the global one)" in star()
        text = config.read_text(encoding="utf-8")
        config.write_text(text.replace(f"threshold = {THRESHOLD}", "threshold = 0.9"), encoding="utf-8")
        web.send_signal(signal.SIGHUP)
        wait_for(lambda: "above the threshold 0.900 (the global one)" in star())
        assert web.poll() is None
        assert f"review page: config {config} reloaded: [tagging] applied" in log.read_text(encoding="utf-8")
        config.write_text(text.replace(f"threshold = {THRESHOLD}", "threshold = 9"), encoding="utf-8")
        web.send_signal(signal.SIGHUP)
        wait_for(lambda: "review page: config not reloaded, keeping the previous one: " in log.read_text(
            encoding="utf-8"))
        assert "above the threshold 0.900 (the global one)" in star() and web.poll() is None
    finally:
        web.terminate()
        assert web.wait(timeout=30) == 0


def card_chips(page: str) -> dict[str, dict[str, str]]:
    """Photo path → keyword → owner class of each card's chips in a grid page."""
    chip = r'<li class="chip (\w+)" title="[^"]*" data-keyword="([^"]*)"'
    found: dict[str, dict[str, str]] = {}
    for card in page.split('<li class="card ')[1:]:
        path, body = re.match(r'[^"]*" data-path="([^"]*)">(.*)', card, re.S).groups()
        found[path] = {keyword: owner for owner, keyword in re.findall(chip, body)}
    return found


def test_a_folder_rule_shows_its_rejection_only_where_it_changed_something(tmp_path: Path) -> None:
    """A folder rule (`real/**`, remove = ["red"]) put a struck-through "red" chip under "keywords in
    the file", with an ↺ that could only answer "edit that rule", on every photo of the folder, even
    on those that never had red or a score near it (61 chips on a real grid).  It shows where it
    keeps red out (the photo it is predicted for), the photo's own correction shows with its ↺
    wherever it is, and a photo the rule changes nothing in says so under its keywords instead."""
    root = tmp_path / "photos"
    real = root / "real"
    real.mkdir(parents=True)
    shapes = {"red-star.jpg": ("red", "star"), "green-circle.jpg": ("green", "circle"),
              "blue-square.jpg": ("blue", "square")}
    for number, (name, (colour, shape)) in enumerate(shapes.items()):
        synthetic.make_photo(colour, shape, 710 + number, (320, 240)).save(real / name, quality=88)
    config = write_config(tmp_path / "conf", SHAPES_CHECKPOINT, model=SHAPES_CONFIG, watch=[root], tags=TAGS,
                          threshold=THRESHOLD)
    config.write_text(config.read_text(encoding="utf-8").replace(
        'tags = "tags.txt"\n', 'tags = "tags.txt"\noverrides = "overrides.toml"\n'), encoding="utf-8")
    green = real / "green-circle.jpg"
    (config.parent / "overrides.toml").write_text(
        '[[override]]\npath = "real/**"\nremove = ["red", "triangle"]\n\n'
        f'[[override]]\npath = "{green}"\nremove = ["star"]\n', encoding="utf-8")
    assert tagwatch("scan", "--config", str(config), str(root)).returncode == 0
    assert set(exif_keywords(real / "red-star.jpg")["iptc"]) == {"star"}  # red kept out by the rule
    assert set(exif_keywords(green)["iptc"]) == {"green", "circle"}
    with page_alone(config, root) as site:
        grid = card_chips(site.request("GET", "/?folder=0/real")[1].decode())
        pages = {name: site.request("GET", f"/photo/0/real/{name}")[1].decode() for name in shapes}
    rejected = {Path(path).name: {k for k, owner in found.items() if owner == "rejected"}
                for path, found in grid.items()}
    assert rejected == {"red-star.jpg": {"red"}, "green-circle.jpg": {"star"}, "blue-square.jpg": set()}
    assert grid[str(real / "blue-square.jpg")] == {"blue": "ours", "square": "ours"}
    # the photo pages: the same chips; a removal that changes nothing in the photo named under them
    assert 'data-keyword="red" data-owner="rejected"' in pages["red-star.jpg"]
    assert 'data-keyword="star" data-owner="rejected"' in pages["green-circle.jpg"]
    assert 'data-action="undo" data-keyword="star"' in pages["green-circle.jpg"].replace("\n", " ")
    blue = pages["blue-square.jpg"]
    assert 'data-owner="rejected"' not in blue
    idle = re.search(r'<p class="help" id="idle-removals">(.*?)</p>', blue, re.S)
    assert idle, blue[-3000:]
    assert re.findall(r'data-keyword="([^"]*)">[^<]*</span> <small>\(the rule for ([^)]*)\)',
                      idle.group(1)) == [("red", "real/**"), ("triangle", "real/**")]


def test_a_keyword_the_tag_list_would_refuse_is_refused_on_the_page_too(site: Site, browser) -> None:
    from urllib.parse import urlencode

    from selenium.webdriver.common.by import By

    photo, url = site.root / "2025" / "purple-vertical-bar.jpg", "/photo/0/2025/purple-vertical-bar.jpg"
    keywords = exif_keywords(photo)
    overrides = site.conf / "overrides.toml"
    kept = overrides.read_bytes() if overrides.exists() else None
    browser.get(site.base + url)
    browser.find_element(By.ID, "add-keyword").send_keys("Trip|Day 1")
    browser.find_element(By.ID, "add-button").click()
    wait_for(lambda: "contains '|'" in text(browser, ".banner.error"))
    assert "separates the levels" in text(browser, ".banner.error")
    for keyword, reason in (("a\x01b", "control character"), ("é" * 33, "66 bytes in UTF-8"),
                            ("a\ufffeb", "noncharacter")):
        body = urlencode({"action": "add", "keyword": keyword, "csrf": site.csrf})
        code, answer = site.request("POST", url, body=body)
        assert code == 409 and reason in answer.decode(), (keyword, answer[-600:])
    time.sleep(1)  # what a daemon would have done with a correction
    assert (overrides.read_bytes() if overrides.exists() else None) == kept
    assert exif_keywords(photo) == keywords


def test_the_threshold_box_shows_a_short_decimal_and_saving_it_unchanged_writes_nothing(
        site: Site, browser, tag_list: Path) -> None:
    """0.29 and 0.36 are no float32: the box shows the list's own decimal, and a save that changes
    nothing must not pin the global threshold (or float32 noise) into the list."""
    from selenium.webdriver.common.by import By

    mark = len(site.daemon.log())
    tag_list.write_text(tag_list.read_text(encoding="utf-8").replace(
        'keyword = "blue"  # colour\n', 'keyword = "blue"  # colour\nthreshold = 0.29\n'), encoding="utf-8")
    site.daemon.wait_log(f"{len(TAGS)} tags", since=mark)
    written = tag_list.read_bytes()
    for keyword, shown, whose in (("blue", "0.29", "its own"), ("green", str(THRESHOLD), "the global one")):
        browser.get(f"{site.base}/tag/{keyword}")
        assert browser.find_element(By.ID, "threshold").get_attribute("value") == shown
        browser.find_element(By.ID, "save-threshold").click()
        wait_for(lambda: "unchanged" in text(browser, ".banner.ok"))
        assert whose in text(browser, ".banner.ok")
        assert tag_list.read_bytes() == written
    # the noise an older page showed is the same float32: nothing written either
    code, _ = site.request("POST", "/tag/green", body=f"threshold=0.36000001430511475&csrf={site.csrf}")
    assert code == 303 and tag_list.read_bytes() == written


def test_a_threshold_out_of_range_is_refused_as_such_and_one_saved_is_counted_in_the_singular(
        site: Site, tag_list: Path) -> None:
    """5 was clamped to 1 before its range was checked: a .toml list got threshold = 1 written, and a
    .txt list's answer was calibrate's "shapes.toml already exists"."""
    written = tag_list.read_bytes()
    code, body = site.request("POST", "/tag/red", body=f"threshold=5&csrf={site.csrf}")
    assert code == 409 and b"a threshold is a cosine similarity in [-1, 1], got 5" in body, body[-800:]
    assert tag_list.read_bytes() == written
    code, headers, _ = site.exchange("POST", "/tag/red", body=f"threshold=0.31&csrf={site.csrf}")
    assert code == 303
    told = unquote(headers["location"].replace("+", " "))
    assert told.startswith(f"/tag/red?m=wrote 1 threshold into {tag_list}"), told


def test_moving_a_threshold_on_its_page_changes_which_photos_carry_it_without_encoding(
        site: Site, browser, tag_list: Path) -> None:
    from selenium.webdriver.common.by import By

    encoded = site.encoded()
    photo = site.root / "2025" / "orange-circle.jpg"
    assert "red" not in exif_keywords(photo)["iptc"]
    browser.get(f"{site.base}/tag/red")
    below = browser.find_elements(By.CSS_SELECTOR, "#preview .neighbours section:nth-child(2) li.card")
    scores = {unquote(card.find_element(By.CSS_SELECTOR, "a").get_attribute("href").rsplit("/", 1)[1]):
              float(card.text) for card in below}  # the file's name: "Party #2.jpg" is linked encoded
    # just under this photo's score of "red": it (and whatever scores higher) will carry red
    new = round(scores["orange-circle.jpg"] - 0.0005, 4)
    flipping = {name for name, score in scores.items() if score > new}
    field = browser.find_element(By.ID, "threshold")
    field.clear()
    field.send_keys(str(new))
    # the htmx preview follows the typing
    wait_for(lambda: f"At {new:.3f}" in " ".join(text(browser, "#counts").split()), timeout=15)
    browser.find_element(By.ID, "save-threshold").click()
    wait_for(lambda: "wrote 1 threshold into" in text(browser, ".banner.ok"))
    saved = tag_list.read_text(encoding="utf-8")
    assert f'keyword = "red"  # colour\nthreshold = {new}\n' in saved
    assert saved.startswith("# The shapes model's tags; the review page must keep these comments.")

    def carrying() -> set[str]:
        return {p.name for p in site.root.rglob("*.jpg") if "red" in exif_keywords(p)["iptc"]}

    wait_for(lambda: flipping <= carrying())
    assert site.encoded() == encoded, "a threshold change must encode no photo"
    # sync mode: raising it above every photo takes our "red" out again
    browser.get(f"{site.base}/tag/red")
    field = browser.find_element(By.ID, "threshold")
    field.clear()
    field.send_keys("0.95")
    browser.find_element(By.ID, "save-threshold").click()
    wait_for(lambda: not carrying())
    assert site.encoded() == encoded


def test_a_score_just_below_a_threshold_never_reads_as_the_threshold() -> None:
    """The tag page listed a photo scoring 0.5409 under "Just below (do not)" a threshold of 0.541
    as "0.541": the scores beside a threshold (its neighbours, a keyword's hover) show as many more
    decimals as tell them apart."""
    from tagwatch.wording import score_beside

    assert score_beside(0.5409, 0.541) == "0.5409"  # under it
    assert score_beside(0.54102, 0.541) == "0.54102"  # over it
    assert score_beside(0.612, 0.541) == "0.612"  # three decimals where they tell
    assert score_beside(0.541, 0.541) == "0.541"  # at it: as it is


# -- security ----------------------------------------------------------------------------------------

def test_every_route_needs_the_token_and_photos_stay_inside_the_watched_folder(
        site: Site, tmp_path: Path) -> None:
    photo = "/photo/0/2024/red-star.jpg"
    for path in ("/", photo, "/thumb/0/2024/red-star.jpg", "/preview/0/2024/red-star.jpg", "/tags",
                 "/tag/red", "/status", "/status-panel", "/static/style.css", "/static/htmx.min.js",
                 "/photo-keywords/0/2024/red-star.jpg", "/nowhere"):
        assert site.request("GET", path, token=False)[0] == 403, path
        assert site.request("GET", path, token=False, headers={"Authorization": "token wrong"})[0] == 403
        assert site.request("GET", f"{path}?token=wrong", token=False)[0] == 403
    assert site.request("GET", "/", token=False, headers={"Cookie": "tagwatch-1=x"})[0] == 403
    assert site.request("GET", photo)[0] == 200

    outside = tmp_path / "outside"
    outside.mkdir()
    synthetic.make_photo("blue", "star", 1, (64, 48)).save(outside / "secret.jpg")
    (site.root / "2024" / "escape.jpg").symlink_to(outside / "secret.jpg")
    (site.root / "linked").symlink_to(outside, target_is_directory=True)
    secret = quote(str(outside / "secret.jpg"))
    for kind in ("photo", "thumb", "preview", "photo-keywords"):
        for rel in ("../../../../../../etc/passwd", "2024/../../outside/secret.jpg", "2024/./red-star.jpg",
                    "%2e%2e/%2e%2e/etc/passwd", f"/{secret}", secret, f"..%2f..%2f{secret}",
                    "2024/escape.jpg", "linked/secret.jpg", "2024//red-star.jpg", "2024/.hidden.jpg"):
            assert site.request("GET", f"/{kind}/0/{rel}")[0] == 404, (kind, rel)
        assert site.request("GET", f"/{kind}/1/2024/red-star.jpg")[0] == 404

    before = (site.root / "2024" / "red-star.jpg").read_bytes()
    overrides = site.conf / "overrides.toml"
    kept = overrides.read_bytes() if overrides.exists() else None
    tags = (site.conf / "tags.toml").read_bytes()
    for path, body in ((photo, "action=remove&keyword=red"), ("/tag/red", "threshold=0.1")):
        assert site.request("POST", path, body=body)[0] == 403  # no CSRF value
        assert site.request("POST", path, body=body + "&csrf=wrong")[0] == 403
        assert site.request("POST", path, body=f"{body}&csrf={site.csrf}",
                            headers={"Origin": "http://evil.example"})[0] == 403
        assert site.request("POST", path, body=f"{body}&csrf={site.csrf}", token=False)[0] == 403
    assert site.request("GET", "/", headers={"Host": "evil.example"})[0] == 400  # DNS rebinding
    time.sleep(1)  # what a daemon would have done with a correction
    assert (site.root / "2024" / "red-star.jpg").read_bytes() == before
    assert (overrides.read_bytes() if overrides.exists() else None) == kept
    assert (site.conf / "tags.toml").read_bytes() == tags
    token_file = site.conf / "state" / "web-token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert site.token not in site.daemon.log()


def test_a_foreign_host_or_origin_is_refused_for_what_it_is(site: Site) -> None:
    # the token in the query is no way past the Host check (DNS rebinding): no cookie, no redirect
    for path in (f"/status?token={site.token}", f"/photo/0/2024/red-star.jpg?token={site.token}"):
        code, headers, _ = site.exchange("GET", path, token=False, headers={"Host": "evil.com"})
        assert code == 400 and "location" not in headers and "set-cookie" not in headers, headers
        assert headers["x-frame-options"] == "DENY"  # a refusal carries the security headers too
    # a POST from another origin, token and CSRF value right: refused as cross-origin, not for a token
    tags = (site.conf / "tags.toml").read_bytes()
    code, _, body = site.exchange("POST", "/tag/red", body=f"threshold=0.1&csrf={site.csrf}",
                                  headers={"Origin": "http://evil.com"})
    assert code == 403 and b"cross-origin" in body and b"needs its token" not in body
    assert b"http://evil.com" in body and "content-security-policy" in headers
    assert (site.conf / "tags.toml").read_bytes() == tags


def test_tagwatch_web_url_prints_the_address_of_the_page_that_runs(site: Site, tmp_path: Path) -> None:
    """The daemon's page listens on a port of its own choosing ([web] port = 0): --url names it."""
    printed = tagwatch("web", "--url", "--config", str(site.config))
    assert printed.stdout == f"{site.base}/?token={site.token}\n", printed.stderr

    root, conf = tmp_path / "photos", tmp_path / "conf"
    root.mkdir()
    conf.mkdir()
    (conf / "tags.txt").write_text("\n".join(TAGS) + "\n", encoding="utf-8")
    config = conf / "config.toml"
    config.write_text("\n".join([
        f"watch = [{json.dumps(str(root))}]", 'tags = "tags.txt"', 'database = "state/tagwatch.db"',
        "[model]", f"name = {json.dumps(str(SHAPES_CONFIG))}",
        f"pretrained = {json.dumps(str(SHAPES_CHECKPOINT))}", ""]), encoding="utf-8")
    web = subprocess.Popen([sys.executable, "-m", "tagwatch", "web", "--config", str(config), "--host",
                            "0.0.0.0", "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                           cwd=REPO, text=True)
    try:
        line = web.stdout.readline()  # type: ignore[union-attr]
        match = re.fullmatch(r"review page: http://127\.0\.0\.1:(\d+)/\?token=(\S+)\n", line)
        assert match, line  # an address a browser opens, not 0.0.0.0
        port, token = int(match.group(1)), match.group(2)
        printed = tagwatch("web", "--url", "--config", str(config))
        assert printed.stdout == f"http://127.0.0.1:{port}/?token={token}\n", printed.stderr
        page = Site(root, conf, config, None, f"http://127.0.0.1:{port}", port, token)  # type: ignore[arg-type]
        code, body = page.request("GET", "/")
        assert code == 200 and b"tagwatch scan" in body, body[-800:]  # the empty grid says what to do
        # exposed on purpose: another machine names this one by its own name, which is no rebinding
        assert page.request("GET", "/status", headers={"Host": f"photos.example:{port}"})[0] == 200
    finally:
        web.terminate()
        assert web.wait(timeout=30) == 0
    printed = tagwatch("web", "--url", "--config", str(config))
    assert printed.stdout == f"http://127.0.0.1:8765/?token={token}\n"
    assert "no review page is running" in printed.stderr
    # a page killed before it could say it stopped is not taken for a running one
    web = subprocess.Popen([sys.executable, "-m", "tagwatch", "web", "--config", str(config), "--port", "0"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=REPO, text=True)
    try:
        assert web.stdout.readline().startswith("review page: http://127.0.0.1:")  # type: ignore[union-attr]
    finally:
        web.kill()
        web.wait()
    printed = tagwatch("web", "--url", "--config", str(config))
    assert "no review page is running" in printed.stderr and ":8765/" in printed.stdout
    printed = tagwatch("web", "--url", "--config", str(config), "--port", "0")
    assert printed.returncode == 2 and not printed.stdout
    assert "no review page is running" in printed.stderr and "tagwatch web" in printed.stderr


def test_tagwatch_web_on_the_port_the_daemon_serves_says_so_and_how_to_open_it(site: Site) -> None:
    """Only "Address already in use" was said: the page is there already, the daemon's."""
    result = tagwatch("web", "--config", str(site.config), "--port", str(site.port))
    assert result.returncode == 2 and not result.stdout
    assert result.stderr.strip() == (
        f"tagwatch: error: review page: the daemon (pid {site.daemon.proc.pid}) already serves it on "
        f"{site.base}/: open that one; `tagwatch web --url` prints its address with the token"), result.stderr


def test_without_a_daemon_tagwatch_web_applies_a_correction_itself(site: Site, tmp_path: Path) -> None:
    """`tagwatch web` alone: a correction still reaches the file, through the same re-scoring from
    cached vectors a daemon does.  The vectors come from the module's store (the cache is keyed by
    content, so a copy of a photo needs no encoding and no model).  Made while a backup holds the
    database, the page says it waits, and the correction reaches the file once the backup lets go,
    with no other correction to start it."""
    root = tmp_path / "photos"
    root.mkdir()
    photo = root / "red-star.jpg"
    shutil.copyfile(site.root / "2024" / "red-star.jpg", photo)
    subprocess.run(["exiftool", "-q", "-overwrite_original", "-IPTC:Keywords=", "-XMP-dc:Subject=",
                    str(photo)], check=True)
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "tags.txt").write_text("\n".join(TAGS) + "\n", encoding="utf-8")
    config = conf / "config.toml"
    config.write_text("\n".join([
        f"watch = [{json.dumps(str(root))}]", 'tags = "tags.txt"', 'overrides = "overrides.toml"',
        # database_lock_wait: each try under the backup's lock waits 1 s before it says so, not 5
        'database = "state/tagwatch.db"', 'database_lock_wait = "1s"', "[model]",
        f"name = {json.dumps(str(SHAPES_CONFIG))}",
        f"pretrained = {json.dumps(str(SHAPES_CHECKPOINT))}", "[tagging]", f"threshold = {THRESHOLD}", ""]),
        encoding="utf-8")
    source, copy = Store(site.conf / "state" / "tagwatch.db"), Store(conf / "state" / "tagwatch.db")
    try:
        identity = model_identity(load_config(config).model)
        prompts = [f"a photo of a {tag}." for tag in TAGS]
        copy.put_text_vectors(source.text_vectors(prompts, identity), identity)
        key = source.file(str(site.root / "2024" / "red-star.jpg")).key
        copy.put_image_vectors(source.image_vectors([key], identity), identity)
    finally:
        source.close()
        copy.close()
    elsewhere = tmp_path / "elsewhere" / "red-star.jpg"  # scanned once, outside the page's folder
    elsewhere.parent.mkdir()
    shutil.copyfile(photo, elsewhere)
    scanned = tagwatch("scan", "--config", str(config), str(root), str(elsewhere))
    assert scanned.returncode == 0, scanned.stderr
    assert set(exif_keywords(photo)["iptc"]) == {"red", "star"}
    encoded = status(config)["encoded"]
    log = (tmp_path / "web.log").open("wb")
    web = subprocess.Popen([sys.executable, "-m", "tagwatch", "web", "--config", str(config), "--port", "0"],
                           stdout=subprocess.PIPE, stderr=log, cwd=REPO, text=True)
    try:
        line = web.stdout.readline()  # type: ignore[union-attr]
        match = re.fullmatch(r"review page: http://127\.0\.0\.1:(\d+)/\?token=(\S+)\n", line)
        assert match, line
        port, token = int(match.group(1)), match.group(2)
        printed = tagwatch("web", "--url", "--config", str(config))  # the port it took, not the config's
        assert printed.stdout.strip() == f"http://127.0.0.1:{port}/?token={token}"
        page = Site(root, conf, config, None, f"http://127.0.0.1:{port}", port, token)  # type: ignore[arg-type]
        backup = sqlite3.connect(conf / "state" / "tagwatch.db", isolation_level=None, timeout=60)
        try:
            backup.execute("BEGIN EXCLUSIVE")
            code, _ = page.request("POST", "/photo/0/red-star.jpg",
                                   body=f"action=remove&keyword=red&csrf={page.csrf}")
            assert code == 303
            wait_for(lambda: "corrections not applied yet: database: database is locked; tried again by "
                     "itself" in (tmp_path / "web.log").read_text(encoding="utf-8"))

            def banner() -> str:
                text = page.request("GET", "/photo/0/red-star.jpg")[1].decode()
                said = re.search(r"Corrections not applied: database: database is locked; tried again by "
                                 r"itself, next at (\d\d:\d\d:\d\d)", text)
                assert said, text
                return said.group(1)

            first = banner()  # when, not "in 256 s" for the whole pause
            wait_for(lambda: banner() != first)  # tried again under the lock, and said when next
            assert set(exif_keywords(photo)["iptc"]) == {"red", "star"}
        finally:
            backup.close()  # the backup ends: its transaction with it
        wait_for(lambda: exif_keywords(photo)["iptc"] == ["star"])
        # the re-score's line follows the photo's write (the file can be read between the two)
        applied = r"rewrote 1 \(applied now, after [2-9]\d* tries that had to wait\)"
        wait_for(lambda: re.search(applied, (tmp_path / "web.log").read_text(encoding="utf-8")))
        said = (tmp_path / "web.log").read_text(encoding="utf-8")
        assert said.count("corrections not applied yet") == 1, said  # once while it lasts, not every try
        panel = page.request("GET", "/photo-keywords/0/red-star.jpg")[1]
        assert b'data-keyword="red" data-owner="rejected"' in panel
    finally:
        web.terminate()
        assert web.wait(timeout=30) == 0
        log.close()
    assert status(config)["encoded"] == encoded, "no image encoded for a correction"
    assert 'remove = ["red"]' in (conf / "overrides.toml").read_text(encoding="utf-8")
    stderr = (tmp_path / "web.log").read_text(encoding="utf-8")
    assert "applied the corrections itself" in stderr and token not in stderr
    assert "re-scored 1 photo, rewrote 1" in stderr  # the page's folder only: not the scan's elsewhere


def scene_photo(tmp_path: Path) -> tuple[Path, Path]:
    """A watched folder holding one scene the captions model describes: a green star to the left of
    a purple vertical bar."""
    root = tmp_path / "photos"
    root.mkdir()
    photo = root / "scene.jpg"
    synthetic.make_scene(synthetic.Scene(("green", "star"), ("purple", "vertical bar"), "to the left of",
                                         9_999_998)).save(photo, "JPEG", quality=90)
    return root, photo


def captioned_config(tmp_path: Path, root: Path, extra: str) -> tuple[Path, float]:
    """A config watching ``root`` with the shipped captions model (its tags, grass and sky, never
    pass 0.9: the keywords are the caption's), and ``extra`` after its ``[captions]``; with the
    captions threshold it was trained to."""
    coca = REPO / "tests" / "data" / "shapes-coca"
    threshold = json.loads(coca.with_suffix(".train.json").read_text(encoding="utf-8"))["keyword_threshold"]
    config = write_config(tmp_path / "conf", coca.with_suffix(".safetensors"),
                          model=coca.with_suffix(".json"), watch=[root], tags=["grass", "sky"], threshold=0.9,
                          extra=f'[captions]\nenabled = true\nthreshold = {threshold}\nprefix = "caption"\n'
                                + extra)
    return config, threshold


def test_the_photo_page_shows_the_caption_and_its_candidates_scores(tmp_path: Path) -> None:
    """With captions on, the caption (also the photo's description) was nowhere on the photo page,
    and a caption keyword's hover said only "written by tagwatch", while explain and export scored
    it.  The page shows the caption and each candidate with the score export gives it, and a caption
    keyword's hover its score against the [captions] threshold.  `tagwatch web` alone, as a person
    opens it beside `tagwatch scan`."""
    root, photo = scene_photo(tmp_path)
    config, threshold = captioned_config(tmp_path, root, "write_description = true\n")
    assert tagwatch("scan", "--config", str(config), str(photo)).returncode == 0
    exported = tagwatch("export", "--scores", "--config", str(config), str(photo))
    entry = json.loads(exported.stdout)[str(photo)]
    kept = {k: v for k, v in entry["tags"].items() if k in exif_keywords(photo)["iptc"]}
    assert kept and entry["caption"] == "a green star to the left of a purple vertical bar", exported.stdout
    with page_alone(config, root) as site:
        code, body = site.request("GET", "/photo/0/scene.jpg")
    html = body.decode()
    assert code == 200, html[-800:]
    assert '<p class="caption-text">a green star to the left of a purple vertical bar</p>' in html
    rows = dict(re.findall(r'data-candidate="([^"]*)"><td>[^<]*</td><td class="num">([-\d.]+)</td>', html))
    assert rows == {k: f"{v:.3f}" for k, v in entry["candidates"].items()}
    for keyword, score in kept.items():
        assert ours(html)[keyword] == (f"written by tagwatch; score {score:.3f}, threshold {threshold:.3f} "
                                  "(a keyword of the caption: [captions] threshold)")


FLORENCE = ["-GPSLatitude=43.7731", "-GPSLatitudeRef=N", "-GPSLongitude=11.2560", "-GPSLongitudeRef=E"]


def panel_state(page: str) -> tuple[dict[str, str], str, bool]:
    """A keyword panel's chips (keyword → owner), its *Writing into the file* line ("" for none), and
    whether it polls."""
    found = dict(re.findall(r'data-keyword="([^"]*)" data-owner="([^"]*)"', page))
    line = re.search(r'<p class="pending" id="pending">(.*?)</p>', page, re.S)
    return found, html.unescape(line.group(1)) if line else "", "hx-get=" in page


def held_lock(database: Path) -> int | None:
    """The daemon's lock on ``database``, or None while another holds it (the page applying a
    correction)."""
    try:
        return hold_lock(database)
    except AlreadyRunning:
        return None


def test_the_panel_says_writing_only_while_a_caption_keyword_or_a_place_is_on_its_way(tmp_path: Path) -> None:
    """In sync mode with captions and places on, the page's idea of what tagwatch wants in the file
    left out caption keywords and place keywords: every such photo said *Writing into the file:
    taking out 'green star'…* for good, though nothing was written, and its keyword panel was swapped
    every second, each swap throwing a keyboard user's focus to <body>; after ↺ of a rejected
    caption keyword the panel showed it missing and nothing on its way, while the file got it back.
    The page decides what tagwatch wants as the write does.  `tagwatch web` alone, with the daemon's
    lock held by the test where a change must stay on its way (a daemon busy elsewhere)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    root, photo = scene_photo(tmp_path)
    subprocess.run(["exiftool", "-q", "-overwrite_original", *FLORENCE, str(photo)], check=True)
    config, _ = captioned_config(tmp_path, root, "[places]\nenabled = true\n")
    config.write_text(config.read_text(encoding="utf-8").replace(
        'tags = "tags.txt"\n', 'tags = "tags.txt"\noverrides = "overrides.toml"\n').replace(
        "top_k = 3\n", 'top_k = 3\nmode = "sync"\n'), encoding="utf-8")
    assert tagwatch("scan", "--config", str(config), str(photo)).returncode == 0
    assert {"green star", "Italy", "Tuscany", "Florence"} <= set(exif_keywords(photo)["iptc"])
    database = config.parent / "state" / "tagwatch.db"
    with page_alone(config, root) as site:
        def panel() -> tuple[dict[str, str], str, bool]:
            return panel_state(site.request("GET", "/photo-keywords/0/scene.jpg")[1].decode())

        def post(action: str, keyword: str) -> None:
            code, _ = site.request("POST", "/photo/0/scene.jpg",
                                   body=f"action={action}&keyword={quote(keyword)}&csrf={site.csrf}")
            assert code == 303

        # tagged, nothing on its way: no line, no polling
        chips, line, polls = panel()
        assert (line, polls) == ("", False), line
        assert chips["green star"] == chips["Florence"] == "ours"
        # ✕ of a caption keyword: out of the file, and the panel says so once exiftool reads it
        post("remove", "green star")
        wait_for(lambda: "green star" not in exif_keywords(photo)["iptc"])
        wait_for(lambda: panel() == ({**chips, "green star": "rejected"}, "", False))
        fd = wait_for(lambda: held_lock(database))
        try:
            # ↺ while the daemon is busy: the caption keyword is on its way back, and the panel says so
            post("undo", "green star")
            chips_now, line, polls = panel()
            assert (line, polls) == ("Writing into the file: adding 'green star'…", True)
            assert "green star" not in chips_now
            # a region rejected: saved (struck through, with its ↺), and on its way out with its town
            post("remove", "Tuscany")
            chips_now, line, polls = panel()
            assert chips_now["Tuscany"] == "rejected" and polls
            assert line == ("Writing into the file: adding 'green star', taking out 'Tuscany', "
                            "taking out 'Florence'…")
            post("undo", "Tuscany")
            assert panel()[1] == "Writing into the file: adding 'green star'…"
            # a keyboard user's focus stays on the ✕ it was on while the panel refreshes
            with chromium() as browser:
                browser.get(f"{site.base}/?token={site.token}")
                browser.get(f"{site.base}/photo/0/scene.jpg")
                keys = ActionChains(browser)
                for _ in range(40):
                    keys.send_keys(Keys.TAB).perform()
                    if browser.execute_script("return document.activeElement.dataset.keyword") == "Italy":
                        break
                focused = "const e = document.activeElement; return [e.dataset.action, e.dataset.keyword]"
                assert browser.execute_script(focused) == ["remove", "Italy"]
                browser.execute_script("window.before = document.getElementById('keywords')")
                wait_for(lambda: browser.execute_script(
                    "return document.getElementById('keywords') !== window.before"))
                assert browser.execute_script(focused) == ["remove", "Italy"]
        finally:
            os.close(fd)
        # the daemon's turn (here the page's own, at the next correction): written, read back, quiet
        post("add", "Anna")
        wait_for(lambda: panel() == ({**chips, "Anna": "yours"}, "", False))
        assert {"green star", "Anna", "Florence"} <= set(exif_keywords(photo)["iptc"])


def test_an_event_folder_deep_in_an_archive_is_reached_from_its_photos_and_from_the_grid(
        site: Site, browser, tmp_path: Path) -> None:
    """A YEAR/MONTH/EVENT archive: the folder select offered the watched folder and the years only, and
    the photo page's folder was plain text, so an event's photos could be had only by typing its path
    into the address.  Each level of a photo's folder links to the grid of that folder; the grid of a
    folder shows the way up and links the folders inside it, and its select offers those (a level at
    a time, never thousands of folders in one list).  `tagwatch web` alone on a library of its own."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    root = tmp_path / "Photos"
    month = root / "2019" / "07 Juli"
    wedding = month / "Hochzeit Anna & Jörg"
    photos = {wedding / "red-star.jpg": ("red", "star"),
              month / "Strand" / "blue-square.jpg": ("blue", "square"),
              root / "2019" / "08 August" / "green-circle.jpg": ("green", "circle")}
    for number, (path, (colour, shape)) in enumerate(photos.items()):
        path.parent.mkdir(parents=True, exist_ok=True)
        synthetic.make_photo(colour, shape, 820 + number, (320, 240)).save(path, quality=88)
    (root / "2019" / ".thumbnails").mkdir()  # hidden: never offered
    config = write_config(tmp_path / "conf", SHAPES_CHECKPOINT, model=SHAPES_CONFIG, watch=[root],
                          tags=TAGS, threshold=THRESHOLD)
    assert tagwatch("scan", "--config", str(config), str(root)).returncode == 0
    assert set(exif_keywords(wedding / "red-star.jpg")["iptc"]) == {"red", "star"}

    def shown() -> set[str]:
        """The names of the photos in the grid (none while a page loads)."""
        return set(browser.execute_script(
            "return Array.from(document.querySelectorAll('li.card'), c => c.dataset.path.split('/').pop())"))

    def links(selector: str) -> list[str]:
        return browser.execute_script(
            "return Array.from(document.querySelectorAll(arguments[0]), a => a.textContent)", selector)

    def go(link: str, photos: set[str]) -> None:
        """Follow the link named ``link`` and wait for the grid of ``photos`` it leads to."""
        browser.find_element(By.LINK_TEXT, link).click()
        wait_for(lambda: shown() == photos)

    with page_alone(config, root) as alone:
        browser.get(f"{alone.base}/?token={alone.token}")
        # up from a photo: each level of its folder is a link to the grid of that folder
        browser.get(f"{alone.base}/photo/0/2019/{quote('07 Juli/Hochzeit Anna & Jörg')}/red-star.jpg")
        assert links("#crumbs a.folder") == [str(root), "2019", "07 Juli", "Hochzeit Anna & Jörg"]
        go("07 Juli", {"red-star.jpg", "blue-square.jpg"})
        assert links("#folder-path > a") == ["every watched folder", str(root), "2019"]
        assert links("#subfolders a") == ["Hochzeit Anna & Jörg", "Strand"]
        # down into the event; another filter keeps the folder (the select holds it)
        go("Hochzeit Anna & Jörg", {"red-star.jpg"})
        folder = Select(browser.find_element(By.NAME, "folder"))
        assert folder.first_selected_option.text == str(wedding)
        browser.find_element(By.NAME, "tag").send_keys("red")
        browser.find_element(By.CSS_SELECTOR, "form.filters button").click()
        wait_for(lambda: "tag=red" in browser.current_url and shown() == {"red-star.jpg"})
        assert Select(browser.find_element(By.NAME, "folder")).first_selected_option.text == str(wedding)
        # down from the top: the select offers the years, a year's grid its months, and so on
        browser.get(f"{alone.base}/")
        folder = Select(browser.find_element(By.NAME, "folder"))
        assert [o.text for o in folder.options] == ["every watched folder", str(root), f"{root}/2019"]
        folder.select_by_visible_text(f"{root}/2019")
        browser.find_element(By.CSS_SELECTOR, "form.filters button").click()
        # the grid of / shows these three too: wait for the one of 2019, not the page it leaves
        wait_for(lambda: "folder=0%2F2019" in browser.current_url
                 and shown() == {"red-star.jpg", "blue-square.jpg", "green-circle.jpg"})
        assert links("#subfolders a") == ["07 Juli", "08 August"]
        folder = Select(browser.find_element(By.NAME, "folder"))
        assert [o.text for o in folder.options] == ["every watched folder", str(root), f"{root}/2019",
                                                    f"{root}/2019/07 Juli", f"{root}/2019/08 August"]
        go("07 Juli", {"red-star.jpg", "blue-square.jpg"})
        screenshot(browser, "review-grid-folder")


# -- thumbnails --------------------------------------------------------------------------------------

def test_thumbnails_are_upright_and_cached_by_content_key(tmp_path: Path) -> None:
    """A photo stored sideways (EXIF orientation 6, as phones write) gets an upright thumbnail; a
    rename reuses it, new pixels make a new one."""
    from PIL import Image

    from tagwatch.formats import content_key
    from tagwatch.web.thumbnails import Thumbnails

    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    photo = tmp_path / "sideways.jpg"
    synthetic.make_photo("red", "horizontal bar", 3, (400, 300)).save(photo, exif=exif, quality=90)
    thumbnails = Thumbnails(tmp_path / "thumbnails")
    made = thumbnails.get(str(photo), None, "thumb")
    with Image.open(made) as image:
        assert image.size == (270, 360), "turned upright: portrait"
        assert image.mode == "RGB"
    assert made.name.startswith(content_key(photo.read_bytes()).hex())
    moved = photo.rename(tmp_path / "renamed.jpg")
    assert thumbnails.get(str(moved), None, "thumb") == made
    synthetic.make_photo("blue", "star", 4, (400, 300)).save(moved)
    assert thumbnails.get(str(moved), None, "thumb") != made
    assert oct(made.stat().st_mode & 0o777) == "0o600" and oct(made.parent.stat().st_mode & 0o777) == "0o700"


def test_only_an_explicit_host_exposes_the_page_and_that_is_logged(tmp_path: Path) -> None:
    from tagwatch.config import parse_config
    from tagwatch.web.server import exposure, page_address

    assert parse_config({}, tmp_path, "c.toml").web.host == "127.0.0.1"  # nothing else by default
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        assert exposure(host, page_address(host, 8765)) is None
    warning = exposure("0.0.0.0", page_address("0.0.0.0", 8765))
    assert warning is not None and warning.startswith("review page EXPOSED on http://0.0.0.0:8765/")
    assert page_address("::1", 1) == "http://[::1]:1/"


def test_a_correction_without_an_overrides_file_in_the_config_says_what_to_add(tmp_path: Path) -> None:
    from tagwatch.config import Config
    from tagwatch.web.corrections import CorrectionError, write_correction

    config = Config(watch=(tmp_path,), source=tmp_path / "config.toml")
    with pytest.raises(CorrectionError, match=r'config\.toml names none: add overrides = "overrides\.toml"'):
        write_correction(config, str(tmp_path / "a.jpg"), "red", "remove")
    assert list(tmp_path.iterdir()) == []


def test_corrections_saved_at_once_are_all_kept(tmp_path: Path) -> None:
    """The page saves each correction from a thread of its own: two at once read the same file and
    the later write took the earlier one's rule out (a person rejecting keywords quickly lost some)."""
    from concurrent.futures import ThreadPoolExecutor

    from tagwatch.config import Config
    from tagwatch.overrides import load_overrides
    from tagwatch.web.corrections import write_correction

    overrides = tmp_path / "overrides.toml"
    config = Config(watch=(tmp_path,), source=tmp_path / "config.toml", overrides=overrides)
    photo = str(tmp_path / "a.jpg")
    words = [f"word{i}" for i in range(12)]
    start = threading.Barrier(len(words))

    def reject(word: str) -> None:
        start.wait()
        write_correction(config, photo, word, "remove")

    with ThreadPoolExecutor(len(words)) as pool:
        list(pool.map(reject, words))
    assert sorted(load_overrides(overrides, [tmp_path]).for_path(photo).remove) == sorted(words)
