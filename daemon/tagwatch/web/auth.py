"""Who may use the page: whoever holds the token that ``tagwatch web`` prints (as Jupyter does).

The token lives in the data folder (``web-token``, readable by this user only), so the address stays
the same across restarts and ``tagwatch web --url`` can print it again.  A request proves it holds
the token by ``?token=`` (the address as printed: answered with a session cookie and a redirect to the
same address without the token, so it leaves the address bar and goes out in no Referer; the
browser's history still keeps the address first opened, token and all, which docs/review-page.md
says, with how to change the token: delete ``web-token``, restart the page), the cookie, or an
``Authorization: token …`` header (scripts).  Everything else gets 403, static files included.

State-changing requests are POSTs carrying a CSRF value (a form field or an ``X-CSRF-Token`` header)
derived from the token; the cookie is ``SameSite=Strict`` and ``HttpOnly`` too.  Neither the token nor
anything derived from it is ever logged: the server keeps no access log.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from ..store import private_folder

TOKEN_FILE = "web-token"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"


def token_path(database: Path) -> Path:
    """The token file, beside the database in the data folder."""
    return database.parent / TOKEN_FILE


def load_token(database: Path) -> str:
    """The page's token, made (random, 0600) on first use and kept; a file other users could read is
    made private again, since anyone holding the token can change keywords."""
    path = token_path(database)
    private_folder(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
        token = path.read_text(encoding="ascii").strip()
        if len(token) >= 16:
            return token
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)  # empty or damaged: a new one
    token = secrets.token_urlsafe(24)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(token + "\n")
    return token


class Guard:
    """Checks a request's token, cookie and CSRF value (constant-time comparisons)."""

    def __init__(self, token: str, port: int) -> None:
        self._token = token
        self.cookie_name = f"tagwatch-{port}"  # cookies are per host, not per port
        self.cookie_value = self._derive(b"session")
        self.csrf = self._derive(b"csrf")

    def _derive(self, purpose: bytes) -> str:
        return hmac.new(self._token.encode(), purpose, hashlib.sha256).hexdigest()

    def token_ok(self, value: str | None) -> bool:
        return bool(value) and hmac.compare_digest(value.encode(), self._token.encode())

    def cookie_ok(self, value: str | None) -> bool:
        return bool(value) and hmac.compare_digest(value.encode(), self.cookie_value.encode())

    def header_ok(self, value: str | None) -> bool:
        scheme, _, credential = (value or "").partition(" ")
        return scheme.lower() == "token" and self.token_ok(credential.strip())

    def csrf_ok(self, value: str | None) -> bool:
        return bool(value) and hmac.compare_digest(value.encode(), self.csrf.encode())
