"""The model's child process: its command, and its start before the ``tagwatch`` command's imports.

``tagwatch scan`` and ``tagwatch run`` need the child (:mod:`tagwatch.encoder`) within their first
half second, and until then the command's own start (Python, then importing tagwatch: one thread,
~0.3 s) leaves the second core idle.  The entry point (:mod:`tagwatch.__main__`) calls
:func:`start_early` before anything else is imported, so the child's imports (numpy and its own
modules: ~0.2 CPU-seconds) run on that core; the first :class:`~tagwatch.encoder.EncoderProcess` takes it
(:func:`child`) and sends it the model to load as before.  Cold runs of 60 photos of 12 MP, the two
builds alternating (2-core AMD EPYC, 2026-12-03): a scan 0.10 s sooner on average (17 of 26 pairs
faster), the daemon 0.21 s (5 of 8); docs/speed.md has the figures.

The child is also told the command's config file (:data:`AHEAD_FLAG`): where that file's model has
its ONNX Runtime tower kept ready, the child loads it right after its imports (~0.35 s of that core),
while the command is still importing, and the command's load request finds it loaded if it asks for
the same model (:class:`tagwatch.encoder._Server`); otherwise it is dropped and the request loads.

Only those two commands start it, never for ``--help``, a shell's Tab completion or a scan on a Ray
cluster.  One nobody takes (a rescan that finds every photo known; a model made of local files,
which the daemon checks without its child) ends when the command exits or after
:data:`UNCLAIMED_S`, whichever comes first: it costs those imports and the tower's load (~260 MB
while it lasts), on the core the command leaves idle.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from .exiftool import _spawner  # starts children from one long-lived thread, with PR_SET_PDEATHSIG

_PACKAGE_PARENT = str(Path(__file__).resolve().parents[1])
CHILD_COMMAND = (sys.executable, "-c", f"import sys; sys.path.insert(0, {_PACKAGE_PARENT!r}); "
                 "from tagwatch.encoder import main; main()")
AHEAD_FLAG = "--load-ahead"  # an early child's argument: the config file whose model it loads ahead
MODEL_COMMANDS = ("scan", "run")  # the commands that load the model at once (see the module's docstring)
_WITH_VALUE = ("--config", "--log-format", "--engine", "--address")  # options followed by their value
UNCLAIMED_S = 60.0
STOP_WAIT_S = 10.0  # how long a child may take to end at the end of its input before it is killed

log = logging.getLogger(__name__)
_lock = threading.Lock()
_early: subprocess.Popen[bytes] | None = None
_started = 0.0


def wants_model(argv: Sequence[str]) -> bool:
    """Will the command line ``argv`` (without the program's name) load the model locally at once?"""
    return _parse(argv)[0]


def _parse(argv: Sequence[str]) -> tuple[bool, str]:
    """Whether ``argv`` loads the model at once (:func:`wants_model`), and its ``--config`` value
    (else ``$TAGWATCH_CONFIG``) made absolute ("" for the default file)."""
    if "_ARGCOMPLETE" in os.environ:  # a Tab press runs the command to ask for completions
        return False, ""
    command, values = None, {}
    args = iter(argv)
    for arg in args:
        if arg in ("-h", "--help", "--version"):
            return False, ""
        name, eq, value = arg.partition("=")
        if name in _WITH_VALUE:
            values[name] = value if eq else next(args, "")
        elif command is None and not arg.startswith("-"):
            command = arg
    config = values.get("--config", "") or os.environ.get("TAGWATCH_CONFIG", "")  # config.named_config
    return (command in MODEL_COMMANDS and values.get("--engine", "local") == "local",
            os.path.abspath(os.path.expanduser(config)) if config else "")


def start_early(argv: Sequence[str]) -> None:
    """Start the child now if ``argv`` is a command that will need it (see the module's docstring).
    Best effort: a child that cannot start here is started, or its error met, where it is needed."""
    global _early, _started
    wanted, config = _parse(argv)
    if not wanted:
        return
    try:
        proc = _spawner.popen([*CHILD_COMMAND, AHEAD_FLAG, config])
    except OSError:
        return
    with _lock:
        _early, _started = proc, time.monotonic()
    timer = threading.Timer(UNCLAIMED_S, _end_unclaimed, args=(proc,))
    timer.daemon = True
    timer.start()


def child() -> subprocess.Popen[bytes]:
    """The child started early, if it is still there and nobody took it; else a new one."""
    global _early
    with _lock:
        proc, _early = _early, None
    if proc is not None and proc.poll() is None:
        log.debug("encoder process %d: started %.2f s ago, before the command's imports", proc.pid,
                  time.monotonic() - _started)
        return proc
    return _spawner.popen(list(CHILD_COMMAND))


def _end_unclaimed(proc: subprocess.Popen[bytes]) -> None:
    global _early
    with _lock:
        if _early is not proc:
            return  # taken
        _early = None
    stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """End of input makes the child exit; a child that does not (stuck in a library) is killed."""
    with contextlib.suppress(OSError):
        assert proc.stdin is not None
        proc.stdin.close()
    try:
        proc.wait(timeout=STOP_WAIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
