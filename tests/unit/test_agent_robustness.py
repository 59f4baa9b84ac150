"""The agent's requests end, its failures leave nothing open, its counters say what
happened (the review of the guest agent): the real agent process on the host with
FIFOs standing in for /dev/irqlabN, and parts of it in this process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_fifo import Fifo, fake_spec_agent  # same directory (rootdir-relative import)

from irqlab.vm.agent_client import AgentClient
from irqlab_agent.protocol import ProtocolError, parse_request

QUICK = 10.0  # seconds a request that must not block gets before the test fails


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[AgentClient]:
    yield from fake_spec_agent(tmp_path)


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
