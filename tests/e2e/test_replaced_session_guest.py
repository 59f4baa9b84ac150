"""The session guest dies (a panic) and is replaced: what its kernel reported before
(a WARNING, a BUG: line, in passing tests) still fails the session's end, naming
that guest (only the last guest's kernel log was checked); a module-scoped fixture
that prepared the dead guest is set up again in the new one (its file was gone).
Run as a user's pytest would."""

from __future__ import annotations

import pytest
from userrun import as_a_user  # same directory (rootdir-relative import)

pytest_plugins = ["pytester"]

USER_TESTS = """
import pytest

from irqlab.vm.health import GuestFault


@pytest.fixture(scope="module")
def prepared(irqlab_guest):
    irqlab_guest.sh("echo ready > /tmp/prepared")
    return irqlab_guest


def test_01_reports_bugs_and_passes(prepared):
    prepared.sh("echo '<4>WARNING: irqlab-test warned in the first guest' > /dev/kmsg")
    prepared.sh("echo '<3>BUG: irqlab-test in the first guest' > /dev/kmsg")


def test_02_panics(irqlab_guest):
    with pytest.raises(GuestFault, match="^guest kernel panic"):
        irqlab_guest.sh("echo c > /proc/sysrq-trigger")


def test_03_its_module_fixture_was_set_up_again(prepared):
    assert prepared.sh("cat /tmp/prepared").strip() == "ready"
"""


def test_a_replaced_session_guests_kernel_reports_fail_the_sessions_end(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    as_a_user(pytester, monkeypatch)
    pytester.makepyfile(test_replaced=USER_TESTS)
    r = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    r.assert_outcomes(passed=3, errors=1)  # the error: the session's end
    out = " ".join(r.stdout.str().split())
    assert "the session guest died (guest kernel panic" in out, out
    (first,) = (pytester.path / "logs").glob("pytest-*/e2e-*-1")  # its first QEMU's run
    assert (
        "the replaced session guest #1 (replaced after: guest kernel panic: Kernel panic - "
        "not syncing: sysrq triggered crash, the last test to use it: "
        "test_replaced.py::test_02_panics; its console before it died: "
        f"{first / 'console.log'}):"
    ) in out, out
    assert "WARNING: irqlab-test warned in the first guest" in out, out
    assert "BUG: irqlab-test in the first guest" in out, out
    assert "the session guest at the end" not in out, "the new guest's kernel log is clean"
