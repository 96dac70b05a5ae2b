"""Polling a root (a NAS share: ``poll = true``) at a fraction of watchdog's memory and CPU.

watchdog's ``PollingObserverVFS`` keeps, per poll, a ``DirectorySnapshot`` holding a full
``os.stat_result`` for every path, a second map from inode to path and a third of birth times: about
960 bytes per entry, 194 MB for a library of 200,000 photos, twice that while a poll holds the old
snapshot and the new one.  Its diff then goes through every path of both snapshots, several method
calls each: at 200,000 files, 1.5 CPU-seconds for the snapshot and 1.2 for the diff, every poll,
nearly always of a tree where nothing changed (docs/speed.md, "A polled NAS of 200,000 photos").

Here each path keeps one packed record of what the diff reads (inode and device, mode, size, mtime,
owner, flags, birth time): ~230 bytes per entry.  Diffing first compares the records byte for byte;
an idle poll ends there.  What did change (with every path sharing an inode with it: hard links)
is handed to watchdog's own ``DirectorySnapshotDiff`` as two small snapshots, so created, deleted,
modified and moved (paired by inode, a recycled inode told apart by its birth time) are decided by
watchdog's code, exactly as before.  The walk is watchdog's too (``DirectorySnapshot.walk``: links
not followed, a folder gone mid-walk counted as empty), given a ``stat`` that makes one statx(2)
call per path where watchdog makes two.

Hand-written, and why: watchdog's snapshot has no way to keep less per path, and its emitter names
its snapshot and diff classes inside ``queue_events``; both are subclassed here, the emitter's loop
written again step for step (:class:`LightPollingEmitter`).
"""

from __future__ import annotations

import ctypes
import logging
import os
import struct
import sys
import threading
import time
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

log = logging.getLogger(__name__)
_clock = time.monotonic  # a test's stand-in makes a poll look slow

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


def _stat(path: str, follow: bool) -> Stat:
    """``os.lstat`` (``os.stat`` if ``follow``) and the birth time watchdog reads with statx."""
    st = os.stat(path) if follow else os.lstat(path)
    flags = getattr(st, "st_flags", 0) | getattr(st, "st_file_attributes", 0) << 32
    return Stat(st.st_ino, st.st_dev, st.st_mtime, st.st_size, st.st_mode, st.st_uid, st.st_gid, flags,
                get_statx_birthtime_ns(path, follow_symlinks=follow))


# Linux statx(2): <linux/stat.h>'s struct statx up to stx_dev_minor.  mask, blksize, attributes, nlink,
# uid, gid, mode, ino, size, blocks, attributes_mask, (atime), btime s + ns, (ctime), mtime s + ns,
# rdev major + minor, dev major + minor
_STATX = struct.Struct("=IIQIIIH2xQQQQ16xqI4x16xqI4xIIII")
_STATX_NEEDED = 0x1 | 0x2 | 0x8 | 0x10 | 0x40 | 0x100 | 0x200  # type, mode, uid, gid, mtime, ino, size
_STATX_BTIME = 0x800
_AT_FDCWD, _AT_SYMLINK_NOFOLLOW = -100, 0x100


def _libc_statx() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        call = ctypes.CDLL(None, use_errno=True).statx
    except (AttributeError, OSError):  # glibc before 2.28, musl before 1.2.5
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p]
    call.restype = ctypes.c_int
    return call  # type: ignore[no-any-return]


_statx = _libc_statx()
_buffers = threading.local()


def lstat_statx(path: str) -> Stat:
    """``os.lstat`` and the birth time in one statx(2) call, where watchdog makes two (lstat, then its
    own statx for the birth time alone): on 200,000 files, the birth time's call was half the
    snapshot's CPU.  The fields are those os.lstat gives (``st_mtime`` the same float, ``st_dev`` made
    of major and minor by ``os.makedev``); without statx, or for a field the file system left out
    of the answer, it is :func:`_stat`'s two calls."""
    if _statx is None:
        return _stat(path, False)
    buffer = getattr(_buffers, "buffer", None)
    if buffer is None:
        buffer = _buffers.buffer = ctypes.create_string_buffer(256)
    if _statx(_AT_FDCWD, os.fsencode(path), _AT_SYMLINK_NOFOLLOW, 0x7FF | _STATX_BTIME, buffer) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), path)  # FileNotFoundError for ENOENT, as lstat's
    (mask, _, _, _, uid, gid, mode, ino, size, _, _, btime_s, btime_ns, mtime_s, mtime_ns,
     _, _, dev_major, dev_minor) = _STATX.unpack_from(buffer)
    if mask & _STATX_NEEDED != _STATX_NEEDED:
        return _stat(path, False)
    btime = btime_s * 1_000_000_000 + btime_ns if mask & _STATX_BTIME else None
    return Stat(ino, os.makedev(dev_major, dev_minor), mtime_s + mtime_ns * 1e-9, size, mode, uid, gid, 0,
                btime)


def _record(st: Stat) -> bytes:
    btime = st.st_birthtime_ns
    return _RECORD.pack(*st[:8], btime or 0, btime is not None)


class LightSnapshot(DirectorySnapshot):
    """A ``DirectorySnapshot`` of one packed record per path, without the inode map (made only when
    asked: a small snapshot of what changed asks).  Walks like watchdog's; ``stat`` (a function
    returning a :class:`Stat`) is :func:`lstat_statx` by default: a folder link is not followed (a
    loop, or a way out of the root)."""

    def __init__(self, path: str, *, recursive: bool = True, stat: Callable[[str], Stat] = lstat_statx,
                 listdir: Callable[[str | None], Iterator[os.DirEntry[str]]] = os.scandir) -> None:
        self.recursive, self.stat, self.listdir = recursive, stat, listdir  # type: ignore[assignment]
        self._records: dict[str, bytes] = {}
        self._by_inode: dict[tuple[int, int], str] | None = None
        if not path:  # an empty snapshot (LightSnapshot.of)
            return
        # each birth time is read as the path is found (statx reads the live path, gone by the diff)
        self._records[path] = _record(stat(path))
        for p, st in self.walk(path):
            self._records[p] = _record(st)  # type: ignore[arg-type]

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
    the next poll tries again from the last snapshot, then the events in watchdog's order.

    One thing is added: a poll that takes longer than the interval (a share answering slowly: each
    file's stat is a round trip once the client's attribute cache expired) is said once, with the
    fix.  The next poll waits the interval after this one ends, so such a root is polled without
    pause, and the share and the daemon get no rest between polls."""

    def __init__(self, event_queue: EventQueue, watch: ObservedWatch, *,
                 timeout: float = DEFAULT_EMITTER_TIMEOUT,
                 event_filter: list[type[FileSystemEvent]] | None = None) -> None:
        super().__init__(event_queue, watch, timeout=timeout, event_filter=event_filter)
        self._snapshot = LightSnapshot("")
        self._lock = threading.Lock()
        self._snapshot_failing = False
        self._said_slow = False

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
            started = _clock()
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
            took = _clock() - started
            if took > self.timeout and not self._said_slow:
                self._said_slow = True
                log.warning("%s: one poll of its %d files and folders took %.0f s, longer than "
                            "poll_interval (%g s): it is polled without a pause; a longer poll_interval "
                            "gives the share and the daemon a rest", self.watch.path, len(new_snapshot),
                            took, self.timeout)
            for name, event_class in _EVENTS:
                for change in getattr(events, name):
                    event = event_class(*change) if isinstance(change, tuple) else event_class(change)
                    self.queue_event(event)


class LightPollingObserver(BaseObserver):
    """``PollingObserverVFS(os.lstat, os.scandir, polling_interval=...)`` with light snapshots."""

    def __init__(self, polling_interval: float = 30.0) -> None:
        super().__init__(LightPollingEmitter, timeout=polling_interval)  # type: ignore[arg-type]
