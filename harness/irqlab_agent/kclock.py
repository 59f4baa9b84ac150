"""The kernel log's clock against the agent's: printk stamps a line with local_clock()
(the scheduler's clock), CLOCK_MONOTONIC is the timekeeper's; in a guest they differ by a
constant of some milliseconds (15.8 ms measured here: a WARN in one test's last
moments was blamed on the next, whose start the reset took by CLOCK_MONOTONIC).  Measured
once per process by a line written to /dev/kmsg between two clock readings, then read
back with its stamp (µs)."""

from __future__ import annotations

import os
import select
import threading
import time

from irqlab_agent.protocol import KERNEL_CLOCK_LINE

MARKER = KERNEL_CLOCK_LINE.encode()
READ_LIMIT_S = 1.0  # for the line to come back (it is there as the write returns)

_lock = threading.Lock()
_offset: list[int | None] = []  # measured once: a property of the boot (the agent's
# sessions are threads of one process)


def printk_offset_ns(kmsg: str = "/dev/kmsg") -> int | None:
    """printk's clock minus CLOCK_MONOTONIC, in ns (None: /dev/kmsg would not say)."""
    with _lock:
        if not _offset:
            _offset.append(measure(kmsg))
        return _offset[0]


def measure(kmsg: str = "/dev/kmsg") -> int | None:
    """One measurement (its error: half the write's duration, tens of µs)."""
    try:
        r = os.open(kmsg, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        os.lseek(r, 0, os.SEEK_END)  # only records written from now on
        w = os.open(kmsg, os.O_WRONLY | os.O_CLOEXEC)
        try:
            before = time.monotonic_ns()
            os.write(w, MARKER + b"\n")
            after = time.monotonic_ns()
        finally:
            os.close(w)
        stamp_us = _find(r, time.monotonic() + READ_LIMIT_S)
    except OSError:
        return None
    finally:
        os.close(r)
    return None if stamp_us is None else stamp_us * 1000 - (before + after) // 2


def _find(fd: int, deadline: float) -> int | None:
    """The stamp (µs) of :data:`MARKER`'s record read from /dev/kmsg *fd*: records are
    ``PRIO,SEQ,USEC,FLAGS;TEXT``; a record overwritten before it was read is EPIPE."""
    p = select.poll()
    p.register(fd, select.POLLIN)
    while (left := deadline - time.monotonic()) > 0:
        try:
            record = os.read(fd, 8192)
        except BlockingIOError:
            p.poll(left * 1000)
            continue
        except BrokenPipeError:  # overwritten meanwhile: read on
            continue
        head, _, text = record.partition(b";")
        fields = head.split(b",")
        if text.startswith(MARKER) and len(fields) >= 3 and fields[2].isdigit():
            return int(fields[2])
    return None
