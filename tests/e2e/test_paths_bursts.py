"""Exact counts for bursts of >= 1000 events on every path; driver ring overflow."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from agent_paths import RECORD_PATHS  # same directory (rootdir-relative import)

from irqlab.contract.regs import REGS
from irqlab.vm.agent_client import AgentClient
from irqlab.vm.guest import Guest

BURST = 1000
PERIOD_NS = 500_000  # 2000 events/s of guest time
TIMEOUT = 300.0
IDLE = 30.0  # fail early when events stop arriving


@pytest.fixture
def big_ring(ring_size: Callable[[int], int]) -> int:
    """Files opened meanwhile get a ring for the whole burst: the agent in a TCG guest
    is slower than the device, and these tests count, they do not test overflow."""
    return ring_size(BURST * 2)


@pytest.mark.parametrize("path", RECORD_PATHS)
def test_burst_every_event_seen_once_and_acked(
    irqlab_guest: Guest, irqlab_agent: AgentClient, irqlab_device: Any, big_ring: int, path: str
) -> None:
    irqlab_agent.arm(path, dev=irqlab_guest.dev)
    seq0 = irqlab_device.next_seq()
    irqlab_device.burst(BURST, PERIOD_NS)
    evs = irqlab_agent.events(BURST, timeout=TIMEOUT, path=path, idle=IDLE)
    assert [e["seq"] for e in evs] == list(range(seq0, seq0 + BURST))
    assert [e["value"] for e in evs] == list(range(BURST))
    assert all(e["source"] == REGS.SRC_BURST for e in evs)
    flagged = [e for e in evs if e["flags"] or e["lost"]]
    assert not flagged, f"{len(flagged)} events flagged, first {flagged[0]}"
    c = irqlab_device.counters()
    assert c.raised == BURST and c.acked == BURST, c
    assert c.dropped == 0 and c.ack_invalid == 0, c
    st = irqlab_agent.disarm(path)[path]
    assert st["events"] == BURST and st["acks"] == BURST and st["ack_errors"] == 0, st


def test_burst_counting_file_sums_to_burst(
    irqlab_guest: Guest, irqlab_agent: AgentClient, irqlab_device: Any, big_ring: int
) -> None:
    irqlab_agent.arm("count", dev=irqlab_guest.count_dev)
    irqlab_device.burst(BURST, PERIOD_NS)
    total = 0
    while total < BURST:
        total += irqlab_agent.expect(path="count", timeout=IDLE)["count"]
    assert total == BURST
    c = irqlab_device.wait_counters(lambda c: c.raised == BURST)
    assert c.dropped == 0, c


def test_ring_overflow_is_flagged_and_counted(
    irqlab_guest: Guest, irqlab_agent: AgentClient, irqlab_device: Any, irqlab_wait_stats: Any
) -> None:
    irqlab_agent.request("open", name="h", dev=irqlab_guest.dev, nonblock=True)
    info = irqlab_agent.request("ioctl", name="h", ioctl="GET_INFO")["result"]
    ring, extra = info["ring_size"], 100
    n = ring + extra
    seq0 = irqlab_device.next_seq()
    irqlab_device.burst(n, PERIOD_NS)
    st = irqlab_wait_stats("h", lambda st: st["delivered"] + st["lost"] >= n, timeout=TIMEOUT)
    assert st["lost"] == extra and st["queued"] == ring, st
    got: list[dict[str, Any]] = []
    while len(got) < ring:
        r = irqlab_agent.request("read", name="h")
        assert r["errno"] is None, r
        got += r["events"]
    assert [e["seq"] for e in got] == list(range(seq0, seq0 + ring))
    assert not any(e["flags"] for e in got)
    # The next record queued after the loss carries the flag and the count.
    irqlab_device.push(1)
    irqlab_wait_stats("h", lambda st: st["queued"] >= 1)
    (ev,) = irqlab_agent.request("read", name="h")["events"]
    assert ev["seq"] == seq0 + n and "OVERFLOW" in ev["flag_names"] and ev["lost"] == extra
    st = irqlab_agent.request("ioctl", name="h", ioctl="GET_STATS")["result"]
    assert st["overflows"] == 1 and st["lost"] == extra, st
    c = irqlab_device.counters()
    assert c.raised == n + 1 and c.dropped == 0, c  # the device lost nothing
