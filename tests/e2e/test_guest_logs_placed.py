"""Guests a test builds itself (``Guest(GuestConfig(...))``, no fixture of the plugin's)
log into that test's log directory, not the log directory's root (where another run's
pruning removed them), and the test's failure report names them: their logs, their
console's last lines, and for one still running its diagnostics.  Run as a user's
pytest would."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from userrun import as_a_user  # same directory (rootdir-relative import)

pytest_plugins = ["pytester"]

USER_TESTS = """
import pytest

from irqlab.vm.guest import Guest, GuestConfig


def test_closes_its_guest_and_fails():
    with Guest(GuestConfig(name="mine")) as g:
        g.sh("echo '<2>irqlab-test: on the built guest console' > /dev/kmsg")
    assert False, "on purpose"


@pytest.fixture
def held():  # a user's own fixture: the guest still runs when the failure is reported
    with Guest(GuestConfig(name="held")) as g:
        yield g


def test_fails_with_its_guest_running(held):
    held.sh("echo 'irqlab-test: in the held guest kernel log' > /dev/kmsg")
    assert False, "on purpose too"
"""


def test_guests_a_test_builds_log_in_its_directory_and_its_report_names_them(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    as_a_user(pytester, monkeypatch)
    logs = pytester.path / "logs"
    pytester.makepyfile(test_built=USER_TESTS)
    junit = pytester.path / "junit.xml"
    r = pytester.runpytest_subprocess(f"--junitxml={junit}", "-p", "no:cacheprovider")
    r.assert_outcomes(failed=2)
    out = r.stdout.str()
    (run,) = logs.glob("pytest-*")
    assert not list(logs.glob("mine-*")) and not list(logs.glob("held-*")), sorted(logs.iterdir())
    (mine,) = (run / "test_built.py_test_closes_its_guest_and_fails").glob("mine-*")
    (held,) = (run / "test_built.py_test_fails_with_its_guest_running").glob("held-*")
    assert (mine / "console.log").is_file() and list(mine.glob("agent-*.rx.jsonl")), mine
    closed = out.split("_ test_closes_its_guest_and_fails _", 1)[1].split("_ test_fails_with", 1)[0]
    section = closed.split("irqlab guests the test built itself", 1)[1]
    assert f"'mine' (stopped): logs in {mine} (" in section, closed
    assert "irqlab-test: on the built guest console" in section, closed
    running = out.split("_ test_fails_with_its_guest_running _", 1)[1]
    section = running.split("irqlab guests the test built itself", 1)[1]
    assert f"'held' (running): logs in {held} (" in section, running
    assert "--- guest kernel log (all of it" in section, running
    assert "irqlab-test: in the held guest kernel log" in section, running
    assert "--- device counters (QMP)" in section, running
    root = ET.parse(junit).getroot()
    props = [p.get("value") for p in root.iter("property") if p.get("name") == "irqlab_log"]
    assert str(mine.relative_to(logs)) in props and str(held.relative_to(logs)) in props, props
