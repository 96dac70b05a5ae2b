"""The review page against what a security-minded user tried (report xR): links and hidden folders,
a reverse proxy in front, malformed queries and forms, odd file names, the token's redirect.

One `tagwatch web` (no daemon) serves a library `tagwatch scan` tagged with the tiny model, real
JPEGs; a small forwarding proxy written here stands for nginx in front of it (its two usual ways
with ``Host``), and Debian's chromium goes through it.  Each test works on photos of its own.
"""

from __future__ import annotations

import http.client
import http.server
import json
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

import synthetic
from conftest import REPO, chromium, exif_keywords, tagwatch, wait_for, write_config
from tagwatch.config import ConfigError, load_config
from tagwatch.overrides import load_overrides
from tagwatch.web.auth import Guard

pytestmark = pytest.mark.xdist_group("web-hardening")  # one page, one browser for the module

PUBLIC = "https://photos.example"  # where a TLS proxy would serve the page
SHAPES = [("red", "star"), ("green", "circle"), ("blue", "square"), ("yellow", "triangle")]
NEWLINE = "new\nline.jpg"


class Forwarder(http.server.ThreadingHTTPServer):
    """A reverse proxy as nginx's ``proxy_pass`` is one: every request to the page, headers and
    body as the browser sent them (its ``Origin`` names this proxy), plus ``X-Forwarded-*``; ``Host``
    is either the page's own (nginx's default, ``$proxy_host``) or the browser's (``proxy_set_header
    Host $host``).  Answers go back untouched, redirects and cookies included."""

    daemon_threads = True

    def __init__(self, backend: int, pass_host: bool) -> None:
        self.backend, self.pass_host = backend, pass_host
        super().__init__(("127.0.0.1", 0), _Forward)


class _Forward(http.server.BaseHTTPRequestHandler):
    server: Forwarder

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        own = f"127.0.0.1:{self.server.backend}"
        headers["Host"] = self.headers["Host"] if self.server.pass_host else own
        headers["X-Forwarded-Proto"] = "http"
        headers["X-Forwarded-For"] = self.client_address[0]
        upstream = http.client.HTTPConnection("127.0.0.1", self.server.backend, timeout=60)
        try:
            upstream.request(self.command, self.path, body=body, headers=headers)
            answer = upstream.getresponse()
            data = answer.read()
            self.send_response(answer.status)
            for name, value in answer.getheaders():
                if name.lower() not in ("content-length", "connection", "transfer-encoding", "date"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        finally:
            upstream.close()

    do_GET = do_POST = do_HEAD = _forward

    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class Page:
    root: Path
    outside: Path
    conf: Path
    config: Path
    port: int
    token: str
    log: Path
    proxy: Forwarder  # Host rewritten to the page's own
    passing: Forwarder  # the browser's Host passed on

    @property
    def csrf(self) -> str:
        return Guard(self.token, self.port).csrf

    def exchange(self, method: str, path: str, *, port: int | None = None, token: bool = True,
                 body: str | None = None, headers: dict[str, str] | None = None
                 ) -> tuple[int, dict[str, str], str]:
        """A raw request, the path sent exactly as written; answer's headers in lower case."""
        connection = http.client.HTTPConnection("127.0.0.1", port or self.port, timeout=60)
        sent = {"Authorization": f"token {self.token}"} if token else {}
        if body is not None:
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        sent.update(headers or {})
        try:
            connection.request(method, path, body=body, headers=sent)
            response = connection.getresponse()
            return (response.status, {k.lower(): v for k, v in response.getheaders()},
                    response.read().decode("utf-8", "replace"))
        finally:
            connection.close()

    def overrides(self) -> str:
        path = self.conf / "overrides.toml"
        return path.read_text(encoding="utf-8") if path.exists() else ""


def serve(proxy: http.server.ThreadingHTTPServer) -> None:
    threading.Thread(target=proxy.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> Iterator[Page]:
    base = tmp_path_factory.mktemp("web-hardening")
    root, outside = base / "photos", base / "outside"
    for folder in (root / "sub", outside / "private" / "tax-2025", outside / "medical"):
        folder.mkdir(parents=True)
    for number, (colour, shape) in enumerate(SHAPES):
        synthetic.make_photo(colour, shape, 900 + number, (320, 240)).save(root / f"{colour}-{shape}.jpg")
    synthetic.make_photo("purple", "circle", 950, (320, 240)).save(root / NEWLINE)
    # a PNG whose keywords live in a sidecar that is a link to a file outside the watched folder
    synthetic.make_photo("blue", "star", 951, (320, 240)).save(root / "side.png")
    subprocess.run(["exiftool", "-q", "-o", str(outside / "victim.xmp"), "-XMP-dc:Subject=victim-original",
                    str(root / "side.png")], check=True)
    (root / "side.png.xmp").symlink_to(outside / "victim.xmp")
    proxy, passing = Forwarder(0, pass_host=False), Forwarder(0, pass_host=True)
    config = write_config(base / "conf", tiny_checkpoint, watch=[root], extra="\n".join([
        "[web]",
        f'public_url = ["http://127.0.0.1:{proxy.server_address[1]}", '
        f'"http://localhost:{passing.server_address[1]}", "{PUBLIC}"]']))
    text = config.read_text(encoding="utf-8")  # overrides is a top-level key: before [model]
    config.write_text('overrides = "overrides.toml"\n' + text, encoding="utf-8")
    scanned = tagwatch("scan", "--config", str(config), str(root))
    assert "1 failed, 5 tagged" in scanned.stderr, scanned.stderr  # side.png: its sidecar is a link
    log = base / "web.log"
    with log.open("wb") as handle:
        web = subprocess.Popen([sys.executable, "-m", "tagwatch", "web", "--config", str(config),
                                "--port", "0"], stdout=subprocess.PIPE, stderr=handle, cwd=REPO, text=True)
    try:
        line = web.stdout.readline()  # type: ignore[union-attr]
        match = re.fullmatch(r"review page: http://127\.0\.0\.1:(\d+)/\?token=(\S+)\n", line)
        assert match, line + log.read_text()
        port = int(match.group(1))
        proxy.backend = passing.backend = port
        serve(proxy)
        serve(passing)
        yield Page(root, outside, config.parent, config, port, match.group(2), log, proxy, passing)
    finally:
        proxy.shutdown()
        passing.shutdown()
        web.terminate()
        assert web.wait(timeout=30) == 0
    assert "Traceback" not in log.read_text(encoding="utf-8", errors="replace")


@pytest.fixture(scope="module")
def browser(page: Page) -> Iterator[object]:
    with chromium() as driver:
        yield driver


def main(html: str) -> str:
    """The text of a page's <main>, tags taken out."""
    found = re.search(r"<main.*?</main>", html, re.S)
    return re.sub(r"<[^>]*>", " ", found.group(0) if found else html)


# -- 1, 2: nothing listed or read through a link, no hidden folder ----------------------------------

def test_the_folder_filter_lists_no_folder_through_a_link_or_inside_a_hidden_one(page: Page) -> None:
    """``?folder=0/link`` listed the folders of the link's target (a link to / browsed the whole
    file system) and ``?folder=0/.private`` those of a hidden folder: both now answer as a missing
    folder does, and neither is offered."""
    (page.root / "link-out").symlink_to(page.outside, target_is_directory=True)
    hidden = page.root / ".private"
    (hidden / "tax-2025").mkdir(parents=True)
    try:
        code, _, missing = page.exchange("GET", "/?folder=0/no-such-folder")
        assert code == 200 and "folders inside" not in main(missing)
        for folder in ("0/link-out", "0/link-out/private", "0/.private", "0/sub/../.private"):
            code, _, html = page.exchange("GET", f"/?folder={quote(folder)}")
            text = main(html)
            assert code == 200, (folder, text)
            assert "folders inside" not in text and "folder inside" not in text, (folder, text)
            for name in {"tax-2025", "medical", "private"} - set(folder.split("/")):  # none it did not type
                assert f">{name}<" not in html and f"/{name}\"" not in html, (folder, name)
        _, _, grid = page.exchange("GET", "/")
        assert "link-out" not in grid and ".private" not in grid and "0/sub" in grid
    finally:
        (page.root / "link-out").unlink()
        shutil.rmtree(hidden)


def test_no_keyword_is_read_through_a_link_to_a_file_outside(page: Page) -> None:
    """A recorded photo replaced by a link to a file outside, and a PNG whose sidecar is such a link:
    the daemon refuses both, and the grid and the photo page showed the outside file's keywords as
    "your own keyword".  Now they say the file is a link, and show none of them."""
    secret = page.outside / "secret.jpg"
    synthetic.make_photo("blue", "triangle", 960, (320, 240)).save(secret)
    subprocess.run(["exiftool", "-q", "-overwrite_original", "-IPTC:Keywords=TOPSECRET-outside", str(secret)],
                   check=True)
    photo = page.root / "yellow-triangle.jpg"
    kept = photo.read_bytes()
    photo.unlink()
    photo.symlink_to(secret)
    try:
        _, _, grid = page.exchange("GET", "/")
        assert "TOPSECRET-outside" not in grid
        assert "symbolic link" in grid and "nothing is read through it" in grid
        code, _, side = page.exchange("GET", "/photo/0/side.png")
        assert code == 200 and "victim-original" not in side
        assert "its sidecar side.png.xmp is a symbolic link" in side
        assert page.exchange("GET", "/photo/0/yellow-triangle.jpg")[0] == 404
    finally:
        photo.unlink()
        photo.write_bytes(kept)
    assert "victim-original" not in page.exchange("GET", "/")[2]


# -- 3: behind a reverse proxy ------------------------------------------------------------------------

def test_corrections_work_through_a_reverse_proxy_named_in_public_url(page: Page, browser) -> None:
    """Behind a proxy (as the docs recommend), the browser's Origin is the proxy's address and every
    correction was refused as cross-origin; a proxy passing the browser's Host got 400.  With the
    proxy's address in ``[web] public_url`` both work, in a real browser too; any other origin and
    host are still refused."""
    from selenium.webdriver.common.by import By

    proxied = f"http://127.0.0.1:{page.proxy.server_address[1]}"
    photo = page.root / "red-star.jpg"
    ours = exif_keywords(photo)["iptc"]
    assert ours, "the scan wrote keywords"
    browser.get(f"{proxied}/?token={page.token}")  # type: ignore[attr-defined]
    assert browser.current_url == f"{proxied}/"  # type: ignore[attr-defined]
    browser.get(f"{proxied}/photo/0/red-star.jpg")  # type: ignore[attr-defined]
    keyword = ours[0]
    browser.find_element(  # type: ignore[attr-defined]
        By.CSS_SELECTOR, f'button.act.remove[data-keyword="{keyword}"]').click()
    wait_for(lambda: "note=rejected" in browser.current_url)  # type: ignore[attr-defined]
    assert browser.current_url.startswith(f"{proxied}/photo/0/red-star.jpg?")  # type: ignore[attr-defined]
    assert keyword in load_overrides(page.conf / "overrides.toml", [page.root]).for_path(str(photo)).remove
    wait_for(lambda: keyword not in exif_keywords(photo)["iptc"])  # `tagwatch web` applied it itself

    # a TLS proxy passing the browser's Host (proxy_set_header Host $host), and one that does not
    body = f"action=add&keyword=proxied&csrf={page.csrf}"
    for port, host in ((page.passing.server_address[1], "photos.example"),
                       (page.proxy.server_address[1], "photos.example")):
        code, headers, html = page.exchange("POST", "/photo/0/green-circle.jpg", port=port, body=body,
                                            headers={"Origin": PUBLIC, "Host": host})
        assert code == 303 and "note=added" in headers["location"], (code, main(html))
    assert "proxied" in load_overrides(page.conf / "overrides.toml", [page.root]).for_path(
        str(page.root / "green-circle.jpg")).add
    before = page.overrides()
    code, _, html = page.exchange("POST", "/photo/0/green-circle.jpg", port=page.passing.server_address[1],
                                  body=body.replace("proxied", "evil"),
                                  headers={"Origin": "https://evil.example", "Host": "photos.example"})
    assert code == 403 and "cross-origin" in html
    assert page.exchange("GET", "/", headers={"Host": "evil.example"})[0] == 400  # rebinding still refused
    assert page.overrides() == before


# -- 4, 7: bad addresses --------------------------------------------------------------------------------

def test_a_bad_query_value_is_a_400_that_says_so_with_the_security_headers(page: Page) -> None:
    """``page=²`` ("²".isdigit() is true, int("²") raises), ``folder=²`` and a page past SQLite's
    integers answered a bare 500 without the security headers, and put a traceback in the log."""
    for query in ("page=%C2%B2", "page=200000000000000000", "page=abc", "page=-1", "page=0"):
        code, headers, html = page.exchange("GET", f"/?{query}")
        assert code == 400 and "Not a page number" in html, (query, code, html[-300:])
        assert "content-security-policy" in headers and headers["x-frame-options"] == "DENY"
    for query in ("folder=%C2%B2", "folder=%C2%B2/sub", "folder=0/a%00b", "folder=99999999999999999999",
                  "page=999999999", "margin=nan", "tag=%00"):
        code, headers, _ = page.exchange("GET", f"/?{query}")
        assert code == 200 and "content-security-policy" in headers, query
    assert "Traceback" not in page.log.read_text(encoding="utf-8", errors="replace")


def test_the_token_redirect_goes_to_this_site_only(page: Page) -> None:
    """``//evil.example/?token=…`` was answered ``Location: //evil.example/``: another site, after
    the cookie was set."""
    for path, location in ((f"//evil.example/?token={page.token}", "/evil.example/"),
                           (f"///evil.example/x?token={page.token}&a=1", "/evil.example/x?a=1"),
                           (f"/photo/0/red-star.jpg?token={page.token}", "/photo/0/red-star.jpg")):
        code, headers, _ = page.exchange("GET", path, token=False)
        assert code == 303 and headers["location"] == location, (path, headers)


# -- 6: a file name with a line break --------------------------------------------------------------------

def test_a_photo_named_with_a_line_break_is_shown_and_corrected(page: Page) -> None:
    """The grid linked it as ``/photo/0/new%0Aline.jpg``, and its page and thumbnail were 404."""
    address = "/photo/0/" + quote(NEWLINE)
    assert f'href="{address}"' in page.exchange("GET", "/")[2]
    code, _, html = page.exchange("GET", address)
    assert code == 200, main(html)
    assert page.exchange("GET", "/thumb/0/" + quote(NEWLINE))[1]["content-type"] == "image/jpeg"
    keyword = exif_keywords(page.root / NEWLINE)["iptc"][0]
    code, headers, _ = page.exchange("POST", address, body=f"action=remove&keyword={quote(keyword)}"
                                                           f"&csrf={page.csrf}")
    assert code == 303 and headers["location"].startswith(address + "?note=rejected"), headers
    rules = load_overrides(page.conf / "overrides.toml", [page.root])
    assert keyword in rules.for_path(str(page.root / NEWLINE)).remove
    assert keyword not in rules.for_path(str(page.root / "new")).remove


# -- 9, 10: what a POST is refused for, and when ----------------------------------------------------------

def post_headers_only(page: Page, path: str, headers: dict[str, str]) -> tuple[int, str]:
    """A POST whose headers promise a body that is never sent: only an answer given before reading
    the body comes back (a server reading it would wait until the connection's timeout)."""
    connection = http.client.HTTPConnection("127.0.0.1", page.port, timeout=60)
    try:
        connection.putrequest("POST", path)
        for name, value in {"Authorization": f"token {page.token}", **headers}.items():
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def test_a_post_is_refused_before_its_body_is_read(page: Page) -> None:
    """A 100 MB form without the CSRF value was read (and 400 "Field exceeded maximum size") before
    the 403 the docs promised "before anything is read"."""
    photo = "/photo/0/blue-square.jpg"
    before = page.overrides()
    form = {"Content-Type": "application/x-www-form-urlencoded", "Content-Length": "100000000"}
    code, text = post_headers_only(page, photo, form)
    assert code == 413 and "at most 64 KB" in text
    code, text = post_headers_only(page, photo, {**form, "Content-Length": "50", "X-CSRF-Token": "wrong"})
    assert code == 403 and "CSRF" in text
    code, text = post_headers_only(page, photo, {"Content-Type": "multipart/form-data; boundary=x",
                                                 "Content-Length": "100000000"})
    assert code == 415 and "url-encoded" in text
    code, _, html = page.exchange("POST", photo, body="action=remove&keyword=x&" + "a" * 70_000)
    assert code == 413
    code, _, html = page.exchange("POST", photo, body="action=remove&keyword=x")
    assert code == 403 and "CSRF value is missing" in html
    # the header alone (scripts) still does
    code, _, _ = page.exchange("POST", photo, body="action=add&keyword=by-header",
                               headers={"X-CSRF-Token": page.csrf})
    assert code == 303
    rules = load_overrides(page.conf / "overrides.toml", [page.root]).for_path(
        str(page.root / "blue-square.jpg"))
    assert rules.add == ("by-header",) and rules.remove == (), before


def test_a_keyword_that_is_not_utf8_is_refused_and_nothing_written(page: Page) -> None:
    """``keyword=J%F6rg`` (a Latin-1 form) was written into the photo as ``J\ufffdrg``."""
    photo = page.root / "yellow-triangle.jpg"
    before, rules = photo.read_bytes(), page.overrides()
    for sent, shown in (("J%F6rg", "J\\xf6rg"), ("a%FF%FEb", "a\\xff\\xfeb"), ("J\xf6rg", "J\\xf6rg")):
        code, _, html = page.exchange("POST", "/photo/0/yellow-triangle.jpg",
                                      body=f"action=add&keyword={sent}&csrf={page.csrf}")  # str: Latin-1
        assert code == 409, (sent, main(html))
        assert "Nothing was written" in html and "is not UTF-8 text" in html and shown in html, main(html)
    assert photo.read_bytes() == before and page.overrides() == rules
    # UTF-8, percent-encoded or not, is a keyword like any other
    code, _, _ = page.exchange("POST", "/photo/0/yellow-triangle.jpg",
                               body=f"action=add&keyword={quote('Jörg')}&csrf={page.csrf}")
    assert code == 303
    assert "Jörg" in load_overrides(page.conf / "overrides.toml", [page.root]).for_path(str(photo)).add


# -- 5: another loopback address ---------------------------------------------------------------------------

def test_tagwatch_web_on_another_loopback_address_answers_at_the_address_it_prints(page: Page) -> None:
    """``--host 127.0.0.2`` printed http://127.0.0.2:PORT/?token=… and that address answered 400
    "Invalid host header": the Host check knew only 127.0.0.1, localhost and ::1.  It also starts
    with its token file deleted, as the docs say to change the token: the old one is refused."""
    token_file = page.conf / "state" / "web-token"
    kept = token_file.read_text()
    token_file.unlink()
    web = subprocess.Popen([sys.executable, "-m", "tagwatch", "web", "--config", str(page.config),
                            "--host", "127.0.0.2", "--port", "0"], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, cwd=REPO, text=True)
    try:
        line = web.stdout.readline()  # type: ignore[union-attr]
        match = re.fullmatch(r"review page: http://127\.0\.0\.2:(\d+)/\?token=(\S+)\n", line)
        assert match, line
        connection = http.client.HTTPConnection("127.0.0.2", int(match.group(1)), timeout=60)
        connection.request("GET", f"/?token={match.group(2)}")
        answer = connection.getresponse()
        assert answer.status == 303 and answer.getheader("location") == "/", answer.status
        connection.close()
        assert match.group(2) != page.token
        connection = http.client.HTTPConnection("127.0.0.2", int(match.group(1)), timeout=60)
        connection.request("GET", f"/?token={page.token}")
        assert connection.getresponse().status == 403  # the old token, changed
        connection.close()
        connection = http.client.HTTPConnection("127.0.0.2", int(match.group(1)), timeout=60)
        connection.request("GET", "/", headers={"Host": "evil.example",
                                                "Authorization": f"token {page.token}"})
        assert connection.getresponse().status == 400  # still no other name
        connection.close()
    finally:
        web.terminate()
        token_file.write_text(kept)  # the module's page goes on with its token
        assert web.wait(timeout=30) == 0


def test_public_url_is_checked_when_the_config_is_read(tmp_path: Path) -> None:
    """A proxy serving the page under a path cannot work (its links start at /): said at load."""
    config = tmp_path / "config.toml"
    config.write_text(f'watch = [{json.dumps(str(tmp_path))}]\n[web]\npublic_url = "https://Photos.Example:443/"\n',
                      encoding="utf-8")
    assert load_config(config).web.public_url == (PUBLIC,)
    config.write_text(config.read_text().replace("https://Photos.Example:443/", "https://nas/photos/"))
    with pytest.raises(ConfigError, match=r"web\.public_url must be an address .* no path"):
        load_config(config)
