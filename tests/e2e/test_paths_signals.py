"""A signal interrupting a blocked read: EINTR without SA_RESTART, a restart with it."""

from __future__ import annotations

from typing import Any

import pytest

from irqlab.vm.agent_client import AgentClient
from irqlab.vm.guest import Guest

TIMEOUT = 60.0


@pytest.mark.parametrize("path", ["read", "count"])
def test_signal_interrupts_blocked_read_with_eintr(
    irqlab_guest: Guest, irqlab_agent: AgentClient, irqlab_device: Any, path: str
) -> None:
    dev = irqlab_guest.count_dev if path == "count" else irqlab_guest.dev
    irqlab_agent.arm(path, dev=dev)
    r = irqlab_agent.request("interrupt", name=path)  # waits until the thread is in read(2)
    assert r["restart"] is False
    ev = irqlab_agent.expect(type="interrupted", path=path, timeout=TIMEOUT)
    assert ev["errno"] == "EINTR"
    # The reader goes back to read(2) and still gets the next event.
    irqlab_agent.request("wait_blocked", name=path)
    seq = irqlab_device.next_seq()
    irqlab_device.push(99)
    got = irqlab_agent.expect(path=path, timeout=TIMEOUT)
    if path == "read":
        assert got["seq"] == seq and got["value"] == 99
    else:
        assert got["count"] == 1
    assert irqlab_agent.disarm(path)[path]["eintr"] == 1


def test_sa_restart_restarts_the_read_transparently(
    irqlab_guest: Guest, irqlab_agent: AgentClient, irqlab_device: Any
) -> None:
    irqlab_agent.arm("read", dev=irqlab_guest.dev)
    assert irqlab_agent.request("interrupt", name="read", restart=True)["restart"] is True
    irqlab_agent.request("wait_blocked", name="read")
    seq = irqlab_device.next_seq()
    irqlab_device.push(7)
    assert irqlab_agent.expect(path="read", seq=seq, timeout=TIMEOUT)["value"] == 7
    assert not [e for e in irqlab_agent.pending() if e.get("type") == "interrupted"]
    assert irqlab_agent.disarm("read")["read"]["eintr"] == 0


def test_interrupt_refuses_a_path_that_does_not_wait_in_read(
    irqlab_guest: Guest, irqlab_agent: AgentClient, irqlab_device: Any
) -> None:
    """epoll waits in epoll_wait(2), not read(2): refused, naming the kinds that do,
    and the path goes on working."""
    from irqlab.vm.agent_client import AgentError

    irqlab_agent.arm("epoll-lt", dev=irqlab_guest.dev)
    with pytest.raises(AgentError, match=r"the epoll-lt path 'epoll-lt' does not wait in read"):
        irqlab_agent.request("interrupt", name="epoll-lt")
    seq = irqlab_device.next_seq()
    irqlab_device.push(5)
    assert irqlab_agent.expect(path="epoll-lt", seq=seq, timeout=TIMEOUT)["value"] == 5
    irqlab_agent.disarm("epoll-lt")
