"""Service definitions for the init systems that start tagwatch: a systemd user unit and a launchd agent.

One renderer makes both the files shipped in ``systemd/`` (generic, ``%h`` paths) and the ones
``tagwatch service install`` writes for a user (absolute paths, that user's photo folders), so the two
never drift apart; a test compares them.
"""

from __future__ import annotations

import os
import plistlib
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .config import Config, default_config_path

MARKER = "written by tagwatch service install"
LAUNCHD_LABEL = "org.tagwatch.agent"

_HEADER = """\
# tagwatch as a systemd *user* service: runs the daemon at login, tells systemd when it is watching
# (Type=notify), pings the watchdog while its worker lives, restarts it if it fails.
"""

_SHIPPED_USAGE = """\
#
#   tagwatch service install      # writes this unit with your paths to ~/.config/systemd/user/
#   systemctl --user daemon-reload && systemctl --user enable --now tagwatch
#   journalctl --user -u tagwatch -f          # the log
#   systemctl --user reload tagwatch          # re-read config.toml and the tag list (SIGHUP)
#
# By hand instead: copy this file to ~/.config/systemd/user/, fix ExecStart, and list your photo
# folders in ReadWritePaths= (the rest of the file system is read-only to the daemon).
"""

_SYSTEM_HEADER = """\
# tagwatch as a system service running as a dedicated user, one instance per user name:
#
#   sudo useradd --system --create-home photos          # or an existing account
#   sudo install -D -o photos -m 600 config.toml /etc/tagwatch/photos.toml
#   sudo install -o photos -m 600 tags.toml /etc/tagwatch/tags.toml   # the list beside it (below)
#   sudo cp systemd/tagwatch@.service /etc/systemd/system/
#   sudo systemctl edit tagwatch@photos                 # add: [Service] ReadWritePaths=/srv/photos
#   sudo systemctl enable --now tagwatch@photos
#
# A config from `tagwatch init` says tags = "tags.toml", read beside the config: copy that list
# too (one per instance? name it photos-tags.toml and set tags to that), or set tags = "photo-tags"
# for the shipped list; else the start fails, every 10 s, with "tag list does not exist".
# The database is /var/lib/tagwatch/photos/tagwatch/tagwatch.db and the model cache
# /var/cache/tagwatch/photos/tagwatch/models (XDG_DATA_HOME and XDG_CACHE_HOME below; systemd
# creates the folders for that user) unless the config names its own; the photo folders must be
# listed in ReadWritePaths=.  ExecStart assumes `pip install tagwatch` into /opt/tagwatch: edit it
# for your install.
"""

_SERVICE = """\
[Unit]
Description=tagwatch: CLIP keywords for the photos in watched folders
{unit_extra}
[Service]
Type=notify
NotifyAccess=main
ExecStart={exec_start}
ExecReload=/bin/kill -HUP $MAINPID
# The first start may download the model and encode the tag list: give it time to become ready.
TimeoutStartSec=15min
# A worker thread that stops answering for two minutes gets the daemon restarted.
WatchdogSec=120
# SIGTERM finishes the batch in flight, then exits 0.
KillSignal=SIGTERM
TimeoutStopSec=60
Restart=on-failure
RestartSec=10
Nice=10
IOSchedulingClass=idle
{service_extra}\
# Hardening: the daemon writes only its photo folders, its data folder, its model cache and the
# folder of its tag list and overrides (the review page saves corrections and thresholds there;
# a photo's renamed correction follows it): each listed in ReadWritePaths= (for an instance of
# tagwatch@, add the last one there too if its review page is to save them).
# A leading "-" lets a folder be missing (an unplugged disk) without failing the start.
NoNewPrivileges=yes
PrivateTmp=yes
ProtectSystem=strict
{read_write}ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictRealtime=yes
LockPersonality=yes
SystemCallArchitectures=native

[Install]
WantedBy={wanted_by}
"""

_SYSTEM_SERVICE_EXTRA = """\
User=%i
StateDirectory=tagwatch/%i
CacheDirectory=tagwatch/%i
Environment=XDG_DATA_HOME=%S/tagwatch/%i XDG_CACHE_HOME=%C/tagwatch/%i
"""


@dataclass(frozen=True)
class ServiceSpec:
    """What differs between one user's service and another's."""

    command: tuple[str, ...]  # the daemon's argv, e.g. ("/usr/bin/tagwatch", "run", "--config", "…")
    writable: tuple[str, ...]  # folders the daemon may write: photos, data, model cache, tag list's


def shipped_spec() -> ServiceSpec:
    """The generic unit in ``systemd/``: pip's user install location and XDG default folders."""
    return ServiceSpec(command=("%h/.local/bin/tagwatch", "run"),
                       writable=("%h/Pictures", "%h/.local/share/tagwatch", "%h/.cache/tagwatch",
                                 "%h/.config/tagwatch"))


def _unit_word(word: str) -> str:
    """One ExecStart word: systemd expands ``%`` and ``$``, and splits on spaces unless quoted."""
    escaped = word.replace("%", "%%").replace("$", "$$") if not word.startswith("%h") else word
    return escaped if escaped and not any(c in escaped for c in " \t\"'\\") else (
        '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"')


def _unit_path(path: str) -> str:
    """A ReadWritePaths entry; systemd has no quoting there, so spaces are escaped as ``\\x20``."""
    escaped = path if path.startswith("%h") else path.replace("%", "%%")
    return "-" + escaped.replace("\\", "\\x5c").replace(" ", "\\x20")


def unit_file(platform: str) -> Path:
    """Where ``tagwatch service install`` writes this user's unit (``systemd``) or agent (``launchd``)."""
    if platform == "launchd":
        return Path.home() / "Library" / "LaunchAgents" / f"{LAUNCHD_LABEL}.plist"
    return default_config_path().parent.parent / "systemd" / "user" / "tagwatch.service"


def enabled(unit: Path) -> bool:
    """Is the systemd user unit ``unit`` enabled: linked into default.target (its ``WantedBy=``) by
    ``systemctl --user enable``, so that it starts at every login?  The link, not the unit file, says
    so: ``service install`` tells to enable a unit that is not, and ``service uninstall`` refuses one
    that is."""
    return os.path.lexists(unit.parent / "default.target.wants" / unit.name)


def writable_folders(config: Config) -> tuple[str, ...]:
    """The folders a user's unit for ``config`` lets the daemon write: the watched folders, the
    database's, the model cache, and the tag list's and the overrides' (the review page saves
    corrections and thresholds there; the daemon moves a correction along when its photo is renamed)."""
    edited = [p.parent for p in (config.tags, config.overrides) if p is not None]
    writable = (*config.watch, config.database.parent, config.model.cache_dir, *edited)
    return tuple(str(p) for p in dict.fromkeys(writable))


def runs_config(unit_text: bytes) -> str | None:
    """The config file a unit (systemd's ExecStart, or launchd's arguments) runs the daemon with."""
    found = re.search(rb"--config(?:</string>\s*<string>|\s+)([^<\s]+)", unit_text)
    return found.group(1).decode(errors="replace") if found else None


def _read_write_words(unit_text: bytes) -> set[str]:
    """A systemd unit's ReadWritePaths= entries as written (escaped by :func:`_unit_path`), without
    the leading "-" that only lets a folder be missing."""
    found = re.search(rb"^ReadWritePaths=(.*)$", unit_text, re.M)
    return {w.removeprefix("-") for w in found.group(1).decode(errors="replace").split()} if found else set()


def stale_unit(config: Config) -> str | None:
    """Why the installed systemd user unit for this config is older than the one `service install`
    writes now, or None.  The unit's sandbox lets the daemon write only the folders listed when it
    was written: a unit from an older tagwatch lacks the tag list's folder, where the review page
    saves corrections (they failed), and one written before a folder was added to ``watch`` keeps
    that folder read-only.  Said at the daemon's start, since nothing else would say it.

    Each folder is compared as :func:`_unit_path` writes it, so the escaping has one rule: a
    hand-made reverse of it would make every start warn once the two drifted apart."""
    if sys.platform == "darwin" or config.source is None or not config.watch:
        return None
    target = unit_file("systemd")
    try:
        installed = target.read_bytes()
    except OSError:  # none installed (or unreadable): nothing to compare
        return None
    if MARKER.encode() not in installed or runs_config(installed) != str(config.source.resolve()):
        return None  # a unit of the person's own, or one that runs another config
    has = _read_write_words(installed)
    missing = [p for p in writable_folders(config) if _unit_path(p).removeprefix("-") not in has]
    if not missing:
        return None
    return (f"{target} is older than the unit `tagwatch service install` writes now: its sandbox does "
            f"not let the daemon write {', '.join(missing)} (the watched folders, the database's, the "
            f"model cache and the tag list's, where the review page saves corrections); run `tagwatch "
            f"service install`, then `systemctl --user daemon-reload && systemctl --user restart tagwatch`")


PRIVATE_TMP = ("/tmp", "/var/tmp")  # what the unit's PrivateTmp=yes gives the daemon a copy of its own


def private_tmp(folders: Sequence[Path], mountinfo: Path = Path("/proc/self/mountinfo")) -> str | None:
    """Why watched folders under /tmp or /var/tmp are not the ones the person sees, or None: the
    unit's ``PrivateTmp=yes`` gives the daemon a /tmp and /var/tmp of its own (systemd mounts a
    ``…/systemd-private-…`` folder there, as /proc/self/mountinfo shows), empty at each start, so a
    folder there is missing (or another one) and its photos are never tagged.  Said at the daemon's
    start: the watcher's own line blamed an unplugged drive."""
    try:
        lines = mountinfo.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:  # not Linux, or no /proc: nothing to tell
        return None
    private = set()
    for line in lines:
        fields = line.split()  # id, parent, dev, root, mount point, …: spaces written as \040
        if len(fields) > 4 and fields[4] in PRIVATE_TMP and "/systemd-private-" in fields[3]:
            private.add(fields[4])
    hidden = [str(folder) for folder in folders
              if any(str(folder) == tmp or str(folder).startswith(tmp + "/") for tmp in private)]
    if not hidden:
        return None
    return (f"{', '.join(hidden)}: watched under {' and '.join(sorted(private, key=len))}, which this "
            "service sees as its own, empty at each start (its unit's PrivateTmp=yes), not the folder "
            "you see: the photos there are not tagged; move the folder out of /tmp and /var/tmp (the "
            "system empties them too), or set PrivateTmp=no (`systemctl --user edit tagwatch`; for an "
            "instance `sudo systemctl edit tagwatch@NAME`) and restart it")


def systemd_user_unit(spec: ServiceSpec, shipped: bool = False) -> str:
    """The text of ``tagwatch.service`` for ``spec``."""
    mark = f"# {MARKER}; `tagwatch service uninstall` removes it.\n"
    header = _HEADER + (_SHIPPED_USAGE if shipped else mark)
    return header + _SERVICE.format(
        unit_extra="", service_extra="", wanted_by="default.target",
        exec_start=" ".join(_unit_word(w) for w in spec.command),
        read_write="ReadWritePaths=" + " ".join(_unit_path(p) for p in spec.writable) + "\n")


def systemd_system_template() -> str:
    """The text of ``tagwatch@.service``: instance ``%i`` is the user the daemon runs as."""
    return _SYSTEM_HEADER + _SERVICE.format(
        unit_extra="# Photo folders on a NAS are mounted over the network.\n"
                   "Wants=network-online.target\nAfter=network-online.target remote-fs.target\n",
        service_extra=_SYSTEM_SERVICE_EXTRA, wanted_by="multi-user.target",
        exec_start="/opt/tagwatch/bin/tagwatch run --config /etc/tagwatch/%i.toml",
        read_write="")


def launchd_agent(command: Sequence[str], log_dir: Path) -> bytes:
    """The launchd agent plist: started at login, restarted when it exits with an error.

    launchd has no readiness protocol and no path sandbox comparable to systemd's, so the plist only
    keeps the daemon alive, low-priority, and logging to ``~/Library/Logs``.
    """
    return plistlib.dumps({
        "Label": LAUNCHD_LABEL,
        "ProgramArguments": list(command),
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},  # like Restart=on-failure: SIGTERM's exit 0 stays down
        "ThrottleInterval": 10,
        "ProcessType": "Background",
        "LowPriorityIO": True,
        "Nice": 10,
        "ExitTimeOut": 60,
        "StandardOutPath": str(log_dir / "tagwatch.log"),
        "StandardErrorPath": str(log_dir / "tagwatch.log"),
        "EnvironmentVariables": {"PATH": "/opt/homebrew/bin:/usr/local/bin:/usr/bin:/bin"},  # exiftool
    })

