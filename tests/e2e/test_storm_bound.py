"""The longest, fastest burst the device can make leaves the guest usable (issue 16 item 5).

2^32-1 steps at 1 µs: without a bound, the driver's hard IRQ handler drained the whole
device queue (~6 trapped MMIO accesses per event), re-armed and was entered again at
once, so the guest CPU never left hard IRQ context (a soft lockup, SSH dead).  The
driver now caps the events it fetches per hard IRQ and defers the rest to a work item
with the source masked at the device.  Whatever the guest keeps up with, the counts add
up: every raise was either fetched by the driver or counted as dropped by the device.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from irqlab.contract.regs import REGS
from irqlab.vm.agent_client import AgentClient
from irqlab.vm.guest import Guest

U32_MAX = 0xFFFF_FFFF
RESPONSIVE_S = 3.0  # one SSH command during the storm (measured before the fix: up to
# 8-12 s in a 30-40 s storm; after: at most 1.5 s)
STORM_S = (5.0, 30.0)  # (test-all, soak): long enough for the stalls to show (before the
# fix the first SSH command of the storm already took seconds, the worst stall 1.33 s)
MAX_STALL_S = 0.8  # the longest the guest's tasks may go without running (measured:
# 1.33 s before the fix, 0.19 s after, on a quiet host) ...
BASELINE_S = (1.0, 5.0)  # ... or 3x the longest gap without a storm, measured first: a loaded
STALL_FACTOR = 3.0  # host deschedules the vCPU, which the guest sees as gaps too
# A guest task that wakes every ms and reports the longest gap it saw: a stall of the
# CPU in hard IRQ context shows as a gap even between two SSH commands.
GAP_METER = (
    "python3 -c 'import time\n"
    "end = time.monotonic() + {s}\nlast = time.monotonic()\nworst = 0.0\n"
    "while last < end:\n time.sleep(0.001)\n now = time.monotonic()\n"
    " worst = max(worst, now - last)\n last = now\n"
    "print(worst)'"
)


def _stats(agent: AgentClient) -> dict[str, int]:
    r = agent.request("ioctl", name="h", ioctl="GET_STATS")
    assert r["errno"] is None, r
    st: dict[str, int] = r["result"]
    return st


def test_maximal_burst_leaves_ssh_responsive_and_counts_add_up(
    irqlab_guest: Guest,
    irqlab_agent: AgentClient,
    irqlab_device: Any,
    soak: Callable[[float, float], float],
) -> None:
    storm_s = soak(*STORM_S)
    irqlab_agent.request("open", name="h", dev=irqlab_guest.dev, nonblock=True)
    irqlab_agent.arm("read", dev=irqlab_guest.dev)  # a reader woken from the hard IRQ handler
    before = _stats(irqlab_agent)
    assert irqlab_guest.ssh is not None
    baseline = float(irqlab_guest.sh(GAP_METER.format(s=soak(*BASELINE_S)), timeout=60))
    # A host busier than its cores (other guests, builds) starves QEMU's threads in turn:
    # the bound scales with the host's load per core, never below the quiet-host one.
    host_load = max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))
    limit = max(MAX_STALL_S, STALL_FACTOR * baseline) * host_load
    meter = irqlab_guest.ssh.open_process(GAP_METER.format(s=storm_s))
    irqlab_device.inj.burst(U32_MAX, period_ns=REGS.MIN_BURST_PERIOD_NS)
    slowest, i = 0.0, 0
    end = time.monotonic() + storm_s
    try:
        while time.monotonic() < end:
            t0 = time.monotonic()
            assert irqlab_guest.sh(f"echo alive {i}", timeout=60) == f"alive {i}\n"
            took = time.monotonic() - t0
            assert took < RESPONSIVE_S, f"command {i} of the storm took {took:.1f} s"
            slowest = max(slowest, took)
            i += 1
        during = irqlab_device.counters()
    finally:
        irqlab_device.inj.stop_burst()
        stall = float(meter.stdout.read() or "nan")
        meter.close()
    assert stall < limit, (
        f"the guest's tasks stalled for {stall:.2f} s (without a storm: {baseline:.2f} s)"
    )
    # The storm was real: far more raises than the queue holds, most of them dropped.
    assert during.raised > 10 * REGS.MAX_EVQ_DEPTH and during.dropped > 0, during
    # After the storm the driver empties the device queue; then every raise is accounted.
    c = irqlab_device.wait_counters(lambda c: c.evq_count == 0, timeout=60)
    after = _stats(irqlab_agent)
    fetched = after["events"] - before["events"]
    assert fetched + c.dropped == c.raised, (fetched, c)
    assert c.dropped == c.evq_overflow + c.fifo_overflow, c
    print(
        f"storm: raised {c.raised}, fetched {fetched}, {i} SSH commands, "
        f"slowest {slowest:.2f} s, longest stall {stall:.2f} s"
    )
