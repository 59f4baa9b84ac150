"""INTx delivery on q35: the IOAPIC input the device's pin is routed to, observed through qtest."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from devrig import BURST, FIFO, GPIO, Rig, RigFactory

from irqlab.contract.regs import REGS
from irqlab.testing.qtest_pci import COMMAND_INTX_DISABLE, STATUS_INTERRUPT
from irqlab.vm.qtest import IrqEvent

pytestmark = pytest.mark.device


@pytest.fixture
def intx(rig_factory: RigFactory) -> tuple[Rig, int]:
    r = rig_factory(irq_mode="intx")
    r.qt.irq_intercept_in("ioapic")
    assert r.qt.take_irq_events() == []
    return r, r.intx_gsi()


def _raise_gpio(r: Rig) -> None:
    r.dev.write("GPIO_RISING", 1)
    r.dev.write("GPIO_IRQ_EN", 1)
    r.inj.set_line(0, True)


def _raise_burst(r: Rig) -> None:
    r.inj.burst(1, period_ns=REGS.MIN_BURST_PERIOD_NS)  # event 0 is due at once


SOURCES: dict[str, tuple[int, Callable[[Rig], None]]] = {
    "gpio": (GPIO, _raise_gpio),
    "fifo": (FIFO, lambda r: r.inj.push(7)),
    "burst": (BURST, _raise_burst),
}


@pytest.mark.parametrize("source", SOURCES)
def test_each_source_raises_intx_and_w1c_lowers_it(intx: tuple[Rig, int], source: str) -> None:
    r, gsi = intx
    bit, trigger = SOURCES[source]
    r.dev.write("IRQ_ENABLE", REGS.SRC_ALL)
    trigger(r)
    assert r.qt.take_irq_events() == [IrqEvent(gsi, True)]  # only our line, once
    assert r.dev.read("IRQ_STATUS") == bit
    assert r.dev.read("IRQ_PENDING") == bit
    assert r.dev.cfg.status() & STATUS_INTERRUPT
    if source == "gpio":
        r.dev.write("GPIO_STATUS", 1)  # W1C at the line; IRQ_STATUS.GPIO is derived
    else:
        r.dev.write("IRQ_STATUS", bit)
    assert r.qt.take_irq_events() == [IrqEvent(gsi, False)]
    assert r.dev.read("IRQ_STATUS") == 0
    assert not r.dev.cfg.status() & STATUS_INTERRUPT
    assert r.inj.counters().delivered == 1


def test_irq_enable_masks_until_enabled(intx: tuple[Rig, int]) -> None:
    r, gsi = intx
    r.inj.push(1)
    assert r.dev.read("IRQ_STATUS") == FIFO
    assert r.dev.read("IRQ_PENDING") == 0
    assert r.qt.take_irq_events() == []
    r.dev.write("IRQ_ENABLE", GPIO | BURST)  # other sources: still masked
    assert r.qt.take_irq_events() == []
    r.dev.write("IRQ_ENABLE", FIFO)
    assert r.qt.take_irq_events() == [IrqEvent(gsi, True)]
    r.dev.write("IRQ_ENABLE", 0)
    assert r.qt.take_irq_events() == [IrqEvent(gsi, False)]


def test_gpio_irq_en_masks_a_line(intx: tuple[Rig, int]) -> None:
    r, gsi = intx
    r.dev.write("IRQ_ENABLE", GPIO)
    r.dev.write("GPIO_RISING", 0b11)
    r.dev.write("GPIO_IRQ_EN", 0b10)
    r.inj.set_line(0, True)
    assert r.dev.read("GPIO_STATUS") == 0b01  # latched regardless of the mask
    assert r.dev.read("IRQ_STATUS") == 0
    assert r.qt.take_irq_events() == []
    r.inj.set_line(1, True)
    assert r.dev.read("IRQ_STATUS") == GPIO
    assert r.qt.take_irq_events() == [IrqEvent(gsi, True)]
    r.dev.write("GPIO_STATUS", 0b10)  # line 0 still latched but masked
    assert r.qt.take_irq_events() == [IrqEvent(gsi, False)]
    r.dev.write("GPIO_IRQ_EN", 0b11)  # unmasking the latched line asserts again
    assert r.qt.take_irq_events() == [IrqEvent(gsi, True)]


def test_intx_disable_holds_the_line_low_but_status_reports(intx: tuple[Rig, int]) -> None:
    r, gsi = intx
    cfg = r.dev.cfg
    assert cfg.set_command_bits(COMMAND_INTX_DISABLE) & COMMAND_INTX_DISABLE
    r.dev.write("IRQ_ENABLE", FIFO)
    r.inj.push(1)
    assert not r.qt.irq_level(gsi)
    assert r.qt.take_irq_events() == []
    assert cfg.status() & STATUS_INTERRUPT  # the function still signals internally
    cfg.set_command_bits(clear_bits=COMMAND_INTX_DISABLE)
    assert r.qt.take_irq_events() == [IrqEvent(gsi, True)]
    cfg.set_command_bits(COMMAND_INTX_DISABLE)
    assert r.qt.take_irq_events() == [IrqEvent(gsi, False)]
    assert cfg.status() & STATUS_INTERRUPT


def test_broken_intx_disable_makes_the_bit_read_only(rig_factory: RigFactory) -> None:
    r = rig_factory(irq_mode="intx", broken_intx_disable=True)
    r.qt.irq_intercept_in("ioapic")
    gsi = r.intx_gsi()
    cfg = r.dev.cfg
    assert not cfg.set_command_bits(COMMAND_INTX_DISABLE) & COMMAND_INTX_DISABLE
    r.dev.write("IRQ_ENABLE", FIFO)
    r.inj.push(1)
    assert r.qt.take_irq_events() == [IrqEvent(gsi, True)]  # nothing holds it back
    assert r.dev.read("FEATURES") & REGS.FEAT_BROKEN_INTX


def test_msi_capable_device_uses_intx_until_msi_is_enabled(rig_factory: RigFactory) -> None:
    r = rig_factory(irq_mode="msi")
    r.qt.irq_intercept_in("ioapic")
    r.dev.write("IRQ_ENABLE", FIFO)
    r.inj.push(1)
    assert r.qt.take_irq_events() == [IrqEvent(r.intx_gsi(), True)]
