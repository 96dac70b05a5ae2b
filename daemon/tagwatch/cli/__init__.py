"""The ``tagwatch`` command: one small module per command, each a logic function a test can call
in-process, a thin ``*_func`` that parses, calls and prints, and its ``add_parser``.

Exit status: 0 success, 1 some files could not be handled (``scan``, ``untag``, ``export``: a path
named that does not exist included), 2 a usage or config problem, a damaged database or one on a full
disk, reported as one line on stderr.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import textwrap
from collections.abc import Sequence

from .. import __version__, logs
from ..calibrate import CalibrationError
from ..config import CONFIG_ENV, LOG_FORMATS, ConfigError, default_config_path, named_config
from ..metadata import MetadataError
from ..model import ModelError
from ..overrides import OverridesError
from ..store import StoreError
from ..vocabulary import VocabularyError
from . import calibrate, completion, db, explain, export, init, run, scan, service, status, tags, untag, web
from .common import UsageError

COMMANDS = (init, run, scan, status, untag, explain, export, calibrate, tags, web, db, service,
            completion)  # in the order the help lists them
ERRORS = (UsageError, ConfigError, VocabularyError, OverridesError, ModelError, StoreError, MetadataError,
          CalibrationError)  # one line on stderr, exit status 2


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS,
                        help=f"config file (default ${CONFIG_ENV}, else {default_config_path()})")
    common.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                        help="debug logging")
    common.add_argument("--log-format", choices=LOG_FORMATS, default=argparse.SUPPRESS,
                        help="text (default) or json: one JSON object per line (time, level, event, "
                             "path, tags or reason) for journald, Loki or jq; overrides log_format")
    parser = argparse.ArgumentParser(
        prog="tagwatch", parents=[common],
        description="Write CLIP keywords into your photos, and keep them current.")
    parser.add_argument("--version", action="version", version=f"tagwatch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub, common)
    return parser


def short_help(parser: argparse.ArgumentParser) -> str:
    """What a bare ``tagwatch`` prints: the commands in one line each, and where to begin."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    width = max(len(a.dest) for a in sub._choices_actions)
    lines = [parser.format_usage().rstrip(), "", parser.description or "", "", "commands:"]
    for action in sub._choices_actions:
        text = (action.help or "").split("; ")[0]
        lines += textwrap.wrap(text, 100, initial_indent=f"  {action.dest:<{width}}  ",
                               subsequent_indent=" " * (width + 4))
    lines += ["", "start with: tagwatch init FOLDER", "then:       tagwatch scan --dry-run FOLDER",
              "more:       tagwatch COMMAND --help"]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    if "_ARGCOMPLETE" in os.environ:  # a shell's Tab press: argcomplete answers and exits
        import argcomplete  # here: 0.014 s at every command's start otherwise

        argcomplete.autocomplete(parser)
    args = parser.parse_args(argv)
    if args.command is None:
        sys.stdout.write(short_help(parser))
        return 0
    args.config = named_config(getattr(args, "config", None))
    args.verbose = getattr(args, "verbose", 0)
    args.log_format = getattr(args, "log_format", None)
    try:
        return args.func(args)
    except ERRORS as exc:
        message = (db.database_trouble(args, exc) if isinstance(exc, StoreError) else None) or str(exc)
        print(logs.error_line(args.log_format or "text", message), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `tagwatch export | head`: the reader has all it wanted; no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush is quiet too
        return 141
    except (sqlite3.Error, OSError) as exc:  # a damaged database, a full disk: one line, not a traceback
        message = db.database_trouble(args, exc)
        if message is None:
            raise
        print(logs.error_line(args.log_format or "text", message), file=sys.stderr)
        return 2
