"""``tagwatch status``: counts from the database and what the running daemon says about itself."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from ..config import Config, ConfigError, ModelConfig, default_config_path, lenient_database
from ..logs import one_line, shown
from ..model import model_identity
from ..retry import DATABASE
from ..status import daemon_state, watching
from ..store import Store
from .common import load, setup_logging
from .progress import duration

log = logging.getLogger("tagwatch")

# deleted: files recorded gone (their vectors stay cached); the text showed it only in --json
COUNTS = ("files", "tagged", "pending", "failed", "untagged", "deleted", "vectors", "encoded", "captioned",
          "keywords_written", "keywords_declined")


SHOWN_FAILURES = 5  # the text lists the latest few; --failed and --json list them all


def status(config: Config, every_failure: bool = False,
           identity: str | None = None) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The report ``--json`` prints, and the failures (path, reason), latest first: all of them, or
    only the last :data:`SHOWN_FAILURES`.  ``identity``: the model's, where the config's cannot be
    worked out (see :func:`lenient`)."""
    identity = identity or model_identity(config.model)
    restored: int | None = None
    unchecked: int | None = None
    if config.database.exists():
        store = Store(config.database)
        try:
            stats = store.stats(identity)
            failures = store.failures(stats["failed"] if every_failure else SHOWN_FAILURES)
            restored, unchecked = store.restored_ns(), store.restore_unchecked()
        finally:
            store.close()
    else:
        stats = dict.fromkeys(COUNTS, 0)
        failures = []
    # restored: when it was found restored (see Store._notice_restore), for the database's life;
    # restore_checked: false until the daemon has checked the watched folders again since (then
    # there is nothing left to say of it, see Store.restore_checked); null for a database never
    # found restored, of which there is nothing to claim (it said false, as if a check were owed)
    report = {**stats, "database": str(config.database), "model": identity,
              "daemon": daemon_state(config.database),
              "restored": None if restored is None else restored / 1e9,
              "restore_checked": None if restored is None else unchecked is None}
    return report, failures


STALE_S = 2.0  # a snapshot older than this says its age: the counts may lag the log by that much


def as_of(daemon: dict[str, Any]) -> str:
    """``; as of 8 s ago`` where the daemon's snapshot (rewritten every few seconds) is older than
    :data:`STALE_S`: the text showed 77 tagged while the log, a moment later, had 112."""
    age = daemon.get("age_s")
    if age is None or age <= STALE_S:
        return ""
    return f"; as of {age:.0f} s ago" if age < 120 else f"; as of {duration(age)} ago"


def backlog(daemon: dict[str, Any]) -> str:
    """How long the queue will take at the rate measured over the last minutes; unknown while its
    photos wait for the database (a backup's lock): the rate before it said "about 0m04s" for a
    queue cleared 1m50s later, once the lock went."""
    if not daemon["queue"]:
        return ""
    waits = daemon.get("waiting_for_database") or {}
    if waits.get("photos"):
        why = _why(waits["photos"])
        return f"; time to clear the queue unknown while photos wait for the database ({why})"
    if daemon.get("eta_s") is None:
        return "; time to clear the queue unknown until photos are tagged"
    return f"; the queue is cleared in about {duration(daemon['eta_s'])}"


def _why(reason: str) -> str:
    """A database trouble's reason without the "database: " it begins with (retry.DATABASE)."""
    return reason.removeprefix(DATABASE)


def rescore_waits(daemon: dict[str, Any]) -> list[str]:
    """The line for a re-score that waits for the database (a tag-list edit's, or the overrides': a
    review-page correction is one): nothing said it, and the photos keep their keywords till then."""
    waits = daemon.get("waiting_for_database") or {}
    if "rescore" not in waits:
        return []
    of = ("the overrides' (the review page's corrections)" if waits.get("rescore_of") == "overrides"
          else "the tag list's")
    return [f"re-score  {of} re-score waits for the database ({_why(waits['rescore'])}); the photos "
            "keep their keywords until it resumes, by itself, once the database takes writes again"]


def restored(when: float | None, checked: bool = False) -> str:
    """`` (found older than the one last used here on …)`` where tagwatch found the database so (a
    backup put back): the log said so once, and what it holds is as of that copy.  Said until the
    daemon has checked the watched folders again since (``checked``): then every photo the copy did
    not know is settled, and the note told nothing more (it was said for the database's life)."""
    if when is None or checked:
        return ""
    day = time.strftime("%Y-%m-%d %H:%M", time.localtime(when))
    return (f" (found older than the one last used here on {day}: restored from a backup?; said until "
            "the daemon has checked the watched folders again)")


def render(report: dict[str, Any], failures: list[tuple[str, str]]) -> str:
    """The human-readable status."""
    lines = [f"database  {report['database']}"
             f"{restored(report.get('restored'), bool(report.get('restore_checked')))}",
             f"model     {report['model']}"]
    daemon = report["daemon"]
    if daemon is None:
        lines.append("daemon    not running")
    else:
        unwatched = daemon.get("unwatched") or {}  # a folder missing, or replaced by a link
        folders = watching(daemon.get("folders"), len(unwatched))
        lines.append(f"daemon    running, pid {daemon['pid']}, up {duration(daemon.get('uptime_s', 0))}, "
                     f"{folders}, model "
                     f"{'loaded' if daemon.get('model_loaded') else 'unloaded (idle)'}" + as_of(daemon))
        if "queue" in daemon:
            # the rate is of photos done, checked ones too (the backlog's time): they are counted
            # beside it, or "0 tagged … 4882.61 photos/min" read as a contradiction
            checked = daemon.get("unchanged_since_start", 0)
            lines.append(f"queue     {daemon['queue']} waiting; {daemon['tagged_since_start']} tagged and "
                         f"{daemon['failed_since_start']} failed since start"
                         + (f", {checked} checked with nothing to write" if checked else "")
                         + f"; {daemon['tagged_per_min']:g} photos/min over the last 5 min"
                         + backlog(daemon))
        lines += rescore_waits(daemon)
        for folder, why in sorted(unwatched.items()):
            lines.append(f"NOT WATCHED: {shown(folder)}: {one_line(why)}")
        for what, reason in sorted(daemon.get("rejected", {}).items()):
            lines.append(f"NOT IN USE: the {what} on disk, refused: {one_line(reason)}; the previous one is "
                         "in use until it is fixed")
        error = daemon.get("last_error")
        if error:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(error["time"]))
            done = error.get("resolved")
            since = f" at {time.strftime('%H:%M:%S', time.localtime(done))}" if done else ""
            lines.append(f"last error {when} {shown(error['path'])}: {one_line(error['reason'])}{since}")
    lines += [f"{name:<17} {report[name]:>9}" for name in COUNTS]
    lines += [f"failed: {failure_line(path, reason)}" for path, reason in failures]
    more = report["failed"] - len(failures)
    if more > 0:
        lines.append(f"failed: and {more} more (tagwatch status --failed, or --json, lists all)")
    return "\n".join(lines) + "\n"


def failure_line(path: str, reason: str) -> str:
    """``path: reason`` on one line, the path written as the log writes it (see logs.shown)."""
    return f"{shown(path)}: {one_line(reason)}"


UNKNOWN_MODEL = "unknown (the config on disk does not load)"


def lenient(args: argparse.Namespace) -> tuple[Config, str | None, str | None]:
    """The config, or, where the file on disk does not load (a bad edit while the daemon runs on
    the one it loaded before), one holding its database and model read leniently (see
    :func:`~tagwatch.config.lenient_database`): status needs only those to show the daemon and its
    "NOT IN USE" line.  Returns the config, the model identity to use instead of the config's
    (None: the config's), and the error the file gave (None: it loads)."""
    try:
        return load(args), None, None
    except ConfigError as exc:
        path = Path(args.config).expanduser() if args.config else default_config_path()
        database, model = lenient_database(path, exc)  # raises exc where the database is unsure
        args.log_format = args.log_format or "text"
        setup_logging("info", args.verbose, args.log_format)
        config = Config(database=database, model=model or ModelConfig(), source=path.resolve())
        return config, None if model is not None else UNKNOWN_MODEL, str(exc)


def status_func(args: argparse.Namespace) -> int:
    config, identity, problem = lenient(args)
    report, failures = status(config, every_failure=args.json or args.failed, identity=identity)
    if problem is not None:  # a warning, not the end: the daemon and the database are still there
        report["config_error"] = problem
        running = "; the running daemon goes on with the config it last loaded" if report["daemon"] else ""
        log.warning("%s (status read only the database from it%s)", problem, running)
    if args.json and args.failed:  # the failures alone, as --failed alone prints them
        print(json.dumps([{"path": path, "reason": reason} for path, reason in failures], indent=2))
    elif args.json:
        report["failures"] = [{"path": path, "reason": reason} for path, reason in failures]
        print(json.dumps(report, indent=2))
    elif args.failed:
        sys.stdout.writelines(failure_line(path, reason) + "\n" for path, reason in failures)
    else:
        sys.stdout.write(render(report, failures))
    return 0


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    status = sub.add_parser("status", parents=[common], help="counts from the database")
    status.add_argument("--json", action="store_true",
                        help="machine-readable output, every failed photo with its reason included")
    status.add_argument("--failed", action="store_true",
                        help="only the photos that could not be tagged, all of them, one 'path: reason' "
                             "line each (latest first); with --json, a JSON list of {path, reason}")
    status.set_defaults(func=status_func)
