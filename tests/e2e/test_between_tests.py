"""What a test leaves in the shared guest's device does not reach the next test: between
tests a running burst is stopped and every GPIO input driven low (before the agent's
reset, so an event that raises is flushed with the rest), then the counters are zeroed.

A test that left line 3 high made the next test's rising edge on line 3 never happen
(AgentTimeout; passing alone).  Run as a user's pytest would, two tests in order on one
session guest."""

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
