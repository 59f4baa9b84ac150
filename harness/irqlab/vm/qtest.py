"""A typed client for QEMU's qtest protocol (``-qtest unix:<path>``, ``-accel qtest``).

Line based: we send ``readl 0xfe000000``, QEMU answers ``OK 0x...`` or
``FAIL <why>``.  Intercepted interrupt lines are reported as unsolicited
``IRQ raise N`` / ``IRQ lower N`` lines, written by QEMU at the moment the
line changes, i.e. before the ``OK`` of the command (qtest or QMP) that caused
it; :meth:`QTest.sync` reads everything QEMU has said so far.  All reads of
the socket happen inside a command, so there is no reader thread and no race.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Literal

from irqlab.errors import IrqlabError, hide_frame

__tracebackhide__ = hide_frame  # pytest: an IrqlabError's traceback leaves these frames out

__all__ = [
    "IrqEdge",
    "IrqEvent",
    "QTest",
    "QTestError",
]

_SIZES = {"b": 1, "w": 2, "l": 4, "q": 8}
IrqEdge = Literal["raise", "lower"]


class QTestError(IrqlabError, RuntimeError):
    """QEMU answered FAIL, or the qtest connection broke."""


@dataclass(frozen=True)
class IrqEvent:
    """One intercepted line change, in the order QEMU reported them."""

    line: int
    level: bool

    @property
    def edge(self) -> IrqEdge:
        return "raise" if self.level else "lower"


class QTest:
    """Commands over a connected qtest socket; ``timeout`` bounds each reply."""

    def __init__(self, sock: socket.socket, *, timeout: float = 30.0) -> None:
        self._sock = sock
        self._sock.settimeout(timeout)
        self._buf = b""
        self._levels: dict[int, bool] = {}
        self._events: list[IrqEvent] = []
        self._closed = False

    # -- protocol --------------------------------------------------------------

    def _readline(self) -> str:
        while b"\n" not in self._buf:
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                raise QTestError("no reply from QEMU on the qtest socket (timeout)") from None
            except OSError as e:
                raise QTestError(f"qtest socket error: {e}") from e
            if not chunk:
                raise QTestError("QEMU closed the qtest socket (did it exit?)")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode("ascii", "replace").strip()

    def command(self, *words: str | int) -> list[str]:
        """Send one command; return the words after ``OK``.  IRQ notices are recorded."""
        if self._closed:
            raise QTestError("qtest connection is closed")
        text = " ".join(hex(w) if isinstance(w, int) else w for w in words)
        try:
            self._sock.sendall(text.encode("ascii") + b"\n")
        except OSError as e:
            raise QTestError(f"qtest {text!r}: cannot send: {e}") from e
        while True:
            line = self._readline()
            parts = line.split()
            if parts[:1] == ["IRQ"] and len(parts) == 3 and parts[1] in ("raise", "lower"):
                ev = IrqEvent(int(parts[2]), parts[1] == "raise")
                self._levels[ev.line] = ev.level
                self._events.append(ev)
                continue
            if parts[:1] == ["OK"]:
                return parts[1:]
            if parts[:1] == ["FAIL"]:
                raise QTestError(f"qtest {text!r} failed: {' '.join(parts[1:])}")
            raise QTestError(f"qtest {text!r}: unexpected reply {line!r}")

    def _value(self, *words: str | int) -> int:
        reply = self.command(*words)
        if not reply:
            raise QTestError(f"qtest {words!r}: reply without a value")
        return int(reply[0], 0)

    # -- memory and I/O ports -----------------------------------------------

    @staticmethod
    def _check(value: int, size: int) -> None:
        if not 0 <= value < 1 << (8 * size):
            raise ValueError(f"{value:#x} does not fit in {size} bytes")

    def read(self, addr: int, size: Literal["b", "w", "l", "q"]) -> int:
        return self._value(f"read{size}", addr)

    def write(self, addr: int, size: Literal["b", "w", "l", "q"], value: int) -> None:
        self._check(value, _SIZES[size])
        self.command(f"write{size}", addr, value)

    def readb(self, addr: int) -> int:
        return self.read(addr, "b")

    def readw(self, addr: int) -> int:
        return self.read(addr, "w")

    def readl(self, addr: int) -> int:
        return self.read(addr, "l")

    def readq(self, addr: int) -> int:
        return self.read(addr, "q")

    def writeb(self, addr: int, value: int) -> None:
        self.write(addr, "b", value)

    def writew(self, addr: int, value: int) -> None:
        self.write(addr, "w", value)

    def writel(self, addr: int, value: int) -> None:
        self.write(addr, "l", value)

    def writeq(self, addr: int, value: int) -> None:
        self.write(addr, "q", value)

    def memread(self, addr: int, size: int) -> bytes:
        reply = self.command("read", addr, size)
        return bytes.fromhex(reply[0].removeprefix("0x")) if reply else b""

    def memwrite(self, addr: int, data: bytes) -> None:
        self.command("write", addr, len(data), "0x" + data.hex())

    def memset(self, addr: int, size: int, byte: int) -> None:
        self._check(byte, 1)
        self.command("memset", addr, size, byte)

    def inb(self, port: int) -> int:
        return self._value("inb", port)

    def inw(self, port: int) -> int:
        return self._value("inw", port)

    def inl(self, port: int) -> int:
        return self._value("inl", port)

    def outb(self, port: int, value: int) -> None:
        self._check(value, 1)
        self.command("outb", port, value)

    def outw(self, port: int, value: int) -> None:
        self._check(value, 2)
        self.command("outw", port, value)

    def outl(self, port: int, value: int) -> None:
        self._check(value, 4)
        self.command("outl", port, value)

    # -- virtual clock ---------------------------------------------------------

    def clock_step(self, ns: int | None = None) -> int:
        """Advance QEMU_CLOCK_VIRTUAL by *ns* (default: to the next timer); returns the new time."""
        if ns is None:
            return self._value("clock_step")
        if ns < 0:
            raise ValueError("clock_step: ns must be >= 0")
        return int(self.command("clock_step", str(ns))[0])

    def clock_set(self, ns: int) -> int:
        """Advance the virtual clock to *ns* (never backwards); returns the new time."""
        return int(self.command("clock_set", str(ns))[0])

    def clock(self) -> int:
        """The current virtual time (a zero step)."""
        return self.clock_step(0)

    # -- interrupt lines -------------------------------------------------------

    def irq_intercept_in(self, qom_path: str) -> None:
        """Report changes of the device's unnamed GPIO inputs (e.g. ``ioapic``)."""
        self.command("irq_intercept_in", qom_path)

    def irq_intercept_out(self, qom_path: str) -> None:
        self.command("irq_intercept_out", qom_path)

    def set_irq_in(self, qom_path: str, name: str, line: int, level: int) -> None:
        self.command("set_irq_in", qom_path, name, str(line), str(level))

    def sync(self) -> None:
        """Read every notice QEMU wrote so far (a cheap round trip)."""
        self.command("endianness")

    def irq_level(self, line: int) -> bool:
        """The intercepted *line*'s current level, as of now."""
        self.sync()
        return self._levels.get(line, False)

    def raised_lines(self) -> set[int]:
        self.sync()
        return {n for n, up in self._levels.items() if up}

    def take_irq_events(self) -> list[IrqEvent]:
        """The line changes reported since the last call, in order."""
        self.sync()
        events, self._events = self._events, []
        return events

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._sock.close()
