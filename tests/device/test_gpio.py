"""GPIO bank: edge and level detection, latched W1C status, events in the queue."""

from __future__ import annotations

import pytest
from devrig import GPIO, Rig

from irqlab.contract.regs import REGS
from irqlab.testing.qtest_device import Event

pytestmark = pytest.mark.device

RISING, FALLING = REGS.KIND_RISING, REGS.KIND_FALLING
LEVEL_HIGH, LEVEL_LOW = REGS.KIND_LEVEL_HIGH, REGS.KIND_LEVEL_LOW


def _kinds(events: list[Event]) -> list[tuple[int, int, int]]:
    """(line, kind, value) of GPIO events; fails on events from other sources."""
    assert all(e.source == REGS.SRC_GPIO for e in events), events
    return [(e.line, e.kind, e.value) for e in events]


def test_rising_only(rig: Rig) -> None:
    rig.dev.write("GPIO_RISING", 1 << 4)
    rig.inj.set_line(4, True)
    rig.inj.set_line(4, False)
    assert _kinds(rig.dev.drain()) == [(4, RISING, 1)]
    assert rig.dev.read("GPIO_STATUS") == 1 << 4
    assert rig.dev.read("GPIO_IN") == 0


def test_falling_only(rig: Rig) -> None:
    rig.dev.write("GPIO_FALLING", 1 << 31)
    rig.inj.set_line(31, True)
    assert rig.dev.drain() == []
    rig.inj.set_line(31, False)
    assert _kinds(rig.dev.drain()) == [(31, FALLING, 0)]
    assert rig.dev.read("GPIO_STATUS") == 1 << 31


def test_both_edges_and_pulse(rig: Rig) -> None:
    rig.dev.write("GPIO_RISING", 0b110)
    rig.dev.write("GPIO_FALLING", 0b110)
    rig.inj.pulse(1)  # low -> high -> low: two edges
    rig.inj.set_line(2, True)
    rig.inj.pulse(2)  # high -> low -> high
    assert _kinds(rig.dev.drain()) == [
        (1, RISING, 1), (1, FALLING, 0), (2, RISING, 1), (2, FALLING, 0), (2, RISING, 1),
    ]  # fmt: skip
    assert rig.inj.gpio_in() == 0b100


def test_set_lines_computes_edges_per_changed_bit(rig: Rig) -> None:
    rig.dev.write("GPIO_RISING", 0xFF)
    rig.dev.write("GPIO_FALLING", 0xFF)
    rig.inj.set_lines(0b0011)
    rig.inj.set_lines(0b0110)  # line 0 falls, line 2 rises, line 1 unchanged
    assert _kinds(rig.dev.drain()) == [
        (0, RISING, 1), (1, RISING, 1), (0, FALLING, 0), (2, RISING, 1),
    ]  # fmt: skip
    assert rig.dev.read("GPIO_IN") == 0b0110


def test_level_high_latches_once_and_again_after_w1c(rig: Rig) -> None:
    rig.dev.write("GPIO_LEVEL_HIGH", 1 << 2)
    rig.inj.set_line(2, True)
    rig.inj.set_line(3, True)  # other activity while the level holds: no new event
    assert _kinds(rig.dev.drain()) == [(2, LEVEL_HIGH, 1)]
    rig.dev.write("GPIO_STATUS", 1 << 2)  # W1C while still high: latches again at once
    assert _kinds(rig.dev.drain()) == [(2, LEVEL_HIGH, 1)]
    assert rig.dev.read("GPIO_STATUS") == 1 << 2
    rig.inj.set_line(2, False)
    rig.dev.write("GPIO_STATUS", 1 << 2)  # condition gone: stays clear
    assert rig.dev.read("GPIO_STATUS") == 0
    assert rig.dev.drain() == []


def test_level_low_fires_when_enabled_on_a_low_line(rig: Rig) -> None:
    rig.dev.write("GPIO_LEVEL_LOW", 1 << 7)  # line 7 is low already
    assert _kinds(rig.dev.drain()) == [(7, LEVEL_LOW, 0)]
    rig.inj.set_line(7, True)
    rig.dev.write("GPIO_STATUS", 1 << 7)
    assert rig.dev.read("GPIO_STATUS") == 0
    rig.inj.set_line(7, False)
    assert _kinds(rig.dev.drain()) == [(7, LEVEL_LOW, 0)]


def test_w1c_clears_only_the_written_bits(rig: Rig) -> None:
    rig.dev.write("GPIO_RISING", 0b111)
    rig.inj.set_lines(0b111)
    assert rig.dev.read("GPIO_STATUS") == 0b111
    rig.dev.write("GPIO_STATUS", 0b010)
    assert rig.dev.read("GPIO_STATUS") == 0b101
    rig.dev.write("GPIO_STATUS", 0)
    assert rig.dev.read("GPIO_STATUS") == 0b101


def test_edges_latch_and_queue_regardless_of_irq_en(rig: Rig) -> None:
    rig.dev.write("GPIO_RISING", 1)
    rig.dev.write("IRQ_ENABLE", GPIO)
    rig.inj.set_line(0, True)
    assert rig.dev.read("GPIO_STATUS") == 1
    assert rig.dev.read("IRQ_STATUS") == 0  # IRQ_STATUS.GPIO = STATUS & IRQ_EN
    assert len(rig.dev.drain()) == 1
    rig.dev.write("GPIO_IRQ_EN", 1)
    assert rig.dev.read("IRQ_STATUS") == GPIO
    rig.dev.write("IRQ_STATUS", GPIO)  # IRQ_STATUS.GPIO is derived: W1C there does nothing
    assert rig.dev.read("IRQ_STATUS") == GPIO


def test_no_detection_configured_no_event(rig: Rig) -> None:
    rig.inj.set_lines(0xFFFF)
    rig.inj.pulse_mask(0xF0000)
    assert rig.dev.drain() == []
    assert rig.dev.read("GPIO_STATUS") == 0
    assert rig.inj.counters().raised == 0


def test_event_sequence_and_timestamp(rig: Rig) -> None:
    rig.dev.write("GPIO_RISING", 0b11)
    rig.qt.clock_step(1_000)
    t1 = rig.qt.clock()
    rig.inj.set_line(0, True)
    rig.qt.clock_step(2_500)
    rig.inj.set_line(1, True)
    first, second = rig.dev.drain()
    assert (first.seq, second.seq) == (1, 2)
    assert (first.ts, second.ts) == (t1, t1 + 2_500)
    assert not first.dropped and not second.dropped


def test_reset_clears_guest_config_not_host_levels(rig: Rig) -> None:
    rig.dev.write("GPIO_RISING", 1)
    rig.dev.write("GPIO_IRQ_EN", 1)
    rig.dev.write("IRQ_ENABLE", GPIO)
    rig.inj.set_line(0, True)
    rig.machine.qmp("system_reset")
    rig.machine.wait_event("RESET", timeout=30)
    rig.dev.cfg.map_bar(0, rig.dev.bar0)  # a PCI reset unmaps the BAR too
    for reg in ("GPIO_RISING", "GPIO_IRQ_EN", "GPIO_STATUS", "IRQ_ENABLE", "EVQ_COUNT"):
        assert rig.dev.read(reg) == 0, reg
    assert rig.inj.gpio_in() == 1
