"""SshClient connection retries with a fake paramiko client and a fake clock."""

from __future__ import annotations

from typing import Any

import paramiko
import pytest
from fake_ssh import fake_ssh  # same directory (rootdir-relative import)

from irqlab.vm.loadscale import check_timeout
from irqlab.vm.ssh import NO_LOCAL_PORT_S, CommandError, RunResult, SshClient, SshError


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


QUIET_CHECK = """
import socket, sys, threading
import paramiko
from irqlab.vm import ssh

srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen()

def serve():  # a server that closes every connection before its banner
    while True:
        c, _ = srv.accept()
        c.close()

threading.Thread(target=serve, daemon=True).start()
for label, client in (("ours", ssh._default_client()), ("theirs", paramiko.SSHClient())):
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    try:
        client.connect("127.0.0.1", port=srv.getsockname()[1], username="u", password="p",
                       timeout=5, banner_timeout=5, look_for_keys=False, allow_agent=False)
    except Exception as e:
        print(f"-- {label} raised {type(e).__name__}", file=sys.stderr, flush=True)
"""


def test_our_connections_are_quiet_and_an_applications_own_are_not() -> None:
    """paramiko's transport thread logs a failed banner with a traceback; Python's
    last-resort handler printed ours (Ctrl-C while SSH connects).  Only our connections
    are quieted: an application's own paramiko connections still print it."""
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-c", QUIET_CHECK], capture_output=True, text=True, timeout=60
    )
    ours, _, theirs = r.stderr.partition("-- ours raised ")
    assert ours == "", ours  # nothing before our connection's exception
    assert theirs.startswith("SSHException"), r.stderr
    assert "Error reading SSH protocol banner" in theirs, r.stderr
    assert theirs.rstrip().endswith("-- theirs raised SSHException"), r.stderr


@pytest.mark.parametrize(
    ("timeout", "error", "said"),
    [
        (0, ValueError, "timeout must be more than 0 and at most 604800 s (a week), not 0"),
        (-1.5, ValueError, "timeout must be more than 0 and at most 604800 s (a week), not -1.5"),
        (
            float("nan"),
            ValueError,
            "timeout must be more than 0 and at most 604800 s (a week), not nan",
        ),
        # an OverflowError deep in the read left the command running
        (
            1e12,
            ValueError,
            "timeout must be more than 0 and at most 604800 s (a week), not 1000000000000.0",
        ),
        ("5", TypeError, "timeout must be a number of seconds, not '5'"),
        (True, TypeError, "timeout must be a number of seconds, not True"),
    ],
)
def test_a_timeout_that_is_no_wait_is_refused_before_anything_runs(
    timeout: object, error: type[Exception], said: str
) -> None:
    """-1 or 0 ran the command and then waited 2 s for a guest fault; "5" raised
    a TypeError from deep inside."""
    ssh, _ = fake_ssh(lambda: FakeClient([None], []))
    with pytest.raises(error) as e:
        ssh.run("true", timeout=timeout)  # type: ignore[arg-type]
    assert str(e.value) == said
    check_timeout(0.001)
    check_timeout(3)
    check_timeout(0, zero=True)  # an agent wait may look once without waiting
    with pytest.raises(
        ValueError, match=r"must be 0 or more and at most 604800 s \(a week\), not -1"
    ):
        check_timeout(-1, zero=True)


def test_an_infinite_timeout_is_refused() -> None:
    """inf passed the check and failed later (socket.settimeout: OverflowError)."""
    with pytest.raises(
        ValueError, match=r"timeout must be more than 0 and at most 604800 s \(a week\), not inf"
    ):
        check_timeout(float("inf"))


def test_a_replaced_run_result_keeps_its_signal_and_bytes() -> None:
    from irqlab.vm.exit_signal import ExitSignal

    sig = ExitSignal("SEGV", True, "")
    r = RunResult(139, "\ufffd\n", "", sig, b"\xff\n")
    again = r._replace(rc=1)
    assert (again.rc, again.out, again.signal, again.out_bytes) == (1, "\ufffd\n", sig, b"\xff\n")
    new_out = r._replace(out="x")
    assert new_out.out_bytes == b"x"  # a new text gives its own bytes
    with pytest.raises(ValueError, match="no fields"):
        r._replace(nosuch=1)


@pytest.mark.parametrize(
    ("out", "err", "said"),
    [
        ("", "", "command failed (rc=1): false\n(no output)"),
        ("hi\n", "", "command failed (rc=1): false\n--- stdout\nhi\n"),
        ("", "no such file\n", "command failed (rc=1): false\n--- stderr\nno such file\n"),
        ("a\n", "b\n", "command failed (rc=1): false\n--- stdout\na\n\n--- stderr\nb\n"),
    ],
)
def test_a_failed_commands_error_shows_the_streams_that_said_something(
    out: str, err: str, said: str
) -> None:
    """Two empty '--- stdout' / '--- stderr' sections said nothing, at length."""
    assert str(CommandError("false", RunResult(1, out, err))) == said


def test_no_free_local_port_for_seconds_is_the_hosts_fault() -> None:
    """Ephemeral ports used up: each connect failed with EADDRNOTAVAIL for the whole
    60 s, then 'no SSH connection ... after 64 attempts', as if the guest were at fault."""
    import errno

    clock = FakeClock()
    nothing_free = OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")
    per_address = paramiko.ssh_exception.NoValidConnectionsError(
        {("127.0.0.1", 2222): nothing_free}
    )
    for failure in (nothing_free, per_address):
        clock.now = 0.0
        ssh, _ = make([failure] * 1000, clock)
        with pytest.raises(SshError) as info:
            ssh.connect(timeout=60)
        # ports in TIME_WAIT come free in seconds: NO_LOCAL_PORT_S of them, not 60 s
        assert NO_LOCAL_PORT_S <= clock.now < NO_LOCAL_PORT_S + 2, (failure, clock.now)
        assert "no free local port to connect from" in str(info.value)
        assert "net.ipv4.ip_local_port_range" in str(info.value)
    # such failures with another between are retried as any other (and one that came
    # free: a connection)
    clock.now = 0.0
    script: list[BaseException | None] = [nothing_free] * 5 + [OSError("refused")]
    ssh, _ = make([*script, *[nothing_free] * 3, None], clock)
    ssh.connect(timeout=60)
    assert ssh.attempts == 10 and clock.now > NO_LOCAL_PORT_S, clock.now
