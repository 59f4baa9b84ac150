"""A script's ``logging.basicConfig(level=logging.DEBUG)`` shows a guest's start, step by
step with times, and the commands it runs (there were no irqlab records at all)."""

from __future__ import annotations

import logging
import re

import pytest

from irqlab.vm.guest import Guest, GuestConfig


@pytest.mark.parametrize("snapshot", [False, True], ids=["cold", "restored"])
def test_the_start_and_the_commands_are_logged(
    caplog: pytest.LogCaptureFixture, snapshot: bool
) -> None:
    caplog.set_level(logging.DEBUG, logger="irqlab")
    with Guest(GuestConfig(name="logged", snapshot=snapshot)) as g:
        assert g.sh("echo hi").strip() == "hi"
        restored = g.restored
    said = [
        (r.levelno, r.getMessage())
        for r in caplog.records
        if r.name == "irqlab.vm.guest" and r.getMessage().startswith("logged: ")
    ]
    infos = [m.removeprefix("logged: ") for lvl, m in said if lvl == logging.INFO]
    steps = (
        ["restoring the snapshot ", "snapshot restored after", "RNG reseeded after", "ssh up after"]
        if restored
        else ["booting cold (", "console ready after", "ssh up after", "module loaded after"]
    )
    steps += ["agent ready after", "stopping QEMU"]
    at = [next((i for i, m in enumerate(infos) if m.startswith(s)), -1) for s in steps]
    assert -1 not in at and at == sorted(at), infos
    assert all(re.search(r"after \d+\.\d\d s$", m) for m in infos if " after " in m), infos
    debug = [m for lvl, m in said if lvl == logging.DEBUG]
    assert any(m == "logged: running 'echo hi' (timeout 60 s)" for m in debug), debug
    assert any(re.fullmatch(r"logged: 'echo hi' ended: rc=0 after \d+\.\d\d s", m) for m in debug)
