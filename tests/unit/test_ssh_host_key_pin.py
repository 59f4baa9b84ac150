"""The guest image's pinned host key is checked before authentication: a server on the
guest's port that presents another key (another local process) is refused before our
client key is offered to it, with the message that names both keys."""

from __future__ import annotations

from collections.abc import Iterator

import paramiko
import pytest
from fake_sshd import CLIENT_KEY, HOST_PUB, FakeSshd

from irqlab.vm.ssh import HostKeyRefused, SshClient, SshError


@pytest.fixture
def sshd() -> Iterator[FakeSshd]:
    server = FakeSshd()
    yield server
    server.close()


def _other_key() -> str:
    key = paramiko.RSAKey.generate(1024)
    return f"{key.get_name()} {key.get_base64()} not-the-guest"


def test_a_server_with_another_host_key_is_refused_before_authentication(
    sshd: FakeSshd,
) -> None:
    pinned = _other_key()
    ssh = SshClient("127.0.0.1", sshd.port, pkey=CLIENT_KEY, host_key=pinned)
    with pytest.raises(HostKeyRefused) as e:
        ssh.connect(timeout=10)
    assert isinstance(e.value, SshError)
    said = str(e.value)
    assert said.startswith(f"127.0.0.1:{sshd.port} presented host key {HOST_PUB[:60]}..., ")
    assert f"not the guest image's {pinned[:60]}...: refusing" in said
    assert sshd.auths == []  # neither asked for methods nor offered a key
    assert ssh.attempts == 1  # not retried: it would be refused again
    assert sshd.transports and not sshd.transports[0].is_authenticated()


def test_the_pinned_host_key_is_let_in(sshd: FakeSshd) -> None:
    ssh = SshClient("127.0.0.1", sshd.port, pkey=CLIENT_KEY, host_key=HOST_PUB + " comment")
    try:
        ssh.connect(timeout=10)
        assert ssh.run("echo ok", timeout=10).out == "ok\n"
    finally:
        ssh.close()
    assert sshd.auths and sshd.auths[-1] == f"root offered {CLIENT_KEY.get_name()}"


def test_no_pinned_host_key_lets_any_in(sshd: FakeSshd) -> None:
    ssh = SshClient("127.0.0.1", sshd.port, pkey=CLIENT_KEY)
    try:
        ssh.connect(timeout=10)
    finally:
        ssh.close()
    assert sshd.auths
