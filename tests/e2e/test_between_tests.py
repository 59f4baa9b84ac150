"""What a test leaves in the shared guest's device does not reach the next test: between
tests a running burst is stopped and every GPIO input driven low (before the agent's
reset, so an event that raises is flushed with the rest), then the counters are zeroed.

A test that left line 3 high made the next test's rising edge on line 3 never happen
(AgentTimeout; passing alone).  Run as a user's pytest would, two tests in order on one
session guest.

The reset comes before every test that takes the session guest, ``irqlab_guest`` alone
too (it was ``irqlab_agent``'s): such a test found the driver an earlier test unloaded
gone, and its reload_module() refused while the earlier test's armed path held the
driver's file open.  So too for a test that takes it only through
``request.getfixturevalue("irqlab_guest")`` (it got no reset: the session fixture, set
up already, is no setup of the test's)."""

from __future__ import annotations

import pytest
from userrun import as_a_user  # same directory (rootdir-relative import)

pytest_plugins = ["pytester"]

USER_TESTS = """
LINE = 3


def test_a_leaves_line_high_and_a_burst_running(irqlab_agent, irqlab_device):
    irqlab_agent.arm("gpio-cdev", lines=[LINE], edge="both")
    irqlab_device.set_lines(1 << LINE)
    ev = irqlab_agent.expect(path="gpio-cdev", timeout=30)
    assert (ev["offset"], ev["edge"]) == (LINE, "rising"), ev
    irqlab_device.burst(1_000_000, 1_000_000)  # 1000 s of BURST events, one per ms


def test_b_gets_its_rising_edge_and_nothing_stray(irqlab_agent, irqlab_device):
    assert irqlab_device.lines() == 0
    assert irqlab_device.inj.burst_remaining() == 0
    assert not irqlab_agent.pending(), irqlab_agent.pending()
    c = irqlab_device.counters()
    assert (c.raised, c.delivered, c.acked, c.ack_invalid) == (0, 0, 0, 0), c
    irqlab_agent.arm("gpio-cdev", lines=[LINE], edge="rising")
    irqlab_device.set_lines(1 << LINE)
    ev = irqlab_agent.expect(path="gpio-cdev", timeout=30)
    assert (ev["offset"], ev["edge"]) == (LINE, "rising"), ev
    assert not irqlab_agent.pending(), irqlab_agent.pending()
    c = irqlab_device.wait_counters(lambda c: c.raised >= 1, timeout=30)
    assert c.raised == 1, c
"""


def test_next_test_starts_with_inputs_at_rest(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    as_a_user(pytester, monkeypatch)
    pytester.makepyfile(USER_TESTS)
    r = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly", timeout=900)
    assert r.ret == 0, "\n".join(r.outlines[-80:] + r.errlines[-30:])
    r.assert_outcomes(passed=2)


GUEST_ONLY_TESTS = """
import pytest

CONFIGURED = {}


def wakeup(guest):
    return guest.sh(f"cat /sys/module/{guest.module_name()}/parameters/wakeup").strip()


def test_1_unloads_the_driver(irqlab_guest):
    CONFIGURED["wakeup"] = wakeup(irqlab_guest)
    irqlab_guest.unload_module()


def test_2_finds_it_loaded(irqlab_guest):
    irqlab_guest.sh("ls /dev/irqlab*")


def test_3_arms_a_path(irqlab_agent):
    irqlab_agent.arm("read")


def test_4_reloads_it_with_other_parameters(irqlab_guest):
    irqlab_guest.reload_module(wakeup="thread")


def test_5_finds_the_configured_parameters(irqlab_guest):
    assert wakeup(irqlab_guest) == CONFIGURED["wakeup"] != "thread"


@pytest.fixture(scope="module")
def armed_for_module(irqlab_guest):
    irqlab_guest.agent.arm("poll")
    return irqlab_guest


def test_6_a_module_fixtures_path_is_disarmed_as_before(armed_for_module, irqlab_agent):
    irqlab_agent.arm("poll")  # the reset comes after the wider-scoped fixtures' setup


def test_7_unloads_it_again(irqlab_guest):
    irqlab_guest.unload_module()


def test_8_takes_it_through_getfixturevalue_and_finds_it_loaded(request):
    request.getfixturevalue("irqlab_guest").sh("ls /dev/irqlab*")
"""


def test_a_test_that_takes_only_the_guest_gets_it_reset(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    as_a_user(pytester, monkeypatch)
    pytester.makepyfile(GUEST_ONLY_TESTS)
    r = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-p", "no:randomly", "-v", timeout=900
    )
    assert r.ret == 0, "\n".join(r.outlines[-80:] + r.errlines[-30:])
    r.assert_outcomes(passed=8)


UNRESETTABLE_TESTS = """
def test_1_leaves_the_device_to_uio_pci_generic(irqlab_guest):
    irqlab_guest.bind_uio_pci_generic()


def test_2_innocent(irqlab_guest):
    pass


def test_3_innocent_too(irqlab_agent):
    assert irqlab_agent.hello["paths"]
"""


def test_a_guest_that_cannot_be_reset_fails_one_setup_and_is_replaced(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A test that leaves what the reset cannot undo (the device bound to
    uio_pci_generic): the next test's setup fails naming it, and the guest is replaced;
    every later test of the session errored at its setup."""
    as_a_user(pytester, monkeypatch)
    pytester.makepyfile(UNRESETTABLE_TESTS)
    r = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly", timeout=900)
    out = "\n".join(r.outlines + r.errlines)
    r.assert_outcomes(passed=2, errors=1)
    said = " ".join(out.split())
    first = "test_a_guest_that_cannot_be_reset_fails_one_setup_and_is_replaced.py::test_1_"
    assert "ERROR at setup of test_2_innocent" in said, out
    assert f"the last test it was reset for: {first}" in said, out
    assert "the session guest was replaced by a new one for the tests after this one" in said
    # said on the terminal as any replacement, naming the test that left it so
    assert "the session guest could not be reset (GuestTimeout: " in said, out
    assert f"starting a new one (the last test to use it: {first}" in said, out
