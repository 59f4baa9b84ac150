"""Storm (summary) mode in a booted guest: a burst's summary counts equal the device's.

The record paths count a burst in the guest (``summarize``) and ACK each read
buffer with one write(2) of its seqs; the device counts those ACKs.  Nothing here
depends on the machine's speed: a slow agent may lose events in the driver's
ring, and the counts must still add up exactly.
"""

from __future__ import annotations

from typing import Any

import pytest
from agent_paths import RECORD_PATHS  # same directory (rootdir-relative import)

from irqlab.bench import storm
from irqlab.contract.regs import QOM, REGS
from irqlab.vm.agent_client import AgentClient
from irqlab.vm.guest import Guest

# Fewer events than the device keeps raise timestamps for (IRQLAB_ACK_WINDOW): every
# seq the agent ACKs is still known to the device, however late the ACK.
BURST = 3000
PERIOD_NS = 50_000  # 20k events/s of guest time
IDLE = 30.0
SRC = str(REGS.SRC_BURST)


def _until_event(agent: AgentClient, path: str) -> list[dict[str, Any]]:
    """The path's summaries up to and including its next event."""
    out: list[dict[str, Any]] = []
    while not out or out[-1]["type"] != "event":
        out.append(agent.expect(path=path, type=("summary", "event"), timeout=IDLE))
    return out


# A guest of its own whose device queue holds the whole burst: however long the host
# keeps the vCPU from running, the device drops nothing.
@pytest.mark.irqlab(device={QOM.PROP_EVQ_DEPTH: REGS.MAX_EVQ_DEPTH})
@pytest.mark.parametrize("path", RECORD_PATHS)
def test_burst_summaries_count_every_event_once_and_batch_acks_reach_the_device(
    irqlab_fresh_guest: Guest, irqlab_fresh_device: Any, path: str
) -> None:
    guest, device, agent = irqlab_fresh_guest, irqlab_fresh_device, irqlab_fresh_guest.agent
    assert REGS.MAX_EVQ_DEPTH > BURST
    # Files opened from here on hold the whole burst: nothing can be lost in the driver.
    guest.sh(
        f"echo {1 << (2 * BURST - 1).bit_length()} > "
        f"/sys/module/{guest.module_name()}/parameters/ring_size"
    )
    armed = agent.arm(path, dev=guest.dev, summarize=[REGS.SRC_BURST], ack="write")
    assert armed["summarize"] == [REGS.SRC_BURST] and armed["ack"] == "write"
    seq0 = device.next_seq()
    device.burst(BURST, PERIOD_NS)
    device.wait_counters(lambda c: c.raised == BURST)
    device.push(storm.MARKER)  # the ring holds everything: the marker cannot be dropped
    *summaries, marker = _until_event(agent, path)
    assert marker["source"] == REGS.SRC_FIFO and marker["value"] == storm.MARKER
    assert marker["seq"] == seq0 + BURST and not marker["lost"]
    per = [s["sources"][SRC] for s in summaries]
    assert sum(p["records"] for p in per) == BURST
    assert sum(p["in_order"] for p in per) == BURST
    assert sum(p["out_of_order"] for p in per) == 0
    assert sum(p["lost"] for p in per) == 0
    assert (per[0]["first"], per[-1]["last"]) == (seq0, seq0 + BURST - 1)
    assert sum(s["acks"] for s in summaries) == BURST
    assert all(s["ack_errors"] == 0 and not s["flags"] for s in summaries)
    st = agent.disarm(path)[path]
    assert st["events"] == BURST + 1 and st["acks"] == BURST + 1 and st["ack_errors"] == 0
    c = device.counters()
    assert c.raised == BURST + 1 and c.dropped == 0, c
    # Every record was ACKed (written) before the message covering it was sent.
    assert c.acked == BURST + 1 and c.ack_invalid == 0, c


@pytest.mark.parametrize("path", ["read", "epoll-et", "sigio", "eventfd"])
def test_storm_accounting_is_exact_with_the_default_ring(irqlab_guest: Guest, path: str) -> None:
    """The bench's storm at 20k/s: whatever the ring loses is reported, nothing else."""
    r = storm.measure(irqlab_guest, path, rate=20_000, duration_s=BURST / 20_000, idle=IDLE)
    assert r["raised"] == BURST and r["marker_seen"], r
    assert r["observed"] + r["lost"] == r["raised"], r
    assert r["lost"] == r["device_dropped"] + r["reported_lost"] and r["unexplained"] == 0, r
    assert r["duplicates"] == 0 and not r.get("problems"), r
    assert r["agent"]["acks"] == r["observed"] and r["agent"]["ack_errors"] == 0, r
    # The device counted each batch ACK: every observed event plus the marker seen.
    assert r["device_acked"] == r["observed"] + 1 and r["device_ack_invalid"] == 0, r
