"""Helpers for the device-level tests: the rig (machine + qtest + device + injector), routing."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from irqlab.contract.regs import REGS
from irqlab.testing.qtest_device import QtestIrqlab
from irqlab.testing.qtest_pci import INTERRUPT_PIN
from irqlab.vm.machine import Machine
from irqlab.vm.qmp.injector import Injector
from irqlab.vm.qtest import QTest

RAM_MSI = 0x100000  # MSI target in guest RAM: qtest reads the message back with readl

# Source bits of IRQ_STATUS / IRQ_ENABLE / IRQ_PENDING
GPIO = 1 << REGS.SRC_GPIO
FIFO = 1 << REGS.SRC_FIFO
BURST = 1 << REGS.SRC_BURST


def q35_intx_gsi(slot: int, pin: int) -> int:
    """IOAPIC input of PCI *slot*'s INTx *pin* (1 = INTA) on QEMU's q35 after reset.

    QEMU's ICH9 routes device pins to PIRQ E..H ((slot + pin - 1) % 4 + 4,
    hw/isa/lpc_ich9.c ich9_cc_init), and PIRQ n to IOAPIC input 16 + n.
    """
    return 16 + (slot + pin - 1) % 4 + 4


@dataclass
class Rig:
    machine: Machine
    qt: QTest
    dev: QtestIrqlab
    inj: Injector

    def counters_now(self) -> dict[str, int]:
        return vars(self.inj.counters())

    def intx_gsi(self) -> int:
        pin = self.dev.cfg.readb(INTERRUPT_PIN)
        return q35_intx_gsi(self.dev.cfg.addr.slot, pin)


RigFactory = Callable[..., Rig]


def device_arg(**props: object) -> str:
    """``irqlab,id=irq0,k=v,...`` with Python names (irq_mode) as QEMU's (irq-mode)."""
    parts = ["irqlab", "id=irq0"]
    for k, v in props.items():
        value = ("on" if v else "off") if isinstance(v, bool) else str(v)
        parts.append(f"{k.replace('_', '-')}={value}")
    return ",".join(parts)


MIGRATION_FD = "devrig-migration"


def _migrate_fd(m: Machine, path: Path, flags: int) -> str:
    """Hand QEMU its own copy of *path* opened with *flags*; the URI naming it."""
    fd = os.open(path, flags | os.O_CLOEXEC, 0o644)
    try:
        m.send_fd(fd, MIGRATION_FD)
    finally:
        os.close(fd)
    return f"fd:{MIGRATION_FD}"


def migrate_out(m: Machine, path: Path) -> None:
    """Save *m*'s state to *path* (migration to a file) and wait until it completed.

    QEMU writes the file itself (``fd:``): through ``exec:cat > path`` the MIGRATION
    ``completed`` event came when QEMU had written the pipe, not when ``cat`` had
    written the file, and under load a test read a cut stream ("Failed to load
    irqlab:ack_win_ts")."""
    m.qmp("migrate-set-capabilities", capabilities=[{"capability": "events", "state": True}])
    m.qmp("migrate", uri=_migrate_fd(m, path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC))
    m.wait_event("MIGRATION", timeout=60, match={"status": "completed"})


def migrate_in_start(m: Machine, path: Path) -> None:
    """Start loading *path* into *m* (started with ``-incoming defer``); returns at once."""
    m.qmp("migrate-set-capabilities", capabilities=[{"capability": "events", "state": True}])
    m.qmp("migrate-incoming", uri=_migrate_fd(m, path, os.O_RDONLY))


def migrate_in(m: Machine, path: Path) -> None:
    """Load *path* into *m* (started with ``-incoming defer``) and let it run."""
    migrate_in_start(m, path)
    m.wait_event("MIGRATION", timeout=60, match={"status": "completed"})
    if m.qmp("query-status")["status"] != "running":
        m.qmp("cont")
