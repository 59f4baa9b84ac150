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
    guest: Guest, agent: AgentClient, device: Any, big_ring: int, path: str
) -> None:
    agent.arm(path, dev=guest.dev)
    seq0 = device.next_seq()
    device.burst(BURST, PERIOD_NS)
    evs = agent.events(BURST, timeout=TIMEOUT, path=path, idle=IDLE)
    assert [e["seq"] for e in evs] == list(range(seq0, seq0 + BURST))
    assert [e["value"] for e in evs] == list(range(BURST))
    assert all(e["source"] == REGS.SRC_BURST for e in evs)
    flagged = [e for e in evs if e["flags"] or e["lost"]]
    assert not flagged, f"{len(flagged)} events flagged, first {flagged[0]}"
    c = device.counters()
    assert c.raised == BURST and c.acked == BURST, c
    assert c.dropped == 0 and c.ack_invalid == 0, c
    st = agent.disarm(path)[path]
    assert st["events"] == BURST and st["acks"] == BURST and st["ack_errors"] == 0, st


def test_burst_counting_file_sums_to_burst(
    guest: Guest, agent: AgentClient, device: Any, big_ring: int
) -> None:
    agent.arm("count", dev=guest.count_dev)
    device.burst(BURST, PERIOD_NS)
    total = 0
    while total < BURST:
        total += agent.expect(path="count", timeout=IDLE)["count"]
    assert total == BURST
    c = device.wait_counters(lambda c: c.raised == BURST)
    assert c.dropped == 0, c


def test_ring_overflow_is_flagged_and_counted(
    guest: Guest, agent: AgentClient, device: Any, wait_stats: Any
) -> None:
    agent.request("open", name="h", dev=guest.dev, nonblock=True)
    info = agent.request("ioctl", name="h", ioctl="GET_INFO")["result"]
    ring, extra = info["ring_size"], 100
    n = ring + extra
    seq0 = device.next_seq()
    device.burst(n, PERIOD_NS)
    st = wait_stats("h", lambda st: st["delivered"] + st["lost"] >= n, timeout=TIMEOUT)
    assert st["lost"] == extra and st["queued"] == ring, st
    got: list[dict[str, Any]] = []
    while len(got) < ring:
        r = agent.request("read", name="h")
        assert r["errno"] is None, r
        got += r["events"]
    assert [e["seq"] for e in got] == list(range(seq0, seq0 + ring))
    assert not any(e["flags"] for e in got)
    # The next record queued after the loss carries the flag and the count.
    device.push(1)
    wait_stats("h", lambda st: st["queued"] >= 1)
    (ev,) = agent.request("read", name="h")["events"]
    assert ev["seq"] == seq0 + n and "OVERFLOW" in ev["flag_names"] and ev["lost"] == extra
    st = agent.request("ioctl", name="h", ioctl="GET_STATS")["result"]
    assert st["overflows"] == 1 and st["lost"] == extra, st
    c = device.counters()
    assert c.raised == n + 1 and c.dropped == 0, c  # the device lost nothing
