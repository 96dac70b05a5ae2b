"""The service files: systemd units that `systemd-analyze verify` accepts, a launchd plist that parses,
and `tagwatch service install|uninstall` writing them for one user with that user's folders."""

from __future__ import annotations

import os
import plistlib
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, write_config
from tagwatch import units
from tagwatch.config import load_config

SYSTEMD = REPO / "systemd"


def _fake_executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def verify(unit: Path, home: Path) -> None:
    """`systemd-analyze verify` must accept the unit without a single warning."""
    if shutil.which("systemd-analyze") is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze missing in CI: scripts/setup-env installs the systemd package")
        pytest.skip("systemd-analyze not installed (Debian package systemd)")
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True,
                            env={**os.environ, "HOME": str(home)}, cwd=unit.parent)
    assert (result.returncode, result.stderr.strip()) == (0, ""), result.stderr


def run_cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}
    return subprocess.run([sys.executable, "-m", "tagwatch", *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=60)


def test_shipped_files_are_what_the_installer_renders() -> None:
    assert (SYSTEMD / "tagwatch.service").read_text() == units.systemd_user_unit(
        units.shipped_spec(), shipped=True)
    assert (SYSTEMD / "tagwatch@.service").read_text() == units.systemd_system_template()
    agent = plistlib.loads((SYSTEMD / f"{units.LAUNCHD_LABEL}.plist").read_bytes())
    assert agent["Label"] == units.LAUNCHD_LABEL
    assert agent["ProgramArguments"][-1] == "run"
    assert agent["KeepAlive"] == {"SuccessfulExit": False} and agent["RunAtLoad"] is True
    assert agent["StandardOutPath"].endswith("/Library/Logs/tagwatch.log")
    assert agent["StandardErrorPath"] == agent["StandardOutPath"]


def test_the_shipped_user_unit_verifies_and_is_hardened(tmp_path: Path) -> None:
    _fake_executable(tmp_path / ".local" / "bin" / "tagwatch")  # what %h/.local/bin/tagwatch names
    unit = tmp_path / "tagwatch.service"
    shutil.copyfile(SYSTEMD / "tagwatch.service", unit)
    verify(unit, tmp_path)
    text = unit.read_text()
    for line in ("Type=notify", "WatchdogSec=120", "Restart=on-failure", "NoNewPrivileges=yes",
                 "ProtectSystem=strict", "PrivateTmp=yes", "ReadWritePaths=-%h/Pictures"):
        assert f"\n{line}" in text


def test_the_system_template_verifies_for_an_instance(tmp_path: Path) -> None:
    """Only the program path is swapped for one that exists here; everything else is as shipped."""
    text = (SYSTEMD / "tagwatch@.service").read_text()
    exe = _fake_executable(tmp_path / "bin" / "tagwatch")
    assert text.count("/opt/tagwatch/bin/tagwatch") == 1
    unit = tmp_path / "tagwatch@photos.service"
    unit.write_text(text.replace("ExecStart=/opt/tagwatch/bin/tagwatch", f"ExecStart={exe}"))
    verify(unit, tmp_path)
    assert "\nUser=%i\n" in text and "StateDirectory=tagwatch/%i" in text


def test_install_writes_a_verified_unit_for_this_user_and_uninstall_removes_it(
        tmp_path: Path, tiny_checkpoint: Path) -> None:
    home = tmp_path / "home"
    photos = home / "My Photos"  # a space and a per-cent sign must survive systemd's parsing
    photos.mkdir(parents=True)
    (home / "100% Film").mkdir()
    config = write_config(home / "conf", tiny_checkpoint, watch=[photos, home / "100% Film"])

    result = run_cli("service", "install", "--platform", "systemd", "--config", str(config), home=home)
    assert result.returncode == 0, result.stderr
    unit = home / ".config" / "systemd" / "user" / "tagwatch.service"
    assert f"wrote {unit}" in result.stdout
    assert "systemctl --user enable --now tagwatch" in result.stdout
    text = unit.read_text()
    exec_start = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    assert exec_start == f"ExecStart={sys.executable} -m tagwatch run --config {config.resolve()}"
    writable = next(line for line in text.splitlines() if line.startswith("ReadWritePaths="))
    assert "-" + str(photos).replace(" ", "\\x20") in writable
    assert "-" + str(home / "100%% Film").replace(" ", "\\x20") in writable
    assert f"-{home / 'conf' / 'state'}" in writable.split()  # the database folder
    assert f"-{home / 'conf'}" in writable.split()  # the tag list's: the review page saves it there
    verify(unit, home)

    # Installing again replaces our own file; a unit the user wrote is never overwritten.
    again = run_cli("service", "install", "--config", str(config), home=home)
    assert again.returncode == 0 and f"wrote {unit}" in again.stdout
    # One unit per user: one for another config replaces it, and says whose daemon it no longer runs
    other = write_config(home / "other", tiny_checkpoint, watch=[photos])
    replaced = run_cli("service", "install", "--config", str(other), home=home)
    assert f"replaced {unit}, which ran the config {config.resolve()}: it runs {other.resolve()} now" \
        in replaced.stdout, replaced.stdout
    # never enabled: enable it, as at the first install (a restart alone would not start it at login)
    assert "next: systemctl --user daemon-reload && systemctl --user enable --now tagwatch   # it was not " \
        "enabled: now it starts at every login; a daemon you started by hand goes on with the old config" \
        in replaced.stdout, replaced.stdout
    unit.write_text("[Service]\nExecStart=/bin/true\n")
    refused = run_cli("service", "install", "--config", str(config), home=home)
    assert refused.returncode == 2 and "not written by tagwatch" in refused.stderr
    assert unit.read_text() == "[Service]\nExecStart=/bin/true\n"
    assert run_cli("service", "uninstall", home=home).returncode == 2 and unit.exists()

    assert run_cli("service", "install", "--force", "--config", str(config), home=home).returncode == 0
    wants = unit.parent / "default.target.wants"
    wants.mkdir()
    (wants / "tagwatch.service").symlink_to(unit)
    still_enabled = run_cli("service", "uninstall", home=home)
    assert still_enabled.returncode == 2 and "systemctl --user disable --now tagwatch" in still_enabled.stderr
    (wants / "tagwatch.service").unlink()
    removed = run_cli("service", "uninstall", home=home)
    assert removed.returncode == 0 and not unit.exists()


def test_install_writes_a_launchd_agent_with_this_users_paths(tmp_path: Path, tiny_checkpoint: Path) -> None:
    home = tmp_path / "home"
    photos = home / "Pictures"
    photos.mkdir(parents=True)
    config = write_config(home / "conf", tiny_checkpoint, watch=[photos])
    result = run_cli("service", "install", "--platform", "launchd", "--config", str(config), home=home)
    assert result.returncode == 0, result.stderr
    plist = home / "Library" / "LaunchAgents" / "org.tagwatch.agent.plist"
    assert "launchctl bootstrap gui/" in result.stdout
    agent = plistlib.loads(plist.read_bytes())
    assert agent["ProgramArguments"] == [sys.executable, "-m", "tagwatch", "run", "--config",
                                         str(config.resolve())]
    assert agent["StandardOutPath"] == str(home / "Library" / "Logs" / "tagwatch.log")
    assert not plist.stat().st_mode & (stat.S_IWGRP | stat.S_IWOTH)  # launchd refuses writable plists
    assert run_cli("service", "uninstall", "--platform", "launchd", home=home).returncode == 0
    assert not plist.exists()


def test_install_needs_a_config_with_folders(tmp_path: Path, tiny_checkpoint: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    missing = run_cli("service", "install", home=home)
    assert missing.returncode == 2 and "tagwatch init" in missing.stderr
    config = write_config(home / "conf", tiny_checkpoint, watch=[])
    empty = run_cli("service", "install", "--config", str(config), home=home)
    assert empty.returncode == 2 and "watch" in empty.stderr
    assert not (home / ".config" / "systemd").exists()


@pytest.mark.skipif(sys.platform == "darwin", reason="a systemd unit")
def test_a_unit_with_odd_folder_names_is_current_and_a_missing_one_is_named_plainly(
        tmp_path: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon's start compares the installed unit with the one `service install` writes now.  A
    folder's name with a space, a per-cent sign or a backslash is escaped in ReadWritePaths=: read
    back by the same rule it is written by, a current unit raises no "your unit is older" warning at
    every start, and a folder it lacks is named as the person knows it."""
    home = tmp_path / "home"
    odd = [home / "My Photos", home / "100% Film", home / "back\\slash"]
    for folder in odd:
        folder.mkdir(parents=True)
    config = write_config(home / "conf", tiny_checkpoint, watch=odd)
    assert run_cli("service", "install", "--platform", "systemd", "--config", str(config),
                   home=home).returncode == 0
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    unit = units.unit_file("systemd")
    assert unit.is_file()
    assert units.stale_unit(load_config(config)) is None
    text = unit.read_text(encoding="utf-8")
    unit.write_text(text.replace(" -" + str(home / "100%% Film").replace(" ", "\\x20"), ""), encoding="utf-8")
    stale = units.stale_unit(load_config(config))
    assert stale is not None and f"does not let the daemon write {home / '100% Film'} (" in stale


# /proc/self/mountinfo of a daemon started by a unit with PrivateTmp=yes: /tmp a folder of the root
# file system's, /var/tmp one of a tmpfs's (as on Debian with tmp.mount); and of one started without
SANDBOXED = """\
25 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw
812 25 259:2 /tmp/systemd-private-6b1e0c2e9f8a4d7b-tagwatch.service-AbCdEf/tmp /tmp rw,relatime shared:400 \
master:1 - ext4 /dev/nvme0n1p2 rw
813 25 0:35 /systemd-private-6b1e0c2e9f8a4d7b-tagwatch.service-GhIjKl/tmp /var/tmp rw,nosuid,nodev \
shared:401 master:12 - tmpfs tmpfs rw
"""
PLAIN = """\
25 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw
40 25 0:35 / /tmp rw,nosuid,nodev shared:12 - tmpfs tmpfs rw
"""


def test_a_watched_folder_under_a_private_tmp_is_said_at_the_start(tmp_path: Path) -> None:
    """The unit's PrivateTmp=yes gives the daemon a /tmp and /var/tmp of its own: a watched folder
    there is missing (empty at each start), and the watcher's line blamed an unplugged drive."""
    sandboxed, plain = tmp_path / "sandboxed", tmp_path / "plain"
    sandboxed.write_text(SANDBOXED, encoding="utf-8")
    plain.write_text(PLAIN, encoding="utf-8")
    folders = [Path("/tmp/photos"), Path("/home/ann/Pictures"), Path("/var/tmp/scans")]
    said = units.private_tmp(folders, sandboxed)
    assert said is not None and said.startswith(
        "/tmp/photos, /var/tmp/scans: watched under /tmp and /var/tmp, which this service sees as its own, "
        "empty at each start (its unit's PrivateTmp=yes), not the folder you see: the photos there "
        "are not tagged; move the folder out of /tmp and /var/tmp"), said
    assert units.private_tmp([Path("/home/ann/Pictures"), Path("/tmpfiles")], sandboxed) is None
    assert units.private_tmp(folders, plain) is None  # /tmp as the person sees it: nothing to say
    assert units.private_tmp(folders, tmp_path / "no-such-mountinfo") is None
