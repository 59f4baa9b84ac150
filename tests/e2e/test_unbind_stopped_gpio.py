"""A gpiolib consumer that still reaches the irq_chip after unbind stopped the device
(between the stop and the gpio chip's removal) must not make it detect again.

The stop wrote the GPIO registers without gpio_lock and left their shadows set, and the
irq_chip callbacks went on writing the registers from the shadows: a set_type (or an
enable_irq()) in that window re-armed detection on a stopped device, whose events
nobody would fetch.  A test module (tests/e2e/kmods/stop_window) sets a line's type in
the window for certain: a kretprobe on irqlab_gpio_stop(), no delay.
"""

from __future__ import annotations

from kmods import build_test_kmod  # same directory (rootdir-relative import)

from irqlab.testing.helpers import DeviceControl
from irqlab.vm.guest import Guest

LINE = 7
PARAMS = "/sys/module/stop_window/parameters"


def test_a_line_typed_after_the_device_stopped_detects_nothing(
    irqlab_fresh_guest: Guest, irqlab_fresh_device: DeviceControl
) -> None:
    g, dev, inj = irqlab_fresh_guest, irqlab_fresh_device, irqlab_fresh_guest.injector
    inj.drive_low(1 << LINE)
    g.put(build_test_kmod("stop_window"), "/tmp/stop_window.ko")
    g.sh(f"insmod /tmp/stop_window.ko chip=irqlab-{g.pci_address()} line={LINE}")
    g.unbind()
    result = g.sh(f"cat {PARAMS}/result").strip()
    assert result == "0", f"irq_set_irq_type() in the window: {result} (1: it never ran)"

    before = dev.counters()
    inj.set_line(LINE, 1)  # both edges, detected at once if the line was re-armed
    inj.set_line(LINE, 0)
    c = dev.counters().minus(before)
    assert c.raised == 0, (
        f"{c.raised} events raised by line {LINE} of a stopped device: the set_type "
        f"between the stop and the gpio chip's removal re-armed its detection"
    )
    g.sh("rmmod stop_window")
