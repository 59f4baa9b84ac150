"""Taking a path's events off the agent stream without failing on a short count."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from irqlab.vm.agent_client import AgentClient, AgentTimeout

__all__ = [
    "Event",
    "collect",
]

Event = dict[str, Any]


def collect(
    agent: AgentClient,
    path: str,
    *,
    n: int | None = None,
    until: Callable[[Event], bool] | None = None,
    timeout: float,
    idle: float,
    types: tuple[str, ...] = ("event", "summary"),
) -> tuple[list[Event], str]:
    """Messages of *path* (events, and the summaries of a path in storm mode, in
    arrival order) until *n* arrived, *until* matched one, or a time limit hit.

    Returns (messages, why) with why = ``"count"``, ``"until"``, ``"idle"`` (no
    message for *idle* seconds: a summary is progress too) or ``"timeout"``.  A
    path error raises RuntimeError.
    """
    out: list[Event] = []
    deadline = time.monotonic() + timeout
    while n is None or len(out) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            return out, "timeout"
        try:
            ev = agent.expect(path=path, type=types, timeout=min(left, idle))
        except AgentTimeout:
            errs = [e for e in agent.pending() if e.get("type") == "path_error"]
            if errs:
                raise RuntimeError(f"path {path}: {errs[0]}") from None
            return out, "idle" if time.monotonic() < deadline else "timeout"
        out.append(ev)
        if until is not None and until(ev):
            return out, "until"
    return out, "count"
