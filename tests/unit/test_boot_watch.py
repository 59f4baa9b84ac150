"""A boot that cannot finish fails within seconds quoting QEMU, not after the boot
timeout (a fake QEMU stands in: tests/unit/fake_qemu.py)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from irqlab.vm.guest import Guest, GuestConfig, GuestError, GuestTimeout
from irqlab.vm.health import GuestFault

FAKE = Path(__file__).with_name("fake_qemu.py")


def _guest(tmp_path: Path, boot_timeout: float = 120.0) -> Guest:
    script = tmp_path / "qemu-system-fake"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" "$@"\n')
    script.chmod(0o755)
    g = Guest(GuestConfig(name="boot", boot_timeout=boot_timeout, log_dir=tmp_path / "logs"))
    g.qemu = SimpleNamespace(binary=script, datadir=None)
    g.image = SimpleNamespace(
        ready_marker="READY marker",
        failed_marker="FAILED marker",
        qemu_args=lambda port: [],
        arch="x86_64",
    )
    g.accel = SimpleNamespace(accel="kvm")
    return g


def _failed_boot(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
    error: type[Exception],
    *,
    match: str | None = None,
    boot_timeout: float = 120.0,
    ready_marker: str | None = None,
) -> tuple[str, float]:
    """Boot the fake QEMU in *mode*; the boot must raise *error*: (its text, seconds)."""
    monkeypatch.setenv("FAKE_QEMU_MODE", mode)
    g = _guest(tmp_path, boot_timeout=boot_timeout)
    if ready_marker is not None:
        g.image.ready_marker = ready_marker
    t0 = time.monotonic()
    try:
        with pytest.raises(error, match=match) as info:
            g._boot()
    finally:
        g.close()
    return str(info.value), time.monotonic() - t0


@pytest.mark.parametrize(
    ("mode", "starts", "also"),
    [
        # QEMU's own words on stderr
        (
            "internal-error",
            "QEMU failed while the guest booted: KVM internal error. Suberror: 1",
            ("emulation failure", "qemu.log"),
        ),
        # the boot script's failed marker and its reason (not the boot timeout)
        (
            "boot-script-fails",
            "the guest's boot script failed: no eth0 (is a NIC attached?)\n",
            ("--- guest console (last lines)\nbooting",),
        ),
    ],
)
def test_a_boot_that_cannot_finish_fails_at_once_saying_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str, starts: str, also: tuple[str, ...]
) -> None:
    msg, took = _failed_boot(tmp_path, monkeypatch, mode, GuestError)
    assert took < 5.0
    assert msg.startswith(starts), msg
    assert all(s in msg for s in also), msg


def test_a_stopped_run_state_fails_the_boot_within_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    match = r"QEMU run state 'internal-error' \(booting\)"
    _, took = _failed_boot(tmp_path, monkeypatch, "silent-error", GuestFault, match=match)
    assert took < 8.0


def test_qemu_exiting_during_boot_quotes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    match = "is not a valid device model name"
    _failed_boot(tmp_path, monkeypatch, "exit-early", Exception, match=match)


def test_a_boot_that_times_out_shows_console_and_qemu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    msg, _ = _failed_boot(
        tmp_path,
        monkeypatch,
        "normal",
        GuestTimeout,
        boot_timeout=1.0,
        ready_marker="never printed",
    )
    assert "--- guest console (last lines)\nbooting" in msg and "--- QEMU said" in msg
    # the whole boot_timeout is named (not the last half-second slice of the wait)
    assert msg.startswith("the guest did not print 'never printed' within boot_timeout=1 s; see ")
    assert "console.log" in msg.splitlines()[0]


def test_a_ready_marker_after_the_boot_timeout_is_said_late_and_not_shown_as_if_in_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The marker that comes while the timed-out boot waits for the watch's verdict: the
    message said "did not print 'IRQLAB-READY' within boot_timeout" above a console
    tail ending in that marker (read after the wait)."""
    g = _guest(tmp_path, boot_timeout=1.0)
    g.image.ready_marker = "LATE marker"
    monkeypatch.setenv("FAKE_QEMU_MODE", "normal")
    waited = g.wait_fault

    def marker_while_waiting(timeout: float) -> object:
        console = g._console()
        assert console is not None
        console._append(b"LATE marker uptime=1.61\n")  # as the console's reader does
        return waited(0.0)

    monkeypatch.setattr(g, "wait_fault", marker_while_waiting)
    try:
        with pytest.raises(GuestTimeout) as info:
            g._boot()
    finally:
        g.close()
    first, _, rest = str(info.value).partition("\n")
    assert first.startswith(
        "the guest did not print 'LATE marker' within boot_timeout=1 s "
        "(it printed it a moment after); see "
    ), first
    assert "--- guest console (last lines)\nbooting\nREADY marker 42\n---" in rest, rest
