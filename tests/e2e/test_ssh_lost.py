"""The guest's sshd (dropbear) killed: the guest lives on, out of reach.  The command
that ran says that its SSH connection closed under it and that the guest is alive; the
next command's reconnect says at once that nothing answers SSH in the guest any more
(it retried for 30 s, then said "SSH is not connected"); an agent wait says that its
connection, not the agent, closed.  A connection that closes
while the guest's sshd still listens is replaced as before (the fault tester's
kill-sshd cases)."""

from __future__ import annotations

import time

import pytest
from faultwait import raises_within  # same directory (rootdir-relative import)

from irqlab.vm.agent_client import AgentError, AgentTimeout
from irqlab.vm.guest import Guest
from irqlab.vm.ssh import CommandError, SshUnreachable

LIMIT = 6.0  # s (scaled with load): the watch's 2 s and the reconnect's 1.5 s, with margin
LATER_LIMIT = 1.0  # s (scaled): a later command's two attempts
ALIVE = "QEMU and the guest kernel are alive: the health watch has no verdict"
# in the background: the command that runs meanwhile loses its connection
KILL_SSHD = "(sleep 1; kill -9 $(pidof dropbear)) </dev/null >/dev/null 2>&1 &"
# only the dropbear serving this connection: the listening one stays
KILL_SESSION = "(sleep 1; kill -9 $PPID) </dev/null >/dev/null 2>&1 &"


def test_a_command_whose_sshd_was_killed_says_its_connection_closed(
    irqlab_fresh_guest: Guest,
) -> None:
    g = irqlab_fresh_guest
    e = raises_within(lambda: g.sh(f"{KILL_SSHD} sleep 60", timeout=90), LIMIT, CommandError)
    first = str(e).splitlines()[0]
    assert first.startswith(
        "command did not finish (rc=-1): the SSH connection to the guest closed while it "
        f"ran: no exit status came ({ALIVE}): "
    ), first


def test_the_next_command_after_sshd_was_killed_fails_at_once(irqlab_fresh_guest: Guest) -> None:
    g = irqlab_fresh_guest
    with pytest.raises(CommandError):
        g.sh(f"{KILL_SSHD} sleep 60", timeout=90)
    e = raises_within(lambda: g.sh("echo second"), LIMIT, SshUnreachable)
    first = str(e).splitlines()[0]
    assert first.startswith(
        "nothing answers SSH in the guest any more (was its sshd, dropbear, killed?): "
    ), first
    assert first.endswith(f"(running 'echo second'; {ALIVE})"), first
    # and every later command at once (it tries again: an sshd restarted is found); each
    # took 4 s: 5 resets and their backoff, and 2.5 s of waits for the watch's verdict
    e = raises_within(lambda: g.sh("echo third"), LATER_LIMIT, SshUnreachable)
    assert str(e).startswith("nothing answers SSH in the guest any more"), e
    # so does the agent's restart (its reconnect, made while the forward's error was
    # handled, counted no connection as unanswered: 30 s of retries, then SshError)
    e = raises_within(lambda: g.agent, LATER_LIMIT, SshUnreachable)
    assert str(e).startswith("nothing answers SSH in the guest any more"), e
    assert g.fault is None and g.machine is not None and g.machine.is_running()
    assert g.connection_lost() == "its SSH connection closed"


def test_an_agent_wait_whose_forward_closed_with_ssh_says_so(irqlab_fresh_guest: Guest) -> None:
    g = irqlab_fresh_guest
    g.agent.arm("read")
    g.sh(KILL_SSHD)
    t0 = time.monotonic()
    with pytest.raises(AgentError) as info:
        g.agent.expect(path="read", timeout=60)
    assert time.monotonic() - t0 < 1.0 + LIMIT, info.value
    assert not isinstance(info.value, AgentTimeout)
    first = str(info.value).splitlines()[0]
    assert first.startswith(
        "the connection to the agent closed: its SSH forward ended with the guest's SSH "
        f"connection (was the guest's sshd killed?); the agent may still run; {ALIVE} "
        "(waiting for message {"
    ), first
    assert g.fault is None


def test_a_connection_closed_while_sshd_listens_is_replaced(irqlab_fresh_guest: Guest) -> None:
    g = irqlab_fresh_guest
    """Only the session's own dropbear killed: the same first error, and the next
    command reconnects (no fast failure: something answers SSH)."""
    e = raises_within(lambda: g.sh(f"{KILL_SESSION} sleep 60", timeout=90), LIMIT, CommandError)
    assert str(e).startswith("command did not finish (rc=-1): the SSH connection"), e
    assert g.sh("echo second").strip() == "second"
    assert g.ssh is not None and g.ssh.reconnects == 1
    assert g.agent.request("ping")["pong"]
