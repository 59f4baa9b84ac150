"""Whether a guest's clock runs at the host's rate, checked once after a cold boot.

Under TCG on a loaded host the kernel's boot-time TSC calibration can go wrong: seen
here, ``tsc: PIT calibration deviates from HPET: 377969 2594724``, ``tsc: Using PIT
calibration value``, ``Detected 377.969 MHz processor`` on a 2.59 GHz host.  That
guest's CLOCK_MONOTONIC ran about 7x the host's (its sleeps and timeouts 7x short), and
the ready-state snapshot saved from it carried the error into every guest restored
from it, run after run, until the snapshot's key changed (the native responder's
clock fit failed in each: a drift of seconds per second).

:func:`measure` brackets two readings of the guest's CLOCK_MONOTONIC (the agent's
``ping``) between host readings: the guest's rate lies between the two bounds it
returns whatever the round trips took; only a rate surely outside
``1 +- MAX_RATE_ERROR`` is :meth:`ClockRate.wrong` (a slow round trip on a loaded host
widens the bounds, it never makes a good clock look wrong).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from irqlab.errors import hide_frame

__tracebackhide__ = hide_frame  # pytest: an IrqlabError's traceback leaves these frames out

MAX_RATE_ERROR = 0.25  # a clock off by more is wrong (a mis-calibrated TSC: 7x seen)
INTERVAL_S = 0.2  # host seconds between the two readings, at least


@dataclass(frozen=True)
class ClockRate:
    """Guest seconds per host second: the rate lies in [*low*, *high*]."""

    low: float
    high: float

    def wrong(self) -> bool:
        return self.low > 1 + MAX_RATE_ERROR or self.high < 1 - MAX_RATE_ERROR

    def describe(self) -> str:
        mid = (self.low + self.high) / 2
        return f"{mid:.2f}x the host's (between {self.low:.2f}x and {self.high:.2f}x)"


def rate_from(h0: int, g0: int, h1: int, h2: int, g1: int, h3: int) -> ClockRate:
    """The rate from guest readings *g0* (taken between host times *h0* and *h1*) and
    *g1* (between *h2* and *h3*), all in ns."""
    guest = g1 - g0
    return ClockRate(low=guest / max(1, h3 - h0), high=guest / max(1, h2 - h1))


def measure(
    guest_now_ns: Callable[[], int],
    interval: float = INTERVAL_S,
    *,
    since: tuple[int, int, int] | None = None,
) -> ClockRate:
    """The guest clock's rate from two readings at least *interval* host seconds apart;
    *since*: a first reading taken before, ``(h0, g0, h1)``, so that the time the
    caller spent meanwhile counts towards the interval."""
    if since is None:
        since = reading(guest_now_ns)
    h0, g0, h1 = since
    left = interval - (time.monotonic_ns() - h1) / 1e9
    if left > 0:  # a measurement's length, not a wait for something to happen
        threading.Event().wait(left)
    h2, g1, h3 = reading(guest_now_ns)
    return rate_from(h0, g0, h1, h2, g1, h3)


def reading(guest_now_ns: Callable[[], int]) -> tuple[int, int, int]:
    """``(host ns before, guest ns, host ns after)`` of one guest reading."""
    before = time.monotonic_ns()
    guest = guest_now_ns()
    return before, guest, time.monotonic_ns()
