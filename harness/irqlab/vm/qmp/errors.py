"""Exceptions of the QMP layer, with the command and QEMU's own error text."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from irqlab.errors import IrqlabError, hide_frame

__tracebackhide__ = hide_frame  # pytest: an IrqlabError's traceback leaves these frames out

__all__ = [
    "DeviceRejected",
    "InjectionError",
    "InvalidArgument",
    "OutOfRange",
    "QMPCommandError",
    "QMPFailure",
    "QMPNoReply",
]


class QMPFailure(IrqlabError, RuntimeError):
    """Talking to QEMU failed: not connected, timed out, or the connection dropped."""


class QMPNoReply(QMPFailure, TimeoutError):
    """QEMU did not answer a command within its time limit (frozen, stopped, busy)."""


class QMPCommandError(IrqlabError, RuntimeError):
    """QEMU received the command and answered with an error."""

    def __init__(
        self, command: str, arguments: Mapping[str, object], error_class: str, desc: str
    ) -> None:
        super().__init__(f"QMP {command} {dict(arguments)} failed: {error_class}: {desc}")
        self.command = command
        self.arguments = dict(arguments)
        self.error_class = error_class
        self.desc = desc


class InjectionError(IrqlabError, RuntimeError):
    """An injector operation was refused (by the device, or before sending it)."""


class DeviceRejected(InjectionError):
    """The device (QEMU) refused a value; ``desc`` is QEMU's message."""

    def __init__(self, operation: str, desc: str, cause: QMPCommandError) -> None:
        super().__init__(f"{operation}: device refused: {desc}")
        self.operation = operation
        self.desc = desc
        self.cause = cause


class InvalidArgument(InjectionError, ValueError):
    """Refused client side: the value can never be valid for this device."""


class OutOfRange(InvalidArgument):
    """A number outside what the device takes, said in decimal (hexadecimal for masks
    and data words, where bits matter) and in its unit; *hi* None: no maximum worth
    naming (the type's).  The parts are kept, so that a caller that converted the
    user's value (a command line's ``--period-us``) can say it in the user's terms
    with :meth:`in_unit`."""

    def __init__(
        self,
        name: str,
        value: int,
        lo: int,
        hi: int | None,
        *,
        unit: str = "",
        hexadecimal: bool = False,
    ) -> None:
        self.name, self.value, self.lo, self.hi = name, value, lo, hi
        self.unit = unit
        self.hexadecimal = hexadecimal
        number = (lambda v: f"{v:#x}") if hexadecimal else str
        super().__init__(self._say(f"{name}=", number, unit))

    def _say(
        self, label: str, number: Callable[[int], str], unit: str, given: str | None = None
    ) -> str:
        u = f" {unit}" if unit else ""
        said = f"{label}{number(self.value) if given is None else given}{u}"
        if self.hi is None:
            low = self.value < self.lo
            return (
                f"{said} is below the minimum, {number(self.lo)}{u}"
                if low
                else f"{said} is too large"
            )
        return f"{said} out of range [{number(self.lo)}, {number(self.hi)}]{u}"

    def in_unit(self, label: str, unit: str, per: float, given: float | None = None) -> str:
        """The message for a value the caller took in *unit* (*per* of this error's unit
        each) as *label*: ``in_unit("--period-us", "µs", 1000)`` of ``period_ns=1``
        says ``--period-us 0.001 µs is below the minimum, 1 µs``.  *given*: the value
        as the user gave it, said instead of this error's converted one (0.0004 µs
        is 0 ns once rounded)."""
        said = None if given is None else f"{given:g}"
        # the bounds in full (10000000, not 1e+07)
        return self._say(f"{label} ", lambda v: f"{v / per:.15g}", unit, said)
