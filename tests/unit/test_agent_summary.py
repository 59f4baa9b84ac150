"""Storm (summary) mode and batched ACKs of the agent, with FIFOs standing in for the device.

The agent runs with the real record layout (parsed from the uapi header); records
are packed with it.  A FIFO has no ioctls (ACK ioctls fail with ENOTTY), so the
batched write() ACKs go to a second FIFO (``ack_dev``) where the test reads them.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_fifo import Fifo  # same directory (rootdir-relative import)

from irqlab.contract import uapi
from irqlab.contract.regs import REGS
from irqlab.testing.helpers import wait_until
from irqlab.vm.agent_client import AgentClient, AgentError
from irqlab_agent.abi import Abi

ABI = Abi(uapi.abi_spec(uapi.load(uapi.header_path())))
BURST, FIFO = REGS.SRC_BURST, REGS.SRC_FIFO
NEVER_MS = 3_600_000.0  # a summary interval no test reaches: only records/disarm flush
_, SEQ_ST = ABI.record.field_struct("seq")


def rec(seq: int, source: int = BURST, *, value: int = 0, lost: int = 0, flags: int = 0) -> bytes:
    return ABI.record.pack(
        {"seq": seq, "source": source, "value": value, "lost": lost, "flags": flags}
    )


def burst(first: int, n: int) -> list[bytes]:
    return [rec(s, value=s - first) for s in range(first, first + n)]


@pytest.fixture
def ack_fifo(tmp_path: Path) -> Iterator[Fifo]:
    f = Fifo(tmp_path / "ack")
    yield f
    os.close(f.fd)


def until_event(agent: AgentClient, path: str, timeout: float = 20.0) -> list[dict[str, Any]]:
    """The path's messages in arrival order, up to and including its next event."""
    out: list[dict[str, Any]] = []
    while not out or out[-1].get("type") != "event":
        msg = agent.next_event(timeout)
        assert msg.get("path") == path and msg.get("type") in ("summary", "event"), msg
        out.append(msg)
    return out


def totals(summaries: list[dict[str, Any]], source: int) -> dict[str, Any]:
    per = [s["sources"][str(source)] for s in summaries if str(source) in s["sources"]]
    return {
        "records": sum(p["records"] for p in per),
        "in_order": sum(p["in_order"] for p in per),
        "out_of_order": sum(p["out_of_order"] for p in per),
        "lost": sum(p["lost"] for p in per),
        "first": per[0]["first"] if per else None,
        "last": per[-1]["last"] if per else None,
    }


def acked_seqs(f: Fifo) -> list[int]:
    try:
        data = os.read(f.fd, 1 << 16)
    except BlockingIOError:
        return []
    return [s for (s,) in struct.iter_unpack(SEQ_ST.format, data)]


@pytest.mark.parametrize("path", ["read", "poll", "epoll-et", "sigio", "nonblock"])
def test_summary_counts_and_flushes_before_another_source(
    agent: AgentClient, fifo: Fifo, path: str
) -> None:
    armed = agent.arm(
        path, dev=fifo.path, summarize=[BURST], ack="none", summary_interval_ms=NEVER_MS
    )
    assert armed["summarize"] == [BURST] and armed["ack"] == "none"
    recs = burst(1, 300)
    recs[100] = rec(101, value=100, lost=7, flags=ABI.flags["OVERFLOW"])
    for i in range(0, 300, 50):  # several reads
        fifo.push(*recs[i : i + 50])
    fifo.push(rec(301, FIFO, value=0x5EA1_0000))
    msgs = until_event(agent, path)
    *summaries, marker = msgs
    assert marker["seq"] == 301 and marker["source"] == FIFO and marker["value"] == 0x5EA1_0000
    assert summaries and all(s["type"] == "summary" for s in summaries)
    t = totals(summaries, BURST)
    assert t == {"records": 300, "in_order": 300, "out_of_order": 0, "lost": 7,
                 "first": 1, "last": 300}  # fmt: skip
    assert sum(s["records"] for s in summaries) == 300
    assert sum(s["lost"] for s in summaries) == 7
    assert sum(s["flags"].get("OVERFLOW", 0) for s in summaries) == 1
    assert all(s["acks"] == 0 and s["ack"] == "none" for s in summaries)
    st = agent.disarm(path)[path]
    assert st["events"] == 301 and st["summaries"] == len(summaries) and st["last_seq"] == 301
    assert st["flags"] == {"OVERFLOW": 1}
    assert not [m for m in agent.pending() if m.get("type") == "summary"]  # nothing left over


def test_out_of_order_and_duplicate_records(agent: AgentClient, fifo: Fifo) -> None:
    agent.arm("read", dev=fifo.path, summarize=[BURST], ack="none", summary_interval_ms=NEVER_MS)
    fifo.push(*burst(1, 10))
    fifo.push(rec(5), rec(6), rec(11), rec(3))  # 5, 6 again; 11 new; 3 again
    fifo.push(rec(12, FIFO))
    *summaries, _ = until_event(agent, "read")
    t = totals(summaries, BURST)
    assert (t["records"], t["in_order"], t["out_of_order"]) == (14, 11, 3)
    assert (t["first"], t["last"]) == (1, 3)  # arrival order
    # The highest seq seen is kept across summaries: a later repeat is still out of order.
    fifo.push(rec(7), rec(13))
    fifo.push(rec(14, FIFO))
    *later, _ = until_event(agent, "read")
    t = totals(later, BURST)
    assert (t["in_order"], t["out_of_order"]) == (1, 1)


def test_summary_every_interval_and_at_disarm(agent: AgentClient, fifo: Fifo) -> None:
    agent.arm("poll", dev=fifo.path, summarize=[BURST], ack="none", summary_interval_ms=20)
    fifo.push(*burst(1, 40))
    got = 0
    while got < 40:  # no other source comes: only the flusher sends these
        s = agent.expect(type="summary", path="poll", timeout=20)
        got += s["records"]
    assert got == 40
    agent.disarm("poll")
    agent.arm(
        "epoll-lt", dev=fifo.path, summarize=[BURST], ack="none", summary_interval_ms=NEVER_MS
    )
    fifo.push(*burst(41, 25))
    wait_until(
        lambda: agent.stats()["paths"]["epoll-lt"]["events"], lambda n: n == 25, 20, "epoll-lt"
    )
    assert not [m for m in agent.pending() if m.get("type") == "summary"]
    agent.disarm("epoll-lt")  # its last counts arrive before the disarm answer
    (last,) = [m for m in agent.drain_events() if m.get("type") == "summary"]
    assert last["path"] == "epoll-lt" and last["records"] == 25
    assert last["sources"][str(BURST)]["first"] == 41


@pytest.mark.parametrize("path", ["read", "select", "setsig"])
def test_batch_ack_writes_the_seqs(
    agent: AgentClient, fifo: Fifo, ack_fifo: Fifo, path: str
) -> None:
    agent.arm(path, dev=fifo.path, summarize=[BURST], ack="write", ack_dev=ack_fifo.path)
    fifo.push(*burst(1, 200))
    fifo.push(rec(201, FIFO))
    *summaries, marker = until_event(agent, path)
    assert marker["ack_latency_ns"] is None
    # Every record was ACKed before the message that covers it was sent.
    assert acked_seqs(ack_fifo) == list(range(1, 202))
    assert sum(s["acks"] for s in summaries) == 200
    assert all(s["ack"] == "write" and s["ack_errors"] == 0 for s in summaries)
    st = agent.disarm(path)[path]
    assert st["acks"] == 201 and st["ack_errors"] == 0


def test_batch_ack_without_summary(agent: AgentClient, fifo: Fifo, ack_fifo: Fifo) -> None:
    agent.arm("read", dev=fifo.path, ack="write", ack_dev=ack_fifo.path)
    fifo.push(*burst(1, 30))
    evs = agent.events(30, path="read", timeout=20)
    assert [e["seq"] for e in evs] == list(range(1, 31))
    assert all(e["ack_latency_ns"] is None for e in evs)
    assert acked_seqs(ack_fifo) == list(range(1, 31))
    assert agent.disarm("read")["read"]["acks"] == 30


def test_ioctl_acks_in_summary_mode_are_counted(agent: AgentClient, fifo: Fifo) -> None:
    agent.arm("read", dev=fifo.path, summarize=[BURST], summary_interval_ms=NEVER_MS)
    fifo.push(*burst(1, 20))
    fifo.push(rec(21, FIFO))
    *summaries, marker = until_event(agent, "read")
    # A FIFO has no ACK ioctl: every ACK fails (ENOTTY), and is counted as such.
    assert [(s["ack"], s["acks"], s["ack_errors"]) for s in summaries] == [("ioctl", 0, 20)]
    assert marker["ack_latency_ns"] is None
    assert agent.disarm("read")["read"]["ack_errors"] == 21


def test_bad_summary_and_ack_options(agent: AgentClient, fifo: Fifo) -> None:
    with pytest.raises(AgentError, match="ack"):
        agent.arm("read", dev=fifo.path, ack="sometimes")
    with pytest.raises(AgentError, match="list of integers"):
        agent.arm("read", dev=fifo.path, summarize=2)
    with pytest.raises(AgentError, match="out of range"):
        agent.arm("read", dev=fifo.path, summarize=[256])
    with pytest.raises(AgentError, match="no records to summarize"):
        agent.arm("count", dev=fifo.path, summarize=[BURST])
    assert agent.stats()["paths"] == {}


def test_picker_unpacks_only_the_named_fields() -> None:
    picker = ABI.record.picker(["seq", "source", "flags", "lost"])
    assert picker.size == ABI.record_size
    data = rec(9, lost=4, flags=2, value=77) + rec(10, FIFO)
    assert list(picker.iter_unpack(data)) == [(9, BURST, 2, 4), (10, FIFO, 0, 0)]
    with pytest.raises(ValueError, match="record order"):
        ABI.record.picker(["source", "seq"])
    with pytest.raises(KeyError, match="nope"):
        ABI.record.picker(["seq", "nope"])
    lay = ABI.record.layout()
    assert lay["seq"] == (0, "I") and max(off for off, _ in lay.values()) < ABI.record_size
