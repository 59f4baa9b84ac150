"""SshClient connection retries with a fake paramiko client and a fake clock."""

from __future__ import annotations

from typing import Any

import paramiko
import pytest
from fake_ssh import fake_ssh  # same directory (rootdir-relative import)

from irqlab.vm.ssh import RunResult, SshClient, SshError


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


class FakeClient:
    """Fails with the queued exceptions, then connects."""

    def __init__(self, script: list[BaseException | None], log: list[dict[str, Any]]) -> None:
        self.script = script
        self.log = log
        self.closed = False

    def connect(self, hostname: str, **kw: Any) -> None:
        self.log.append({"host": hostname, **kw})
        exc = self.script.pop(0)
        if exc is not None:
            raise exc

    def get_transport(self) -> None:
        return None

    def close(self) -> None:
        self.closed = True


def make(script: list[BaseException | None], clock: FakeClock) -> tuple[SshClient, list[Any]]:
    log: list[dict[str, Any]] = []
    ssh, clients = fake_ssh(lambda: FakeClient(script, log), clock=clock, sleep=clock.sleep)
    return ssh, [log, clients]


def test_retries_banner_errors_then_connects() -> None:
    clock = FakeClock()
    script: list[BaseException | None] = [
        paramiko.SSHException("Error reading SSH protocol banner"),
        ConnectionResetError(104, "reset"),
        EOFError(),
        TimeoutError("timed out"),
        None,
    ]
    ssh, (log, clients) = make(script, clock)
    ssh.connect(timeout=30, banner_timeout=1.5, attempt_timeout=2.0, retry_interval=0.1)
    assert ssh.attempts == 5
    assert all(c.closed for c in clients[:-1]) and not clients[-1].closed
    assert clock.sleeps == [0.1, 0.2, 0.4, 0.8]  # exponential backoff
    first = log[0]
    assert first["port"] == 2222 and first["username"] == "root"
    assert first["banner_timeout"] == 1.5 and first["timeout"] == 2.0
    assert first["look_for_keys"] is False and first["allow_agent"] is False


def test_backoff_is_capped() -> None:
    clock = FakeClock()
    script: list[BaseException | None] = [OSError("refused")] * 8 + [None]
    ssh, _ = make(script, clock)
    ssh.connect(timeout=60, retry_interval=0.25, max_interval=0.5)
    assert max(clock.sleeps) == 0.5


def test_gives_up_at_the_deadline_naming_the_last_error() -> None:
    clock = FakeClock()
    script: list[BaseException | None] = [paramiko.SSHException("banner")] * 1000
    ssh, _ = make(script, clock)
    with pytest.raises(SshError, match=r"127.0.0.1:2222 after \d+ attempts.*banner"):
        ssh.connect(timeout=5, retry_interval=0.5, max_interval=0.5)
    assert clock.now <= 5.0 + 1e-9


def test_authentication_failure_is_not_retried() -> None:
    clock = FakeClock()
    script: list[BaseException | None] = [paramiko.AuthenticationException("denied"), None]
    ssh, _ = make(script, clock)
    with pytest.raises(SshError, match="authentication"):
        ssh.connect(timeout=30)
    assert ssh.attempts == 1


def test_not_connected_is_an_error() -> None:
    ssh, _ = make([], FakeClock())
    with pytest.raises(SshError, match="not connected"):
        ssh.run("true")


def test_run_result_unpacks() -> None:
    rc, out, err = RunResult(1, "o", "e")
    assert (rc, out, err) == (1, "o", "e")
