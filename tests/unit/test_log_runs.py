"""The log directory's pytest runs: each says how it ended, failed runs outlive passing
ones in pruning, ``latest`` names the newest."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from irqlab import paths

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
