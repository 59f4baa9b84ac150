"""The bench's gpio-cdev measurements on the session guest: the device's generator
toggles a GPIO line (``burst-line``), the agent reads the edges through the GPIO v2
uapi and ACKs each as the device seq its ``seqno`` stands for.
"""

from __future__ import annotations

import pytest

from irqlab.bench import gpio, latency, storm
from irqlab.vm.guest import Guest

EVENTS = 300
PERIOD_NS = 3_000_000


def test_latency_every_edge_has_an_exact_device_ack(irqlab_guest: Guest) -> None:
    r = latency.measure(irqlab_guest, gpio.PATH, events=EVENTS, period_ns=PERIOD_NS)
    assert r["problems"] == [], r["problems"]
    s = r["latency_ns"]
    assert s["n"] == EVENTS and s["exact"] is True, s
    assert 0 < s["min"] <= s["p50"] <= s["p99"] <= s["max"] < 10_000_000_000, s
    c = r["counters"]
    assert c["raised"] == EVENTS and c["acked"] == EVENTS, c
    assert c["ack_invalid"] == 0 and c["dropped"] == 0, c
    hist = r["device_histogram"]
    assert hist["count"] == EVENTS and hist["problems"] == [], hist
    assert r["agent"]["acks"] == EVENTS and r["agent"]["events"] == EVENTS, r["agent"]
    assert r["breakdown_p50_ns"]["gpiolib_to_user"] > 0
    # The generator is back to BURST events for whoever uses it next.
    assert irqlab_guest.injector.burst_line() is None


def test_storm_counts_add_up(irqlab_guest: Guest) -> None:
    rate, seconds = 1_000, 0.2
    r = storm.measure(irqlab_guest, gpio.PATH, rate=rate, duration_s=seconds)
    n = round(rate * seconds)
    assert r["raised"] == n and r["end"] == "accounted", r
    assert r["observed"] + r["lost"] == r["raised"], r
    assert r["unexplained"] == 0, r
    assert r["duplicates"] == 0, r
    assert r["delivered"] + r["coalesced"] >= 1, r
    # storm mode: summaries, every observed edge ACKed by one write(2) per read buffer
    assert r["agent"]["ack"] == storm.STORM_ACK and r["agent"]["summaries"] >= 1, r
    assert r["agent"]["acks"] == r["observed"] == r["device_acked"], r
    assert r["device_ack_invalid"] == 0, r
    assert irqlab_guest.injector.burst_line() is None


def test_storm_losses_are_all_explained(
    irqlab_guest: Guest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tiny kernel line buffer at 100k edges/s: the agent cannot keep up, the kernel
    drops the oldest events (seqno gaps), and every lost edge is still accounted for."""
    monkeypatch.setattr(gpio, "BUFFER", 4)
    r = storm.measure(irqlab_guest, gpio.PATH, rate=100_000, duration_s=0.05)
    assert r["raised"] == 5_000 and r["end"] == "accounted", r
    assert r["lost"] > 0, f"no loss with a 4-event buffer at 100k/s: the test proves nothing {r}"
    assert r["lost"] == r["device_dropped"] + r["driver_lost"] + r["kernel_buffer_lost"], r
    assert r["unexplained"] == 0 and not r["lossless"], r
