"""Polling a root (a NAS share: ``poll = true``) at a fraction of watchdog's memory and CPU.

watchdog's ``PollingObserverVFS`` keeps, per poll, a ``DirectorySnapshot`` holding a full
``os.stat_result`` for every path, a second map from inode to path and a third of birth times: about
960 bytes per entry, 194 MB for a library of 200,000 photos, twice that while a poll holds the old
snapshot and the new one.  Its diff then walks every path of both snapshots through several method
calls each: on the 200,000 files of docs/speed.md, 1.7 CPU-seconds for the snapshot and 1.4 for
the diff, every poll, most of them for a tree where nothing changed.

Here each path keeps one packed record of what the diff reads (inode and device, mode, size, mtime,
owner, flags, birth time): ~250 bytes per entry.  Diffing first compares the records byte for byte;
an idle poll ends there.  What did change (with every path sharing an inode with it: hard links)
is handed to watchdog's own ``DirectorySnapshotDiff`` as two small snapshots, so created, deleted,
modified and moved (paired by inode, a recycled inode told apart by its birth time) are decided by
watchdog's code, exactly as before.  The walk is watchdog's too (``DirectorySnapshot.walk``: lstat,
a folder gone mid-walk counted as empty).
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Callable, Iterable, Iterator
from stat import S_ISDIR
from typing import NamedTuple

from watchdog.events import (
    DirAttribEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirModifiedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
)
from watchdog.observers.api import (
    DEFAULT_EMITTER_TIMEOUT,
    BaseObserver,
    EventEmitter,
    EventQueue,
    ObservedWatch,
)
from watchdog.observers.polling import logger as watchdog_logger
from watchdog.utils.dirsnapshot import DirectorySnapshot, DirectorySnapshotDiff
from watchdog.utils.statx import get_statx_birthtime_ns

# inode, device, mtime (the float watchdog compares), size, mode, uid, gid, flags (BSD st_flags and
# Windows st_file_attributes), birth time in ns, whether there is one
_RECORD = struct.Struct("=QQdqIIIQq?")


class Stat(NamedTuple):
    """The fields of an ``os.stat_result`` a record keeps, under the same names (what watchdog's
    ``DirectorySnapshotDiff.is_attrib_modified`` reads with getattr)."""

    st_ino: int
    st_dev: int
    st_mtime: float
    st_size: int
    st_mode: int
    st_uid: int
    st_gid: int
    st_flags: int
    st_birthtime_ns: int | None


def _record(st: os.stat_result, btime: int | None) -> bytes:
    flags = getattr(st, "st_flags", 0) | getattr(st, "st_file_attributes", 0) << 32
    return _RECORD.pack(st.st_ino, st.st_dev, st.st_mtime, st.st_size, st.st_mode, st.st_uid, st.st_gid,
                        flags, btime or 0, btime is not None)


class LightSnapshot(DirectorySnapshot):
    """A ``DirectorySnapshot`` of one packed record per path, without the inode map (made only when
    asked: a small snapshot of what changed asks).  Walks like watchdog's, with ``os.lstat`` by
    default: a folder link is not followed (a loop, or a way out of the root)."""

    def __init__(self, path: str, *, recursive: bool = True, stat: Callable[[str], os.stat_result] = os.lstat,
                 listdir: Callable[[str | None], Iterator[os.DirEntry[str]]] = os.scandir) -> None:
        self.recursive, self.stat, self.listdir = recursive, stat, listdir
        follow = stat is os.stat
        self._records: dict[str, bytes] = {}
        self._by_inode: dict[tuple[int, int], str] | None = None
        if not path:  # an empty snapshot (LightSnapshot.of)
            return
        # each birth time is read as the path is found: statx reads the live path, gone by the diff
        st = stat(path)
        self._records[path] = _record(st, get_statx_birthtime_ns(path, follow_symlinks=follow))
        for p, st in self.walk(path):
            self._records[p] = _record(st, get_statx_birthtime_ns(p, follow_symlinks=follow))

    @classmethod
    def of(cls, records: Iterable[tuple[str, bytes]]) -> LightSnapshot:
        """A snapshot of the given records (in the order the walk found them)."""
        snapshot = cls("")
        snapshot._records = dict(records)
        return snapshot

    def __len__(self) -> int:
        return len(self._records)

    @property
    def paths(self) -> set[bytes | str]:
        return set(self._records)

    def path(self, uid: tuple[int, int]) -> str | None:
        if self._by_inode is None:  # as watchdog's: the last path walked with that inode
            self._by_inode = {}
            for p, record in self._records.items():
                ino, dev = _RECORD.unpack_from(record)[:2]
                self._by_inode[ino, dev] = p
        return self._by_inode.get(uid)

    def stat_info(self, path: bytes | str) -> Stat:  # type: ignore[override]
        fields = _RECORD.unpack(self._records[path])  # type: ignore[index]
        return Stat(*fields[:8], fields[8] if fields[9] else None)

    def inode(self, path: bytes | str) -> tuple[int, int]:
        ino, dev = _RECORD.unpack_from(self._records[path])[:2]  # type: ignore[index]
        return ino, dev

    def isdir(self, path: bytes | str) -> bool:
        return S_ISDIR(self.stat_info(path).st_mode)

    def mtime(self, path: bytes | str) -> float:
        return self.stat_info(path).st_mtime

    def size(self, path: bytes | str) -> int:
        return self.stat_info(path).st_size

    def mode(self, path: bytes | str) -> int:
        return self.stat_info(path).st_mode

    def birthtime(self, path: bytes | str) -> int | None:
        record = self._records.get(path)  # type: ignore[call-overload]
        return None if record is None else self.stat_info(path).st_birthtime_ns

    def __repr__(self) -> str:
        return f"<LightSnapshot of {len(self._records)} paths>"


def light_diff(ref: LightSnapshot, snapshot: LightSnapshot) -> DirectorySnapshotDiff:
    """watchdog's diff of ``ref`` and ``snapshot``, computed on the paths whose records differ alone.

    A path not among them has the same inode, type, birth time, size, mtime and attributes in both:
    watchdog's diff reports nothing of it, except through the inode lookups that pair moves, which
    is why every path sharing an inode with a changed one goes along (a hard link: watchdog checks
    the other name is not simply still there)."""
    old, new = ref._records, snapshot._records
    changed = {p for p, record in old.items() if new.get(p) != record}
    changed.update(p for p in new if p not in old)
    if changed:
        inodes = ({ref.inode(p) for p in changed if p in old}
                  | {snapshot.inode(p) for p in changed if p in new})
        for records, snap in ((old, ref), (new, snapshot)):
            changed.update(p for p in records if p not in changed and snap.inode(p) in inodes)
    return DirectorySnapshotDiff(LightSnapshot.of((p, r) for p, r in old.items() if p in changed),
                                 LightSnapshot.of((p, r) for p, r in new.items() if p in changed))


_EVENTS: tuple[tuple[str, type[FileSystemEvent]], ...] = (
    ("files_deleted", FileDeletedEvent), ("files_modified", FileModifiedEvent),
    ("files_created", FileCreatedEvent), ("files_moved", FileMovedEvent), ("files_attrib", FileAttribEvent),
    ("dirs_deleted", DirDeletedEvent), ("dirs_modified", DirModifiedEvent), ("dirs_created", DirCreatedEvent),
    ("dirs_moved", DirMovedEvent), ("dirs_attrib", DirAttribEvent),
)


class LightPollingEmitter(EventEmitter):
    """watchdog's ``PollingEmitter`` with light snapshots.  Its ``queue_events`` names
    ``DirectorySnapshot`` and ``DirectorySnapshotDiff`` inside itself (no hook to pass others), so
    it is written again here, the same steps in the same order: wait the interval, snapshot, a root
    gone (``FileNotFoundError``, ``NotADirectoryError``) is a ``DirDeletedEvent`` and the end of
    this emitter, another ``OSError`` (a share briefly unreachable: EIO, ESTALE) is said once and
    the next poll tries again from the last snapshot, then the events in watchdog's order."""

    def __init__(self, event_queue: EventQueue, watch: ObservedWatch, *,
                 timeout: float = DEFAULT_EMITTER_TIMEOUT,
                 event_filter: list[type[FileSystemEvent]] | None = None) -> None:
        super().__init__(event_queue, watch, timeout=timeout, event_filter=event_filter)
        self._snapshot = LightSnapshot("")
        self._lock = threading.Lock()
        self._snapshot_failing = False

    def _take_snapshot(self) -> LightSnapshot:
        return LightSnapshot(self.watch.path, recursive=self.watch.is_recursive)

    def on_thread_start(self) -> None:
        self._snapshot = self._take_snapshot()

    def queue_events(self, timeout: float) -> None:
        if self.stopped_event.wait(timeout):
            return
        with self._lock:
            if not self.should_keep_running():
                return
            try:
                new_snapshot = self._take_snapshot()
            except (FileNotFoundError, NotADirectoryError):
                self.queue_event(DirDeletedEvent(self.watch.path))
                self.stop()
                return
            except OSError as exc:
                if not self._snapshot_failing:
                    self._snapshot_failing = True
                    watchdog_logger.warning("Cannot take a snapshot of %r, will retry: %s",
                                            self.watch.path, exc)
                return
            if self._snapshot_failing:
                self._snapshot_failing = False
                watchdog_logger.info("Snapshot of %r succeeded again, resuming", self.watch.path)
            events = light_diff(self._snapshot, new_snapshot)
            self._snapshot = new_snapshot
            for name, event_class in _EVENTS:
                for change in getattr(events, name):
                    event = event_class(*change) if isinstance(change, tuple) else event_class(change)
                    self.queue_event(event)


class LightPollingObserver(BaseObserver):
    """``PollingObserverVFS(os.lstat, os.scandir, polling_interval=...)`` with light snapshots."""

    def __init__(self, polling_interval: float = 30.0) -> None:
        super().__init__(LightPollingEmitter, timeout=polling_interval)  # type: ignore[arg-type]
