"""After a save, the VM is continued only once QEMU left finish-migrate (a ``cont``
right after the MIGRATION completed event is refused while it lasts)."""

from __future__ import annotations

from typing import Any

import pytest

from irqlab.vm import snapshot


class FakeQemu:
    def __init__(self, finishing: int) -> None:
        self.finishing = finishing  # query-status answers finish-migrate this many times
        self.calls: list[str] = []

    def qmp(self, command: str, *args: Any, **kw: Any) -> Any:
        self.calls.append(command)
        if command == "query-status":
            if self.finishing > 0:
                self.finishing -= 1
                return {"status": "finish-migrate"}
            return {"status": "postmigrate"}
        if command == "cont":
            assert self.finishing == 0, "cont while QEMU is still in finish-migrate"
            return {}
        raise AssertionError(command)


def test_cont_waits_for_qemu_to_leave_finish_migrate() -> None:
    q = FakeQemu(finishing=3)
    snapshot._continue_after_save(q)  # type: ignore[arg-type]
    assert q.calls == ["query-status"] * 4 + ["cont"]


def test_cont_at_once_when_the_migration_is_finalized() -> None:
    q = FakeQemu(finishing=0)
    snapshot._continue_after_save(q)  # type: ignore[arg-type]
    assert q.calls == ["query-status", "cont"]


def test_a_qemu_stuck_in_finish_migrate_is_an_error() -> None:
    q = FakeQemu(finishing=10**9)
    with pytest.raises(snapshot.SnapshotError, match="finish-migrate"):
        snapshot._continue_after_save(q, timeout=0.05)  # type: ignore[arg-type]
    assert "cont" not in q.calls


class LostEvents:
    """A QEMU whose MIGRATION events never reach the waiter; query-migrate tells."""

    def __init__(self, statuses: list[str]) -> None:
        self.statuses = statuses
        self.returncode = None

    def is_running(self) -> bool:
        return True

    def wait_event(self, name: str, timeout: float) -> Any:
        from irqlab.vm.machine import MachineError

        raise MachineError("no event")

    def qmp(self, command: str, *args: Any, **kw: Any) -> Any:
        assert command == "query-migrate"
        return (
            {"status": self.statuses.pop(0)}
            if len(self.statuses) > 1
            else {"status": self.statuses[0]}
        )


def test_a_lost_completed_event_is_caught_by_query_migrate() -> None:
    q = LostEvents(["setup", "active", "active", "completed"])
    ev = snapshot._wait_migration(q, 5.0, "saving")  # type: ignore[arg-type]
    assert ev["data"]["status"] == "completed"


def test_a_failed_migration_is_caught_by_query_migrate() -> None:
    q = LostEvents(["active", "failed"])
    with pytest.raises(snapshot.SnapshotError, match="migration failed"):
        snapshot._wait_migration(q, 5.0, "saving")  # type: ignore[arg-type]
