"""The native responder (irqlab-respond, issue 15) on every notification path.

For each path: a burst from the device generator, the responder armed as the agent
arms the path; every raised event is seen exactly once, in order, every one is
ACKed and the device's ``acked`` equals the responder's ACKs; the per-event
breakdown's cross-clock points are in order within the clock offset's stated
error (``irqlab.bench.breakdown.check``) and its stages add up to the total.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from irqlab.bench import breakdown, native
from irqlab.contract.regs import QOM
from irqlab.testing.plugin import start_uio_generic_guest
from irqlab.vm.guest import Guest, GuestConfig

EVENTS = 200
PERIOD_NS = 3_000_000
RECORD_PATHS = ("read", "nonblock", "poll", "select", "epoll-lt", "epoll-et", "sigio", "setsig")


def check_burst(r: dict[str, Any], *, full_breakdown: bool) -> None:
    assert r["problems"] == [], r["problems"]
    assert r["latency_ns"]["n"] == EVENTS, r["latency_ns"]
    c = r["counters"]
    assert c["raised"] == EVENTS and c["acked"] == EVENTS == r["native"]["acks"], (c, r["native"])
    assert c["ack_invalid"] == 0 and r["native"]["ack_errors"] == 0, (c, r["native"])
    assert r["native"]["exit"] == "count" and r["pending_at_end"] == 0, r["native"]
    bd = r["breakdown"]
    assert bd["clock"] is not None and bd["inconsistent_events"] == 0, bd
    assert 0 < bd["clock"]["error_ns"] < 1_000_000, bd["clock"]
    st = bd["stages"]
    assert st["total"]["n"] == EVENTS
    if full_breakdown:
        # events with their own wake-up have all four stages
        for k in ("raise_to_isr", "isr_to_wake", "wake_to_user", "user_to_ack"):
            assert st[k]["n"] == EVENTS - bd["early_reads"], (k, bd)
    assert "user_to_ack" in st, st


@pytest.mark.parametrize("path", [*RECORD_PATHS, "eventfd"])
def test_native_record_path_sees_every_event_once(irqlab_guest: Guest, path: str) -> None:
    r = native.measure(irqlab_guest, path, events=EVENTS, period_ns=PERIOD_NS)
    check_burst(r, full_breakdown=True)


def test_native_counting_file(irqlab_guest: Guest) -> None:
    r = native.measure(irqlab_guest, "count", events=EVENTS, period_ns=PERIOD_NS)
    check_burst(r, full_breakdown=False)


def test_native_gpio_cdev(irqlab_guest: Guest) -> None:
    r = native.measure(irqlab_guest, "gpio-cdev", events=EVENTS, period_ns=PERIOD_NS)
    check_burst(r, full_breakdown=False)
    bd = r["breakdown"]
    assert bd["stages"]["gpiolib_to_user"]["n"] == EVENTS - bd["early_reads"], bd
    assert irqlab_guest.injector.burst_line() is None


@pytest.mark.irqlab(module={"uio": 1})
def test_native_uio_mode(irqlab_fresh_guest: Guest) -> None:
    r = native.measure(irqlab_fresh_guest, "uio", events=EVENTS, period_ns=PERIOD_NS)
    check_burst(r, full_breakdown=False)
    bd = r["breakdown"]
    assert bd["stages"]["raise_to_user"]["n"] == EVENTS - bd["early_reads"], bd


@pytest.fixture(scope="module")
def intx_guest() -> Generator[Guest, None, None]:
    config = GuestConfig(name="native-intx", device_props={QOM.PROP_IRQ_MODE: "intx"})
    with start_uio_generic_guest(config) as g:
        yield g


def test_native_uio_pci_generic(intx_guest: Guest) -> None:
    r = native.measure(intx_guest, "uio-generic", events=EVENTS, period_ns=PERIOD_NS)
    check_burst(r, full_breakdown=False)


def test_breakdown_stages_add_up_per_event(irqlab_guest: Guest) -> None:
    """Per event: the stages sum to the device's raise -> ACK within the stated error,
    and each cross-clock point is in order (the check the bench runs too)."""
    got = native.run(irqlab_guest, "read", events=EVENTS, period_ns=PERIOD_NS)
    rows = native.rows_of(got["result"])
    clock = native.clock_of(got["result"])
    assert clock is not None and len(rows) == EVENTS
    for row in rows:
        st = breakdown.stages(row, clock)
        assert breakdown.check(row, clock) == [], (row, st, clock.as_json())
        if "early_read" in st:
            continue
        parts = sum(v for k, v in st.items() if k != "total")
        assert abs(parts - st["total"]) <= clock.error_ns, (row, st)
        # the driver's own device clock read comes after the handler entry
        assert clock.to_dev(row["isr_ns"]) <= row["isr_dev_ns"] + clock.error_ns, row
