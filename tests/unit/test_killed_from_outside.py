"""A snapshot load that lost QMP because QEMU was told to terminate: QEMU closes the
socket as it exits, so the load can fail a moment before the exit is seen.  The exit
decides whether the snapshot was at fault (it seemed healthy, and the snapshot was
removed and the guest booted cold)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from irqlab.vm import guest
from irqlab.vm.guest import Guest, GuestConfig
from irqlab.vm.machine import MachineError


class _Exiting:
    """What the restore sees of a QEMU process: a real child that exits by itself
    with *status* after *delay* seconds."""

    def __init__(self, delay: float, status: int) -> None:
        code = f"import time, sys; time.sleep({delay}); sys.exit({status})"
        self.proc = subprocess.Popen([sys.executable, "-c", code])

    @property
    def pid(self) -> int:
        return self.proc.pid

    def is_running(self) -> bool:
        return self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise MachineError("still running") from None


@pytest.mark.parametrize(("status", "outside"), [(0, True), (1, False)])
def test_an_exit_just_after_the_lost_connection_decides(status: int, outside: bool) -> None:
    g = Guest(GuestConfig())
    qemu = _Exiting(0.3, status)
    g.machine = qemu  # type: ignore[assignment]
    try:
        assert qemu.is_running()
        assert g._killed_from_outside() is outside
    finally:
        qemu.proc.kill()
        qemu.proc.wait()


def test_a_qemu_that_goes_on_running_is_the_snapshots_fault(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the whole wait runs out here: a short one (2 s, up to 16 on a loaded host)
    monkeypatch.setattr(guest, "EXIT_AFTER_LOST_QMP_S", 0.2)
    g = Guest(GuestConfig())
    qemu = _Exiting(30, 0)
    g.machine = qemu  # type: ignore[assignment]
    try:
        assert g._killed_from_outside() is False
    finally:
        qemu.proc.kill()
        qemu.proc.wait()
