"""``irqlab inject burst N --counters`` waits for the burst's last step before it prints
the counters; a burst that does not end in its own time plus a margin (a QEMU stopped
under it) is an error naming the steps left, not a wait for ever."""

from __future__ import annotations

import pytest

from irqlab.cli import guestcmd
from irqlab.errors import IrqlabError
from irqlab.vm.qmp.injector import Counters


class _Injector:
    """A device whose burst makes one step per read of the steps left, or none."""

    def __init__(self, steps: int, *, stuck: bool = False) -> None:
        self.left = steps
        self.stuck = stuck
        self.reads = 0

    def burst_period(self) -> int:
        return 1_000_000  # 1 ms

    def burst_remaining(self) -> int:
        self.reads += 1
        if not self.stuck and self.left:
            self.left -= 1
        return self.left

    def counters(self) -> Counters:
        return Counters(3, 3, 0, 0, 0, 0, 0, 0, 0, 4)


def test_the_wait_ends_with_the_last_step(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guestcmd, "BURST_POLL_S", 0.0)
    inj = _Injector(5)
    guestcmd._wait_burst_done(inj, 5)
    assert inj.left == 0 and inj.reads == 5


def test_a_burst_that_does_not_end_is_an_error_naming_the_steps_left(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(guestcmd, "BURST_MARGIN_S", 0.05)
    monkeypatch.setattr(guestcmd, "BURST_POLL_S", 0.01)
    monkeypatch.setattr("irqlab.vm.loadscale.scaled", lambda s: s)
    with pytest.raises(IrqlabError) as e:
        guestcmd._wait_burst_done(_Injector(7, stuck=True), 10)
    assert str(e.value).startswith("inject burst: 7 of its 10 steps still to come after 0 s")
    assert '"raised": 3' in str(e.value)
