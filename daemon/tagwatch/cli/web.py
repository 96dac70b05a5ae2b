"""``tagwatch web [FOLDER…]``: the review page, served until Ctrl-C (or its address, ``--url``)."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import Config, ConfigError, default_config_path, load_config
from ..signals import SignalThread
from .common import UsageError, load, log, require_exiftool

if TYPE_CHECKING:
    from ..web.server import WebServer


def page_url(config: Config, host: str | None, port: int | None) -> str:
    """The address, with its token, of the page serving now for this data folder (the newest; --host
    and --port pick among several), for a person who lost it.  With none serving, where `tagwatch
    web` would serve it, and stderr says so: the config's port is only a guess at a running page's."""
    from ..web.auth import load_token  # the page's modules are imported only where it is used
    from ..web.server import open_host, page_address, running_pages

    token = load_token(config.database)
    for page in running_pages(config.database):
        if (host is None or page.host == host) and port in (None, 0, page.port):
            return f"{page.address}?token={token}"
    folder = config.database.parent
    port = config.web.port if port is None else port
    if port == 0:
        raise UsageError(f"no review page is running for {folder}, and port 0 takes a new port at each "
                         "start: start it with `tagwatch web`, which prints its address")
    print(f"tagwatch: no review page is running for {folder}; this is where `tagwatch web` serves it",
          file=sys.stderr)
    return f"{page_address(open_host(host or config.web.host), port)}?token={token}"


def follow_sighup(server: WebServer, config: Config) -> SignalThread:
    """SIGHUP re-reads the config's ``[tagging]``, as the daemon does (the README's `pkill -HUP` after
    a config edit): a `tagwatch web` beside the daemon went on scoring with the threshold it started
    with, and a HUP that reached it ended it without a word.  The tag list and overrides it saves
    into stay those it started with, as for the page a daemon serves.  The reload runs in a thread of
    its own (:class:`SignalThread`): the handler interrupts the page's event loop, which may hold the
    library's locks, and a handler that started a thread could meet the main thread holding
    threading's own."""
    source = config.source

    def reload() -> None:
        if source is None:
            log.info("review page: no config to re-read (built-in defaults)")
            return
        try:
            new = load_config(source)
        except ConfigError as exc:
            log.error("review page: config not reloaded, keeping the previous one: %s", exc)
            return
        server.use_tagging(new.tagging)
        held = [key for key in ("tags", "overrides") if getattr(new, key) != getattr(config, key)]
        later = f"; a change of {', '.join(held)} takes effect after a restart" if held else ""
        log.info("review page: config %s reloaded: [tagging] applied%s", source, later)

    signals = SignalThread({signal.SIGHUP: reload}, name="tagwatch-web-reload")
    signals.start()
    return signals


def web_func(args: argparse.Namespace) -> int:
    from ..web.server import WebError, WebServer  # starlette, jinja2 and uvicorn are only needed here

    config = load(args)
    if args.folders:
        config = config.with_watch([Path(f) for f in args.folders])
    if args.url:
        print(page_url(config, args.host, args.port))
        return 0
    if not config.watch:
        where = config.source or default_config_path()
        raise UsageError(f"no photos to show: pass folders (tagwatch web ~/Pictures) or set watch in {where}")
    require_exiftool()
    try:
        server = WebServer(config, host=args.host, port=args.port)
    except WebError as exc:
        raise UsageError(str(exc)) from None
    print(f"review page: {server.url}", flush=True)  # stdout, never the log: it holds the token
    signals = follow_sighup(server, config)
    try:
        server.serve()
    finally:
        signals.stop()
    return 0


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    web = sub.add_parser("web", parents=[common],
                         help="the review page: see and correct what tagwatch wrote, in a browser")
    web.add_argument("folders", nargs="*", metavar="FOLDER", help="folders to show instead of the config's")
    web.add_argument("--host", help="address to listen on (default [web] host, 127.0.0.1); anything but "
                                    "loopback exposes the page to the network")
    web.add_argument("--port", type=int, help="port (default [web] port, 8765; 0: any free port)")
    web.add_argument("--url", action="store_true",
                     help="print the address, with its token, of the page running now (the daemon's or "
                          "another `tagwatch web`) and exit; the page keeps its token")
    web.set_defaults(func=web_func)
