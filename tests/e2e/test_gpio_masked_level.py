"""A level-typed GPIO line whose interrupt is masked stays latched, silently, while other
lines interrupt: the GPIO handler does not clear its status on every pass (the device
latches a holding level again at once and raised a new LEVEL event each time).

The masked level line comes from the level_consumer test module with noautoen=1: its
request sets the type (level high) and leaves the interrupt disabled.
"""

from __future__ import annotations

import pytest
from kmods import build_test_kmod  # same directory (rootdir-relative import)

from irqlab.testing.helpers import DeviceControl
from irqlab.vm.guest import Guest

LEVEL_LINE = 6
EDGE_LINE = 5
PULSES = 5
TIMEOUT = 30.0
PARAMS = "/sys/module/level_consumer/parameters"


@pytest.mark.irqlab(gpio_edges=[EDGE_LINE])
def test_a_masked_level_line_raises_one_level_event_whatever_else_interrupts(
    irqlab_fresh_guest: Guest, irqlab_fresh_device: DeviceControl
) -> None:
    g, dev, inj = irqlab_fresh_guest, irqlab_fresh_device, irqlab_fresh_guest.injector
    inj.drive_low((1 << LEVEL_LINE) | (1 << EDGE_LINE))
    g.put(build_test_kmod("level_consumer"), "/tmp/level_consumer.ko")
    g.sh(
        f"insmod /tmp/level_consumer.ko chip=irqlab-{g.pci_address()} line={LEVEL_LINE} noautoen=1"
    )
    before = dev.counters()
    inj.set_line(LEVEL_LINE, 1)  # latches, one LEVEL event; masked: no interrupt
    for _ in range(PULSES):  # each pulse of the edge line is a pass of the handler
        dev.pulse(EDGE_LINE)
        dev.wait_counters(lambda c: c.evq_count == 0, TIMEOUT)
    c = dev.counters().minus(before)
    assert c.raised == 1 + 2 * PULSES, (
        f"{c.raised} events raised for one level hold on masked line {LEVEL_LINE} and "
        f"{2 * PULSES} edges on line {EDGE_LINE}: the handler re-armed the masked line"
    )
    assert g.sh(f"cat {PARAMS}/count").strip() == "0"
    inj.set_line(LEVEL_LINE, 0)
    g.sh("rmmod level_consumer")
