"""An SshClient over fake paramiko clients (the SSH unit tests' boundary)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import paramiko

from irqlab.vm.ssh import SshClient

C = TypeVar("C")


def fake_ssh(new_client: Callable[[], C], **kwargs: Any) -> tuple[SshClient, list[C]]:
    """An SshClient to 127.0.0.1:2222 whose connections are ``new_client()``s (listed
    in the returned list as they are made); *kwargs* go to SshClient."""
    clients: list[C] = []

    def factory() -> C:
        clients.append(new_client())
        return clients[-1]

    pkey = paramiko.Ed25519Key.__new__(paramiko.Ed25519Key)
    return SshClient("127.0.0.1", 2222, pkey=pkey, client_factory=factory, **kwargs), clients
