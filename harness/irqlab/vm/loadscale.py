"""Timeouts that stretch with the host's load.

Under TCG every vCPU is a busy host thread: four guests on two cores each run at about
half speed, and a guest can be descheduled for seconds at a time when other processes
compete.  The liveness limits that decide "this guest froze" (no agent heartbeat, no
QMP answer) must then allow for that, or a slow guest is declared dead.
:func:`timeout_scale` says by how much: the run queue per usable core (the 1-minute load
average; the number of pytest-xdist workers per core when that is higher, since a run
that just started has not moved the average yet), at least 1, at most :data:`MAX_SCALE`;
``$IRQLAB_TIMEOUT_SCALE`` sets a floor (e.g. for a slow CI runner; still at most
:data:`MAX_SCALE`).  A value that is no number is ignored here (the watch threads
must not fail on it); :func:`check_environment` refuses it before a guest starts.
"""

from __future__ import annotations

import math
import os

from irqlab.errors import hide_frame

__tracebackhide__ = hide_frame  # pytest: an IrqlabError's traceback leaves these frames out

__all__ = [
    "MAX_SCALE",
    "SCALE_ENV",
    "check_environment",
    "check_timeout",
    "scaled",
    "timeout_scale",
]

MAX_SCALE = 8.0
MAX_TIMEOUT = 7 * 24 * 3600.0  # s: the longest wait a timeout may ask for
SCALE_ENV = "IRQLAB_TIMEOUT_SCALE"


def check_environment() -> None:
    """Raise ValueError naming :data:`SCALE_ENV` when it is set to something that is not
    a finite number >= 0."""
    raw = os.environ.get(SCALE_ENV, "")
    try:
        ok = not raw or 0 <= float(raw) < float("inf")
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(
            f"{SCALE_ENV}={raw!r} is not a number >= 0 (the floor of the factor the "
            f"guests' liveness limits stretch by under load, at most {MAX_SCALE:g})"
        )


def usable_cores() -> int:
    """The host cores this process may run on (its affinity), at least 1."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, "") or default)
    except ValueError:
        return default


def timeout_scale(*, load: float | None = None, cpus: int | None = None) -> float:
    """How many times longer than on an idle machine a guest may take right now (>= 1)."""
    n = cpus if cpus is not None else usable_cores()
    if load is None:
        try:
            load = os.getloadavg()[0]
        except OSError:
            load = 0.0
    workers = _env_float("PYTEST_XDIST_WORKER_COUNT", 1.0)
    floor = _env_float(SCALE_ENV, 1.0)
    return min(MAX_SCALE, max(1.0, floor, load / max(n, 1), workers / max(n, 1)))


def scaled(seconds: float, **kw: float | int | None) -> float:
    """*seconds* stretched by :func:`timeout_scale`."""
    return seconds * timeout_scale(**kw)  # type: ignore[arg-type]


def check_timeout(timeout: object, what: str = "timeout", *, zero: bool = False) -> None:
    """Refuse a *timeout* that is not a number of seconds > 0 (>= 0 with *zero*: look
    once, do not wait) up to MAX_TIMEOUT: a wait of -1 s or "5" failed later and
    obscurely, one of 1e12 s or inf with an OverflowError that left the command running."""
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(f"{what} must be a number of seconds, not {timeout!r}")
    low_ok = timeout >= 0 if zero else timeout > 0
    if not (math.isfinite(timeout) and low_ok and timeout <= MAX_TIMEOUT):
        least = "0 or more" if zero else "more than 0"
        raise ValueError(
            f"{what} must be {least} and at most {MAX_TIMEOUT:.0f} s (a week), not {timeout!r}"
        )
