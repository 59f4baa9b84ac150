"""Issue 15 in the bench, without a VM: queueing warnings, the breakdown's clocks and
stages, the native tables and targets of the report."""

from __future__ import annotations

from typing import Any

import pytest
from test_bench_report import _lat, fixture_result

from irqlab.bench import breakdown, metrics, queueing, report, stats

OFFSET = 5_000_000  # device clock - guest CLOCK_MONOTONIC in these fixtures


def clock(offset: int = OFFSET, bracket: int = 2_000, drift: int = 0) -> breakdown.ClockMap:
    return breakdown.ClockMap(
        {"mono_ns": 1_000_000, "offset_ns": offset, "bracket_ns": bracket},
        {"mono_ns": 9_000_000, "offset_ns": offset + drift, "bracket_ns": bracket},
    )


def record_row(t: int, *, irq: int, wake: int, user: int, ack: int) -> dict[str, Any]:
    """An event raised at guest time *t* (device time t + OFFSET) with stage lengths."""
    raise_dev = t + OFFSET
    isr = t + irq
    drv = isr + wake
    ret = drv + user
    return {
        "seq": 1,
        "raise_ns": raise_dev,
        "isr_ns": isr,
        "isr_dev_ns": isr + OFFSET + 300,  # the handler reads TIME a little later
        "drv_wake_ns": drv,
        "wake_ns": ret,
        "ack_ns": ret + ack + 500,  # the ACK call returns after the device got it
        "ack_latency_ns": irq + wake + user + ack,
    }


def test_a_queueing_series_produces_the_warning() -> None:
    r = fixture_result()
    slow = _lat("sigio", 9_000_000)  # p50 ~9 ms at a 3 ms period: a queue
    slow["counters"] = {"raised": 500}
    r["runs"][0]["latency"]["hardirq"]["sigio"] = slow
    ok = _lat("read", 700_000)
    ok["counters"] = {"raised": 500}
    r["runs"][0]["latency"]["hardirq"]["read"] = ok
    short = _lat("eventfd", 300_000, n=490)  # 10 events never handled
    short["counters"] = {"raised": 500}
    r["runs"][0]["native"] = {"eventfd": short}
    got = queueing.warnings(r)
    labels = [label for label, _ in got]
    assert "agent sigio (wakeup=hardirq)" in labels
    assert "native eventfd" in labels
    assert not any("read" in label for label in labels)
    assert any("above the generator period" in w for _, w in got)
    assert any("10 events still pending" in w for _, w in got)
    txt = report.render_text(r)
    assert "WARNING: queueing" in txt and "agent sigio (wakeup=hardirq)" in txt
    t = {x["name"]: x for x in metrics.targets(r)}
    assert t["no agent latency series queues"]["met"] is False


def test_a_series_that_keeps_up_has_no_warning() -> None:
    s = _lat("read", 700_000)
    s["counters"] = {"raised": 500}
    assert queueing.series_warnings(s) == []
    assert "WARNING: queueing" not in report.render_text(fixture_result())


def test_stages_add_up_to_the_total_and_respect_the_clock_order() -> None:
    row = record_row(2_000_000, irq=40_000, wake=7_000, user=45_000, ack=8_000)
    st = breakdown.stages(row, clock())
    assert st["raise_to_isr"] == pytest.approx(40_000)
    assert st["isr_to_wake"] == 7_000 and st["wake_to_user"] == 45_000
    assert st["user_to_ack"] == pytest.approx(8_000)
    parts = sum(v for k, v in st.items() if k != "total")
    assert parts == pytest.approx(st["total"])
    assert breakdown.check(row, clock()) == []


def test_a_wrong_clock_offset_is_caught() -> None:
    row = record_row(2_000_000, irq=40_000, wake=7_000, user=45_000, ack=8_000)
    # 60 µs off: the ACK would land before the return from the syscall
    bad = breakdown.check(row, clock(offset=OFFSET + 60_000))
    assert any("user_to_ack" in b for b in bad)
    # 60 µs the other way: the ACK would reach the device after the ACK call returned
    # (and the raise would follow the handler's entry: no stages of its own)
    bad = breakdown.check(row, clock(offset=OFFSET - 60_000))
    assert bad == ["ACK at the device after the ACK call returned"], bad
    assert "early_read" in breakdown.stages(row, clock(offset=OFFSET - 60_000))


def test_clock_error_is_half_the_bracket_plus_half_the_drift() -> None:
    c = clock(bracket=4_000, drift=-3_000)
    assert c.error_ns == 2_000 + 1_500 + 1
    assert c.offset(5_000_000) == pytest.approx(OFFSET - 1_500)  # interpolated halfway


def test_events_read_before_their_own_wakeup_count_only_in_the_total() -> None:
    row = record_row(2_000_000, irq=40_000, wake=7_000, user=45_000, ack=8_000)
    row["wake_ns"] = row["drv_wake_ns"] - 1_000  # queued after the wake-up that read it
    s = breakdown.summarize([row], clock())
    assert s["early_reads"] == 1 and set(s["stages"]) == {"total"}
    assert s["problems"] == []


def test_uio_stages_use_the_device_clock_read_after_the_wakeup() -> None:
    row = {"raise_ns": 10_000, "wake_ns": 999, "dev_wake_ns": 60_000, "ack_latency_ns": 70_000}
    st = breakdown.stages(row, clock())
    assert st["raise_to_user"] == 50_000 and st["user_to_ack"] == 20_000


def test_report_shows_native_beside_agent_and_the_breakdown() -> None:
    r = fixture_result()
    rows = [
        record_row(2_000_000 + i * 3_000_000, irq=40_000, wake=7_000, user=45_000 + i, ack=8_000)
        for i in range(20)
    ]
    lat = [row["ack_latency_ns"] for row in rows]
    nat = {
        "path": "read",
        "period_ns": 3_000_000,
        "latency_ns": stats.summarize(lat),
        "counters": {"raised": 20},
        "pending_at_end": 0,
        "breakdown": breakdown.summarize(rows, clock()),
        "problems": [],
    }
    r["runs"][0]["native"] = {"read": nat}
    r["metrics"] = metrics.extract(r)
    txt = report.render_text(r)
    assert "Native responder (irqlab-respond) vs agent" in txt
    assert "Breakdown per path" in txt and "40.0 µs" in txt
    assert r["metrics"]["native.read.p50"]["value"] == nat["latency_ns"]["p50"]
    t = {x["name"]: x for x in metrics.targets(r)}
    # 100 µs native p50 against cyclictest 140 µs: within 2x
    assert t["native responder p50 vs cyclictest p50 (same boot)"]["met"] is True


def test_an_event_raised_while_its_handler_ran_has_no_stages_of_its_own() -> None:
    row = record_row(2_000_000, irq=40_000, wake=7_000, user=45_000, ack=8_000)
    row["raise_ns"] = row["isr_dev_ns"] + 1_000  # a later pass of a running handler took it
    row["ack_latency_ns"] -= 1_000 + 40_300
    s = breakdown.summarize([row], clock())
    assert s["early_reads"] == 1 and set(s["stages"]) == {"total"} and s["problems"] == []


def test_native_ratio_target_needs_three_runs_within_ten_percent() -> None:
    def result(poll_scale: list[float]) -> dict[str, Any]:
        r = fixture_result(runs=len(poll_scale))
        for run, k in zip(r["runs"], poll_scale, strict=True):
            run["native"] = {"read": _lat("read", 100_000), "poll": _lat("poll", int(120_000 * k))}
        r["metrics"] = metrics.extract(r)
        return r

    name = "native path ratios (p50 / read p50) across runs"
    t = {x["name"]: x for x in metrics.targets(result([1.0, 1.02, 0.99]))}
    assert t[name]["met"] is True, t[name]
    t = {x["name"]: x for x in metrics.targets(result([1.0, 1.5, 0.8]))}
    assert t[name]["met"] is False and "native.poll.p50_per_read" in t[name]["value"]
    t = {x["name"]: x for x in metrics.targets(result([1.0]))}
    assert t[name]["met"] is None


def test_lost_events_are_not_pending() -> None:
    """raised 1500, 256 handled, 475 dropped at the device, 769 lost in the ring (the
    driver fetched 1025): nothing pending; an old result without ``lost`` still
    subtracts the device's drops."""
    from types import SimpleNamespace

    from irqlab.bench import latency

    c = SimpleNamespace(raised=1500, dropped=475)
    lost = latency.losses(c, 256, 0, {"events": 10}, {"events": 1035})
    assert lost == {"device_dropped": 475, "reported": 0, "driver": 769, "pending": 0}
    s = _lat("read", 700_000, n=256)
    s["counters"], s["lost"] = {"raised": 1500, "dropped": 475}, lost
    assert queueing.pending(s) == 0
    assert queueing.series_warnings(s) == []
    del s["lost"]
    assert queueing.pending(s) == 1500 - 256 - 475
    # a ring loss reported in a record, no driver counters (UIO): still not pending
    assert latency.losses(c, 256, 769, None, None)["pending"] == 0
    assert latency.losses(c, 256, 0, None, None)["pending"] == 769
