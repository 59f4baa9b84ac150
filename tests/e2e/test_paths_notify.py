"""Each notification path end to end: inject over QMP, the agent in the guest reports."""

from __future__ import annotations

import select
import signal
import time
from typing import Any

import pytest
from agent_paths import OTHER_PATHS, RECORD_PATHS  # same directory (rootdir-relative import)

from irqlab.contract.regs import REGS
from irqlab.vm.agent_client import AgentClient
from irqlab.vm.guest import Guest

TIMEOUT = 60.0


def check_path_specifics(path: str, ev: dict[str, Any], armed: dict[str, Any]) -> None:
    if path in ("poll", "select", "epoll-lt", "epoll-et"):
        assert ev["revents"] & select.POLLIN, ev
    elif path == "sigio":
        assert ev["signal"]["signo"] == signal.SIGIO, ev
    elif path == "setsig":
        sig = ev["signal"]
        assert sig["signo"] == armed["signo"] and armed["signo"] >= signal.SIGRTMIN, ev
        assert sig["fd"] == armed["fd"], f"si_fd {sig['fd']} != agent fd {armed['fd']}"
        assert sig["band"] & select.POLLIN, ev
    elif path == "eventfd":
        assert ev["eventfd_count"] >= 1, ev
    elif path == "nonblock":
        assert ev["eagain_before"] >= 1, ev


def wait_eagain(agent: AgentClient, name: str, timeout: float = TIMEOUT) -> None:
    """Until the O_NONBLOCK path has seen the empty file at least once."""
    deadline = time.monotonic() + timeout
    while agent.stats()["paths"][name]["eagain"] < 1:
        assert time.monotonic() < deadline, "the nonblock path never polled"
        time.sleep(0.005)


def test_hello_lists_exactly_the_paths_the_tests_cover(irqlab_agent: AgentClient) -> None:
    """The agent's hello names its paths (the host imports no agent class): the tests here
    cover each of them, and only the record paths are summarizable."""
    paths = irqlab_agent.hello["paths"]
    assert sorted(paths) == sorted([*RECORD_PATHS, *OTHER_PATHS])
    assert {p for p, info in paths.items() if info["summarizable"]} == set(RECORD_PATHS)


@pytest.mark.parametrize("path", RECORD_PATHS)
def test_fifo_events_arrive_in_order_acked(
    irqlab_guest: Guest, irqlab_agent: AgentClient, irqlab_device: Any, path: str
) -> None:
    armed = irqlab_agent.arm(path, dev=irqlab_guest.dev)
    if path == "nonblock":
        wait_eagain(irqlab_agent, path)
    seq0 = irqlab_device.next_seq()
    words = [0xC0FFEE, 0, 0xFFFFFFFF]
    irqlab_device.push(*words)
    evs = [irqlab_agent.expect(path=path, seq=seq0 + i, timeout=TIMEOUT) for i in range(len(words))]
    for i, (ev, w) in enumerate(zip(evs, words, strict=True)):
        assert ev["source"] == REGS.SRC_FIFO, ev
        assert ev["line"] == 0 and ev["value"] == w, ev
        assert ev["flags"] == 0 and ev["lost"] == 0, ev
        assert ev["ack_latency_ns"] is not None and ev["ack_latency_ns"] > 0, ev
        assert ev["raise_ns"] > 0 and ev["wake_ns"] > 0, ev
        if i == 0:
            check_path_specifics(path, ev, armed)
    c = irqlab_device.counters()
    assert c.raised == 3 and c.acked == 3 and c.dropped == 0, c
    st = irqlab_agent.disarm(path)[path]
    assert st["events"] == 3 and st["acks"] == 3 and st["ack_errors"] == 0, st


def test_nonblock_read_gives_eagain_then_data(
    irqlab_guest: Guest, irqlab_agent: AgentClient, irqlab_device: Any, irqlab_wait_stats: Any
) -> None:
    irqlab_agent.request("open", name="h", dev=irqlab_guest.dev, nonblock=True)
    assert irqlab_agent.request("read", name="h")["errno"] == "EAGAIN"
    seq = irqlab_device.next_seq()
    irqlab_device.push(42)
    irqlab_wait_stats("h", lambda st: st["queued"] >= 1)
    r = irqlab_agent.request("read", name="h")
    assert r["errno"] is None
    assert [(e["seq"], e["value"]) for e in r["events"]] == [(seq, 42)]
    assert irqlab_agent.request("read", name="h")["errno"] == "EAGAIN"


def test_nonblock_path_reports_eagain_count(irqlab_guest: Guest, irqlab_agent: AgentClient) -> None:
    irqlab_agent.arm("nonblock", dev=irqlab_guest.dev, max_polls=20, interval_ms=1)
    done = irqlab_agent.expect(type="path_done", path="nonblock", timeout=TIMEOUT)
    assert done["reason"] == "max_polls" and done["eagain"] == 20


def test_counting_file_counts_while_nobody_reads(
    irqlab_guest: Guest, irqlab_agent: AgentClient, irqlab_device: Any, irqlab_wait_stats: Any
) -> None:
    irqlab_agent.request("open", name="cnt", dev=irqlab_guest.count_dev, nonblock=True, rdwr=False)
    irqlab_agent.request("open", name="sync", dev=irqlab_guest.dev, nonblock=True)
    assert irqlab_agent.request("read", name="cnt", **{"as": "count"})["errno"] == "EAGAIN"
    k = 7
    irqlab_device.push(*range(k))
    # Files and counters are fed in the same locked step: once the event file has k
    # records, the counting file has counted k.
    irqlab_wait_stats("sync", lambda st: st["delivered"] >= k)
    r = irqlab_agent.request("read", name="cnt", **{"as": "count"})
    assert r["errno"] is None and r["count"] == k
    assert irqlab_agent.request("read", name="cnt", **{"as": "count"})["errno"] == "EAGAIN"


@pytest.mark.parametrize("given", [True, False], ids=["dev-given", "dev-default"])
def test_count_path_blocking_read(
    irqlab_guest: Guest, irqlab_agent: AgentClient, irqlab_device: Any, given: bool
) -> None:
    # arm("count") on the default device, /dev/irqlab0 itself, got EINVAL
    irqlab_agent.arm("count", **({"dev": irqlab_guest.count_dev} if given else {}))
    irqlab_agent.request("wait_blocked", name="count")
    irqlab_device.push(1)
    assert irqlab_agent.expect(path="count", timeout=TIMEOUT)["count"] == 1
    irqlab_device.push(2, 3, 4)
    total = 0
    while total < 3:
        total += irqlab_agent.expect(path="count", timeout=TIMEOUT)["count"]
    assert total == 3


def test_poll_and_epoll_report_only_pollin_family(
    irqlab_guest: Guest, irqlab_agent: AgentClient, irqlab_device: Any
) -> None:
    irqlab_agent.arm("poll", dev=irqlab_guest.dev)
    seq = irqlab_device.next_seq()
    irqlab_device.push(5)
    ev = irqlab_agent.expect(path="poll", seq=seq, timeout=TIMEOUT)
    assert ev["revents"] & (select.POLLIN | select.POLLRDNORM) == select.POLLIN | select.POLLRDNORM
    assert not ev["revents"] & (select.POLLERR | select.POLLHUP)
