"""ACK: raise->ack latency measured by the device in virtual time (exact under qtest)."""

from __future__ import annotations

import pytest
from devrig import Rig, RigFactory

from irqlab.contract.regs import REGS
from irqlab.vm.qmp.stats import Histogram

pytestmark = pytest.mark.device


def _raise(rig: Rig) -> int:
    rig.inj.push(0)
    ev = rig.dev.drain()[-1]
    return ev.seq


def test_latency_equals_the_clock_advanced(rig: Rig) -> None:
    seq = _raise(rig)
    rig.qt.clock_step(123_456)
    rig.dev.ack(seq)
    assert rig.dev.read("ACK_SEQ") == seq
    assert rig.dev.read64("ACK_LAT_LO") == 123_456
    assert rig.dev.read("CNT_ACKED") == 1
    h = rig.inj.histogram()
    assert (h.count, h.sum_ns, h.min_ns, h.max_ns) == (1, 123_456, 123_456, 123_456)
    expected = [0] * REGS.HIST_BUCKETS
    expected[Histogram.bucket_of(123_456)] = 1  # 2**16 <= 123456 < 2**17
    assert list(h.buckets) == expected
    assert Histogram.bucket_of(123_456) == 16
    assert rig.inj.counters().acked == 1


def test_histogram_of_several_latencies(rig: Rig) -> None:
    latencies = [0, 1, 2, 1000, 1023, 1024, 5_000_000_000]  # the last one > 2**32 ns
    for lat in latencies:
        seq = _raise(rig)
        rig.qt.clock_step(lat)
        rig.dev.ack(seq)
        assert rig.dev.read64("ACK_LAT_LO") == lat
    h = rig.inj.histogram()
    assert h.count == len(latencies)
    assert h.sum_ns == sum(latencies)
    assert (h.min_ns, h.max_ns) == (0, 5_000_000_000)
    expected = [0] * REGS.HIST_BUCKETS
    for lat in latencies:
        expected[Histogram.bucket_of(lat)] += 1
    assert list(h.buckets) == expected
    assert expected[0] == 2 and expected[9] == 2 and expected[10] == 1 and expected[32] == 1
    assert h.percentile_range(50) == (512, 1023)


def test_unknown_and_stale_acks_are_counted_invalid(rig: Rig) -> None:
    seq = _raise(rig)
    rig.dev.ack(seq + 1000)  # never raised
    rig.dev.ack(0)  # sequence numbers start at 1
    assert rig.dev.read("ACK_INVALID") == 2
    rig.dev.ack(seq)
    rig.dev.ack(seq)  # second ACK of the same event is stale
    c = rig.inj.counters()
    assert (c.acked, c.ack_invalid) == (1, 3)
    assert rig.dev.read("ACK_SEQ") == seq
    assert rig.inj.histogram().count == 1


def test_ack_window(rig_factory: RigFactory) -> None:
    """A queued event's raise timestamp is kept in slot seq % IRQLAB_ACK_WINDOW until a
    later queued event takes the slot."""
    r = rig_factory(evq_depth=REGS.MAX_EVQ_DEPTH)
    n = REGS.ACK_WINDOW
    r.inj.burst(n, period_ns=REGS.MIN_BURST_PERIOD_NS)
    r.qt.clock_step(n * REGS.MIN_BURST_PERIOD_NS)
    r.dev.pop()  # room for one more, so that it is queued (dropped events are not kept)
    r.inj.push(0)  # seq ACK_WINDOW + 1 takes the place of seq 1
    c = r.inj.counters()
    assert (c.raised, c.evq_overflow) == (n + 1, 0)
    r.dev.ack(1)
    assert r.inj.counters().ack_invalid == 1
    r.dev.ack(2)
    r.dev.ack(n + 1)
    c = r.inj.counters()
    assert (c.acked, c.ack_invalid) == (2, 1)


def test_after_drops_a_queued_event_may_have_lost_its_ack_slot(rig_factory: RigFactory) -> None:
    """The window is not "the last IRQLAB_ACK_WINDOW queued events" (irqlab.rst's
    example): dropped events use sequence numbers but write no slot, so the event
    queued next can take the slot of an event still in the queue."""
    n = REGS.ACK_WINDOW
    r = rig_factory(evq_depth=2)
    r.inj.push(1)
    r.inj.push(2)  # seq 2, queued
    r.inj.burst(n - 1, period_ns=REGS.MIN_BURST_PERIOD_NS)  # seqs 3 .. n + 1, all dropped
    r.qt.clock_step(n * REGS.MIN_BURST_PERIOD_NS)
    assert r.inj.counters().evq_overflow == n - 1
    r.dev.pop()
    r.inj.push(3)  # seq n + 2: slot 2
    head = r.dev.head()
    assert head is not None and head.seq == 2
    r.dev.ack(2)
    c = r.inj.counters()
    assert (c.acked, c.ack_invalid) == (0, 1)
    r.dev.ack(n + 2)
    assert r.inj.counters().acked == 1


def test_reset_counters_zeroes_stats_but_not_the_queue(rig: Rig) -> None:
    seq = _raise(rig)
    rig.inj.push(1)
    rig.dev.ack(seq)
    rig.dev.ack(999)
    rig.inj.reset_counters()
    c = rig.inj.counters()
    assert (c.raised, c.acked, c.ack_invalid, c.delivered, c.coalesced, c.dropped) == (
        0, 0, 0, 0, 0, 0,
    )  # fmt: skip
    assert c.evq_count == 1 and c.next_seq == 3
    h = rig.inj.histogram()
    assert (h.count, h.sum_ns, h.min_ns, h.max_ns, sum(h.buckets)) == (0, 0, 0, 0, 0)
    assert rig.dev.read("EVQ_COUNT") == 1
    assert _raise(rig) == 3  # sequence numbers continue


def test_an_event_from_before_a_reset_cannot_be_acknowledged(rig: Rig) -> None:
    """Reset empties the queue; an ACK of one of its events is invalid, not a latency."""
    seq = _raise(rig)
    rig.machine.qmp("system_reset")
    rig.machine.wait_event("RESET", timeout=30)
    rig.dev.cfg.map_bar(0, rig.dev.bar0)  # a PCI reset unmaps the BAR too
    rig.dev.ack(seq)
    assert rig.dev.read("ACK_SEQ") == 0
    c = rig.inj.counters()
    assert (c.acked, c.ack_invalid) == (0, 1)
    assert rig.inj.histogram().count == 0
    # events raised after the reset are acknowledged as usual
    after = _raise(rig)
    rig.dev.ack(after)
    assert rig.dev.read("ACK_SEQ") == after
