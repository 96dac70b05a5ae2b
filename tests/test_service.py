"""Living under systemd: the notify protocol on a fake $NOTIFY_SOCKET, and one daemon per database."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from conftest import Daemon, exif_keywords, noise_jpeg, tagwatch, wait_for, write_config
from tagwatch.notify import Notifier
from tagwatch.outcomes import Outcome, Status
from tagwatch.status import Activity


def test_notify_messages_reach_a_listening_socket(tmp_path: Path, tiny_checkpoint: Path) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    address = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(address))
    listener.settimeout(0.2)
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[root])
    daemon = Daemon(config, tmp_path / "daemon.log",
                    env={"NOTIFY_SOCKET": str(address), "WATCHDOG_USEC": "1000000"})
    messages: list[str] = []

    def collect(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                messages.append(listener.recv(4096).decode())

    try:
        daemon.start()
        collect(2.5)  # WatchdogSec=1 s: a ping every half second
        assert daemon.stop() == 0
        collect(0.5)
    finally:
        listener.close()
    ready = [m for m in messages if "READY=1" in m]
    assert len(ready) == 1 and "STATUS=watching 1 folder\n" in ready[0]
    assert f"MAINPID={daemon.proc.pid}" in ready[0]
    assert messages.index(ready[0]) < len(messages) - 1
    assert sum(m == "WATCHDOG=1" for m in messages) >= 3
    assert "STOPPING=1" in messages[-1]


def test_outside_systemd_notify_is_silent() -> None:
    notifier = Notifier({})
    assert not notifier.enabled and notifier.watchdog_interval == 0 and not notifier.send(READY="1")
    other = Notifier({"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"})
    assert other.watchdog_interval == 0  # systemd meant another process


def test_a_second_daemon_on_the_same_database_is_refused(tmp_path: Path, tiny_checkpoint: Path) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[root])
    first = Daemon(config, tmp_path / "daemon.log").start()
    try:
        second = tagwatch("run", "--config", str(config), timeout=60)
        assert second.returncode == 2
        assert second.stderr.strip() == (
            f"tagwatch: error: another tagwatch (pid {first.proc.pid}) is already running on "
            f"{tmp_path / 'conf' / 'state' / 'tagwatch.db'}; stop it first, or give this one its own "
            "database")
    finally:
        assert first.stop() == 0
    third = Daemon(config, tmp_path / "daemon.log").start()  # the lock went with the first one
    assert third.stop() == 0


def test_status_and_metrics_come_from_the_running_daemon(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """`tagwatch status` and the Prometheus endpoint show what the daemon did since it started."""
    root = tmp_path / "photos"
    root.mkdir()
    # quiet_ms: broken.jpg, written at once, fails after 1 s unchanged (5 by default)
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[root], quiet_ms=1000,
                          extra='[metrics]\nlisten = "127.0.0.1:0"')
    daemon = Daemon(config, tmp_path / "daemon.log").start()
    try:
        port = int(re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", daemon.log()).group(1))
        noise_jpeg(root / "a.jpg", 1)
        noise_jpeg(root / "b.jpg", 2)
        (root / "broken.jpg").write_bytes(noise_jpeg(tmp_path / "whole.jpg", 3).read_bytes()[:2000])

        def daemon_status() -> dict:
            result = tagwatch("status", "--json", "--config", str(config))
            assert result.returncode == 0, result.stderr
            return json.loads(result.stdout)["daemon"]

        state = wait_for(lambda: (s := daemon_status()) and s.get("tagged_since_start") == 2
                         and s.get("failed_since_start") == 1 and s)
        assert state["pid"] == daemon.proc.pid and state["queue"] == 0 and state["folders"] == 1
        assert state["last_error"]["path"] == str(root / "broken.jpg")
        assert "truncated" in state["last_error"]["reason"]
        assert state["model_loaded"] is True
        db = tmp_path / "conf" / "state" / "tagwatch.db"
        assert stat.S_IMODE(os.stat(f"{db}.state.json").st_mode) == 0o600

        text = tagwatch("status", "--config", str(config)).stdout
        assert f"daemon    running, pid {daemon.proc.pid}" in text
        assert f"broken.jpg: {state['last_error']['reason']}" in text

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            metrics = response.read().decode()
        assert "\ntagwatch_files_tagged_total 2\n" in metrics
        assert "\ntagwatch_files_failed_total 1\n" in metrics
        assert '\ntagwatch_files{state="tagged"} 2\n' in metrics
        assert "\ntagwatch_queue_depth 0\n" in metrics

        # A tag-list edit's re-scoring rewrites both photos: tagging like any other, and counted so
        photos = [root / "a.jpg", root / "b.jpg"]
        before = {photo: set(exif_keywords(photo)["iptc"]) for photo in photos}
        (config.parent / "tags.txt").write_text("harbour\nlake\ndesert\n", encoding="utf-8")
        wait_for(lambda: all("harbour" in exif_keywords(photo)["iptc"] for photo in photos))
        added = sum(len(set(exif_keywords(photo)["iptc"]) - before[photo]) for photo in photos)
        edited = wait_for(lambda: (s := daemon_status()) and s.get("tagged_since_start") == 4 and s)
        assert edited["keywords_added_since_start"] == state["keywords_added_since_start"] + added
        assert "re-scored 2 photos, rewrote 2" in daemon.log()
    finally:
        assert daemon.stop() == 0
    assert daemon_status() is None  # stopped: the lock is free, whatever file is left
    assert "daemon    not running" in tagwatch("status", "--config", str(config)).stdout


def test_the_last_error_of_a_photo_tagged_or_deleted_since_is_shown_resolved(tmp_path: Path,
                                                                             tiny_checkpoint: Path) -> None:
    """A photo cut short failed, was copied again whole and tagged: `tagwatch status` still named it as
    the last error, as if something were wrong now (only a "(will retry)" one was marked done).  It
    stays the last error, marked resolved, with when, in the text and in --json; so does one deleted."""
    root = tmp_path / "photos"
    root.mkdir()
    # a photo cut short fails once it has stayed unchanged 1 s (5 by default): both are written at once
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[root], quiet_ms=1000)
    daemon = Daemon(config, tmp_path / "daemon.log").start()

    def last_error() -> dict:
        result = tagwatch("status", "--json", "--config", str(config))
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)["daemon"].get("last_error") or {}

    try:
        whole = noise_jpeg(tmp_path / "whole.jpg", 3).read_bytes()
        (root / "cut.jpg").write_bytes(whole[:2000])
        failed = wait_for(lambda: (e := last_error()).get("path") == str(root / "cut.jpg") and e)
        assert "truncated" in failed["reason"] and "resolved" not in failed
        (root / "cut.jpg").write_bytes(whole)  # copied again, whole
        done = wait_for(lambda: (e := last_error()).get("resolved") and e)
        assert done["reason"] == f"{failed['reason']} (tagged since)" and done["time"] == failed["time"]
        text = tagwatch("status", "--config", str(config)).stdout
        line = next(line for line in text.splitlines() if line.startswith("last error"))
        assert f"cut.jpg: {failed['reason']} (tagged since) at " in line, line

        (root / "other.jpg").write_bytes(whole[:1500])
        failed = wait_for(lambda: (e := last_error()).get("path") == str(root / "other.jpg") and e)
        (root / "other.jpg").unlink()
        gone = wait_for(lambda: (e := last_error()).get("resolved") and e)
        assert gone["reason"] == f"{failed['reason']} (photo gone since)"
    finally:
        assert daemon.stop() == 0


def test_a_last_error_is_resolved_by_its_folders_deletion_and_not_by_another_photos() -> None:
    activity = Activity(lambda: 0, 1)
    activity.record([Outcome("/p/2024/cut.jpg", Status.FAILED, error="truncated JPEG")])
    activity.record([Outcome("/p/2024/other.jpg", Status.TAGGED, wrote=True)])
    activity.gone("/p/2024/other.jpg")
    activity.gone("/p/20", is_dir=True)  # a folder whose name begins the same is another folder
    assert "resolved" not in activity.snapshot()["last_error"]
    activity.gone("/p/2024", is_dir=True)
    error = activity.snapshot()["last_error"]
    assert error["reason"] == "truncated JPEG (photo gone since)" and error["resolved"] >= error["time"]


def test_a_failing_photo_in_a_folder_moved_away_is_counted_again_when_it_comes_back(
        tmp_path: Path, tiny_checkpoint: Path) -> None:
    """A folder holding a broken photo was moved out of the watched folder: the last error was resolved,
    but the photo stayed in the failing set, so the same folder put back (from the trash) and its photo
    failing again was not counted: `tagwatch status` said 1 failed while the log said 2."""
    root = tmp_path / "photos"
    (root / "trip").mkdir(parents=True)
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[root])
    daemon = Daemon(config, tmp_path / "daemon.log").start()

    def state() -> dict:
        result = tagwatch("status", "--json", "--config", str(config))
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)["daemon"]

    def failed_now() -> dict | None:
        error = (s := state()).get("last_error") or {}
        return s if error.get("path") == str(cut) and "resolved" not in error else None

    try:
        cut = root / "trip" / "cut.jpg"
        cut.write_bytes(noise_jpeg(tmp_path / "whole.jpg", 3).read_bytes()[:2000])
        assert wait_for(failed_now)["failed_since_start"] == 1
        os.rename(root / "trip", tmp_path / "trash")  # the whole folder, not the photo, moved away
        wait_for(lambda: (state().get("last_error") or {}).get("resolved"))
        os.rename(tmp_path / "trash", root / "trip")  # and put back: the same photo fails the same way
        assert wait_for(failed_now)["failed_since_start"] == 2
    finally:
        assert daemon.stop() == 0


def test_a_folders_deletion_clears_the_failing_photos_under_it_and_no_others() -> None:
    """Every failing photo under a deleted folder is forgotten (one put back and failing is news),
    whichever the last error is of; ``/p/20`` is not a folder of ``/p/2024/x.jpg``."""
    activity = Activity(lambda: 0, 1)
    broken = ["/p/2024/a.jpg", "/p/2024/deep/b.jpg", "/p/20x.jpg", "/p/2024x/c.jpg"]
    activity.record([Outcome(path, Status.FAILED, error="truncated JPEG") for path in broken])
    activity.gone("/p/2024/", is_dir=True)  # a trailing separator is the same folder
    activity.gone("/p/20", is_dir=True)
    activity.record([Outcome(path, Status.FAILED, error="truncated JPEG") for path in broken])
    assert activity.snapshot()["failed_since_start"] == 4 + 2  # a.jpg and b.jpg again, not the others


def test_sighup_applies_what_it_can_names_the_rest_and_a_new_mode_re_scores(tmp_path: Path,
                                                                           tiny_checkpoint: Path) -> None:
    """Every key a SIGHUP finds changed is either applied or named as waiting for a restart, in one
    line each; a change of mode re-scores at once (sync takes out a keyword of ours no longer
    predicted), with no tag-list edit to wait for."""
    root = tmp_path / "photos"
    root.mkdir()
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[root], top_k=3)
    daemon = Daemon(config, tmp_path / "daemon.log").start()
    try:
        photo = noise_jpeg(root / "a.jpg", 1)
        wait_for(lambda: len(exif_keywords(photo)["iptc"]) == 3)
        text = config.read_text(encoding="utf-8")
        config.write_text('log_level = "debug"\npoll_interval = "10s"\n'
                          + text.replace("top_k = 3", "top_k = 2") + "[web]\nport = 8799\n", encoding="utf-8")
        mark = len(daemon.log())
        daemon.signal(signal.SIGHUP)
        log = daemon.wait_log(" reloaded: ", since=mark)[mark:]
        assert "config: a change of poll_interval, web.port takes effect after a restart" in log
        assert f"config {config} reloaded: applied log_level, tagging.top_k;" in log
        daemon.wait_log("re-scored 1 photo", since=mark)
        assert len(exif_keywords(photo)["iptc"]) == 3  # append: our third keyword stays
        later = noise_jpeg(root / "b.jpg", 2)
        wait_for(lambda: len(exif_keywords(later)["iptc"]) == 2)
        assert " DEBUG decoding 1 photo" in daemon.log()[mark:]  # log_level = "debug" took effect

        mark = len(daemon.log())
        config.write_text(config.read_text(encoding="utf-8").replace("top_k = 2", 'top_k = 2\nmode = "sync"'),
                          encoding="utf-8")
        daemon.signal(signal.SIGHUP)
        wait_for(lambda: len(exif_keywords(photo)["iptc"]) == 2)  # sync: no longer predicted, so out
        log = daemon.wait_log("re-scored 2 photos, rewrote 1", since=mark)[mark:]
        assert "applied tagging.mode;" in log and "config: a change of poll_interval, web.port" in log
    finally:
        assert daemon.stop() == 0


def test_sighup_keeps_the_files_its_review_page_writes_into(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """A SIGHUP naming another overrides file switched the daemon to it while the review page it
    serves went on saving corrections into the old one, which nothing read any more: with the page
    served, a change of the tag list's or the overrides' path waits for a restart, and says why."""
    root = tmp_path / "photos"
    root.mkdir()
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[root], top_k=3)
    text = 'overrides = "o.toml"\n' + config.read_text(encoding="utf-8") + "[web]\nenabled = true\nport = 0\n"
    config.write_text(text, encoding="utf-8")
    daemon = Daemon(config, tmp_path / "daemon.log").start()
    try:
        daemon.wait_log("review page on ")
        config.write_text(text.replace('"o.toml"', '"o2.toml"').replace("top_k = 3", "top_k = 2"),
                          encoding="utf-8")
        mark = len(daemon.log())
        daemon.signal(signal.SIGHUP)
        log = daemon.wait_log(" reloaded: ", since=mark)[mark:]
        assert ("config: a change of overrides takes effect after a restart: the review page this daemon "
                "serves saves corrections and thresholds into the files it started with") in log
        assert f"config {config} reloaded: applied tagging.top_k;" in log
        assert "o2.toml" not in log
    finally:
        assert daemon.stop() == 0


def test_an_edit_of_the_overrides_is_logged_as_the_overrides_re_scored(tmp_path: Path,
                                                                        tiny_checkpoint: Path) -> None:
    """An overrides edit was logged as `tag list …: N tags (…); re-scored`, as if the tag list had
    changed: the line names the overrides file and its rules."""
    root = tmp_path / "photos"
    root.mkdir()
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[root], top_k=3)
    config.write_text('overrides = "overrides.toml"\n' + config.read_text(encoding="utf-8"), encoding="utf-8")
    overrides = config.parent / "overrides.toml"
    overrides.write_text("", encoding="utf-8")
    daemon = Daemon(config, tmp_path / "daemon.log").start()
    try:
        photo = noise_jpeg(root / "a.jpg", 1)
        wait_for(lambda: len(exif_keywords(photo)["iptc"]) == 3)
        mark = len(daemon.log())
        overrides.write_text(f'[[override]]\npath = "{photo}"\nadd = ["holiday"]\n', encoding="utf-8")
        log = daemon.wait_log("re-scored", since=mark)[mark:]
        wait_for(lambda: "holiday" in exif_keywords(photo)["iptc"])
        assert f"INFO overrides {overrides}: 1 rule; re-scored 1 photo, rewrote 1 in " in log, log
        assert "tag list" not in log
        # a tag-list edit: the overrides, unchanged, are not said again (they were at every reload);
        # an overrides file saved as it was says nothing either
        tags = config.parent / "tags.txt"
        mark = len(daemon.log())
        tags.write_text("harbour\nlake\ndesert\nforest\n", encoding="utf-8")
        daemon.wait_log(f"tag list {tags}: 4 tags", since=mark)
        overrides.write_text(overrides.read_text(encoding="utf-8"), encoding="utf-8")
        time.sleep(1)
        tags.write_text("harbour\nlake\ndesert\n", encoding="utf-8")
        log = daemon.wait_log(f"tag list {tags}: 3 tags", since=mark)[mark:]
        assert f"overrides {overrides}" not in log, log
    finally:
        assert daemon.stop() == 0


def install_unit(config: Path, home: Path) -> str:
    """`tagwatch service install` for ``config`` as the user whose home is ``home``: what it prints."""
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}
    result = subprocess.run([sys.executable, "-m", "tagwatch", "--config", str(config), "service",
                             "install", "--platform", "systemd"],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def enable_unit(unit: Path) -> None:
    """What `systemctl --user enable tagwatch` does to the files: link the unit into default.target."""
    wants = unit.parent / "default.target.wants"
    wants.mkdir(exist_ok=True)
    (wants / unit.name).symlink_to(unit)


def test_installing_the_unit_again_after_adding_a_folder_says_to_restart(tmp_path: Path,
                                                                         tiny_checkpoint: Path) -> None:
    """`service install` again for the same config (a folder added to watch) said `enable --now`,
    which leaves a running daemon as it was, the new folder read-only to it: for a unit that is
    enabled, it says restart."""
    home = tmp_path / "home"
    photos, more = home / "photos", home / "photos2"
    photos.mkdir(parents=True)
    more.mkdir()
    unit = home / ".config" / "systemd" / "user" / "tagwatch.service"
    config = write_config(home / "conf", tiny_checkpoint, watch=[photos])
    first = install_unit(config, home)
    assert "next: systemctl --user daemon-reload && systemctl --user enable --now tagwatch" in first
    enable_unit(unit)
    write_config(home / "conf", tiny_checkpoint, watch=[photos, more])
    again = install_unit(config, home)
    assert f"-{more}" in unit.read_text(encoding="utf-8")
    assert f"wrote {unit}, replacing the one that was there" in again
    assert "next: systemctl --user daemon-reload && systemctl --user restart tagwatch   #" in again
    assert "enable --now" not in again


def test_installing_the_unit_again_before_enabling_it_still_says_to_enable_it(
        tmp_path: Path, tiny_checkpoint: Path) -> None:
    """xY #2: a second `service install` before the unit was ever enabled (a newcomer re-running the
    step, or adding a folder to watch) said only "daemon-reload && restart": followed, it starts the
    daemon once, never at the next login.  A unit with no default.target.wants link gets `enable
    --now` again, the restart named for a daemon started by hand; once enabled, the restart alone."""
    home = tmp_path / "home"
    photos = home / "photos"
    photos.mkdir(parents=True)
    unit = home / ".config" / "systemd" / "user" / "tagwatch.service"
    config = write_config(home / "conf", tiny_checkpoint, watch=[photos])
    enable = "next: systemctl --user daemon-reload && systemctl --user enable --now tagwatch"
    assert enable in install_unit(config, home)
    again = install_unit(config, home)
    assert f"wrote {unit}, replacing the one that was there" in again
    assert f"{enable}   # it was not enabled: now it starts at every login; a daemon you started by hand " \
           "keeps the old unit's settings (a folder added to watch stays read-only to it) until " \
           "`systemctl --user restart tagwatch`" in again, again
    enable_unit(unit)
    enabled = install_unit(config, home)
    assert "next: systemctl --user daemon-reload && systemctl --user restart tagwatch   #" in enabled
    assert "enable --now" not in enabled


def test_status_with_a_bad_edit_of_the_config_still_shows_the_daemon_and_what_is_not_in_use(
        tmp_path: Path, tiny_checkpoint: Path) -> None:
    """A config edit the daemon refused on SIGHUP made `tagwatch status` fail with the config's
    error (exit 2): no queue, no counts, and never the documented "NOT IN USE" line.  It needs only
    the database, read leniently from the file; the config's error is a warning."""
    root = tmp_path / "photos"
    root.mkdir()
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[root])
    good = config.read_text(encoding="utf-8")
    daemon = Daemon(config, tmp_path / "daemon.log").start()
    try:
        mark = len(daemon.log())
        config.write_text(good.replace("threshold = -1.0", 'threshold = "high"'), encoding="utf-8")
        daemon.signal(signal.SIGHUP)
        daemon.wait_log("config not reloaded", since=mark)
        wait_for(lambda: "config" in json.loads(tagwatch("status", "--json", "--config", str(config)).stdout)[
            "daemon"].get("rejected", {}))
        result = tagwatch("status", "--config", str(config))
        assert result.returncode == 0, result.stderr
        assert f"database  {tmp_path / 'conf' / 'state' / 'tagwatch.db'}\n" in result.stdout
        assert f"daemon    running, pid {daemon.proc.pid}," in result.stdout
        assert (f"NOT IN USE: the config on disk, refused: {config}: tagging.threshold must be a number in "
                "[-1, 1], got str 'high'; the previous one is in use until it is fixed") in result.stdout
        assert "files " in result.stdout and "error:" not in result.stderr
        assert f"WARNING {config}: tagging.threshold must be a number" in result.stderr
        assert "the running daemon goes on with the config it last loaded" in result.stderr
        as_json = json.loads(tagwatch("status", "--json", "--config", str(config)).stdout)
        assert as_json["daemon"]["pid"] == daemon.proc.pid and "tagging.threshold" in as_json["config_error"]
        # Not TOML at all: the database line is still read
        config.write_text(good + "watch = [\n", encoding="utf-8")
        broken = tagwatch("status", "--config", str(config))
        assert broken.returncode == 0 and f"pid {daemon.proc.pid}" in broken.stdout, broken.stderr
        assert "not valid TOML" in broken.stderr
    finally:
        config.write_text(good, encoding="utf-8")
        assert daemon.stop() == 0


def test_text_status_says_how_old_the_daemons_snapshot_is(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """The daemon rewrites its state every few seconds; the text view showed counts seconds behind
    the log without a word, while --json had age_s.  A daemon held still (SIGSTOP) lets it age."""
    root = tmp_path / "photos"
    root.mkdir()
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[root])
    daemon = Daemon(config, tmp_path / "daemon.log").start()

    def state() -> dict[str, object]:
        return json.loads(tagwatch("status", "--json", "--config", str(config)).stdout)["daemon"]

    try:
        wait_for(lambda: "age_s" in state())
        daemon.signal(signal.SIGSTOP)
        try:
            wait_for(lambda: float(state()["age_s"]) > 3)  # type: ignore[arg-type]
            text = tagwatch("status", "--config", str(config)).stdout
        finally:
            daemon.signal(signal.SIGCONT)
        line = next(line for line in text.splitlines() if line.startswith("daemon "))
        assert re.search(r"; as of \d+ s ago$", line), line
    finally:
        assert daemon.stop() == 0


def test_sigusr1_logs_where_every_thread_is_and_the_daemon_goes_on(tmp_path: Path,
                                                                   tiny_checkpoint: Path) -> None:
    """A daemon that stopped answering left nothing to say where: ``kill -USR1`` puts every thread's
    stack in its log (the journal), and it goes on tagging; systemd's watchdog SIGABRT does too."""
    root = tmp_path / "photos"
    root.mkdir()
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[root])
    daemon = Daemon(config, tmp_path / "daemon.log").start()
    try:
        mark = len(daemon.log())
        daemon.signal(signal.SIGUSR1)
        log = daemon.wait_log("in run_forever", since=mark)
        assert log[mark:].count("Thread 0x") >= 3, log[mark:]  # the main thread, the watcher's, the worker's
        assert "in _keep_state" in daemon.wait_log("in _keep_state", since=mark)
        photo = noise_jpeg(root / "a.jpg", 1)
        wait_for(lambda: len(exif_keywords(photo)["iptc"]) == 3)
    finally:
        assert daemon.stop() == 0


def test_a_duplicate_tag_is_warned_once_not_at_every_reload(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """The same duplicate-tag warnings came back at every SIGHUP and tag-list reload: journal noise
    that hid the line that mattered.  Each is logged once, and a new one when the list gets it."""
    root = tmp_path / "photos"
    root.mkdir()
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[root],
                          tags=["red", "circle", "Red", "square", "circle"])
    tags = config.parent / "tags.txt"
    daemon = Daemon(config, tmp_path / "daemon.log").start()
    try:
        assert daemon.log().count("duplicate tag 'Red'") == 1
        mark = len(daemon.log())
        daemon.signal(signal.SIGHUP)
        daemon.wait_log("re-scored", since=mark)
        mark = len(daemon.log())
        tags.write_text("red\ncircle\nRed\nsquare\ncircle\nstar\n", encoding="utf-8")  # still both
        daemon.wait_log("4 tags", since=mark)
        mark = len(daemon.log())
        tags.write_text("red\ncircle\nRed\nsquare\ncircle\nstar\nstar\n", encoding="utf-8")
        log = daemon.wait_log("re-scored", since=mark)
        assert "duplicate tag 'star'" in log[mark:]
        assert log.count("duplicate tag 'Red'") == 1 and log.count("duplicate tag 'circle'") == 1, log
    finally:
        assert daemon.stop() == 0
    check = tagwatch("tags", "check", "--config", str(config), str(tags))  # shows them all, every time
    assert "duplicate tag 'Red'" in check.stdout + check.stderr


def test_a_daemon_started_by_a_unit_older_than_service_install_writes_says_to_install_it_again(
        tmp_path: Path, tiny_checkpoint: Path) -> None:
    """A unit an older tagwatch installed (5511b57's ReadWritePaths had no config folder) keeps the
    review page's corrections from being saved: the daemon says so at start, naming the command."""
    home = tmp_path / "home"
    photos = home / "photos"
    photos.mkdir(parents=True)
    env = {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}
    config = write_config(home / "conf", tiny_checkpoint, watch=[photos])

    def install() -> None:
        result = subprocess.run([sys.executable, "-m", "tagwatch", "--config", str(config), "service",
                                 "install", "--platform", "systemd"],
                                capture_output=True, text=True, env={**os.environ, **env}, timeout=60)
        assert result.returncode == 0, result.stderr

    install()
    unit = home / ".config" / "systemd" / "user" / "tagwatch.service"
    text = unit.read_text(encoding="utf-8")
    assert f" -{config.parent}\n" in text
    unit.write_text(text.replace(f" -{config.parent}\n", "\n"), encoding="utf-8")  # as the old one was

    daemon = Daemon(config, tmp_path / "daemon.log", env=env).start()
    assert daemon.stop() == 0
    warning = [line for line in daemon.log().splitlines() if "WARNING" in line and str(unit) in line]
    assert len(warning) == 1, daemon.log()
    assert f"does not let the daemon write {config.parent} " in warning[0]
    assert "run `tagwatch service install`, then `systemctl --user daemon-reload" in warning[0]

    install()  # the unit as this tagwatch writes it: nothing to say
    mark = len(daemon.log())
    daemon.start()
    assert daemon.stop() == 0
    assert str(unit) not in daemon.log()[mark:]
