"""A handle's read that the driver does not end: poll(2) said readable (a driver with no
.poll handler always is) and the read(2) blocked in the session's thread, so no request
was answered again.  Now the read runs in a thread of its own and the answer comes after
``wait_ms`` whatever the driver does.  The agent in this process, /dev/null's handle
(poll says readable) and its read(2) replaced: a read of an empty pipe (a wait a signal
ends, as wait_event_interruptible) or a wait no signal ends (wait_event); the real
drivers: tests/e2e/test_read_without_poll.py."""

from __future__ import annotations

import io
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_fifo import Fifo, fake_spec_agent  # same directory (rootdir-relative import)
from test_agent_protocol import fake_abi  # same directory

from irqlab.vm.agent_client import AgentTimeout, describe_request
from irqlab_agent import agent as agent_mod
from irqlab_agent.agent import Agent
from irqlab_agent.paths import STOP_SIGNAL
from irqlab_agent.protocol import Writer
from irqlab_agent.sysio import raw_read

QUICK = 10.0  # seconds a request that must not block gets before the test fails


class Driver:
    """What the agent's read(2) of a handle runs into: a read of an empty pipe, or (when
    *uninterruptible*) a wait that signals do not end; :meth:`give` ends either with data."""

    def __init__(self, uninterruptible: bool) -> None:
        self.uninterruptible = uninterruptible
        self.r, self.w = os.pipe2(os.O_CLOEXEC)
        self.given = threading.Event()
        self.entered = threading.Semaphore(0)

    def read(self, fd: int, size: int) -> bytes:
        self.entered.release()
        if self.uninterruptible:
            self.given.wait(60)  # deaf to signals, as a task in state D
        return raw_read(self.r, size)

    def give(self, data: bytes) -> None:
        os.write(self.w, data)
        self.given.set()

    def close(self) -> None:
        os.close(self.r)
        os.close(self.w)


@pytest.fixture
def interruptible() -> Iterator[None]:
    """STOP_SIGNAL's handler, as the agent's main() sets it (no SA_RESTART)."""
    old = signal.signal(STOP_SIGNAL, lambda signo, frame: None)
    yield
    signal.signal(STOP_SIGNAL, old)


Request = Callable[..., dict[str, Any]]


@pytest.fixture
def session(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[bool], tuple[Driver, Request]]]:
    """An agent in this process with a handle "h" (/dev/null, blocking) whose read(2) is
    a new :class:`Driver`'s: ``session(uninterruptible)`` gives both; the driver ends
    whatever still waits in it at the end."""
    drivers: list[Driver] = []

    def start(uninterruptible: bool) -> tuple[Driver, Request]:
        driver = Driver(uninterruptible)
        drivers.append(driver)
        monkeypatch.setattr(agent_mod, "raw_read", driver.read)
        agent = Agent(fake_abi(), Writer(io.BytesIO()))
        ids = iter(range(1, 1000))

        def request(op: str, **args: Any) -> dict[str, Any]:
            return agent.handle_line(json.dumps({"id": next(ids), "op": op, **args}).encode())

        assert request("open", name="h", dev="/dev/null", nonblock=False)["ok"]
        return driver, request

    yield start
    for driver in drivers:
        driver.give(b"x")
        driver.close()


@pytest.mark.usefixtures("interruptible")
def test_a_read_a_signal_ends_answers_etimedout_at_wait_ms_and_the_handle_reads_on(
    session: Callable[[bool], tuple[Driver, Request]],
) -> None:
    driver, request = session(False)
    t0 = time.monotonic()
    r = request("read", name="h", wait_ms=300, **{"as": "raw"})
    took = time.monotonic() - t0
    assert (r["errno"], r["nbytes"], r["interrupted"]) == ("ETIMEDOUT", None, True), r
    assert 0.3 <= took < QUICK / 2, took
    driver.give(b"abcd")
    r = request("read", name="h", wait_ms=300, size=4, **{"as": "raw"})
    assert (r["errno"], r["hex"], r.get("late")) == (None, b"abcd".hex(), None), r


@pytest.mark.usefixtures("interruptible")
def test_a_read_no_signal_ends_leaves_the_handle_busy_until_it_returns(
    session: Callable[[bool], tuple[Driver, Request]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(agent_mod, "INTERRUPT_GRACE_S", 0.2)
    monkeypatch.setattr(agent_mod, "INTERRUPT_MAX_S", 0.4)  # this stand-in waits in S
    driver, request = session(True)
    t0 = time.monotonic()
    r = request("read", name="h", wait_ms=300, **{"as": "raw"})
    assert time.monotonic() - t0 < QUICK / 2
    rid = r["id"]
    assert (r["errno"], r["nbytes"]) == ("ETIMEDOUT", None), r
    assert r["stuck"].startswith(f"the read(2) of request {rid} is still blocked in the"), r
    assert "a signal did not end it" in r["stuck"] and "state S" in r["stuck"], r
    assert "handle 'h' answers EBUSY until it returns" in r["stuck"], r
    r = request("read", name="h", wait_ms=100)
    assert (r["errno"], r["nbytes"]) == ("EBUSY", None) and "request" in r["stuck"], r
    r = request("ioctl", name="h", ioctl="GET_STATS")
    assert (r["errno"], r["result"]) == ("EBUSY", None), r
    assert request("ping")["pong"] is True  # the session answers on
    driver.give(b"wxyz")  # the stuck read returns: the next read has what it read
    # answered as its own request asked (as=raw), whatever this one asks (records: it
    # decoded 4 raw bytes as event records)
    r = request("read", name="h", wait_ms=5000)
    assert (r["errno"], r["hex"], r["late"]) == (None, b"wxyz".hex(), rid), r
    assert driver.entered.acquire(timeout=0)  # one read(2) so far: no second one ran
    assert not driver.entered.acquire(timeout=0)


class LateDriver(Driver):
    """A read whose thread takes no signal for *deaf* s (a loaded guest had not run
    it), then waits interruptibly (an empty pipe)."""

    def __init__(self, deaf: float) -> None:
        super().__init__(False)
        self.deaf = deaf

    def read(self, fd: int, size: int) -> bytes:
        self.entered.release()
        time.sleep(self.deaf)  # a thread not run yet: the signals sent meanwhile end nothing
        return raw_read(self.r, size)


@pytest.mark.usefixtures("interruptible")
def test_a_read_that_takes_its_signal_late_is_interrupted_not_stuck(
    session: Callable[[bool], tuple[Driver, Request]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past a fixed 1 s grace a read still in S (its thread not run yet on a loaded
    guest) was called stuck: ETIMEDOUT with `stuck`, the handle EBUSY."""
    monkeypatch.setattr(agent_mod, "INTERRUPT_GRACE_S", 0.2)
    _, request = session(False)
    late = LateDriver(deaf=0.8)
    monkeypatch.setattr(agent_mod, "raw_read", late.read)
    try:
        r = request("read", name="h", wait_ms=100, **{"as": "raw"})
        assert (r["errno"], r.get("interrupted"), r.get("stuck")) == ("ETIMEDOUT", True, None), r
    finally:
        late.give(b"x")
        late.close()


def test_a_read_has_a_descriptor_of_its_own_which_it_closes(tmp_path: Path) -> None:
    """A read left in the driver read the handle's fd number: after a close (or reset)
    the next open could take that number, and the late read consumed its data."""
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        os.write(w, b"data")
        rd = agent_mod.BoundedRead(r, 4, 1)
        assert rd.fd != r
        assert rd.done.wait(QUICK) and rd.data == b"data"
        with pytest.raises(OSError):
            os.fstat(rd.fd)  # closed by its thread (the number may be reused: not here)
        os.fstat(r)  # the handle's own is the handle's
    finally:
        os.close(r)
        os.close(w)


def test_without_a_signal_handler_the_read_is_left_not_signalled(
    session: Callable[[bool], tuple[Driver, Request]],
) -> None:
    """Sent with no handler installed, STOP_SIGNAL would end the whole process."""
    assert signal.getsignal(STOP_SIGNAL) in (signal.SIG_DFL, None)
    _, request = session(False)
    r = request("read", name="h", wait_ms=100)
    assert r["errno"] == "ETIMEDOUT" and "no signal was sent" in r["stuck"], r
    assert request("close", name="h")["ok"]  # at once, the read in it or not
    assert request("stats")["handles"] == []


def test_describe_request_names_the_op_and_what_it_works_on() -> None:
    assert describe_request("read", {"as": "raw", "size": 4, "name": "h", "wait_ms": 1000}) == (
        "op 'read', name='h', as='raw', size=4, wait_ms=1000"
    )
    long = describe_request("arm", {"path": "read", "x": "y" * 500})
    assert long.startswith("op 'arm', path='read', x='yyy") and long.endswith(" ...")
    assert len(long) < 200


def test_a_requests_timeout_names_its_op_and_handle(tmp_path: Path, fifo: Fifo) -> None:
    """It said "timeout (15s) waiting for response to request 4": which request, and on
    what, the test had to work out."""
    for client in fake_spec_agent(tmp_path):  # the real agent process
        client.request("open", name="h", dev=fifo.path, nonblock=False)
        with pytest.raises(AgentTimeout) as e:
            client.request("read", name="h", wait_ms=1000, timeout=0.05, **{"as": "raw"})
        assert str(e.value) == (
            "timeout (0.05s) waiting for response to request 2 "
            "(op 'read', name='h', wait_ms=1000, as='raw')"
        ), e.value
