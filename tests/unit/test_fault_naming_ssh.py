"""A guest command whose SSH connection broke because the guest died raises the
verdict alone: the SSH errors under it (EBADF, EOF, "SSH is not connected") are its
consequence, and their chained paramiko tracebacks (~140 lines) came before the
test's own line (a driver developer's handler that hung the guest)."""

from __future__ import annotations

from typing import Any

import pytest

from irqlab.vm.guest import Guest, GuestConfig
from irqlab.vm.health import Fault, GuestFault
from irqlab.vm.ssh import SshError

HUNG = Fault("guest stopped responding: no agent heartbeat for 11 s", "console")


class _BrokenSsh:
    def __init__(self, error: BaseException) -> None:
        self.error = error

    def run(self, cmd: str, **kw: Any) -> Any:
        raise self.error


def _chained() -> SshError:
    try:
        try:
            raise OSError(9, "Bad file descriptor")
        except OSError:
            raise EOFError from None
    except EOFError as e:
        err = SshError("SSH is not connected")
        err.__context__ = e
        return err


def _fault_from_reconnect() -> GuestFault:
    """What the SSH client raises when the watch's verdict came in its reconnect."""
    fault = GuestFault(HUNG)
    fault.__context__ = _chained()
    return fault


def _guest_whose_ssh_fails(
    monkeypatch: pytest.MonkeyPatch, error: BaseException, verdict: Fault | None
) -> Guest:
    """A Guest whose SSH raises *error* and whose health watch's verdict is *verdict*."""
    g = Guest(GuestConfig(name="unchained"))
    g.ssh = _BrokenSsh(error)  # type: ignore[assignment]
    monkeypatch.setattr(g, "check_health", lambda: None)
    monkeypatch.setattr(g, "console_mark", lambda: None)
    monkeypatch.setattr(g, "wait_fault", lambda timeout: verdict)
    return g


@pytest.mark.parametrize(
    "error",
    [_chained(), _fault_from_reconnect()],
    ids=["ssh-error", "fault-from-reconnect"],
)
def test_a_command_the_guests_death_ended_raises_the_verdict_unchained(
    monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    g = _guest_whose_ssh_fails(monkeypatch, error, HUNG)
    with pytest.raises(GuestFault) as info:
        g.sh("echo hi")
    assert str(info.value).startswith(f"{HUNG.cause} (running 'echo hi')"), str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_a_command_that_failed_on_its_own_keeps_its_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    error = _chained()
    g = _guest_whose_ssh_fails(monkeypatch, error, None)
    with pytest.raises(SshError) as info:
        g.sh("echo hi")
    assert info.value is error


@pytest.mark.parametrize(
    ("cmd", "error", "said"),
    [
        (b"echo hi", TypeError, "a guest command is a str, not bytes: b'echo hi'"),
        ("echo a\0b", ValueError, "cannot hold a NUL character"),
    ],
)
def test_a_command_that_is_no_shell_text_is_refused(
    monkeypatch: pytest.MonkeyPatch, cmd: object, error: type[Exception], said: str
) -> None:
    """``g.sh(b"echo hi")`` ran the text ``b'echo hi'`` (exit 127) and ``"echo a\\0b"``
    ran ``echo a``, both without a word; nothing reaches the guest now."""
    g = Guest(GuestConfig(name="bad-command"))
    ran: list[str] = []
    g.ssh = _BrokenSsh(AssertionError("reached the guest"))  # type: ignore[assignment]
    monkeypatch.setattr(g, "check_health", lambda: ran.append("looked"))
    for call in (g.sh, g.run):
        with pytest.raises(error, match=said):
            call(cmd)  # type: ignore[arg-type]
    assert ran == []
