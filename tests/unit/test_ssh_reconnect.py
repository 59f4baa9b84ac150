"""SshClient does not reuse a broken connection: a dead transport or a failed channel open
makes it connect again (issue 16 item 9); fakes stand in for paramiko."""

from __future__ import annotations

import threading
from typing import Any

import paramiko
import pytest
from fake_ssh import fake_ssh  # same directory (rootdir-relative import)

from irqlab.vm.ssh import SshClient


class FakeChannel:
    def __init__(self) -> None:
        self.commands: list[str] = []
        self.status_event = threading.Event()

    def exec_command(self, cmd: str) -> None:
        self.commands.append(cmd)

    def recv(self, n: int) -> bytes:
        return b""

    def recv_stderr(self, n: int) -> bytes:
        return b""

    def sendall(self, data: bytes) -> None:
        pass

    def shutdown_write(self) -> None:
        pass


class FakeTransport:
    def __init__(self, *, active: bool = True, fail_open: bool = False) -> None:
        self.active = active
        self.fail_open = fail_open
        self.opened: list[FakeChannel] = []

    def is_active(self) -> bool:
        return self.active

    def set_keepalive(self, interval: int) -> None:
        pass

    def open_session(self, timeout: float | None = None) -> FakeChannel:
        if self.fail_open:
            raise paramiko.SSHException("Channel closed.")
        ch = FakeChannel()
        self.opened.append(ch)
        return ch


class FakeClient:
    def __init__(self, transport: FakeTransport) -> None:
        self.transport = transport
        self.closed = False

    def connect(self, hostname: str, **kw: Any) -> None:
        pass

    def get_transport(self) -> FakeTransport:
        return self.transport

    def close(self) -> None:
        self.closed = True


def make(*transports: FakeTransport) -> tuple[SshClient, list[FakeClient]]:
    pending = list(transports)
    ssh, clients = fake_ssh(lambda: FakeClient(pending.pop(0)))
    return ssh.connect(timeout=5), clients


def test_failed_channel_open_reconnects_and_keeps_the_old_connection_open() -> None:
    broken, fresh = FakeTransport(fail_open=True), FakeTransport()
    ssh, clients = make(broken, fresh)
    proc = ssh.open_process("agent")
    assert [ch.commands for ch in fresh.opened] == [["agent"]]
    assert proc.channel is fresh.opened[0]
    assert ssh.reconnects == 1
    # channels already open on the old connection may still be in use until close()
    assert not clients[0].closed
    ssh.close()
    assert clients[0].closed and clients[1].closed


def test_dead_transport_is_noticed_before_opening() -> None:
    dead, fresh = FakeTransport(), FakeTransport()
    ssh, _ = make(dead, fresh)
    dead.active = False
    ssh.open_process("true")
    assert not dead.opened and len(fresh.opened) == 1
    assert ssh.reconnects == 1


def test_the_new_connection_is_tried_once() -> None:
    ssh, _ = make(FakeTransport(fail_open=True), FakeTransport(fail_open=True))
    with pytest.raises(paramiko.SSHException, match="Channel closed"):
        ssh.open_process("true")
    assert ssh.reconnects == 1
