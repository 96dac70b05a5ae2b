"""The long-running process: wires the parts together, schedules rescans, handles signals.

SIGTERM/SIGINT finish the batch in flight and exit 0; SIGHUP re-reads the config and the tag list.
The tag list file and the overrides file are watched too, so an edit is picked up without a signal.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from . import units
from .captions import from_config as captions_from_config
from .config import Config, ConfigError, changed_keys, load_config
from .encoder import LazyModel
from .imaging import set_pixel_limit
from .metadata import ExifTool, KeywordWriter
from .notify import Notifier
from .outcomes import Outcome
from .overrides import Overrides, OverridesError
from .pipeline import Pipeline, load_config_overrides, load_tag_list
from .queue import BatchQueue, backlog_batch
from .retry import QUIET_S, Backoff, sqlite_locked
from .shared import sidecar_lost
from .signals import SignalThread
from .status import (
    Activity,
    MetricsServer,
    hold_lock,
    render_prometheus,
    state_path,
    watching,
    write_state,
)
from .store import Store, restore_day, restore_warning
from .vocabulary import VocabularyError
from .watcher import PathFilter, Watcher, reconcile
from .wording import counted
from .worker import Worker
from .writeback import move_sidecar

log = logging.getLogger(__name__)

STATE_INTERVAL_S = 5.0  # the state file is written at least this often (its age: status's "as of")
# How soon the state file says a change of what `tagwatch status` shows: a photo tagged, failed or put
# back to wait, a watched folder gone or back, an edit of the tag list, overrides or config refused, a
# re-score or photos waiting for the database, the model unloaded.  The daemon looks this often and
# writes only when something changed, at most this often while batches keep coming.  (Status showed
# all but a batch's outcomes up to STATE_INTERVAL_S after the log did.)
STATE_SOON_S = 0.5
# What changes in the state with time alone: not a change to write at once
_CLOCK_KEYS = frozenset({"uptime_s", "updated", "tagged_per_min"})
# A restore's check (every watched photo compared again) met a locked database: its record is tried
# again after 1, 2, 4 … s up to this, so the note in `tagwatch status` ends soon after the lock goes
CHECK_RETRY_CAP_S = 30.0
ROOT_CHECK_S = 2.0  # how soon a watched folder that vanished and came back is watched again
# What a SIGHUP applies at once (a section stands for every key in it): [tagging] re-scores what a new
# mode, threshold or top_k changes.  A change of any other key is named as waiting for a restart.
RELOADABLE = ("tags", "overrides", "tagging", "log_level", "max_megapixels")
# Single keys of other sections a SIGHUP applies at once: [write] hierarchy_prefix re-scores the photos
# written under the prefix of before, whose paths of tagwatch's move to the new one
RELOADABLE_KEYS = ("write.hierarchy_prefix",)
_PAGE_FILES = ("tags", "overrides")  # the files the review page writes into


# What an event says of a watched file (the tag list, the overrides): being written (created or
# written to: an in-place save is truncated first and may pause between writes), saved (closed after
# writing, or renamed into place: complete), touched (its attributes: complete unless being written),
# or gone (deleted, moved out of its folder: the last good one stays in use, and nothing waits for it).
WRITING, SAVED, TOUCHED, GONE = "writing", "saved", "touched", "gone"


def _edit_observer() -> BaseObserver:
    """On Linux an inotify observer that reports a close after writing (IN_CLOSE_WRITE), and a file
    moved in from another folder as a move, not as a file created (which would be waited on for a
    close that never comes); elsewhere the platform's, which reports no close."""
    try:
        from watchdog.observers.inotify import InotifyObserver
    except Exception:  # no inotify here: ImportError or watchdog's UnsupportedLibcError
        return Observer()
    if Observer is not InotifyObserver:  # watchdog chose another for this platform
        return Observer()
    return InotifyObserver(generate_full_events=True)


def _reports_closes(observer: BaseObserver) -> bool:
    """Does ``observer`` report a file closed after writing?  Only inotify's does."""
    try:
        from watchdog.observers.inotify import InotifyObserver
    except Exception:
        return False
    return isinstance(observer, InotifyObserver)


class _TagListHandler(FileSystemEventHandler):
    """Calls back with the watched file (the tag list, the overrides) an event is about and what it
    says of it: :data:`WRITING`, :data:`SAVED`, :data:`TOUCHED` or :data:`GONE`.  A file renamed
    to another name in its folder counts as saved, so its absence is said at once (as before)."""

    def __init__(self, paths: set[str], callback: Callable[[str, str], None]) -> None:
        self.paths, self.callback = paths, callback

    def dispatch(self, event: FileSystemEvent) -> None:
        kind = event.event_type
        if kind in ("opened", "closed_no_write"):
            return
        src = os.fsdecode(event.src_path)
        dest = os.fsdecode(getattr(event, "dest_path", "") or "")
        if kind == "moved":  # an editor's atomic save (into place), a rename, a move out of the folder
            if dest in self.paths:
                self.callback(dest, SAVED)
            elif src in self.paths:
                self.callback(src, SAVED if dest else GONE)
            return
        if src in self.paths:
            self.callback(src, {"closed": SAVED, "attrib": TOUCHED, "deleted": GONE}.get(kind, WRITING))


class Daemon:
    """tagwatch run: everything from the watched folders to keywords in the files."""

    def __init__(self, config: Config, cli_watch: bool = False, model: LazyModel | None = None) -> None:
        self.config = config
        self._lock_fd = hold_lock(config.database)
        self.notifier = Notifier()
        self._cli_watch = cli_watch  # folders came from the command line: the config's do not apply
        self.stopped = threading.Event()
        self._hangup = threading.Event()
        self.ready = threading.Event()
        self.store = Store(config.database)
        self.store.check()
        problem = self.store.writable()
        if problem is not None:  # SQLite opened it read-only without a word; every photo would fail
            log.error("%s: the database cannot be written (%s); check the permissions of it and its "
                      "folder, and that the disk is mounted read-write. Photos wait until it can be "
                      "written, and tagging resumes by itself", config.database, problem)
        self.exiftool = ExifTool()
        self.model = model or LazyModel(config.model)  # cmd_run's, already validated: its child is warm
        self.writer = KeywordWriter(self.exiftool, config.write)
        self.pipeline = Pipeline(self.store, self.model, self.writer, config.tagging, places=config.places)
        self.pipeline.use_captions(captions_from_config(config, self.store, self.model))
        self.pipeline.confine(config.watch)  # never a file reached through a folder link
        self.queue = BatchQueue(config.batch.size, config.batch.max_wait_ms / 1000,
                                config.batch.settle_ms / 1000,
                                backlog=backlog_batch(config.batch.size, config.model.device))
        self.filter = PathFilter(config.watch, config.exclude)
        self.watcher = Watcher(config.watch, self.filter, self.queue, config.poll, config.poll_interval)
        # waiting: the queue's photos and those a batch holds (a locked database or a silent exiftool
        # holds a batch: status said "0 waiting" for as long as it lasted), each photo once
        self.activity = Activity(lambda: self.worker.waiting(), len(config.watch), self.watcher.unwatched,
                                 lambda: self._database_waits())
        self.worker = Worker(self.queue, self.pipeline, self._reload_tags, self._observe,
                             resume=self._resume_rescore, gone=self.activity.gone,
                             quiet=config.batch.quiet_ms / 1000, lock_wait=config.database_lock_wait)
        self._metrics: MetricsServer | None = None
        self._web = None  # the review page, with [web] enabled = true
        self.scheduler = BackgroundScheduler(timezone="UTC")
        self._tag_observer: BaseObserver | None = None
        self._closes_reported = False  # the tag observer reports closes: a file written waits for its own
        self._tags_mtime: int | None = None
        self._reload_timer: threading.Timer | None = None
        self._reload_lock = threading.Lock()
        self._edited: set[str] = set()  # the tag list, the overrides: edited since the last reload
        self._writing: set[str] = set()  # of those, the ones written to and not yet closed (or quiet)
        self._asked = False  # a SIGHUP asked for the next reload: it re-reads everything, now
        self._warned: set[str] = set()  # the overrides' warnings logged (the file not there yet)
        self._tags_warned: set[str] = set()  # the tag list's (a duplicate tag) logged since they appeared
        self._state_trouble: str | None = None  # why the state file cannot be written, while it cannot
        self._state_shown: dict[str, Any] | None = None  # the state last written (or tried), but its clock
        self._state_at = 0.0  # when (time.monotonic())
        # a thread of its own, not a scheduler job: looked at twice a second, a write that a busy box
        # or a slow disk holds up delays only the next look, never a "skipped" or "missed" WARNING
        self._state_thread = threading.Thread(target=self._keep_state, name="tagwatch-state", daemon=True)
        self._restore_check: int | None = None  # a full scan's start, its photos being settled (restore)
        self._check_backoff = Backoff(cap=CHECK_RETRY_CAP_S)  # its record, while the database is locked
        # a re-score that met a locked database, resumed by the worker: its line, start, "say 0 photos"
        self._waiting_rescore: tuple[str, float, bool] | None = None

    # -- tag list ------------------------------------------------------------------------------

    def _rules(self, overrides: Overrides) -> str:
        count = len(overrides.rules)
        return f"overrides {self.config.overrides}: {count} rule{'' if count == 1 else 's'}"

    def _load_tags(self, edited: Collection[str] = ()) -> None:
        """Load the tag list and overrides into the pipeline and re-score what they change (worker
        thread).  At start-up a broken file ends the start; later the last good one stays in use.
        ``edited``: the files whose edit asked for this (none: a start, a SIGHUP); an edit of the
        overrides alone is logged as such, not as a tag list re-scored."""
        starting = self.pipeline.vocabulary is None
        overrides_only = bool(edited) and set(edited) == {str(self.config.overrides)}
        try:
            overrides = load_config_overrides(self.config, quiet=True)
            for warning in overrides.warnings:  # once, not again at every tag-list edit and SIGHUP
                if warning not in self._warned:
                    log.warning("%s", warning)
            self._warned = set(overrides.warnings)  # one that went and came back is news again
            # its line at the start, and when what it says changed: not at every tag-list edit
            changed = starting or overrides != self.pipeline.overrides
            if self.config.overrides is not None and changed and not overrides_only:
                log.info("%s", self._rules(overrides))
            self.activity.reject("overrides", None)
        except OverridesError as exc:
            if starting:
                raise
            log.error("overrides not reloaded, keeping the previous ones: %s", exc)
            self.activity.reject("overrides", str(exc))
            if overrides_only:  # nothing else was edited: nothing changed, nothing to re-score (its
                return  # "overrides …: 2 rules; re-scored 0 photos" read as the refused file in use)
            overrides, changed = self.pipeline.overrides, False
        self.pipeline.use_overrides(overrides)
        if self.pipeline.prefix != self.config.write.hierarchy_prefix:  # a SIGHUP changed it (see _apply)
            self.pipeline.use_prefix(self.config.write.hierarchy_prefix)
        vocabulary = load_tag_list(self.config, quiet=True)
        for warning in vocabulary.warnings:  # once per process, as the overrides': not at every reload
            if warning not in self._tags_warned:  # of an unchanged list (`tags check` lists them all)
                log.warning("%s", warning)
        self._tags_warned = set(vocabulary.warnings)  # one that went and came back is news again
        self.activity.reject("tag list", None)
        started = time.monotonic()
        encoded = self.pipeline.use_vocabulary(vocabulary, self.config.tagging)
        what = (self._rules(overrides) if overrides_only else
                f"tag list {self.config.tags}: {counted(len(vocabulary.tags), 'tag')} "
                f"({counted(encoded, 'new prompt vector')})")
        # an overrides file saved as it was (the same rules) says nothing unless a photo changed
        self._rescore(what, started, say_none=changed or not overrides_only)

    def _rescore(self, what: str, started: float, *, say_none: bool = True, resumed: bool = False) -> None:
        """The re-score of the list just adopted, and its one line.  One that meets a locked database
        raises, and is kept to be resumed (:meth:`_resume_rescore`) with the same line: the list and
        its prompt vectors are in use already, so they are not read, said or encoded again."""
        self._waiting_rescore = (what, started, say_none)
        # status counts its rewrites; the worker encodes photos with no vector
        checked, written = self.pipeline.retag(self.activity.record, queue_unvectored=True, resumed=resumed)
        self._waiting_rescore = None
        if checked or say_none:
            log.info("%s; re-scored %s, rewrote %d in %.1f s", what, counted(checked, "photo"), written,
                     time.monotonic() - started)

    def _database_waits(self) -> dict[str, str]:
        """What waits for the database now (Worker.database_waits), a re-score named by what it is
        of, for `tagwatch status`: the tag list's, or the overrides' (the review page's corrections)."""
        waits = self.worker.database_waits()
        rescore = self._waiting_rescore
        if "rescore" in waits and rescore is not None:
            waits["rescore_of"] = "overrides" if rescore[0].startswith("overrides ") else "tag list"
        return waits

    def _resume_rescore(self) -> None:
        """The worker's retry of a re-score that met a locked database (Worker.rescore_waits): only
        the re-score, from where it stopped, ending with the line the first attempt would have said."""
        if self._waiting_rescore is None:  # a reload since has re-scored it
            return
        what, started, say_none = self._waiting_rescore
        self._rescore(what, started, say_none=say_none, resumed=True)

    def _reload_tags(self) -> None:
        """The worker's reload (an edit's, a SIGHUP's).  An edit's waits if a file began to be
        written again since it was asked for: its close asks again (a SIGHUP is a person's word, and
        reads what is there)."""
        with self._reload_lock:
            asked, self._asked = self._asked, False
            if self._edited and not asked and self._writing and self._closes_reported:
                log.debug("reload put off: %s is being written", ", ".join(sorted(self._writing)))
                return
            edited, self._edited = ((set(), set()) if asked else (self._edited, set()))
        try:
            self._load_tags(edited)
        except VocabularyError as exc:
            log.error("tag list not reloaded, keeping the previous one: %s", exc)
            self.activity.reject("tag list", str(exc))
            # the overrides, read before the list, may have changed with it (a SIGHUP, both edited):
            # those re-score; a rejected list alone changed nothing, and says no "re-scored 0 photos"
            if self.pipeline.vocabulary is not None and (not edited or str(self.config.overrides) in edited):
                self._rescore(self._rules(self.pipeline.overrides), time.monotonic(), say_none=False)

    def _watched_files(self) -> list[Path]:
        return [p for p in (self.config.tags, self.config.overrides) if p is not None]

    def _watch_tag_list(self) -> None:
        if self._tag_observer is not None:
            self._tag_observer.stop()
            self._tag_observer.join(timeout=10)
        self._tag_observer = _edit_observer()
        self._closes_reported = _reports_closes(self._tag_observer)
        files = self._watched_files()
        with self._reload_lock:  # a file no longer watched is not waited for
            self._writing &= {str(p) for p in files}
        handler = _TagListHandler({str(p) for p in files}, self._file_edited)
        for folder in dict.fromkeys(p.parent for p in files):
            self._tag_observer.schedule(handler, str(folder), recursive=False)
        self._tag_observer.start()

    def _file_edited(self, path: str, what: str) -> None:
        """Reload once the edited file is complete: an editor that saves in place first truncates the
        file, and may pause between writes (a slow share, a script writing in parts, ``cat >`` typed
        line by line), and a half-written tag list or overrides file must not be applied (in sync
        mode a list cut short takes keywords out of every photo, an empty overrides file drops every
        override).  A file written to waits for its close (inotify reports it), however long the
        pause; where no close is reported (not Linux) for :data:`~tagwatch.retry.QUIET_S` without an
        event.  A save complete at once (closed, renamed into place) reloads after the settle time,
        which only gathers the events of one save (and of the other file, saved with it)."""
        with self._reload_lock:
            if what == GONE:  # nothing to read, and no close to wait for
                self._writing.discard(path)
                if not self._edited or self._reload_timer is not None:
                    return
            else:
                self._edited.add(path)
            if what == WRITING:
                self._writing.add(path)
            elif what == SAVED:
                self._writing.discard(path)
            if self._reload_timer is not None:
                self._reload_timer.cancel()
                self._reload_timer = None
            if self._writing and self._closes_reported:
                log.debug("%s being written; reloading once it is closed", ", ".join(sorted(self._writing)))
                return
            delay = QUIET_S if self._writing else max(self.config.batch.settle_ms / 1000, 0.2)
            self._reload_timer = threading.Timer(delay, self._edits_done)
            self._reload_timer.daemon = True
            self._reload_timer.start()

    def _edits_done(self) -> None:
        """The edited files are complete (or, with no close reported, quiet long enough): reload."""
        with self._reload_lock:
            if not self._closes_reported:  # quiet long enough counts as closed
                self._writing.clear()
            self._reload_timer = None
        self.worker.request_reload()

    # -- life cycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Load the tag list (errors end the start), start watching, schedule scans."""
        if not self._cli_watch:  # the installed unit runs the config's folders, not the command line's
            stale = units.stale_unit(self.config)
            if stale is not None:
                log.warning("%s", stale)
        hidden = units.private_tmp(self.config.watch)  # a folder under /tmp the unit's sandbox hides
        if hidden is not None:
            log.warning("%s", hidden)
        # exiftool's start, not the first photo's write, waits for Perl
        self.writer.warm_up_aside(self.config.database.parent)
        self._say_restore()
        # A start under a backup's lock starts: the tag list is adopted (its new prompt vectors kept
        # in memory where they cannot be stored), and a re-score that meets the lock waits in the
        # worker as an edit's does, the photos backing off as ever.  Waited for as a batch's write.
        with self.store.lock_wait(self.config.database_lock_wait):
            try:
                self._load_tags()
            except Exception as exc:
                if self.pipeline.vocabulary is None or not self.worker.rescore_waits(exc):
                    raise
        self.watcher.start()
        self._watch_tag_list()
        self.worker.start()
        self.scheduler.start()
        self.scheduler.add_job(self._scan, id="startup-scan", kwargs={"clean_temp": True})
        if self.config.schedule.rescan > 0:
            self.scheduler.add_job(self._scan, "interval", seconds=self.config.schedule.rescan,
                                   id="rescan", max_instances=1, coalesce=True)
        idle = self.config.schedule.idle_unload
        if idle > 0:
            self.scheduler.add_job(self.model.unload_if_idle, "interval", seconds=max(idle / 4, 5.0),
                                   args=[idle], id="idle-unload", max_instances=1, coalesce=True)
            captions = self.pipeline.captions
            if captions is not None and not captions.shared:  # a captioner of its own, in its own child
                self.scheduler.add_job(captions.model.unload_if_idle, "interval",
                                       seconds=max(idle / 4, 5.0), args=[idle], id="idle-unload-captioner",
                                       max_instances=1, coalesce=True)
        if self.notifier.watchdog_interval:
            self.scheduler.add_job(self._watchdog, "interval", seconds=self.notifier.watchdog_interval,
                                   id="watchdog", max_instances=1, coalesce=True)
        if self.notifier.enabled:
            self.scheduler.add_job(self._report, "interval", seconds=10, id="status", coalesce=True)
        self._state_thread.start()
        self.scheduler.add_job(self._check_roots, "interval", seconds=ROOT_CHECK_S, id="roots",
                               max_instances=1, coalesce=True)
        self._start_metrics()
        self._start_web()
        self.ready.set()

    def _start_metrics(self) -> None:
        metrics = self.config.metrics
        if not metrics.host:
            return
        try:
            self._metrics = MetricsServer(metrics.host, metrics.port, self._prometheus)
        except OSError as exc:  # a port in use costs the metrics, not the tagging
            log.error("metrics: cannot listen on %s:%d: %s; running without the endpoint", metrics.host,
                      metrics.port, exc.strerror or exc)
            return
        self._metrics.start()
        log.info("metrics on http://%s:%d/metrics", *self._metrics.address[:2])

    def _start_web(self) -> None:
        """Host the review page; the daemon applies its corrections itself (it watches the files)."""
        if not self.config.web.enabled:
            return
        from .web.server import WebError, WebServer

        try:
            self._web = WebServer(self.config, apply_corrections=False)
        except WebError as exc:  # a port in use costs the page, not the tagging
            log.error("%s; running without the review page (restart the daemon to serve it once that is "
                      "fixed)", exc)
            return
        self._web.start()

    def _prometheus(self) -> str:
        stats = self.store.stats(self.model.identity)
        files = {name: stats[name] for name in ("tagged", "pending", "failed", "untagged")}
        return render_prometheus(self.activity.snapshot(), files)

    def _observe(self, outcomes: list[Outcome]) -> None:
        """A batch's outcomes: counted (the state file says them within :data:`STATE_SOON_S`)."""
        self.activity.record(outcomes)

    def _keep_state(self) -> None:
        """The state file, from the start until the daemon stops (its own thread).  An error of
        tagwatch's own in one look is logged (once while it lasts) and the next look goes on, as a
        scheduler job's would: a thread that died of it left `tagwatch status` showing one moment
        for the daemon's life."""
        said: str | None = None  # the error last logged: once, not twice a second while it lasts
        while True:
            try:
                self._save_state()
                said = None
            except Exception as exc:
                if repr(exc) != said:
                    log.exception("the state file for `tagwatch status` was not written")
                said = repr(exc)
            if self.stopped.wait(STATE_SOON_S):
                return

    def _save_state(self) -> None:
        """Every :data:`STATE_SOON_S`: the state file written where what it says changed, and at least
        every :data:`STATE_INTERVAL_S`.  A failure is logged when it starts (or its reason changes) and
        when it ends, not every time."""
        snapshot = {**self.activity.snapshot(), "model_loaded": self.model.loaded}
        shown = {key: value for key, value in snapshot.items() if key not in _CLOCK_KEYS}
        now = time.monotonic()
        if self.stopped.is_set() or (shown == self._state_shown and now - self._state_at < STATE_INTERVAL_S):
            return
        self._state_shown, self._state_at = shown, now  # a failed write is tried again in 5 s, or at news
        path = state_path(self.config.database)
        try:
            write_state(path, snapshot)
        except OSError as exc:  # a full disk must not stop the daemon; status will say it is stale
            reason = exc.strerror or str(exc)
            if reason != self._state_trouble:
                log.warning("cannot write %s: %s; `tagwatch status` shows an older state until it can",
                            path, reason)
                self._state_trouble = reason
            return
        if self._state_trouble is not None:
            log.info("%s is written again", path)
            self._state_trouble = None

    def _watchdog(self) -> None:
        """Tell systemd we are alive only while the worker thread is: a dead worker gets restarted."""
        if self.worker.is_alive():
            self.notifier.watchdog()

    def _report(self) -> None:
        stats = self.store.stats(self.model.identity)
        now = self.activity.snapshot()
        self.notifier.status(f"{watching(len(self.config.watch), len(now['unwatched']))}; "
                             f"{counted(stats['tagged'], 'photo')} tagged, "
                             f"{now['queue']} queued, {stats['failed']} failed; "
                             f"{now['tagged_per_min']:g}/min")

    def _scan(self, clean_temp: bool = False, roots: tuple[Path, ...] | None = None) -> None:
        started, began_ns = time.monotonic(), time.time_ns()
        report = reconcile(roots or self.config.watch, self.filter, self.store, self.queue, clean_temp,
                           self.stopped, carry=partial(move_sidecar, self.writer, store=self.store),
                           lost=partial(sidecar_lost, self.writer, self.store))
        if report.unlistable:  # watched and scanned once they can be listed
            self.watcher.unlistable(report.unlistable)
        if self.stopped.is_set():
            return
        log.info("scan%s: %s, %d queued, %d gone%s (%.1f s)",
                 f" of {', '.join(map(str, roots))}" if roots else "", counted(report.seen, "photo"),
                 report.queued, report.gone, f", {report.moved} moved" if report.moved else "",
                 time.monotonic() - started)
        if roots is None and not report.unlistable and not report.left_out:  # every watched photo seen
            self._check_restore(began_ns)

    def _say_restore(self) -> None:
        """A restore found by a command before this start (`tagwatch status`, run first after a
        backup was put back) was said on that terminal only, and the daemon's log had nothing of it
        (user round xZ #9): said at the start, with its event, while `tagwatch status` still says it.
        Not where this start found it itself: the store said it then."""
        found = None if self.store.restore_said else self.store.restore_unchecked()
        if found is None:
            return
        log.warning("%s", restore_warning(self.config.database, found), extra={"event": "database-restored"})

    def _check_restore(self, began_ns: int) -> None:
        """A scan of every watched folder, begun at ``began_ns``, compared each photo with its record:
        once the photos it queued are settled, a restore found before it has nothing left to say
        (see Store.restore_checked): ``tagwatch status`` stops saying it.  One pass asked at a time."""
        if self._restore_check is not None or self.store.restore_unchecked() is None:
            return
        self._restore_check = began_ns
        self.worker.when_settled(lambda: self._record_check(began_ns))

    def _record_check(self, began_ns: int) -> None:
        """Record the check begun at ``began_ns`` (its photos are settled).  A database another
        program holds locked (a backup's) makes the record wait, tried again backing off to once
        every :data:`CHECK_RETRY_CAP_S`, on the scheduler's thread: it waited SQLite's 30 s on the
        worker and was then dropped, so that a start under the lock left the note in `tagwatch
        status` until the hourly rescan, or the next start (user round xZ #6)."""
        try:
            with self.store.lock_wait(self.config.database_lock_wait):
                restored = self.store.restore_checked(began_ns)
        except sqlite3.Error as exc:
            if sqlite_locked(exc) and not self.stopped.is_set():
                delay = self._check_backoff.next("check")
                log.debug("the restore's check not recorded yet: %s; tried again in %g s", exc, delay)
                self.scheduler.add_job(self._record_check, "date", args=[began_ns], id="restore-check",
                                       replace_existing=True,
                                       run_date=datetime.fromtimestamp(time.time() + delay, UTC))
                return
            log.debug("the restore's check not recorded: %s", exc)  # the next full scan records it
            restored = None
        self._restore_check = None
        self._check_backoff.clear("check")
        if restored is not None:
            log.info("%s: every photo in the watched folders checked again since the database was found "
                     "restored on %s (the photos changed after that copy was taken are settled); "
                     "`tagwatch status` no longer says it", self.config.database, restore_day(restored),
                     extra={"event": "restore-checked"})

    def _check_roots(self) -> None:
        """Watch again a watched folder that came back, or one holding a folder that can be listed
        now (see Watcher.check), and scan it: what was put there while it was gone or could not be
        seen, or on the drive meanwhile, gets tagged now, not at the next rescan."""
        back = self.watcher.check()
        if back and not self.stopped.is_set():
            self._scan(roots=tuple(back))

    def reload(self) -> None:
        """SIGHUP: re-read the config and the files it names.  What :data:`RELOADABLE` covers applies
        at once; every other changed key is named in one line as waiting for a restart, and one line
        says what was applied, so that no change goes unapplied without a word."""
        if self.config.source is None:
            log.info("config: none to re-read (built-in defaults); re-reading the tag list and overrides")
            self._ask_reload()
            return
        try:
            new = load_config(self.config.source)
        except ConfigError as exc:
            log.error("config not reloaded: %s", exc)
            self.activity.reject("config", str(exc))
            return
        self.activity.reject("config", None)
        if self._cli_watch:  # the folders came from the command line: the config's do not apply
            new = replace(new, watch=self.config.watch, poll=self.config.poll)
        changed = changed_keys(self.config, new)
        applied = [key for key in changed if key.split(".")[0] in RELOADABLE or key in RELOADABLE_KEYS]
        later = [key for key in changed if key not in applied]
        if later:
            log.warning("config: a change of %s takes effect after a restart", ", ".join(later))
        held = [key for key in applied if key in _PAGE_FILES] if self._web is not None else []
        if held:  # the page would go on saving corrections where the daemon no longer reads them
            new = replace(new, **{key: getattr(self.config, key) for key in held})
            applied = [key for key in applied if key not in held]
            log.warning("config: a change of %s takes effect after a restart: the review page this daemon "
                        "serves saves corrections and thresholds into the files it started with",
                        ", ".join(held))
        self._apply(new, applied)
        log.info("config %s reloaded: %s; the tag list and overrides are re-read", self.config.source,
                 f"applied {', '.join(applied)}" if applied else "nothing changed that applies while running")

    def _apply(self, new: Config, applied: list[str]) -> None:
        """Take the reloadable keys of ``new``; the worker re-reads the tag list and overrides and
        re-scores what the new settings change."""
        watched = self._watched_files()
        self.config = replace(self.config, **{name: getattr(new, name) for name in RELOADABLE},
                              write=replace(self.config.write, hierarchy_prefix=new.write.hierarchy_prefix))
        if "log_level" in applied:  # only when changed: a -v on the command line holds until then
            logging.getLogger("tagwatch").setLevel(self.config.log_level.upper())
        set_pixel_limit(self.config.max_megapixels)
        if self._web is not None:  # the page it serves scores as the daemon does
            self._web.use_tagging(self.config.tagging)
        if self._watched_files() != watched:
            self._watch_tag_list()
        self._ask_reload()

    def _ask_reload(self) -> None:
        """A SIGHUP's reload: everything re-read now, a file being written included."""
        with self._reload_lock:
            self._asked = True
        self.worker.request_reload()

    def stop(self) -> None:
        """Finish the batch in flight, then let go of everything."""
        self.stopped.set()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        self.watcher.stop()
        if self._tag_observer is not None:
            self._tag_observer.stop()
            self._tag_observer.join(timeout=10)
        with self._reload_lock:
            if self._reload_timer is not None:
                self._reload_timer.cancel()
        self.queue.close()
        if self.worker.is_alive():
            self.worker.join()
        self.worker.engine.close()  # the worker closes it as it ends; here too if it never started
        if self._metrics is not None:
            self._metrics.stop()
        if self._web is not None:
            self._web.stop()
        if self._state_thread.is_alive():  # its last write done before the file goes
            self._state_thread.join(timeout=10)
        with contextlib.suppress(OSError):
            state_path(self.config.database).unlink()
        self.pipeline.close()
        self.exiftool.close()
        self.store.close()
        os.close(self._lock_fd)

    def run_forever(self) -> int:
        """Run until SIGTERM or SIGINT; returns the exit status.  The signals are acted on by a
        thread of their own (:mod:`.signals`): a handler that set an Event could deadlock this loop."""
        signals = SignalThread({signal.SIGTERM: self.stopped.set, signal.SIGINT: self.stopped.set,
                                signal.SIGHUP: self._hangup.set})
        signals.start()
        try:
            self.start()
            log.info("tagwatch is running (pid %d)", os.getpid())
            self.notifier.ready(watching(len(self.config.watch), len(self.watcher.unwatched())))
            while not self.stopped.wait(0.5):
                if self._hangup.is_set():  # here: a reload while the loop waits, one at a time
                    self._hangup.clear()
                    self.reload()
            log.info("stopping: finishing the batch in flight")
            self.notifier.stopping()
            self.stop()
        finally:
            signals.stop()
        log.info("stopped")
        return 0
