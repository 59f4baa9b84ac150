"""A Ctrl-C, SIGTERM or SIGHUP that comes as an interrupted ``pytest`` ends (a user
still pressing Ctrl-C, a second ``kill``) ends it at once with the run's status: once the
plugin had put Python's handlers back, it interrupted pytest's own end (a
KeyboardInterrupt traceback, ``Exception ignored in: ... KeyboardInterrupt``, or the
process killed by the signal, status -2 or -15, after its summary said
``interrupted``; chaos review 2026-12-08).  Real processes: ``python -m pytest`` whose
only test interrupts the run with a Ctrl-C of its own, and whose conftest sends the
second signal at the run's very end, where it landed: after the plugin's unconfigure,
or in an exit handler."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from irqlab.testing.parallel import WORKER_ENV

CONFTEST = """
import atexit
import os
import signal

import pytest

LATE = int(os.environ["LATE_SIGNAL"])


def _late():
    os.kill(os.getpid(), LATE)


if os.environ["LATE_WHERE"] == "atexit":
    atexit.register(_late)  # registered first: run last, after the plugin's


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    if os.environ["LATE_WHERE"] == "unconfigure":
        _late()  # after the plugin's unconfigure
"""
TESTS = """
import os
import signal


def test_the_run_is_interrupted():
    os.kill(os.getpid(), signal.SIGINT)
"""


def _run(
    tmp_path: Path, late: signal.Signals, where: str, tests: str = TESTS
) -> subprocess.CompletedProcess[str]:
    """``python -m pytest`` of *tests* in *tmp_path*, *late* sent at its end (*where*)."""
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_interrupted.py").write_text(tests)
    env = {k: v for k, v in os.environ.items() if k not in WORKER_ENV}
    env.update(LATE_SIGNAL=str(int(late)), LATE_WHERE=where, IRQLAB_LOG_DIR=str(tmp_path / "l"))
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "test_interrupted.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("where", ["unconfigure", "atexit"])
@pytest.mark.parametrize("late", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_a_signal_as_an_interrupted_run_ends_keeps_its_status(
    tmp_path: Path, late: signal.Signals, where: str
) -> None:
    r = _run(tmp_path, late, where)
    said = r.stdout + r.stderr
    assert "no tests ran" in said or "interrupted" in said.lower(), said  # it was stopped
    assert r.returncode == pytest.ExitCode.INTERRUPTED, (r.returncode, said)
    assert "Traceback" not in said and "Exception ignored" not in said, said


def test_a_run_not_interrupted_keeps_pythons_handlers_for_its_end(tmp_path: Path) -> None:
    """Only an interrupted run ends at once: one that passed, given a SIGTERM at its end,
    dies of it as before (its status is not made the interrupted one's)."""
    r = _run(tmp_path, signal.SIGTERM, "unconfigure", "def test_passes():\n    pass\n")
    assert r.returncode == -signal.SIGTERM, (r.returncode, r.stdout + r.stderr)
