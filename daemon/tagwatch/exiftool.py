"""One long-lived ``exiftool -stay_open`` process and the argument protocol to talk to it.

Starting exiftool costs ~100 ms of Perl start-up; a command to a running process costs ~5 ms, so the
daemon keeps one process for its whole life and restarts it only if it dies.
"""

from __future__ import annotations

import os
import selectors
import shutil
import subprocess
import threading
import time


class MetadataError(RuntimeError):
    """Reading or writing a file's metadata failed; the message is the reason."""


class FileChanged(MetadataError):
    """The file changed while we were writing it; our copy was discarded and nothing was replaced."""


def _argline(arg: str) -> str:
    """One argument as a line of exiftool's ``-@`` argfile protocol."""
    if "\n" not in arg and "\r" not in arg:
        if arg != arg.lstrip():
            raise MetadataError(f"argument {arg!r} starts with white space, which exiftool would drop")
        return arg
    if "$" in arg or "@" in arg:  # exiftool's #[CSTR] lines mangle these two characters
        raise MetadataError(f"{arg!r}: a line break together with '$' or '@' cannot be passed to exiftool")
    escaped = arg.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    return f"#[CSTR]{escaped}"


class ExifTool:
    """One ``exiftool -stay_open`` process, started on first use and restarted if it dies.

    Starting exiftool costs ~100 ms of Perl start-up; a command to a running process costs ~5 ms.
    """

    def __init__(self, executable: str = "exiftool", timeout: float = 120.0) -> None:
        self.executable = executable
        self.timeout = timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._seq = 0

    def _start(self) -> subprocess.Popen[bytes]:
        exe = shutil.which(self.executable)
        if exe is None:
            raise MetadataError(
                "exiftool not found: install it (Debian/Ubuntu: apt-get install libimage-exiftool-perl; "
                "macOS: brew install exiftool)")
        return subprocess.Popen([exe, "-stay_open", "True", "-@", "-"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

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
                out, err = self._collect(proc, marker.encode())
            except (OSError, MetadataError) as exc:
                self._kill()
                raise MetadataError(f"exiftool failed: {exc}") from None
            return out.decode("utf-8", "replace"), err.decode("utf-8", "replace")

    def _collect(self, proc: subprocess.Popen[bytes], marker: bytes) -> tuple[bytes, bytes]:
        assert proc.stdout is not None and proc.stderr is not None
        buffers = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray()}
        pending = set(buffers)
        deadline = time.monotonic() + self.timeout
        with selectors.DefaultSelector() as selector:
            for fd in buffers:
                selector.register(fd, selectors.EVENT_READ)
            while pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise MetadataError(f"no answer within {self.timeout:.0f} s")
                for key, _ in selector.select(remaining):
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
