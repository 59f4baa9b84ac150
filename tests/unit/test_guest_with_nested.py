"""``with g:`` blocks nested in one another (a helper's inside its caller's): the inner
one's end closed the guest, and the outer block went on with "the guest is not
connected".  The outermost block's end closes it now."""

from __future__ import annotations

from typing import Any

from irqlab.vm.guest import Guest, GuestConfig


class _Counted(Guest):
    def __init__(self) -> None:
        super().__init__(GuestConfig(name="t"))
        self.calls: list[str] = []

    def start(self) -> Guest:
        self.calls.append("start")
        self.machine = object()  # type: ignore[assignment]
        return self

    def close(self) -> None:
        self.calls.append("close")
        self.machine = None


def test_nested_blocks_close_at_the_outermost_end() -> None:
    g = _Counted()
    with g as outer:
        with g as inner:
            assert inner is outer is g
        assert g.calls == ["start"], g.calls  # the inner end closed nothing
    assert g.calls == ["start", "close"]
    with g:  # a later block starts it again, and closes it at its end
        pass
    assert g.calls == ["start", "close", "start", "close"]


def test_a_block_on_a_started_guest_closes_it_at_its_end() -> None:
    g = _Counted()
    g.start()
    with g:
        pass
    assert g.calls == ["start", "close"]


def test_a_block_whose_start_failed_leaves_no_depth(monkeypatch: Any) -> None:
    g = _Counted()

    def refused() -> Guest:
        raise RuntimeError("no QEMU")

    monkeypatch.setattr(g, "start", refused)
    try:
        with g:
            pass
    except RuntimeError:
        pass
    assert g._with_depth == 0
