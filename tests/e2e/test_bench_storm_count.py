"""The counting file's storm on the session guest when the device drops events: the
storm ends at its marker and every lost event is a device drop."""

from __future__ import annotations

from irqlab.bench import storm
from irqlab.contract.regs import REGS
from irqlab.vm.guest import Guest


def test_count_storm_with_device_drops_ends_at_the_marker(irqlab_guest: Guest) -> None:
    # the generator's fastest period for 5 ms: more than the device queue holds before
    # the guest's handler runs (TCG), so the device drops; the counting file loses none
    rate = 1_000_000_000 // REGS.MIN_BURST_PERIOD_NS
    r = storm.measure(irqlab_guest, "count", rate=rate, duration_s=0.005, idle=10.0)
    assert r["device_dropped"] > 0, f"no device drop: the test proves nothing {r}"
    assert r["end"] == "until" and r["marker_seen"], r  # not the idle timeout
    assert r["lost"] == r["device_dropped"] and r["unexplained"] == 0, r
    assert r["drain_s"] < 5, r
