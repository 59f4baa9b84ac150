"""Hot-unplug and re-plug of the device behind a PCIe root port, with paths armed.

QEMU must report DEVICE_DELETED (the device model releases every reference in its
exit), every armed reader must be told (ENODEV), the kernel must stay clean, and the
device must work again after ``device_add``.

Not covered: a GPIO line requested through /dev/gpiochipN while the device goes.
Debian's 6.1 kernel then warns "REMOVING GPIOCHIP WITH GPIOS STILL REQUESTED" and the
*next* gpiochip registration oopses in gpio_name_to_desc() (a stale gpio_device on
gpiolib's list), even after the line was released; see guest-kmod/README.md.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from irqlab.contract.regs import REGS
from irqlab.testing.helpers import DeviceControl, check_guest_kernel_log
from irqlab.vm.guest import Guest, GuestError, GuestTimeout

TIMEOUT = 60.0
CYCLES = (5, 20)  # (test-all, soak)
RECORD_PATHS = ("read", "poll", "epoll-et", "sigio", "eventfd")


def _arm_all(g: Guest) -> list[str]:
    agent = g.agent
    for path in RECORD_PATHS:
        agent.arm(path)
    agent.arm("count", dev=g.count_dev)
    agent.request("wait_blocked", name="read")
    agent.request("wait_blocked", name="count")
    return [*RECORD_PATHS, "count"]


@pytest.mark.irqlab(hotplug=True)
def test_unplug_with_paths_armed_then_replug_in_a_loop(
    irqlab_fresh_guest: Guest,
    irqlab_fresh_device: DeviceControl,
    soak: Callable[[float, float], float],
) -> None:
    g, device = irqlab_fresh_guest, irqlab_fresh_device
    for cycle in range(int(soak(*CYCLES))):
        armed = _arm_all(g)
        g.unplug(timeout=TIMEOUT)  # waits for QEMU's DEVICE_DELETED
        errors = {
            e["path"]: e["errno"]
            for e in g.agent.events(len(armed), type="path_error", timeout=TIMEOUT)
        }
        assert errors == dict.fromkeys(armed, "ENODEV"), (cycle, errors)
        assert not g.sh("ls /dev/irqlab* 2>/dev/null; true").strip(), cycle
        g.agent.reset()  # close the stale files
        g.replug(timeout=TIMEOUT)
        g.injector.reset_counters()
        g.agent.arm("read")
        seq = device.next_seq()
        device.push(cycle)
        assert g.agent.expect(path="read", seq=seq, timeout=TIMEOUT)["value"] == cycle
        g.agent.reset()
    check_guest_kernel_log(g)


@pytest.mark.irqlab(hotplug=True, module={"uio": 1})
def test_unplug_with_the_uio_node_open_then_replug(irqlab_fresh_guest: Guest) -> None:
    g = irqlab_fresh_guest
    armed = g.agent.arm(
        "uio", dev="", regs=dict(REGS), uio_name="irqlab0", map="uio", reenable="device"
    )
    assert armed["uio"].startswith("/dev/uio"), armed
    g.unplug(timeout=TIMEOUT)
    err = g.agent.expect(type="path_error", path="uio", timeout=TIMEOUT)
    assert err["errno"] in ("ENODEV", "EIO"), err
    g.agent.reset()
    g.replug(timeout=TIMEOUT)
    assert g.sh("cat /sys/class/uio/uio0/name").strip() == "irqlab0"
    check_guest_kernel_log(g)


def test_unplug_needs_a_hotplug_slot(irqlab_fresh_guest: Guest) -> None:
    from irqlab.vm.guest import GuestError

    with pytest.raises(GuestError, match="hotplug=True"):
        irqlab_fresh_guest.unplug()


@pytest.mark.irqlab(hotplug=True)
def test_an_unplug_the_guest_never_answers_is_a_timeout(irqlab_fresh_guest: Guest) -> None:
    """The guest's vCPUs are stopped (QMP ``stop``): it never releases the device, and
    ``unplug`` ends at its timeout with a GuestTimeout (a TimeoutError) naming
    DEVICE_DELETED, not a bare GuestError."""
    g = irqlab_fresh_guest
    vm = g.machine
    assert vm is not None
    vm.qmp("stop")
    try:
        with pytest.raises(GuestTimeout) as info:
            g.unplug(timeout=1.0)
        assert isinstance(info.value, TimeoutError)
        assert "never reported DEVICE_DELETED within 1 s" in str(info.value)
    finally:
        vm.qmp("cont")


@pytest.mark.irqlab(hotplug=True)
def test_unplug_and_replug_in_the_wrong_state_say_so(irqlab_fresh_guest: Guest) -> None:
    """A second unplug() and a replug() while plugged raised QMP's raw DeviceNotFound and
    "Duplicate device ID"; unplug(timeout=-1) unplugged, then said "within -1 s"."""
    g = irqlab_fresh_guest
    with pytest.raises(GuestError, match="the device 'irqlab0' is already plugged"):
        g.replug(timeout=TIMEOUT)
    with pytest.raises(ValueError, match="timeout must be"):
        g.unplug(timeout=-1)
    g.wait_for_node(g.dev, timeout=TIMEOUT)  # still plugged
    g.unplug(timeout=TIMEOUT)
    with pytest.raises(GuestError, match="the device 'irqlab0' is not plugged"):
        g.unplug(timeout=TIMEOUT)
    assert g.machine is not None and g.machine.is_running()
    g.replug(timeout=TIMEOUT)
    g.wait_for_node(g.dev, timeout=TIMEOUT)
