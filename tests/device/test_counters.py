"""Counters add up: every raise is delivered, coalesced or masked; every loss is counted once."""

from __future__ import annotations

import pytest
from devrig import FIFO, GPIO, RAM_MSI, Rig, RigFactory

from irqlab.contract.regs import REGS
from irqlab.testing.qtest_pci import enable_msi, enable_msix, vector_ctrl
from irqlab.vm.qmp.stats import Counters

pytestmark = pytest.mark.device

P = 10_000


def _msix_rig(rig_factory: RigFactory, **props: object) -> Rig:
    r = rig_factory(irq_mode="msix", **props)
    vectors = [(RAM_MSI + 0x10 * i, i + 1) for i in range(REGS.NUM_SOURCES)]
    enable_msix(r.dev.cfg, r.dev.bar0 + REGS.MSIX_TABLE_OFFSET, vectors)
    r.dev.write("IRQ_ENABLE", REGS.SRC_ALL)
    r.dev.write("GPIO_RISING", 0xFFFFFFFF)
    r.dev.write("GPIO_IRQ_EN", 0xFFFFFFFF)
    return r


def _registers_match(r: Rig, c: Counters) -> None:
    """The 32-bit counter registers show the low half of the QMP counters."""
    for reg, value in [
        ("CNT_RAISED", c.raised), ("CNT_DELIVERED", c.delivered), ("CNT_ACKED", c.acked),
        ("CNT_COALESCED", c.coalesced), ("CNT_DROPPED", c.dropped),
        ("FIFO_OVERFLOW", c.fifo_overflow), ("EVQ_OVERFLOW", c.evq_overflow),
        ("ACK_INVALID", c.ack_invalid), ("EVQ_COUNT", c.evq_count),
    ]:  # fmt: skip
        assert r.dev.read(reg) == value & 0xFFFFFFFF, reg


def test_raises_are_delivered_or_coalesced(rig_factory: RigFactory) -> None:
    r = _msix_rig(rig_factory)
    r.inj.push(1)  # FIFO pending 0->1: delivered
    r.inj.push(2)  # coalesced
    r.inj.push(3)  # coalesced
    r.inj.set_line(0, True)  # GPIO pending 0->1: delivered
    r.inj.set_line(1, True)  # GPIO already pending: coalesced
    r.dev.write("IRQ_STATUS", FIFO)
    r.inj.push(4)  # delivered again
    r.inj.burst(4, period_ns=P)
    r.qt.clock_step(10 * P)  # burst: 1 delivered + 3 coalesced
    c = r.inj.counters()
    assert c.raised == 4 + 2 + 4
    assert (c.delivered, c.coalesced) == (4, 6)
    assert c.raised == c.delivered + c.coalesced
    assert c.evq_count == c.raised == c.next_seq - 1
    assert c.dropped == c.fifo_overflow + c.evq_overflow == 0
    _registers_match(r, c)


def test_losses_add_up(rig_factory: RigFactory) -> None:
    r = _msix_rig(rig_factory, fifo_depth=3, evq_depth=5)
    for w in range(5):
        r.inj.push(w)  # 3 queued, 2 FIFO overflows
    r.inj.set_lines(0b111)  # 3 GPIO events: 2 queued, 1 EVQ overflow
    r.inj.burst(3, period_ns=P)
    r.qt.clock_step(10 * P)  # 3 EVQ overflows
    c = r.inj.counters()
    assert (c.fifo_overflow, c.evq_overflow) == (2, 4)
    assert c.dropped == c.fifo_overflow + c.evq_overflow
    assert c.evq_count == 5
    assert c.raised == c.evq_count + c.evq_overflow  # FIFO overflows never became events
    _registers_match(r, c)


def test_masked_raises_are_neither_delivered_nor_coalesced(rig_factory: RigFactory) -> None:
    r = _msix_rig(rig_factory)
    r.dev.write("IRQ_ENABLE", 0)
    for w in range(3):
        r.inj.push(w)
    c = r.inj.counters()
    assert (c.raised, c.delivered, c.coalesced) == (3, 0, 0)


def test_intx_delivery_counts_assertions(rig_factory: RigFactory) -> None:
    r = rig_factory(irq_mode="intx")
    r.dev.write("IRQ_ENABLE", FIFO)
    r.inj.push(1)
    r.inj.push(2)
    r.dev.write("IRQ_STATUS", FIFO)
    r.inj.push(3)
    c = r.inj.counters()
    assert (c.raised, c.delivered, c.coalesced) == (3, 2, 1)


@pytest.mark.parametrize("mode", ["intx", "msi", "msix"])
def test_only_raises_are_coalesced(rig_factory: RigFactory, mode: str) -> None:
    """``coalesced`` counts raises that found their source pending (or, MSI-X, whose
    message merged into one waiting in the PBA).  A source made pending again without a
    raise -- the driver's re-arm toggle of IRQ_ENABLE, a GPIO_IRQ_EN unmask, on MSI-X
    while the vectors are masked and the messages wait in the PBA -- coalesces nothing:
    it was counted 10 times for one raise, coalesced + delivered > raised."""
    r = rig_factory(irq_mode=mode)
    r.qt.irq_intercept_in("ioapic")
    table = r.dev.bar0 + REGS.MSIX_TABLE_OFFSET
    if mode == "msi":
        enable_msi(r.dev.cfg, RAM_MSI, 1)
    elif mode == "msix":
        enable_msix(r.dev.cfg, table, [(RAM_MSI + 0x10 * i, i + 1) for i in range(3)])
        for v in range(REGS.NUM_SOURCES):
            r.qt.writel(vector_ctrl(table, v), 1)  # masked: messages park
    r.dev.write("IRQ_ENABLE", REGS.SRC_ALL)
    r.dev.write("GPIO_RISING", 1)
    r.dev.write("GPIO_IRQ_EN", 1)
    r.inj.push(1)
    r.inj.set_line(0, True)
    for _ in range(5):
        r.dev.write("IRQ_ENABLE", 0)
        r.dev.write("IRQ_ENABLE", REGS.SRC_ALL)
        r.dev.write("GPIO_IRQ_EN", 0)
        r.dev.write("GPIO_IRQ_EN", 1)
    assert r.dev.read("IRQ_PENDING") == FIFO | GPIO
    c = r.inj.counters()
    assert (c.raised, c.coalesced) == (2, 0)
    if mode == "msix":
        for v in range(REGS.NUM_SOURCES):
            r.qt.writel(vector_ctrl(table, v), 0)  # one message per source
        c = r.inj.counters()
        assert (c.delivered, c.coalesced) == (2, 0)
        assert c.delivered + c.coalesced <= c.raised


@pytest.mark.parametrize("mode", ["intx", "msi", "msix", "msix-masked"])
def test_a_level_latched_again_by_its_clear_is_coalesced_on_every_route(
    rig_factory: RigFactory, mode: str
) -> None:
    """A GPIO level that still holds when its GPIO_STATUS is cleared latches again in
    that write (a second raise) without IRQ_PENDING ever reading 0: coalesced on every
    route.  It was coalesced only on MSI-X with its vector masked (its message parked),
    and neither delivered nor coalesced elsewhere."""
    r = rig_factory(irq_mode=mode.removesuffix("-masked"))
    r.qt.irq_intercept_in("ioapic")
    table = r.dev.bar0 + REGS.MSIX_TABLE_OFFSET
    if mode == "msi":
        enable_msi(r.dev.cfg, RAM_MSI, 1)
    elif mode.startswith("msix"):
        masked = range(REGS.NUM_SOURCES) if mode == "msix-masked" else ()
        vectors = [(RAM_MSI + 0x10 * i, i + 1) for i in range(REGS.NUM_SOURCES)]
        enable_msix(r.dev.cfg, table, vectors, masked=masked)
    r.dev.write("IRQ_ENABLE", REGS.SRC_ALL)
    r.dev.write("GPIO_IRQ_EN", 1)
    r.inj.set_line(0, True)
    r.dev.write("GPIO_LEVEL_HIGH", 1)  # the first raise
    r.dev.write("GPIO_STATUS", 1)  # latched again: the second
    if mode == "msix-masked":
        r.qt.writel(
            vector_ctrl(table, REGS.SRC_GPIO), 0
        )  # GPIO's vector unmasked: its parked message goes
    c = r.inj.counters()
    assert (c.raised, c.delivered, c.coalesced) == (2, 1, 1), c
