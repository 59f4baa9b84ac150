"""The driver's module parameters that change how interrupts reach readers.

``wakeup`` (hardirq, thread, workqueue) decides where queued events are handed to the
open files; ``irq_mode`` (intx, msix) which interrupt type the driver requests.  The
session guest's module is reloaded for each value and restored afterwards.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from irqlab.contract.regs import REGS
from irqlab.contract.uapi import header_path, load
from irqlab.vm.agent_client import AgentClient
from irqlab.vm.guest import Guest

UAPI = load(header_path()).constants
TIMEOUT = 60.0


@pytest.fixture
def reload(irqlab_guest: Guest, irqlab_agent: AgentClient) -> Generator[Any, None, None]:
    def do(**params: Any) -> dict[str, int]:
        irqlab_agent.reset()
        irqlab_guest.reload_module(**params)
        irqlab_guest.injector.reset_counters()
        irqlab_agent.request("open", name="info", dev=irqlab_guest.dev)
        info: dict[str, int] = irqlab_agent.request("ioctl", name="info", ioctl="GET_INFO")[
            "result"
        ]
        irqlab_agent.request("close", name="info")
        return info

    try:
        yield do
    finally:
        irqlab_agent.reset()
        irqlab_guest.reload_module(**irqlab_guest.config.module_params)


def read_and_poll_get(guest: Guest, agent: AgentClient, device: Any, n: int = 4) -> None:
    agent.arm("read", dev=guest.dev)
    agent.arm("poll", dev=guest.dev)
    agent.request("wait_blocked", name="read")
    seq0 = device.next_seq()
    device.push(*range(n))
    for path in ("read", "poll"):
        evs = [agent.expect(path=path, seq=seq0 + i, timeout=TIMEOUT) for i in range(n)]
        assert [e["value"] for e in evs] == list(range(n))
    c = device.counters()
    assert c.raised == n and c.acked == n, c  # both paths ACK each seq: once valid


@pytest.mark.parametrize("wakeup", ["hardirq", "thread", "workqueue"])
def test_wakeup_modes_deliver_to_read_and_poll(
    irqlab_guest: Guest, irqlab_agent: AgentClient, irqlab_device: Any, reload: Any, wakeup: str
) -> None:
    info = reload(wakeup=wakeup)
    assert info["wakeup"] == UAPI[f"IRQLAB_WAKEUP_{wakeup.upper()}"], info
    read_and_poll_get(irqlab_guest, irqlab_agent, irqlab_device)


@pytest.mark.parametrize("irq_mode", ["intx", "msix"])
def test_irq_modes_deliver(
    irqlab_guest: Guest, irqlab_agent: AgentClient, irqlab_device: Any, reload: Any, irq_mode: str
) -> None:
    info = reload(irq_mode=irq_mode)
    assert info["irq_mode"] == REGS[f"IRQLAB_IRQ_MODE_{irq_mode.upper()}"], info
    assert info["nvecs"] == (1 if irq_mode == "intx" else REGS.NUM_SOURCES), info
    read_and_poll_get(irqlab_guest, irqlab_agent, irqlab_device)


def test_reset_between_tests_loads_the_configured_parameters_again(
    irqlab_guest: Guest, irqlab_agent: AgentClient
) -> None:
    """A test that reloaded the driver with other parameters left them to the next test
    on the shared guest (it failed there, or passed on the wrong configuration)."""
    wakeup = "/sys/module/irqlab/parameters/wakeup"
    configured = irqlab_guest.sh(f"cat {wakeup}").strip()
    other = "workqueue" if configured != "workqueue" else "thread"
    irqlab_guest.reload_module(wakeup=other)
    assert irqlab_guest.sh(f"cat {wakeup}").strip() == other
    irqlab_guest.reset()  # what the plugin does between tests
    assert irqlab_guest.sh(f"cat {wakeup}").strip() == configured
    # the driver works after the reload (the agent's paths were reset before it)
    irqlab_agent.arm("read", dev=irqlab_guest.dev)
    irqlab_agent.disarm("read")
