"""A read the agent left in the driver (no signal ends it: state D) outlives its handle's
``close`` or ``reset``: it still waits in the driver, and the next data the driver hands
a reader went to it, silently lost to a handle opened since (a module-scoped guest's next
test).  Now such a read is an orphan, kept and reported: named in the answers to
``close``/``reset`` and to ``open``/``read`` of that device, and what it finally got is
answered once (``orphan_data``).  The agent in this process with a stand-in driver
(test_agent_stuck_read's); the real one: tests/e2e/test_read_without_poll.py."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_agent_protocol import fake_abi  # same directory (rootdir-relative import)
from test_agent_stuck_read import QUICK, Driver, interruptible  # noqa: F401 (a fixture)

from irqlab import notice
from irqlab.vm.agent_client import AgentClient, orphan_notice
from irqlab_agent import agent as agent_mod
from irqlab_agent.agent import Agent, OrphanReads
from irqlab_agent.protocol import Writer

Request = Callable[..., dict[str, Any]]


@pytest.fixture
def stuck(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Driver, Agent, Request, int]]:
    """An agent in this process (orphans of its own) whose handle "h" (/dev/null) has a
    read left in a stand-in driver that no signal ends: (driver, agent, request, the
    stuck read's request id)."""
    monkeypatch.setattr(agent_mod, "INTERRUPT_GRACE_S", 0.2)
    monkeypatch.setattr(agent_mod, "INTERRUPT_MAX_S", 0.4)  # the stand-in waits in S
    driver = Driver(uninterruptible=True)
    monkeypatch.setattr(agent_mod, "raw_read", driver.read)
    agent = Agent(fake_abi(), Writer(io.BytesIO()), orphans=OrphanReads())
    ids = iter(range(1, 1000))

    def request(op: str, **args: Any) -> dict[str, Any]:
        return agent.handle_line(json.dumps({"id": next(ids), "op": op, **args}).encode())

    assert request("open", name="h", dev="/dev/null", nonblock=False)["ok"]
    r = request("read", name="h", wait_ms=100, size=4, **{"as": "raw"})
    assert r["errno"] == "ETIMEDOUT" and "stuck" in r, r
    try:
        yield driver, agent, request, r["id"]
    finally:
        driver.give(b"x")
        driver.close()


def _returned(agent: Agent) -> None:
    """Wait (on their events) until every orphan of *agent* returned from the driver."""
    for o in agent.orphans._reads:
        assert o.read.done.wait(QUICK), "the stand-in driver's read did not return"


@pytest.mark.usefixtures("interruptible")
def test_a_read_left_in_the_driver_by_close_is_named_and_what_it_gets_is_answered(
    stuck: tuple[Driver, Agent, Request, int],
) -> None:
    driver, agent, request, rid = stuck
    r = request("close", name="h")
    (orphan,) = r["orphans"]
    assert (orphan["request"], orphan["handle"], orphan["dev"]) == (rid, "h", "/dev/null"), r
    assert orphan["where"].startswith("thread ") and "state S" in orphan["where"], r
    assert "1 read(2) of /dev/null left in the driver by closed handles" in r["notice"], r
    assert f"(request {rid})" in r["notice"] and "may go to them" in r["notice"], r
    # a new handle on the same device is told at its open, and at its reads
    r = request("open", name="h2", dev="/dev/null", nonblock=False)
    assert [o["request"] for o in r["orphans"]] == [rid] and "notice" in r, r
    # another device is not
    r = request("open", name="z", dev="/dev/zero")
    assert "orphans" not in r and "orphan_data" not in r, r
    # the driver hands data to a reader: the orphan took it; it is answered, once
    driver.give(b"abcd")
    _returned(agent)
    r = request("reset")
    assert "orphans" not in r, r
    (data,) = r["orphan_data"]
    assert (data["request"], data["handle"], data["dev"]) == (rid, "h", "/dev/null"), r
    assert (data["errno"], data["nbytes"], data["hex"]) == (None, 4, b"abcd".hex()), r
    r = request("reset")
    assert "orphans" not in r and "orphan_data" not in r, r


@pytest.mark.usefixtures("interruptible")
def test_what_a_stuck_read_got_before_its_handle_closed_is_answered_not_dropped(
    stuck: tuple[Driver, Agent, Request, int],
) -> None:
    """The stuck read returned, no read of its handle took its result, then a reset:
    its bytes were dropped with the handle."""
    driver, agent, request, rid = stuck
    driver.give(b"wxyz")
    assert agent.handles["h"].stuck is not None and agent.handles["h"].stuck.done.wait(QUICK)
    r = request("reset")
    assert "orphans" not in r, r
    assert [(d["request"], d["hex"]) for d in r["orphan_data"]] == [(rid, b"wxyz".hex())], r


@pytest.mark.usefixtures("interruptible")
def test_a_read_of_the_device_answers_what_an_orphan_took_meanwhile(
    stuck: tuple[Driver, Agent, Request, int],
) -> None:
    driver, agent, request, rid = stuck
    r = request("reset")
    assert [o["request"] for o in r["orphans"]] == [rid], r
    assert request("open", name="h", dev="/dev/null")["orphans"]
    driver.give(b"abcd")
    _returned(agent)
    # this read's own data comes from the stand-in's pipe (empty now: EAGAIN); what the
    # orphan took is beside it
    r = request("read", name="h", size=4, wait_ms=100, **{"as": "raw"})
    assert [(d["request"], d["hex"]) for d in r["orphan_data"]] == [(rid, b"abcd".hex())], r
    assert "orphans" not in r, r


def test_the_hosts_reset_says_the_orphans_and_their_data(tmp_path: Path) -> None:
    """AgentClient.reset() (every test's reset) tells the user, past pytest's capture,
    of a read still blocked in the driver and of what one that returned got."""
    reply = {
        "id": 1,
        "ok": True,
        "paths": {},
        "orphans": [
            {"request": 3, "handle": "h", "dev": "/dev/blocking_read", "in_driver_s": 2.5,
             "orphaned_s": 1.0, "where": "thread 99, state D (uninterruptible)"},
        ],
        "orphan_data": [
            {"request": 2, "handle": "g", "dev": "/dev/blocking_read", "errno": None,
             "nbytes": 4, "hex": b"abcd".hex(), "returned_s_ago": 0.1},
        ],
    }  # fmt: skip
    r, w = os.pipe()
    client = AgentClient(io.BytesIO(), os.fdopen(r, "rb"), None, logs=tmp_path)
    client.label = "the guest 'e2e'"
    said: list[str] = []
    old = notice.set_sink(said.append)
    try:
        os.write(w, json.dumps(reply).encode() + b"\n")
        assert client.reset()["orphans"] == reply["orphans"]
    finally:
        notice.set_sink(old)
        os.close(w)
        client.close(timeout=QUICK, goodbye=False)
    (line,) = said
    assert line.startswith("irqlab: the guest 'e2e': 1 read(2) left in the driver"), line
    assert "request 3 (handle 'h' of /dev/blocking_read, 2.5 s in the driver: thread 99" in line
    assert "may go to them, not to a later test's read" in line, line
    assert "request 2 (handle 'g' of /dev/blocking_read) got 4 bytes 61626364" in line, line
    assert orphan_notice("x", {"id": 1, "ok": True}) is None
