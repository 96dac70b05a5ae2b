"""The daemon's SIGTERM, SIGINT and SIGHUP, acted on by a thread of their own (tagwatch.signals)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from conftest import REPO

# The moment that hung a stopping daemon: the main thread inside its Event's lock (as in its own
# ``stopped.wait``) when the signal comes.  A handler that set the Event waited for that lock forever.
SCRIPT = textwrap.dedent("""
    import os, signal, threading, time
    from tagwatch.signals import SignalThread

    stopped, hangups = threading.Event(), []
    signals = SignalThread({signal.SIGTERM: stopped.set, signal.SIGHUP: lambda: hangups.append(1)})
    signals.start()
    with stopped._cond:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.3)  # the handler runs here, in this thread, while the lock is held
    print("stopped" if stopped.wait(10) else "not stopped", flush=True)
    os.kill(os.getpid(), signal.SIGHUP)
    deadline = time.monotonic() + 10
    while not hangups and time.monotonic() < deadline:
        time.sleep(0.01)
    signals.stop()
    print(f"{len(hangups)} hangup", flush=True)
""")


def test_a_sigterm_while_the_main_thread_holds_the_stop_events_lock_still_stops_it() -> None:
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60,
                            cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["stopped", "1 hangup"], result.stdout + result.stderr
