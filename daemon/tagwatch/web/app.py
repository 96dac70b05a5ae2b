"""The review page's routes: Starlette endpoints rendering Jinja2 templates.

Every route sits behind :class:`TokenGate` (403 without the token); every POST checks the CSRF value
before it does anything (:func:`_checked_form`: a wrong ``X-CSRF-Token`` header, a body that is not a
small url-encoded form, are refused before the body is read).  Photos, thumbnails and previews are
found through :class:`~tagwatch.web.paths.PhotoRoots` only, so a URL can name nothing outside the
watched folders.  Routes are plain functions: Starlette runs them in its thread pool, where SQLite,
exiftool and Pillow may block without stalling the server.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.convertors import Convertor, register_url_convertor
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from ..calibrate import number
from ..casefold import fold, folded
from ..config import Config
from ..formats import ImageError
from ..metadata import ExifTool, KeywordWriter
from ..overrides import CORRECTIONS
from ..status import running_daemon, watching
from ..store import UNTAGGED, USER, Store
from ..wording import counted, score_beside
from .auth import CSRF_FIELD, CSRF_HEADER, Guard
from .corrections import Applier, CorrectionError, write_correction, write_threshold
from .library import NEAR_MARGIN, Filters, Follow, Library, PhotoView
from .thumbnails import Thumbnails

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
SHOWS = {"all": "all photos", "recent": "recently tagged", "failed": "failed", "near": "near a threshold"}
NOTES = {"rejected": "Rejected {k!r}: written to {f}; {then}",
         "added": "Added {k!r}: written to {f}; {then}",
         "restored": "Took back the correction of {k!r} in {f}; {then}",
         # a keyword written for a correction is the person's (never taken out), so ↺ cannot take it out
         "restored-add": "Took back the correction of {k!r} in {f}. {k!r} stays in the photo, as your own "
                         "keyword: tagwatch never takes out a keyword written for a correction (remove it "
                         "in your photo app).",
         "nothing-undone": "No correction of {k!r} for this photo is left in {f} (taken back already, in "
                           "another tab?): nothing was written.",
         "threshold": "{m}"}
# What follows a correction: nothing is written into a photo untag set aside, nor into one tagwatch
# cannot write (it failed, or the write would refuse it: read-only), which the page knows before the
# daemon tries; any other follows in a moment
SET_ASIDE = ("nothing is written into the photo while untag has set it aside: a `tagwatch scan` of it "
             "tags it again, with the corrections then in the file.")
UNWRITABLE = ("but nothing is written into the photo while tagwatch cannot write it (why is said beside its "
              "keywords): the correction is kept, and reaches the file once it can.")
FOLLOWS = "the photo follows in a moment."
GONE = "This photo is not in the watched folders any more (deleted or renamed since the page was opened)."
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                                 b"img-src 'self' data:; connect-src 'self'; form-action 'self'; "
                                 b"frame-ancestors 'none'; base-uri 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),  # no-referrer would make a form POST's Origin "null"
    (b"x-frame-options", b"DENY"),
]

FORM_LIMIT = 64 * 1024  # bytes of a POSTed form: a correction's is well under 1 KB
FORM_FIELDS = 20
PAGE_DIGITS = 9  # a page number past 999,999,999 is none: (page - 1) * 60 must stay a SQLite integer

Scope = MutableMapping[str, Any]


class FileName(Convertor[str]):
    """``{rel:file}``: Starlette's ``path`` convertor is ``.*``, which stops at a line break, so a
    photo named ``a\\nb.jpg`` (the daemon tags it) was listed in the grid and 404 everywhere else."""

    regex = "[^\\x00]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("file", FileName())
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


class SecurityHeaders:
    """ASGI middleware, the outermost: the security headers on every answer, refusals included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        started = False

        async def send_with_headers(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            if started:
                raise
            # Starlette's own 500 answers from outside this middleware: no security headers on it
            log.exception("review page: %s %s failed", scope.get("method"), scope.get("path"))
            await PlainTextResponse("500: the review page failed on this request; the log says why.",
                                    status_code=500)(scope, receive, send_with_headers)


class TokenGate:
    """ASGI middleware: the token, cookie or header first, or 403.

    ``?token=`` on a GET is answered with the session cookie and a redirect to the same address
    without it (Jupyter's way), so the token does not stay in the address bar or go out in a
    Referer.  A POST from another origin is refused whatever it carries, and says so; ``origins``
    are those of ``[web] public_url``, where a reverse proxy serves the page (a proxy forwards the
    browser's Origin, its own address, while Host names this server).  It sits inside the Host check,
    so a foreign Host (DNS rebinding) gets 400 before the token is even looked at.

    The browser's history keeps the address it was first given, token and all (the redirect takes it
    out of the address bar only): the docs say how to change the token.
    """

    def __init__(self, app: ASGIApp, guard: Guard, forbidden: Callable[[str | None], bytes],
                 origins: frozenset[str] = frozenset()) -> None:
        self.app, self.guard, self.forbidden, self.origins = app, guard, forbidden, origins

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        given = [v for k, v in query if k == "token"]
        origin = request.headers.get("origin")
        response: Response
        if not self._holds_token(request, given):
            response = HTMLResponse(self.forbidden(None), status_code=403)
        elif (request.method == "POST" and origin is not None and origin != _origin(request)
              and origin not in self.origins):
            response = HTMLResponse(self.forbidden(origin), status_code=403)
        elif given and request.method in ("GET", "HEAD"):
            response = RedirectResponse(_without_token(scope, query), status_code=303)
            response.set_cookie(self.guard.cookie_name, self.guard.cookie_value, httponly=True,
                                samesite="strict", path="/")
        else:
            await self.app(scope, receive, send)
            return
        await response(scope, receive, send)

    def _holds_token(self, request: Request, given: list[str]) -> bool:
        guard = self.guard
        return (guard.cookie_ok(request.cookies.get(guard.cookie_name))
                or guard.header_ok(request.headers.get("authorization"))
                or (len(given) == 1 and guard.token_ok(given[0])))


def _without_token(scope: Scope, query: list[tuple[str, str]]) -> str:
    """The address asked for without ``?token=``: its path as the browser sent it (re-encoding the
    decoded one encoded a file name's ``#`` or ``?`` twice), and relative, so it names no host: one
    slash first, since ``//evil.example/`` is another site's address to a browser."""
    raw = scope.get("raw_path")  # only bytes a client left raw get encoded:
    path = quote(raw, safe="/%:@!$&'()*+,;=~") if raw else quote(scope["path"])
    path = "/" + path.lstrip("/")
    rest = urlencode([(k, v) for k, v in query if k != "token"])
    return f"{path}?{rest}" if rest else path


def _origin(request: Request) -> str:
    return f"{request.url.scheme}://{request.headers.get('host', '')}"


def _page(value: str) -> int:
    """The grid's ``page``: 1 when not given, else a whole number from 1 (ASCII digits: ``"²".isdigit()``
    is true and ``int("²")`` raised, a 500 with a traceback in the log), or 400 saying so."""
    if not value:
        return 1
    if not (value.isascii() and value.isdigit()) or len(value) > PAGE_DIGITS or int(value) < 1:
        raise HTTPException(400, f"Not a page number: {value[:40]!r}. Pages are numbered from 1.")
    return int(value)


def _number(value: str | None, default: float | None = None, low: float = -1.0, high: float = 1.0
            ) -> float | None:
    try:
        number = float(value) if value not in (None, "") else default
    except ValueError:
        return default
    if number is None or not math.isfinite(number):
        return default
    return min(max(number, low), high)


def create_app(config: Config, *, token: str, port: int, apply_corrections: bool = True) -> Starlette:
    """The review page for ``config``.  ``apply_corrections``: with no daemon running, apply the
    corrections here (``tagwatch web``); the daemon hosting the page applies them itself."""
    # The daemon hosting the page found and said a restore at its start, in the same log: its page's
    # connection finds it again while a backup's lock keeps it unrecorded, and said it a second time
    store = Store(config.database, restore_told=not apply_corrections)
    exiftool = ExifTool()
    writer = KeywordWriter(exiftool, config.write)
    library = Library(config, store, writer, lambda: running_daemon(config.database) is not None)
    thumbnails = Thumbnails(config.database.parent / "thumbnails")
    guard = Guard(token, port)
    applier = Applier(config) if apply_corrections else None
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    env = templates.env
    env.globals.update(csrf=guard.csrf, csrf_field=CSRF_FIELD, shows=SHOWS, quote=quote,
                       near_margin=NEAR_MARGIN)
    env.filters["when"] = lambda t: time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "—"
    env.filters["score"] = lambda s: "—" if s is None else f"{s:.3f}"
    env.filters["score_beside"] = score_beside
    env.filters["decimal"] = number  # a threshold as calibrate writes it: 0.3, not float32's noise
    env.filters["ago"] = _ago
    env.filters["anchor"] = _anchor  # a card's id: focus stays on it when the grid is swapped
    env.filters["counted"] = counted  # "1 folder", "2 folders": as `tagwatch status` says it
    env.filters["watching"] = lambda d: watching(d.get("folders"), len(d.get("unwatched") or {}))  # as status

    def render(request: Request, name: str, status: int = 200, **context: Any) -> Response:
        context.setdefault("notice", library.notice)
        context.setdefault("apply_error", applier.last_error if applier else None)
        context.setdefault("appending", library.appending)
        return templates.TemplateResponse(request, name, context, status_code=status,
                                          headers={"cache-control": "no-store"})

    def photo_path(request: Request) -> str:
        path = library.roots.resolve(request.path_params["root"], request.path_params["rel"])
        if path is None:
            raise HTTPException(404, GONE + (" Nothing was written." if request.method == "POST" else ""))
        return path

    # -- pages ---------------------------------------------------------------------------------

    def grid(request: Request) -> Response:
        q = request.query_params
        show = q.get("show", "all")
        filters = Filters(folder=q.get("folder", ""), tag=q.get("tag", "").strip(),
                          show=show if show in SHOWS else "all",
                          margin=_number(q.get("margin"), NEAR_MARGIN, 0.0, 1.0) or 0.0,
                          page=_page(q.get("page", "")))
        tree = library.folder_tree(filters.folder)
        if tree is not None:  # one spelling of the folder: the select finds it, the links keep it
            filters = replace(filters, folder=tree.value)
        page = library.grid(filters)
        return render(request, "grid.html", page=page, filters=filters, folders=library.folders(tree),
                      tree=tree, keywords=library.scoring().vocabulary.keywords,
                      follow=_follow(request, page.behind))

    def photo(request: Request) -> Response:
        path = photo_path(request)
        floor = _number(request.query_params.get("floor"))
        note = request.query_params.get("note")
        message = None
        view = library.photo(path, floor)
        if note in NOTES:
            message = NOTES[note].format(k=request.query_params.get("k", ""), f=config.overrides,
                                         m=request.query_params.get("m", ""), then=_then(view))
        error = None
        if config.overrides is None:
            error = (f"Corrections are kept in an overrides file, and {config.source or 'the config'} names "
                     'none: add overrides = "overrides.toml" to it and restart tagwatch.')
        return render(request, "photo.html", view=view, message=message, error=error)

    def photo_keywords(request: Request) -> Response:
        """The keywords panel alone: the photo page polls it while a correction is pending."""
        return render(request, "_keywords.html", view=library.photo(photo_path(request)))

    async def correct(request: Request) -> Response:
        form = await _checked_form(request, guard)
        path = photo_path(request)
        action, keyword = form.get("action", ""), " ".join(str(form.get("keyword", "")).split())
        if action not in CORRECTIONS:
            raise HTTPException(400, "a correction needs an action (add, remove, undo) and a keyword")
        if _undecodable(keyword):  # a form sent in Latin-1 (J%F6rg): no keyword to write, and no guess
            view = await run_in_threadpool(library.photo, path)
            return render(request, "photo.html", status=409, view=view, error=(
                f"Nothing was written: the keyword {_shown(keyword)} is not UTF-8 text (the form sent "
                "bytes that are no UTF-8 character; the page's own forms send UTF-8, a script must too)."))
        if not keyword:  # the box's `required` lets spaces through
            view = await run_in_threadpool(library.photo, path)
            return render(request, "photo.html", status=400, view=view,
                          error="Nothing was written: the keyword is empty.")
        # ↺ of an added keyword already written: the rule goes, the keyword stays (the person's)
        corrected, was_written = (await run_in_threadpool(_correction_of, path, keyword) if action == "undo"
                                  else (True, False))
        if not corrected:  # a second click, a stale tab: nothing left to take back
            url = library.roots.url("photo", path)
            return RedirectResponse(f"{url}?{urlencode({'note': 'nothing-undone', 'k': keyword})}",
                                    status_code=303)
        try:
            written = await run_in_threadpool(write_correction, config, path, keyword, action)
        except CorrectionError as exc:
            log.warning("review page: %s %r for %s refused: %s", action, keyword, path, exc)
            view = await run_in_threadpool(library.photo, path)
            return render(request, "photo.html", status=409, view=view, error=str(exc))
        log.info("review page: %s %r for %s (%s)", action, keyword, path, written)
        if applier is not None:
            applier.request()
        note = "restored-add" if was_written else {"remove": "rejected", "add": "added", "undo": "restored"}[
            str(action)]
        url = library.roots.url("photo", path)
        return RedirectResponse(f"{url}?{urlencode({'note': note, 'k': keyword})}", status_code=303)

    def thumb(request: Request) -> Response:
        path = photo_path(request)
        kind = "preview" if request.url.path.startswith("/preview/") else "thumb"
        try:
            file = thumbnails.get(path, store.file(path), kind)
        except (ImageError, OSError) as exc:
            log.debug("review page: no thumbnail of %s: %s", path, exc)
            return FileResponse(HERE / "static" / "no-preview.svg", media_type="image/svg+xml")
        return FileResponse(file, media_type="image/jpeg",
                            headers={"cache-control": "private, max-age=86400"})

    def tags(request: Request) -> Response:
        counts = library.tag_counts()
        return render(request, "tags.html", rows=counts.rows, behind=counts.behind, tag_list=config.tags,
                      follow=_follow(request, counts.behind))

    def tag(request: Request) -> Response:
        keyword = request.path_params["keyword"]
        proposed = _number(request.query_params.get("threshold"))
        view = library.tag(keyword, proposed)
        if view is None:
            raise HTTPException(404)
        template = "_tag_preview.html" if request.url.path.startswith("/tag-preview/") else "tag.html"
        return render(request, template, view=view, message=request.query_params.get("m"),
                      tag_list=config.tags, follow=_follow(request, view.behind))

    async def set_threshold(request: Request) -> Response:
        form = await _checked_form(request, guard)
        keyword = request.path_params["keyword"]
        # Unclamped: a value out of range is refused as such (write_threshold), never saved as 1 or -1
        value = _number(str(form.get("threshold", "")), low=-math.inf, high=math.inf)
        scoring = await run_in_threadpool(library.scoring)
        if keyword not in scoring.index:
            raise HTTPException(404, f"{keyword!r} is not in the tag list {config.tags} any more (taken out "
                                     "since the page was opened?): nothing was written.")
        try:
            if value is None:
                raise CorrectionError(f"not a threshold: {form.get('threshold')!r}")
            message = await run_in_threadpool(write_threshold, config, scoring.vocabulary, keyword, value)
        except CorrectionError as exc:
            log.warning("review page: threshold of %r refused: %s", keyword, exc)
            view = await run_in_threadpool(library.tag, keyword, value)
            return render(request, "tag.html", status=409, view=view, error=str(exc), tag_list=config.tags,
                          follow=_follow(request, view.behind))
        log.info("review page: threshold of %r at %s: %s", keyword, number(value), message.splitlines()[0])
        if applier is not None:
            applier.request()
        return RedirectResponse(f"/tag/{quote(keyword)}?{urlencode({'m': message})}", status_code=303)

    def status(request: Request) -> Response:
        template = "_status.html" if request.url.path == "/status-panel" else "status.html"
        return render(request, template, s=library.status(), config=config)

    def forbidden(origin: str | None) -> bytes:
        """The 403 page: no token, or (``origin``) a change sent from another site's page."""
        return env.get_template("forbidden.html").render(origin=origin).encode()

    def _correction_of(path: str, keyword: str) -> tuple[bool, bool]:
        """Does a rule for the photo add or remove ``keyword`` (whatever its case); and does one add
        it, written into the photo for that rule (↺ then takes back the rule, not the keyword)?"""
        override = library.scoring().overrides.for_path(path)
        word = fold(keyword)
        if word not in folded((*override.add, *override.remove)):
            return False, False
        row = store.file(path)
        if row is None or word not in folded(override.add):
            return True, False
        ledger = store.ledgers([row.id]).get(row.id, {})
        return True, any(fold(k) == word and action == USER for k, action in ledger.items())

    async def not_found(request: Request, exc: Exception) -> Response:
        """An error page in the page's frame, with the way back (a bare "404 Not Found" was all)."""
        code = getattr(exc, "status_code", 500)
        detail = getattr(exc, "detail", "") or {404: "Not found."}.get(code, "")
        body = env.get_template("error.html").render(code=code, detail=detail, notice=None, apply_error=None)
        return HTMLResponse(body, status_code=code, headers={"cache-control": "no-store"})

    routes = [
        Route("/", grid),
        Route("/photo/{root:int}/{rel:file}", photo),
        Route("/photo/{root:int}/{rel:file}", correct, methods=["POST"]),
        Route("/photo-keywords/{root:int}/{rel:file}", photo_keywords),
        Route("/thumb/{root:int}/{rel:file}", thumb),
        Route("/preview/{root:int}/{rel:file}", thumb),
        Route("/tags", tags),
        Route("/tag/{keyword:path}", tag),
        Route("/tag/{keyword:path}", set_threshold, methods=["POST"]),
        Route("/tag-preview/{keyword:path}", tag),
        Route("/status", status),
        Route("/status-panel", status),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    app = Starlette(routes=routes, middleware=[  # outermost first: the Host check before the token
        Middleware(SecurityHeaders),
        Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts(config)),
        Middleware(TokenGate, guard=guard, forbidden=forbidden, origins=frozenset(config.web.public_url)),
    ], exception_handlers={HTTPException: not_found})

    def close() -> None:
        if applier is not None:
            applier.stop()
        exiftool.close()
        store.close()

    if applier is not None:
        applier.start()
    app.state.close = close
    app.state.library = library
    app.state.applier = applier
    return app


def allowed_hosts(config: Config) -> list[str]:
    """The Host headers a page on loopback answers: loopback's names, the address it listens on
    (``--host 127.0.0.2`` printed an address that answered 400), and the hosts of ``[web]
    public_url`` (a proxy passing the browser's Host).  Anything else is DNS rebinding.  A page
    listening beyond loopback answers any name another machine reaches it by."""
    if not config.web.loopback:
        return ["*"]
    hosts = ["127.0.0.1", "localhost", "[::1]", "::1", config.web.host]
    hosts += [urlsplit(url).hostname or "" for url in config.web.public_url]
    return list(dict.fromkeys(h for h in hosts if h))


async def _checked_form(request: Request, guard: Guard) -> FormData:
    """The POSTed form, once its CSRF value is right (403 otherwise, before anything is done).

    Refused before the body is read: a wrong ``X-CSRF-Token`` header (403), a body that is not
    url-encoded (415: the page's forms never are) or longer than :data:`FORM_LIMIT` (413).  Else the
    body, at most that long, is read and its ``csrf`` field checked.  A byte sequence that is no UTF-8
    is kept as surrogates (``surrogateescape``), for the route to refuse, never a U+FFFD written."""
    header = request.headers.get(CSRF_HEADER)
    if header is not None and not guard.csrf_ok(header):
        raise HTTPException(403, "the request's CSRF value is wrong: reload the page and try again")
    kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise HTTPException(415, "the page takes its changes as a url-encoded form "
                                 "(application/x-www-form-urlencoded): nothing was read or done")
    length = request.headers.get("content-length", "")
    too_long = HTTPException(413, f"a change is a form of at most {FORM_LIMIT // 1024} KB: nothing was done")
    if length and (not (length.isascii() and length.isdigit()) or int(length) > FORM_LIMIT):
        raise too_long
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > FORM_LIMIT:
            raise too_long
    try:
        pairs = parse_qsl(bytes(body).decode("utf-8", "surrogateescape"), keep_blank_values=True,
                          encoding="utf-8", errors="surrogateescape", max_num_fields=FORM_FIELDS)
    except ValueError:
        raise HTTPException(400, f"a change is a form of at most {FORM_FIELDS} fields: nothing was done"
                            ) from None
    form = FormData(pairs)
    value = header if header is not None else form.get(CSRF_FIELD)
    if not isinstance(value, str) or not value.isascii() or not guard.csrf_ok(value):
        raise HTTPException(403, "the form's CSRF value is missing or wrong: reload the page and try again")
    return form


def _anchor(path: str) -> str:
    """An HTML id for a photo's card, the same in every rendering of it: htmx puts the keyboard
    focus back on the element of the same id after a swap, so a person tabbing through the grid
    stays on their photo while the counts of a re-tag are swapped in (a path may hold spaces, which
    an id may not)."""
    return "photo-" + hashlib.blake2b(path.encode("utf-8", "surrogateescape"), digest_size=8).hexdigest()


def _follow(request: Request, behind: int) -> Follow:
    """How the page answering ``request`` follows the re-tag (:class:`Follow`), from what its ask
    carried."""
    q = request.query_params
    return Follow.after(behind, q.get("was"), q.get("quiet"))


def _then(view: PhotoView) -> str:
    """What follows a correction of this photo, said in the page's answer to it."""
    if view.row is not None and view.row.state == UNTAGGED:
        return SET_ASIDE
    return UNWRITABLE if view.unwritable else FOLLOWS


def _undecodable(text: str) -> bool:
    """Does ``text`` hold bytes that were no UTF-8 (``surrogateescape``'s lone surrogates)?"""
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def _shown(text: str) -> str:
    """``text`` for a message, its undecodable bytes as ``\\xff``: a lone surrogate cannot be sent."""
    return repr(text.encode("utf-8", "surrogateescape"))[1:]


def _ago(timestamp: float | None) -> str:
    if not timestamp:
        return "—"
    seconds = max(0, int(time.time() - timestamp))
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"
