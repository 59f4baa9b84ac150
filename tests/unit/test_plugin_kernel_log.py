"""The plugin's kernel log checks, with a stand-in guest: the session guest's at the
session's end (on by default, an ini option turns it off), a test's own guest's at
its teardown, each writing the whole kernel log beside the test's logs."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

pytest_plugins = ["pytester"]

# every guest the plugin starts is this stand-in, whose kernel log has a WARN (or not)
CONFTEST = """
import os
from types import SimpleNamespace

from irqlab.testing import plugin

WARN = (
    "[    1.000000] irqlab: probed\\n"
    "[    2.000000] WARNING: CPU: 0 PID: 7 at drivers/x.c:1 f+0x1/0x2\\n"
    "[    2.000001] ---[ end trace 0000000000000000 ]---\\n"
)
CLEAN = "[    1.000000] irqlab: probed\\n"


class FakeGuest:
    def __init__(self, config, **_):  # start_guest's keywords
        self.config = config
        self.fault = None
        self.ssh = object()
        self._agent = None
        self.machine = SimpleNamespace(
            is_running=lambda: True,
            paths=None,
            config=SimpleNamespace(name=config.name),
            describe_logs=lambda: "logs: (none)",
        )
        self.closed = False

    def connection_lost(self):
        return None

    reset_at_ns = None

    def reset(self):  # before each test that takes it (irqlab_guest_alive)
        pass

    def sh(self, cmd, **_):
        warned = os.environ.get("FAKE_WARN") == "1"
        return (WARN if warned else CLEAN) + "\\n" + str((1 << 9) if warned else 0)

    def close(self):
        self.closed = True


plugin.start_guest = FakeGuest
"""

TESTS = """
def test_one(irqlab_guest):
    pass

def test_two(irqlab_guest):
    pass

def test_own(irqlab_fresh_guest):
    pass
"""


def run(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, warn: bool, ini: str = ""
) -> tuple[pytest.RunResult, ET.Element]:
    monkeypatch.setenv("IRQLAB_LOG_DIR", str(pytester.path / "logs"))
    monkeypatch.setenv("FAKE_WARN", "1" if warn else "0")
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_k=TESTS)
    if ini:
        pytester.makeini(f"[pytest]\n{ini}\n")
    junit = pytester.path / "junit.xml"
    r = pytester.runpytest_subprocess(f"--junitxml={junit}", "-p", "no:cacheprovider")
    return r, ET.parse(junit).getroot()


def test_a_warn_in_the_session_guest_is_an_error_at_the_sessions_end(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    r, root = run(pytester, monkeypatch, warn=True)
    # the own guest's test fails at its teardown, and so does the session's end (the
    # last test's teardown: the same one here)
    r.assert_outcomes(passed=3, errors=1)
    out = r.stdout.str()
    assert "the guest kernel reported problems during the test" in out, out
    assert "the session guest's kernel reported problems during this session's" in out
    assert "irqlab_check_kernel_log = false" in out
    assert "---[ end trace 0000000000000000 ]---" in out
    (session_log,) = (pytester.path / "logs").glob("pytest-*/session-dmesg.log")
    assert "WARNING: CPU: 0" in session_log.read_text()
    assert f"(the whole kernel log: {session_log}" in out, out
    # the test's own guest: its whole kernel log beside its logs, a JUnit property
    (own_log,) = (pytester.path / "logs").glob("pytest-*/test_k.py_test_own/dmesg.log")
    assert "WARNING: CPU: 0" in own_log.read_text()
    props = [p.get("value") or "" for p in root.iter("property") if p.get("name") == "irqlab_log"]
    assert any(v.endswith("test_k.py_test_own/dmesg.log") for v in props), props


def test_the_ini_option_turns_the_sessions_check_off(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    r, _ = run(pytester, monkeypatch, warn=True, ini="irqlab_check_kernel_log = false")
    r.assert_outcomes(passed=3, errors=1)  # the own guest's check stays (its marker's)
    assert "the session guest's kernel reported" not in r.stdout.str()


def test_a_clean_kernel_log_passes(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    r, _ = run(pytester, monkeypatch, warn=False)
    r.assert_outcomes(passed=3)
    assert not list((pytester.path / "logs").glob("pytest-*/session-dmesg.log"))


def test_the_session_checks_report_says_which_test_each_splat_came_during() -> None:
    """The session's kernel-log check runs in the last test's teardown: a WARN of an
    earlier test was an error of a test that never touched the guest."""
    from irqlab.testing.plugin import _tests_during

    splats = [
        "[    3.336096] WARNING: CPU: 0 PID: 1 at drivers/fake.c:1 fake_fn+0x0/0x10",
        "[    3.336200] Modules linked in: irqlab",
        "[    9.100000] BUG: kernel NULL pointer dereference, address: 0000000000000000",
        "[   99.000000] kmemleak: 3 new suspected memory leaks (see /sys/kernel/debug/kmemleak)",
        "tainted: W (warning issued, bit 9)",
    ]
    timeline = [(5.0, "t.py::test_c"), (1.0, "t.py::test_a"), (3.3, "t.py::test_b")]
    timeline.append((50.0, "t.py::test_last"))  # the leak scan is the session end's
    assert _tests_during(splats, timeline) == (
        "\nlogged (by the guest's clock, against each test's start) "
        "during t.py::test_b; during t.py::test_c"
    )
    assert _tests_during(splats, []) == ""
    assert _tests_during(["[    0.5] WARNING: early"], timeline) == ""  # before any test
