"""GPIO edge events in a test's own guest, armed by the marker (no module reload), driven
through the device fixture's GPIO helpers."""

from __future__ import annotations

import pytest

from irqlab.contract.regs import REGS
from irqlab.testing.helpers import DeviceControl
from irqlab.vm.guest import Guest

LINE = 5
TIMEOUT = 30.0


@pytest.mark.irqlab(gpio_edges=[LINE])
def test_marker_arms_edges_and_pulse_gives_rising_then_falling(
    irqlab_fresh_guest: Guest, irqlab_fresh_device: DeviceControl
) -> None:
    g, dev = irqlab_fresh_guest, irqlab_fresh_device
    assert g.sh(f"cat /sys/module/{g.module_name()}/parameters/gpio_edges").strip() == str(
        1 << LINE
    )
    agent = g.agent
    agent.arm("read", dev=g.dev)
    seq = dev.next_seq()
    dev.pulse(LINE)
    evs = [agent.expect(path="read", seq=seq + i, timeout=TIMEOUT) for i in range(2)]
    assert [(e["source"], e["line"]) for e in evs] == [(REGS.SRC_GPIO, LINE)] * 2, evs
    assert dev.lines() & (1 << LINE) == 0  # a pulse ends low

    dev.set_lines(1 << LINE)
    agent.expect(path="read", seq=seq + 2, timeout=TIMEOUT)
    assert dev.lines() == 1 << LINE

    dev.edges(LINE, 10, period_ns=200_000)
    dev.wait_counters(lambda c: c.acked == 13, timeout=TIMEOUT)
    assert dev.lines() == 1 << LINE  # an even number of edges: back where it was
