"""UIO: the kernel's uio_pci_generic on our INTx device, and the driver's own UIO mode.

The agent's ``uio`` path is the user-space driver: it blocks in read(2) on /dev/uioN,
then, through BAR0 mapped into the process, clears the latched status, drains and ACKs
the device's event queue and re-enables the interrupt: uio_pci_generic's handler set the
PCI 2.3 INTx-disable bit, which the process clears through the function's config space
(uio_pci_generic has no irqcontrol: a write to its fd is ENOSYS); in the driver's UIO
mode (seed 001) the handler only disabled at the device, acked and woke userspace, and
the process writes IRQ_ENABLE through the mapping.
Register offsets are the host's parse of irqlab-regs.h, sent with the arm request.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from irqlab.contract.regs import QOM, REGS
from irqlab.testing.helpers import DeviceControl
from irqlab.testing.plugin import start_guest, start_uio_generic_guest
from irqlab.vm.agent_client import AgentClient
from irqlab.vm.guest import Guest, GuestConfig, GuestTimeout

TIMEOUT = 60.0
N = 8
K = 5
REG_MAP = dict(REGS)


def uio_arm(agent: AgentClient, **opts: Any) -> dict[str, Any]:
    return agent.arm("uio", dev="", regs=REG_MAP, **opts)


def n_for_n(agent: AgentClient, device: DeviceControl) -> None:
    """N injections, each handled and re-enabled before the next: N wake-ups."""
    seq0 = device.next_seq()
    for i in range(N):
        device.push(0x100 + i)
        ev = agent.expect(path="uio", timeout=TIMEOUT)
        assert ev["delta"] == 1 and ev["events"] == 1, ev
        assert ev["seqs"] == [seq0 + i] and ev["values"] == [0x100 + i], ev
    c = device.counters()
    assert c.raised == N and c.delivered == N and c.acked == N, c
    assert c.coalesced == 0 and c.evq_count == 0, c


def slow_userspace(agent: AgentClient, device: DeviceControl) -> tuple[dict[str, Any], Any]:
    """Wake once, then inject K more before userspace handles and re-enables."""
    device.push(0)
    agent.expect(type="uio_wake", path="uio", timeout=TIMEOUT)
    device.push(*range(1, K + 1))
    device.wait_counters(lambda c: c.raised == K + 1)
    agent.request("release", name="uio")
    ev = agent.expect(path="uio", timeout=TIMEOUT)
    assert ev["delta"] == 1 and ev["events"] == K + 1, ev
    assert ev["values"] == list(range(K + 1)), ev
    st = agent.stats()["paths"]["uio"]
    assert st["wakeups"] == 1 and st["events"] == K + 1, st
    c = device.counters()
    assert c.raised == K + 1 and c.acked == K + 1 and c.delivered == 1, c
    return ev, c


# --- the driver's UIO mode (seed 001), each test in its own restored guest -------------

UIO_MODE = pytest.mark.irqlab(module={"uio": 1})


@UIO_MODE
def test_uio_mode_exactly_n_for_n(
    irqlab_fresh_guest: Guest, irqlab_fresh_device: DeviceControl
) -> None:
    agent = irqlab_fresh_guest.agent
    armed = uio_arm(agent, uio_name="irqlab0", map="uio", reenable="device")
    assert armed["uio"].startswith("/dev/uio"), armed
    assert not irqlab_fresh_guest.sh("ls /dev/irqlab* 2>/dev/null; true").strip()
    n_for_n(agent, irqlab_fresh_device)


@UIO_MODE
def test_uio_mode_coalesces_while_userspace_is_slow(
    irqlab_fresh_guest: Guest, irqlab_fresh_device: DeviceControl
) -> None:
    agent = irqlab_fresh_guest.agent
    uio_arm(agent, uio_name="irqlab0", map="uio", reenable="device", gate=True)
    _, c = slow_userspace(agent, irqlab_fresh_device)
    # The handler disabled the device: the K raises latched status without signalling,
    # so the device counts them as raised, not delivered (nor coalesced: nothing was
    # pending while IRQ_ENABLE was 0).
    assert c.raised - c.delivered == K and c.coalesced == 0, c


# --- uio_pci_generic on separately booted guests --------------------------------------


INTX = {QOM.PROP_IRQ_MODE: "intx"}


def boot(name: str, props: dict[str, Any]) -> Guest:
    return start_guest(GuestConfig(name=name, device_props=props))


@pytest.fixture(scope="module")
def intx_guest() -> Generator[Guest, None, None]:
    with start_uio_generic_guest(GuestConfig(name="uio-intx", device_props=INTX)) as g:
        yield g


@pytest.fixture
def intx(intx_guest: Guest) -> tuple[AgentClient, DeviceControl]:
    intx_guest.agent.reset()
    intx_guest.agent.drain_events()
    intx_guest.injector.reset_counters()
    return intx_guest.agent, DeviceControl(intx_guest)


@UIO_MODE
def test_a_reset_in_uio_mode_keeps_the_loaded_module(irqlab_fresh_guest: Guest) -> None:
    """The reset between tests looks for the driver's node of its mode (/dev/uio0 here):
    it looked for /dev/irqlab0 and so reloaded the module at every reset in UIO mode."""
    g = irqlab_fresh_guest
    param = f"/sys/module/{g.module_name()}/parameters/ring_size"
    g.sh(f"echo 512 > {param}")  # a reload would put the default back
    for _ in range(3):
        g.reset()
    assert g.sh(f"cat {param}").strip() == "512"
    assert g.sh("test -c /dev/uio0 && echo present").strip() == "present"


def test_uio_pci_generic_bound(intx_guest: Guest) -> None:
    addr = intx_guest.pci_address()
    assert intx_guest.sh("cat /sys/class/uio/uio0/name").strip() == "uio_pci_generic"
    link = intx_guest.sh(f"readlink /sys/bus/pci/devices/{addr}/driver").strip()
    assert link.endswith("/uio_pci_generic"), link


def test_uio_pci_generic_exactly_n_for_n(intx: tuple[AgentClient, DeviceControl]) -> None:
    agent, device = intx
    uio_arm(agent, uio="/dev/uio0", map="resource0", reenable="config")
    n_for_n(agent, device)
    agent.disarm("uio")


def test_uio_pci_generic_coalesces_while_userspace_is_slow(
    intx: tuple[AgentClient, DeviceControl],
) -> None:
    agent, device = intx
    uio_arm(agent, uio="/dev/uio0", map="resource0", reenable="config", gate=True)
    _, c = slow_userspace(agent, device)
    # uio_pci_generic masked INTx in the PCI command register; the device still saw
    # FIFO pending, so each of the K raises was coalesced into the one interrupt.
    assert c.coalesced == K and c.raised - c.delivered == K, c
    agent.disarm("uio")


def test_broken_intx_disable_is_refused_by_uio_pci_generic() -> None:
    g = boot("uio-broken", {**INTX, QOM.PROP_BROKEN_INTX_DISABLE: True})
    try:
        addr, r = g.bind_uio_pci_generic()
        assert r.rc != 0 and "No such device" in r.err, r
        assert not g.sh("ls /sys/class/uio/ 2>/dev/null; true").strip()
        assert g.sh(f"test -e /sys/bus/pci/devices/{addr}/driver || echo none").strip() == "none"
    finally:
        g.close()


@pytest.mark.irqlab(module={"uio": None})
def test_a_bare_bool_parameter_is_set_as_insmod_sets_it(irqlab_fresh_guest: Guest) -> None:
    """``uio`` with no value (``--module-param``'s, the marker's or ``modprobe irqlab
    uio``'s way of setting a bool) was refused as not PARAM=VALUE."""
    g = irqlab_fresh_guest
    assert g.sh("cat /sys/module/irqlab/parameters/uio").strip() == "Y"
    assert g.driver_node() == "/dev/uio0"
    assert g.sh("test -c /dev/uio0 && echo ok").strip() == "ok"


def test_the_device_comes_back_from_uio_pci_generic_with_bind() -> None:
    """After bind_uio_pci_generic() a reload of our driver said only that it "did not
    bind the irqlab device (is it a build of our driver?)" with boot-time kernel lines:
    the driver_override it left names uio_pci_generic, and nothing undid it."""
    g = boot("uio-back", INTX)
    try:
        _, r = g.bind_uio_pci_generic()
        assert r.rc == 0, r
        with pytest.raises(GuestTimeout) as info:
            g.reload_module()
        said = str(info.value).split("; kernel messages since it began")[0]
        assert said.endswith(
            ": the device's driver_override names uio_pci_generic (bind_uio_pci_generic() "
            "sets it), which holds the device: g.bind() gives it back to irqlab"
        ), said
        g.bind()  # uio_pci_generic lets go, the override is cleared, ours binds
        assert g.sh(f"test -c {g.dev} && echo ok").strip() == "ok"
        assert not g.sh("ls /sys/class/uio/ 2>/dev/null; true").strip()
    finally:
        g.close()
