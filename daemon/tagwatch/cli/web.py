"""``tagwatch web [FOLDER…]``: the review page, served until Ctrl-C (or its address, ``--url``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import default_config_path
from .common import UsageError, load, require_exiftool


def web_func(args: argparse.Namespace) -> int:
    from ..web.auth import load_token  # starlette, jinja2 and uvicorn are only needed here
    from ..web.server import WebError, WebServer, page_address

    config = load(args)
    if args.folders:
        config = config.with_watch([Path(f) for f in args.folders])
    if args.url:  # the address of a page already running, for a person who lost it
        host, port = args.host or config.web.host, config.web.port if args.port is None else args.port
        print(f"{page_address(host, port)}?token={load_token(config.database)}")
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
    server.serve()
    return 0


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    web = sub.add_parser("web", parents=[common],
                         help="the review page: see and correct what tagwatch wrote, in a browser")
    web.add_argument("folders", nargs="*", metavar="FOLDER", help="folders to show instead of the config's")
    web.add_argument("--host", help="address to listen on (default [web] host, 127.0.0.1); anything but "
                                    "loopback exposes the page to the network")
    web.add_argument("--port", type=int, help="port (default [web] port, 8765; 0: any free port)")
    web.add_argument("--url", action="store_true",
                     help="print the page's address with its token and exit (the page keeps its token)")
    web.set_defaults(func=web_func)
