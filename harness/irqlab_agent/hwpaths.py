"""Paths through the kernel's own frameworks: the GPIO character device and UIO.

``gpio-cdev``
    Requests lines of the irqlab gpio chip with edge detection through the GPIO v2
    ioctls (``GPIO_V2_GET_LINE_IOCTL``, a kernel event buffer of ``buffer`` events,
    default 256: the kernel drops the oldest beyond it, visible as a ``seqno`` gap),
    polls the line fd and reports each
    ``struct gpio_v2_line_event`` as ``{"type": "event", "edge": "rising", "offset",
    "seqno", "line_seqno", "timestamp_ns", ...}``.  Line events carry no device seq:
    with ``ack_dev`` + ``ack_first_seq`` (:class:`~irqlab_agent.acks.SeqAcker`) the
    event with request-wide ``seqno`` n is ACKed as device seq ``first + n - 1``
    (reported as ``dev_seq``, with the device's ``ack_latency_ns``), so an event the
    kernel dropped from its buffer (a ``seqno`` gap) does not shift the ACKs.  That
    holds while every device event reaches gpiolib: the host checks the driver's
    ``gpio_lost`` (and the edges) to know it did.

    Storm mode: armed with a non-empty ``summarize`` (line events are GPIO-source
    events, but the agent knows no source numbers, so *any* non-empty list turns it
    on), the path reads up to :data:`LINE_SUMMARY_BATCH` events per read(2), counts
    their ``seqno``s (``struct.iter_unpack``, no dict per event) and sends
    ``{"type": "summary", "path", "records", "first", "last", "in_order",
    "out_of_order", "ack", "acks", ...}`` (the field names of
    :mod:`irqlab_agent.summary`, here over seqnos: ``in_order`` counts seqnos above
    every seqno seen since arm) at least every ``summary_interval_ms`` while there
    are counts, and at disarm.  Each read buffer's events are ACKed in ``ack`` mode
    (:class:`~irqlab_agent.acks.SeqAcks`) as device seqs ``first + seqno - 1`` on
    the acker's fd: ``write`` = one write(2) per buffer, ``none`` = no ACK.

``uio``
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
``irqlab-regs.h``), never typed here.  The GPIO v2 uapi numbers below are the
kernel's (``linux/gpio.h``), which this stdlib-only agent cannot include; their
request numbers are encoded as the ABI artifact says (:meth:`Abi.ioc`).
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import mmap
import os
import select
import struct
import threading
import time
from collections.abc import Mapping

from irqlab_agent.acks import SeqAcker, SeqAcks
from irqlab_agent.paths import NotificationPath, mono_ns

TYPE_CHECKING = False  # typing is not imported at run time: it costs start-up time
if TYPE_CHECKING:
    from typing import Any, ClassVar

    from irqlab_agent.abi import Abi

# --- linux/gpio.h (GPIO character device, v2 uapi) --------------------------------
_GPIO_MAGIC = 0xB4
_CHIPINFO = struct.Struct("=32s32sI")  # struct gpiochip_info
_LINE_ATTR = "IIQ"  # struct gpio_v2_line_attribute (id, padding, union)
_LINEINFO = struct.Struct("=32s32sIIQ" + _LINE_ATTR * 10 + "4I")  # gpio_v2_line_info
_LINEREQ = struct.Struct("=64I32sQI5I" + (_LINE_ATTR + "Q") * 10 + "II5Ii")
_LINEEVENT = struct.Struct("=QIIII6I")  # struct gpio_v2_line_event
_LINE_SEQNO = struct.Struct("=16xI28x")  # its seqno only (storm mode)
LINE_SUMMARY_BATCH = 256  # line events per read(2) in storm mode
GPIO_V2_LINE_FLAG_USED = 1 << 0
GPIO_V2_LINE_FLAG_INPUT = 1 << 2
GPIO_V2_LINE_FLAG_EDGE_RISING = 1 << 4
GPIO_V2_LINE_FLAG_EDGE_FALLING = 1 << 5
GPIO_V2_LINE_EVENT_RISING_EDGE = 1
GPIO_V2_LINE_EVENT_FALLING_EDGE = 2
EDGE_FLAGS = {
    "rising": GPIO_V2_LINE_FLAG_EDGE_RISING,
    "falling": GPIO_V2_LINE_FLAG_EDGE_FALLING,
    "both": GPIO_V2_LINE_FLAG_EDGE_RISING | GPIO_V2_LINE_FLAG_EDGE_FALLING,
}
EVENT_NAMES = {GPIO_V2_LINE_EVENT_RISING_EDGE: "rising", GPIO_V2_LINE_EVENT_FALLING_EDGE: "falling"}


def gpio_chipinfo_ioctl(abi: Abi) -> int:
    """GPIO_GET_CHIPINFO_IOCTL, encoded as the ABI artifact says."""
    return abi.ioc("read", _GPIO_MAGIC, 0x01, _CHIPINFO.size)


def gpio_v2_lineinfo_ioctl(abi: Abi) -> int:
    return abi.ioc("read|write", _GPIO_MAGIC, 0x05, _LINEINFO.size)


def gpio_v2_line_ioctl(abi: Abi) -> int:
    return abi.ioc("read|write", _GPIO_MAGIC, 0x07, _LINEREQ.size)


def _cstr(b: bytes) -> str:
    return b.split(b"\0", 1)[0].decode(errors="replace")


def chip_info(abi: Abi, fd: int) -> dict[str, Any]:
    buf = bytearray(_CHIPINFO.size)
    fcntl.ioctl(fd, gpio_chipinfo_ioctl(abi), buf, True)
    name, label, lines = _CHIPINFO.unpack(buf)
    return {"name": _cstr(name), "label": _cstr(label), "lines": lines}


def line_info(abi: Abi, fd: int, offset: int) -> dict[str, Any]:
    buf = bytearray(_LINEINFO.size)
    struct.pack_into("=I", buf, 64, offset)
    fcntl.ioctl(fd, gpio_v2_lineinfo_ioctl(abi), buf, True)
    f = _LINEINFO.unpack(buf)
    return {"name": _cstr(f[0]), "consumer": _cstr(f[1]), "offset": f[2], "flags": f[4]}


def find_chip(abi: Abi, label_prefix: str) -> str:
    """The first /dev/gpiochipN whose label starts with *label_prefix*."""
    for dev in sorted(glob.glob("/dev/gpiochip*")):
        fd = os.open(dev, os.O_RDONLY | os.O_CLOEXEC)
        try:
            if chip_info(abi, fd)["label"].startswith(label_prefix):
                return dev
        finally:
            os.close(fd)
    raise FileNotFoundError(2, f"no gpio chip labelled {label_prefix}*")


def request_lines(
    abi: Abi, chip_fd: int, offsets: list[int], flags: int, consumer: str, buffer_size: int = 0
) -> int:
    """GPIO_V2_GET_LINE_IOCTL: the line request fd."""
    vals: list[Any] = [*offsets, *([0] * (64 - len(offsets)))]
    vals += [consumer.encode()[:31], flags, 0, *([0] * 5)]
    vals += [0] * (4 * 10)
    vals += [len(offsets), buffer_size, *([0] * 5), -1]
    buf = bytearray(_LINEREQ.pack(*vals))
    fcntl.ioctl(chip_fd, gpio_v2_line_ioctl(abi), buf, True)
    fd: int = _LINEREQ.unpack(buf)[-1]
    return fd


class GpioCdevPath(NotificationPath):
    """Edge events of gpio lines through the GPIO v2 character device."""

    kind = "gpio-cdev"
    own_summary = True  # counts its line events itself with ``summarize`` (storm mode)
    acker: SeqAcker | None = None
    summarizing = False

    def open(self) -> None:
        p = self.opts.params
        chip = p.get("chip") or find_chip(self.abi, str(p.get("label", "irqlab-")))
        lines = [int(x) for x in p.get("lines", [0])]
        edge = str(p.get("edge", "both"))
        if edge not in EDGE_FLAGS or not lines or len(lines) > 64:
            raise ValueError(f"gpio-cdev: edge must be one of {sorted(EDGE_FLAGS)}, 1..64 lines")
        cfd = os.open(chip, os.O_RDWR | os.O_CLOEXEC)
        try:
            ci = chip_info(self.abi, cfd)
            self.chip = {"chip": chip, "chip_name": ci["name"], "label": ci["label"]}
            self.chip["nlines"] = ci["lines"]
            self.chip["names"] = [line_info(self.abi, cfd, n)["name"] for n in lines]
            flags = GPIO_V2_LINE_FLAG_INPUT | EDGE_FLAGS[edge]
            self.fd = request_lines(
                self.abi, cfd, lines, flags, "irqlab-agent", int(p.get("buffer", 256))
            )
            self.chip["consumers"] = [line_info(self.abi, cfd, n)["consumer"] for n in lines]
        finally:
            os.close(cfd)
        fl = fcntl.fcntl(self.fd, fcntl.F_GETFL)
        fcntl.fcntl(self.fd, fcntl.F_SETFL, fl | os.O_NONBLOCK)

    def setup(self) -> None:
        # ack=false (or an ack mode "none") arms without ACKing even if ack_dev is given
        if self.opts.ack not in (False, "none"):
            self.acker = SeqAcker.from_params(self.abi, self.opts.params)
        self.setup_summary()

    def setup_summary(self) -> None:
        """Storm mode (any non-empty ``summarize``): the batched ACKs and the counts."""
        self.summarizing = bool(self.opts.summarize)
        if self.summarizing:
            fd = self.acker.fd if self.acker is not None else -1
            self.seq_acks = SeqAcks(self.abi, self.opts.ack if fd >= 0 else "none", fd)
            self._highest = 0  # the highest seqno since arm
            self._reset_counts()

    def teardown(self) -> None:
        if self.acker is not None:
            self.acker.close()

    def arm(self) -> dict[str, Any]:
        info = super().arm()
        if self.summarizing:
            info.update(summarize=sorted(self.opts.summarize), ack=self.seq_acks.mode)
        return {**info, **self.chip}

    def report_line_events(self, data: bytes, wake: int) -> int:
        """Report (and ACK, with an acker) each ``gpio_v2_line_event`` in *data*."""
        size = _LINEEVENT.size
        n = 0
        for off in range(0, len(data) - size + 1, size):
            ts, ev_id, offset, seqno, line_seqno = _LINEEVENT.unpack_from(data, off)[:5]
            ev: dict[str, Any] = {
                "type": "event",
                "path": self.path_name,
                "timestamp_ns": ts,
                "id": ev_id,
                "edge": EVENT_NAMES.get(ev_id, str(ev_id)),
                "offset": offset,
                "seqno": seqno,
                "line_seqno": line_seqno,
                "wake_ns": wake,
            }
            if self.acker is not None:
                ev["dev_seq"] = (self.acker.first_seq + seqno - 1) & 0xFFFF_FFFF
                ev["ack_latency_ns"] = lat = self.acker.ack_nth(seqno)
                if lat is None:
                    self.stats.ack_errors += 1
                else:
                    self.stats.acks += 1
                self.stats.last_seq = ev["dev_seq"]
            self.stats.events += 1
            n += 1
            self.emit(ev)
        return n

    def loop(self) -> None:
        if self.summarizing:
            self.loop_summary()
            return
        while not self.stopping.is_set():
            if not self.wait_readable(self.fd):
                return
            wake = mono_ns()
            self.stats.wakeups += 1
            while True:
                try:
                    data = os.read(self.fd, _LINEEVENT.size * 64)
                except BlockingIOError:
                    break
                self.stats.reads += 1
                self.report_line_events(data, wake)

    # -- storm mode ---------------------------------------------------------------
    def _reset_counts(self) -> None:
        self.pending = self.in_order = self.out_of_order = 0
        self.first: int | None = None
        self.last: int | None = None
        self._acks0, self._errors0 = self.seq_acks.acks, self.seq_acks.errors
        self._reads0, self._wakeups0 = self.stats.reads, self.stats.wakeups
        self.seq_acks.latency_max_ns = None
        self._first_wake: int | None = None
        self._last_wake: int | None = None

    def count_line_events(self, data: bytes, wake: int) -> int:
        """Count (and ACK, in one batch) the ``gpio_v2_line_event``s in *data*."""
        size = _LINEEVENT.size
        seqnos = [s for (s,) in _LINE_SEQNO.iter_unpack(data[: len(data) - len(data) % size])]
        if not seqnos:
            return 0
        a = self.seq_acks
        if a.mode != "none" and self.acker is not None:
            first = self.acker.first_seq - 1
            a.ack([(first + s) & 0xFFFF_FFFF for s in seqnos])
            self.stats.last_seq = (first + seqnos[-1]) & 0xFFFF_FFFF
        hi, ordered = self._highest, 0
        for s in seqnos:
            if s > hi:
                hi = s
                ordered += 1
        self._highest = hi
        n = len(seqnos)
        self.in_order += ordered
        self.out_of_order += n - ordered
        if self.first is None:
            self.first = seqnos[0]
            self._first_wake = wake
        self.last = seqnos[-1]
        self._last_wake = wake
        self.pending += n
        self.stats.events += n
        return n

    def flush_summary(self) -> None:
        """Send the counts since the last summary (nothing if there are none)."""
        if not self.pending:
            return
        a, st = self.seq_acks, self.stats
        st.summaries += 1
        st.acks += a.acks - self._acks0
        st.ack_errors += a.errors - self._errors0
        self.emit(
            {
                "type": "summary",
                "path": self.path_name,
                "summary": st.summaries,
                "records": self.pending,
                "first": self.first,
                "last": self.last,
                "in_order": self.in_order,
                "out_of_order": self.out_of_order,
                "ack": a.mode,
                "acks": a.acks - self._acks0,
                "ack_errors": a.errors - self._errors0,
                "ack_latency_max_ns": a.latency_max_ns,
                "reads": st.reads - self._reads0,
                "wakeups": st.wakeups - self._wakeups0,
                "first_wake_ns": self._first_wake,
                "last_wake_ns": self._last_wake,
                "wake_ns": mono_ns(),
            }
        )
        self._reset_counts()

    def loop_summary(self) -> None:
        """Read big buffers, count them; a summary every ``summary_interval_s`` while
        there are counts (the select's timeout) and at the end (disarm)."""
        interval = self.opts.summary_interval_s
        bufsize = _LINEEVENT.size * LINE_SUMMARY_BATCH
        due = 0.0
        try:
            while not self.stopping.is_set():
                timeout = max(0.0, due - time.monotonic()) if self.pending else None
                r, _, _ = select.select([self.fd, self._wake_r], [], [], timeout)
                if self.stopping.is_set():
                    return
                if self.fd in r:
                    wake = mono_ns()
                    self.stats.wakeups += 1
                    while True:
                        try:
                            data = os.read(self.fd, bufsize)
                        except BlockingIOError:
                            break
                        self.stats.reads += 1
                        had = self.pending
                        self.count_line_events(data, wake)
                        now = time.monotonic()
                        if not had and self.pending:
                            due = now + interval
                        elif self.pending and now >= due:  # events never stop coming
                            self.flush_summary()
                if self.pending and time.monotonic() >= due:
                    self.flush_summary()
        finally:
            self.flush_summary()


# --- UIO --------------------------------------------------------------------------
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
    blocking = True
    open_nonblock = False
    REENABLE: ClassVar[tuple[str, ...]] = ("config", "irqcontrol", "device")

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
        if hasattr(self, "words"):
            self.words.release()
            with contextlib.suppress(BufferError):
                self.mm.close()
        if getattr(self, "cfd", -1) >= 0:
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
        while not self.stopping.is_set():
            data = self.read_interruptible(_U32.size)
            if data is None:
                continue
            wake = mono_ns()
            self.stats.wakeups += 1
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
            self.stats.acks += len(evs)
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


HW_PATH_KINDS: dict[str, type[NotificationPath]] = {
    cls.kind: cls for cls in (GpioCdevPath, UioPath)
}
