"""UIO mode never enables MSI-X (issue 16 item 8).

The MSI-X table lives in BAR0, the same page as the registers that /dev/uioN maps:
with MSI-X enabled, the user-space driver could rewrite a vector's address and data and
make the device write anywhere in guest memory.  The session guest's device is in
``irq-mode=msix``.
"""

from __future__ import annotations

import pytest

from irqlab.testing.helpers import module_reloaded
from irqlab.vm.agent_client import AgentClient
from irqlab.vm.guest import Guest

PCI_CAP_ID_MSIX = 0x11
MSIX_ENABLE = 1 << 15


def msix_control(guest: Guest) -> int:
    """The MSI-X Message Control word of our device (config space, from sysfs)."""
    cfg = bytes.fromhex(
        guest.sh(f"od -An -v -tx1 /sys/bus/pci/devices/{guest.pci_address()}/config")
        .replace("\n", "")
        .replace(" ", "")
    )
    ptr = cfg[0x34]
    while ptr:
        if cfg[ptr] == PCI_CAP_ID_MSIX:
            return int.from_bytes(cfg[ptr + 2 : ptr + 4], "little")
        ptr = cfg[ptr + 1]
    raise AssertionError("the device has no MSI-X capability")


def test_msix_is_enabled_by_the_normal_driver(
    irqlab_guest: Guest, irqlab_agent: AgentClient
) -> None:
    """The control: the device offers MSI-X and the driver (not in UIO mode) uses it."""
    assert msix_control(irqlab_guest) & MSIX_ENABLE


def test_uio_mode_leaves_msix_disabled(irqlab_guest: Guest, irqlab_agent: AgentClient) -> None:
    with module_reloaded(irqlab_guest, uio=1):
        assert not msix_control(irqlab_guest) & MSIX_ENABLE
        assert "PCI-MSIX" not in irqlab_guest.sh("grep irqlab0 /proc/interrupts")


def test_uio_mode_with_irq_mode_msix_is_refused(
    irqlab_guest: Guest, irqlab_agent: AgentClient
) -> None:
    name = irqlab_guest.module_name()
    irqlab_guest.sh(f"rmmod {name}")
    try:
        irqlab_guest.sh("echo uio-msix-test > /dev/kmsg")
        irqlab_guest.sh(f"modprobe {name} uio=1 irq_mode=msix")
        assert not irqlab_guest.sh("ls /dev/uio* 2>/dev/null; true").strip()
        assert not msix_control(irqlab_guest) & MSIX_ENABLE
        log = irqlab_guest.sh("dmesg").split("uio-msix-test")[-1]
        assert "irq_mode=msix is not possible here" in log
    finally:
        irqlab_agent.reset()
        irqlab_guest.reload_module(**irqlab_guest.config.module_params)


@pytest.fixture(autouse=True)
def _module_back(irqlab_guest: Guest) -> None:
    """Each test starts with the session's driver bound (a failed test may not leave it)."""
    irqlab_guest.sh(f"test -e {irqlab_guest.dev}")
