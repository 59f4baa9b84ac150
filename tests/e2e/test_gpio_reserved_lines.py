"""The driver's own GPIO lines (``gpio_edges``, ``key_line``) are refused to gpiolib
interrupt consumers, whether or not they ask for a trigger type: a request without one
never reaches ``irq_set_type``, so the refusal is in ``irq_request_resources``."""

from __future__ import annotations

import pytest
from kmods import build_test_kmod  # same directory (rootdir-relative import)

from irqlab.testing.helpers import DeviceControl
from irqlab.vm.guest import Guest

LINE = 5
FREE_LINE = 6
TIMEOUT = 30.0


@pytest.mark.irqlab(gpio_edges=[LINE])
def test_a_gpio_edges_line_is_refused_with_and_without_a_trigger_type(
    irqlab_fresh_guest: Guest, irqlab_fresh_device: DeviceControl
) -> None:
    g, dev = irqlab_fresh_guest, irqlab_fresh_device
    g.put(build_test_kmod("level_consumer"), "/tmp/level_consumer.ko")
    insmod = f"insmod /tmp/level_consumer.ko chip=irqlab-{g.pci_address()}"
    for extra in ("", " notype=1"):
        r = g.run(f"{insmod} line={LINE}{extra}")
        assert r.rc != 0 and "Device or resource busy" in r.err, (
            f"a consumer of the gpio_edges line {LINE} ({extra or 'level high'}) was "
            f"not refused with EBUSY: rc {r.rc}, {r.err!r}"
        )
    # The same request of a free line works: the refusal is the line's.
    g.sh(f"{insmod} line={FREE_LINE} notype=1")
    g.sh("rmmod level_consumer")
    # The driver still gets the line's edges itself.
    g.agent.arm("read", dev=g.dev)
    seq = dev.next_seq()
    dev.pulse(LINE)
    ev = g.agent.expect(path="read", seq=seq, timeout=TIMEOUT)
    assert ev["line"] == LINE, ev
