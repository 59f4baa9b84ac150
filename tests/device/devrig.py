"""Helpers for the device-level tests: the rig (machine + qtest + device + injector), routing."""

from __future__ import annotations

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


def migrate_out(m: Machine, path: Path) -> None:
    """Save *m*'s state to *path* (migration to a file) and wait until it completed."""
    m.qmp("migrate-set-capabilities", capabilities=[{"capability": "events", "state": True}])
    m.qmp("migrate", uri=f"exec:cat > {path}")
    m.wait_event("MIGRATION", timeout=60, match={"status": "completed"})


def migrate_in_start(m: Machine, path: Path) -> None:
    """Start loading *path* into *m* (started with ``-incoming defer``); returns at once."""
    m.qmp("migrate-set-capabilities", capabilities=[{"capability": "events", "state": True}])
    m.qmp("migrate-incoming", uri=f"exec:cat {path}")


def migrate_in(m: Machine, path: Path) -> None:
    """Load *path* into *m* (started with ``-incoming defer``) and let it run."""
    migrate_in_start(m, path)
    m.wait_event("MIGRATION", timeout=60, match={"status": "completed"})
    if m.qmp("query-status")["status"] != "running":
        m.qmp("cont")
