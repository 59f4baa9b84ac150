"""Exceptions of the QMP layer, with the command and QEMU's own error text."""

from __future__ import annotations

from collections.abc import Mapping

from irqlab.errors import IrqlabError

__all__ = [
    "DeviceRejected",
    "InjectionError",
    "InvalidArgument",
    "QMPCommandError",
    "QMPFailure",
]


class QMPFailure(IrqlabError, RuntimeError):
    """Talking to QEMU failed: not connected, timed out, or the connection dropped."""


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
