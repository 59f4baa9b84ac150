"""The ``gpio-cdev`` path: the GPIO character device (GPIO v2 uapi) of the irqlab chip.

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

The GPIO v2 uapi numbers below are the kernel's (``linux/gpio.h``), which this
stdlib-only agent cannot include; their request numbers are encoded as the ABI
artifact says (:meth:`~irqlab_agent.abi.Abi.ioc`).
"""

from __future__ import annotations

import fcntl
import glob
import os
import select
import struct
import time

from irqlab_agent.acks import SeqAcker, SeqAcks
from irqlab_agent.paths import NotificationPath, mono_ns
from irqlab_agent.summary import SeqnoCounts, summary_message

TYPE_CHECKING = False  # typing is not imported at run time: it costs start-up time
if TYPE_CHECKING:
    from typing import Any

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
    options = NotificationPath.options | {
        "chip", "label", "lines", "edge", "buffer", "ack_first_seq",
    }  # fmt: skip
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
            beyond = [n for n in lines if not 0 <= n < ci["lines"]]
            if beyond:  # the line info ioctl said only "[Errno 22] Invalid argument"
                raise ValueError(
                    f"gpio-cdev: {chip} ({ci['label']}) has lines 0..{ci['lines'] - 1}, "
                    f"not {', '.join(map(str, beyond))}"
                )
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
            self.counts = SeqnoCounts()  # in order: above every seqno since arm
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
        """ACK (with an acker) every ``gpio_v2_line_event`` in *data* straight after the
        read, then decode and report each."""
        size = _LINEEVENT.size
        whole = data[: len(data) - len(data) % size]
        lats = []
        if self.acker is not None:
            lats = [self.acker.ack_nth(s) for (s,) in _LINE_SEQNO.iter_unpack(whole)]
        n = 0
        for off in range(0, len(whole), size):
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
                ev["dev_seq"] = self.acker.dev_seq(seqno)
                ev["ack_latency_ns"] = lat = lats[n]
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
        self.counts.reset()
        self._acks0, self._errors0 = self.seq_acks.acks, self.seq_acks.errors
        self._reads0, self._wakeups0 = self.stats.reads, self.stats.wakeups
        self.seq_acks.latency_max_ns = None

    @property
    def pending(self) -> int:
        """Line events counted since the last summary."""
        return self.counts.pending

    def count_line_events(self, data: bytes, wake: int) -> int:
        """Count (and ACK, in one batch) the ``gpio_v2_line_event``s in *data*."""
        size = _LINEEVENT.size
        seqnos = [s for (s,) in _LINE_SEQNO.iter_unpack(data[: len(data) - len(data) % size])]
        if not seqnos:
            return 0
        a = self.seq_acks
        if a.mode != "none" and self.acker is not None:
            a.ack([self.acker.dev_seq(s) for s in seqnos])
            self.stats.last_seq = self.acker.dev_seq(seqnos[-1])
        self.counts.add(seqnos, wake)
        self.stats.events += len(seqnos)
        return len(seqnos)

    def flush_summary(self) -> None:
        """Send the counts since the last summary (nothing if there are none)."""
        c = self.counts
        if not c.pending:
            return
        a, st = self.seq_acks, self.stats
        st.acks += a.acks - self._acks0
        st.ack_errors += a.errors - self._errors0
        self.emit(
            summary_message(
                path=self.path_name,
                stats=st,
                records=c.pending,
                counts=c.fields(),
                ack_mode=a.mode,
                acks=a.acks - self._acks0,
                ack_errors=a.errors - self._errors0,
                ack_latency_max_ns=a.latency_max_ns,
                since=(self._reads0, self._wakeups0),
                wakes=(c.first_wake, c.last_wake),
                wake_ns=mono_ns(),
            )
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
