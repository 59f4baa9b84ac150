"""A boot that cannot finish fails within seconds quoting QEMU, not after the boot
timeout (a fake QEMU stands in: tests/unit/fake_qemu.py)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from irqlab.vm.guest import Guest, GuestConfig, GuestError
from irqlab.vm.health import GuestFault

FAKE = Path(__file__).with_name("fake_qemu.py")


def _guest(tmp_path: Path, boot_timeout: float = 120.0) -> Guest:
    script = tmp_path / "qemu-system-fake"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" "$@"\n')
    script.chmod(0o755)
    g = Guest(GuestConfig(name="boot", boot_timeout=boot_timeout, log_dir=tmp_path / "logs"))
    g.qemu = SimpleNamespace(binary=script, datadir=None)
    g.image = SimpleNamespace(ready_marker="READY marker", qemu_args=lambda port: [], arch="x86_64")
    g.accel = SimpleNamespace(accel="kvm")
    return g


def test_kvm_internal_error_fails_the_boot_at_once_quoting_qemu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_QEMU_MODE", "internal-error")
    g = _guest(tmp_path)
    t0 = time.monotonic()
    try:
        with pytest.raises(GuestError) as info:
            g._boot()
    finally:
        g.close()
    assert time.monotonic() - t0 < 5.0
    msg = str(info.value)
    assert msg.startswith("QEMU failed while the guest booted: KVM internal error. Suberror: 1")
    assert "emulation failure" in msg and "qemu.log" in msg


def test_a_stopped_run_state_fails_the_boot_within_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_QEMU_MODE", "silent-error")
    g = _guest(tmp_path)
    t0 = time.monotonic()
    try:
        with pytest.raises(GuestFault, match=r"QEMU run state 'internal-error' \(booting\)"):
            g._boot()
    finally:
        g.close()
    assert time.monotonic() - t0 < 8.0


def test_qemu_exiting_during_boot_quotes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_QEMU_MODE", "exit-early")
    g = _guest(tmp_path)
    try:
        with pytest.raises(Exception, match="is not a valid device model name"):
            g._boot()
    finally:
        g.close()


def test_a_boot_that_times_out_shows_console_and_qemu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_QEMU_MODE", "normal")
    g = _guest(tmp_path, boot_timeout=1.0)
    g.image.ready_marker = "never printed"
    try:
        with pytest.raises(GuestError) as info:
            g._boot()
    finally:
        g.close()
    msg = str(info.value)
    assert "--- guest console (last lines)\nbooting" in msg and "--- QEMU said" in msg
