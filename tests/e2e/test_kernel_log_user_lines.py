"""A line userspace writes to /dev/kmsg (``echo '<4>WARNING: ...' > /dev/kmsg``) is in
the kernel log, but no kernel report: the README says only the kernel's lines count.
It failed the session as a kernel problem.  Now the log is read with each record's
syslog prefix and only facility 0 (the kernel's; /dev/kmsg gives userspace's records
facility 1 or more) is scanned; the kernel's own WARNING (a test module says it:
tests/e2e/kmods/kernel_says) still counts."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kmods import build_test_kmod  # same directory (rootdir-relative import)
from userrun import as_a_user  # same directory (rootdir-relative import)

from irqlab.testing.plugin import start_guest
from irqlab.vm.guest import Guest, GuestConfig
from irqlab.vm.kernlog import kernel_problems

pytest_plugins = ["pytester"]

USER_WARNING = "WARNING: CPU: 0 PID: 1 at irqlab-test a fake one of userspace"
KERNEL_WARNING = "WARNING: CPU: 0 PID: 1 at irqlab-test one the kernel says"

USER_TESTS = f"""
def test_a_writes_a_warning_to_kmsg(irqlab_guest):
    irqlab_guest.sh("echo '<4>{USER_WARNING}' > /dev/kmsg")


def test_b_innocent(irqlab_guest):
    irqlab_guest.sh("true")
"""


def test_a_users_warning_written_to_kmsg_fails_no_session(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chaos tester's project: the session's end failed on it (an error of the last
    test's teardown: 'the session guest's kernel reported problems')."""
    as_a_user(pytester, monkeypatch)
    pytester.makepyfile(USER_TESTS)
    r = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    r.assert_outcomes(passed=2)
    assert "kernel reported problems" not in r.stdout.str(), r.stdout.str()


@pytest.fixture
def guest() -> Iterator[Guest]:
    g = start_guest(GuestConfig(name="kernel-says", extra_modules=[build_test_kmod("kernel_says")]))
    try:
        yield g
    finally:
        g.close()


def test_only_the_kernels_own_lines_are_kernel_problems(guest: Guest) -> None:
    guest.sh(f"echo '<4>{USER_WARNING}' > /dev/kmsg; echo '<0>BUG: {USER_WARNING}' > /dev/kmsg")
    assert USER_WARNING in guest.sh("dmesg")  # in the log all the same
    assert kernel_problems(guest, scan_leaks=False) is None
    guest.sh(f"echo '{KERNEL_WARNING}' > /sys/module/kernel_says/parameters/line")
    problems = kernel_problems(guest, scan_leaks=False)
    assert problems is not None, "the kernel's own WARNING was not found"
    assert [s.split("] ", 1)[-1] for s in problems.splats] == [KERNEL_WARNING], problems.splats
    assert USER_WARNING in problems.log  # the user's lines stay in the log the report quotes
