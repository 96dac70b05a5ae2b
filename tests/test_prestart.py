"""What the command does before its own imports: the model's child started early
(:mod:`tagwatch.prestart`), so a scan encodes with it, commands that will not use it never start it,
and one nobody takes never outlives the command; and numpy held to one BLAS thread (``__main__``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, exif_keywords, noise_jpeg, wait_for
from tagwatch import prestart


def _ended(pid: int) -> bool:
    """Gone, or a zombie waiting for a parent that is not ours to reap it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def test_a_scan_encodes_with_the_child_started_before_its_imports(config_file, tmp_path: Path) -> None:
    config = config_file()
    photos = [noise_jpeg(tmp_path / "photos" / f"p{n}.jpg", seed=n) for n in range(3)]
    temp = tmp_path / "temp"
    temp.mkdir()
    # as a user's shell has it (importing torch in this process set it)
    environ = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"}
    result = subprocess.run([sys.executable, "-m", "tagwatch", "-v", "scan", "--config", str(config),
                             str(tmp_path / "photos")], capture_output=True, text=True, timeout=300, cwd=REPO,
                            env={**environ, "TMPDIR": str(temp)})
    assert result.returncode == 0, result.stderr
    assert "before the command's imports" in result.stderr  # the early child did the encoding
    assert result.stderr.count("encoder process") == 2  # taken, then its one "started" line: no other
    for photo in photos:
        assert exif_keywords(photo)["iptc"], photo
    # What the command set in its environment after the child started reached the child: torch keeps
    # its compile cache folder in the data folder, as with a child started later, not in $TMPDIR
    assert list(temp.iterdir()) == []
    assert (config.parent / "state" / "torch-cache").is_dir()


@pytest.mark.parametrize(("argv", "wanted"), [
    (["scan", "photos"], True),
    (["run"], True),
    (["-v", "--config", "my.toml", "scan", "--dry-run", "photos"], True),
    (["--config=my.toml", "--log-format", "json", "run", "/photos"], True),
    (["scan", "--engine", "local", "photos"], True),
    (["scan", "--engine", "ray", "--address", "head:6379", "photos"], False),  # the nodes encode
    (["scan", "--engine=ray", "photos"], False),
    (["scan", "--help"], False),
    (["-h"], False),
    (["--version"], False),
    (["--config", "scan", "status"], False),  # a config file named "scan"
    (["status"], False),
    (["tags", "check"], False),
    ([], False),
])
def test_only_commands_that_load_the_model_at_once_start_it_early(argv: list[str], wanted: bool) -> None:
    assert prestart.wants_model(argv) is wanted


def test_a_shells_tab_press_starts_no_child(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("_ARGCOMPLETE", "1")  # how argcomplete runs the command to ask for completions
    assert not prestart.wants_model(["scan", "photos"])


def test_a_child_nobody_takes_ends_with_the_command() -> None:
    code = "from tagwatch import prestart; prestart.start_early(['scan', 'x']); print(prestart._early.pid)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    pid = int(done.stdout)
    wait_for(lambda: _ended(pid))


def test_a_child_is_taken_once_and_ends_unclaimed_after_a_while(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prestart, "UNCLAIMED_S", 0.5)
    prestart.start_early(["run"])
    early = prestart.child()
    fresh = prestart.child()  # a second taker gets a child of its own, never the same one
    try:
        assert early.pid != fresh.pid and early.poll() is None
    finally:
        for proc in (early, fresh):
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(timeout=30)
    prestart.start_early(["scan", "photos"])
    unclaimed = prestart._early
    assert unclaimed is not None
    wait_for(lambda: unclaimed.poll() is not None)
    later = prestart.child()  # the next taker starts a new one
    try:
        assert later.pid != unclaimed.pid and later.poll() is None
    finally:
        assert later.stdin is not None
        later.stdin.close()
        later.wait(timeout=30)


# The command's imports as `tagwatch --version` runs them, then what numpy's BLAS was given.
_BLAS_CHILD = """
import json, sys
sys.argv = ["tagwatch", "--version"]
from tagwatch.__main__ import main
try:
    main()
except SystemExit:
    pass
import threadpoolctl
blas = threadpoolctl.threadpool_info()
print(json.dumps(sorted({p["num_threads"] for p in blas if p["user_api"] == "blas"})))
"""


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: BLAS runs one thread anyway")
@pytest.mark.parametrize(("user", "wanted"), [(None, [1]), ("2", [2])])
def test_the_commands_numpy_keeps_to_one_blas_thread_unless_the_user_says(user: str | None,
                                                                           wanted: list[int]) -> None:
    """A BLAS thread per core spins after every small product and took a core from the decode
    threads (docs/speed.md); a value the user set is theirs."""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if user is not None:
        env["OPENBLAS_NUM_THREADS"] = user
    result = subprocess.run([sys.executable, "-c", _BLAS_CHILD], capture_output=True, text=True, timeout=120,
                            cwd=REPO, env={**env, "PYTHONPATH": str(REPO / "daemon")})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("tagwatch ")  # the command ran
    assert json.loads(result.stdout.splitlines()[-1]) == wanted
