"""The irqlab device seen from qtest: found on the PCI bus, BAR0 mapped, registers by name.

For device-level tests (no guest): ``dev.read("IRQ_STATUS")`` reads
``IRQLAB_REG_IRQ_STATUS`` from BAR0; events are decoded with the EVINFO fields
of the register header.
"""

from __future__ import annotations

from dataclasses import dataclass

from irqlab.contract.regs import REGS
from irqlab.testing.qtest_pci import PciConfig, find_device
from irqlab.vm.qtest import QTest

__all__ = [
    "DEFAULT_BAR0",
    "Event",
    "QtestIrqlab",
    "reg",
]

DEFAULT_BAR0 = 0xFE000000  # inside q35's 32-bit PCI hole, below the IOAPIC


@dataclass(frozen=True)
class Event:
    seq: int
    source: int
    line: int
    kind: int
    value: int
    ts: int
    dropped: bool  # EVINFO_DROPPED: events were lost just before this one


def reg(name: str) -> int:
    """Offset of register *name* (``"ACK"`` or ``"IRQLAB_REG_ACK"``)."""
    return REGS[name if name.startswith("IRQLAB_REG_") else f"IRQLAB_REG_{name}"]


class QtestIrqlab:
    def __init__(self, qt: QTest, cfg: PciConfig, bar0: int) -> None:
        self.qt = qt
        self.cfg = cfg
        self.bar0 = bar0

    @classmethod
    def attach(cls, qt: QTest, bar0: int = DEFAULT_BAR0) -> QtestIrqlab:
        """Find the device on bus 0, map BAR0 at *bar0* and enable memory decoding."""
        addr = find_device(qt, REGS.PCI_VENDOR_ID, REGS.PCI_DEVICE_ID)
        cfg = PciConfig(qt, addr)
        size = cfg.map_bar(0, bar0)
        if size != REGS.BAR0_SIZE:
            raise AssertionError(f"BAR0 is {size:#x} bytes, header says {REGS.BAR0_SIZE:#x}")
        return cls(qt, cfg, bar0)

    def read(self, name: str) -> int:
        return self.qt.readl(self.bar0 + reg(name))

    def write(self, name: str, value: int) -> None:
        self.qt.writel(self.bar0 + reg(name), value)

    def read64(self, lo_name: str) -> int:
        """A _LO/_HI pair (reading _LO latches _HI): ``read64("TIME_LO")``."""
        if not lo_name.endswith("_LO"):
            raise ValueError(f"{lo_name}: expected a _LO register name")
        lo = self.read(lo_name)
        return self.read(lo_name[:-3] + "_HI") << 32 | lo

    def head(self) -> Event | None:
        """The oldest queued event (not removed), or None if the queue is empty."""
        info = self.read("EVQ_HEAD_INFO")
        if not info & REGS.EVINFO_VALID:
            return None
        return Event(
            seq=self.read("EVQ_HEAD_SEQ"),
            source=info & REGS.EVINFO_SRC_MASK,
            line=(info & REGS.EVINFO_LINE_MASK) >> REGS.EVINFO_LINE_SHIFT,
            kind=(info & REGS.EVINFO_KIND_MASK) >> REGS.EVINFO_KIND_SHIFT,
            value=self.read("EVQ_HEAD_VALUE"),
            ts=self.read64("EVQ_HEAD_TS_LO"),
            dropped=bool(info & REGS.EVINFO_DROPPED),
        )

    def pop(self) -> Event | None:
        ev = self.head()
        if ev is not None:
            self.write("EVQ_POP", 0)
        return ev

    def drain(self) -> list[Event]:
        """Pop every queued event, oldest first."""
        out: list[Event] = []
        while (ev := self.pop()) is not None:
            out.append(ev)
        return out

    def ack(self, seq: int) -> None:
        self.write("ACK", seq)
