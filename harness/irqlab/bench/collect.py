"""Taking a path's events off the agent stream without failing on a short count."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from irqlab.agent_client import AgentClient, AgentTimeout

Event = dict[str, Any]


def collect(
    agent: AgentClient,
    path: str,
    *,
    n: int | None = None,
    until: Callable[[Event], bool] | None = None,
    timeout: float,
    idle: float,
) -> tuple[list[Event], str]:
    """Events of *path* until *n* arrived, *until* matched one, or a time limit hit.

    Returns (events, why) with why = ``"count"``, ``"until"``, ``"idle"`` (no event
    for *idle* seconds) or ``"timeout"``.  Path errors are returned as events too
    (type ``path_error``) so the caller sees them.
    """
    out: list[Event] = []
    deadline = time.monotonic() + timeout
    while n is None or len(out) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            return out, "timeout"
        try:
            ev = agent.expect(path=path, type="event", timeout=min(left, idle))
        except AgentTimeout:
            errs = [e for e in agent.pending() if e.get("type") == "path_error"]
            if errs:
                raise RuntimeError(f"path {path}: {errs[0]}") from None
            return out, "idle" if time.monotonic() < deadline else "timeout"
        out.append(ev)
        if until is not None and until(ev):
            return out, "until"
    return out, "count"
