"""The agent's requests end, its failures leave nothing open, its counters say what
happened (the review of the guest agent): the real agent process on the host with
FIFOs standing in for /dev/irqlabN, and parts of it in this process (what needs a booted
guest: tests/e2e/test_agent_in_guest.py)."""

from __future__ import annotations

import errno
import io
import os
import signal
import struct
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_fifo import Fifo, fake_spec_agent  # same directory (rootdir-relative import)
from test_agent_protocol import fake_abi, rec  # same directory

from irqlab.vm.agent_client import AgentClient, AgentError, AgentRefused, AgentTimeout
from irqlab.vm.health import GuestFault
from irqlab_agent import daemon
from irqlab_agent.acks import SeqAcks
from irqlab_agent.agent import Agent, SignalDispatcher
from irqlab_agent.fastack import DEFAULT_SWITCH_INTERVAL_S, TUNING
from irqlab_agent.paths import AsyncPath, PathOptions, SetsigPath
from irqlab_agent.protocol import ProtocolError, Writer, parse_request
from irqlab_agent.sysio import SigInfo
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


class _FakeSource:
    """A signalfd stand-in: readable through a pipe, its signals ``queue``."""

    def __init__(self) -> None:
        self.fd, self._w = os.pipe()
        self.closed = False
        self.queue = [SigInfo(signo=signal.SIGIO, errno=0, code=0, pid=0, fd=-1, band=0)]

    def read_all(self) -> list[SigInfo]:
        os.read(self.fd, 1)
        return list(self.queue)

    def close(self) -> None:
        self.closed = True
        os.close(self.fd)
        os.close(self._w)


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


def test_an_unknown_ops_error_lists_the_agents_ops(agent: AgentClient) -> None:
    """As the README says: the list was only in the error's ``response["ops"]``."""
    with pytest.raises(AgentError) as e:
        agent.request("nope")
    assert e.value.response is not None
    ops = e.value.response["ops"]
    assert {"arm", "disarm", "reset", "native_start", "tune"} <= set(ops), ops
    assert str(e.value) == (
        f"agent op 'nope' {{}} failed: unknown op 'nope' (the agent's ops: {', '.join(ops)})"
    )
    with pytest.raises(AgentError) as e:  # an error that names no ops is as it was
        agent.request("disarm", name="nothing")
    assert str(e.value).startswith("agent op 'disarm' {'name': 'nothing'} failed: no armed"), e
    assert "the agent's ops" not in str(e.value)


def test_a_refusal_is_told_from_a_timeout_and_a_fault(agent: AgentClient) -> None:
    """``except AgentError`` also caught a guest that died (AgentFault) and an answer
    that never came (AgentTimeout): a refusal is an AgentRefused of its own."""
    with pytest.raises(AgentRefused) as e:
        agent.request("arm", path="nosuch")
    assert isinstance(e.value, AgentError)
    assert not isinstance(e.value, (AgentTimeout, GuestFault)), type(e.value).__mro__
    assert e.value.response is not None and e.value.response["ok"] is False


# -- no request blocks the session for ever --------------------------------------------


def test_a_blocking_handles_read_waits_a_bounded_time(agent: AgentClient, fifo: Fifo) -> None:
    agent.request("open", name="h", dev=fifo.path, nonblock=False)
    t0 = time.monotonic()
    r = agent.request("read", name="h", wait_ms=200, timeout=QUICK)
    assert r["errno"] == "ETIMEDOUT" and r["nbytes"] is None, r
    assert time.monotonic() - t0 < QUICK / 2
    assert agent.ping(timeout=QUICK)["pong"] is True
    fifo.push(rec(3))  # something to read: the read takes it at once
    r = agent.request("read", name="h", timeout=QUICK)
    assert [e["seq"] for e in r["events"]] == [3]
    with pytest.raises(AgentError, match="wait_ms"):
        agent.request("read", name="h", wait_ms=1e9, timeout=QUICK)


@pytest.mark.parametrize(
    ("op", "args", "key"),
    [
        ("wait_blocked", {"name": "read", "timeout_ms": 1e9}, "timeout_ms"),
        ("interrupt", {"name": "read", "timeout_ms": 1e12}, "timeout_ms"),
        ("native_wait", {"name": "none", "wait_s": 1e7}, "wait_s"),
    ],
)
def test_waits_above_their_cap_are_refused(
    agent: AgentClient, fifo: Fifo, op: str, args: dict[str, Any], key: str
) -> None:
    agent.arm("read", dev=fifo.path)
    with pytest.raises(AgentError, match=f"'{key}' must be a finite number in"):
        agent.request(op, timeout=QUICK, **args)
    assert agent.stats()["paths"]["read"]["eintr"] == 0  # interrupt sent nothing


@pytest.mark.parametrize("op", ["check", "flush"])
def test_check_and_flush_of_a_file_that_never_runs_empty_end(agent: AgentClient, op: str) -> None:
    with pytest.raises(AgentError, match="never ran empty"):
        agent.request(op, dev="/dev/zero", timeout=QUICK)
    assert agent.ping(timeout=QUICK)["pong"] is True


# -- a plain SIGIO is not an F_SETSIG path's signal ------------------------------------


def _async_path(cls: type[AsyncPath], name: str, signo: int) -> tuple[AsyncPath, int]:
    """An async path in this process, its file a pipe (the write end returned)."""
    sent: list[dict[str, Any]] = []
    path = cls(name, fake_abi(), PathOptions("pipe", signo=signo), sent.append)
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    path.fd = r
    return path, w


def _counters(path: AsyncPath) -> dict[str, int]:
    st = path.stats
    return {"events": st.events, "signals": st.signals, "wakeups": st.wakeups,
            "spurious": st.spurious, "sigio_fallback": st.sigio_fallback}  # fmt: skip


def test_a_plain_sigio_is_no_signal_of_a_setsig_path() -> None:
    """(A FIFO's F_SETSIG storms with POLL_OUT signals of its own: paths in this
    process, on pipes, with the dispatcher fed by hand.)"""
    rt = signal.SIGRTMIN + 1
    s, s_w = _async_path(AsyncPath, "s", 0)
    r, r_w = _async_path(SetsigPath, "r", rt)
    source = _FakeSource()
    d = SignalDispatcher(source, lambda: [s, r])
    try:
        for seq in range(1, 6):  # the sigio path's file: a plain SIGIO, to both
            os.write(s_w, rec(seq))
            d.dispatch(SigInfo(signo=signal.SIGIO, errno=0, code=0, pid=0, fd=-1, band=0))
        assert _counters(s) == {
            "events": 5, "signals": 5, "wakeups": 5, "spurious": 0, "sigio_fallback": 0,
        }  # fmt: skip
        assert _counters(r) == {
            "events": 0, "signals": 0, "wakeups": 0, "spurious": 0, "sigio_fallback": 5,
        }  # fmt: skip
        # Both at once, the SIGIO read first: the RT signal is still r's own, and the
        # fallback drain that took its record leaves it no spurious wake-up.
        os.write(r_w, rec(11))
        source.queue = [
            SigInfo(signo=signal.SIGIO, errno=0, code=0, pid=0, fd=-1, band=0),
            SigInfo(signo=rt, errno=0, code=1, pid=0, fd=r.fd, band=1),
        ]
        for info in sorted(source.queue, key=lambda i: i.signo == signal.SIGIO):
            d.dispatch(info)
        os.write(r_w, rec(12))
        for info in source.queue:  # in the order read
            d.dispatch(info)
        assert _counters(r) == {
            "events": 2, "signals": 2, "wakeups": 2, "spurious": 0, "sigio_fallback": 7,
        }  # fmt: skip
        assert s.stats.spurious == 2  # a plain sigio path: nothing to read is spurious
    finally:
        for p in (s, r):
            p.close_fds()
        for fd in (s_w, r_w):
            os.close(fd)
        source.close()


def test_the_dispatcher_hands_out_rt_signals_before_a_plain_sigio() -> None:
    seen: list[int] = []

    class Path:
        fd = 7
        opts = PathOptions("x", signo=signal.SIGRTMIN)

        def deliver(self, info: SigInfo) -> None:
            seen.append(info.signo)

    source = _FakeSource()
    source.queue = [
        SigInfo(signo=signal.SIGIO, errno=0, code=0, pid=0, fd=-1, band=0),
        SigInfo(signo=signal.SIGRTMIN, errno=0, code=1, pid=0, fd=7, band=1),
    ]
    d = SignalDispatcher(source, lambda: [Path()])  # type: ignore[list-item]
    d.start()
    os.write(source._w, b"x")
    deadline = time.monotonic() + 10
    while len(seen) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    d.stop()
    assert seen == [signal.SIGRTMIN, signal.SIGIO]


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


# -- read checks 'as' before reading ---------------------------------------------------


def test_read_with_a_bad_as_consumes_nothing(agent: AgentClient, fifo: Fifo) -> None:
    agent.request("open", name="h", dev=fifo.path)
    fifo.push(rec(1), rec(2))
    with pytest.raises(AgentError, match="'as' must be records, count or raw"):
        agent.request("read", name="h", **{"as": "bogus"})
    r = agent.request("read", name="h")
    assert [e["seq"] for e in r["events"]] == [1, 2]


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


# -- tune lasts one session ------------------------------------------------------------


def test_reset_puts_the_tune_settings_back(agent: AgentClient) -> None:
    r = agent.request("tune", ack_first=False, switch_interval_s=0.001)
    assert r["ack_first"] is False and r["switch_interval_s"] == pytest.approx(0.001)
    agent.reset()
    r = agent.request("tune")
    assert r["ack_first"] is True
    assert r["switch_interval_s"] == pytest.approx(DEFAULT_SWITCH_INTERVAL_S)


def test_shutdown_puts_the_tune_settings_back() -> None:
    before = sys.getswitchinterval()
    agent = Agent(fake_abi(), Writer(io.BytesIO()))
    try:
        agent.handle_line(b'{"id": 1, "op": "tune", "ack_first": false, "switch_interval_s": 0.25}')
        assert TUNING.ack_first is False
        agent.shutdown()
        assert TUNING.ack_first is True
        assert sys.getswitchinterval() == pytest.approx(DEFAULT_SWITCH_INTERVAL_S)
        assert agent.handle_line(b'{"id": 2, "op": "arm", "path": "poll"}')["ok"] is False
    finally:
        TUNING.ack_first = True
        sys.setswitchinterval(before)


# -- the daemon and the signal dispatcher ----------------------------------------------


def test_a_dispatcher_stuck_in_a_delivery_closes_its_files_when_it_returns() -> None:
    source = _FakeSource()
    inside, release = threading.Event(), threading.Event()

    class Stuck:
        fd = -1

        def deliver(self, info: SigInfo) -> None:
            inside.set()
            release.wait(30)

    d = SignalDispatcher(source, lambda: [Stuck()])  # type: ignore[list-item]
    d.start()
    os.write(source._w, b"x")
    assert inside.wait(10)
    stop_r = d._stop_r
    d.stop(timeout=0.1)  # the delivery holds on: the thread lives on
    assert d.is_alive() and not source.closed
    release.set()
    d.join(10)
    assert not d.is_alive()
    assert source.closed
    with pytest.raises(OSError) as ei:
        os.fstat(stop_r)
    assert ei.value.errno == errno.EBADF
    d.stop()  # a second stop is harmless


def test_accept_out_of_files_waits_and_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    naps: list[float] = []
    monkeypatch.setattr(daemon.time, "sleep", naps.append)

    class Sock:
        n = 0

        def accept(self) -> tuple[str, None]:
            self.n += 1
            if self.n == 1:
                raise OSError(errno.EMFILE, "Too many open files")
            if self.n == 2:
                raise OSError(errno.ENFILE, "Too many open files in system")
            return "conn", None

    assert daemon._accept(Sock()) == "conn"  # type: ignore[arg-type]
    assert naps == [daemon.ACCEPT_BACKOFF_S] * 2


def test_a_session_whose_agent_cannot_be_made_closes_its_connection() -> None:
    import socket

    a, b = socket.socketpair()

    def broken(w: Writer) -> Agent:
        raise OSError(errno.EMFILE, "Too many open files")

    assert daemon._Session.start(a, broken) is None
    assert a.fileno() == -1  # closed
    assert b.recv(10) == b""  # the peer sees the end
    b.close()


@pytest.mark.parametrize(
    ("dev", "said"),
    [
        ("regular", "is not a character device (an irqlab node?)"),
        ("/dev/zero", "/dev/zero is not an irqlab event node: its GET_INFO ioctl fails"),
    ],
)
def test_a_record_path_on_a_file_that_is_no_irqlab_node_is_refused(
    agent: AgentClient, tmp_path: Path, dev: str, said: str
) -> None:
    """``arm("read", dev="/dev/zero")`` or a regular file was accepted, and its bytes read
    as thousands of garbage events (seq 0, value 0)."""
    if dev == "regular":
        dev = str(tmp_path / "records")
        Path(dev).write_bytes(bytes(4096))
    pid = agent.ping()["pid"]
    before = _fds(pid)
    r = agent.request("arm", path="read", dev=dev, check=False)
    assert r["ok"] is False and r["errno"] == "ENOTTY", r
    assert said in r["error"], r
    assert _fds(pid) == before  # the file it opened is closed again
