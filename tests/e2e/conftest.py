"""End-to-end fixtures: one booted guest per session, a clean agent per test.

These delegate to library code (irqlab.guestvm.Guest, irqlab.agent_client) and
are meant to move into the pytest plugin (irqlab.pytest_plugin).  A missing
prerequisite (QEMU build, image, module) makes every test here fail with a
message naming it; nothing is skipped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from irqlab.agent_client import AgentClient
from irqlab.guestvm import Guest, GuestConfig, PrerequisiteMissing
from irqlab.qmp.injector import Injector
from irqlab.qmp.stats import Counters


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def guest() -> Iterator[Guest]:
    g = Guest(GuestConfig(name="e2e"))
    try:
        g.start()
    except PrerequisiteMissing as e:
        g.close()
        pytest.fail(f"e2e prerequisite missing: {e}", pytrace=False)
    except BaseException:
        g.close()
        raise
    yield g
    g.close()


@pytest.fixture
def agent(guest: Guest) -> Iterator[AgentClient]:
    """The session's agent, reset: no armed paths or open files, device counters zero."""
    guest.reset()
    client = guest.agent
    yield client
    errors = [e for e in client.pending() if e.get("type") == "path_error"]
    client.drain_events()
    assert not errors, f"unexpected path errors: {errors}"


class DeviceControl:
    """The host side of the device for tests: injection and counters over QMP."""

    def __init__(self, guest: Guest) -> None:
        self.guest = guest
        self.inj: Injector = guest.injector

    def counters(self) -> Counters:
        c: Counters = self.inj.counters()
        return c

    def next_seq(self) -> int:
        return self.counters().next_seq

    def push(self, *words: int) -> None:
        for w in words:
            self.inj.push(w)

    def burst(self, count: int, period_ns: int) -> None:
        self.inj.burst(count, period_ns)

    def wait_counters(self, pred: Callable[[Counters], bool], timeout: float = 60.0) -> Counters:
        """Poll the device counters (QMP) until *pred* holds."""
        deadline = time.monotonic() + timeout
        while True:
            c = self.counters()
            if pred(c):
                return c
            if time.monotonic() > deadline:
                raise AssertionError(f"device counters never satisfied the condition: {c}")
            time.sleep(0.005)


@pytest.fixture
def device(guest: Guest, agent: AgentClient) -> DeviceControl:
    return DeviceControl(guest)


def wait_file_stats(
    agent: AgentClient, handle: str, pred: Callable[[dict[str, int]], bool], timeout: float = 60.0
) -> dict[str, int]:
    """Poll GET_STATS on an open handle until *pred* holds (the driver's view of a file)."""
    deadline = time.monotonic() + timeout
    while True:
        r = agent.request("ioctl", name=handle, ioctl="GET_STATS")
        assert r["errno"] is None, r
        st: dict[str, int] = r["result"]
        if pred(st):
            return st
        if time.monotonic() > deadline:
            raise AssertionError(f"file stats of {handle!r} never satisfied the condition: {st}")
        time.sleep(0.005)


WaitStats = Callable[..., dict[str, int]]


@pytest.fixture
def wait_stats(agent: AgentClient) -> WaitStats:
    def wait(handle: str, pred: Callable[[dict[str, int]], bool], timeout: float = 60.0) -> Any:
        return wait_file_stats(agent, handle, pred, timeout)

    return wait
