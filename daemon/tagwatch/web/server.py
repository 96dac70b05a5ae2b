"""Serving the review page: uvicorn in the foreground (``tagwatch web``) or in a thread (the daemon).

The socket is bound here, before uvicorn starts, so a port in use is one clear error and port 0 gets
a free port whose number the log names.  While it serves, the page records where it listens in the
data folder (``web-address.<pid>.<port>``, no token in it), so ``tagwatch web --url`` prints the
address of the page that runs, not the config's port.  uvicorn keeps no access log (the first
request of a visit carries the token in its query string) and its own lines go through tagwatch's
logging.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..atomic import write_atomic
from ..config import Config, TaggingConfig, is_loopback
from ..status import running_daemon
from .auth import load_token, token_path

log = logging.getLogger(__name__)


class WebError(RuntimeError):
    """The page cannot be served (a package of it is missing, the port is taken); one line."""


def _imports() -> None:
    try:
        import jinja2  # noqa: F401
        import multipart  # noqa: F401
        import starlette  # noqa: F401
        import tomlkit  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise WebError(f"the review page cannot start: {exc.name}, which tagwatch installs with itself, is "
                       "missing (an incomplete install): install tagwatch again from its checkout, e.g. "
                       "`pipx install --force .`") from None


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise WebError(f"review page: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def bind_page(config: Config, host: str, port: int) -> socket.socket:
    """:func:`bind`; a port taken by a page of this data folder (the daemon's, most often) says so
    and how to open it, where only "Address already in use" was said."""
    try:
        return bind(host, port)
    except WebError:
        serving = next((page for page in running_pages(config.database) if page.port == port), None)
        if serving is None:
            raise
        who = ("the daemon" if serving.pid == running_daemon(config.database)
               else "another `tagwatch web`")
        raise WebError(f"review page: {who} (pid {serving.pid}) already serves it on {serving.address}: open "
                       "that one; `tagwatch web --url` prints its address with the token") from None


WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # listening on every address
RECORD = "web-address."


def page_address(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def open_host(host: str) -> str:
    """The host a browser on this machine opens for a page listening on ``host``: a wildcard names
    no machine (a browser cannot open http://0.0.0.0/ everywhere), so its loopback, which it covers."""
    return WILDCARDS.get(host, host)


@dataclass(frozen=True)
class Listening:
    """A review page serving now: where it listens, the address to open (no token), since when."""

    pid: int
    host: str
    port: int
    address: str
    started: float


def running_pages(database: Path) -> list[Listening]:
    """The pages serving now for ``database``'s data folder, newest first.  A record whose process
    has ended (killed before it could remove it) is skipped."""
    pages = []
    for path in database.parent.glob(RECORD + "*"):
        try:
            page = Listening(**json.loads(path.read_text(encoding="utf-8")))
            os.kill(page.pid, 0)  # raises when no such process is ours
        except (OSError, ValueError, TypeError):
            continue
        pages.append(page)
    return sorted(pages, key=lambda page: page.started, reverse=True)


def exposure(host: str, address: str) -> str | None:
    """The warning a page reachable from other machines logs at start; None on loopback."""
    if is_loopback(host):
        return None
    return (f"review page EXPOSED on {address}: anyone who can reach this address and has the token can "
            "see the photos and change their keywords (it is plain HTTP: put it behind a TLS proxy or a VPN)")


class WebServer:
    """The review page on ``[web] host``/``port`` (overridable), bound at construction."""

    def __init__(self, config: Config, *, host: str | None = None, port: int | None = None,
                 apply_corrections: bool = True) -> None:
        _imports()
        import uvicorn

        from .app import create_app

        self.host = host or config.web.host
        self.sock = bind_page(config, self.host, config.web.port if port is None else port)
        self.port = self.sock.getsockname()[1]
        self.token = load_token(config.database)
        self.address = page_address(open_host(self.host), self.port)
        self.record = config.database.parent / f"{RECORD}{os.getpid()}.{self.port}"
        # the app checks Host against where it listens: --host 0.0.0.0 must not keep the config's loopback
        config = replace(config, web=replace(config.web, host=self.host, port=self.port))
        self.app = create_app(config, token=self.token, port=self.port, apply_corrections=apply_corrections)
        # loop "asyncio", never uvloop where it is installed: uvloop takes Python's signal wakeup pipe
        # for its own, and `tagwatch web`'s SIGHUP comes through it (tagwatch.signals)
        self.server = uvicorn.Server(uvicorn.Config(
            self.app, log_config=None, access_log=False, lifespan="off", server_header=False,
            timeout_graceful_shutdown=2, loop="asyncio"))
        self._thread: threading.Thread | None = None
        warning = exposure(self.host, page_address(self.host, self.port))
        if warning:
            log.warning("%s", warning)
        log.info("review page on %s (its token is in %s; `tagwatch web --url` prints the whole address)%s",
                 self.address, token_path(config.database), self._elsewhere())

    def _elsewhere(self) -> str:
        """How another machine opens a page listening on every address, for the log."""
        if open_host(self.host) == self.host:
            return ""
        return (f"; it listens on {page_address(self.host, self.port)}: from another machine, open it with "
                "this machine's name or address")

    def _announce(self) -> None:
        """Record where this page listens, for `tagwatch web --url`, until :meth:`close`."""
        page = Listening(os.getpid(), self.host, self.port, self.address, time.time())
        write_atomic(self.record, json.dumps(asdict(page)) + "\n", durable=False)

    @property
    def url(self) -> str:
        """The address with the token, as a person opens it (never logged)."""
        return f"{self.address}?token={self.token}"

    def serve(self) -> None:
        """In the foreground until SIGINT or SIGTERM, then exit 0 like ``tagwatch run``: uvicorn
        finishes the requests in hand, puts the handlers it found back and raises the signal again,
        which these handlers absorb."""
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, lambda *_: None)
        try:
            self._announce()
            self.server.run(sockets=[self.sock])
        finally:
            self.close()

    def start(self) -> None:
        """In a thread of its own (the daemon)."""
        self._announce()
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                        name="tagwatch-web", daemon=True)
        self._thread.start()

    def use_tagging(self, tagging: TaggingConfig) -> None:
        """The daemon reloaded its config (SIGHUP): the pages score with its new ``[tagging]``."""
        self.app.state.library.use_tagging(tagging)

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.close()

    def close(self) -> None:
        self.record.unlink(missing_ok=True)
        self.app.state.close()
        self.sock.close()
