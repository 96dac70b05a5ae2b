"""The ``tagwatch`` command: one small module per command, each a logic function a test can call
in-process, a thin ``*_func`` that parses, calls and prints, and its ``add_parser``.

Exit status: 0 success, 1 some files could not be tagged (``scan``), 2 a usage or config problem,
reported as one line on stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .. import __version__, logs
from ..calibrate import CalibrationError
from ..config import LOG_FORMATS, ConfigError, default_config_path
from ..metadata import MetadataError
from ..model import ModelError
from ..overrides import OverridesError
from ..store import StoreError
from ..vocabulary import VocabularyError
from . import calibrate, db, explain, export, init, run, scan, service, status, tags, untag
from .common import UsageError

COMMANDS = (run, scan, untag, status, explain, db, tags, init, service, export, calibrate)  # help order
ERRORS = (UsageError, ConfigError, VocabularyError, OverridesError, ModelError, StoreError, MetadataError,
          CalibrationError)  # one line on stderr, exit status 2


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS,
                        help=f"config file (default {default_config_path()})")
    common.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                        help="debug logging")
    common.add_argument("--log-format", choices=LOG_FORMATS, default=argparse.SUPPRESS,
                        help="text (default) or json: one JSON object per line (time, level, event, "
                             "path, tags or reason) for journald, Loki or jq; overrides log_format")
    parser = argparse.ArgumentParser(
        prog="tagwatch", parents=[common],
        description="Write CLIP keywords into your photos, and keep them current.")
    parser.add_argument("--version", action="version", version=f"tagwatch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.config = getattr(args, "config", None)
    args.verbose = getattr(args, "verbose", 0)
    args.log_format = getattr(args, "log_format", None)
    try:
        return args.func(args)
    except ERRORS as exc:
        print(logs.error_line(args.log_format or "text", str(exc)), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `tagwatch export | head`: the reader has all it wanted; no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush is quiet too
        return 141
