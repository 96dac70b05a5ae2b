"""``tagwatch service install|uninstall``: the systemd user unit or launchd agent for this user."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from .. import units
from ..atomic import write_atomic
from ..config import Config, default_config_path
from .common import UsageError, load


def service_file(platform: str) -> Path:
    return units.unit_file(platform)


def uninstall(platform: str, target: Path, *, ours: bool, force: bool) -> str:
    """Remove the unit we wrote; returns the command that finishes the job."""
    if not target.exists():
        raise UsageError(f"{target}: not installed")
    if not ours and not force:
        raise UsageError(f"{target} was not written by tagwatch; remove it yourself (or --force)")
    if platform == "systemd" and units.enabled(target):
        raise UsageError("the service is still enabled: run `systemctl --user disable --now tagwatch` "
                         "first")
    target.unlink()
    return ("systemctl --user daemon-reload" if platform == "systemd"
            else f"launchctl bootout gui/{os.getuid()}/{units.LAUNCHD_LABEL}  # if it is loaded")


def unit(platform: str, config: Config) -> tuple[bytes, str]:
    """The unit file's bytes for ``config``, and the command that enables it."""
    if config.source is None:
        raise UsageError(f"no config at {default_config_path()}: run `tagwatch init FOLDER` first")
    if not config.watch:
        raise UsageError(f"{config.source}: `watch` lists no folder; the service would have nothing to do")
    command = (sys.executable, "-m", "tagwatch", "run", "--config", str(config.source.resolve()))
    if platform == "launchd":
        text = units.launchd_agent(command, Path.home() / "Library" / "Logs")
        text = text.replace(b"<dict>", f"<!-- {units.MARKER} -->\n<dict>".encode(), 1)
        target = service_file(platform)
        return text, f"launchctl bootstrap gui/{os.getuid()} {shlex.quote(str(target))}"
    spec = units.ServiceSpec(command, units.writable_folders(config))
    return (units.systemd_user_unit(spec).encode(),
            "systemctl --user daemon-reload && systemctl --user enable --now tagwatch")


def next_step(platform: str, target: Path, enable: str, kept: str | None) -> str:
    """The command that puts the unit just written to work.  ``kept``: what a daemon already running
    keeps until it restarts, where the unit replaced one; None for a first install.

    ``enable --now`` starts the unit and makes it start at every login, but leaves a running daemon
    as it was, so an enabled unit needs a restart instead.  A unit not enabled yet gets ``enable
    --now`` whether or not it replaced one: a second install said only "restart", which starts the
    daemon once and never at the next login."""
    if kept is None:
        return enable
    if platform == "launchd":
        return (f"launchctl bootout gui/{os.getuid()} {shlex.quote(str(target))}, then {enable}   "
                f"# a daemon already running {kept} until then")
    if not units.enabled(target):
        return (f"{enable}   # it was not enabled: now it starts at every login; a daemon you started by "
                f"hand {kept} until `systemctl --user restart tagwatch`")
    return ("systemctl --user daemon-reload && systemctl --user restart tagwatch   "
            f"# a daemon already running {kept} until then")


def service_func(args: argparse.Namespace) -> int:
    platform = args.platform or ("launchd" if sys.platform == "darwin" else "systemd")
    target = service_file(platform)
    ours = target.exists() and units.MARKER.encode() in target.read_bytes()
    if args.action == "uninstall":
        after = uninstall(platform, target, ours=ours, force=args.force)
        print(f"removed {target}\nthen: {after}")
        return 0
    config = load(args)
    text, enable = unit(platform, config)
    if target.exists() and not ours and not args.force:
        raise UsageError(f"{target} exists and was not written by tagwatch (use --force to replace it)")
    if args.print:
        sys.stdout.write(text.decode())
        return 0
    existed = target.exists()
    before = units.runs_config(target.read_bytes()) if ours else None
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, text, mode=0o644)  # readable by the service manager, like any unit file
    now = units.runs_config(text)
    kept: str | None = None  # what a daemon already running keeps, where this replaced a unit
    if not existed:
        print(f"wrote {target}")
    elif before is not None and before != now:  # one unit per user: the other config's daemon is gone
        print(f"replaced {target}, which ran the config {before}: it runs {now} now")
        kept = "goes on with the old config"
    else:  # e.g. a folder added to watch: ReadWritePaths= is the new unit's, read at its start
        print(f"wrote {target}, replacing the one that was there")
        kept = "keeps the old unit's settings (a folder added to watch stays read-only to it)"
    print(f"next: {next_step(platform, target, enable, kept)}")
    if platform == "systemd":
        print("to keep it running while you are logged out (a NAS, a server): "
              "sudo loginctl enable-linger $USER")
    return 0


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    service = sub.add_parser("service", parents=[common],
                             help="write (or remove) the systemd user unit or launchd agent for this user")
    service.add_argument("action", choices=["install", "uninstall"])
    service.add_argument("--platform", choices=["systemd", "launchd"],
                         help="default: launchd on macOS, systemd elsewhere")
    service.add_argument("--print", action="store_true", help="print the file instead of writing it")
    service.add_argument("--force", action="store_true",
                         help="replace or remove a file tagwatch did not write")
    service.set_defaults(func=service_func)
