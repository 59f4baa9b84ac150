"""A step of a guest's start that failed because QEMU went away is the GuestFault
"QEMU exited with status -9", whatever the step was (a QMP call, the SSH login, the
QMP connect): one of three exception types came, by timing, and only one of them
said that QEMU died.  A failure of a live QEMU, or QEMU refusing its command line,
stays what it was."""

from __future__ import annotations

import pytest

from irqlab.vm.guest import Guest, GuestConfig, GuestFault, SshError
from irqlab.vm.machine import QemuExited


class _Exited:
    """A Machine whose QEMU exited with *status* (or runs, for None)."""

    def __init__(self, status: int | None) -> None:
        self.returncode = status
        self.spawned = True

    def is_running(self) -> bool:
        return self.returncode is None

    def stderr_tail(self) -> str:
        return "qemu: terminating"


def _named(status: int | None, e: Exception) -> BaseException:
    g = Guest(GuestConfig())
    g.machine = _Exited(status)  # type: ignore[assignment]
    return g._qemu_gone_under(e)


@pytest.mark.parametrize(
    "error",
    [
        SshError("SSH authentication failed: transport shut down or saw EOF"),
        QemuExited("QEMU exited before connecting", status=-9, said="", logs="/logs"),
    ],
    ids=["ssh-login", "qmp-connect"],
)
def test_a_step_qemu_died_under_is_the_fault(error: Exception) -> None:
    named = _named(-9, error)
    assert isinstance(named, GuestFault), named
    assert str(named).startswith("QEMU exited with status -9 (starting the guest)"), named


def test_what_qemu_said_or_a_live_qemu_s_failure_stays() -> None:
    refused = QemuExited("Property 'irqlab.nosuch' not found", status=1, said="", logs="")
    assert _named(1, refused) is refused  # its own words about its command line
    login = SshError("SSH authentication failed")
    assert _named(None, login) is login  # QEMU runs: the step's own failure
    interrupt = KeyboardInterrupt()
    assert _named(-9, interrupt) is interrupt  # Ctrl-C is never renamed


def test_qemu_s_own_crash_stays_qemu_exited() -> None:
    """An abort in the device's realize (SIGABRT, -6) is QEMU's story: its words stay."""
    crashed = QemuExited("QEMU exited before connecting", status=-6, said="assert", logs="")
    assert _named(-6, crashed) is crashed


def test_a_new_start_does_not_carry_the_last_qemu_s_fault() -> None:
    """After a crash, a restart that failed early was named with the old crash."""
    from irqlab.vm.health import Fault

    g = Guest(GuestConfig())
    g.fault = Fault("guest kernel panic: OLD", "")
    g.machine = _Exited(None)  # type: ignore[assignment]
    login = SshError("SSH authentication failed")
    assert g._qemu_gone_under(login) is not login  # the stale verdict renames it
    g.machine = None
    g.prepare = lambda: (_ for _ in ()).throw(SshError("no prerequisites"))  # type: ignore[method-assign]
    with pytest.raises(SshError):  # start() fails in its first step ...
        g.start()
    assert g.fault is None  # ... with the old verdict gone


def test_a_start_that_failed_before_qemu_was_spawned_keeps_its_error() -> None:
    """A log directory it could not make: "QEMU exited with status None" took its
    place (:meth:`Guest._qemu_gone_under` took the QEMU never spawned for a dead one)."""
    from irqlab.vm.machine import LogDirError

    g = Guest(GuestConfig())
    vm = _Exited(None)
    vm.spawned = False
    vm.is_running = lambda: False  # type: ignore[method-assign]
    g.machine = vm  # type: ignore[assignment]
    e = LogDirError("cannot make the guest's log directory in /x: Permission denied")
    assert g._qemu_gone_under(e) is e
