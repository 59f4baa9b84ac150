"""A failing guest test's report explains: its slice of the guest kernel log (dmesg),
the device counters, the agent's last messages; log paths are JUnit properties; the
header names QEMU, kernel, image and accelerator.  Run as a user's pytest would."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from kmods import build_test_kmod  # same directory (rootdir-relative import)
from userrun import as_a_user  # same directory (rootdir-relative import)

pytest_plugins = ["pytester"]

USER_TESTS = """
def test_passes_after_a_kernel_line(irqlab_guest, irqlab_agent):
    # 0.3 s of the guest's own after the line: more than its kernel log's clock runs
    # ahead of the agent's (20-115 ms), less than the heartbeat (1 s) the slice began at
    irqlab_guest.sh("echo irqlab-test: an earlier test > /dev/kmsg; sleep 0.3")


def test_fails_after_kernel_lines(irqlab_guest, irqlab_agent, irqlab_device):
    irqlab_guest.reload_module()  # a kernel step: its marker stays out of the report
    # (0.3 s after it, as below: the next test's slice must not show it)
    irqlab_guest.sh("echo irqlab-test: during the failing test > /dev/kmsg; sleep 0.3")
    irqlab_agent.arm("read")
    irqlab_device.push(0x5A5A)
    irqlab_agent.expect(path="read", timeout=10)
    assert False, "on purpose"


def test_fails_with_only_the_guest(irqlab_guest):
    irqlab_guest.sh("echo irqlab-test: only the guest > /dev/kmsg")
    assert False, "on purpose too"


def test_fails_without_a_guest():
    assert False, "on purpose, no guest"
"""

# A conftest's autouse session fixture holds the shared guest (as this repository's
# e2e conftest does): a test that does not take it gets no report of that guest.
USER_CONFTEST = """
import pytest


@pytest.fixture(scope="session", autouse=True)
def guest_for_all(irqlab_guest):
    return irqlab_guest
"""


def test_failure_report_has_dmesg_counters_and_agent_messages(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    as_a_user(pytester, monkeypatch)
    pytester.makepyfile(USER_TESTS)
    pytester.makeconftest(USER_CONFTEST)
    junit = pytester.path / "junit.xml"
    r = pytester.runpytest_subprocess(f"--junitxml={junit}", "-p", "no:cacheprovider")
    r.assert_outcomes(failed=3, passed=1)
    out = r.stdout.str()
    # the failing test's slice starts at its own setup (the agent's reset): not at the
    # heartbeat before it, up to a second early, with the earlier test's lines
    failing = out.split("test_fails_after_kernel_lines", 1)[1].split("test_fails_with_only", 1)[0]
    assert "irqlab-test: during the failing test" in failing, failing
    assert "irqlab-test: an earlier test" not in failing, failing
    assert "irqlab-step-" not in failing, failing
    # each failure names its logs, the test with only irqlab_guest too (it had none)
    only = out.split("test_fails_with_only_the_guest", 1)[1].split("test_fails_without", 1)[0]
    assert "irqlab guest logs (this test's part)" in only, only
    assert "irqlab diagnostics" in only and "irqlab-test: only the guest" in only, only
    # no agent fixture, no reset to mark its start: the heartbeats' clock does, not the
    # heartbeat before it (the previous test's lines were in its slice)
    assert "irqlab-test: during the failing test" not in only, only
    # ...and one without a guest of its own has no report of the conftest's
    none = out.split("test_fails_without_a_guest", 1)[1].split("short test summary", 1)[0]
    assert "irqlab guest logs" not in none and "irqlab diagnostics" not in none, none
    header = out.split("collected", 1)[0]
    assert "irqlab: arch x86_64, QEMU 7." in header, header
    assert "kernel 6." in header and "image debian" in header and "accel " in header, header
    assert "irqlab diagnostics" in out
    assert "irqlab-test: during the failing test" in out
    assert "Linux version" not in out, "the kernel log is this test's slice, not the boot"
    assert "raised=1 delivered=1 acked=1" in out
    assert '"path":"read"' in out.replace(" ", "")  # the agent's event, as it sent it
    root = ET.parse(junit).getroot()
    props = [p.get("value", "") for p in root.iter("property") if p.get("name") == "irqlab_log"]
    assert any(v.endswith("dmesg.log") for v in props), props
    # relative to the log directory the run names once: valid in a downloaded copy
    assert all(v.startswith("pytest-") for v in props), props
    (log_dir,) = [
        p.get("value") for p in root.iter("property") if p.get("name") == "irqlab_log_dir"
    ]
    assert all((pytester.path / "logs" / v).exists() for v in props), (log_dir, props)
    # the diagnostics are in the JUnit file, not only on the terminal
    (case,) = [c for c in root.iter("testcase") if c.get("name") == "test_fails_after_kernel_lines"]
    failure = case.find("failure")
    assert failure is not None and failure.text is not None
    assert "irqlab diagnostics of the session guest ('e2e')" in failure.text, failure.text
    assert "irqlab-test: during the failing test" in failure.text, failure.text
    assert "raised=1 delivered=1 acked=1" in failure.text, failure.text


# The WARNING is the kernel's (tests/e2e/kmods/kernel_says): one written to /dev/kmsg is
# userspace's, no kernel report
TAINTING_TESTS = """
def test_01_taints_the_guest_and_passes(irqlab_guest):
    irqlab_guest.put({ko!r}, "/tmp/kernel_says.ko")
    irqlab_guest.sh(
        "echo 'irqlab-test: tainting' > /dev/kmsg; echo 512 > /proc/sys/kernel/tainted; "
        "insmod /tmp/kernel_says.ko; echo 'WARNING: CPU: 0 PID: 1 at drivers/fake.c:1 "
        "fake_fn+0x0/0x10' > /sys/module/kernel_says/parameters/line"
    )


def test_02_fails(irqlab_guest):
    assert irqlab_guest.sh("echo hi").strip() == "bye"
"""


def _tainting_tests() -> str:
    return TAINTING_TESTS.format(ko=str(build_test_kmod("kernel_says")))


TAINT_FILE = "test_a_taint_from_a_passing_test_is_reported"


def test_a_taint_from_a_passing_test_is_reported(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A WARN (a taint) in the shared guest during a passing test: a later failure's
    diagnostics say the kernel is tainted, and the session's end fails on it, in a
    user's project with no check of its own."""
    as_a_user(pytester, monkeypatch)
    pytester.makepyfile(_tainting_tests())
    r = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    r.assert_outcomes(passed=1, failed=1, errors=1)  # the error: the session's end
    out = r.stdout.str()
    failing = out.split("_ test_02_fails _", 1)[1]
    assert "--- the guest kernel is tainted: W (warning issued, bit 9)" in failing, out
    assert "the session guest's kernel reported problems during this session" in out, out
    # reported in the last test's teardown: which test it came during is said
    said = "logged (by the guest's clock, against each test's start) during "
    assert f"{said}{TAINT_FILE}.py::test_01_taints_the_guest_and_passes" in out, out
    (log,) = (pytester.path / "logs").glob("pytest-*/session-dmesg.log")
    assert "irqlab-test: tainting" in log.read_text()
    pytester.makeini("[pytest]\nirqlab_check_kernel_log = false\n")
    r = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    r.assert_outcomes(passed=1, failed=1)  # turned off: no error at the end


# heartbeats delivered late (a loaded host): the host's estimate of the guest's clock is
# early by that, here 2 s
LATE_HEARTBEATS = """
import irqlab.vm.agent_client as agent_client

real = agent_client.AgentClient.guest_now_ns


def early(self):
    now = real(self)
    return None if now is None else now - 2_000_000_000


agent_client.AgentClient.guest_now_ns = early
"""


def test_a_taint_is_blamed_on_its_test_when_heartbeats_come_late(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each test's start was the heartbeats' estimate of the guest's clock, early by
    their delivery: in CI (two workers, a loaded host) a WARN in test_01's last moments
    was blamed on test_02.  The start is the reset's own clock reading now."""
    as_a_user(pytester, monkeypatch)
    pytester.makeconftest(LATE_HEARTBEATS)
    pytester.makepyfile(_tainting_tests())
    r = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    r.assert_outcomes(passed=1, failed=1, errors=1)
    out = r.stdout.str()
    said = "logged (by the guest's clock, against each test's start) during "
    here = "test_a_taint_is_blamed_on_its_test_when_heartbeats_come_late.py"  # pytester's
    assert f"{said}{here}::test_01_taints_the_guest_and_passes" in out, out


UNPLUGGING_TEST = """
import pytest


@pytest.mark.irqlab(hotplug=True)
def test_fails_after_unplugging(irqlab_fresh_guest):
    irqlab_fresh_guest.unplug()
    assert False, "on purpose, the device unplugged"
"""


def test_a_failure_after_an_unplug_says_the_device_is_gone(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The diagnostics said "device counters: unavailable" with QMP's "Device ... not
    found" for a device the test itself had unplugged: noise pointing at a QMP fault."""
    as_a_user(pytester, monkeypatch)
    pytester.makepyfile(UNPLUGGING_TEST)
    r = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    r.assert_outcomes(failed=1)
    out = r.stdout.str()
    assert "--- device counters: none (the device irqlab0 is unplugged)" in out, out
    assert "device counters: unavailable" not in out, out


INTERRUPTED_TESTS = """
import os, signal, threading


def _interrupt_soon():
    threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGINT)).start()


def test_in_a_command(irqlab_guest):
    _interrupt_soon()
    irqlab_guest.sh("sleep 60")


def test_in_an_agent_wait(irqlab_agent):
    irqlab_agent.arm("read")
    _interrupt_soon()
    irqlab_agent.expect(path="read", timeout=60)
"""


@pytest.mark.parametrize(
    ("test", "said"),
    [
        ("test_in_a_command", "; interrupted in the guest 'e2e' running 'sleep 60'"),
        (
            "test_in_an_agent_wait",
            "; interrupted waiting for the agent's message {'type': 'event', 'path': 'read'}",
        ),
    ],
)
def test_an_interrupted_run_names_what_ran_in_the_guest(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, test: str, said: str
) -> None:
    """Ctrl-C during a guest command or an agent wait: the run's line named the test and
    its logs, not what it was waiting for in the guest."""
    as_a_user(pytester, monkeypatch)
    pytester.makepyfile(INTERRUPTED_TESTS)
    r = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:xdist", "-k", test)
    text = r.stdout.str() + r.stderr.str()
    (line,) = [ln for ln in text.splitlines() if "interrupted during" in ln]
    assert line.endswith(said), line


FRESH_AND_QTEST = """
def test_fails_with_a_fresh_guest_and_a_qtest_qemu(irqlab_fresh_guest, irqlab_qtest_factory):
    irqlab_qtest_factory()
    assert False, "on purpose, two QEMUs"
"""


def test_a_failure_lists_the_fresh_guests_and_the_qtest_machines_logs(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A test with a fresh guest and a qtest QEMU: its failure names both QEMUs' logs
    (the qtest factory replaced the test's list of machines, the fresh guest's gone)."""
    as_a_user(pytester, monkeypatch)
    pytester.makepyfile(FRESH_AND_QTEST)
    r = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    r.assert_outcomes(failed=1)
    logs = r.stdout.str().split("irqlab logs", 1)[1]
    assert "\nfresh: logs in " in logs and "\nqtest0: logs in " in logs, logs
