"""A snapshot whose guest dies as soon as it runs is no ready state (a module of the
user's whose timer oopses a second after its load): a start whose guest dies right after
its own save removes that save, and a restore whose guest dies at once removes the
snapshot it restored, saying so; a guest that a test panics later keeps its snapshot.
Before: the snapshot was kept, and every later start restored it and panicked."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest

from irqlab.vm import snapshot
from irqlab.vm.guest import Guest, GuestConfig, ensure_snapshot
from irqlab.vm.health import GuestFault
from irqlab.vm.loadscale import timeout_scale

PANIC = "(echo c > /proc/sysrq-trigger) </dev/null >/dev/null 2>&1 &"
VERDICT_S = 10.0  # the watch names a panic within a tick; margin for a loaded host


def _panics_as_the_agent_connects(monkeypatch: pytest.MonkeyPatch) -> list[Guest]:
    """The guests (put in the list) whose next agent connection, a step of their start,
    finds them dead: the guest panics first (SSH is connected by then) and the watch's
    verdict is waited for."""
    real = Guest._connect_agent
    armed: list[Guest] = []

    def hooked(self: Guest) -> None:
        if any(g is self for g in armed):
            armed.remove(self)
            with contextlib.suppress(GuestFault):  # the panic may come before it returns
                self.sh(PANIC)
            assert self.wait_fault(VERDICT_S * timeout_scale()) is not None
        real(self)

    monkeypatch.setattr(Guest, "_connect_agent", hooked)
    return armed


def _notes(e: BaseException) -> list[str]:
    return list(getattr(e, "__notes__", ()))


def test_a_start_whose_guest_dies_right_after_its_save_removes_that_save(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = GuestConfig(name="poison-save", snapshot_tag="test-poison-after-save")
    g = Guest(config)
    key = g.prepare().snapshot_key()
    snapshot.discard(key)  # a cold boot, then the save
    armed = _panics_as_the_agent_connects(monkeypatch)
    real = snapshot.save
    saved: list[Path] = []

    def save(*args: Any, **kw: Any) -> Path:
        saved.append(real(*args, **kw))
        armed.append(g)  # its reconnect after the save
        return saved[-1]

    monkeypatch.setattr(snapshot, "save", save)
    with pytest.raises(GuestFault) as info:
        g.start()
    assert str(info.value).startswith("guest kernel panic: "), info.value
    assert saved and not armed
    said = [n for n in _notes(info.value) if n.startswith(f"the snapshot {saved[0]} ")]
    assert said == [
        f"the snapshot {saved[0]} this start saved was removed: its guest died before "
        "the start ended (no ready state to restore)"
    ], _notes(info.value)
    assert snapshot.lookup(key) is None
    assert g.snapshot_dir is None


def test_a_restore_whose_guest_dies_at_once_removes_the_snapshot_a_later_panic_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = GuestConfig(name="poison-restore", snapshot_tag="test-poison-at-restore")
    path = ensure_snapshot(config)
    key = Guest(config).prepare().snapshot_key()
    # a test's panic, once the start returned: the snapshot did nothing wrong
    g = Guest(config).start()
    try:
        assert g.restored
        with pytest.raises(GuestFault, match=r"^guest kernel panic: "):
            g.sh(PANIC)  # the panic may come before it returns
            g.sh("sleep 60", timeout=90)
    finally:
        g.close()
    assert snapshot.lookup(key) == path
    # the restored guest dies in its start: the snapshot is no ready state
    armed = _panics_as_the_agent_connects(monkeypatch)
    g = Guest(config)
    armed.append(g)
    with pytest.raises(GuestFault) as info:
        g.start()
    assert str(info.value).startswith("guest kernel panic: "), info.value
    assert not armed
    assert (
        f"restored from the snapshot {path}, which was removed: its guest died as soon "
        "as it ran again (the next start boots cold)"
    ) in _notes(info.value), _notes(info.value)
    assert snapshot.lookup(key) is None
    assert g.machine is None
