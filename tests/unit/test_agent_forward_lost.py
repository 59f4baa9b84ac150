"""An agent wait whose SSH forward closed with the guest's SSH connection (its sshd
killed) says that the connection to the agent closed, not that the agent exited ("agent
exited (end of output)" for an agent that ran on); an agent that did exit is still said
so (fault tester's kill-sshd agent case; a real paramiko server: fake_sshd)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fake_sshd import FakeSshd  # same directory (rootdir-relative import)

from irqlab.vm.agent_client import AgentError, AgentTimeout
from irqlab.vm.guest import Guest, GuestConfig


@pytest.fixture
def guest() -> Iterator[tuple[Guest, FakeSshd]]:
    """A Guest (no QEMU, no health watch) with an agent session through the fake sshd's
    port forward."""
    sshd = FakeSshd()
    g = Guest(GuestConfig(name="fwdlost", freeze_timeout=None))
    g.ssh = sshd.client()
    g._open_agent_session()
    yield g, sshd
    g.close()
    sshd.close()


def _wait_error(g: Guest) -> str:
    agent = g._agent
    assert agent is not None
    with pytest.raises(AgentError) as info:
        agent.expect(path="read", timeout=10)
    assert not isinstance(info.value, AgentTimeout), info.value
    return str(info.value)


def test_a_forward_that_closed_with_the_ssh_connection_is_said_so(
    guest: tuple[Guest, FakeSshd],
) -> None:
    g, sshd = guest
    sshd.kill()
    msg = _wait_error(g)
    assert msg.startswith(
        "the connection to the agent closed: its SSH forward ended with the guest's SSH "
        "connection (was the guest's sshd killed?); the agent may still run "
        "(waiting for message {"
    ), msg
    assert "agent exited" not in msg, msg


def test_an_agent_that_exited_is_still_said_so(guest: tuple[Guest, FakeSshd]) -> None:
    g, sshd = guest
    sshd.agent_exits()
    assert _wait_error(g).startswith("agent exited (end of output) (waiting for message {")
