"""The log directory's pytest runs: each says how it ended, failed runs outlive passing
ones in pruning, ``latest`` names the newest."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from irqlab import paths
from irqlab.testing.helpers import process_exited
from irqlab.testing.parallel import WORKER_ENV
from irqlab.vm.loadscale import timeout_scale

pytest_plugins = ["pytester"]
GONE = 999_999_999  # a pid no process has: nothing is kept for its owner running


def make_runs(root: Path, outcomes: list[str | None]) -> list[Path]:
    """Run directories, oldest first, each with its outcome (None: none written)."""
    runs = []
    for i, outcome in enumerate(outcomes):
        d = root / f"pytest-20261201-{i:06d}-{GONE}"
        d.mkdir()
        if outcome is not None:
            (d / paths.RUN_OUTCOME).write_text(outcome + "\n")
        os.utime(d, (time.time() - 1000 + i, time.time() - 1000 + i))
        runs.append(d)
    return runs


def test_ten_passing_runs_leave_a_failed_one(tmp_path: Path) -> None:
    failed, unfinished, old_pass, *newer = make_runs(
        tmp_path, ["tests failed (exit status 1)", None, "passed", *["passed"] * 10]
    )
    assert paths.prune_logs(tmp_path) == 1
    assert failed.exists() and unfinished.exists() and not old_pass.exists()
    assert all(d.exists() for d in newer)


def test_failed_runs_beyond_the_newest_are_bounded(tmp_path: Path) -> None:
    runs = make_runs(tmp_path, ["tests failed (exit status 1)"] * 5)
    assert paths.prune_logs(tmp_path, keep_runs=1, keep_failed=2) == 2
    assert [d.exists() for d in runs] == [False, False, True, True, True]


def test_a_run_says_how_it_ended_and_latest_names_it(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    logs = pytester.path / "logs"
    monkeypatch.setenv("IRQLAB_LOG_DIR", str(logs))
    pytester.makepyfile(
        """
        def test_fails(irqlab_log_dir):
            assert 3 == 4
        """
    )
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(failed=1)
    (first,) = logs.glob("pytest-*")
    assert (first / "outcome").read_text() == "tests failed (exit status 1)\n"
    assert (logs / "latest").resolve() == first.resolve()
    assert os.readlink(logs / "latest") == first.name  # relative: moves with the logs
    pytester.makepyfile(
        """
        def test_passes(irqlab_log_dir):
            pass
        """
    )
    time.sleep(1.1)  # another second's stamp
    pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "1").assert_outcomes(passed=1)
    (second,) = set(logs.glob("pytest-*")) - {first}
    assert (second / "outcome").read_text() == "passed\n"
    assert (logs / "latest").resolve() == second.resolve()
    assert not any(p.name.startswith(".latest") for p in logs.iterdir())


def test_this_processes_own_closed_guests_are_pruned_its_running_ones_kept(
    tmp_path: Path,
) -> None:
    """A script that started guests in a loop kept every run directory it made (their
    names carry its pid, which runs): now only those of its guests still running stay,
    and another running process's stay as before."""
    me, other = os.getpid(), os.getppid()
    entries = []
    for i in range(8):
        pid = other if i == 1 else me
        d = tmp_path / f"guest-20261207-{i:06d}-{pid}-{i}"
        d.mkdir()
        os.utime(d, (time.time() - 1000 + i, time.time() - 1000 + i))
        entries.append(d)
    paths.hold_run_dir(entries[0])  # its QEMU runs
    try:
        removed = paths.prune_logs(tmp_path, keep_runs=None, keep_other=3)
    finally:
        paths.release_run_dir(entries[0])
    assert removed == 3
    # the 3 newest, the held one, the other process's
    assert [d.exists() for d in entries] == [True, True, False, False, False, True, True, True]


# A test that says its pytest's pid once it runs, then sleeps past any limit of ours
SLOW = """
import os, pathlib, time

def test_slow(irqlab_log_dir):
    started = pathlib.Path(os.environ["STARTED"])
    started.with_suffix(".new").write_text(str(os.getpid()))
    started.with_suffix(".new").replace(started)  # there only with the pid in it
    time.sleep(30)
"""


def _user_env(tmp_path: Path) -> dict[str, str]:
    """No guest can start (no cache), the logs in *tmp_path*, no xdist worker's id."""
    env = {k: v for k, v in os.environ.items() if k not in WORKER_ENV}
    env.update(
        IRQLAB_CACHE_DIR="/proc/no-cache-here",
        IRQLAB_LOG_DIR=str(tmp_path / "logs"),
        STARTED=str(tmp_path / "started"),
    )
    return env


def _started(tmp_path: Path, p: subprocess.Popen[bytes]) -> None:
    """Wait until the slow test of the run in *tmp_path* runs."""
    deadline = time.monotonic() + 60 * timeout_scale()
    while not (tmp_path / "started").exists():
        assert p.poll() is None and time.monotonic() < deadline, "the inner test never ran"
        time.sleep(0.05)


def _ended_outcome(tmp_path: Path) -> str:
    """The outcome of the run in *tmp_path* once its pytest (the slow test's) ended."""
    pid = int((tmp_path / "started").read_text())
    assert process_exited(pid, 60), "the inner pytest did not end"
    (run,) = (tmp_path / "logs").glob("pytest-*")
    return (run / paths.RUN_OUTCOME).read_text()


PYTEST = f"{shlex.quote(sys.executable)} -m pytest -p no:cacheprovider test_slow.py"


@pytest.mark.parametrize(
    ("command", "outcome"),
    [
        # a plain timeout(1): pytest's own status
        (PYTEST, "interrupted (exit status 2)\n"),
        # its stdout a pipe whose reader the same SIGTERM ends: the report of the
        # interrupt raised BrokenPipeError, pytest's status stayed 0 (the run marked
        # "passed") and the process ended with 1
        (f"sh -c '{PYTEST} | cat'", "interrupted (exit status 1)\n"),
    ],
    ids=["plain", "piped"],
)
def test_a_run_timeout_ends_is_marked_interrupted(
    tmp_path: Path, command: str, outcome: str
) -> None:
    """``timeout 4 sh -c 'pytest test_slow.py | cat'`` as a user ran it, its time run
    out once the test runs (timeout's SIGALRM: then it sends SIGTERM to the command
    and to its process group, the pipe's reader among them)."""
    (tmp_path / "test_slow.py").write_text(SLOW)
    p = subprocess.Popen(
        ["timeout", "60", *shlex.split(command)],
        cwd=tmp_path,
        env=_user_env(tmp_path),
        stdout=subprocess.DEVNULL,
    )
    try:
        _started(tmp_path, p)
        p.send_signal(signal.SIGALRM)
        assert p.wait(60) == 124  # timed out
    finally:
        p.kill()
        p.wait()
    assert _ended_outcome(tmp_path) == outcome


def test_the_outcome_of_a_run_whose_pipe_is_gone_has_its_exit_status(tmp_path: Path) -> None:
    """The status the process really ended with, as its parent sees it."""
    (tmp_path / "test_slow.py").write_text(SLOW)
    p = subprocess.Popen(
        shlex.split(PYTEST), cwd=tmp_path, env=_user_env(tmp_path), stdout=subprocess.PIPE
    )
    try:
        _started(tmp_path, p)
        assert p.stdout is not None
        p.stdout.close()  # the reader goes away, then the run is stopped
        p.send_signal(signal.SIGTERM)
        status = p.wait(60)
    finally:
        p.kill()
        p.wait()
    assert status == 1
    assert _ended_outcome(tmp_path) == "interrupted (exit status 1)\n"


def test_a_keyboard_interrupt_a_test_catches_leaves_the_run_passed(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the interrupt pytest ends the run with counts (irqlab's signal handler
    raised for this one too)."""
    logs = pytester.path / "logs"
    monkeypatch.setenv("IRQLAB_LOG_DIR", str(logs))
    monkeypatch.setenv("IRQLAB_CACHE_DIR", "/proc/no-cache-here")
    pytester.makepyfile(
        """
        import os, signal, time

        import pytest

        def test_catches_its_own(irqlab_log_dir):
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # the raise lands here
        """
    )
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)
    (run,) = logs.glob("pytest-*")
    assert (run / paths.RUN_OUTCOME).read_text() == "passed\n"


def test_a_run_a_keyboard_interrupt_ends_after_its_tests_says_its_status(tmp_path: Path) -> None:
    """One that leaves pytest (a signal in the terminal summary): Python ends by SIGINT,
    130 as a shell says; the session's end had marked the run passed."""
    (tmp_path / "conftest.py").write_text(
        "def pytest_terminal_summary():\n    raise KeyboardInterrupt\n"
    )
    (tmp_path / "test_fast.py").write_text("def test_fast(irqlab_log_dir):\n    pass\n")
    r = subprocess.run(
        shlex.split(PYTEST.replace("test_slow.py", "test_fast.py")),
        cwd=tmp_path,
        env=_user_env(tmp_path),
        capture_output=True,
        check=False,
        timeout=120,
    )
    assert r.returncode == -signal.SIGINT, r
    (run,) = (tmp_path / "logs").glob("pytest-*")
    assert (run / paths.RUN_OUTCOME).read_text() == "interrupted (exit status 130)\n"
