"""The ``uio`` path: a user-space driver on ``/dev/uioN`` (``uio_pci_generic``, or our
module with ``uio=1``).

Blocks in ``read(2)`` on ``/dev/uioN`` (the 32-bit interrupt count), then plays
the user-space driver: through the mapped BAR0 it clears the latched status,
drains the device's event queue (``EVQ_HEAD_*``, ``EVQ_POP``), ACKs each event
and reads the device's raise -> ACK latency back (``ACK_SEQ``, ``ACK_LAT_*``),
and re-enables the interrupt: ``config`` clears the PCI 2.3 Interrupt Disable bit
in the function's config space (what uio_pci_generic's handler set; it has no
``irqcontrol``, so writing 1 to its fd gives ENOSYS), ``irqcontrol`` writes 1 to
the uio fd (drivers with an ``irqcontrol`` callback), ``device`` writes
``IRQ_ENABLE`` through the mapping (the driver's UIO mode, seed 001).
One ``{"type": "event", "count", "delta", "events", "seqs", "ack_latency_ns"}``
per wake-up (the last two: one entry per drained event).
With ``gate=true`` it reports ``{"type": "uio_wake"}`` first and handles the
wake-up only after a ``release`` request, so the host can inject while
userspace is "slow".

Register offsets come from the host in the ``regs`` argument (the parsed
``irqlab-regs.h``), never typed here.
"""

from __future__ import annotations

import contextlib
import glob
import mmap
import os
import struct
import threading
from collections.abc import Mapping

from irqlab_agent.paths import NotificationPath

TYPE_CHECKING = False  # typing is not imported at run time: it costs start-up time
if TYPE_CHECKING:
    from typing import Any, ClassVar

_U32 = struct.Struct("=I")
# PCI configuration space (PCI 2.3): COMMAND register, its Interrupt Disable bit.
PCI_COMMAND = 0x04
PCI_COMMAND_INTX_DISABLE = 0x400


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def find_uio(name: str | None) -> str:
    """/dev/uioN of the first uio device (whose name is *name*, if given)."""
    for d in sorted(glob.glob("/sys/class/uio/uio*")):
        if name is None or _read(os.path.join(d, "name")).strip() == name:
            return f"/dev/{os.path.basename(d)}"
    raise FileNotFoundError(2, f"no uio device{' named ' + name if name else ''}")


class UioPath(NotificationPath):
    """A user-space driver on /dev/uioN with BAR0 mapped (see the module docstring)."""

    kind = "uio"
    stopped_by_signal = True
    waits_in_read = True
    open_nonblock = False
    REENABLE: ClassVar[tuple[str, ...]] = ("config", "irqcontrol", "device")
    options = NotificationPath.options | {
        "regs", "reenable", "gate", "uio", "uio_name", "map", "enable",
    }  # fmt: skip

    def open(self) -> None:
        p = self.opts.params
        regs = p.get("regs")
        if not isinstance(regs, Mapping):
            raise ValueError("uio: 'regs' (the parsed irqlab-regs.h) is required")
        self.r = {str(k).removeprefix("IRQLAB_"): int(v) for k, v in regs.items()}
        self.reenable = str(p.get("reenable", "config"))
        if self.reenable not in self.REENABLE:
            raise ValueError(f"uio: reenable must be one of {self.REENABLE}")
        self.gate = bool(p.get("gate", False))
        self._gate = threading.Semaphore(0)
        dev = p.get("uio") or find_uio(p.get("uio_name"))
        self.opts.dev = str(dev)
        sysdir = os.path.join("/sys/class/uio", os.path.basename(self.opts.dev))
        self.fd = os.open(self.opts.dev, os.O_RDWR | os.O_CLOEXEC)
        self.last = int(_read(os.path.join(sysdir, "event")))
        self.cfd = -1
        if self.reenable == "config":
            self.cfd = os.open(os.path.join(sysdir, "device", "config"), os.O_RDWR | os.O_CLOEXEC)
        size = self.r["BAR0_SIZE"]
        if p.get("map", "resource0") == "resource0":
            res = os.path.join(sysdir, "device", "resource0")
            mfd = os.open(res, os.O_RDWR | os.O_SYNC | os.O_CLOEXEC)
            try:
                self.mm = mmap.mmap(mfd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            finally:
                os.close(mfd)
        else:  # the uio device's map 0 (offset 0 * page size)
            self.mm = mmap.mmap(self.fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        # 32-bit loads and stores only: the device rejects other access sizes.
        self.words = memoryview(self.mm).cast("I")

    def rd(self, reg: str) -> int:
        v: int = self.words[self.r[f"REG_{reg}"] // 4]
        return v

    def wr(self, reg: str, value: int) -> None:
        self.words[self.r[f"REG_{reg}"] // 4] = value & 0xFFFF_FFFF

    def enable(self) -> None:
        """Re-enable the interrupt the kernel's handler disabled."""
        if self.reenable == "irqcontrol":  # the uio driver's irqcontrol()
            os.write(self.fd, _U32.pack(1))
        elif self.reenable == "config":  # uio_pci_generic: clear COMMAND.INTX_DISABLE
            cmd = int.from_bytes(os.pread(self.cfd, 2, PCI_COMMAND), "little")
            new = cmd & ~PCI_COMMAND_INTX_DISABLE
            os.pwrite(self.cfd, new.to_bytes(2, "little"), PCI_COMMAND)
        else:  # the driver's UIO mode: IRQ_ENABLE through the mapping
            self.wr("IRQ_ENABLE", self.r["SRC_ALL"])

    def setup(self) -> None:
        if self.opts.params.get("enable", True):
            self.wr("IRQ_ENABLE", self.r["SRC_ALL"])
            self.enable()

    def arm(self) -> dict[str, Any]:
        info = super().arm()
        return {**info, "uio": self.opts.dev, "event": self.last}

    def release(self) -> None:
        self._gate.release()

    def close_fds(self) -> None:
        """Also what a failed :meth:`open` got so far (any of fd, cfd, mm)."""
        if hasattr(self, "words"):
            self.words.release()
            del self.words
        if hasattr(self, "mm"):
            with contextlib.suppress(BufferError):
                self.mm.close()
            del self.mm
        if getattr(self, "cfd", -1) >= 0:
            with contextlib.suppress(OSError):
                os.close(self.cfd)
            self.cfd = -1
        super().close_fds()

    def handle(self) -> list[dict[str, int | None]]:
        """Clear the latched status, then drain and ACK the event queue."""
        gpio_bit = 1 << self.r["SRC_GPIO"]
        self.wr("GPIO_STATUS", self.rd("GPIO_STATUS"))
        self.wr("IRQ_STATUS", self.r["SRC_ALL"] & ~gpio_bit)
        out: list[dict[str, int | None]] = []
        for _ in range(self.rd("EVQ_DEPTH")):
            info = self.rd("EVQ_HEAD_INFO")
            if not info & self.r["EVINFO_VALID"]:
                break
            seq, value = self.rd("EVQ_HEAD_SEQ"), self.rd("EVQ_HEAD_VALUE")
            self.wr("EVQ_POP", 0)
            lat = self.ack_seq(seq)
            src = info & self.r["EVINFO_SRC_MASK"]
            out.append({"seq": seq, "source": src, "value": value, "ack_latency_ns": lat})
        return out

    def ack_seq(self, seq: int) -> int | None:
        """ACK *seq* through the mapping; the device's raise -> ACK latency (None if refused)."""
        self.wr("ACK", seq)
        if self.rd("ACK_SEQ") != seq:
            return None  # too old for the device's window (counted in ACK_INVALID)
        lo = self.rd("ACK_LAT_LO")  # reading _LO latches _HI
        return lo | (self.rd("ACK_LAT_HI") << 32)

    def loop(self) -> None:
        for data, wake in self.wake_reads(_U32.size):
            (count,) = _U32.unpack(data)
            delta, self.last = count - self.last, count
            if self.gate:
                self.emit({"type": "uio_wake", "path": self.path_name, "count": count})
                while not self._gate.acquire(timeout=0.05):
                    if self.stopping.is_set():
                        return
            evs = self.handle()
            self.enable()
            self.stats.events += len(evs)
            refused = sum(1 for e in evs if e["ack_latency_ns"] is None)  # see ack_seq
            self.stats.acks += len(evs) - refused
            self.stats.ack_errors += refused
            self.stats.counted += delta
            if evs:
                self.stats.last_seq = evs[-1]["seq"]
            self.emit(
                {
                    "type": "event",
                    "path": self.path_name,
                    "count": count,
                    "delta": delta,
                    "events": len(evs),
                    "seqs": [e["seq"] for e in evs],
                    "values": [e["value"] for e in evs],
                    "ack_latency_ns": [e["ack_latency_ns"] for e in evs],
                    "wake_ns": wake,
                }
            )
