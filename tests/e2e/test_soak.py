"""What users repeat, repeated: restore, unbind/bind, our driver to uio_pci_generic and
back, arm/disarm.

Each loop checks every round (not only the last) and names the round that failed.
``invoke test-all`` runs a few rounds; ``invoke soak`` runs them hundreds of times (the
copy-then-run loops are in test_ssh_put_run.py, unplug/replug in test_hotplug.py).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from irqlab.contract.regs import QOM
from irqlab.testing.helpers import DeviceControl, check_guest_kernel_log
from irqlab.testing.plugin import start_guest
from irqlab.vm.agent_client import AgentClient
from irqlab.vm.guest import Guest, GuestConfig

TIMEOUT = 60.0
Soak = Callable[[float, float], float]


def test_restore_run_and_inject_in_a_loop(soak: Soak) -> None:
    """Each round a new QEMU restores the session's snapshot, runs a command over SSH,
    gets one interrupt through the agent and stops; no two rounds share randomness."""
    seen: set[str] = set()
    for i in range(int(soak(3, 200))):
        g = start_guest(GuestConfig(name="soak-restore"))
        machine = g.machine
        try:
            assert g.restored, (i, g.snapshot_error)
            boot_id = g.sh("cat /proc/sys/kernel/random/boot_id").strip()
            assert boot_id not in seen, f"round {i}: boot_id {boot_id} again"
            seen.add(boot_id)
            g.agent.arm("read")
            device = DeviceControl(g)
            seq = device.next_seq()
            device.push(i)
            assert g.agent.expect(path="read", seq=seq, timeout=TIMEOUT)["value"] == i, i
            check_guest_kernel_log(g)
        finally:
            g.close()
        assert machine is not None and not machine.is_running(), f"round {i}: QEMU still runs"


def _one_read(g: Guest, device: DeviceControl, i: int) -> None:
    """Our driver's node works: a read path armed gets the word *i* pushed, once."""
    g.agent.arm("read")
    seq = device.next_seq()
    device.push(i)
    assert g.agent.expect(path="read", seq=seq, timeout=TIMEOUT)["value"] == i, i
    g.agent.disarm("read")


def test_unbind_bind_in_a_loop(
    irqlab_fresh_guest: Guest, irqlab_fresh_device: DeviceControl, soak: Soak
) -> None:
    """Unbind wakes an armed reader with ENODEV; bind brings the node back and it works."""
    g, device = irqlab_fresh_guest, irqlab_fresh_device
    for i in range(int(soak(5, 200))):
        g.agent.arm("read")
        g.agent.request("wait_blocked", name="read")
        addr = g.unbind()
        err = g.agent.expect(type="path_error", path="read", timeout=TIMEOUT)
        assert err["errno"] == "ENODEV", (i, err)
        g.agent.disarm("read")
        g.bind(addr)
        _one_read(g, device, i)
    check_guest_kernel_log(g)


@pytest.mark.irqlab(device={QOM.PROP_IRQ_MODE: "intx"})  # uio_pci_generic takes INTx only
def test_uio_pci_generic_and_back_in_a_loop(
    irqlab_fresh_guest: Guest, irqlab_fresh_device: DeviceControl, soak: Soak
) -> None:
    """bind_uio_pci_generic() hands the device to the kernel's driver, bind() takes it
    back (clearing the driver_override): our driver's node works after every round."""
    g, device = irqlab_fresh_guest, irqlab_fresh_device
    for i in range(int(soak(3, 100))):
        _, r = g.bind_uio_pci_generic()
        assert r.rc == 0, (i, r)
        assert g.sh("ls /sys/class/uio").split() == ["uio0"], i
        g.bind()
        _one_read(g, device, i)
    check_guest_kernel_log(g)


def test_arm_disarm_in_a_loop(
    irqlab_agent: AgentClient, irqlab_device: DeviceControl, soak: Soak
) -> None:
    """Arm a path, take one event, disarm: every path in turn, with no file left open."""
    paths = ("read", "nonblock", "poll", "select", "epoll-lt", "epoll-et", "sigio", "setsig")
    paths += ("eventfd",)
    for i in range(int(soak(len(paths), 400))):
        path = paths[i % len(paths)]
        irqlab_agent.arm(path)
        seq = irqlab_device.next_seq()
        irqlab_device.push(i)
        ev = irqlab_agent.expect(path=path, seq=seq, timeout=TIMEOUT)
        assert ev["value"] == i, (i, path, ev)
        irqlab_agent.disarm(path)
    stats = irqlab_agent.stats()
    assert not stats["paths"] and not stats["handles"], stats
