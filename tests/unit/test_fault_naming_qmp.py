"""The device injector's QMP runner of a guest: a QMP failure once the guest died or
froze is a GuestFault naming why, for one command and for pipelined ones alike.
Without a VM: the guest and its machine are stand-ins."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from irqlab.vm.guest import FAULT_VERDICT, Guest, GuestError, _FaultNamingQmp
from irqlab.vm.health import Fault, GuestFault
from irqlab.vm.machine import MachineError

PANIC = Fault("guest kernel panic: x", "")


class StandIn:
    """A guest (its fault, the health watch's verdict) and its machine (QMP calls)."""

    def __init__(self, fault: Fault | None = None, verdict: Fault | None = None) -> None:
        self.fault, self.verdict = fault, verdict
        self.calls: list[str] = []
        self.waits: list[float] = []
        self.error: MachineError | None = None
        self.machine: StandIn | None = self  # the guest's QEMU: this one
        self._closes = 0  # the guest's close() calls
        self.closes_in_call = False  # another thread's close() ends the call
        self.closing = False  # the machine's close() began
        self.config = SimpleNamespace(name="t")

    _closed_meanwhile = Guest._closed_meanwhile  # the guest's own words

    def wait_fault(self, timeout: float) -> Fault | None:
        self.waits.append(timeout)
        return self.verdict

    def qmp(self, command: str, args: object) -> Any:
        self.calls.append(command)
        if self.closes_in_call:
            self._closes += 1
        if self.error is not None:
            raise self.error
        return {"return": command}

    def qmp_many(
        self, commands: list[tuple[str, object]], *, window: int, timeout: float | None
    ) -> list[Any]:
        self.calls += [c for c, _ in commands]
        if self.closes_in_call:
            self._closes += 1
        if self.error is not None:
            raise self.error
        return [window] * len(commands)


CALLS: list[tuple[Callable[[_FaultNamingQmp], Any], str, Any]] = [
    (lambda q: q.qmp("qom-get", {}), "QMP qom-get", {"return": "qom-get"}),
    (
        lambda q: q.qmp_many([("qom-set", {}), ("qom-get", None)], window=3),
        "QMP 2 pipelined commands",
        [3, 3],
    ),
]


@pytest.mark.parametrize(("call", "doing", "result"), CALLS)
def test_a_call_of_a_live_guest_returns_and_a_dead_one_is_refused_at_once(
    call: Callable[[_FaultNamingQmp], Any], doing: str, result: Any
) -> None:
    live = StandIn()
    assert call(_FaultNamingQmp(live, live)) == result  # type: ignore[arg-type]
    assert live.calls and live.waits == []
    dead = StandIn(fault=PANIC)
    with pytest.raises(GuestFault) as info:
        call(_FaultNamingQmp(dead, dead))  # type: ignore[arg-type]
    assert str(info.value) == f"guest kernel panic: x ({doing})"
    assert dead.calls == [] and dead.waits == []  # not asked: no wait on a dead guest


@pytest.mark.parametrize(("call", "doing", "result"), CALLS)
def test_a_failed_call_names_the_verdict_or_stays_what_it_was(
    call: Callable[[_FaultNamingQmp], Any], doing: str, result: Any
) -> None:
    died = StandIn(verdict=PANIC)
    died.error = MachineError("QMP: not connected")
    with pytest.raises(GuestFault) as info:
        call(_FaultNamingQmp(died, died))  # type: ignore[arg-type]
    assert str(info.value) == f"guest kernel panic: x ({doing})"
    # the verdict alone: QMP's lost connection (and the MachineError around it) is its
    # consequence; three chained tracebacks before the test's own line said no more
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert died.waits == [FAULT_VERDICT]
    healthy = StandIn()
    healthy.error = MachineError("QMP: device not found")
    with pytest.raises(MachineError) as plain:
        call(_FaultNamingQmp(healthy, healthy))  # type: ignore[arg-type]
    assert plain.value is healthy.error and healthy.waits == [FAULT_VERDICT]


@pytest.mark.parametrize(("call", "doing", "result"), CALLS)
def test_an_injector_of_a_stopped_qemu_says_so_at_once(
    call: Callable[[_FaultNamingQmp], Any], doing: str, result: Any
) -> None:
    """An injector taken before g.restart() waited 2 s, then said "QMP qom-set: not
    connected / QEMU exit status 0"."""
    guest, old = StandIn(), StandIn()
    with pytest.raises(GuestError) as e:
        call(_FaultNamingQmp(guest, old))  # type: ignore[arg-type]
    assert str(e.value) == (
        f"{doing}: this injector's QEMU was stopped (its guest was closed or restarted): "
        "take the running guest's g.injector"
    )
    assert old.calls == [] and guest.waits == []


@pytest.mark.parametrize(("call", "doing", "result"), CALLS)
def test_a_call_another_threads_close_ended_says_so(
    call: Callable[[_FaultNamingQmp], Any], doing: str, result: Any
) -> None:
    """wait_counters() and wait_burst_done() (QMP waits) that another thread's close()
    ended said "MachineError: QMP qom-get: connection lost before the reply
    (Disconnected)"; a command's wait says the guest was closed by another thread."""
    guest = StandIn()
    guest.closes_in_call = True
    guest.error = MachineError("QMP qom-get: connection lost before the reply (Disconnected)")
    with pytest.raises(GuestError) as info:
        call(_FaultNamingQmp(guest, guest))  # type: ignore[arg-type]
    assert str(info.value) == (
        f"the guest 't' was closed (or restarted) by another thread while {doing}"
    )
    assert not isinstance(info.value, MachineError) and guest.waits == []
    # a call that began after the close() did, before it stopped QEMU
    guest = StandIn()
    guest.closing = True
    guest.error = MachineError("QMP qom-get: connection lost before the reply (Disconnected)")
    with pytest.raises(GuestError, match=r"closed \(or restarted\) by another thread while "):
        call(_FaultNamingQmp(guest, guest))  # type: ignore[arg-type]
