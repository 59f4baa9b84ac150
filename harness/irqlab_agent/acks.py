"""ACKing device events by sequence number, one batch at a time, in one of three modes.

``ioctl`` (the default of every path): one ``IRQLAB_IOC_ACK`` per event; the
device answers each event's raise -> ACK latency.  ``write``: the whole batch in
one ``write(2)`` of the seqs as an array (the driver writes each to the ACK
register; no latency comes back, unknown seqs are counted by the device as
``ack-invalid``).  ``none``: nothing is ACKed.

The seq element of the written array has the type of the record's ``seq``
field, and the ACK ioctl's argument layout is the header's ``struct
irqlab_ack``: both come from :class:`irqlab_agent.abi.Abi`, never retyped.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import struct

TYPE_CHECKING = False  # typing is not imported at run time: it costs start-up time
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

    from irqlab_agent.abi import Abi

ACK_MODES = ("ioctl", "write", "none")


def parse_ack_mode(value: object) -> str:
    """An arm request's ``ack``: true = ``ioctl``, false = ``none``, or a mode name."""
    if value is True:
        return "ioctl"
    if value is False:
        return "none"
    if isinstance(value, str) and value in ACK_MODES:
        return value
    raise ValueError(f"'ack' must be a boolean or one of {', '.join(ACK_MODES)}, not {value!r}")


def open_ack_node(abi: Abi, dev: str) -> int:
    """A second file of an irqlab node to ACK through, receiving no records of its own
    (empty source mask; a node without that ioctl, e.g. a test's FIFO, is used as is)."""
    fd = os.open(dev, os.O_RDWR | os.O_CLOEXEC | os.O_NONBLOCK)
    sources = abi.ioctls.get("SET_SOURCES")
    if sources is not None:
        try:
            sources.call(fd, 0)
        except OSError as e:
            if e.errno != errno.ENOTTY:
                os.close(fd)
                raise
    return fd


class SeqAcks:
    """ACKs lists of seqs on *fd* in *mode*; counts ACKs, failures and the highest latency."""

    def __init__(self, abi: Abi, mode: str, fd: int) -> None:
        if mode not in ACK_MODES:
            raise ValueError(f"unknown ACK mode {mode!r}")
        self.mode = mode
        self.fd = fd
        self.acks = 0
        self.errors = 0
        self.latency_max_ns: int | None = None
        if mode == "ioctl":
            io = abi.ioctl("ACK")
            if io.arg is None:
                raise ValueError("the ACK ioctl takes no struct argument")
            self._request = io.request
            self._buf = bytearray(io.arg.size)
            self._seq_off, self._seq_st = io.arg.field_struct("seq")
            lat = next((f for f in io.arg.fields if "lat" in f), None)
            self._lat = io.arg.field_struct(lat) if lat is not None else None
        elif mode == "write":
            _, seq_st = abi.record.field_struct("seq")
            self._order, self._code = seq_st.format[0], seq_st.format[1:]

    def ack(self, seqs: Sequence[int]) -> None:
        """ACK *seqs* (non-zero device seqs) in order."""
        if not seqs or self.mode == "none":
            return
        if self.mode == "write":
            self._write(seqs)
        else:
            for seq in seqs:
                self.ack_one(seq)

    def ack_one(self, seq: int) -> int | None:
        """ACK one seq; in ``ioctl`` mode return the device's latency (None if rejected)."""
        if self.mode == "write":
            self._write((seq,))
            return None
        if self.mode == "none":
            return None
        buf = self._buf
        self._seq_st.pack_into(buf, self._seq_off, seq)
        try:
            fcntl.ioctl(self.fd, self._request, buf, True)
        except OSError:
            self.errors += 1
            return None
        self.acks += 1
        if self._lat is None:
            return None
        off, st = self._lat
        lat: int = st.unpack_from(buf, off)[0]
        if self.latency_max_ns is None or lat > self.latency_max_ns:
            self.latency_max_ns = lat
        return lat

    def _write(self, seqs: Sequence[int]) -> None:
        size = struct.calcsize(f"{self._order}{self._code}")
        data = memoryview(struct.pack(f"{self._order}{len(seqs)}{self._code}", *seqs))
        while data:  # a write cut short (a signal) goes on with the seqs it did not take
            try:
                n = os.write(self.fd, data)
            except OSError:
                n = 0
            done = n // size
            self.acks += done
            if done == 0:
                self.errors += len(data) // size
                return
            data = data[done * size :]

    def close_fd(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


class SeqAcker:
    """ACKs device events by sequence number through a second fd of the irqlab node.

    For paths whose reads carry no device seq (the counting file, gpio-cdev
    events): the host says which seq the path's first event has (``ack_first_seq``)
    and the path ACKs ``first + k - 1`` for its k-th event, on a file opened on
    ``ack_dev`` with an empty source mask (it queues no records of its own).
    The device answers the raise -> ACK latency in its own clock.
    """

    def __init__(self, abi: Abi, dev: str, first_seq: int) -> None:
        self.first_seq = first_seq
        self.fd = open_ack_node(abi, dev)
        try:
            self._acks = SeqAcks(abi, "ioctl", self.fd)  # one preallocated argument buffer
        except BaseException:
            os.close(self.fd)
            raise

    @classmethod
    def from_params(cls, abi: Abi, params: Mapping[str, Any]) -> SeqAcker | None:
        """The acker an arm request asks for (``ack_dev`` + ``ack_first_seq``), or None."""
        dev, first = params.get("ack_dev"), params.get("ack_first_seq")
        if dev is None and first is None:
            return None
        if not isinstance(dev, str) or not isinstance(first, int) or first < 1:
            raise ValueError("ack_dev (a /dev/irqlabN path) and ack_first_seq (>= 1) go together")
        return cls(abi, dev, first)

    def dev_seq(self, n: int) -> int:
        """The device seq of the path's *n*-th event (1-based)."""
        return (self.first_seq + n - 1) & 0xFFFF_FFFF

    def ack_nth(self, n: int) -> int | None:
        """ACK the path's *n*-th event (1-based); the device's latency, None if rejected."""
        return self._acks.ack_one(self.dev_seq(n))

    def counts(self) -> tuple[int, int]:
        """(ACKs the device took, ACKs it refused) so far."""
        return self._acks.acks, self._acks.errors

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)
