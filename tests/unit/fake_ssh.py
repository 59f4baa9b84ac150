"""An SshClient over fake paramiko clients (the SSH unit tests' boundary)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import paramiko

from irqlab.vm.ssh import SshClient

C = TypeVar("C")

# what a FakeChannel's command prints and its exit status (None: it never ends)
Reply = Callable[[str], tuple[bytes, int | None]]


def never_ends(cmd: str) -> tuple[bytes, int | None]:
    return b"", None


class FakeChannel:
    """An exec channel whose command's output and exit status *reply* gives."""

    def __init__(self, reply: Reply = never_ends) -> None:
        self.commands: list[str] = []
        self.status_event = threading.Event()
        self.reply = reply
        self.out = b""
        self.status = -1
        self.closed = False

    def exec_command(self, cmd: str) -> None:
        self.commands.append(cmd)
        self.out, status = self.reply(cmd)
        if status is not None:
            self.status = status
            self.status_event.set()

    def settimeout(self, timeout: float | None) -> None:
        pass

    def recv(self, n: int) -> bytes:
        chunk, self.out = self.out[:n], self.out[n:]
        return chunk

    def recv_stderr(self, n: int) -> bytes:
        return b""

    def recv_exit_status(self) -> int:
        return self.status

    def sendall(self, data: bytes) -> None:
        pass

    def shutdown_write(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class FakeTransport:
    def __init__(
        self, *, active: bool = True, fail_open: bool = False, reply: Reply = never_ends
    ) -> None:
        self.active = active
        self.fail_open = fail_open
        self.reply = reply
        self.opened: list[FakeChannel] = []

    def is_active(self) -> bool:
        return self.active

    def set_keepalive(self, interval: int) -> None:
        pass

    def open_session(self, timeout: float | None = None) -> FakeChannel:
        if self.fail_open:
            raise paramiko.SSHException("Channel closed.")
        ch = FakeChannel(self.reply)
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


def fake_ssh(new_client: Callable[[], C], **kwargs: Any) -> tuple[SshClient, list[C]]:
    """An SshClient to 127.0.0.1:2222 whose connections are ``new_client()``s (listed
    in the returned list as they are made); *kwargs* go to SshClient."""
    clients: list[C] = []

    def factory() -> C:
        clients.append(new_client())
        return clients[-1]

    pkey = paramiko.Ed25519Key.__new__(paramiko.Ed25519Key)
    return SshClient("127.0.0.1", 2222, pkey=pkey, client_factory=factory, **kwargs), clients


def connected(*transports: FakeTransport) -> tuple[SshClient, list[FakeClient]]:
    """An SshClient connected over *transports*, one per connection it makes."""
    pending = list(transports)
    ssh, clients = fake_ssh(lambda: FakeClient(pending.pop(0)))
    return ssh.connect(timeout=5), clients
