"""The real agent process on the host, with FIFOs standing in for /dev/irqlabN.

A FIFO behaves like the driver where it matters to the agent: read blocks until
data (and returns EINTR on a signal without SA_RESTART), O_NONBLOCK gives EAGAIN,
poll/select/epoll report POLLIN, and FASYNC/F_SETSIG deliver SIGIO or a queued RT
signal with si_fd/si_band.  ioctls fail with ENOTTY, so ACKs are counted as errors.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_fifo import Fifo, fake_spec_agent  # same directory (rootdir-relative import)
from test_agent_protocol import rec  # same directory (rootdir-relative import)

from irqlab.vm.agent_client import AgentClient, AgentError

POLLIN = 0x1


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[AgentClient]:
    yield from fake_spec_agent(tmp_path)


def test_hello_and_ping(agent: AgentClient) -> None:
    assert agent.hello["abi"]["record_size"] == 20
    assert agent.ping()["pong"] is True


@pytest.mark.parametrize("path", ["read", "nonblock", "poll", "select", "epoll-lt", "epoll-et"])
def test_path_reports_each_record_in_order(agent: AgentClient, fifo: Fifo, path: str) -> None:
    r = agent.arm(path, dev=fifo.path)
    assert r["fd"] > 2 and r["name"] == path
    fifo.push(rec(1, 100))
    ev = agent.expect(path=path, seq=1, timeout=10)
    assert ev["value"] == 100 and ev["source"] == 1 and ev["raise_ns"] == 1000
    assert ev["wake_ns"] > 0
    assert ev["ack_latency_ns"] is None  # a FIFO has no ACK ioctl
    fifo.push(*(rec(s, s) for s in range(2, 202)))
    evs = agent.events(200, timeout=20, path=path)
    assert [e["seq"] for e in evs] == list(range(2, 202))
    stats = agent.disarm(path)[path]
    assert stats["events"] == 201
    assert stats["ack_errors"] == 201
    assert stats["last_seq"] == 201
    assert stats["alive"] is False


def test_nonblock_counts_eagain(agent: AgentClient, fifo: Fifo) -> None:
    agent.arm("nonblock", dev=fifo.path, max_polls=5, interval_ms=0.5)
    done = agent.expect(type="path_done", path="nonblock", timeout=10)
    assert done["reason"] == "max_polls" and done["eagain"] == 5


def test_readiness_paths_report_revents(agent: AgentClient, fifo: Fifo) -> None:
    agent.arm("poll", dev=fifo.path)
    fifo.push(rec(7))
    assert agent.expect(path="poll", seq=7)["revents"] & POLLIN


def test_flags_counted_in_stats(agent: AgentClient, fifo: Fifo) -> None:
    agent.arm("read", dev=fifo.path)
    fifo.push(rec(1), rec(3, flags=1))
    ev = agent.expect(path="read", seq=3)
    assert ev["flag_names"] == ["DROPPED"]
    stats = agent.stats()["paths"]["read"]
    assert stats["flags"] == {"DROPPED": 1}


def test_sigio_path(agent: AgentClient, fifo: Fifo) -> None:
    agent.arm("sigio", dev=fifo.path)
    fifo.push(rec(1, 5))
    ev = agent.expect(path="sigio", seq=1)
    assert ev["signal"]["signo"] == 29  # SIGIO
    fifo.push(*(rec(s) for s in range(2, 52)))
    assert [e["seq"] for e in agent.events(50, path="sigio")] == list(range(2, 52))


def test_setsig_delivers_si_fd_and_si_band(agent: AgentClient, fifo: Fifo) -> None:
    armed = agent.arm("setsig", dev=fifo.path, sig=2)
    fifo.push(rec(1))
    ev = agent.expect(path="setsig", seq=1)
    sig = ev["signal"]
    assert sig["signo"] == armed["signo"]
    assert sig["fd"] == armed["fd"]
    assert sig["band"] & POLLIN
    assert sig["code"] == 1  # POLL_IN
    assert agent.stats()["signals"]["orphans"] == 0


def test_two_async_paths_get_their_own_signals(agent: AgentClient, tmp_path: Path) -> None:
    a, b = Fifo(tmp_path / "a"), Fifo(tmp_path / "b")
    ra = agent.arm("setsig", name="A", dev=a.path, sig=0)
    rb = agent.arm("setsig", name="B", dev=b.path, sig=3)
    b.push(rec(20))
    a.push(rec(10))
    assert agent.expect(path="B", seq=20)["signal"]["fd"] == rb["fd"]
    assert agent.expect(path="A", seq=10)["signal"]["fd"] == ra["fd"]
    agent.disarm()


def test_count_path(agent: AgentClient, fifo: Fifo) -> None:
    agent.arm("count", dev=fifo.path)
    os.write(fifo.fd, struct.pack("=I", 17))
    assert agent.expect(path="count")["count"] == 17
    assert agent.disarm("count")["count"]["counted"] == 17


def test_count_path_ack_options_go_together(agent: AgentClient, fifo: Fifo) -> None:
    with pytest.raises(AgentError, match="ack_first_seq"):
        agent.arm("count", dev=fifo.path, ack_dev=fifo.path)
    with pytest.raises(AgentError, match="ack_dev"):
        agent.arm("count", dev=fifo.path, ack_first_seq=0, ack_dev=fifo.path)
    agent.arm("count", dev=fifo.path)  # nothing half-armed is left behind
    assert agent.disarm("count")["count"]["alive"] is False


def test_interrupt_blocked_read_gives_eintr(agent: AgentClient, fifo: Fifo) -> None:
    agent.arm("read", dev=fifo.path)
    r = agent.request("interrupt", name="read")
    assert r["restart"] is False
    ev = agent.expect(type="interrupted", path="read")
    assert ev["errno"] == "EINTR"
    fifo.push(rec(1))  # the path reads again after EINTR
    agent.expect(path="read", seq=1)
    assert agent.stats()["paths"]["read"]["eintr"] == 1


def test_interrupt_with_sa_restart_restarts_the_read(agent: AgentClient, fifo: Fifo) -> None:
    agent.arm("read", dev=fifo.path)
    assert agent.request("interrupt", name="read", restart=True)["restart"] is True
    # Wait (without sleeping) until the thread is back in read(2) after the signal.
    agent.request("interrupt", name="read", restart=True)
    fifo.push(rec(1))
    agent.expect(path="read", seq=1)
    assert agent.stats()["paths"]["read"]["eintr"] == 0
    assert not [e for e in agent.pending() if e.get("type") == "interrupted"]


def test_one_shot_handles(agent: AgentClient, fifo: Fifo) -> None:
    agent.request("open", name="h", dev=fifo.path, nonblock=True)
    assert agent.request("read", name="h")["errno"] == "EAGAIN"
    fifo.push(rec(4, 44))
    r = agent.request("read", name="h")
    assert r["errno"] is None and [e["seq"] for e in r["events"]] == [4]
    assert agent.request("ioctl", name="h", ioctl="ACK", arg={"seq": 4})["errno"] == "ENOTTY"
    agent.request("close", name="h")
    with pytest.raises(AgentError, match="no open handle"):
        agent.request("read", name="h")


def test_eventfd_on_a_non_driver_fails_cleanly(agent: AgentClient, fifo: Fifo) -> None:
    r = agent.request("arm", path="eventfd", dev=fifo.path, check=False)
    assert r["ok"] is False and r["errno"] == "ENOTTY"
    assert agent.stats()["paths"] == {}


def test_checks_report_errno_names(agent: AgentClient, fifo: Fifo) -> None:
    res = agent.request("check", dev=fifo.path)["results"]
    assert res["nonblock_empty_read"] == "EAGAIN"
    assert res["bad_ioctl"] == "ENOTTY"
    assert res["set_eventfd_not_eventfd"] == "ENOTTY"


def test_malformed_input_keeps_agent_running(agent: AgentClient, fifo: Fifo) -> None:
    agent.arm("poll", dev=fifo.path)
    for junk in (b"garbage", b"{}", b'{"id": 99999}', b'{"id": 5, "op": "arm", "path": 3}', b"[]"):
        agent.send_raw(junk)
    fifo.push(rec(1))
    agent.expect(path="poll", seq=1)
    assert agent.ping()["pong"] is True
    errs = [agent.response(99999)]
    assert errs[0]["ok"] is False


def test_duplicate_names_and_reset(agent: AgentClient, fifo: Fifo) -> None:
    agent.arm("read", dev=fifo.path)
    with pytest.raises(AgentError, match="already armed"):
        agent.arm("read", dev=fifo.path)
    agent.arm("read", name="read2", dev=fifo.path)
    agent.request("open", name="h", dev=fifo.path)
    stopped = agent.reset()["paths"]
    assert set(stopped) == {"read", "read2"}
    st = agent.stats()
    assert st["paths"] == {} and st["handles"] == []


def test_reset_says_whether_a_character_device_is_present(agent: AgentClient, fifo: Fifo) -> None:
    assert "present" not in agent.reset()
    assert agent.reset("/dev/null")["present"] is True
    assert agent.reset(str(fifo.path))["present"] is False  # a FIFO, not a char device
    assert agent.reset("/dev/irqlab-none")["present"] is False


def test_agent_survives_eof_and_client_reports_death(tmp_path: Path) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text("{not json")
    client = AgentClient.spawn_local(["--spec", str(spec)], logs=tmp_path)
    with pytest.raises(AgentError, match="cannot load the uapi ABI"):
        client.wait_hello(20)
    client.close()
    assert client.process is not None and client.process.returncode == 2


def test_a_torn_record_ends_its_async_path_with_an_error_and_spares_the_others(
    agent: AgentClient, tmp_path: Path
) -> None:
    """A read that is not a whole number of records (a driver bug) is reported as the
    path's error; the signal dispatcher that did the work keeps serving the other path."""
    a, b = Fifo(tmp_path / "a"), Fifo(tmp_path / "b")
    agent.arm("setsig", name="A", dev=a.path, sig=0)
    agent.arm("setsig", name="B", dev=b.path, sig=3)
    a.push(rec(1)[:7])
    err = agent.expect(type="path_error", path="A", timeout=10)
    assert "ValueError" in err["message"], err
    b.push(rec(5))
    assert agent.expect(path="B", seq=5)["signal"]["signo"] > 0
    agent.disarm()


def test_a_timed_out_expect_says_why_its_criteria_cannot_match(
    agent: AgentClient, fifo: Fifo
) -> None:
    """A misspelt field (valeu=) or a value of another type (seq="2") waited out the
    timeout and then showed the queue cut mid-message, keys sorted: seq and value lost."""
    from irqlab.vm.agent_client import AgentTimeout

    agent.arm("read", dev=fifo.path)
    fifo.push(rec(1, 100))
    agent.expect(path="read", seq=1, timeout=10)
    fifo.push(rec(2, 200))
    with pytest.raises(AgentTimeout) as e:
        agent.expect(path="read", valeu=200, timeout=1)
    msg = str(e.value)
    assert "no queued message of its type has a field 'valeu'" in msg, msg
    # the queued event in short: its telling fields first, whole
    pending = msg.split("pending: ", 1)[1]
    assert pending.startswith(
        '1 queued [{"type": "event", "path": "read", "seq": 2, "value": 200'
    ), pending
    with pytest.raises(AgentTimeout, match=r"seq='2' is a str; the queued messages' seq is int"):
        agent.expect(path="read", seq="2", timeout=0)  # type: ignore[arg-type]
    with pytest.raises(AgentTimeout) as e:
        agent.events(2, path="read", timeout=0.5)
    msg = str(e.value)
    assert "got 1 of 2 event messages on read (timeout 0.5s); last: {" in msg, msg
    assert "None" not in msg, msg
    agent.disarm("read")


def test_guest_now_from_the_heartbeats_is_never_late(agent: AgentClient) -> None:
    """A local agent shares this host's CLOCK_MONOTONIC: the estimate from its
    heartbeats' stamps lies at or before now, by the delivery's milliseconds."""
    import time

    agent.request("heartbeat", interval_ms=20)  # the hello's stamp is a first sample
    deadline = time.monotonic() + 10
    while agent.guest_now_ns() is None:
        assert time.monotonic() < deadline, "no heartbeat within 10 s"
        time.sleep(0.01)  # a poll, bounded by the deadline
    before = time.monotonic_ns()
    est = agent.guest_now_ns()
    after = time.monotonic_ns()
    assert est is not None
    assert before - 500_000_000 < est <= after, (before, est, after)
    agent.request("heartbeat", interval_ms=0)


def test_waiting_on_a_path_not_armed_says_so(agent: AgentClient, fifo: Fifo) -> None:
    """A forgotten arm, or expect(path="epoll") with "epoll-et" armed, waited out its
    timeout and said only "no message matching {...}; pending: 0 queued []"."""
    with pytest.raises(AgentError) as e:
        agent.expect(path="read", timeout=0.2)
    assert "(no path named 'read' is armed; armed: [])" in str(e.value), e.value
    agent.arm("epoll-et", dev=fifo.path)
    fifo.push(rec(1, 100))
    agent.expect(path="epoll-et", timeout=10)
    with pytest.raises(AgentError) as e:
        agent.events(1, path="epoll", timeout=0.2)
    said = str(e.value)
    assert said.startswith("got 0 of 1 event messages on epoll (timeout 0.2s) "), said
    assert "(no path named 'epoll' is armed; armed: ['epoll-et'])" in said, said
    with pytest.raises(AgentError) as e:  # armed, nothing came: no such words
        agent.expect(path="epoll-et", timeout=0.2)
    assert "is armed" not in str(e.value), e.value
