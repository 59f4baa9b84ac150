"""Guest.close never hangs in the agent session's goodbye: a Ctrl-C inside paramiko's
send can leave its lock taken for good, and the goodbye then waited for ever (seen: a
pytest stopped by SIGINT kept running with its QEMU)."""

from __future__ import annotations

import threading
import time

import pytest

from irqlab.vm import guest as guest_mod
from irqlab.vm.guest import Guest, GuestConfig


class _StuckAgent:
    """An agent client whose close waits on a lock nobody will release."""

    last_heartbeat: float | None = None
    interrupted: str | None = None

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lock.acquire()
        self.entered = threading.Event()

    def close(self, timeout: float = 10.0, *, goodbye: bool = True) -> None:
        self.entered.set()
        self.lock.acquire()  # for ever


def test_close_gives_up_on_a_stuck_agent_goodbye(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(guest_mod, "AGENT_CLOSE_S", 0.3)
    g = Guest(GuestConfig())
    agent = _StuckAgent()
    g._agent = agent  # type: ignore[assignment]
    t0 = time.monotonic()
    g.close()
    assert time.monotonic() - t0 < 2.0
    assert agent.entered.is_set() and g._agent is None
    assert "closing the agent's session did not finish within 0.3 s" in capsys.readouterr().err


class _Agent:
    """An agent client whose last heartbeat came *silent_for* s ago."""

    interrupted: str | None = None

    def __init__(self, silent_for: float) -> None:
        self.last_heartbeat = time.monotonic() - silent_for
        self.closed_with: list[tuple[float, bool]] = []

    def close(self, timeout: float = 10.0, *, goodbye: bool = True) -> None:
        self.closed_with.append((timeout, goodbye))


@pytest.mark.parametrize(
    ("silent_for", "interrupted", "closed_with"),
    [
        (10.0, None, (guest_mod.SILENT_CLOSE_S, False)),
        (0.0, None, (2, True)),
        (0.0, "request 'read' was interrupted (Failed)", (2, False)),
    ],
    ids=["silent", "beating", "interrupted"],
)
def test_close_says_no_goodbye_to_an_agent_whose_heartbeat_stopped(
    silent_for: float, interrupted: str | None, closed_with: tuple[float, bool]
) -> None:
    """A guest frozen a few seconds before its close (the verdict not come yet): the
    agent's goodbye waited its 2 s, and its readers 2 s more (a close took 4 s).  Nor
    to a session whose request was interrupted: the goodbye waits behind that one."""
    g = Guest(GuestConfig())
    agent = _Agent(silent_for)
    agent.interrupted = interrupted
    g._agent = agent  # type: ignore[assignment]
    g.close()
    assert agent.closed_with == [closed_with]


def test_only_a_closed_ssh_connection_puts_a_guest_out_of_reach() -> None:
    """A dead agent is started again over SSH, in the same guest (its state kept): no
    reason to replace the guest; a closed SSH connection is."""
    from types import SimpleNamespace

    from irqlab.vm.guest import Guest, GuestConfig

    g = Guest(GuestConfig(name="t"))
    g.ssh = SimpleNamespace(is_active=lambda: True)  # type: ignore[assignment]
    g._agent = SimpleNamespace(eof=True)  # type: ignore[assignment]
    assert g.connection_lost() is None
    g.ssh = SimpleNamespace(is_active=lambda: False)  # type: ignore[assignment]
    assert g.connection_lost() == "its SSH connection closed"
    g.ssh = None
    assert g.connection_lost() == "its SSH connection closed"
