"""The agent's requests end, its failures leave nothing open, its counters say what
happened (the review of the guest agent): the real agent process on the host with
FIFOs standing in for /dev/irqlabN, and parts of it in this process."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_fifo import Fifo, fake_spec_agent  # same directory (rootdir-relative import)
from test_agent_protocol import fake_abi, rec  # same directory

from irqlab.vm.agent_client import AgentClient
from irqlab_agent.acks import SeqAcks
from irqlab_agent.paths import PathOptions
from irqlab_agent.protocol import ProtocolError, parse_request
from irqlab_agent.uio import UioPath

QUICK = 10.0  # seconds a request that must not block gets before the test fails


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[AgentClient]:
    yield from fake_spec_agent(tmp_path)


def _fds(pid: int) -> list[str]:
    out = []
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.append(os.readlink(f"/proc/{pid}/fd/{name}"))
        except FileNotFoundError:  # the listing's own fd
            continue
    return sorted(out)


# -- a failed arm closes what it opened ------------------------------------------------


def test_failed_arms_leave_no_file_open(agent: AgentClient, fifo: Fifo, tmp_path: Path) -> None:
    pid = agent.ping()["pid"]
    agent.arm("poll", dev=fifo.path)  # a path armed and disarmed: the baseline has its fds
    agent.disarm()
    before = _fds(pid)
    for i in range(50):  # open() fails
        r = agent.request("arm", path="read", dev=str(tmp_path / "none"), name=f"x{i}", check=False)
        assert r["ok"] is False and r["errno"] == "ENOENT", r
    for i in range(10):  # setup() fails (SET_EVENTFD on a FIFO: ENOTTY)
        r = agent.request("arm", path="eventfd", dev=fifo.path, name=f"e{i}", check=False)
        assert r["ok"] is False and r["errno"] == "ENOTTY", r
    for i in range(10):  # the uio path's own open() fails with its option missing
        r = agent.request("arm", path="uio", name=f"u{i}", check=False)
        assert r["ok"] is False, r
    assert _fds(pid) == before
    agent.arm("read", dev=fifo.path)  # and a good arm still works
    fifo.push(rec(1))
    agent.expect(path="read", seq=1)


def test_a_bad_path_option_is_the_requests_error_not_an_internal_one(agent: AgentClient) -> None:
    r = agent.request("arm", path="uio", check=False)
    assert r["ok"] is False and "'regs'" in r["error"], r
    assert "internal error" not in r["error"], r


# -- a refused ACK is an ack_error -----------------------------------------------------


def test_count_path_counts_refused_acks_as_errors(agent: AgentClient, tmp_path: Path) -> None:
    cnt, ack = Fifo(tmp_path / "count"), Fifo(tmp_path / "ack")  # a FIFO's ioctl: ENOTTY
    agent.arm("count", dev=cnt.path, ack_dev=ack.path, ack_first_seq=100)
    os.write(cnt.fd, struct.pack("=I", 3))
    assert agent.expect(path="count")["ack_latency_ns"] == [None, None, None]
    st = agent.disarm("count")["count"]
    assert (st["counted"], st["acks"], st["ack_errors"]) == (3, 0, 3)


def test_uio_path_counts_refused_acks_as_errors() -> None:
    sent: list[dict[str, Any]] = []
    path = UioPath("uio", fake_abi(), PathOptions("/dev/uio0"), sent.append)
    path.last, path.gate = 0, False
    path.wake_reads = lambda size: iter([(struct.pack("=I", 2), 123)])  # type: ignore[method-assign]
    path.enable = lambda: None  # type: ignore[method-assign]
    path.handle = lambda: [  # type: ignore[method-assign]
        {"seq": 7, "source": 0, "value": 1, "ack_latency_ns": 500},
        {"seq": 8, "source": 0, "value": 2, "ack_latency_ns": None},  # the device refused it
    ]
    path.loop()
    assert sent[0]["ack_latency_ns"] == [500, None]
    assert (path.stats.events, path.stats.acks, path.stats.ack_errors) == (2, 1, 1)
    path.close_fds()


def test_write_acks_cut_short_go_on_with_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    from irqlab_agent import acks as acks_mod

    calls: list[int] = []

    def short_write(fd: int, data: bytes) -> int:  # a signal after the first seq
        calls.append(len(data))
        return 4 if len(calls) == 1 else len(data)

    monkeypatch.setattr(acks_mod.os, "write", short_write)
    a = SeqAcks(fake_abi(), "write", 99)
    a.ack([1, 2, 3])
    assert calls == [12, 8]
    assert (a.acks, a.errors) == (3, 0)


# -- numbers are finite and bounded ----------------------------------------------------


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity", "1e400", "1" + "0" * 400])
def test_get_float_refuses_what_is_not_a_finite_number(text: str) -> None:
    r = parse_request(f'{{"id": 1, "op": "x", "f": {text}}}')
    with pytest.raises(ProtocolError, match="finite number"):
        r.get_float("f", 1.0, lo=-1e9)


def test_get_float_has_an_upper_bound() -> None:
    r = parse_request(b'{"id": 1, "op": "x", "f": 5.5}')
    assert r.get_float("f", 1.0, hi=5.5) == 5.5
    with pytest.raises(ProtocolError, match=r"in \[0.0, 5.0\], not 5.5"):
        r.get_float("f", 1.0, hi=5.0)


def test_a_nan_summary_interval_is_refused(agent: AgentClient, fifo: Fifo) -> None:
    r = agent.request(
        "arm", path="read", dev=fifo.path, summarize=[1], summary_interval_ms=float("nan"),
        check=False,
    )  # fmt: skip
    assert r["ok"] is False and "summary_interval_ms" in r["error"], r
    assert agent.stats()["paths"] == {}
