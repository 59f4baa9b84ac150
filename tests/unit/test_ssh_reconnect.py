"""SshClient does not reuse a broken connection: a dead transport or a failed channel open
makes it connect again (issue 16 item 9); fakes stand in for paramiko."""

from __future__ import annotations

import logging

import paramiko
import pytest
from fake_ssh import FakeTransport, connected  # same directory (rootdir-relative import)


def test_failed_channel_open_reconnects_and_keeps_the_old_connection_open() -> None:
    broken, fresh = FakeTransport(fail_open=True), FakeTransport()
    ssh, clients = connected(broken, fresh)
    proc = ssh.open_process("agent")
    assert [ch.commands for ch in fresh.opened] == [[f"export IRQLAB_CMD={proc.tag}; agent"]]
    assert proc.channel is fresh.opened[0]
    assert ssh.reconnects == 1
    # channels already open on the old connection may still be in use until close()
    assert not clients[0].closed
    ssh.close()
    assert clients[0].closed and clients[1].closed


def test_dead_transport_is_noticed_before_opening() -> None:
    dead, fresh = FakeTransport(), FakeTransport()
    ssh, _ = connected(dead, fresh)
    dead.active = False
    ssh.open_process("true")
    assert not dead.opened and len(fresh.opened) == 1
    assert ssh.reconnects == 1


def test_the_new_connection_is_tried_once() -> None:
    ssh, _ = connected(FakeTransport(fail_open=True), FakeTransport(fail_open=True))
    with pytest.raises(paramiko.SSHException, match="Channel closed"):
        ssh.open_process("true")
    assert ssh.reconnects == 1


class _Dead(Exception):
    pass


def test_a_check_that_raises_ends_a_reconnect_before_the_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The guest died (its QEMU's exit reset the connection): the check names it, no
    "reconnecting" warning and no new connection (up to 30 s to a dead guest)."""
    dead = FakeTransport()
    ssh, clients = connected(dead, FakeTransport())
    asked: list[str] = []

    def check() -> None:
        asked.append("check")
        raise _Dead("the guest died")

    ssh.reconnect_check = check
    dead.active = False
    with caplog.at_level(logging.WARNING, logger="irqlab"), pytest.raises(_Dead):
        ssh.run("true", timeout=5)
    assert asked == ["check"] and len(clients) == 1 and ssh.reconnects == 0
    assert not caplog.records, [r.getMessage() for r in caplog.records]


def test_a_check_that_passes_lets_the_reconnect_go_on(caplog: pytest.LogCaptureFixture) -> None:
    broken, fresh = FakeTransport(fail_open=True), FakeTransport()
    ssh, _ = connected(broken, fresh)
    asked: list[str] = []
    ssh.reconnect_check = lambda: asked.append("check")
    with caplog.at_level(logging.WARNING, logger="irqlab"):
        ssh.open_process("true")
    assert asked == ["check"] and len(fresh.opened) == 1 and ssh.reconnects == 1
    assert [r.getMessage() for r in caplog.records][-1].endswith(": reconnecting")
