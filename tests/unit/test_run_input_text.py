"""A command's stdin given as a str (``g.run(cmd, input="abc")``) is sent as UTF-8,
as its output is read as text: it was a ``TypeError: memoryview: a bytes-like object
is required, not 'str'`` from the send, the command started and then killed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fake_sshd import FakeSshd  # same directory (rootdir-relative import)

from irqlab.vm import ssh as ssh_mod


@pytest.fixture
def sshd() -> Iterator[FakeSshd]:
    server = FakeSshd()
    yield server
    server.close()


def test_a_str_input_is_sent_as_utf8(sshd: FakeSshd, monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[bytes] = []
    real = ssh_mod.send_all

    def recorded(chan: object, data: bytes | memoryview, *a: object) -> None:
        sent.append(bytes(data))
        real(chan, data, *a)  # type: ignore[arg-type]

    monkeypatch.setattr(ssh_mod, "send_all", recorded)
    ssh = sshd.client()
    try:
        r = ssh.run("echo ok", input="héllo\n", timeout=10)
    finally:
        ssh.close()
    assert (r.rc, r.out) == (0, "ok\n"), r
    assert b"".join(sent) == "héllo\n".encode()


def test_any_other_input_is_refused_before_the_command_starts(sshd: FakeSshd) -> None:
    ssh = sshd.client()
    try:
        with pytest.raises(TypeError, match=r"^input must be bytes or str, not int$"):
            ssh.run("sleep 100", input=5, timeout=10)  # type: ignore[arg-type]
        assert ssh.run("echo still", timeout=10).out == "still\n"
    finally:
        ssh.close()
