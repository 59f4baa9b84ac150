"""Waiting for a fault's verdict in the fault tests: the call must raise within a limit
that stretches with the host's load, as the health watch's own limits do."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from irqlab.vm.loadscale import timeout_scale


def raises_within(
    fn: Callable[[], object],
    limit: float,
    exc: type[BaseException] | tuple[type[BaseException], ...],
) -> BaseException:
    """The exception *exc* that *fn* raises, asserting it came within *limit* s (scaled)."""
    t0 = time.monotonic()
    with pytest.raises(exc) as info:
        fn()
    took = time.monotonic() - t0
    # a loaded host (other guests on the same cores) slows the guest's own console
    # output as much as the watch's verdict: the limit stretches like the watch's own
    limit *= timeout_scale()
    assert took < limit, f"took {took:.1f} s (limit {limit:.1f} s): {info.value}"
    return info.value
