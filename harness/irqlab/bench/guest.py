"""The bench's guest: a :class:`~irqlab.vm.guest.Guest` that switches driver parameters.

Boot phases come from :attr:`Guest.phases`; ``agent_ready`` is the "boot ->
agent ready" figure.  Extra image packages (rt-tests for cyclictest) go in
:attr:`GuestConfig.extra_packages`.
"""

from __future__ import annotations

import shlex
from typing import Any

from irqlab.vm.guest import Guest

__all__ = [
    "BenchGuest",
    "agent_paths",
]


def agent_paths(guest: Any) -> dict[str, dict[str, Any]]:
    """The paths the guest's agent implements, in its order, as its hello lists them:
    ``{name: {"summarizable": bool}}`` (the host never imports the agent's classes)."""
    hello = guest.agent.hello or {}
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
        """Write a writable module parameter; return its old value."""
        p = shlex.quote(f"/sys/module/{self.module_name()}/parameters/{name}")
        old = self.sh(f"cat {p}").strip()
        self.sh(f"echo {shlex.quote(str(value))} > {p}")
        return old
