"""What a REPL user sees of a Guest: help() of GuestConfig and of sh, the error for a
setting given to Guest instead of its config, and the repr."""

from __future__ import annotations

import dataclasses
import os
import pydoc
from pathlib import Path
from types import SimpleNamespace

import pytest

from irqlab.vm.guest import Guest, GuestConfig


def test_help_of_guestconfig_describes_every_field() -> None:
    """The fields' comments are invisible to help(): the docstring names each one."""
    text = pydoc.render_doc(GuestConfig, renderer=pydoc.plaintext)
    assert "Guest(GuestConfig(smp=2, module_params=...))" in text
    doc = GuestConfig.__doc__ or ""
    missing = [f.name for f in dataclasses.fields(GuestConfig) if f"``{f.name}``" not in doc]
    assert missing == []


def test_a_setting_given_to_guest_says_to_put_it_in_a_guestconfig() -> None:
    with pytest.raises(TypeError, match=r"Guest\(GuestConfig\(smp=2, name='x'\)\)"):
        Guest(smp=2, name="x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="no GuestConfig field either: cpus"):
        Guest(GuestConfig(), cpus=2)  # type: ignore[arg-type]


def test_the_repr_says_name_state_boot_port_and_logs() -> None:
    g = Guest(GuestConfig(name="t"))
    assert repr(g) == "<Guest 't' not started>"
    running = [True]
    g.machine = SimpleNamespace(is_running=lambda: running[0])  # type: ignore[assignment]
    g.log_dir, g.ssh_port, g.restored = Path("/logs/t-1"), 4022, True
    assert repr(g) == "<Guest 't' running, restored, ssh port 4022, logs /logs/t-1>"
    running[0] = False
    assert repr(g).startswith("<Guest 't' dead, restored, ")
    g.machine, g.restored = None, False
    assert repr(g) == "<Guest 't' closed, cold boot, logs /logs/t-1>"


def test_help_of_sh_names_what_it_raises() -> None:
    doc = Guest.sh.__doc__ or ""
    for name in ("CommandError", "SshTimeout", "GuestFault"):
        assert name in doc, name


def _fake_start(g: Guest, end: BaseException | None) -> None:
    """g.start() runs a stand-in of its steps: a QEMU started (its log directory made),
    then *end* raised in them (None: the guest came up, cold)."""

    def start() -> Guest:
        g.machine = SimpleNamespace(  # type: ignore[assignment]
            is_running=lambda: True, pid=os.getpid(), close=lambda: None, paths=None, spawned=False
        )
        g.log_dir = Path("/logs/t-2")
        if end is not None:
            raise end
        return g

    g._start = start  # type: ignore[method-assign]


def test_the_repr_of_a_start_that_did_not_come_up_says_so() -> None:
    """A restore cut short by Ctrl-C said "cold boot": none had happened."""
    g = Guest(GuestConfig(name="t"))
    _fake_start(g, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        g.start()
    assert repr(g) == "<Guest 't' closed, start interrupted, logs /logs/t-2>"
    _fake_start(g, RuntimeError("no"))
    with pytest.raises(RuntimeError):
        g.start()
    assert repr(g) == "<Guest 't' closed, start failed, logs /logs/t-2>"


def test_the_repr_says_the_last_starts_boot_and_a_fault_after_close() -> None:
    """A cold boot after a restored start's close() was still "restored"; a guest that
    died and was closed said only "closed"."""
    g = Guest(GuestConfig(name="t"))
    g.restored = True  # the last start's
    _fake_start(g, None)
    g.start()
    assert repr(g) == "<Guest 't' running, cold boot, logs /logs/t-2>"
    g.fault = SimpleNamespace(cause="guest kernel panic")  # type: ignore[assignment]
    assert repr(g).startswith("<Guest 't' dead, cold boot, ")
    g.machine = None
    assert repr(g) == "<Guest 't' closed after a fault, cold boot, logs /logs/t-2>"
