"""Strings a user gives (a PCI address to bind, a module parameter's name and value, a
module's ``depends=``) stay one word in the guest shell commands they go into: a quote,
a blank or a semicolon in them runs nothing of its own."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest

from irqlab.bench.guest import BenchGuest
from irqlab.build.kernel import module_name
from irqlab.vm import guest as guest_mod
from irqlab.vm.guest import EXTRA_DIR, Guest, GuestConfig
from irqlab.vm.ssh import RunResult

NASTY = "x'; touch /tmp/pwned; echo 'y z"


def _said(g: Guest, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The shell commands *g* runs (sh), its driver named with a blank."""
    said: list[str] = []

    def sh(cmd: str, **_kw: Any) -> str:
        said.append(cmd)
        return "old\n"

    monkeypatch.setattr(g, "sh", sh)
    monkeypatch.setattr(g, "module_name", lambda: "my drv")
    monkeypatch.setattr(g, "pci_address", lambda: NASTY)
    monkeypatch.setattr(g, "wait_for_node", lambda path, timeout=30.0: None)
    return said


def test_bind_and_unbind_keep_the_address_one_word(monkeypatch: pytest.MonkeyPatch) -> None:
    g = Guest(GuestConfig(name="t"))
    said = _said(g, monkeypatch)
    g.bind(NASTY)
    assert g.unbind() == NASTY
    assert [shlex.split(c) for c in said] == [
        ["echo", NASTY, ">", "/sys/bus/pci/drivers/my drv/bind"],
        ["echo", NASTY, ">", "/sys/bus/pci/drivers/my drv/unbind"],
    ]


def test_set_param_keeps_the_name_and_value_one_word(monkeypatch: pytest.MonkeyPatch) -> None:
    g = BenchGuest(GuestConfig(name="t"))
    said = _said(g, monkeypatch)
    assert g.set_param("a b;c", NASTY) == "old"
    path = "/sys/module/my drv/parameters/a b;c"
    assert [shlex.split(c) for c in said] == [["cat", path], ["echo", NASTY, ">", path]]


def test_a_modules_dependency_stays_one_word(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``depends=`` comes from the user's .ko: the check whether it is loaded and its
    modprobe take it whole."""
    ko = tmp_path / "mine.ko"
    ko.write_bytes(b"\0name=mine\0depends=" + NASTY.encode() + b"\0vermagic=6.1\0")
    g = Guest(GuestConfig(name="t", extra_modules=[ko]))
    g.ssh = object()  # type: ignore[assignment]  # connected, as far as install_extras asks
    steps: list[list[str]] = []

    def kernel_step(commands: list[str], then: str = "") -> str:
        steps.append(list(commands))
        return "script"

    monkeypatch.setattr(guest_mod, "_kernel_step", kernel_step)
    monkeypatch.setattr(g, "_put", lambda data, remote, mode, timeout=60.0: None)
    ok = RunResult(0, "", "")
    monkeypatch.setattr(g, "_run_kernel_step", lambda script, what, timeout=None: ok)
    g.install_extras()
    dep = module_name(NASTY)  # what /proc/modules would list: "pwned; echo 'y z"
    assert [shlex.split(c) for (c,) in steps] == [
        ["grep", "-q", f"^{dep} ", "/proc/modules", "||", "modprobe", NASTY],
        ["insmod", f"{EXTRA_DIR}/mine.ko"],
    ]
