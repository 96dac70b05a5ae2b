"""One long-lived ``exiftool -stay_open`` process and the argument protocol to talk to it.

Starting exiftool costs ~100 ms of Perl start-up; a command to a running process costs ~5 ms, so the
daemon keeps one process for its whole life and restarts it only if it dies.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import queue
import re
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .retry import EXIFTOOL_ENDED, EXIFTOOL_HUNG, TransientError, killed_by

log = logging.getLogger(__name__)

# What a machine without exiftool is told, naming each system's package
NOT_FOUND = ("exiftool not found on PATH; install it (Debian/Ubuntu: sudo apt install "
             "libimage-exiftool-perl; Fedora: sudo dnf install perl-Image-ExifTool; "
             "Arch: sudo pacman -S perl-image-exiftool; macOS: brew install exiftool)")


class MetadataError(RuntimeError):
    """Reading or writing a file's metadata failed; the message is the reason."""


class FileChanged(MetadataError):
    """The file changed while we were writing it; our copy was discarded and nothing was replaced."""


class StorageError(MetadataError, TransientError):
    """The disk or the network failed the write (full, over quota, I/O error); nothing was replaced,
    and the same write is worth trying again later."""


class ExifToolFault(StorageError):
    """The exiftool process itself failed on a command: killed (the OOM killer, a person), crashed, or
    silent past the timeout (a stuck NAS).  A fault of the machine, not of the photo, so the photo
    waits and is tried again with a fresh exiftool; a photo that kills it every time is told apart
    by the worker (see :data:`tagwatch.retry.EXIFTOOL_TRIES`).  It was a plain MetadataError, which
    marked the photo failed for good (xQ #2)."""


class _NoAnswer(MetadataError):
    """exiftool said nothing within the timeout."""


# Say once that exiftool has gone quiet this long into a command, well before the timeout ends it:
# a stuck share was 120 s of silence, with nothing in the log and `status` showing nothing waiting
SILENT_NOTICE_S = 10.0


def _argline(arg: str) -> str:
    """One argument as a line of exiftool's ``-@`` argfile protocol."""
    if "\n" not in arg and "\r" not in arg:
        if arg != arg.lstrip():
            raise MetadataError(f"argument {arg!r} starts with white space, which exiftool would drop")
        if arg == arg.rstrip():
            return arg
        # exiftool trims each argument line; a C-string line keeps trailing blanks (a field that held
        # " " before tagwatch filled it gets " " back)
    if "$" in arg or "@" in arg:  # exiftool's #[CSTR] lines mangle these two characters
        raise MetadataError(f"{arg!r}: a line break or trailing blank together with '$' or '@' cannot be "
                            "passed to exiftool")
    escaped = arg.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    return f"#[CSTR]{escaped}"


# What exiftool reads as a format code in an output file name (exiftool's FilenameSPrintf and
# NextUnusedFilename): it has no escape for a literal '%'.
_FORMAT_CODE = re.compile(r"%[-+]?\d*[.:]?\d*[lun]?[dDfFeEtgsocC]")

_PR_SET_PDEATHSIG = 1


def _death_signal_setter() -> Any:
    """``prctl(PR_SET_PDEATHSIG, SIGKILL)`` for the forked child, resolved before any fork.

    ``exiftool -stay_open`` keeps polling its argument file after end of input, so a daemon killed
    with SIGKILL (or by the OOM killer) would leave it running for ever; Linux can kill it for us.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def set_death_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the line above: nobody will read us
            os._exit(1)

    return set_death_signal


class _Spawner:
    """Starts child processes from one thread that lives as long as the process.

    Linux sends the parent-death signal when the *thread* that forked the child ends, not the
    process; exiftool is often first needed on a short-lived thread (a decode pool, a CLI call).
    """

    def __init__(self) -> None:
        self._requests: queue.SimpleQueue[tuple[list[str], Future[subprocess.Popen[bytes]]]]
        self._requests = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def popen(self, args: list[str]) -> subprocess.Popen[bytes]:
        with self._lock:
            if self._thread is None or not self._thread.is_alive() or self._pid != os.getpid():
                self._requests, self._pid = queue.SimpleQueue(), os.getpid()  # fresh after a fork
                self._thread = threading.Thread(target=self._serve, args=(self._requests,),
                                                name="tagwatch-spawner", daemon=True)
                self._thread.start()
            done: Future[subprocess.Popen[bytes]] = Future()
            self._requests.put((args, done))
        return done.result()

    @staticmethod
    def _serve(requests: queue.SimpleQueue[tuple[list[str], Future[subprocess.Popen[bytes]]]]) -> None:
        while True:
            args, done = requests.get()
            try:
                done.set_result(subprocess.Popen(
                    args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    preexec_fn=_death_signal_setter()))  # prctl only: fork-safe
            except BaseException as exc:  # handed to the caller
                done.set_exception(exc)


_spawner = _Spawner()


def _how_it_ended(proc: subprocess.Popen[bytes]) -> str:
    """How exiftool ended, for the log: a closed pipe comes a moment before the exit is seen."""
    try:
        code = proc.wait(timeout=1.0)
    except subprocess.TimeoutExpired:
        return "its pipes closed"
    if code < 0:
        return killed_by(-code)
    return f"exit status {code}"


class ExifTool:
    """One ``exiftool -stay_open`` process, started on first use and restarted if it dies.

    Starting exiftool costs ~100 ms of Perl start-up; a command to a running process costs ~5 ms.
    """

    def __init__(self, executable: str = "exiftool", timeout: float = 120.0,
                 notice: float = SILENT_NOTICE_S) -> None:
        self.executable = executable
        self.timeout = timeout
        self.notice = notice  # seconds of silence before one line says exiftool is not answering
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._seq = 0

    @property
    def pid(self) -> int | None:
        """The running exiftool's process id (None before the first command or after close)."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def _start(self) -> subprocess.Popen[bytes]:
        exe = shutil.which(self.executable)
        if exe is None:
            raise MetadataError(NOT_FOUND)
        return _spawner.popen([exe, "-stay_open", "True", "-@", "-"])

    def execute(self, *args: str) -> tuple[str, str]:
        """Run one exiftool command; returns its (stdout, stderr) text."""
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._proc = self._start()
            proc = self._proc
            self._seq += 1
            marker = f"{{ready{self._seq}}}"
            lines = [_argline(a) for a in args] + ["-echo4", marker, f"-execute{self._seq}"]
            try:
                assert proc.stdin is not None
                proc.stdin.write(("\n".join(lines) + "\n").encode("utf-8"))
                proc.stdin.flush()
                out, err = self._collect(proc, marker.encode(), args[-1] if args else "")
            except _NoAnswer:
                self._kill()
                raise ExifToolFault(f"exiftool failed: {EXIFTOOL_HUNG} {self.timeout:.0f} s; it was "
                                    "stopped and a new one starts for the next try") from None
            except (OSError, MetadataError):  # its pipes closed, or broke: it ended under us
                how = _how_it_ended(proc)
                self._kill()
                raise ExifToolFault(f"exiftool failed: {EXIFTOOL_ENDED} ({how})") from None
            return out.decode("utf-8", "replace"), err.decode("utf-8", "replace")

    @contextmanager
    def output(self, path: Path) -> Iterator[str]:
        """``path`` spelled so that exiftool's ``-o`` writes exactly there.

        exiftool expands ``%d``, ``%f``, ``%e``, ``%c``... in an output name and has no escape for a
        literal ``%``; a folder named ``100%d`` would make it create another folder.  Such a path
        goes through a symbolic link to the folder, made for the call in a private temporary folder.
        """
        if not _FORMAT_CODE.search(str(path)):
            yield str(path)
            return
        links = Path(tempfile.mkdtemp(prefix="tagwatch-exiftool-"))
        if _FORMAT_CODE.search(str(links)):
            links.rmdir()
            raise MetadataError(f"the folder name has '%' codes exiftool expands, and so has {links}")
        try:
            (links / "d").symlink_to(path.parent.absolute(), target_is_directory=True)
            yield f"{links}/d/{path.name}"
        finally:
            (links / "d").unlink(missing_ok=True)
            links.rmdir()

    def _collect(self, proc: subprocess.Popen[bytes], marker: bytes, about: str) -> tuple[bytes, bytes]:
        """The command's answer up to ``marker``; one line if it is silent for :attr:`notice`
        seconds (``about``: the file it works on, for that line)."""
        assert proc.stdout is not None and proc.stderr is not None
        buffers = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray()}
        pending = set(buffers)
        start = time.monotonic()
        deadline, notice = start + self.timeout, start + self.notice
        with selectors.DefaultSelector() as selector:
            for fd in buffers:
                selector.register(fd, selectors.EVENT_READ)
            while pending:
                now = time.monotonic()
                if now >= deadline:
                    raise _NoAnswer(f"no answer within {self.timeout:.0f} s")
                if notice <= now:
                    notice = deadline
                    log.warning("exiftool has not answered for %.0f s (working on %s): photos wait for it; "
                                "a stuck network share? It is stopped and started again at %.0f s",
                                now - start, about, self.timeout,
                                extra={"event": "retrying", "path": about,
                                       "reason": "exiftool not answering"})
                for key, _ in selector.select(min(deadline, notice) - now):
                    chunk = os.read(key.fd, 1 << 16)
                    if not chunk:
                        raise MetadataError("the exiftool process ended unexpectedly")
                    buffers[key.fd] += chunk
                    if key.fd in pending and buffers[key.fd].rstrip().endswith(marker):
                        pending.discard(key.fd)
                        selector.unregister(key.fd)
        out = bytes(buffers[proc.stdout.fileno()]).rstrip()
        err = bytes(buffers[proc.stderr.fileno()]).rstrip()
        return out[: -len(marker)], err[: -len(marker)]

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    def close(self) -> None:
        """Ask exiftool to exit (it finishes the command in hand first)."""
        with self._lock:
            proc, self._proc = self._proc, None
            if proc is None or proc.poll() is not None:
                return
            try:
                assert proc.stdin is not None
                proc.stdin.write(b"-stay_open\nFalse\n")
                proc.stdin.close()
                proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()
