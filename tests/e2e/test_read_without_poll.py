"""The agent's ``read`` of a driver of one's own whose read() has no .poll handler (poll(2)
then says "readable" at once) and waits for data (tests/e2e/kmods/blocking_read): it
waits ``wait_ms`` and answers ETIMEDOUT, as the README promises, and the session goes
on.  The agent polled, then read in its session's thread: the read blocked in the
driver and the session answered nothing more (the host's AgentTimeout named only
"request 4")."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from irqlab import notice
from irqlab.testing.helpers import wait_until
from irqlab.vm.agent_client import AgentClient
from irqlab.vm.guest import Guest
from irqlab.vm.loadscale import scaled

DEV = "/dev/blocking_read"
PARAMS = "/sys/module/blocking_read/parameters"
TIMEOUT = 30.0  # the host's wait for an answer: well past the reads' wait_ms


@pytest.fixture
def guest(blocking_read_guest: Guest) -> Guest:
    return blocking_read_guest


@pytest.fixture
def agent(guest: Guest) -> Iterator[AgentClient]:
    a = guest.agent
    a.reset()
    yield a
    a.reset()  # closes its handles, a read stuck in one or not
    guest.sh(f"echo 0 > {PARAMS}/uninterruptible")
    # what a test left waiting in the driver (4 bytes each) takes some and returns
    guest.sh(f"printf %064d 0 > {DEV}")
    wait_until(lambda: guest.sh(f"cat {PARAMS}/waiting"), lambda s: s.strip() == "0",
               timeout=scaled(10.0), what="no read waiting in blocking_read")  # fmt: skip
    a.request("open", name="drain", dev=DEV, nonblock=False)
    while a.request("read", name="drain", size=64, wait_ms=100, **{"as": "raw"})["nbytes"]:
        pass  # the rest read, up to the ETIMEDOUT of the empty device
    a.reset()


def _read(agent: AgentClient, wait_ms: int, **args: object) -> tuple[dict[str, object], float]:
    t0 = time.monotonic()
    r = agent.request("read", name="h", size=4, wait_ms=wait_ms, timeout=TIMEOUT,
                      **{"as": "raw"}, **args)  # fmt: skip
    return r, time.monotonic() - t0


@pytest.mark.parametrize("nonblock", [False, True])
def test_an_interruptible_read_ends_at_wait_ms_and_the_handle_reads_on(
    guest: Guest, agent: AgentClient, nonblock: bool
) -> None:
    """The driver's read waits interruptibly (and ignores O_NONBLOCK): after wait_ms a
    signal ends it (EINTR) and the answer is ETIMEDOUT, nothing read."""
    agent.request("open", name="h", dev=DEV, nonblock=nonblock)
    r, took = _read(agent, 1000)
    assert (r["errno"], r["nbytes"], r.get("interrupted")) == ("ETIMEDOUT", None, True), r
    assert 1.0 <= took < 1.0 + scaled(5.0), took
    assert guest.sh(f"cat {PARAMS}/waiting").strip() == "0"  # the read is over
    assert agent.ping()["pong"] is True
    guest.sh(f"printf abcd > {DEV}")
    r, _ = _read(agent, 5000)
    assert (r["errno"], r["hex"]) == (None, b"abcd".hex()), r


def test_an_uninterruptible_read_leaves_its_handle_busy_and_the_session_working(
    guest: Guest, agent: AgentClient
) -> None:
    """The driver's read waits with wait_event (state D, no signal ends it): the request
    still answers ETIMEDOUT after wait_ms, saying the read is stuck in the driver and
    where; the handle answers EBUSY until the read returns; the session serves other
    requests meanwhile; what the stuck read finally gets is the next read's answer."""
    guest.sh(f"echo 1 > {PARAMS}/uninterruptible")
    agent.request("open", name="h", dev=DEV, nonblock=False)
    r, took = _read(agent, 1000)
    rid = r["id"]
    assert (r["errno"], r["nbytes"]) == ("ETIMEDOUT", None), r
    assert took < 1.0 + scaled(5.0), took
    stuck = str(r["stuck"])
    assert "still blocked in the driver's read()" in stuck and "state D" in stuck, stuck
    stack = guest.sh("cat /proc/self/stack >/dev/null 2>&1 && echo yes || echo no").strip()
    if stack == "yes":  # a kernel with CONFIG_STACKTRACE: the driver's function named
        assert "blocking_read_read" in stuck, stuck
    # the handle is busy: a read waits its wait_ms for the stuck one, then says so
    r, took = _read(agent, 200)
    assert (r["errno"], r["nbytes"]) == ("EBUSY", None), r
    assert f"request {rid}" in str(r["stuck"]), r
    r = agent.request("ioctl", name="h", ioctl="GET_STATS", timeout=TIMEOUT)
    assert (r["errno"], r["result"]) == ("EBUSY", None), r
    # the rest of the session works: another handle, the stats, a ping
    agent.request("open", name="null", dev="/dev/null", timeout=TIMEOUT)
    assert agent.stats()["handles"] == ["h", "null"]
    assert agent.ping()["pong"] is True
    assert guest.sh(f"cat {PARAMS}/waiting").strip() == "1"  # still in the driver
    # the driver gets data: the stuck read returns with it, and the next read answers it
    guest.sh(f"printf wxyz > {DEV}")
    r, _ = _read(agent, 10_000)
    assert (r["errno"], r["hex"], r["late"]) == (None, b"wxyz".hex(), rid), r
    guest.sh(f"echo 0 > {PARAMS}/uninterruptible")
    guest.sh(f"printf 1234 > {DEV}")  # the handle reads as any other again
    r, _ = _read(agent, 5000)
    assert (r["errno"], r["hex"], r.get("late")) == (None, b"1234".hex(), None), r


def test_a_stuck_handle_closes_and_reset_leaves_the_session_usable(
    guest: Guest, agent: AgentClient
) -> None:
    guest.sh(f"echo 1 > {PARAMS}/uninterruptible")
    agent.request("open", name="h", dev=DEV, nonblock=False)
    r, _ = _read(agent, 500)
    assert r["errno"] == "ETIMEDOUT" and "stuck" in r, r
    agent.request("close", name="h", timeout=TIMEOUT)  # at once: the read holds the file
    agent.request("open", name="h", dev=DEV, nonblock=False)
    r, _ = _read(agent, 500)
    assert r["errno"] == "ETIMEDOUT" and "stuck" in r, r
    agent.reset()  # closes it too
    assert agent.stats()["handles"] == []
    assert agent.ping()["pong"] is True


def test_a_read_left_in_the_driver_by_reset_is_named_and_its_data_is_answered(
    guest: Guest, agent: AgentClient
) -> None:
    """A read stuck in the driver outlives the reset that closes its handle: it waits on
    and takes the next data the driver hands a reader, which a handle opened since (a
    module-scoped guest's next test) lost without a word.  Now the reset names it (and
    the host says so on the terminal), the new handle's open and reads name it, and what
    it took is answered (``orphan_data``)."""
    guest.sh(f"echo 1 > {PARAMS}/uninterruptible")
    agent.request("open", name="h", dev=DEV, nonblock=False)
    r, _ = _read(agent, 500)
    rid = r["id"]
    assert r["errno"] == "ETIMEDOUT" and "stuck" in r, r
    said: list[str] = []
    old = notice.set_sink(said.append)
    try:
        reply = agent.reset()
    finally:
        notice.set_sink(old)
    (orphan,) = reply["orphans"]
    assert (orphan["request"], orphan["handle"], orphan["dev"]) == (rid, "h", DEV), reply
    assert "state D" in orphan["where"], reply
    (line,) = said
    assert "1 read(2) left in the driver by closed handles" in line, line
    assert f"request {rid} (handle 'h' of {DEV}" in line, line
    assert guest.sh(f"cat {PARAMS}/waiting").strip() == "1"  # still in the driver
    r = agent.request("open", name="h2", dev=DEV, nonblock=False, timeout=TIMEOUT)
    assert [o["request"] for o in r["orphans"]] == [rid] and "notice" in r, r
    guest.sh(f"printf abcd > {DEV}")  # the orphan takes it: h2's read is left waiting
    r = agent.request("read", name="h2", size=4, wait_ms=3000, timeout=TIMEOUT, **{"as": "raw"})
    assert r["errno"] == "ETIMEDOUT" and "stuck" in r, r
    assert [(d["request"], d["handle"], d["hex"]) for d in r["orphan_data"]] == [
        (rid, "h", b"abcd".hex())
    ], r
