"""FIFO pushes and the event queue: order, values, overflow counted and flagged (never silent)."""

from __future__ import annotations

import pytest
from devrig import FIFO, Rig, RigFactory

from irqlab.contract.regs import QOM, REGS
from irqlab.vm.qmp.errors import QMPCommandError

pytestmark = pytest.mark.device


def test_fifo_words_become_events_in_order(rig: Rig) -> None:
    words = [0xDEADBEEF, 0, 0xFFFFFFFF, 42]
    for w in words:
        rig.inj.push(w)
    assert rig.dev.read("FIFO_COUNT") == len(words)
    assert rig.dev.read("EVQ_COUNT") == len(words)
    assert rig.dev.read("IRQ_STATUS") == FIFO
    events = rig.dev.drain()
    assert [e.value for e in events] == words
    assert [e.seq for e in events] == [1, 2, 3, 4]
    assert {(e.source, e.line, e.kind) for e in events} == {(REGS.SRC_FIFO, 0, 0)}
    assert rig.dev.read("FIFO_COUNT") == 0
    assert rig.dev.read("IRQ_STATUS") == FIFO  # latched until W1C
    rig.dev.write("IRQ_STATUS", FIFO)
    assert rig.dev.read("IRQ_STATUS") == 0


def test_pop_on_empty_queue_is_harmless(rig: Rig) -> None:
    rig.dev.write("EVQ_POP", 0)
    assert rig.dev.read("EVQ_COUNT") == 0
    assert rig.dev.head() is None
    assert rig.dev.read("EVQ_HEAD_SEQ") == 0


def test_fifo_overflow_is_counted_and_flagged(rig_factory: RigFactory) -> None:
    r = rig_factory(fifo_depth=2)
    for w in (1, 2, 3, 4):
        r.inj.push(w)
    assert r.dev.read("FIFO_COUNT") == 2
    assert r.dev.read("FIFO_OVERFLOW") == 2
    c = r.inj.counters()
    assert (c.fifo_overflow, c.dropped, c.evq_overflow) == (2, 2, 0)
    assert [e.value for e in r.dev.drain()] == [1, 2]
    r.inj.push(5)
    after = r.dev.pop()
    assert after is not None and after.value == 5
    assert after.dropped, "the first event queued after lost FIFO words must carry EVINFO_DROPPED"
    r.inj.push(6)
    nxt = r.dev.pop()
    assert nxt is not None and not nxt.dropped


def test_fifo_depth_counts_only_fifo_events(rig_factory: RigFactory) -> None:
    r = rig_factory(fifo_depth=1)
    r.dev.write("GPIO_RISING", 1)
    r.inj.pulse(0)  # a GPIO event in the queue does not use FIFO room
    r.inj.push(1)
    assert r.dev.read("FIFO_COUNT") == 1
    assert r.dev.read("FIFO_OVERFLOW") == 0
    assert r.dev.read("EVQ_COUNT") == 2


def test_evq_overflow_is_counted_and_flagged(rig_factory: RigFactory) -> None:
    r = rig_factory(evq_depth=4)
    for w in range(6):
        r.inj.push(w)
    assert r.dev.read("EVQ_COUNT") == 4
    assert r.dev.read("EVQ_OVERFLOW") == 2
    c = r.inj.counters()
    assert (c.raised, c.evq_overflow, c.dropped, c.fifo_overflow) == (6, 2, 2, 0)
    queued = r.dev.drain()
    assert [e.value for e in queued] == [0, 1, 2, 3]
    assert not any(e.dropped for e in queued)
    r.inj.push(100)
    r.inj.push(101)
    flagged, plain = r.dev.drain()
    assert (flagged.value, flagged.dropped) == (100, True)
    assert flagged.seq == 7  # the dropped raises used sequence numbers 5 and 6
    assert (plain.value, plain.dropped) == (101, False)


def test_queue_wraps_around(rig_factory: RigFactory) -> None:
    r = rig_factory(evq_depth=3)
    values = []
    for round_ in range(4):
        for i in range(2):
            r.inj.push(round_ * 10 + i)
        values += [e.value for e in r.dev.drain()]
    assert values == [0, 1, 10, 11, 20, 21, 30, 31]
    assert r.inj.counters().evq_overflow == 0


def test_pipelined_pushes_arrive_in_order(rig: Rig) -> None:
    words = list(range(100, 300))
    rig.inj.push_many(words, window=8)
    events = rig.dev.drain()
    assert [e.value for e in events] == words
    assert [e.seq for e in events] == list(range(1, len(words) + 1))


def test_pipelined_batch_with_a_bad_command_fails_and_qemu_keeps_running(rig: Rig) -> None:
    cmds: list[tuple[str, dict[str, object] | None]] = [
        ("qom-set", {"path": rig.inj.path, "property": QOM.PROP_FIFO_PUSH, "value": 1}),
        ("qom-set", {"path": rig.inj.path, "property": "no-such-property", "value": 1}),
        ("qom-set", {"path": rig.inj.path, "property": QOM.PROP_FIFO_PUSH, "value": 2}),
    ]
    with pytest.raises(QMPCommandError, match="no-such-property"):
        rig.machine.qmp_many(cmds, window=3)
    # The commands are independent: the ones around the bad one still ran.
    assert [e.value for e in rig.dev.drain()] == [1, 2]
    assert rig.machine.qmp("query-status")["status"] == "running"
