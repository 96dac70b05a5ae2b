"""Noticing files: watchdog observers for live events, and the reconcile scan for everything else.

Handlers only decide what an event means (a file to tag, a rename, a deletion) and put that on the
queue; they never read pixels or write metadata.  The reconcile scan catches what happened while the
daemon was down or what the kernel could not report.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import logging
import os
import stat
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from watchdog.events import (
    DirAttribEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from .formats import IMAGE_SUFFIXES, UNREAD_IMAGE_SUFFIXES, ImageError, content_key
from .freshness import SIDECAR_SUFFIX, Lost, is_settled, is_sidecar
from .logs import shown
from .metadata import remove_if_stale
from .polling import LightPollingObserver
from .queue import BatchQueue, Delete, HalfMove, Move
from .store import FileRow, Store, inside

log = logging.getLogger(__name__)

# photos found in new folders or moved in from another root remembered (by name), for the half of a
# move still to come; and the new folders remembered, whose photos watchdog reports as created after
# the folder
ARRIVALS = 4096
# ... and every one of the last ARRIVALS_KEPT_S seconds, whatever their number: the departures of a
# burst come behind their arrivals (watchdog's 0.5 s, and the handler's own lag on a busy machine);
# one that comes after its arrival's PAIR_DELAY still pairs with it while the photo, not tagged yet,
# waits in a backlog
ARRIVALS_KEPT_S = 30.0


# A sidecar deleted: its photos are looked at this much later, once an app that saves it by deleting
# it and making it anew, or a person moving a photo and its sidecar one after the other, is done
SIDECAR_GONE_DELAY = 1.0
CLOSED_DELAY = 0.1  # after a close-after-write the file is complete; wait only for stray events

# A photo moved in from outside its root's watch, while several roots are watched, may come from
# another root: it waits this long before it is tagged, for the other half of the move (watchdog
# holds an unpaired IN_MOVED_FROM 0.5 s for its IN_MOVED_TO, so the leaving half comes that much
# after the arriving one; the other half second is a margin for the threads: a photo moved in from
# outside every root is tagged that much later, and a dropped photo should carry its keywords within
# a second or two).  See _Handler.
PAIR_DELAY = 1.0
# ... and a photo said to leave a root for nowhere before any arrival of its name (the other root's
# observer behind on a busy machine) is taken for deleted only this long after: a deletion waits at
# no one's cost, where a held arrival delays a dropped photo's keywords.  See _Handler._depart.
DEPARTURE_WAIT = 5.0

# The events _Handler acts on.  Given to the observer, which then asks inotify for no others: without
# it every open and read-only close of a photo (our decoder's, exiftool's reads, a photo app browsing
# the folders) woke the observer thread, and watchdog made a folder event of each file event.  While
# a scan tagged 60 photos in a watched folder: 2,300 events, 0.23-0.28 s of the observer's CPU; with
# the filter 920, 0.15-0.16 s.  A folder's attribute change (a chmod that lets tagwatch write or list
# it again) is one of them; inotify reports it with the file ones (IN_ATTRIB) at no extra cost.
EVENTS = [FileCreatedEvent, FileModifiedEvent, FileAttribEvent, FileClosedEvent, FileDeletedEvent,
          FileMovedEvent, DirCreatedEvent, DirDeletedEvent, DirMovedEvent, DirAttribEvent]


def _observer() -> BaseObserver:
    """The platform's observer; on Linux one that reports a file moved in from outside the watched
    folders as a move (from nowhere), not as a new file.  A rename delivers a complete file, so it
    waits :data:`CLOSED_DELAY`, not the settle time a file still being written needs: a file manager's
    move or an import tool's rename is tagged half a second sooner."""
    try:
        from watchdog.observers.inotify import InotifyObserver
    except Exception:  # no inotify here (macOS, Windows, BSD): ImportError or watchdog's
        return Observer()  # UnsupportedLibcError (UnsupportedLibc before watchdog 5)
    if Observer is not InotifyObserver:  # watchdog chose another for this platform
        return Observer()
    return InotifyObserver(generate_full_events=True)


class PathFilter:
    """Which paths under the watched roots are photos we tag.

    Always skipped: anything hidden (a name starting with ``.``, which covers our temporary files)
    and names in a hidden folder.  ``exclude`` patterns without ``/`` match any single file or folder
    name (``@eaDir``, ``*.tmp``); patterns with ``/`` match the path relative to its root
    (``archive/*``), and a matched folder excludes everything inside it.
    """

    def __init__(self, roots: Sequence[Path], exclude: Sequence[str] = (),
                 suffixes: frozenset[str] = IMAGE_SUFFIXES) -> None:
        self.roots = sorted((str(r).rstrip("/") or "/" for r in roots), key=len, reverse=True)
        self.names = [p for p in exclude if "/" not in p.strip("/")]
        self.rel_patterns = [p.strip("/") for p in exclude if "/" in p.strip("/")]
        self.suffixes = suffixes

    def _relative(self, path: str) -> str | None:
        for root in self.roots:
            if path.startswith(root + "/"):
                return path[len(root) + 1:]
        return None

    def _skipped(self, rel: str) -> bool:
        parts = rel.split("/")
        if any(part.startswith(".") for part in parts):
            return True
        if any(fnmatch.fnmatchcase(part, pattern) for part in parts for pattern in self.names):
            return True
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        return any(fnmatch.fnmatchcase(prefix, pattern)
                   for prefix in prefixes for pattern in self.rel_patterns)

    def wanted(self, path: str) -> bool:
        """A file we should tag."""
        rel = self._relative(path)
        return (rel is not None and os.path.splitext(path)[1].lower() in self.suffixes
                and not self._skipped(rel))

    def wanted_dir(self, path: str) -> bool:
        """A folder whose contents we should look at (a root itself counts)."""
        if path.rstrip("/") in self.roots:
            return True
        rel = self._relative(path)
        return rel is not None and not self._skipped(rel)


def walk(root: Path, filt: PathFilter, clean_temp: bool = False, stop: threading.Event | None = None,
         unlistable: set[str] | None = None, sidecars: dict[str, os.stat_result] | None = None,
         passed_over: Counter[str] | None = None) -> Iterator[tuple[str, os.stat_result]]:
    """Every wanted file under ``root`` with its stat; symlinks are never followed.

    ``clean_temp`` deletes temporary files a killed writer left beside photos (never those of a
    process still running: they may be writes in flight).  ``stop`` ends the walk early (shutdown
    must not wait for a scan of 200,000 files).  ``unlistable`` receives the folders that could not
    be listed: what is inside them was not seen, which is not the same as gone.  ``sidecars``, where
    given, holds the XMP sidecars of the folder whose files are being yielded, with their stats: from
    the listing, so a photo without one costs no look-up.  ``passed_over`` counts, by suffix, the
    pictures of a format tagwatch does not read (AVIF, GIF, …), for ``scan`` to say so.
    """
    stack = [str(root)]
    while stack and not (stop is not None and stop.is_set()):
        folder = stack.pop()
        try:
            with os.scandir(folder) as entries:
                listing = list(entries)
        except OSError as exc:
            log.warning("%s: cannot list folder: %s", folder, exc.strerror)
            if unlistable is not None:
                unlistable.add(folder)
            continue
        if sidecars is not None:
            sidecars.clear()
            for entry in listing:
                if is_sidecar(entry.name):
                    with contextlib.suppress(OSError):
                        sidecars[entry.path] = entry.stat(follow_symlinks=False)
        for entry in listing:
            try:
                if clean_temp and remove_if_stale(entry):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    if filt.wanted_dir(entry.path):
                        stack.append(entry.path)
                elif entry.is_file(follow_symlinks=False) and filt.wanted(entry.path):
                    yield entry.path, entry.stat(follow_symlinks=False)
                elif passed_over is not None and not entry.name.startswith("."):
                    suffix = os.path.splitext(entry.name)[1].lower()
                    if suffix in UNREAD_IMAGE_SUFFIXES:
                        passed_over[suffix] += 1
            except OSError as exc:
                log.warning("%s: skipped: %s", entry.path, exc.strerror)


@dataclass
class ScanReport:
    seen: int = 0
    queued: int = 0
    gone: int = 0
    moved: int = 0  # photos found under another name, the old one gone: moved while no one watched
    unlistable: set[str] = field(default_factory=set)  # folders not listed: their files were kept
    # watched folders whose photos were not compared with their records: not there, reached through a
    # link (not walked), or found empty where photos were recorded (an unplugged drive's mount point)
    left_out: list[str] = field(default_factory=list)


Signature = tuple[str, int, int]


def _signature(path: str, size: int | None, mtime_ns: int | None) -> Signature | None:
    """What a move keeps of a file: its name, size and modification time (``mv``, a file manager's
    move, ``rsync -a`` and ``cp -p`` all keep them); the same test :func:`is_unchanged` trusts."""
    if size is None or mtime_ns is None:
        return None
    return os.path.basename(path), size, mtime_ns


def _by_signature(known: Mapping[str, FileRow]) -> dict[Signature, str | None]:
    """The recorded files by :func:`_signature`; None where two share one (which moved is unknown)."""
    found: dict[Signature, str | None] = {}
    for path, row in known.items():
        sig = _signature(path, row.size, row.mtime_ns)
        if sig is not None:
            found[sig] = None if sig in found else path
    return found


def _key_of(path: str) -> bytes | None:
    """The content key of the file at ``path`` (None where it cannot be read or keyed: it is then
    looked at as any new file).  Taken as settled: it has the size of a photo recorded whole."""
    try:
        with open(path, "rb") as handle:
            return content_key(handle.read(), settled=True)
    except (OSError, ImageError) as exc:
        log.debug("%s: not keyed by the scan: %s", path, getattr(exc, "strerror", None) or exc)
        return None


def renamed_pictures(new: Mapping[str, os.stat_result], gone: Mapping[str, FileRow]) -> list[tuple[str, str]]:
    """(old, new) for each recorded photo gone whose picture (its content key) one new file of the
    scan has and no other: a photo renamed while no daemon watched (``mv IMG_1.jpg beach.jpg``),
    whose sidecar then follows it.  Only new files of a gone photo's size are read.  Two new files
    of one picture (a copy, then the original renamed), or two gone ones, are a pairing not known:
    said at INFO, and each is left to what it is without one (a deletion, a new photo)."""
    sizes = {row.size for row in gone.values() if row.key is not None}
    keys = {path: _key_of(path) for path, st in new.items() if st.st_size in sizes}
    news: dict[bytes, list[str]] = {}
    for path, key in keys.items():
        if key is not None:
            news.setdefault(key, []).append(path)
    olds: dict[bytes, list[str]] = {}
    for path, row in gone.items():
        if row.key in news:
            olds.setdefault(row.key, []).append(path)
    pairs: list[tuple[str, str]] = []
    for key, old in olds.items():
        if len(old) == 1 and len(news[key]) == 1:
            pairs.append((old[0], news[key][0]))
        else:
            log.info("%s: gone, and its picture is at %s: which one it was renamed to is not known, "
                     "so no sidecar follows it", ", ".join(map(shown, sorted(old))),
                     ", ".join(map(shown, sorted(news[key]))))
    return pairs


def reconcile(roots: Sequence[Path], filt: PathFilter, store: Store, queue: BatchQueue,
              clean_temp: bool = False, stop: threading.Event | None = None,
              carry: Callable[[str, str], str | None] | None = None, lost: Lost | None = None) -> ScanReport:
    """Compare the folders with the store: queue new and changed files, report vanished ones.  A
    folder that cannot be listed (chmod 000) keeps its files' records as they are: they may be fine,
    and are looked at again once it can be listed (``report.unlistable`` names it).

    A new file with the name, size and modification time of a recorded one that is gone was moved
    while no daemon watched (a folder reorganised with the daemon stopped): it is queued as the
    rename it is, its record and ledger following it, not as a new photo and a deleted one.

    ``carry`` (the daemon's :func:`tagwatch.writeback.move_sidecar`): a photo renamed under another
    name is still a deleted photo and a new one (tagged from the vector its picture keeps), but its
    sidecar, holding a person's keywords, follows it as a live rename's does (:func:`renamed_pictures`
    pairs them).  New files of a recorded photo's size are queued only once the walk is over, so the
    sidecar is carried before the new name is tagged and given one of its own.

    ``lost`` (:func:`tagwatch.shared.sidecar_lost`): a tagged photo whose sidecar, holding
    tagwatch's keywords, was deleted while no daemon watched is queued, to have them written again."""
    report = ScanReport()
    # a watched folder inside another is walked with it: walked again, its photos were counted twice
    roots = [r for r in roots if not inside(str(r), {str(o) for o in roots if o != r})]
    # A root that is not there (unplugged, unmounted), or that is reached through a symbolic link
    # now (renamed away, a link left in its place), is left out: the watcher says so, and has it
    # scanned when it is back; its records are kept meanwhile (walked, every photo was refused)
    records = {root: store.files_under(str(root)) for root in roots
               if root.is_dir() and linked_to(root) is None}
    report.left_out = [str(root) for root in roots if root not in records]
    # the records by signature, built at the first new file met: a start that finds none (a daemon
    # restarted on an unchanged library) does without it
    recorded: dict[Signature, str | None] | None = None
    arrived: dict[str, Signature] = {}  # new files that may be a recorded one moved: known at the end
    sizes: set[int] = set()  # the recorded photos' sizes, built with ``recorded``
    maybe: dict[str, os.stat_result] = {}  # new files of a recorded size: renamed ones, known at the end
    gone: dict[str, FileRow] = {}
    for root, rows in records.items():
        known = dict(rows)  # popped as they are found: what is left is gone
        seen = report.seen
        sidecars: dict[str, os.stat_result] = {}  # the current folder's: a sidecar edited meanwhile
        for path, st in walk(root, filt, clean_temp, stop, report.unlistable, sidecars):
            report.seen += 1
            row = known.pop(path, None)
            if row is None:
                if recorded is None:
                    recorded = _by_signature({p: r for found in records.values() for p, r in found.items()})
                    sizes = {r.size for found in records.values() for r in found.values() if r.size}
                sig = _signature(path, st.st_size, st.st_mtime_ns)
                if sig is not None and recorded.get(sig) is not None:
                    arrived[path] = sig
                    continue
                if carry is not None and st.st_size in sizes:
                    maybe[path] = st
                    continue
            # A chmod while the daemon was down can have cured a failure; a geotagger can have written
            # the photo's sidecar, or a person deleted the sidecar that held tagwatch's keywords
            if is_settled(row, path, st, stat_of=sidecars.get, recorded=store.files, lost=lost):
                continue
            queue.put(path, delay=0.0)
            report.queued += 1
        if stop is not None and stop.is_set():
            return report  # an interrupted walk has not seen everything: nothing may be called gone
        if report.unlistable:
            known = {path: row for path, row in known.items() if not inside(path, report.unlistable)}
        if known and report.seen == seen:
            # An unmounted drive leaves its mount point empty (or absent): its photos are not gone,
            # and calling them so would make the drive's return cost a full re-read of every one.
            log.warning("%s: no photos found where %d were; taken for an unmounted or unplugged "
                        "drive: their records are kept until they are back", root, len(known))
            report.left_out.append(str(root))  # none of them compared: this scan did not see them all
            continue
        gone.update(known)
    left = set(gone)
    for path, sig in arrived.items():
        assert recorded is not None  # built when the first of them was met
        src = recorded[sig]
        if src in left:  # the rename is applied first; the file is then looked at as any other
            left.discard(src)
            queue.op(Move(src, path))
            report.moved += 1
        else:
            report.queued += 1
        queue.put(path, delay=0.0)
    if maybe:
        assert carry is not None  # only then are new files held back
        for old, new in renamed_pictures(maybe, {path: gone[path] for path in left}):
            why = carry(old, new)  # before the new name is queued: it must not get a sidecar first
            if why:
                log.info("%s: renamed to %s while no daemon watched; its sidecar stays: %s",
                         shown(old), shown(new), why)
        for path in maybe:
            queue.put(path, delay=0.0)
            report.queued += 1
    for path in gone:
        if path in left:
            queue.op(Delete(path))
            report.gone += 1
    return report


def linked_to(path: str | Path) -> str | None:
    """Where ``path`` leads, if a symbolic link stands on its way (itself, or a folder above it);
    None while its path is its real path.  The one "reached through a link" rule of the watcher and
    the review page (:mod:`tagwatch.web.paths`): tagwatch follows no link, and the page reads nothing
    through one.  The watched folders are real paths (the config resolves them), so a link on a
    root's way came after the start: a folder renamed away and a link to it left in its place, which
    ``stat`` follows to the very folder watched.  A path with no real path (a NUL from a URL, a loop)
    leads to ``""``: nowhere, but through no real path either."""
    try:
        real = os.path.realpath(path)
    except (OSError, ValueError):
        return ""
    return None if real == os.fspath(path) else real


def _through_link(path: str) -> bool:
    """Is ``path`` itself a link to a folder, or reached through a link to a folder?  watchdog
    reports a new link to a folder as a new folder, and may report what it finds behind it."""
    return (os.path.islink(path) and os.path.isdir(path)) or linked_to(os.path.dirname(path)) is not None


class _Recent:
    """Paths remembered by name: the latest :data:`ARRIVALS`, and every one of the last
    :data:`ARRIVALS_KEPT_S` whatever their number: the photos that arrived, for a photo whose move
    inotify saw only half of (:meth:`_Handler._went_to`), and the folders moved in from nowhere, for a
    folder's departure from another root (:meth:`_Handler._folder_left`).  A look-up by name, never a
    pass over them; a path seen again is the latest of its name.  Not locked: its owner's lock
    guards it."""

    def __init__(self) -> None:
        self._when: OrderedDict[str, tuple[str, float]] = OrderedDict()  # path → its name and when
        self._named: dict[str, list[str]] = {}  # name → those paths, oldest first

    def add(self, path: str) -> None:
        """Remember ``path`` as the latest of its name; forget the oldest past both limits."""
        name, now = os.path.basename(path), time.monotonic()
        if path in self._when:
            self._named[name].remove(path)
            del self._when[path]
        self._when[path] = (name, now)
        self._named.setdefault(name, []).append(path)
        while len(self._when) > ARRIVALS:
            old, (old_name, when) = next(iter(self._when.items()))
            if when > now - ARRIVALS_KEPT_S:
                break
            self._when.popitem(last=False)
            paths = self._named[old_name]
            paths.remove(old)
            if not paths:
                del self._named[old_name]

    def named(self, name: str) -> list[str]:
        """The paths remembered of ``name``, the latest first."""
        return list(reversed(self._named.get(name, [])))


class _Handler(FileSystemEventHandler):
    """Turns watchdog events into queue entries.

    A photo moved from one watched root to another (``watch = ["~/Inbox", "~/Archive"]``, then
    ``mv ~/Inbox/IMG_1.jpg ~/Archive/2026/`` while the daemon runs) is paired here, the one place
    that decides it.  Each root has its own inotify watch, and watchdog pairs a rename's halves only
    within one watch (one observer for every root would not change that: watchdog pairs them per
    scheduled watch), so the move arrives as two events from two observer threads: ``Archive/2026/
    IMG_1.jpg`` moved in from nowhere, and about 0.5 s later ``Inbox/IMG_1.jpg`` moved out to
    nowhere.  Where several roots are watched, the arrival is remembered by name (as a photo found in
    a new folder is) and waits :data:`PAIR_DELAY` before it is tagged; the departure then finds it
    (:meth:`_went_to`) and is queued as a :class:`~tagwatch.queue.HalfMove`, which the store's side
    applies as the move to it where the size and modification time recorded for the old name are
    the file's (else as a deletion).  On a busy machine the halves can come the other way round: a
    departure that finds no arrival waits :data:`DEPARTURE_WAIT` for one (:meth:`_depart`) before
    it is a deletion.  Either way the record, ledger, correction and sidecar follow the photo,
    and nothing is encoded again, as for a rename within one root.  Before, the old name was logged
    deleted, its sidecar (a person's keywords in it) left beside no photo, and the new name tagged
    as a new photo with a sidecar of its own.

    A whole folder moved across (``mv ~/Inbox/2026-12-wedding ~/Archive/``) is paired the same way,
    as a folder: its arrival from nowhere holds each of its photos :data:`PAIR_DELAY` and is
    remembered by the folder's name (:meth:`_folder_arrival`); its departure to nowhere finds it
    (or waits :data:`DEPARTURE_WAIT` for it) and is one :class:`~tagwatch.queue.HalfMove` of the
    folder (:meth:`_folder_left`), which the store's side applies as the move of every record under
    the old folder, where the photos it finds at their places in the new one have the sizes and
    times recorded; else, as for a folder moved out of every root, the deletion of its photos.  One
    op for the folder, paired by its name: never a pass over its photos per event, and thousands of
    photos cost one look-up of the records under each folder.  Before, each photo was logged
    deleted and taken up as a copy of itself at the new path (its records' history and corrections
    left behind).  Not paired, and so a deletion and a new photo as before: a departure that comes
    after the arrival was tagged (a machine too busy for :data:`PAIR_DELAY`), and moves between
    polled roots (``poll = true``), which are seen as a deletion and a creation.
    """

    def __init__(self, filt: PathFilter, queue: BatchQueue,
                 unlistable: Callable[[set[str]], None] = lambda folders: None) -> None:
        self.filt, self.queue = filt, queue
        self._unlistable = unlistable  # told the folders a walk could not list
        # Photos found in a new folder (its walk, watchdog's own walk of it) or moved in from nowhere
        # while several roots are watched, the latest ARRIVALS (and all of the last ARRIVALS_KEPT_S):
        # where a photo whose move inotify saw only half of went (see HalfMove).  Every photo of a
        # name is kept (phones reuse names), and the new folders, so that a photo created elsewhere
        # is none.
        # One handler serves every root's observer thread: these are changed under _arrivals_lock.
        self._arrived = _Recent()
        self._new_folders: OrderedDict[str, None] = OrderedDict()
        # folders moved in from nowhere while several roots are watched, by name: where a folder that
        # left another root for nowhere went (see _folder_left)
        self._folders_in = _Recent()
        # photos moved in from nowhere while several roots are watched, held back until then
        # (monotonic) for the other half of a move from another root: see _hold
        self._held: OrderedDict[str, float] = OrderedDict()  # the soonest to end first
        # photos and folders that left a root for nowhere, while several roots are watched, before an
        # arrival of their name was seen (the other root's observer behind on a busy machine): path →
        # when its deletion is due (monotonic) and whether it is a folder's, the soonest first; and
        # their names, the photos' and the folders' apart (see _depart)
        self._departed: OrderedDict[str, tuple[float, bool]] = OrderedDict()
        self._leaving: dict[str, list[str]] = {}
        self._leaving_folders: dict[str, list[str]] = {}
        self._flusher: threading.Thread | None = None  # queues the deletions due; ends when none wait
        self._arrivals_lock = threading.Lock()

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            self._dispatch(event)
        except Exception as exc:  # an odd event must never kill the observer thread
            log.error("event %s failed: %s", event, exc)

    def _enqueue_tree(self, folder: str, moved_in: bool = False) -> None:
        """Queue the photos of a folder made or moved in, and remember them as arrivals.  Where it
        was ``moved_in`` from nowhere while several roots are watched (perhaps from another root:
        :meth:`_folder_arrival`), each photo is held as one moved in alone is (:meth:`_hold`).  The
        others go through :meth:`_put`, so that the walk of a subfolder watchdog reports after it
        does not cut a hold short."""
        with self._arrivals_lock:  # watchdog's own walk of it reports its photos as created, after it
            self._new_folders.pop(folder, None)
            self._new_folders[folder] = None
            while len(self._new_folders) > ARRIVALS:
                self._new_folders.popitem(last=False)
        if moved_in:
            self._folder_arrival(folder)
        unlistable: set[str] = set()
        for path, _ in walk(Path(folder), self.filt, unlistable=unlistable):
            if moved_in:
                self._hold(path)
            else:
                self._arrival(path)
                self._put(path)
        if unlistable:
            self._unlistable(unlistable)

    def _folder_arrival(self, folder: str) -> None:
        """Remember a folder moved in from nowhere, several roots watched, by name; a departure of a
        folder of its name already waiting (:meth:`_folder_left`) is the move to it, queued now,
        before its photos are."""
        name = os.path.basename(folder)
        with self._arrivals_lock:
            left = [src for src in self._leaving_folders.pop(name, []) if src != folder]
            for src in left:
                del self._departed[src]
            self._folders_in.add(folder)
        for src in left:
            self.queue.op(HalfMove(src, folder, is_dir=True))

    def _folder_left(self, src: str) -> None:
        """A folder left its root for nowhere, several roots watched: perhaps for another root
        (``mv ~/Inbox/2026-12-wedding ~/Archive/``).  A folder of its name moved in there since, and
        still there, is where it may be: a :class:`~tagwatch.queue.HalfMove` of the folder, which the
        store's side applies as the move of every photo recorded under it where those it finds at
        the new place have the size and time recorded.  None yet: it waits :data:`DEPARTURE_WAIT`
        for one (:meth:`_depart`), then is the deletion of its photos.  Its photos leave with it: one
        op for the folder, not one per photo, and no pass over them here."""
        with self._arrivals_lock:
            found = self._folders_in.named(os.path.basename(src))
        went = [dst for dst in found if dst != src and self.filt.wanted_dir(dst) and os.path.isdir(dst)
                and not os.path.islink(dst)]
        if went:
            self.queue.op(HalfMove(src, went[0], also=tuple(went[1:]), is_dir=True))
        else:
            self._depart(src, is_dir=True)

    def _in_new_folder(self, path: str) -> bool:
        """Is ``path`` inside a folder made (or moved in) since, which watchdog walks and reports?"""
        folder, parent = os.path.dirname(path), ""
        with self._arrivals_lock:
            while folder != parent:  # up to "/": a look-up a level, never a pass over the folders
                if folder in self._new_folders:
                    return True
                folder, parent = os.path.dirname(folder), folder
        return False

    def _arrival(self, path: str) -> None:
        """Remember a photo found in a new folder, or moved in from nowhere (the latest
        :data:`ARRIVALS` of them, and every one of the last :data:`ARRIVALS_KEPT_S`: of a burst,
        ``mv Inbox/* Archive/`` of 6,000 photos in a second, a count alone forgot the first 1,400
        before their departures came, and they were deletions and new photos).  A departure of its
        name already waiting (:meth:`_depart`) is the move to it, queued now."""
        name = os.path.basename(path)
        with self._arrivals_lock:
            left = [src for src in self._leaving.pop(name, []) if src != path]
            for src in left:
                del self._departed[src]
        for src in left:
            self.queue.op(HalfMove(src, path))
        with self._arrivals_lock:
            self._arrived.add(path)

    def _hold(self, path: str) -> None:
        """Queue ``path``, moved in from nowhere, to be tagged no sooner than :data:`PAIR_DELAY` from
        now, and remember it as an arrival: the photo perhaps left another root, whose observer says
        so later (:class:`_Handler`).  Its other events meanwhile do not shorten the wait
        (:meth:`_put`): where a photo app moves the sidecar too, the sidecar's arrival queues the
        photo, which was then tagged as a new one before its move was known."""
        self._arrival(path)
        now = time.monotonic()
        with self._arrivals_lock:
            while self._held and next(iter(self._held.values())) <= now:  # a burst's: no pass over all
                self._held.popitem(last=False)
            self._held.pop(path, None)
            self._held[path] = now + PAIR_DELAY
        self.queue.put(path, delay=PAIR_DELAY)

    def _depart(self, src: str, is_dir: bool = False) -> None:
        """``src`` left its root for nowhere, several roots are watched, and no arrival of its name
        has been seen: under load the other root's observer can be more than watchdog's 0.5 s behind
        (a burst of 5,000 moves on two busy cores: a fifth of them came before their arrivals and
        were deletions and new photos).  Its deletion waits :data:`DEPARTURE_WAIT` for the arrival
        (:meth:`_arrival` pairs it; a folder's, ``is_dir``, :meth:`_folder_arrival`), then is queued
        by a thread that runs while any wait."""
        name = os.path.basename(src)
        leaving = self._leaving_folders if is_dir else self._leaving
        with self._arrivals_lock:
            if src not in self._departed:
                leaving.setdefault(name, []).append(src)
            self._departed.pop(src, None)
            self._departed[src] = (time.monotonic() + DEPARTURE_WAIT, is_dir)
            if self._flusher is None:
                self._flusher = threading.Thread(target=self._flush_departed, name="tagwatch-departures",
                                                 daemon=True)
                self._flusher.start()

    def _departure_done(self, src: str) -> bool | None:
        """Forget ``src``'s waiting departure (under the lock): None if there was none, else whether
        it was a folder's."""
        found = self._departed.pop(src, None)
        if found is None:
            return None
        is_dir = found[1]
        leaving = self._leaving_folders if is_dir else self._leaving
        name = os.path.basename(src)
        left = [p for p in leaving.get(name, []) if p != src]
        if left:
            leaving[name] = left
        else:
            leaving.pop(name, None)
        return is_dir

    def _flush_departed(self, everything: bool = False) -> None:
        """Queue the deletions of the departures whose wait is over, the soonest first (the deadlines
        are in order: one :data:`DEPARTURE_WAIT` for all); the flusher thread's loop, which ends once
        none wait.  ``everything``: all of them at once, as the watcher stops."""
        while True:
            with self._arrivals_lock:
                now = time.monotonic()
                due = []
                for src, (until, is_dir) in self._departed.items():
                    if not everything and until > now:
                        break
                    due.append((src, is_dir))
                for src, _ in due:
                    self._departure_done(src)
                nxt = next((until for until, _ in self._departed.values()), None)
                if not due and (nxt is None or everything):
                    if not everything:
                        self._flusher = None
                    return
            for src, is_dir in due:
                self.queue.op(Delete(src, is_dir=is_dir))
            if not due and nxt is not None:
                time.sleep(max(0.01, nxt - now))

    def flush(self) -> None:
        """The watcher stops: the departures still waiting for an arrival are deletions now."""
        self._flush_departed(everything=True)

    def _put(self, path: str, delay: float | None = None) -> None:
        """Queue ``path`` as the queue's ``put`` does, but not sooner than a :meth:`_hold` on it ends;
        a departure from ``path`` still waiting (a new photo saved under the name that left) is its
        deletion, queued first."""
        with self._arrivals_lock:  # one look for both, on every event of every photo
            gone, until = self._departure_done(path), self._held.get(path)
        if gone is not None:  # a folder's, where a folder of that name left
            self.queue.op(Delete(path, is_dir=gone))
        if until is not None:
            left = until - time.monotonic()
            if left > 0:
                delay = max(self.queue.settle if delay is None else delay, left)
        self.queue.put(path, delay=delay)

    def _went_to(self, src: str) -> list[str]:
        """Where a photo that left ``src`` for a folder inotify did not watch yet, or for another
        watched root, may be now: the photos of its name found in new folders, or moved in from
        nowhere, since and still there, the latest first (the store's side picks the one with its
        size and time); none if it was moved out of the watched folders, or into a hidden one.  They
        stay remembered: the photo is perhaps another of them."""
        with self._arrivals_lock:
            found = self._arrived.named(os.path.basename(src))
        return [dst for dst in found if dst != src and self.filt.wanted(dst) and os.path.isfile(dst)]

    def _retry_folder(self, folder: str) -> None:
        """A folder's attributes changed (a chmod): its photos that failed for want of permission may
        be taggable now.  They are queued; the pipeline passes over every file with nothing to do."""
        try:
            with os.scandir(folder) as entries:
                paths = [entry.path for entry in entries
                         if entry.is_file(follow_symlinks=False) and self.filt.wanted(entry.path)]
        except OSError:  # still not listable: the watcher looks at it again when it is
            self._unlistable({folder})
            return
        for path in paths:
            self.queue.put(path)

    def _photos_of(self, path: str) -> list[str]:
        """The photos whose sidecar ``path`` may be (a geotagger's edit changes their places): the
        photo for ``photo.jpg.xmp``; for ``photo.xmp``, the photos named ``photo`` with an image
        suffix beside it.  Queued, a photo is read again only if the sidecar changed after its last
        record (:func:`tagwatch.freshness.is_settled`): tagwatch's own sidecar writes come before."""
        if not is_sidecar(path) or _through_link(path):
            return []
        base = path[:-len(SIDECAR_SUFFIX)]
        names = [base] if self.filt.wanted(base) else [
            base + spelled for suffix in sorted(self.filt.suffixes) for spelled in (suffix, suffix.upper())]
        found = []
        for name in names:
            with contextlib.suppress(OSError):
                if stat.S_ISREG(os.lstat(name).st_mode) and self.filt.wanted(name):
                    found.append(name)
        return found

    def _sidecar_gone(self, path: str) -> None:
        """``path`` was deleted (or moved away): if it is a sidecar, its photos are queued, and one
        whose sidecar held tagwatch's keywords has them written again into a new one
        (:func:`tagwatch.shared.sidecar_lost`, asked when the photo is looked at, so a sidecar
        that is there again by then, an app's save by delete and create, or tagwatch's own, is no
        loss).  After :data:`SIDECAR_GONE_DELAY`, for such a save and a move of the photo along
        with its sidecar to be over."""
        for photo in self._photos_of(path):
            self._put(photo, delay=SIDECAR_GONE_DELAY)

    def _dispatch(self, event: FileSystemEvent) -> None:
        src = os.fsdecode(event.src_path or "")  # "" (None in older watchdogs): moved in from outside
        if not isinstance(event, FileDeletedEvent | DirDeletedEvent | FileMovedEvent | DirMovedEvent) and (
                _through_link(src)):
            return  # inside a link to a folder, which watchdog may report as a new folder: not followed
        if isinstance(event, FileCreatedEvent | FileModifiedEvent | FileAttribEvent):
            # An attribute change (chmod) can make a file that failed for want of permission taggable
            if self.filt.wanted(src):
                # watchdog's walk of a new folder says its photos are created: where a move may have gone
                if isinstance(event, FileCreatedEvent) and self._in_new_folder(src):
                    self._arrival(src)
                self._put(src)
            for photo in self._photos_of(src):
                self._put(photo)
        elif isinstance(event, FileClosedEvent):
            if self.filt.wanted(src):
                self._put(src, delay=CLOSED_DELAY)
            for photo in self._photos_of(src):
                self._put(photo, delay=CLOSED_DELAY)
        elif isinstance(event, FileDeletedEvent):
            if self.filt.wanted(src):
                self.queue.op(Delete(src))
            self._sidecar_gone(src)
        elif isinstance(event, DirDeletedEvent):
            self.queue.op(Delete(src, is_dir=True))
        elif isinstance(event, DirCreatedEvent):
            if self.filt.wanted_dir(src):
                self._enqueue_tree(src)
        elif isinstance(event, DirAttribEvent):
            if self.filt.wanted_dir(src):
                self._retry_folder(src)
        elif isinstance(event, FileMovedEvent):
            dst = os.fsdecode(event.dest_path or "")
            src_ok, dst_ok = self.filt.wanted(src), self.filt.wanted(dst)
            if src_ok and dst_ok:
                self.queue.op(Move(src, dst))
            elif src_ok:  # moved out of sight; or (dst "") into a new folder inotify did not watch yet
                went = [] if dst else self._went_to(src)
                if went:
                    self.queue.op(HalfMove(src, went[0], also=tuple(went[1:])))
                elif not dst and len(self.filt.roots) > 1:  # perhaps to another root, not seen yet
                    self._depart(src)
                else:
                    self.queue.op(Delete(src))
            elif dst_ok and not _through_link(dst):  # an atomic save, a file moved in from a hidden
                if not src and len(self.filt.roots) > 1:  # name or (src "") from outside this root's
                    self._hold(dst)  # watch: perhaps from another root, whose half comes later
                else:
                    self._put(dst, delay=CLOSED_DELAY)
            for photo in self._photos_of(dst):  # a sidecar saved atomically (exiftool, digiKam)
                self._put(photo, delay=CLOSED_DELAY)
            if not is_sidecar(dst):  # moved away (to the trash, a backup name); renamed along: not gone
                self._sidecar_gone(src)
        elif isinstance(event, DirMovedEvent):
            self._folder_moved(event, src)

    def _folder_moved(self, event: DirMovedEvent, src: str) -> None:
        """A folder renamed within a root is a move; moved out, the deletion of its photos; moved in,
        they are queued.  Several roots watched, one moved out to nowhere (``dest_path`` "") or in
        from nowhere (``src_path`` "") may be a move from one root to another: its arrival holds its
        photos (:meth:`_enqueue_tree`) and its departure is paired with it (:meth:`_folder_left`).
        watchdog follows a folder's departure with one for each folder watched inside it
        (``is_synthetic``): the top one's op covers them, and they would have been deletions at once.
        A folder deleted outright (DirDeletedEvent) is not paired: inotify reports each of its files
        deleted first (``rm -r`` empties it), and those are deletions."""
        dst = os.fsdecode(event.dest_path or "")
        src_ok, dst_ok = self.filt.wanted_dir(src), self.filt.wanted_dir(dst)
        across = len(self.filt.roots) > 1
        if src_ok and dst_ok:
            self.queue.op(Move(src, dst, is_dir=True))
        elif src_ok and not dst and across:
            if not getattr(event, "is_synthetic", False):
                self._folder_left(src)
        elif src_ok:
            self.queue.op(Delete(src, is_dir=True))
        elif dst_ok and not _through_link(dst):
            self._enqueue_tree(dst, moved_in=not src and across)


class Watcher:
    """One watchdog observer per root, feeding the queue.

    Roots listed in ``poll`` (network mounts: NFS and SMB deliver no inotify events for changes made
    on other machines) get watchdog's polling observer, which compares directory snapshots every
    ``poll_interval`` seconds.  A root that inotify cannot watch (the per-user watch or instance
    limit is reached on a huge tree) falls back to polling too, with the fix in the log.

    A root can go away while the daemon runs: a folder deleted and made again, a drive unplugged, a
    NAS unmounted and mounted again.  watchdog's observer of that root then ends, or watches a folder
    that is no longer there, and says nothing.  :meth:`check` (called every few seconds) notices,
    says so once, and watches the root again as soon as it is back.  A root renamed away and
    replaced by a symbolic link to it (``stat`` still finds the folder watched) is a link on the
    way, never followed while the daemon runs: :meth:`check` says so once and stops watching it,
    and watches it again once a real folder is back at its path.

    A folder inside a root that cannot be listed (chmod 000) cannot be watched either: inotify needs
    to read it.  :meth:`unlistable` is told of it (by a scan, or by an event's walk), and
    :meth:`check` watches its root again and has it scanned once the folder can be listed.
    """

    def __init__(self, roots: Sequence[Path], filt: PathFilter, queue: BatchQueue,
                 poll: Sequence[Path] = (), poll_interval: float = 30.0,
                 observer: Callable[[], BaseObserver] = _observer) -> None:
        self.roots, self.filt, self.queue = list(roots), filt, queue
        self.poll, self.poll_interval = set(poll), poll_interval
        self._make_observer = observer
        self._observers: dict[Path, tuple[BaseObserver, tuple[int, int]]] = {}  # root -> (observer, dev+ino)
        self._missing: set[Path] = set()
        self._awaited: set[Path] = set()  # missing since the start: not yet seen at all
        self._linked: dict[Path, str] = {}  # reached through a link now: root -> where it leads
        self._failed: dict[Path, str] = {}  # there, but neither watched nor polled: root -> why
        self._unlistable: set[str] = set()  # folders inside a root that could not be listed
        self._noted = threading.Lock()  # for that set alone: an event's walk adds to it, and an
        self._lock = threading.Lock()  # observer being stopped under this lock may be in that walk
        self._handler = _Handler(filt, queue, self.unlistable)
        self.polled: list[Path] = []

    def start(self) -> None:
        """Watch every root that is there; one that is not (a drive not plugged in at start) is
        said once and watched by :meth:`check` when it appears."""
        with self._lock:
            for root in self.roots:
                if root.is_dir():
                    target = linked_to(root)
                    if target is None:
                        self._watch(root)
                    else:
                        self._refuse_link(root, target)
                    continue
                self._missing.add(root)
                self._awaited.add(root)
                log.warning("%s: the watched folder does not exist (a drive not plugged in, a share not "
                            "mounted?); it will be watched when it appears", root)

    def _watch(self, root: Path) -> None:
        try:
            st = os.stat(root)
        except OSError as exc:
            log.error("%s: cannot watch: %s", root, exc.strerror or exc)
            self._failed[root] = f"cannot watch it: {exc.strerror or exc}"
            return
        identity = (st.st_dev, st.st_ino)
        if root in self.poll:
            self._poll(root, identity, "polling every {:g} s (poll = true)")
            return
        observer = self._make_observer()
        try:
            observer.schedule(self._handler, str(root), recursive=True, event_filter=EVENTS)
            observer.start()
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EMFILE):
                log.error("%s: the inotify limit is reached (%s); raise it, e.g. `sudo sysctl "
                          "fs.inotify.max_user_watches=524288 fs.inotify.max_user_instances=1024` "
                          "(and in /etc/sysctl.d/ to keep it); until then this folder is polled",
                          root, exc.strerror or exc)
            else:
                log.error("%s: cannot watch: %s; polling it instead", root, exc.strerror or exc)
            with contextlib.suppress(Exception):
                observer.stop()
            self._poll(root, identity, "polling every {:g} s")
            return
        self._observers[root] = (observer, identity)
        self._failed.pop(root, None)
        log.info("watching %s", root)

    def _poll(self, root: Path, identity: tuple[int, int], how: str) -> None:
        # lstat: the snapshot must not follow a folder link (a loop, or a way out of the root; the
        # plain PollingObserver uses os.stat and would walk through it).  Light snapshots: watchdog's
        # PollingObserverVFS held ~960 bytes per file and diffed every path each poll (tagwatch.polling)
        observer = LightPollingObserver(polling_interval=self.poll_interval)
        try:
            observer.schedule(self._handler, str(root), recursive=True, event_filter=EVENTS)
            observer.start()
        except OSError as exc:
            log.error("%s: cannot poll: %s; only the periodic rescan will see it", root, exc.strerror or exc)
            self._failed[root] = (f"cannot watch or poll it ({exc.strerror or exc}); only the periodic "
                                  "rescan sees its photos")
            return
        self._observers[root] = (observer, identity)
        self._failed.pop(root, None)
        if root not in self.polled:
            self.polled.append(root)
        log.info("watching %s: %s", root, how.format(self.poll_interval))

    def unlistable(self, folders: set[str]) -> None:
        """``folders`` could not be listed: their photos keep their records, and :meth:`check` has
        them watched and scanned once they can be listed."""
        with self._noted:
            new = folders - self._unlistable
            self._unlistable |= folders
        for folder in sorted(new):
            log.info("%s: its photos keep their records as they are; it is watched and scanned once it "
                     "can be listed", folder)

    def _listable_again(self) -> list[Path]:
        """The roots holding a folder that could not be listed and now can (a chmod); watched again
        here (inotify could not watch the folder, and does not add it by itself)."""
        roots: list[Path] = []
        with self._noted:
            folders = sorted(self._unlistable)
        for folder in folders:
            try:
                with os.scandir(folder):
                    pass
            except FileNotFoundError:  # gone: its deletion is reported as such
                pass
            except OSError:
                continue
            with self._noted:
                self._unlistable.discard(folder)
            if not os.path.isdir(folder):
                continue
            root = next((r for r in sorted(self.roots, key=lambda r: len(str(r)), reverse=True)
                         if folder == str(r) or folder.startswith(str(r).rstrip("/") + "/")), None)
            if root is None or root in self._missing or root in self._linked:
                continue
            log.info("%s: the folder can be listed now; watching it and scanning %s", folder, root)
            if root not in roots:
                self._stop(root)
                self._watch(root)
                roots.append(root)
        return roots

    def check(self) -> list[Path]:
        """Look at every root: one that is gone is reported once; one that is back, or that is now
        another folder or file system (deleted and made again, remounted), or whose observer ended,
        is watched again; so is one holding a folder that can be listed now.  Returns those, which
        the caller scans for what changed meanwhile."""
        back: list[Path] = []
        with self._lock:
            back += self._listable_again()
            for root in self.roots:
                try:
                    st = os.stat(root)
                    here = stat.S_ISDIR(st.st_mode)
                except OSError:
                    here = False
                watching = self._observers.get(root)
                if not here:
                    self._linked.pop(root, None)
                    if root not in self._missing:
                        self._missing.add(root)
                        log.warning("%s: the watched folder is gone (deleted, or its drive unplugged or "
                                    "unmounted); watching for it to come back", root)
                        self._stop(root)
                    continue
                target = linked_to(root)
                if target is not None:
                    self._refuse_link(root, target)
                    continue
                self._linked.pop(root, None)
                if watching is not None and watching[1] == (st.st_dev, st.st_ino) and all(
                        emitter.is_alive() for emitter in watching[0].emitters):
                    continue
                self._stop(root)
                self._missing.discard(root)
                self._watch(root)
                if root in self._awaited:
                    self._awaited.discard(root)
                    log.warning("%s: the watched folder has appeared; watching it and scanning it", root)
                else:
                    log.warning("%s: the watched folder is back (or another folder or file system is "
                                "there now); watching it again and scanning it", root)
                back.append(root)
        return back

    def unwatched(self) -> dict[str, str]:
        """The roots not watched now, each with why, for `tagwatch status`: a folder missing, reached
        through a link, or that inotify and polling both refused was said only in the log, and status
        said "watching 1 folder" of it.  Read without the lock (copies of a set and dicts): a status
        snapshot never waits for an observer being stopped."""
        gone = {str(root): "not there (a drive not plugged in, a share not mounted?); it is watched when "
                "it appears" for root in set(self._missing)}
        linked = {str(root): f"reached through a symbolic link (it leads to {target}), not followed while "
                  "tagwatch runs; restart tagwatch to watch the folder it leads to, or put the folder back"
                  for root, target in dict(self._linked).items()}
        failed = {str(root): why for root, why in dict(self._failed).items()}
        return failed | gone | linked

    def _refuse_link(self, root: Path, target: str) -> None:
        """``root`` is reached through a symbolic link now: its observer is stopped and one line says
        why, once per place it leads to.  Links are never followed while the daemon runs (its paths
        would no longer be the photos' real ones, which every record and the pipeline check); a
        restart watches the folder the link leads to, as for a link named in the config."""
        if self._linked.get(root) == target:
            return
        self._linked[root] = target
        self._missing.discard(root)  # a link that goes later is news again
        self._stop(root)
        log.warning("%s: the watched folder is now a symbolic link, or reached through one (it leads to "
                    "%s); links are not followed while tagwatch runs, so it is not watched, and its photos "
                    "keep their records: restart tagwatch to watch the folder the link leads to, or put "
                    "the folder back", root, target)

    def _stop(self, root: Path) -> None:
        watching = self._observers.pop(root, None)
        if watching is not None:
            watching[0].stop()
            watching[0].join(timeout=10)

    def stop(self) -> None:
        with self._lock:
            for observer, _ in self._observers.values():
                observer.stop()
            for observer, _ in self._observers.values():
                observer.join(timeout=10)
            self._observers.clear()
        self._handler.flush()
