"""SafeRaise sets the handlers and puts the old ones back for both of its users (the
``irqlab`` command, the pytest plugin): a signal still pending then goes to the old
handler, none to ours."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from irqlab import sigsafe
from irqlab.sigsafe import SafeRaise, SignalRaise

SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)


@pytest.fixture
def got() -> Iterator[list[tuple[str, int]]]:
    """Which handler saw which signal: the "old" ones are set here."""
    seen: list[tuple[str, int]] = []

    def old(signum: int, frame: object) -> None:
        seen.append(("old", signum))

    before = {s: signal.signal(s, old) for s in SIGNALS}
    try:
        yield seen
    finally:
        for s, h in before.items():
            signal.signal(s, h)


def test_the_old_handlers_come_back(got: list[tuple[str, int]]) -> None:
    olds = [signal.getsignal(s) for s in SIGNALS]
    safe = SafeRaise(lambda e: None)

    def ours(signum: int, frame: object) -> None:
        got.append(("ours", signum))

    safe.set_handlers(SIGNALS, ours)
    safe.set_handlers(SIGNALS[:1], ours)  # again: what was there first is kept
    assert [signal.getsignal(s) for s in SIGNALS] == [ours, ours]
    signal.raise_signal(signal.SIGUSR1)
    safe.restore()
    assert [signal.getsignal(s) for s in SIGNALS] == olds
    signal.raise_signal(signal.SIGUSR1)
    assert got == [("ours", signal.SIGUSR1), ("old", signal.SIGUSR1)]
    safe.restore()  # twice: nothing more to put back
    assert [signal.getsignal(s) for s in SIGNALS] == olds


def test_a_signal_still_pending_goes_to_the_old_handler(
    got: list[tuple[str, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sigsafe, "DEFER_S", 5.0)  # the sender does not get to send it
    safe = SafeRaise(lambda e: None)
    safe.set_handlers(SIGNALS, lambda signum, frame: got.append(("ours", signum)))
    assert safe.deliver_again(signal.SIGUSR2)  # deferred: pending as the block ends
    safe.restore()
    assert got == [("old", signal.SIGUSR2)] and not safe.active


def test_a_redelivery_is_told_from_a_new_signal() -> None:
    safe = SafeRaise(lambda e: None)
    try:
        assert not safe.redelivered(signal.SIGUSR1)  # a new one
        safe.active = False  # no sending: only the bookkeeping is looked at
        safe.again.add(signal.SIGUSR1)  # as deliver_again leaves it
        assert safe.redelivered(signal.SIGUSR1)
        assert not safe.redelivered(signal.SIGUSR1) and safe.again == set()
    finally:
        safe.restore()


def test_a_dropped_signal_raise_is_delivered_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """A SignalRaise destroyed while the handlers are ours never reached anyone (C code
    dropped it): its signal again, unless it is pending already; none once they are
    put back (the one that ended the block is destroyed after that)."""
    safe = SafeRaise(lambda e: None)
    sent: list[int] = []
    monkeypatch.setattr(safe, "deliver_again", lambda s: safe.active and not sent.append(s))
    try:
        SignalRaise(signal.SIGUSR1, safe)  # dropped at once
        assert sent == [signal.SIGUSR1]
        safe.again.add(signal.SIGUSR2)  # pending: the unraisable hook sent it
        SignalRaise(signal.SIGUSR2, safe)
        assert sent == [signal.SIGUSR1]
        safe.again.clear()  # nothing for restore() to raise
        kept = SignalRaise(signal.SIGUSR1, safe)
    finally:
        safe.restore()
    sent.clear()
    del kept  # reached the end of the block: destroyed with the handlers back
    SignalRaise(signal.SIGUSR1)  # no SafeRaise: raised by someone else
    assert sent == []


def test_a_signal_raise_caught_and_handled_is_not_delivered_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Terminated caught inside the block (a teardown step's ``except BaseException``)
    was raised a second time when it was destroyed, cutting the teardown short."""
    safe = SafeRaise(lambda e: None)
    sent: list[int] = []
    monkeypatch.setattr(safe, "deliver_again", lambda s: safe.active and not sent.append(s))
    try:
        try:
            raise SignalRaise(signal.SIGUSR1, safe)
        except SignalRaise:
            pass  # handled here: it reached a frame
        assert sent == []
    finally:
        safe.restore()
