"""Scripted bad-input checks: each returns the errno name userspace saw (or "OK")."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable

from irqlab_agent.abi import Abi
from irqlab_agent.protocol import ProtocolError, errno_name


def unused_ioctl(abi: Abi) -> int:
    """An ``_IO(type, nr)`` request with the driver's ioctl type letter and an unused nr."""
    reqs = [io.request for io in abi.ioctls.values()]
    typ = abi.ioc_field(reqs[0], "type") if reqs else ord("I")
    used = {abi.ioc_field(r, "nr") for r in reqs}
    nr = next(n for n in range(0xFE, 0, -1) if n not in used)
    return abi.ioc("none", typ, nr)


def _outcome(fn: Callable[[], object]) -> str:
    try:
        r = fn()
    except OSError as e:
        return errno_name(e.errno or 0)
    if isinstance(r, bytes):
        return f"OK:{len(r)}"
    return "OK"


# Reads of one drain at most: the driver's ring (256 records by default) empties in a
# few; a file that never runs empty (/dev/zero) is refused, not read for ever.
MAX_DRAIN_READS = 1024


def drain(fd: int, size: int) -> int | None:
    """Read the non-blocking *fd* until EAGAIN or end of file, *size* bytes a read; the
    bytes read, or None when :data:`MAX_DRAIN_READS` reads did not empty it."""
    n = 0
    for _ in range(MAX_DRAIN_READS):
        try:
            data = os.read(fd, size)
        except BlockingIOError:
            return n
        if not data:
            return n
        n += len(data)
    return None


def run_checks(abi: Abi, dev: str, count_dev: str | None = None) -> dict[str, str]:
    """Open *dev* non-blocking and poke it with bad input; return {check: errno name}."""
    results: dict[str, str] = {}
    fd = os.open(dev, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        # Start from an empty queue so the EAGAIN check means "nothing pending".
        with contextlib.suppress(OSError):
            if drain(fd, abi.record_size * 64) is None:
                raise ProtocolError(
                    f"check: {dev} never ran empty ({MAX_DRAIN_READS} reads): not a device queue"
                )
        size = abi.record_size
        results["nonblock_empty_read"] = _outcome(lambda: os.read(fd, size))
        results["short_read"] = _outcome(lambda: os.read(fd, size - 1))
        results["zero_read"] = _outcome(lambda: os.read(fd, 0))
        bad = unused_ioctl(abi)
        results["bad_ioctl"] = _outcome(lambda: fcntl.ioctl(fd, bad, 0))
        results["write_short"] = _outcome(lambda: os.write(fd, b"\0\0\0"))
        if "SET_EVENTFD" in abi.ioctls:
            efd = abi.ioctls["SET_EVENTFD"]
            results["set_eventfd_negative"] = _outcome(lambda: efd.call(fd, -5))
            results["set_eventfd_not_eventfd"] = _outcome(lambda: efd.call(fd, fd))
            results["set_eventfd_bad_fd"] = _outcome(lambda: efd.call(fd, 0x7FFF_FFF0))
        if "ACK" in abi.ioctls:
            ack = abi.ioctls["ACK"]
            results["ack_null_arg"] = _outcome(lambda: fcntl.ioctl(fd, ack.request, 0))
            results["ack_bad_flags"] = _outcome(lambda: ack.call(fd, {"seq": 1, "flags": 1}))
            results["ack_unknown_seq"] = _outcome(lambda: ack.call(fd, {"seq": 0xFFFF_FFF0}))
        if "SET_SOURCES" in abi.ioctls:
            src = abi.ioctls["SET_SOURCES"]
            results["set_sources_bad_mask"] = _outcome(lambda: src.call(fd, 0xFFFF_FFFF))
    finally:
        os.close(fd)
    if count_dev:
        cfd = os.open(count_dev, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            with contextlib.suppress(OSError):
                os.read(cfd, 4)
            results["count_nonblock_empty_read"] = _outcome(lambda: os.read(cfd, 4))
            results["count_short_read"] = _outcome(lambda: os.read(cfd, 2))
        finally:
            os.close(cfd)
    return results
