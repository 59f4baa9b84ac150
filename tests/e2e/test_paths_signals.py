"""A signal interrupting a blocked read: EINTR without SA_RESTART, a restart with it."""

from __future__ import annotations

from typing import Any

import pytest

from irqlab.vm.agent_client import AgentClient
from irqlab.vm.guest import Guest

TIMEOUT = 60.0


@pytest.mark.parametrize("path", ["read", "count"])
def test_signal_interrupts_blocked_read_with_eintr(
    guest: Guest, agent: AgentClient, device: Any, path: str
) -> None:
    dev = guest.count_dev if path == "count" else guest.dev
    agent.arm(path, dev=dev)
    r = agent.request("interrupt", name=path)  # waits until the thread is in read(2)
    assert r["restart"] is False
    ev = agent.expect(type="interrupted", path=path, timeout=TIMEOUT)
    assert ev["errno"] == "EINTR"
    # The reader goes back to read(2) and still gets the next event.
    agent.request("wait_blocked", name=path)
    seq = device.next_seq()
    device.push(99)
    got = agent.expect(path=path, timeout=TIMEOUT)
    if path == "read":
        assert got["seq"] == seq and got["value"] == 99
    else:
        assert got["count"] == 1
    assert agent.disarm(path)[path]["eintr"] == 1


def test_sa_restart_restarts_the_read_transparently(
    guest: Guest, agent: AgentClient, device: Any
) -> None:
    agent.arm("read", dev=guest.dev)
    assert agent.request("interrupt", name="read", restart=True)["restart"] is True
    agent.request("wait_blocked", name="read")
    seq = device.next_seq()
    device.push(7)
    assert agent.expect(path="read", seq=seq, timeout=TIMEOUT)["value"] == 7
    assert not [e for e in agent.pending() if e.get("type") == "interrupted"]
    assert agent.disarm("read")["read"]["eintr"] == 0
