"""A driver that did not call pci_set_master(): its MSI-X messages never leave the
device, and the device's ``delivered`` counter says so (it counted them as sent)."""

from __future__ import annotations

from typing import Any

from irqlab.testing.qtest_pci import COMMAND, COMMAND_MASTER
from irqlab.vm.agent_client import AgentClient
from irqlab.vm.guest import Guest

TIMEOUT = 60.0

# clears or sets COMMAND.MASTER of the device through its sysfs config file
SET_MASTER = f"""
import sys
path, on = sys.argv[1], sys.argv[2] == "1"
with open(path, "r+b", buffering=0) as f:
    f.seek({COMMAND})
    cmd = int.from_bytes(f.read(2), "little")
    cmd = cmd | {COMMAND_MASTER} if on else cmd & ~{COMMAND_MASTER}
    f.seek({COMMAND})
    f.write(cmd.to_bytes(2, "little"))
    f.seek({COMMAND})
    print(int.from_bytes(f.read(2), "little") & {COMMAND_MASTER})
"""


def _set_master(g: Guest, on: bool) -> None:
    config = f"/sys/bus/pci/devices/{g.pci_address()}/config"
    g.put_bytes(SET_MASTER.encode(), "/tmp/set_master.py")
    out = g.sh(f"python3 /tmp/set_master.py {config} {int(on)}")
    assert out.strip() == (str(COMMAND_MASTER) if on else "0"), out


def test_msix_without_bus_mastering_is_raised_not_delivered(
    irqlab_fresh_guest: Guest, irqlab_fresh_agent: AgentClient, irqlab_fresh_device: Any
) -> None:
    g, agent, device = irqlab_fresh_guest, irqlab_fresh_agent, irqlab_fresh_device
    agent.arm("read", dev=g.dev)
    agent.request("wait_blocked", name="read")
    seq = device.next_seq()
    device.push(1)  # bus mastering on (the driver set it): delivered, read, ACKed
    assert agent.expect(path="read", seq=seq, timeout=TIMEOUT)["value"] == 1
    c = device.counters()
    assert (c.raised, c.delivered) == (1, 1), c
    _set_master(g, False)
    device.push(2)
    c = device.counters()
    # not coalesced (its source was not pending still): a message, dropped
    assert (c.raised, c.delivered, c.coalesced) == (2, 1, 0), c
