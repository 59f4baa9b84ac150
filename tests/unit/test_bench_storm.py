"""The storm accounting of the record paths from agent summaries (no VM: a scripted
agent and device stand in)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

import pytest

from irqlab.bench import storm
from irqlab.contract.regs import REGS
from irqlab.vm.agent_client import AgentTimeout
from irqlab.vm.qmp.stats import Counters

SEQ0 = 101


def counters(next_seq: int = SEQ0) -> Counters:
    """The device's counters after a reset: all zero."""
    return Counters(**{**{f.name: 0 for f in fields(Counters)}, "next_seq": next_seq})


# What an agent's hello lists (a part of it).
AGENT_PATHS = {
    "read": {"summarizable": True},
    "epoll-et": {"summarizable": True},
    "count": {"summarizable": False},
    "uio": {"summarizable": False},
}


@dataclass
class FakeGuest:
    """Device + agent: a burst of *n* whose summaries the test scripts; each pushed marker
    is delivered unless listed in *drop_markers* (then the next record carries the loss)."""

    summaries: list[dict[str, Any]]
    n: int
    drop_markers: int = 0
    dev: str = "/dev/irqlab0"
    count_dev: str = "/dev/irqlab0-count"
    armed: dict[str, Any] = field(default_factory=dict)
    queue: list[dict[str, Any]] = field(default_factory=list)
    c: Counters = field(default_factory=counters)
    pushed: int = 0
    stats_calls: int = 0
    hello: dict[str, Any] = field(default_factory=lambda: {"paths": AGENT_PATHS})

    @property
    def agent(self) -> FakeGuest:
        return self

    @property
    def injector(self) -> FakeGuest:
        return self

    # -- agent ---------------------------------------------------------------------
    def reset(self) -> dict[str, Any]:
        return {}

    def drain_events(self) -> list[dict[str, Any]]:
        return []

    def arm(self, path: str, **opts: Any) -> dict[str, Any]:
        self.armed = {"path": path, **opts}
        return {"name": path}

    def disarm(self, name: str | None = None) -> dict[str, Any]:
        return {}

    def expect(self, *, path: str, type: Any, timeout: float) -> dict[str, Any]:
        if not self.queue:
            raise AgentTimeout("nothing queued")
        msg = self.queue.pop(0)
        assert msg["path"] == path and msg["type"] in type
        return msg

    def pending(self) -> list[dict[str, Any]]:
        return []

    def stats(self, dev: str | None = None) -> dict[str, Any]:
        self.stats_calls += 1  # the driver's counters before and after: 0 and 100 events
        return {"driver": {k: 100 * (self.stats_calls - 1) for k in storm.DRIVER_STATS}}

    # -- device ---------------------------------------------------------------------
    def counters(self) -> Counters:
        return self.c

    def reset_counters(self) -> None:
        self.c = counters(self.c.next_seq)

    def burst(self, n: int, period: int, line: int | None = None) -> None:  # as Injector.burst
        assert n == self.n and line is None  # record-path storms use the BURST source
        self.c = replace(self.c, raised=n, delivered=n, next_seq=self.c.next_seq + n)
        self.queue += self.summaries

    def burst_remaining(self) -> int:
        return 0

    def push(self, word: int) -> None:
        self.pushed += 1
        seq = self.c.next_seq
        self.c = replace(self.c, next_seq=seq + 1)
        if self.pushed <= self.drop_markers:
            return
        lost = self.drop_markers if self.pushed == self.drop_markers + 1 else 0
        self.queue.append({"type": "event", "path": "read", "seq": seq,
                           "source": REGS.SRC_FIFO, "value": word, "lost": lost})  # fmt: skip
        self.c = replace(self.c, acked=sum(s["acks"] for s in self.summaries) + 1)


def summary(first: int, n: int, *, in_order: int | None = None, lost: int = 0) -> dict[str, Any]:
    io = n if in_order is None else in_order
    src = {"records": n, "first": first, "last": first + n - 1, "in_order": io,
           "out_of_order": n - io, "lost": lost, "flags": {}}  # fmt: skip
    return {"type": "summary", "path": "read", "sources": {str(REGS.SRC_BURST): src},
            "records": n, "lost": lost, "acks": n, "ack_errors": 0, "reads": 1, "wakeups": 1,
            "ack_latency_max_ns": None}  # fmt: skip


def run(g: FakeGuest, n: int) -> dict[str, Any]:
    return storm.measure(g, "read", rate=n, duration_s=1.0, idle=5.0)


def test_counts_from_summaries_with_ring_losses() -> None:
    # 1000 raised: 600 seen, then the ring lost 150 (reported on the next record), 250 seen.
    g = FakeGuest([summary(SEQ0, 600), summary(SEQ0 + 750, 250, lost=150)], n=1000)
    r = run(g, 1000)
    assert g.armed["summarize"] == [REGS.SRC_BURST] and g.armed["ack"] == storm.STORM_ACK
    assert (r["raised"], r["observed"], r["lost"]) == (1000, 850, 150)
    assert (r["reported_lost"], r["device_dropped"], r["unexplained"]) == (150, 0, 0)
    assert r["duplicates"] == 0 and r["seq_range"] == [SEQ0, SEQ0 + 999]
    assert r["marker_seen"] and r["markers"] == 1 and r["lossless"] is False
    assert r["agent"]["acks"] == 850 and r["agent"]["summaries"] == 2
    assert r["device_acked"] == 851
    assert r["driver"] == dict.fromkeys(storm.DRIVER_STATS, 100)


def test_dropped_markers_are_not_burst_losses() -> None:
    g = FakeGuest([summary(SEQ0, 500)], n=500, drop_markers=2)
    r = run(g, 500)
    assert r["markers"] == 3 and r["marker_seen"]
    assert (r["observed"], r["lost"], r["reported_lost"], r["unexplained"]) == (500, 0, 0, 0)
    assert r["lossless"] is True


def test_duplicates_and_stray_seqs_are_not_observed() -> None:
    g = FakeGuest([summary(SEQ0, 300), summary(SEQ0 + 200, 300, in_order=200)], n=500)
    r = run(g, 500)
    assert (r["observed"], r["duplicates"], r["lost"]) == (500, 100, 0)
    stray = FakeGuest([summary(SEQ0 - 5, 500)], n=500)
    r = run(stray, 500)
    assert r["problems"] and r["lossless"] is False


@pytest.mark.parametrize("path", ["count", "uio", "teleport"])
def test_other_paths_are_not_summarized(path: str) -> None:
    assert storm.storm_arm_opts(AGENT_PATHS, path) == {}
    opts = storm.storm_arm_opts(AGENT_PATHS, "epoll-et", "none")
    assert opts == {"summarize": [REGS.SRC_BURST], "ack": "none"}


def test_cli_storm_options() -> None:
    import argparse

    from irqlab.bench import runner
    from irqlab.cli import bench as cli

    p = argparse.ArgumentParser()
    cli.add_bench_parser(p.add_subparsers())
    c = cli.config_from_args(
        p.parse_args(["bench", "--storm-ack", "none", "--storm-ring-size", "4096"])
    )
    assert (c.storm_ack, c.storm_ring_size) == ("none", 4096)
    d = cli.config_from_args(p.parse_args(["bench"]))
    assert (d.storm_ack, d.storm_ring_size) == (storm.STORM_ACK, runner.STORM_RING_SIZE)
    assert (
        cli.config_from_args(p.parse_args(["bench", "--storm-ring-size", "0"])).storm_ring_size == 0
    )
    with pytest.raises(SystemExit):
        p.parse_args(["bench", "--storm-ack", "sometimes"])


@dataclass
class CountGuest(FakeGuest):
    """The counting file: the burst's events less *dropped* at the device in one count,
    then each marker as a count of 1 (the first *drop_markers* dropped at the device)."""

    dropped: int = 0

    def burst(self, n: int, period: int, line: int | None = None) -> None:
        self.c = replace(self.c, raised=n, dropped=self.dropped, next_seq=self.c.next_seq + n)
        self.queue.append({"type": "event", "path": "count", "count": n - self.dropped})

    def push(self, word: int) -> None:
        self.pushed += 1
        self.c = replace(self.c, raised=self.c.raised + 1, next_seq=self.c.next_seq + 1)
        if self.pushed <= self.drop_markers:  # the device queue was still full
            self.c = replace(self.c, dropped=self.c.dropped + 1)
        else:
            self.queue.append({"type": "event", "path": "count", "count": 1})


def test_count_storm_with_device_drops_ends_at_its_marker() -> None:
    """With device drops the count never reached raised + 1: the storm waited out the
    idle timeout and counted the marker as a burst event (unexplained -1)."""
    g = CountGuest([], n=1000, dropped=40)
    r = storm.measure(g, "count", rate=1000, duration_s=1.0, idle=5.0)
    assert (r["end"], r["marker_seen"]) == ("until", True)
    assert (r["raised"], r["observed"], r["lost"], r["device_dropped"]) == (1000, 960, 40, 40)
    assert r["unexplained"] == 0 and r["lossless"] is False
    from irqlab.bench import report

    t = report.storm_table({"storm": {"paths": {"count": [r]}}})
    assert t is not None
    (row,) = t[1]
    assert dict(zip(t[0], row, strict=True))["unexplained"] == "0"
    assert dict(zip(t[0], row, strict=True))["end"] == "marker"


def test_count_storm_pushes_another_marker_when_the_device_dropped_one() -> None:
    g = CountGuest([], n=1000, dropped=40, drop_markers=1)
    r = storm.measure(g, "count", rate=1000, duration_s=1.0, idle=5.0)
    assert (r["end"], r["markers"], r["counted"]) == ("until", 2, 961)
    assert (r["observed"], r["lost"], r["unexplained"]) == (960, 40, 0)
