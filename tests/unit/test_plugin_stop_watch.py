"""A pytest run stopped by a signal whose teardown never ends is ended by the plugin:
every thread's stack, its children killed, status 128 + the signal.  In CI a pytest
given two SIGTERMs hung 20 minutes with its QEMU (the second one's KeyboardInterrupt
had left a paramiko lock held under the teardown's next SSH call).  The run's outcome
file says so before the process ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from irqlab.paths import RUN_OUTCOME
from irqlab.testing.helpers import process_exited
from irqlab.testing.parallel import WORKER_ENV

CONFTEST = """
import irqlab.testing.plugin as plugin

plugin.TEARDOWN_LIMIT_S = 1.0  # the plugin's limit, read when the run is interrupted
"""

TESTS = """
import os, pathlib, threading, time

import pytest

from irqlab.vm import proc


@pytest.fixture
def wedged(irqlab_log_dir):  # the run's directory: its outcome is written
    child = proc.spawn(["sleep", "60"])  # as a guest's QEMU
    yield child
    threading.Event().wait()  # its teardown never ends (a lock left held)


def test_long(wedged):
    pathlib.Path(os.environ["STARTED"]).write_text(str(wedged.pid))
    time.sleep(60)


def test_caught(wedged):
    pass
"""

# KeyboardInterrupt caught by a test itself is no stop of the run: nothing is watched
CAUGHT = """
import os, signal, time

import pytest


def test_catches_its_own():
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            time.sleep(0.001)  # the raise lands here


def test_goes_on():
    time.sleep(2)  # past the 1 s limit: a watch started by the caught one would end us
"""


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in WORKER_ENV}
    env["STARTED"] = str(tmp_path / "started")
    env["IRQLAB_LOG_DIR"] = str(tmp_path / "logs")
    return env


def _pytest(tmp_path: Path, tests: str) -> subprocess.Popen[str]:
    (tmp_path / "conftest.py").write_text(textwrap.dedent(CONFTEST))
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(tests))
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "test_inner.py"],
        cwd=tmp_path, env=_env(tmp_path), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_a_teardown_that_never_ends_is_ended(tmp_path: Path, sig: signal.Signals) -> None:
    p = _pytest(tmp_path, TESTS)
    try:
        started = tmp_path / "started"
        deadline = time.monotonic() + 60
        while not started.exists() and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)  # polls for the file: the inner test announces nothing else
        assert started.exists(), "the inner test never started"
        child = int(started.read_text())
        p.send_signal(sig)
        out, _ = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == 128 + sig, out
    assert f"pytest's teardown after {sig.name} did not finish within 1 s" in out, out
    assert "most recent call first" in out and "in wedged" in out, out
    assert process_exited(child, 10), "the child (QEMU's stand-in) was killed"
    # the run's record says so (it said "interrupted (exit status 2)", pytest's status)
    (outcome,) = (tmp_path / "logs").glob(f"pytest-*/{RUN_OUTCOME}")
    assert outcome.read_text() == (
        f"interrupted; pytest's teardown after {sig.name} did not finish within 1 s: cut "
        f"short (exit status {128 + sig})\n"
    )


def test_an_interrupt_a_test_catches_starts_no_watch(tmp_path: Path) -> None:
    p = _pytest(tmp_path, CAUGHT)
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 0, out
    assert "2 passed" in out and "did not finish" not in out, out
