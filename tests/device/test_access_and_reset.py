"""Details irqlab.rst states that no other test holds: access sizes, ignored bits, the
GPIO detection order, what a reset keeps."""

from __future__ import annotations

import pytest
from devrig import Rig, RigFactory

from irqlab.contract.regs import REGS
from irqlab.testing.qtest_device import QtestIrqlab, reg

pytestmark = pytest.mark.device


def test_narrow_and_unaligned_accesses_read_0_and_write_nothing(rig: Rig) -> None:
    """QEMU's memory core refuses them (valid access size 4): a read returns 0, a
    write is dropped."""
    r = rig
    scratch = r.dev.bar0 + reg("SCRATCH")
    r.dev.write("SCRATCH", 0x11223344)
    assert (r.qt.readb(r.dev.bar0), r.qt.readw(r.dev.bar0)) == (0, 0)  # ID
    assert r.qt.readl(scratch + 2) == 0
    r.qt.writeb(scratch, 0xFF)
    r.qt.writew(scratch, 0xFFFF)
    r.qt.writel(scratch + 2, 0)
    assert r.dev.read("SCRATCH") == 0x11223344


def test_irq_enable_bits_above_the_sources_read_0(rig: Rig) -> None:
    rig.dev.write("IRQ_ENABLE", 0xFFFFFFFF)
    assert rig.dev.read("IRQ_ENABLE") == REGS.SRC_ALL


def test_an_input_change_raises_all_edges_then_all_levels(rig: Rig) -> None:
    r = rig
    r.dev.write("GPIO_LEVEL_HIGH", 1 << 0)
    r.dev.write("GPIO_RISING", 1 << 1)
    r.inj.set_lines(0b11)
    assert [(e.line, e.kind) for e in r.dev.drain()] == [
        (1, REGS.KIND_RISING),
        (0, REGS.KIND_LEVEL_HIGH),
    ]


def test_reset_keeps_burst_count_and_clears_the_lost_flag(rig_factory: RigFactory) -> None:
    """A reset stops the burst (BURST_REMAINING 0) but BURST_COUNT keeps its count;
    the "events were lost" flag of a drop before the reset is cleared with the queue."""
    r = rig_factory(evq_depth=1)
    r.inj.push(1)
    r.inj.burst(5, period_ns=10**9)  # step 0 at once: dropped (queue full)
    assert r.inj.counters().evq_overflow == 1
    r.machine.qmp("system_reset")
    dev = QtestIrqlab.attach(r.qt)
    assert (dev.read("BURST_COUNT"), dev.read("BURST_REMAINING")) == (5, 0)
    r.inj.push(2)
    head = dev.head()
    assert head is not None and head.value == 2 and not head.dropped
