"""A bad timeout (-1, "5", inf) is refused before the call does anything: unplug(-1)
unplugged the device and then said "within -1 s", replug(-1) plugged it back, an agent
request sent itself and left its answer to no one, let_guest_time_pass started the
device's steps."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from irqlab.testing.helpers import DeviceControl
from irqlab.vm.agent_client import AgentClient
from irqlab.vm.guest import Guest

BAD = [-1, "5", float("inf"), True]


def _hotplug_guest(done: list[str]) -> SimpleNamespace:
    g = SimpleNamespace(config=SimpleNamespace(device_id="irqlab0", device_props={}))
    g._need_hotplug = lambda: None
    g._control_qmp = lambda command, *_a: done.append(command)
    g.driver_node = lambda: "/dev/irqlab0"
    g.wait_for_node = lambda *_a, **_k: done.append("wait_for_node")
    return g


@pytest.mark.parametrize("timeout", BAD)
@pytest.mark.parametrize("method", [Guest.unplug, Guest.replug])
def test_unplug_and_replug_refuse_a_bad_timeout_before_qmp(method: Any, timeout: object) -> None:
    done: list[str] = []
    with pytest.raises((ValueError, TypeError), match="timeout must be"):
        method(_hotplug_guest(done), timeout=timeout)
    assert done == []


@pytest.mark.parametrize("timeout", BAD)
def test_wait_fault_refuses_a_bad_timeout(timeout: object) -> None:
    g = SimpleNamespace(fault=None, _watch=None)
    with pytest.raises((ValueError, TypeError), match="timeout must be"):
        Guest.wait_fault(g, timeout)  # type: ignore[arg-type]


@pytest.mark.parametrize("timeout", BAD)
def test_an_agent_request_with_a_bad_timeout_is_not_sent(
    agent: AgentClient, timeout: object
) -> None:
    sent = agent._next_id
    with pytest.raises((ValueError, TypeError), match="timeout must be"):
        agent.request("ping", timeout=timeout)  # type: ignore[arg-type]
    assert agent._next_id == sent and agent.interrupted is None
    assert agent.ping()["id"] == sent  # the next answer is its own


def test_an_agent_close_with_a_bad_timeout_leaves_the_session_open(agent: AgentClient) -> None:
    with pytest.raises(ValueError, match="timeout must be"):
        agent.close(timeout=-1)
    assert not agent.closed and agent.ping()["ok"]


def test_let_guest_time_pass_refuses_a_bad_timeout_before_the_steps() -> None:
    done: list[tuple[Any, ...]] = []
    inj = SimpleNamespace(burst=lambda *a, **k: done.append(a))
    device = DeviceControl.__new__(DeviceControl)
    device.guest = SimpleNamespace(injector=inj)  # type: ignore[assignment]
    with pytest.raises(ValueError, match="timeout must be"):
        device.let_guest_time_pass(1000, 3, timeout=-1)
    assert done == []
