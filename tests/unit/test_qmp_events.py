"""QMP events reach every waiter: the health watch's take_events (every 0.2 s) and a
wait_event in progress share SyncQMP's events, against the fake QEMU
(tests/unit/fake_qemu.py) with the real SyncQMP on its loop thread."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from irqlab.vm.machine import Machine, MachineConfig, MachineError

FAKE = Path(__file__).with_name("fake_qemu.py")


@pytest.fixture
def machine(tmp_path: Path) -> Iterator[Machine]:
    script = tmp_path / "qemu-system-fake"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" "$@"\n')
    script.chmod(0o755)
    cfg = MachineConfig(
        binary=script, log_root=tmp_path / "logs", start_timeout=10.0, stop_timeout=5.0
    )
    with Machine(cfg) as m:
        yield m


def _in_thread(fn: Any) -> tuple[threading.Thread, dict[str, Any]]:
    """*fn* run on a thread of its own: its result or its exception in the dict."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = fn()
        except Exception as e:
            out["error"] = e

    t = threading.Thread(target=run)
    t.start()
    return t, out


def _until_a_wait_waits(machine: Machine) -> None:
    """Return once a wait_event waits on the loop for its event (not a fixed sleep: a
    wait that had not begun took the event at once, and the test ran nothing)."""
    qmp = machine._qmp
    assert qmp is not None
    deadline = time.monotonic() + 10
    while qmp._events._changed is None:  # made by the wait's look on the loop
        assert time.monotonic() < deadline, "no wait began waiting within 10 s"
        time.sleep(0.01)


def test_an_event_the_health_watch_looks_past_still_ends_the_wait(machine: Machine) -> None:
    """The watch's take ran between QEMU's event and the waiter's wake-up: it moved the
    event aside, where the waiter, by then waiting on the listener alone, never looked
    (an unplug's DEVICE_DELETED waited out its 30 s and blamed the guest)."""
    qmp = machine._qmp
    assert qmp is not None
    real = qmp._client._event_dispatch
    took: list[dict[str, Any]] = []
    looks: list[threading.Thread] = []

    async def dispatch(msg: Any) -> None:  # on the loop, as qemu.qmp's reader hands it over
        if msg.get("event") == "DEVICE_DELETED":
            look, _ = _in_thread(lambda: took.extend(machine.take_events(("RESET",), 5.0)))
            looks.append(look)
            time.sleep(0.3)  # the loop is busy a moment: the watch's look is queued on it
            await asyncio.sleep(0)  # ... and starts (its first step queued before ours)
        await real(msg)

    qmp._client._event_dispatch = dispatch  # type: ignore[method-assign]
    waiter, out = _in_thread(lambda: machine.wait_event("DEVICE_DELETED", 3.0, {"n": 0}))
    _until_a_wait_waits(machine)
    machine.qmp("emit", names=["DEVICE_DELETED"])
    waiter.join(10)
    for look in looks:
        look.join(10)
    assert len(looks) == 1 and "error" not in out, out.get("error")
    assert out["result"]["event"] == "DEVICE_DELETED" and took == []
    assert machine.qmp_events() == []  # taken once, by the wait


def test_a_wait_that_gives_up_leaves_the_event_for_the_next(machine: Machine) -> None:
    """A wait whose time ran out while the loop was busy takes nothing with it: its
    look for the event may still run on the loop afterwards, and the event that comes
    then is the next wait's.  (The old version of this test had the event stored before
    the wait, which now takes it at once: its give-up path never ran.)"""
    qmp = machine._qmp
    assert qmp is not None
    qmp._aio.loop.call_soon_threadsafe(time.sleep, 0.5)  # the loop busy past the wait
    with pytest.raises(MachineError):
        machine.wait_event("MIGRATION", 0.1)  # gives up while the loop is busy
    machine.qmp("emit", names=["MIGRATION"])  # comes after the wait gave up
    assert machine.wait_event("MIGRATION", 2.0)["data"] == {"n": 0}


def test_take_events_takes_only_what_it_returns(machine: Machine) -> None:
    machine.qmp("emit", names=["A", "RESET", "B", "RESET"])
    assert [e["data"]["n"] for e in machine.take_events(("RESET",))] == [1, 3]
    assert machine.take_events(("RESET",)) == []
    assert machine.wait_event("B", 2.0)["data"] == {"n": 2}
    assert [e["event"] for e in machine.qmp_events()] == ["A"]


def test_two_waits_for_one_event_one_gets_it(machine: Machine) -> None:
    first, out1 = _in_thread(lambda: machine.wait_event("X", 1.0))
    second, out2 = _in_thread(lambda: machine.wait_event("X", 1.0))
    _until_a_wait_waits(machine)
    machine.qmp("emit", names=["X"])
    first.join(10)
    second.join(10)
    assert sorted(("result" in out1, "result" in out2)) == [False, True], (out1, out2)


def test_events_nobody_takes_are_kept_up_to_a_bound(
    machine: Machine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """STOP, RESUME, a migration pass's events: nobody takes them, and the store kept
    them for the machine's life (each wait's look scanned them all)."""
    from irqlab.vm.qmp import client

    monkeypatch.setattr(client, "MAX_KEPT_EVENTS", 10)
    machine.qmp("emit", names=[f"E{i}" for i in range(15)])
    machine.wait_event("E14", 2.0)  # all received by now
    assert [e["event"] for e in machine.qmp_events()] == [f"E{i}" for i in range(5, 14)]
