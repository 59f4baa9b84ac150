"""The ``evdev-*`` paths: the events of an input device (``/dev/input/eventN``).

The aarch64 guest's device tree puts a ``gpio-keys`` key on one of our gpiochip's
lines; the kernel's ``gpio_keys`` driver debounces the line and reports the key on
an input device.  These paths wait for it as the seed's userspace does, each on
its own open file of the device:

- ``evdev-read``: blocking read(2) (:class:`~irqlab_agent.paths.ReadPath`);
- ``evdev-poll``: poll(2) for ``POLLIN``, then read (:class:`~irqlab_agent.paths.PollPath`);
- ``evdev-sigio``: ``F_SETOWN`` + ``FASYNC``, SIGIO through the agent's signalfd, then
  read until ``EAGAIN`` (:class:`~irqlab_agent.paths.AsyncPath`).

Arm with ``input="<device name>"`` (the name ``EVIOCGNAME`` gives, e.g. the
device-tree node's ``irqlab-keys``) to find the device, or with ``dev`` naming it.
Each input event except the ``SYN_REPORT`` that ends a packet (counted in the
path's ``flags``) is reported as ``{"type": "event", "ev_type", "code", "value",
"time_ns", "wake_ns", ...}``; ``EV_KEY`` events carry ``"key": "press"``,
``"release"`` or ``"repeat"``.  The paths ACK nothing: a key event is the kernel's,
not one of the device's records.

``struct input_event`` (``linux/input.h``) as a native process reads it is
``__kernel_ulong_t __sec, __usec; __u16 type, code; __s32 value`` (for a 64-bit
time ``struct timeval`` has the same two longs).  ``__kernel_ulong_t`` is the
C ``unsigned long`` of the reading process's ABI: the kernel picks the native or
the compat layout by the caller, so :data:`INPUT_EVENT` takes its size from this
interpreter's own C ABI (:mod:`struct`'s native mode), never a fixed 24 or 16.
The request numbers are encoded as the ABI artifact says (:meth:`~irqlab_agent.abi.Abi.ioc`).
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import struct
import time

from irqlab_agent.paths import AsyncPath, NotificationPath, PollPath, ReadPath

TYPE_CHECKING = False  # typing is not imported at run time: it costs start-up time
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from irqlab_agent.abi import Abi

# --- linux/input.h ------------------------------------------------------------------
INPUT_EVENT = struct.Struct("@LLHHi")  # struct input_event, this process's C ABI
_EV_MAGIC = ord("E")
_EVIOCGNAME_NR = 0x06  # EVIOCGNAME(len): _IOC(_IOC_READ, 'E', 0x06, len)
_EVIOCSCLOCKID_NR = 0xA0  # EVIOCSCLOCKID: _IOW('E', 0xa0, int)
_INT = struct.Struct("@i")
NAME_LEN = 256
EV_SYN = 0x00
EV_KEY = 0x01
SYN_REPORT = 0
SYN_DROPPED = 3
KEY_STATES = {0: "release", 1: "press", 2: "repeat"}
INPUT_GLOB = "/dev/input/event*"


def eviocgname(abi: Abi, size: int = NAME_LEN) -> int:
    return abi.ioc("read", _EV_MAGIC, _EVIOCGNAME_NR, size)


def eviocsclockid(abi: Abi) -> int:
    return abi.ioc("write", _EV_MAGIC, _EVIOCSCLOCKID_NR, _INT.size)


def input_name(abi: Abi, fd: int) -> str:
    """The input device's name (``EVIOCGNAME``)."""
    buf = bytearray(NAME_LEN)
    fcntl.ioctl(fd, eviocgname(abi), buf, True)
    return buf.split(b"\0", 1)[0].decode(errors="replace")


def find_input(abi: Abi, name: str, pattern: str = INPUT_GLOB) -> str:
    """The first ``/dev/input/eventN`` whose name is *name*."""
    seen: list[str] = []
    for dev in sorted(glob.glob(pattern), key=lambda d: (len(d), d)):
        fd = os.open(dev, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            seen.append(input_name(abi, fd))
        finally:
            os.close(fd)
        if seen[-1] == name:
            return dev
    if not seen:  # the input device may be there, its evdev node not
        raise FileNotFoundError(
            2, f"no input device named {name!r}: no {pattern} at all (is evdev loaded?)"
        )
    raise FileNotFoundError(2, f"no input device named {name!r} (there are: {seen})")


class EvdevPath(NotificationPath):
    """An input device's events; subclassed with the way of waiting (read, poll, SIGIO)."""

    summarizable = False  # input events, not the driver's records
    records = False  # an input device: no GET_INFO (it answers EINVAL)
    input_name: str | None = None  # EVIOCGNAME of the open device
    clock = "realtime"  # of the events' times (EVIOCSCLOCKID)
    options = NotificationPath.options | {"input"}

    def open(self) -> None:
        want = self.opts.params.get("input")
        if want is not None:
            self.opts.dev = find_input(self.abi, str(want))
        super().open()
        with contextlib.suppress(OSError):  # not an input device (the unit tests' FIFO)
            self.input_name = input_name(self.abi, self.fd)

    def setup(self) -> None:
        """Event times on CLOCK_MONOTONIC (the agent's ``wake_ns`` clock), if it can."""
        with contextlib.suppress(OSError):
            fcntl.ioctl(self.fd, eviocsclockid(self.abi), _INT.pack(time.CLOCK_MONOTONIC))
            self.clock = "monotonic"
        super().setup()

    def arm(self) -> dict[str, Any]:
        info = super().arm()
        info.update(input=self.input_name, clock=self.clock, event_size=INPUT_EVENT.size)
        return info

    @property
    def record_size(self) -> int:
        return INPUT_EVENT.size

    def report(self, data: bytes, wake_ns: int, extra: Mapping[str, Any] | None = None) -> int:
        """Report each input event of a read(2) buffer but the packets' SYN_REPORT;
        return how many events the buffer held."""
        if len(data) % INPUT_EVENT.size:
            raise OSError(0, f"read {len(data)} bytes, not whole {INPUT_EVENT.size}-byte events")
        n = 0
        for sec, usec, typ, code, value in INPUT_EVENT.iter_unpack(data):
            if typ == EV_SYN and code == SYN_REPORT:
                self.stats.flags["SYN_REPORT"] = self.stats.flags.get("SYN_REPORT", 0) + 1
                continue
            ev: dict[str, Any] = {
                "ev_type": typ,
                "code": code,
                "value": value,
                "time_ns": sec * 1_000_000_000 + usec * 1000,
            }
            if typ == EV_KEY:
                ev["key"] = KEY_STATES.get(value, str(value))
            elif typ == EV_SYN and code == SYN_DROPPED:
                ev["dropped"] = True  # the kernel's buffer for this file overflowed
            self._report_event(ev, wake_ns, extra if n == 0 else None, None)
            n += 1
        return len(data) // INPUT_EVENT.size


class EvdevReadPath(EvdevPath, ReadPath):
    kind = "evdev-read"


class EvdevPollPath(EvdevPath, PollPath):
    kind = "evdev-poll"


class EvdevSigioPath(EvdevPath, AsyncPath):
    kind = "evdev-sigio"


EVDEV_PATHS = (EvdevReadPath, EvdevPollPath, EvdevSigioPath)
