"""A command killed by a signal: the server's "exit-signal" request reaches the result.

A real paramiko server (in-process, over a socket pair) answers exec requests the way
dropbear does for a crashed command: exit-signal, EOF, close.  Without
track_exit_signals, paramiko ignores the request and the status reads -1 (a dropped
connection)."""

from __future__ import annotations

import contextlib
import pickle
import socket
import threading
from collections.abc import Iterator

import paramiko
import pytest
from paramiko.common import MSG_CHANNEL_REQUEST

from irqlab.vm.exit_signal import ExitSignal, exit_signal, signal_status, track_exit_signals
from irqlab.vm.ssh import CommandError, RunResult, SshClient

HOST_KEY = paramiko.RSAKey.generate(1024)


class _Server(paramiko.ServerInterface):
    def __init__(self) -> None:
        self.commands: list[bytes] = []
        self.exec_event = threading.Event()

    def check_auth_none(self, username: str) -> int:
        return paramiko.AUTH_SUCCESSFUL

    def get_allowed_auths(self, username: str) -> str:
        return "none"

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return paramiko.OPEN_SUCCEEDED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        self.commands.append(command)
        self.exec_event.set()
        return True


def _send_exit_signal(chan: paramiko.Channel, name: str, core: bool, message: str) -> None:
    m = paramiko.Message()
    m.add_byte(bytes([MSG_CHANNEL_REQUEST]))
    m.add_int(chan.remote_chanid)
    m.add_string("exit-signal")
    m.add_boolean(False)
    m.add_string(name)
    m.add_boolean(core)
    m.add_string(message)
    m.add_string("")  # language tag
    chan.transport._send_user_message(m)  # type: ignore[attr-defined]


def _serve(sock: socket.socket, end: dict[str, object]) -> None:
    """Serve channels until the socket closes: each exec ends as *end* says."""
    t = paramiko.Transport(sock)
    t.add_server_key(HOST_KEY)
    server = _Server()
    t.start_server(server=server)
    while t.is_active():
        chan = t.accept(timeout=0.5)
        if chan is None:
            continue
        server.exec_event.wait(5)
        server.exec_event.clear()
        chan.sendall(b"partial output\n")
        if "signal" in end:
            name, core = str(end["signal"]), bool(end.get("core"))
            _send_exit_signal(chan, name, core, str(end.get("message", "")))
        else:
            chan.send_exit_status(int(str(end["status"])))
        # the client may close the transport once it has the exit status (paramiko's
        # EOFError here was an unhandled thread exception in a later test)
        with contextlib.suppress(EOFError, OSError):
            chan.shutdown_write()
            chan.close()


@pytest.fixture
def end() -> dict[str, object]:
    return {"status": 0}


@pytest.fixture
def client(end: dict[str, object]) -> Iterator[SshClient]:
    """An SshClient connected to the in-process server (its connect() as the guest's)."""
    ours, theirs = socket.socketpair()
    server = threading.Thread(target=_serve, args=(theirs, end), daemon=True)
    server.start()

    class _Factory(paramiko.SSHClient):
        def connect(self, hostname: str, **kw: object) -> None:  # type: ignore[override]
            self.set_missing_host_key_policy(paramiko.AutoAddPolicy())
            t = paramiko.Transport(ours)
            t.start_client(timeout=10)
            t.auth_none("root")
            self._transport = t

    c = SshClient("in-process", 22, client_factory=_Factory)
    c.connect(timeout=10)
    try:
        yield c
    finally:
        c.close()
        theirs.close()
        server.join(5)


@pytest.mark.parametrize(
    ("name", "core", "status"), [("SEGV", True, 139), ("KILL", False, 137), ("ABRT", True, 134)]
)
def test_a_command_killed_by_a_signal_has_the_shells_status_and_the_signals_name(
    client: SshClient, end: dict[str, object], name: str, core: bool, status: int
) -> None:
    end.update(signal=name, core=core, message="")
    end.pop("status", None)
    result = client.run("./crashes", timeout=10)
    assert result.rc == status, result
    assert result.signal == ExitSignal(name, core, ""), result
    assert result.out == "partial output\n"
    rc, out, err = result  # still a three-tuple
    assert (rc, out, err) == (status, "partial output\n", "")
    with pytest.raises(CommandError, match=f"killed by signal {name}.*rc={status}"):
        client.check("./crashes", timeout=10)


def test_a_normal_exit_has_no_signal(client: SshClient, end: dict[str, object]) -> None:
    end["status"] = 3
    result = client.run("false", timeout=10)
    assert (result.rc, result.signal) == (3, None)
    with pytest.raises(CommandError, match=r"\(rc=3\)"):
        client.check("false", timeout=10)


def test_a_signal_this_host_does_not_know_still_ends_the_command(
    client: SshClient, end: dict[str, object]
) -> None:
    end.update(signal="NOTASIGNAL", message="from another OS")
    end.pop("status", None)
    result = client.run("x", timeout=10)
    assert result.rc == 255 and result.signal is not None, result
    assert result.signal.describe() == "killed by signal NOTASIGNAL: from another OS"


def test_other_channel_requests_still_reach_paramiko() -> None:
    """The wrapper hands every other request to paramiko's own handler unchanged."""
    ours, theirs = socket.socketpair()
    t = paramiko.Transport(ours)
    seen: list[str] = []

    def base(chan: object, m: paramiko.Message) -> None:
        seen.append(m.get_text())

    t._channel_handler_table = {MSG_CHANNEL_REQUEST: base}  # type: ignore[attr-defined]
    track_exit_signals(t)
    m = paramiko.Message()
    m.add_string("exit-status")
    m.add_boolean(False)
    m.rewind()
    t._channel_handler_table[MSG_CHANNEL_REQUEST](object(), m)  # type: ignore[attr-defined]
    assert seen == ["exit-status"]
    assert exit_signal(object()) is None
    ours.close()
    theirs.close()


def test_status_numbers_and_results_survive_pickling() -> None:
    assert signal_status("SEGV") == 139 and signal_status("HUP") == 129
    r = RunResult(139, "o", "e", ExitSignal("SEGV", True, ""))
    back = pickle.loads(pickle.dumps(r))
    assert back == r and back.signal == r.signal, back
    assert "signal='SEGV'" in repr(r) and "signal" not in repr(RunResult(0, "", ""))
    assert back.out_bytes == r.out_bytes == b"o"
    # _replace keeps the signal (RunResult's own); _make skips __new__: no signal then,
    # but no AttributeError
    assert r._replace(out="x").signal == r.signal and repr(RunResult._make((1, "", "")))


def test_a_transport_without_the_table_is_left_alone() -> None:
    class Fake:
        pass

    fake = Fake()
    track_exit_signals(fake)  # type: ignore[arg-type]
    assert not hasattr(fake, "_channel_handler_table")
