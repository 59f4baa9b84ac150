"""Burst generator on QEMU_CLOCK_VIRTUAL, driven step by step with qtest's clock."""

from __future__ import annotations

import pytest
from devrig import BURST, Rig

from irqlab.contract.regs import REGS

pytestmark = pytest.mark.device

P = 10_000  # ns


def test_exactly_n_events_at_absolute_deadlines(rig: Rig) -> None:
    qt, d = rig.qt, rig.dev
    t0 = qt.clock()
    rig.inj.burst(5, period_ns=P)
    assert d.read("EVQ_COUNT") == 1  # event 0 is due at the start
    assert rig.inj.burst_remaining() == 4
    qt.clock_step(P - 1)
    assert d.read("EVQ_COUNT") == 1
    qt.clock_step(1)
    assert d.read("EVQ_COUNT") == 2
    qt.clock_step(3 * P)
    assert d.read("EVQ_COUNT") == 5
    assert rig.inj.burst_remaining() == 0
    assert d.read("BURST_REMAINING") == 0
    qt.clock_step(100 * P)
    assert d.read("EVQ_COUNT") == 5
    events = d.drain()
    assert [e.value for e in events] == [0, 1, 2, 3, 4]
    assert [e.ts for e in events] == [t0 + i * P for i in range(5)]
    assert {e.source for e in events} == {REGS.SRC_BURST}
    assert d.read("BURST_COUNT") == 5
    assert d.read("IRQ_STATUS") == BURST
    assert rig.inj.counters().raised == 5


def test_one_big_step_delivers_the_whole_burst(rig: Rig) -> None:
    t0 = rig.qt.clock()
    rig.inj.burst(1000, period_ns=REGS.MIN_BURST_PERIOD_NS)
    rig.qt.clock_step(10**9)
    events = rig.dev.drain()
    assert len(events) == 1000
    assert events[-1].ts == t0 + 999 * REGS.MIN_BURST_PERIOD_NS
    assert [e.value for e in events] == list(range(1000))


def test_stop_burst(rig: Rig) -> None:
    rig.inj.burst(10, period_ns=P)
    rig.qt.clock_step(2 * P)
    assert rig.inj.burst_remaining() == 7
    rig.inj.stop_burst()
    assert rig.inj.burst_remaining() == 0
    rig.qt.clock_step(100 * P)
    assert rig.dev.read("EVQ_COUNT") == 3


def test_restart_replaces_the_running_burst(rig: Rig) -> None:
    rig.inj.burst(10, period_ns=P)
    rig.qt.clock_step(P)  # events 0 and 1
    rig.inj.burst(2)  # new burst at the same period: values restart at 0
    rig.qt.clock_step(100 * P)
    assert [e.value for e in rig.dev.drain()] == [0, 1, 0, 1]


def test_period_registers_and_running_burst_keeps_its_period(rig: Rig) -> None:
    rig.inj.set_burst_period(3 * 10**9)  # > 2**32: both halves matter
    assert rig.inj.burst_period() == 3 * 10**9
    assert rig.dev.read64("BURST_PERIOD_LO") == 3 * 10**9
    rig.inj.burst(3, period_ns=P)
    rig.inj.set_burst_period(7 * P)  # for the next burst only
    assert rig.dev.read64("BURST_PERIOD_LO") == P  # the active burst's period
    rig.qt.clock_step(2 * P)
    assert rig.dev.read("EVQ_COUNT") == 3
    assert rig.dev.read64("BURST_PERIOD_LO") == 7 * P


def test_burst_count_zero_when_idle_does_nothing(rig: Rig) -> None:
    rig.inj.stop_burst()
    rig.qt.clock_step(10 * P)
    assert rig.dev.read("EVQ_COUNT") == 0
    assert rig.inj.counters().raised == 0
