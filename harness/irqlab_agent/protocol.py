"""JSON-lines protocol of the guest agent: request parsing and a thread-safe writer.

Requests arrive one JSON object per line on stdin::

    {"id": 7, "op": "arm", "path": "poll", "dev": "/dev/irqlab0"}

Every request gets exactly one response with the same ``id``::

    {"id": 7, "ok": true, ...}          or     {"id": 7, "ok": false, "error": "..."}

Events and other unsolicited messages carry ``"type"`` instead of ``"id"``:

``event``
    one record (or count, or GPIO line event) of an armed path: ``path``, the
    record's fields, ``wake_ns`` (agent back in userspace), ``ack_latency_ns``.
``summary``
    a path armed with ``summarize=[source, ...]`` (storm mode, see
    :mod:`irqlab_agent.summary`) counts the records of those sources instead of
    sending an event each.  One summary covers the records since the previous
    one and is sent before any event of another source (order is kept), every
    ``summary_interval_ms`` (default 250) while there are counts, and at disarm::

        {"type": "summary", "path": "read", "summary": 3, "records": 4096,
         "sources": {"2": {"records": 4096, "first": 8193, "last": 12288,
                           "in_order": 4096, "out_of_order": 0, "lost": 0,
                           "flags": {}}},
         "lost": 0, "flags": {}, "ack": "write", "acks": 4096, "ack_errors": 0,
         "ack_latency_max_ns": null, "reads": 16, "wakeups": 16,
         "first_wake_ns": ..., "last_wake_ns": ..., "wake_ns": ...}

    ``in_order``: records whose seq is above every seq of that source seen since
    arming (unique); ``out_of_order``: the others (duplicates/reordering);
    ``lost``: sum of the records' ``lost`` fields (driver ring losses);
    ``acks``/``ack_errors``: ACKs of the counted records in the path's ``ack``
    mode (``ioctl``: one IRQLAB_IOC_ACK each, ``ack_latency_max_ns`` their
    highest latency; ``write``: one write(2) of the seqs per read buffer;
    ``none``).  Every record is ACKed before a message covering it is sent.
    gpio-cdev with any non-empty ``summarize`` counts its line events' seqnos
    instead (no ``sources``/``lost``/``flags``; ``records``, ``first``, ``last``,
    ``in_order``, ``out_of_order`` at the top level, see :mod:`irqlab_agent.gpio_cdev`).
``path_error``, ``path_done``, ``interrupted``, ``uio_wake``, ``fatal``
    see the paths and the agent.
A request that is not valid JSON, not an object, or lacks an integer ``id`` and a
string ``op`` is answered with ``{"id": null, "ok": false, "error": ...}`` (with the
id echoed when it could be read) and the agent keeps running.

This module is pure Python without kernel dependencies, so the host's unit tests
import it directly.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import threading
from collections.abc import Mapping

TYPE_CHECKING = False  # typing is not imported at run time: it costs start-up time
if TYPE_CHECKING:
    from typing import IO, Any

    JsonObj = dict[str, Any]
else:
    JsonObj = dict

PROTOCOL_VERSION = 1


class ProtocolError(Exception):
    """A request the agent refuses; the message goes back in the error response."""

    def __init__(self, message: str, req_id: int | None = None) -> None:
        super().__init__(message)
        self.req_id = req_id


class Request:
    __slots__ = ("args", "id", "op")

    def __init__(self, id: int, op: str, args: Mapping[str, Any] | None = None) -> None:
        self.id = id
        self.op = op
        self.args: Mapping[str, Any] = args if args is not None else {}

    def __repr__(self) -> str:
        return f"Request(id={self.id!r}, op={self.op!r}, args={dict(self.args)!r})"

    def get_str(self, key: str, default: str | None = None) -> str:
        v = self.args.get(key, default)
        if not isinstance(v, str):
            raise ProtocolError(f"op {self.op!r}: {key!r} must be a string", self.id)
        return v

    def get_opt_str(self, key: str) -> str | None:
        v = self.args.get(key)
        if v is not None and not isinstance(v, str):
            raise ProtocolError(f"op {self.op!r}: {key!r} must be a string", self.id)
        return v

    def get_int(
        self, key: str, default: int | None = None, *, lo: int | None = None, hi: int | None = None
    ) -> int:
        v = self.args.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int):
            raise ProtocolError(f"op {self.op!r}: {key!r} must be an integer", self.id)
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise ProtocolError(f"op {self.op!r}: {key!r}={v} out of range [{lo}, {hi}]", self.id)
        return v

    def get_int_list(self, key: str, *, lo: int | None = None, hi: int | None = None) -> list[int]:
        """A list of integers in [lo, hi]; absent or null = []."""
        v = self.args.get(key)
        if v is None:
            return []
        if not isinstance(v, list) or any(isinstance(x, bool) or not isinstance(x, int) for x in v):
            raise ProtocolError(f"op {self.op!r}: {key!r} must be a list of integers", self.id)
        bad = [x for x in v if (lo is not None and x < lo) or (hi is not None and x > hi)]
        if bad:
            msg = f"op {self.op!r}: {key!r}: {bad} out of range [{lo}, {hi}]"
            raise ProtocolError(msg, self.id)
        return list(v)

    def get_bool(self, key: str, default: bool) -> bool:
        v = self.args.get(key, default)
        if not isinstance(v, bool):
            raise ProtocolError(f"op {self.op!r}: {key!r} must be a boolean", self.id)
        return v

    def get_float(
        self, key: str, default: float, *, lo: float = 0.0, hi: float | None = None
    ) -> float:
        """A finite number in [lo, hi] (JSON's NaN and Infinity are refused: a NaN
        passes every comparison's "no", an infinite wait never ends)."""
        v = self.args.get(key, default)
        f = math.nan
        if isinstance(v, int | float) and not isinstance(v, bool):
            with contextlib.suppress(OverflowError):  # an integer beyond any float
                f = float(v)
        if not math.isfinite(f) or f < lo or (hi is not None and f > hi):
            within = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
            raise ProtocolError(
                f"op {self.op!r}: {key!r} must be a finite number {within}, not {v!r}", self.id
            )
        return f


MAX_LINE = 1 << 20  # bytes of one request line; longer lines are refused, not parsed
# The line the agent writes to the kernel log to measure its clock (irqlab_agent.kclock):
# a failure's diagnostics leave it out of the test's kernel log
KERNEL_CLOCK_LINE = "irqlab-agent: kernel log clock calibration"
# Our driver's character device (its default mode: the paths' default) and its counting
# file (the count path's), as the driver names them (guest-kmod/irqlab-cdev.c:
# "irqlab%d", "irqlab%d-count"); the host's AgentClient reads them from here
DEVICE = "/dev/irqlab0"
COUNT_DEVICE = f"{DEVICE}-count"


def read_line(stream: IO[bytes]) -> bytes:
    """One request line, at most :data:`MAX_LINE` bytes kept: the rest of a longer line
    is read and dropped (the caller refuses the truncated line as too long)."""
    line = stream.readline(MAX_LINE + 1)
    if len(line) > MAX_LINE and not line.endswith(b"\n"):
        while True:
            rest = stream.readline(MAX_LINE)
            if not rest or rest.endswith(b"\n"):
                break
    return line


def parse_request(line: str | bytes) -> Request:
    """Parse one request line; raise :class:`ProtocolError` on anything malformed."""
    if len(line) > MAX_LINE:
        raise ProtocolError(f"request line longer than {MAX_LINE} bytes")
    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError) as e:
        raise ProtocolError(f"malformed JSON: {e}") from None
    except RecursionError:
        raise ProtocolError("malformed JSON: nested too deeply") from None
    if not isinstance(obj, dict):
        raise ProtocolError("request must be a JSON object")
    rid = obj.get("id")
    if isinstance(rid, bool) or not isinstance(rid, int):
        raise ProtocolError("request needs an integer 'id'")
    op = obj.get("op")
    if not isinstance(op, str) or not op:
        raise ProtocolError("request needs a string 'op'", rid)
    args = {k: v for k, v in obj.items() if k not in ("id", "op")}
    return Request(rid, op, args)


def error_id(line: str | bytes) -> int | None:
    """Best-effort id of a request that failed to parse (for the error response)."""
    if len(line) > MAX_LINE:
        return None
    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if isinstance(obj, dict):
        rid = obj.get("id")
        if isinstance(rid, int) and not isinstance(rid, bool):
            return rid
    return None


def errno_name(num: int) -> str:
    """``errno.ENOTTY`` -> ``"ENOTTY"``; unknown numbers as ``"E<num>"``."""
    return errno.errorcode.get(num, f"E{num}")


def ok(req_id: int, **fields: Any) -> JsonObj:
    return {"id": req_id, "ok": True, **fields}


def fail(req_id: int | None, message: str, **fields: Any) -> JsonObj:
    return {"id": req_id, "ok": False, "error": message, **fields}


class Writer:
    """Serialises JSON objects as lines on a binary stream, one writer at a time."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self.closed = False

    def send(self, obj: Mapping[str, Any]) -> None:
        data = json.dumps(obj, separators=(",", ":"), sort_keys=False).encode() + b"\n"
        with self._lock:
            if self.closed:
                return
            try:
                self._stream.write(data)
                self._stream.flush()
            except (BrokenPipeError, ValueError, OSError):
                # The host went away: nothing more can be reported.
                self.closed = True
