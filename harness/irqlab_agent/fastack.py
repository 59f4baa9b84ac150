"""ACK first, decode later: the per-record ``IRQLAB_IOC_ACK`` of the latency series
issued straight after the wake-up, before any record becomes a dict (issue 15).

:func:`ack_records` walks a read buffer with the record's ``seq`` field alone
(offset and ``struct`` format from :class:`irqlab_agent.abi.Abi`, nothing retyped)
and ACKs each non-zero seq through one reused ioctl buffer
(:class:`irqlab_agent.acks.SeqAcks` in ``ioctl`` mode); the caller decodes and
reports afterwards with the latencies it got.  Before, each record was decoded
(flag names and all) and the ACK issued only then, so the device's raise -> ACK
figure included the decoding of the records ahead of it.

Also :func:`set_switch_interval`: the interpreter's thread switch interval (the
``tune`` op), to measure whether a thread woken by the kernel waits for the GIL held
by another thread (Python's default interval is 5 ms).
"""

from __future__ import annotations

import sys

from irqlab_agent.acks import SeqAcks
from irqlab_agent.protocol import JsonObj, Request, ok

TYPE_CHECKING = False  # typing is not imported at run time: it costs start-up time
if TYPE_CHECKING:
    from collections.abc import Callable

    from irqlab_agent.abi import Abi

# The switch interval stays Python's default (5 ms): measured in the bench guest
# (docs/bench.md), 0.5 ms did not lower the agent's p50 and did not help storms.
DEFAULT_SWITCH_INTERVAL_S = 0.005
MAX_SWITCH_INTERVAL_S = 1.0  # a thread may hold the interpreter this long at most


class Tuning:
    """What the ``tune`` op changes at run time (for A/B measurements in one boot)."""

    ack_first = True  # per-record ioctl ACKs before decoding (False: decode, then ACK)


TUNING = Tuning()


class FastAcker:
    """ACKs the records of a read buffer by seq before they are decoded."""

    def __init__(self, abi: Abi, fd: int) -> None:
        self.acks = SeqAcks(abi, "ioctl", fd)
        self.size = abi.record_size
        self.seq_off, self.seq_st = abi.record.field_struct("seq")

    def ack_records(self, data: bytes) -> list[int | None]:
        """ACK every record of *data* in order; its latency, None for seq 0 (a record the
        driver made) or a rejected ACK."""
        out: list[int | None] = []
        unpack, off, size = self.seq_st.unpack_from, self.seq_off, self.size
        for pos in range(0, len(data) - size + 1, size):
            seq = unpack(data, pos + off)[0]
            out.append(self.acks.ack_one(seq) if seq else None)
        return out


def reset_tuning() -> None:
    """Back to the defaults: what one session tuned never outlives it (``Agent.shutdown``)
    or a ``reset``."""
    TUNING.ack_first = Tuning.ack_first
    sys.setswitchinterval(DEFAULT_SWITCH_INTERVAL_S)


def set_switch_interval(seconds: float) -> float:
    """Set the interpreter's switch interval; return the previous one."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(seconds)
    return old


def op_tune(req: Request) -> JsonObj:
    """``{"op": "tune", "switch_interval_s"?: x, "ack_first"?: bool}``: set what is
    given, answer both.  Both last until the session ends or a ``reset``
    (:func:`reset_tuning`)."""
    if "switch_interval_s" in req.args:
        value = req.get_float(
            "switch_interval_s", DEFAULT_SWITCH_INTERVAL_S, lo=1e-6, hi=MAX_SWITCH_INTERVAL_S
        )
        set_switch_interval(value)
    if "ack_first" in req.args:
        TUNING.ack_first = req.get_bool("ack_first", True)
    return ok(req.id, switch_interval_s=sys.getswitchinterval(), ack_first=TUNING.ack_first)


def ops() -> dict[str, Callable[[Request], JsonObj]]:
    return {"tune": op_tune}
