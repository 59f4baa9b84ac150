"""The debounced key (seed 002): bouncy input gives exactly one press and one release.

The module is reloaded with ``key_line``: every edge of that line re-arms a timer of
``key_debounce_ms``; when it expires the driver reads the level and, if it differs from
the last reported one, delivers a record (source IRQLAB_SRC_KEY, kind PRESS/RELEASE,
value = level, seq 0) to the event files: blocking read, poll and SIGIO see it.

The bounces are ``gpio-pulse`` commands (toggle and back in one QMP command), so the
line sits at its new level between commands: however the host's QMP timing jitters,
a timer that expires early reads the settled level, never a bounce.  That nothing
else comes is checked after several debounce intervals of the guest's clock (the
device's burst generator on an idle line), in the driver's own count of a file.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from irqlab.contract.regs import REGS
from irqlab.contract.uapi import header_path, load
from irqlab.testing.helpers import DeviceControl, module_reloaded
from irqlab.vm.agent_client import AgentClient
from irqlab.vm.guest import Guest

UAPI = load(header_path()).constants
KEY = UAPI["IRQLAB_SRC_KEY"]
PRESS, RELEASE = UAPI["IRQLAB_KEY_PRESS"], UAPI["IRQLAB_KEY_RELEASE"]
KEY_LINE = 7
IDLE_LINE = KEY_LINE - 1  # nothing detects it: its steps only mark time
DEBOUNCE_MS = 15
BOUNCES = 6
TIMEOUT = 60.0


@pytest.fixture
def key_guest(irqlab_guest: Guest, irqlab_agent: AgentClient) -> Generator[Guest, None, None]:
    irqlab_guest.injector.drive_low(1 << KEY_LINE)
    with module_reloaded(irqlab_guest, key_line=KEY_LINE, key_debounce_ms=DEBOUNCE_MS) as g:
        yield g


def key_records(agent: AgentClient, path: str) -> list[dict[str, Any]]:
    return [e for e in agent.pending() if e.get("path") == path and e.get("source") == KEY]


@pytest.mark.parametrize("path", ["read", "poll", "sigio"])
def test_bouncy_key_gives_one_press_and_one_release(
    key_guest: Guest, irqlab_agent: AgentClient, irqlab_device: DeviceControl, path: str
) -> None:
    inj = key_guest.injector
    # A second file that nobody reads: the driver queues every record to it too.
    irqlab_agent.request("open", name="h", dev=key_guest.dev, nonblock=True)
    irqlab_agent.arm(path, dev=key_guest.dev)
    if path == "read":
        irqlab_agent.request("wait_blocked", name=path)
    inj.drive_high(1 << KEY_LINE)
    for _ in range(BOUNCES):
        inj.pulse(KEY_LINE)  # high -> low -> high
    press = irqlab_agent.expect(path=path, source=KEY, timeout=TIMEOUT)
    assert (press["kind"], press["value"], press["line"], press["seq"]) == (PRESS, 1, KEY_LINE, 0)
    inj.drive_low(1 << KEY_LINE)
    for _ in range(BOUNCES):
        inj.pulse(KEY_LINE)  # low -> high -> low
    release = irqlab_agent.expect(path=path, source=KEY, timeout=TIMEOUT)
    assert (release["kind"], release["value"], release["line"]) == (RELEASE, 0, KEY_LINE)
    assert release["raise_ns"] > press["raise_ns"]
    # Nothing else comes: let several debounce intervals pass on the guest's clock,
    # then count the key records the driver queued to the unread file.
    irqlab_device.let_guest_time_pass(10 * DEBOUNCE_MS * 1_000_000, IDLE_LINE, TIMEOUT)
    edges = 2 * (1 + 2 * BOUNCES)
    r = irqlab_agent.request("read", name="h")  # up to 64 records: all of them
    assert r["errno"] is None, r
    assert [e["kind"] for e in r["events"] if e["source"] == KEY] == [PRESS, RELEASE], r
    assert len(r["events"]) == edges + 2, r["events"]
    assert key_records(irqlab_agent, path) == []
    # Every raw edge was an event of the device and reached the file too.
    raw = irqlab_agent.events(edges, path=path, timeout=TIMEOUT)
    assert all(e["source"] == REGS.SRC_GPIO and e["line"] == KEY_LINE for e in raw)
    c = irqlab_device.counters()
    assert c.raised == edges and c.acked == edges, c


def test_key_line_is_claimed_in_gpiolib(key_guest: Guest, irqlab_agent: AgentClient) -> None:
    r = irqlab_agent.request("arm", path="gpio-cdev", lines=[KEY_LINE], edge="both", check=False)
    assert r["ok"] is False and r.get("errno") == "EBUSY", r
