"""MSI and MSI-X: messages are written to guest RAM (qtest has no CPU), read back with readl."""

from __future__ import annotations

import pytest
from devrig import BURST, FIFO, GPIO, RAM_MSI, Rig, RigFactory

from irqlab.contract.regs import REGS
from irqlab.testing.qtest_pci import (
    CAP_ID_MSIX,
    COMMAND_MASTER,
    MSIX_FLAGS,
    MSIX_FLAGS_ENABLE,
    enable_msi,
    enable_msix,
    msix_table,
    msix_table_size,
    vector_ctrl,
)

pytestmark = pytest.mark.device

MSI_DATA = 0x4321
SLOTS = [RAM_MSI + 0x10 * i for i in range(REGS.NUM_SOURCES)]


def _clear(r: Rig) -> None:
    for a in [RAM_MSI, *SLOTS]:
        r.qt.writel(a, 0)


def _written(r: Rig) -> list[int]:
    """Which MSI-X slots received a message since the last _clear (by source)."""
    return [i for i, a in enumerate(SLOTS) if r.qt.readl(a) == 0x100 + i]


@pytest.fixture
def msi(rig_factory: RigFactory) -> Rig:
    r = rig_factory(irq_mode="msi")
    r.qt.irq_intercept_in("ioapic")
    enable_msi(r.dev.cfg, RAM_MSI, MSI_DATA)
    _clear(r)
    return r


@pytest.fixture
def msix(rig_factory: RigFactory) -> Rig:
    r = rig_factory(irq_mode="msix")
    r.qt.irq_intercept_in("ioapic")
    enable_msix(
        r.dev.cfg,
        r.dev.bar0 + REGS.MSIX_TABLE_OFFSET,
        [(a, 0x100 + i) for i, a in enumerate(SLOTS)],
    )
    _clear(r)
    return r


def test_msi_message_once_per_pending_transition(msi: Rig) -> None:
    r = msi
    r.dev.write("IRQ_ENABLE", REGS.SRC_ALL)
    r.inj.push(1)
    assert r.qt.readl(RAM_MSI) == MSI_DATA
    r.qt.writel(RAM_MSI, 0)
    r.inj.push(2)  # PENDING already non-zero: no new message, a coalesced raise
    assert r.qt.readl(RAM_MSI) == 0
    c = r.inj.counters()
    assert (c.delivered, c.coalesced) == (1, 1)
    r.dev.write("IRQ_STATUS", FIFO)
    assert r.dev.read("IRQ_PENDING") == 0
    r.inj.push(3)
    assert r.qt.readl(RAM_MSI) == MSI_DATA
    assert r.inj.counters().delivered == 2
    assert r.qt.take_irq_events() == []  # nothing on INTx meanwhile


def test_msi_irq_enable_masks(msi: Rig) -> None:
    r = msi
    r.inj.push(1)
    assert r.qt.readl(RAM_MSI) == 0
    r.dev.write("IRQ_ENABLE", FIFO)  # pending goes 0 -> FIFO: the message goes now
    assert r.qt.readl(RAM_MSI) == MSI_DATA


def test_msix_layout(msix: Rig) -> None:
    cfg = msix.dev.cfg
    assert msix_table(cfg) == (0, REGS.MSIX_TABLE_OFFSET)
    pba = cfg.readl(cfg.capability(CAP_ID_MSIX) + 8)
    assert (pba & 7, pba & ~7) == (0, REGS.MSIX_PBA_OFFSET)
    assert msix_table_size(cfg) == REGS.NUM_SOURCES


@pytest.mark.parametrize("source", ["gpio", "fifo", "burst"])
def test_msix_vector_per_source(msix: Rig, source: str) -> None:
    r = msix
    r.dev.write("IRQ_ENABLE", REGS.SRC_ALL)
    if source == "gpio":
        r.dev.write("GPIO_RISING", 1 << 5)
        r.dev.write("GPIO_IRQ_EN", 1 << 5)
        r.inj.pulse(5)
        expected = REGS.SRC_GPIO
    elif source == "fifo":
        r.inj.push(9)
        expected = REGS.SRC_FIFO
    else:
        r.inj.burst(1, period_ns=REGS.MIN_BURST_PERIOD_NS)
        expected = REGS.SRC_BURST
    assert _written(r) == [expected]
    assert r.inj.counters().delivered == 1
    assert r.qt.take_irq_events() == []


def test_msix_each_source_has_its_own_pending_bit(msix: Rig) -> None:
    r = msix
    r.dev.write("IRQ_ENABLE", REGS.SRC_ALL)
    r.inj.push(1)
    r.inj.burst(1, period_ns=REGS.MIN_BURST_PERIOD_NS)  # FIFO pending does not hide BURST
    assert _written(r) == [REGS.SRC_FIFO, REGS.SRC_BURST]
    _clear(r)
    r.inj.push(2)  # FIFO still pending: coalesced, no message
    assert _written(r) == []
    c = r.inj.counters()
    assert (c.delivered, c.coalesced) == (2, 1)


def test_msix_masked_vector_parks_in_pba_and_fires_on_unmask(msix: Rig) -> None:
    r = msix
    table = r.dev.bar0 + REGS.MSIX_TABLE_OFFSET
    ctrl = vector_ctrl(table, REGS.SRC_FIFO)
    pba = r.dev.bar0 + REGS.MSIX_PBA_OFFSET
    r.dev.write("IRQ_ENABLE", REGS.SRC_ALL)
    r.qt.writel(ctrl, 1)  # mask the FIFO vector
    r.inj.push(1)
    assert _written(r) == []
    assert r.qt.readl(pba) == 1 << REGS.SRC_FIFO
    assert r.inj.counters().delivered == 0
    r.qt.writel(ctrl, 0)
    assert _written(r) == [REGS.SRC_FIFO]
    assert r.qt.readl(pba) == 0
    assert r.inj.counters().delivered == 1


def test_msix_irq_enable_masks(msix: Rig) -> None:
    r = msix
    r.dev.write("IRQ_ENABLE", GPIO | BURST)
    r.inj.push(1)
    assert _written(r) == []
    r.dev.write("IRQ_ENABLE", REGS.SRC_ALL)
    assert _written(r) == [REGS.SRC_FIFO]


def test_msix_without_bus_mastering_is_not_delivered(msix: Rig) -> None:
    """A driver that forgot pci_set_master(): the PCI core drops the message, and
    ``delivered`` says so (it counted the message as sent)."""
    r = msix
    r.dev.write("IRQ_ENABLE", REGS.SRC_ALL)
    assert not r.dev.cfg.set_command_bits(clear_bits=COMMAND_MASTER) & COMMAND_MASTER
    r.inj.push(1)
    assert _written(r) == []
    c = r.inj.counters()
    assert (c.raised, c.delivered) == (1, 0)
    r.dev.write("IRQ_STATUS", FIFO)
    r.dev.cfg.set_command_bits(set_bits=COMMAND_MASTER)
    r.inj.push(2)
    assert _written(r) == [REGS.SRC_FIFO]
    assert r.inj.counters().delivered == 1


def test_msi_without_bus_mastering_is_not_delivered(msi: Rig) -> None:
    r = msi
    r.dev.write("IRQ_ENABLE", REGS.SRC_ALL)
    r.dev.cfg.set_command_bits(clear_bits=COMMAND_MASTER)
    r.inj.push(1)
    assert r.qt.readl(RAM_MSI) == 0
    assert r.inj.counters().delivered == 0
    r.dev.write("IRQ_STATUS", FIFO)
    r.dev.cfg.set_command_bits(set_bits=COMMAND_MASTER)
    r.inj.push(2)
    assert r.qt.readl(RAM_MSI) == MSI_DATA
    assert r.inj.counters().delivered == 1


def _mask_fifo_vector(r: Rig, masked: bool) -> None:
    ctrl = vector_ctrl(r.dev.bar0 + REGS.MSIX_TABLE_OFFSET, REGS.SRC_FIFO)
    r.qt.writel(ctrl, 1 if masked else 0)


def test_msix_a_parked_message_waits_for_its_pending_condition(msix: Rig) -> None:
    """A message waits in the PBA while its source stays pending: a raise meanwhile
    is coalesced into it.  Once the source is serviced (its status cleared) the
    message is withdrawn, so the next raise parks a message of its own, not a merge
    (before, it merged: coalesced 2, and the serviced raise's message stayed)."""
    r = msix
    pba = r.dev.bar0 + REGS.MSIX_PBA_OFFSET
    r.dev.write("IRQ_ENABLE", REGS.SRC_ALL)
    _mask_fifo_vector(r, True)
    r.inj.push(1)
    r.inj.push(2)  # FIFO already pending: coalesced into the parked message
    r.dev.write("IRQ_STATUS", FIFO)  # serviced: the message is withdrawn
    assert r.qt.readl(pba) == 0
    r.inj.push(3)  # pending 0->1 again: a message of its own parks
    assert r.qt.readl(pba) == 1 << REGS.SRC_FIFO
    _mask_fifo_vector(r, False)
    assert _written(r) == [REGS.SRC_FIFO]
    c = r.inj.counters()
    assert (c.raised, c.delivered, c.coalesced) == (3, 1, 1)


@pytest.mark.parametrize("service", ["irq-status", "irq-enable", "gpio-irq-en"])
def test_msix_a_serviced_source_sends_nothing_on_unmask(msix: Rig, service: str) -> None:
    """PCI 3.0 MSI-X: a masked vector whose Pending bit is set and whose interrupt
    events are satisfied must clear the bit, or unmasking it sends a spurious message
    (Linux counts it spurious).  The source's IRQ_PENDING bit going 1->0 -- its status
    cleared, the source disabled, its GPIO lines masked -- withdraws its message."""
    r = msix
    src = REGS.SRC_GPIO if service == "gpio-irq-en" else REGS.SRC_FIFO
    ctrl = vector_ctrl(r.dev.bar0 + REGS.MSIX_TABLE_OFFSET, src)
    pba = r.dev.bar0 + REGS.MSIX_PBA_OFFSET
    r.dev.write("IRQ_ENABLE", REGS.SRC_ALL)
    r.qt.writel(ctrl, 1)
    if src == REGS.SRC_GPIO:
        r.dev.write("GPIO_RISING", 1)
        r.dev.write("GPIO_IRQ_EN", 1)
        r.inj.pulse(0)
    else:
        r.inj.push(1)
    assert r.qt.readl(pba) == 1 << src
    r.dev.drain()
    if service == "irq-status":
        r.dev.write("IRQ_STATUS", FIFO)
    elif service == "irq-enable":
        r.dev.write("IRQ_ENABLE", REGS.SRC_ALL & ~FIFO)
    else:
        r.dev.write("GPIO_IRQ_EN", 0)
    assert r.dev.read("IRQ_PENDING") & (1 << src) == 0
    assert r.qt.readl(pba) == 0
    r.qt.writel(ctrl, 0)
    assert _written(r) == []
    c = r.inj.counters()
    assert (c.raised, c.delivered, c.coalesced) == (1, 0, 0)


def test_msix_a_level_latched_again_merges_into_its_parked_message(msix: Rig) -> None:
    """Clearing the GPIO_STATUS of a level that still holds latches it again in the
    same access: IRQ_PENDING never reads 0, the parked message stays, and the new
    raise is coalesced into it (one message on unmask)."""
    r = msix
    ctrl = vector_ctrl(r.dev.bar0 + REGS.MSIX_TABLE_OFFSET, REGS.SRC_GPIO)
    r.dev.write("IRQ_ENABLE", REGS.SRC_ALL)
    r.qt.writel(ctrl, 1)
    r.dev.write("GPIO_IRQ_EN", 1)
    r.inj.set_line(0, True)
    r.dev.write("GPIO_LEVEL_HIGH", 1)  # raise 1: a message parks
    r.dev.write("GPIO_STATUS", 1)  # raise 2, latched again at once
    assert r.qt.readl(r.dev.bar0 + REGS.MSIX_PBA_OFFSET) == 1 << REGS.SRC_GPIO
    r.qt.writel(ctrl, 0)
    assert _written(r) == [REGS.SRC_GPIO]
    c = r.inj.counters()
    assert (c.raised, c.delivered, c.coalesced) == (2, 1, 1)


def test_msix_a_parked_message_does_not_outlive_leaving_msix(msix: Rig) -> None:
    """A message parked in the PBA is for a condition that INTx signals once MSI-X is
    disabled; back in MSI-X mode the condition is signalled once, not twice."""
    r = msix
    cap = r.dev.cfg.capability(CAP_ID_MSIX)
    flags = r.dev.cfg.readw(cap + MSIX_FLAGS)
    r.dev.write("IRQ_ENABLE", REGS.SRC_ALL)
    _mask_fifo_vector(r, True)
    r.inj.push(1)
    assert r.qt.readl(r.dev.bar0 + REGS.MSIX_PBA_OFFSET) == 1 << REGS.SRC_FIFO
    r.dev.cfg.writew(cap + MSIX_FLAGS, flags & ~MSIX_FLAGS_ENABLE)  # INTx route: asserted
    assert r.inj.counters().delivered == 1
    assert r.qt.readl(r.dev.bar0 + REGS.MSIX_PBA_OFFSET) == 0
    _mask_fifo_vector(r, False)
    r.dev.cfg.writew(cap + MSIX_FLAGS, flags | MSIX_FLAGS_ENABLE)
    assert _written(r) == [REGS.SRC_FIFO]
    c = r.inj.counters()
    assert (c.raised, c.delivered) == (1, 2)  # the INTx assertion, one MSI-X message


def test_a_message_that_writes_the_device_leaves_no_stale_message(
    rig_factory: RigFactory,
) -> None:
    """FIFO's vector is aimed at the device's own IRQ_ENABLE (data 0): its message,
    sent while the interrupt logic goes over the sources, disables them all.  BURST's
    (masked) message is then neither sent nor parked: the loop went on with the
    sources' state from before the message, parked it, and the unmask sent an
    interrupt for nothing."""
    r = rig_factory(irq_mode="msix")
    r.dev.write("IRQ_ENABLE", FIFO | BURST)
    r.inj.push(1)
    r.inj.burst(1)
    assert r.dev.read("IRQ_PENDING") == FIFO | BURST  # latched on the INTx route
    table = r.dev.bar0 + REGS.MSIX_TABLE_OFFSET
    vectors = [(a, 0x100 + i) for i, a in enumerate(SLOTS)]
    vectors[REGS.SRC_FIFO] = (r.dev.bar0 + REGS.REG_IRQ_ENABLE, 0)
    _clear(r)
    enable_msix(r.dev.cfg, table, vectors, masked=[REGS.SRC_BURST])
    assert r.dev.read("IRQ_ENABLE") == 0  # FIFO's message wrote it
    assert r.qt.readl(r.dev.bar0 + REGS.MSIX_PBA_OFFSET) == 0, "a message parked"
    r.qt.writel(vector_ctrl(table, REGS.SRC_BURST), 0)  # unmask BURST's
    assert _written(r) == []
    c = r.inj.counters()
    # INTx asserted for the first raise; FIFO's message on the switch to MSI-X
    assert (c.raised, c.delivered) == (2, 2), c
