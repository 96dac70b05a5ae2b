"""``tagwatch run [FOLDER…]``: the daemon in the foreground (what the service starts)."""

from __future__ import annotations

import argparse
import faulthandler
import signal
from pathlib import Path

from ..config import default_config_path
from ..encoder import LazyModel
from ..status import AlreadyRunning, LockUnavailable
from .common import UsageError, load, require_exiftool


def show_stacks_on_signals() -> None:
    """Every thread's stack on stderr (the journal) where the daemon is stuck: SIGUSR1 asks for it
    and the daemon goes on; systemd's watchdog (``WatchdogSec``) ends a stuck daemon with SIGABRT,
    which leaves it there too, as do crashes in a C library.  Without it, a daemon that stopped
    answering left nothing to say where."""
    faulthandler.enable()
    faulthandler.register(signal.SIGUSR1, all_threads=True)


def run_func(args: argparse.Namespace) -> int:
    from ..service import Daemon  # watchdog and apscheduler are only needed here

    config = load(args)
    if args.folders:
        config = config.with_watch([Path(f) for f in args.folders])
    where = config.source or default_config_path()
    if not config.watch:
        raise UsageError(f"nothing to watch: pass folders (tagwatch run ~/Pictures) or set watch in {where}")
    if len(config.absent()) == len(config.watch):  # some missing are watched once they appear
        folders = ", ".join(map(str, config.watch))
        raise UsageError(f"{where}: none of the folders in watch exists ({folders}); a typo, or a drive not "
                         "plugged in?")
    require_exiftool()
    model = LazyModel(config.model)
    model.validate()
    try:
        daemon = Daemon(config, cli_watch=bool(args.folders), model=model)
    except AlreadyRunning as exc:
        raise UsageError(str(exc)) from None
    except LockUnavailable as exc:  # a traceback and exit 1 were a restart loop under systemd
        raise UsageError(f"{where}: database: {exc.strerror}") from None
    show_stacks_on_signals()
    return daemon.run_forever()


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    run = sub.add_parser("run", parents=[common], help="watch folders and tag new or changed photos")
    run.add_argument("folders", nargs="*", metavar="FOLDER", help="folders to watch instead of the config's")
    run.set_defaults(func=run_func)
