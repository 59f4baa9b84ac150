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
