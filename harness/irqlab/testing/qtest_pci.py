"""PCI configuration of a device from qtest: config space through 0xcf8/0xcfc, BARs, MSI(-X).

The numbers here are PCI's own (config header layout, capability IDs), not the
device's: those come from :mod:`irqlab.contract.regs`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from irqlab.errors import IrqlabError
from irqlab.vm.qtest import QTest

__all__ = [
    "BAR0",
    "CAPABILITY_LIST",
    "CAP_ID_MSI",
    "CAP_ID_MSIX",
    "COMMAND",
    "COMMAND_INTX_DISABLE",
    "COMMAND_MASTER",
    "COMMAND_MEMORY",
    "CONFIG_ADDRESS",
    "CONFIG_DATA",
    "DEVICE_ID",
    "HEADER_TYPE",
    "INTERRUPT_PIN",
    "MSIX_ENTRY_SIZE",
    "MSIX_ENTRY_VECTOR_CTRL",
    "MSIX_FLAGS",
    "MSIX_FLAGS_ENABLE",
    "MSIX_FLAGS_MASKALL",
    "MSIX_FLAGS_QSIZE",
    "MSIX_TABLE",
    "MSI_FLAGS",
    "MSI_FLAGS_64BIT",
    "MSI_FLAGS_ENABLE",
    "REVISION",
    "STATUS",
    "STATUS_CAP_LIST",
    "STATUS_INTERRUPT",
    "VENDOR_ID",
    "PciAddress",
    "PciConfig",
    "PciError",
    "enable_msi",
    "enable_msix",
    "find_device",
    "msix_table",
    "msix_table_size",
    "vector_ctrl",
]

CONFIG_ADDRESS = 0xCF8
CONFIG_DATA = 0xCFC

VENDOR_ID = 0x00
DEVICE_ID = 0x02
COMMAND = 0x04
STATUS = 0x06
REVISION = 0x08
HEADER_TYPE = 0x0E
BAR0 = 0x10
CAPABILITY_LIST = 0x34
INTERRUPT_PIN = 0x3D

COMMAND_MEMORY = 1 << 1
COMMAND_MASTER = 1 << 2
COMMAND_INTX_DISABLE = 1 << 10
STATUS_INTERRUPT = 1 << 3
STATUS_CAP_LIST = 1 << 4

CAP_ID_MSI = 0x05
CAP_ID_MSIX = 0x11

MSI_FLAGS = 2
MSI_FLAGS_ENABLE = 1 << 0
MSI_FLAGS_64BIT = 1 << 7
MSIX_FLAGS = 2
MSIX_FLAGS_QSIZE = 0x7FF
MSIX_FLAGS_MASKALL = 1 << 14
MSIX_FLAGS_ENABLE = 1 << 15
MSIX_TABLE = 4
MSIX_ENTRY_SIZE = 16
MSIX_ENTRY_VECTOR_CTRL = 12  # an entry's vector control dword; bit 0 masks it


def vector_ctrl(table_base: int, vector: int) -> int:
    """The address of MSI-X *vector*'s control dword in the table at *table_base*."""
    return table_base + vector * MSIX_ENTRY_SIZE + MSIX_ENTRY_VECTOR_CTRL


class PciError(IrqlabError, RuntimeError):
    pass


@dataclass(frozen=True)
class PciAddress:
    bus: int
    slot: int
    function: int

    @property
    def devfn(self) -> int:
        return self.slot << 3 | self.function

    def __str__(self) -> str:
        return f"{self.bus:02x}:{self.slot:02x}.{self.function}"


class PciConfig:
    """Configuration space of one function, accessed with configuration mechanism #1."""

    def __init__(self, qt: QTest, addr: PciAddress) -> None:
        self.qt = qt
        self.addr = addr

    def _select(self, offset: int) -> int:
        if not 0 <= offset < 256:
            raise ValueError(f"config offset {offset:#x} out of range")
        a = self.addr
        self.qt.outl(
            CONFIG_ADDRESS,
            0x80000000 | a.bus << 16 | a.slot << 11 | a.function << 8 | (offset & 0xFC),
        )
        return CONFIG_DATA + (offset & 3)

    def readb(self, offset: int) -> int:
        return self.qt.inb(self._select(offset))

    def readw(self, offset: int) -> int:
        return self.qt.inw(self._select(offset))

    def readl(self, offset: int) -> int:
        return self.qt.inl(self._select(offset))

    def writeb(self, offset: int, value: int) -> None:
        self.qt.outb(self._select(offset), value)

    def writew(self, offset: int, value: int) -> None:
        self.qt.outw(self._select(offset), value)

    def writel(self, offset: int, value: int) -> None:
        self.qt.outl(self._select(offset), value)

    # -- header ----------------------------------------------------------------

    def command(self) -> int:
        return self.readw(COMMAND)

    def set_command_bits(self, set_bits: int = 0, clear_bits: int = 0) -> int:
        value = (self.command() | set_bits) & ~clear_bits & 0xFFFF
        self.writew(COMMAND, value)
        return self.command()

    def status(self) -> int:
        return self.readw(STATUS)

    def capabilities(self) -> dict[int, int]:
        """Capability ID -> offset (first occurrence)."""
        caps: dict[int, int] = {}
        if not self.status() & STATUS_CAP_LIST:
            return caps
        ptr = self.readb(CAPABILITY_LIST) & 0xFC
        seen: set[int] = set()
        while ptr and ptr not in seen:
            seen.add(ptr)
            caps.setdefault(self.readb(ptr), ptr)
            ptr = self.readb(ptr + 1) & 0xFC
        return caps

    def capability(self, cap_id: int) -> int:
        off = self.capabilities().get(cap_id)
        if off is None:
            raise PciError(f"{self.addr}: no capability {cap_id:#04x}")
        return off

    def bar_size(self, index: int) -> tuple[int, bool]:
        """(size, is_64bit) of memory BAR *index*, by the usual all-ones probe."""
        off = BAR0 + 4 * index
        orig = self.readl(off)
        if orig & 1:
            raise PciError(f"{self.addr}: BAR{index} is an I/O BAR")
        is64 = (orig >> 1) & 3 == 2
        self.writel(off, 0xFFFFFFFF)
        low = self.readl(off)
        self.writel(off, orig)
        mask = low & ~0xF
        if is64:
            orig_hi = self.readl(off + 4)
            self.writel(off + 4, 0xFFFFFFFF)
            mask |= self.readl(off + 4) << 32
            self.writel(off + 4, orig_hi)
            size = (~mask & (1 << 64) - 1) + 1
        else:
            size = (~mask & 0xFFFFFFFF) + 1
        if mask == 0:
            raise PciError(f"{self.addr}: BAR{index} is not implemented")
        return size, is64

    def map_bar(self, index: int, address: int) -> int:
        """Place memory BAR *index* at *address* and enable memory decoding; returns the size."""
        size, is64 = self.bar_size(index)
        if address % size:
            raise PciError(f"BAR{index} address {address:#x} not aligned to its size {size:#x}")
        off = BAR0 + 4 * index
        self.writel(off, address & 0xFFFFFFFF)
        if is64:
            self.writel(off + 4, address >> 32)
        elif address >> 32:
            raise PciError(f"BAR{index} is 32-bit; {address:#x} is above 4 GiB")
        self.set_command_bits(COMMAND_MEMORY)
        return size


def find_device(qt: QTest, vendor: int, device: int, bus: int = 0) -> PciAddress:
    """Scan *bus* for the first function with *vendor*:*device*."""
    for slot in range(32):
        for function in range(8):
            cfg = PciConfig(qt, PciAddress(bus, slot, function))
            ids = cfg.readl(VENDOR_ID)
            if ids & 0xFFFF == 0xFFFF:
                if function == 0:
                    break
                continue
            if ids == device << 16 | vendor:
                return cfg.addr
            if function == 0 and not cfg.readb(HEADER_TYPE) & 0x80:
                break  # single-function device
    raise PciError(f"no PCI device {vendor:04x}:{device:04x} on bus {bus}")


def enable_msi(cfg: PciConfig, address: int, data: int) -> int:
    """Program and enable MSI (one vector); enables bus mastering.  Returns the cap offset."""
    cap = cfg.capability(CAP_ID_MSI)
    flags = cfg.readw(cap + MSI_FLAGS)
    cfg.writel(cap + 4, address & 0xFFFFFFFF)
    if flags & MSI_FLAGS_64BIT:
        cfg.writel(cap + 8, address >> 32)
        data_off = cap + 12
    else:
        if address >> 32:
            raise PciError("MSI capability is 32-bit only")
        data_off = cap + 8
    cfg.writew(data_off, data)
    cfg.set_command_bits(COMMAND_MASTER)
    cfg.writew(cap + MSI_FLAGS, (flags & ~(7 << 4)) | MSI_FLAGS_ENABLE)  # 1 vector
    return cap


def msix_table_size(cfg: PciConfig) -> int:
    return (cfg.readw(cfg.capability(CAP_ID_MSIX) + MSIX_FLAGS) & MSIX_FLAGS_QSIZE) + 1


def enable_msix(
    cfg: PciConfig,
    table_base: int,
    vectors: list[tuple[int, int]],
    masked: Sequence[int] = (),
) -> int:
    """Enable MSI-X; program entry i of the table (mapped at *table_base*) with vectors[i].

    *vectors* holds (address, data) pairs.  Entries are unmasked but those *masked*
    names (masked before MSI-X is enabled); bus mastering is enabled.  Returns the
    capability offset.
    """
    cap = cfg.capability(CAP_ID_MSIX)
    qt = cfg.qt
    for i, (address, data) in enumerate(vectors):
        entry = table_base + i * MSIX_ENTRY_SIZE
        qt.writel(entry + 0, address & 0xFFFFFFFF)
        qt.writel(entry + 4, address >> 32)
        qt.writel(entry + 8, data)
        qt.writel(entry + MSIX_ENTRY_VECTOR_CTRL, int(i in masked))
    cfg.set_command_bits(COMMAND_MASTER)
    flags = cfg.readw(cap + MSIX_FLAGS)
    cfg.writew(cap + MSIX_FLAGS, (flags | MSIX_FLAGS_ENABLE) & ~MSIX_FLAGS_MASKALL)
    return cap


def msix_table(cfg: PciConfig) -> tuple[int, int]:
    """(BAR index, offset in that BAR) of the MSI-X table."""
    value = cfg.readl(cfg.capability(CAP_ID_MSIX) + MSIX_TABLE)
    return value & 7, value & ~7
