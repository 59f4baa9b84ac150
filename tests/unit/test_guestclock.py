"""irqlab.vm.guestclock: a guest clock's rate from bracketed readings."""

from __future__ import annotations

import itertools

from irqlab.vm import guestclock
from irqlab.vm.guestclock import ClockRate, rate_from

S = 1_000_000_000


def test_a_clock_at_the_hosts_rate_is_right_however_slow_the_round_trips() -> None:
    # readings 0.5 s apart, each round trip 0.2 s: the rate is known only to lie in
    # [0.5/0.9, 0.5/0.1] -- wide, and never called wrong
    r = rate_from(0, 10 * S + S // 10, S // 5, 6 * S // 10, 10 * S + 6 * S // 10, 8 * S // 10)
    assert r.low < 1 < r.high and not r.wrong(), r


def test_a_clock_seven_times_the_hosts_is_wrong() -> None:
    r = rate_from(0, 0, S // 100, S // 5, 7 * S // 5, S // 5 + S // 100)
    assert r.low > 6 and r.wrong(), r
    assert r.describe().startswith("7.02x the host's (between 6.67x and 7.37x)"), r.describe()


def test_a_slow_clock_is_wrong_too_and_a_small_error_is_not() -> None:
    assert ClockRate(0.5, 0.6).wrong()
    assert not ClockRate(1.1, 1.2).wrong()
    assert not ClockRate(0.8, 0.9).wrong()


def test_measure_spans_the_interval_from_the_first_reading() -> None:
    """The second reading comes *interval* host seconds after the first (taken by the
    caller earlier: the time spent since counts towards it)."""
    guest = itertools.count(0, S // 10)  # 0.1 s of guest time per reading
    first = guestclock.reading(lambda: next(guest))
    r = guestclock.measure(lambda: next(guest), interval=0.2, since=first)
    # 0.1 s of guest time over at least 0.2 s of host time
    assert r.low <= r.high <= 0.5 + 1e-6, r
