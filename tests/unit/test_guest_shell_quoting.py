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
    let_go, *rest = said  # what another driver holds is let go first
    assert [shlex.split(c) for c in rest] == [
        ["echo", NASTY, ">", "/sys/bus/pci/drivers/my drv/bind"],
        ["echo", NASTY, ">", "/sys/bus/pci/drivers/my drv/unbind"],
    ]
    words = shlex.split(let_go)
    assert words[0] == f"d=/sys/bus/pci/devices/{NASTY};", words
    assert NASTY in words and "my drv" in words, words  # each one word
    assert "/tmp/pwned" not in words, words


def test_bind_uio_pci_generic_keeps_the_address_one_word(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The address goes into the device's driver_override path and the bind command."""
    g = Guest(GuestConfig(name="t"))
    said = _said(g, monkeypatch)
    ran: list[str] = []

    def run(cmd: str, **_kw: Any) -> RunResult:
        ran.append(cmd)
        return RunResult(0, "", "")

    monkeypatch.setattr(g, "_run", run)
    assert g.bind_uio_pci_generic()[0] == NASTY
    assert [shlex.split(c) for c in said[1:]] == [
        ["modprobe", "uio_pci_generic", "&&", "echo", "uio_pci_generic", ">",
         f"/sys/bus/pci/devices/{NASTY}/driver_override"],
    ]  # fmt: skip
    assert [shlex.split(c) for c in ran] == [
        ["echo", NASTY, ">", "/sys/bus/pci/drivers/uio_pci_generic/bind"]
    ]


def test_set_param_keeps_the_value_one_word(monkeypatch: pytest.MonkeyPatch) -> None:
    g = BenchGuest(GuestConfig(name="t"))
    said = _said(g, monkeypatch)
    assert g.set_param("ring_size", NASTY) == "old"
    path = "/sys/module/my drv/parameters/ring_size"
    assert [shlex.split(c) for c in said] == [["cat", path], ["echo", NASTY, ">", path]]


@pytest.mark.parametrize("name", ["../../../kernel/x", "a/b", "..", "a b;c", "", "ring_size\n"])
def test_set_param_refuses_a_name_that_is_no_plain_identifier(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """A ``/`` or ``..`` in the name pointed the write at another sysfs file, quoted or
    not: refused before any command runs."""
    g = BenchGuest(GuestConfig(name="t"))
    said = _said(g, monkeypatch)
    with pytest.raises(ValueError, match=r"not a plain identifier \(\[A-Za-z0-9_\]\+\)"):
        g.set_param(name, 1)
    assert said == []


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

    def kernel_step(commands: list[str], then: str = "", mark: str = "") -> str:
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
