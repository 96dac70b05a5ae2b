"""The running daemon's status: counters since start, the queue, the last error, and the lock
that tells a live daemon from a crashed one.

(Named for the command that reads it, ``tagwatch status``; it was ``activity.py``.)

Other processes ask for it two ways: ``tagwatch status`` reads the state file the daemon rewrites
every few seconds beside its database (no socket to secure, survives nothing: a stale file is
recognised by the database lock being free), and Prometheus scrapes an optional HTTP endpoint bound
to localhost that renders the same snapshot.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .atomic import write_atomic
from .outcomes import Outcome, Status
from .store import inside, private_folder
from .wording import counted

log = logging.getLogger(__name__)

RATE_WINDOW_S = 300.0


def state_path(database: Path) -> Path:
    return database.with_name(database.name + ".state.json")


def lock_path(database: Path) -> Path:
    """Held by the daemon for its whole life (see :func:`hold_lock`)."""
    return database.with_name(database.name + ".lock")


class AlreadyRunning(RuntimeError):
    """Another daemon holds the database; the message names it."""


class LockUnavailable(OSError):
    """The lock file cannot be created or opened (a folder not writable, a file where a folder should
    be); the message names it and why, for one line instead of a traceback."""


def hold_lock(database: Path) -> int:
    """Hold ``DATABASE.lock`` until the returned descriptor is closed: two daemons on one database
    would tag every photo twice (the review page takes it too while it applies a correction with no
    daemon running).  The kernel drops the lock when the process dies, even by SIGKILL."""
    path = lock_path(database)
    try:
        private_folder(path.parent)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        raise LockUnavailable(exc.errno, f"cannot create {exc.filename or path}: {reason}") from None
    for attempt in range(10):  # `tagwatch status` may hold a shared lock for a moment
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if attempt < 9:
                time.sleep(0.05)
    else:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise AlreadyRunning(f"another tagwatch (pid {holder}) is already running on {database}; "
                             "stop it first, or give this one its own database") from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def running_daemon(database: Path) -> int | None:
    """The pid of the daemon holding ``database``, or None when none does (a crashed daemon's
    lock is gone with it, whatever files it left)."""
    try:
        fd = os.open(lock_path(database), os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip()
        return int(holder) if holder.isdigit() else -1
    finally:
        os.close(fd)
    return None


def daemon_state(database: Path) -> dict[str, Any] | None:
    """What the running daemon last wrote about itself, or None when no daemon holds the database."""
    pid = running_daemon(database)
    if pid is None:
        return None
    state = read_state(state_path(database))
    if state is None or state.get("pid") != pid:  # just starting: no state written yet
        return {"pid": pid}
    state["age_s"] = round(time.time() - state.pop("updated", time.time()), 1)
    if "queue" in state and "tagged_per_min" in state:  # the backlog at the rate measured lately
        rate = state["tagged_per_min"] / 60
        state["eta_s"] = round(state["queue"] / rate) if rate > 0 else (0 if not state["queue"] else None)
        if state["queue"] and (state.get("waiting_for_database") or {}).get("photos"):
            state["eta_s"] = None  # they wait for the lock, not for the rate: unknown till it goes
    return state


def watching(folders: int | None, unwatched: int = 0) -> str:
    """``watching 2 folders``, or ``watching 1 of 2 folders`` while one is missing or reached through
    a link: `tagwatch status` and systemd's status line said "watching 2 folders" of those.  None: a
    state file without the count (an older daemon's)."""
    if folders is None:
        return "watching ? folders"
    return f"watching {folders - unwatched} of {counted(folders, 'folder')}" if unwatched else \
        f"watching {counted(folders, 'folder')}"


WILL_RETRY = " (will retry)"  # a last error that passes by itself (a full disk): it is tried again


class Activity:
    """Counters the worker feeds after each batch; read from other threads as one snapshot."""

    def __init__(self, queue_depth: Callable[[], int], folders: int,
                 unwatched: Callable[[], dict[str, str]] = dict,
                 database_waits: Callable[[], dict[str, str]] = dict) -> None:
        self._queue_depth = queue_depth
        self.folders = folders
        self._unwatched = unwatched  # watched folders not watched now → why (Watcher.unwatched)
        # what waits for the database's trouble (a backup's lock): "photos", "rescore" → its reason,
        # "rescore_of" → "tag list" or "overrides" (Daemon._database_waits)
        self._database_waits = database_waits
        self.started = time.time()
        self._lock = threading.Lock()
        self.counts = {"tagged": 0, "unchanged": 0, "failed": 0, "keywords_added": 0, "batches": 0}
        self.last_error: dict[str, Any] | None = None
        # "config", "tag list", "overrides" → why its edit on disk was refused (the last good one in use)
        self.rejected: dict[str, str] = {}
        self._recent: deque[float] = deque()  # finish times of tagged files, for the rate
        # photos failed since the start, by path, with the reason: one failing again for the same
        # reason (an event, a re-score, a SIGHUP) is counted once
        self._failing: dict[str, str] = {}

    def record(self, outcomes: Iterable[Outcome]) -> None:
        now = time.time()
        with self._lock:
            self.counts["batches"] += 1
            for outcome in outcomes:
                if outcome.status == Status.TAGGED and outcome.wrote:
                    self.counts["tagged"] += 1
                    self.counts["keywords_added"] += len(outcome.added)
                    self._recent.append(now)
                elif outcome.status == Status.TAGGED:  # checked, nothing to write: as scan counts it
                    self.counts["unchanged"] += 1
                    self._recent.append(now)  # the rate is of photos done, for the backlog's time
                elif outcome.status == Status.UNCHANGED:
                    pass  # found as recorded, nothing read (most often our own write's event): not checked
                elif outcome.status == Status.FAILED:
                    reason = outcome.error or "?"
                    if self._failing.get(outcome.path) != reason:  # the same failure again is no news
                        self.counts["failed"] += 1
                        self._failing[outcome.path] = reason
                    self.last_error = {"path": outcome.path, "reason": reason, "time": now}
                elif outcome.status == Status.WAIT:  # a full disk is news even though it will be retried
                    self.last_error = {"path": outcome.path, "reason": f"{outcome.error}{WILL_RETRY}",
                                       "time": now}
                if outcome.status in (Status.TAGGED, Status.GONE, Status.UNTAGGED):
                    self._failing.pop(outcome.path, None)
                    self._resolve(outcome.path, now, outcome.status)

    def gone(self, path: str, is_dir: bool = False) -> None:
        """``path`` (a folder's, with ``is_dir``: all under it) was deleted or moved away: the failing
        photos there are forgotten (one put back and failing again is news, counted again), and
        where the last error is of a photo there, it is resolved (see :meth:`_resolve`)."""
        now = time.time()
        with self._lock:
            self._failing.pop(path, None)
            self._resolve(path, now, Status.GONE)
            if is_dir:  # store.inside's rule: /a/b holds /a/b/x.jpg, not /a/bc/x.jpg
                for failing in [p for p in self._failing if inside(p, [path])]:
                    del self._failing[failing]
                error = self.last_error
                if error is not None and inside(error["path"], [path]):
                    self._resolve(error["path"], now, Status.GONE)

    def _resolve(self, path: str, now: float, how: Status) -> None:
        """The photo the last error is of is done since: tagged (or untagged), or gone (deleted,
        moved away: ``how`` is GONE).  The error says so and when ("resolved"), instead of naming,
        a day later, a photo with nothing wrong left: "(will retry)" became "(retried: done since)"; a failure
        (a photo cut short, copied again whole) "(tagged since)", "(photo gone since)".  Still the
        last error (what went wrong is news), shown as resolved by status, --json and the page."""
        error = self.last_error
        if error is None or error["path"] != path or "resolved" in error:
            return
        reason = error["reason"]
        if how == Status.GONE:
            reason = reason.removesuffix(WILL_RETRY) + " (photo gone since)"
        elif reason.endswith(WILL_RETRY):
            reason = reason.removesuffix(WILL_RETRY) + " (retried: done since)"
        else:  # `tagwatch untag` took our keywords out of one that had failed: done with, too
            reason += " (tagged since)" if how == Status.TAGGED else " (untagged since)"
        # a new dict: a snapshot handed out earlier may be serialised outside the lock meanwhile
        self.last_error = {**error, "reason": reason, "resolved": now}

    def reject(self, what: str, reason: str | None) -> None:
        """``what`` ("config", "tag list", "overrides") on disk was refused for ``reason`` and the
        last good one stays in use; None: the one on disk is in use again.  Only the log said so,
        so a person who broke the list and looked at `tagwatch status` saw all well."""
        with self._lock:
            if reason is None:
                self.rejected.pop(what, None)
            else:
                self.rejected[what] = reason

    def snapshot(self) -> dict[str, Any]:
        now = time.time()
        with self._lock:
            while self._recent and self._recent[0] < now - RATE_WINDOW_S:
                self._recent.popleft()
            window = min(RATE_WINDOW_S, max(now - self.started, 1.0))
            return {
                "pid": os.getpid(),
                "started": self.started,
                "uptime_s": round(now - self.started, 1),
                "folders": self.folders,
                "unwatched": self._unwatched(),
                "queue": self._queue_depth(),
                "waiting_for_database": self._database_waits(),
                **{f"{name}_since_start": value for name, value in self.counts.items()},
                "tagged_per_min": round(len(self._recent) * 60.0 / window, 2),
                "last_error": self.last_error,
                "rejected": dict(self.rejected),
                "updated": now,
            }


def write_state(path: Path, snapshot: dict[str, Any]) -> None:
    """Replace the state file atomically, readable by this user only (it names photo paths)."""
    write_atomic(path, json.dumps(snapshot), mode=0o600, durable=False)


def read_state(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


_METRICS = (  # (snapshot key, metric name, type, help)
    ("tagged_since_start", "tagwatch_files_tagged_total", "counter",
     "Photos whose keywords were written since the daemon started."),
    ("unchanged_since_start", "tagwatch_files_unchanged_total", "counter",
     "Photos checked whose keywords were already right."),
    ("failed_since_start", "tagwatch_files_failed_total", "counter",
     "Photos that could not be tagged (the log names each with the reason)."),
    ("keywords_added_since_start", "tagwatch_keywords_added_total", "counter",
     "Keywords written into photos since the daemon started."),
    ("batches_since_start", "tagwatch_batches_total", "counter", "Batches the worker finished."),
    ("queue", "tagwatch_queue_depth", "gauge", "Photos waiting to be tagged."),
    ("uptime_s", "tagwatch_uptime_seconds", "gauge", "Seconds since the daemon started."),
    ("tagged_per_min", "tagwatch_tagged_per_minute", "gauge", "Photos tagged per minute, last 5 min."),
)


def render_prometheus(snapshot: dict[str, Any], files: dict[str, int]) -> str:
    """The Prometheus text exposition of a snapshot plus the database's file counts by state."""
    lines = []
    for key, name, kind, text in _METRICS:
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", f"{name} {snapshot[key]}"]
    lines += ["# HELP tagwatch_folders_unwatched Watched folders not watched now: missing, or reached "
              "through a symbolic link (`tagwatch status` says why).",
              "# TYPE tagwatch_folders_unwatched gauge",
              f"tagwatch_folders_unwatched {len(snapshot.get('unwatched') or {})}"]
    lines += ["# HELP tagwatch_files Photos known to the database, by state.", "# TYPE tagwatch_files gauge"]
    lines += [f'tagwatch_files{{state="{state}"}} {count}' for state, count in sorted(files.items())]
    return "\n".join(lines) + "\n"


class MetricsServer:
    """``GET /metrics`` on a background thread; anything else is 404."""

    def __init__(self, host: str, port: int, render: Callable[[], str]) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # 0.03 s: only with metrics on

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # the name http.server calls
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404)
                    return
                try:
                    body = render().encode()
                except Exception as exc:  # a scrape must never take the daemon down
                    log.warning("metrics: %s: %s", type(exc).__name__, exc)
                    self.send_error(500)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # scrapes are not news
                return

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.address = self._server.server_address
        self._thread = threading.Thread(target=self._server.serve_forever, name="tagwatch-metrics",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
