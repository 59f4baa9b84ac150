"""The bench's guest: a :class:`~irqlab.vm.guest.Guest` that switches driver parameters.

Boot phases come from :attr:`Guest.phases`; ``agent_ready`` is the "boot ->
agent ready" figure.  Extra image packages (rt-tests for cyclictest) go in
:attr:`GuestConfig.extra_packages`.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from irqlab.vm.guest import Guest

__all__ = [
    "BenchGuest",
    "agent_paths",
]

_PARAM_NAME = re.compile(r"[A-Za-z0-9_]+")  # a module parameter's name: one sysfs file


def agent_paths(guest: Any) -> dict[str, dict[str, Any]]:
    """The paths the guest's agent implements, in its order, as its hello lists them:
    ``{name: {"summarizable": bool}}`` (the host never imports the agent's classes)."""
    hello = guest.agent.hello
    return dict(hello.get("paths", {}))


class BenchGuest(Guest):
    """A :class:`Guest` (its :attr:`~Guest.phases` are the boot figures) that can
    switch driver parameters between measurements."""

    def switch_module(self, **params: Any) -> None:
        """Disarm everything, then reload the driver with *params* (``wakeup="thread"``,
        ``uio=1``: see :meth:`Guest.reload_module`)."""
        self.agent.reset()
        self.reload_module(**params)

    def set_param(self, name: str, value: object) -> str:
        """Write a writable module parameter; return its old value.  :class:`ValueError`
        for a *name* that is no plain identifier (``[A-Za-z0-9_]+``): a ``/`` or ``..``
        would name another sysfs file than the parameter's."""
        if not _PARAM_NAME.fullmatch(name):
            raise ValueError(
                f"module parameter name {name!r}: not a plain identifier ([A-Za-z0-9_]+); "
                "it would name another file than /sys/module/<module>/parameters/<name>"
            )
        p = shlex.quote(f"/sys/module/{self.module_name()}/parameters/{name}")
        old = self.sh(f"cat {p}").strip()
        self.sh(f"echo {shlex.quote(str(value))} > {p}")
        return old
