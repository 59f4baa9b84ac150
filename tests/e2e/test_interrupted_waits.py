"""A test that pytest-timeout ends (its signal method raises pytest's Failed, a
BaseException, in the test's thread) while it waits on the guest: neither the guest
command nor the agent request it waited for outlives it.  The command held the
driver's node open, and the next test's module reload failed ("rmmod irqlab failed
... in use"); the request kept the agent's session busy, and the next test's first
request waited for the rest of it (15 s)."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from types import FrameType

import pytest

from irqlab.vm.guest import Guest

TIMEOUT_S = 1.0  # when the "timeout" ends the wait
NEXT_WITHIN_S = 6.0  # the next test's reset and reload (a new agent session): seconds


class _Failed(BaseException):
    """Stands in for pytest's Failed (an OutcomeException: a BaseException)."""


@pytest.fixture
def timeout_signal() -> Iterator[Callable[[float], None]]:
    """What pytest-timeout's signal method does: SIGALRM after *s*, its handler raising."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise _Failed(f"Timeout >{TIMEOUT_S}s")

    old = signal.signal(signal.SIGALRM, handler)
    try:
        yield lambda s: signal.setitimer(signal.ITIMER_REAL, s)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.mark.parametrize("waits_on", ["command", "agent request"])
def test_a_wait_a_timeout_signal_ends_leaves_nothing_for_the_next_test(
    irqlab_fresh_guest: Guest, timeout_signal: Callable[[float], None], waits_on: str
) -> None:
    g = irqlab_fresh_guest
    timeout_signal(TIMEOUT_S)
    with pytest.raises(_Failed):
        if waits_on == "command":
            g.sh(f"cat {g.dev} > /dev/null", timeout=60)
        else:
            g.agent.request("open", name="blk", dev=g.dev, nonblock=False)
            g.agent.request("read", name="blk", wait_ms=30_000)
    # what the plugin does before the next test, then a reload of the driver
    t0 = time.monotonic()
    g.reset()
    g.reload_module()
    took = time.monotonic() - t0
    assert took < NEXT_WITHIN_S, f"{took:.1f} s"
    held = g.sh(f"ls -l /proc/[0-9]*/fd 2>/dev/null | grep -c {g.dev} || true").strip()
    assert held == "0", f"{held} open file(s) of {g.dev} left"
