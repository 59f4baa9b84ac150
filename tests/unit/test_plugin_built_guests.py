"""A guest a test builds itself (``Guest(GuestConfig(...))``, no fixture, no log
directory named) logs into that test's log directory, and the test's failure report
names it; one a module's fixture builds logs into the run's directory.  The start
itself is stood in for (what ``Guest.start`` does with the placement: its run
directory below it); tests/e2e/test_guest_logs_placed.py starts real ones."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from irqlab.vm import logplace
from irqlab.vm.guest import Guest, GuestConfig

pytest_plugins = ["pytester"]

TESTS = """
import pytest

from irqlab.vm import logplace
from irqlab.vm.guest import Guest, GuestConfig


def started(name):
    # what Guest.start leaves: a run directory below the placement, with a console log
    g = Guest(GuestConfig(name=name))
    root = logplace.place(g)
    g.log_dir = root / f"{name}-20261207-000000-1-1"
    g.log_dir.mkdir(parents=True)
    (g.log_dir / "console.log").write_text(f"irqlab-test: {name}'s console\\n")
    return g


@pytest.fixture(scope="module")
def module_guest():
    return started("modwide")


def test_fails(module_guest):
    g = started("mine")
    print("PLACED", g.log_dir.parent.name, module_guest.log_dir.parent.name)
    assert False, "on purpose"


def test_passes():
    started("quiet")
"""


def test_a_guest_the_test_built_logs_in_its_directory_and_its_failure_names_it(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    logs = pytester.path / "logs"
    monkeypatch.setenv("IRQLAB_LOG_DIR", str(logs))
    pytester.makepyfile(test_built=TESTS)
    junit = pytester.path / "junit.xml"
    r = pytester.runpytest_subprocess(f"--junitxml={junit}", "-p", "no:cacheprovider")
    r.assert_outcomes(failed=1, passed=1)
    (run,) = logs.glob("pytest-*")
    out = r.stdout.str()
    # the test's own directory; the module's fixture's: the run's (no single test's)
    assert f"PLACED test_built.py_test_fails {run.name}" in out, out
    mine = run / "test_built.py_test_fails" / "mine-20261207-000000-1-1"
    assert (run / "test_built.py_test_passes" / "quiet-20261207-000000-1-1").is_dir()
    assert not list(logs.glob("mine-*")) and not list(logs.glob("quiet-*"))
    report = out.split("irqlab guests the test built itself", 1)[1]
    assert f"'mine' (stopped): logs in {mine} (console.log)" in report, out
    assert "irqlab-test: mine's console" in report, out
    assert "modwide" not in report and "quiet" not in report, out
    root = ET.parse(junit).getroot()
    props = [p.get("value") for p in root.iter("property") if p.get("name") == "irqlab_log"]
    assert str(mine.relative_to(logs)) in props, props


def test_outside_pytest_a_guest_goes_to_the_log_directory() -> None:
    """No placer (a script, the irqlab command): None, the log directory's root."""
    old = logplace.set_placer(None)
    try:
        assert logplace.place(Guest(GuestConfig(name="script"))) is None
    finally:
        logplace.set_placer(old)
