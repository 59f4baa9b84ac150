"""A wait on another process's lock is said on the terminal under pytest too: the line
went to stderr, which pytest captures, so a wait of minutes on another run's cold boot
said nothing."""

from __future__ import annotations

import pytest

from irqlab import notice

pytest_plugins = ["pytester"]


def test_notices_go_to_stderr_unless_a_sink_is_set(capsys: pytest.CaptureFixture[str]) -> None:
    plugins = notice.set_sink(None)  # this session's: the plugin's terminal sink
    try:
        notice.say("irqlab: one")
        got: list[str] = []
        notice.set_sink(got.append)
        notice.say("irqlab: two")
        notice.set_sink(None)
        notice.say("irqlab: three")
    finally:
        notice.set_sink(plugins)
    assert got == ["irqlab: two"]
    assert capsys.readouterr().err == "irqlab: one\nirqlab: three\n"


def test_a_lock_wait_under_pytest_is_on_the_terminal(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
import subprocess, sys
from pathlib import Path
from irqlab.build import cache

HOLD = '''
import sys, time
from pathlib import Path
from irqlab.build import cache
with cache.exclusive_lock(Path(sys.argv[1]), "holding it"):
    print("held", flush=True)
    time.sleep(1.0)  # the other run's work
'''

def test_waits(tmp_path):
    lock = tmp_path / "x.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline() == "held\\n"
    with cache.exclusive_lock(lock, "cold-booting a guest for a test"):
        pass
    holder.wait(10)
"""
    )
    r = pytester.runpytest_subprocess()  # pytest's own capture, as a user runs it
    r.assert_outcomes(passed=1)
    r.stdout.fnmatch_lines(
        ["irqlab: waiting for process *, which is cold-booting a guest for a test (lock *x.lock)"]
    )
