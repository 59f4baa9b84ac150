"""After a save, the VM is continued only once QEMU left finish-migrate (a ``cont``
right after the MIGRATION completed event is refused while it lasts)."""

from __future__ import annotations

import os
from pathlib import Path
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


class LateEvents:
    """A QEMU whose queue holds an earlier migration's last event (it came after
    query-migrate ended that one's wait); this migration's own comes after it."""

    def __init__(self, events: list[str], statuses: list[str]) -> None:
        self.events = events  # MIGRATION statuses, in the order they are taken
        self.statuses = statuses  # query-migrate's answers (the last one repeats)
        self.returncode = None

    def is_running(self) -> bool:
        return True

    def wait_event(self, name: str, timeout: float) -> Any:
        from irqlab.vm.machine import MachineError

        if not self.events:
            raise MachineError("no event")
        return {"event": name, "data": {"status": self.events.pop(0)}}

    def qmp(self, command: str, *args: Any, **kw: Any) -> Any:
        assert command == "query-migrate"
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return {"status": status}


@pytest.mark.parametrize("stale", ["completed", "failed", "cancelled"])
def test_an_earlier_migrations_last_event_does_not_end_this_wait(stale: str) -> None:
    """The wait took the leftover event as this save's end: the save returned while
    QEMU went on writing (meta's size of a half-written file, the VM continued, then
    stopped for good when the migration ended)."""
    q = LateEvents([stale, "setup", "active", "completed"], ["active", "completed"])
    ev = snapshot._wait_migration(q, 5.0, "saving")  # type: ignore[arg-type]
    assert ev["data"]["status"] == "completed"
    assert not q.events, "returned before this migration's own completed event"


def test_qemus_answer_decides_over_a_leftover_final_event() -> None:
    """An earlier save's late event is final too: QEMU's own status of this migration
    decides (a late "completed" made a failed save look good, a late "failed" threw a
    good one away)."""
    q = LateEvents(["completed"], ["failed"])
    with pytest.raises(snapshot.SnapshotError, match="migration failed"):
        snapshot._wait_migration(q, 5.0, "saving")  # type: ignore[arg-type]
    q = LateEvents(["failed"], ["completed"])
    ev = snapshot._wait_migration(q, 5.0, "saving")  # type: ignore[arg-type]
    assert ev["data"]["status"] == "completed"


class FdQemu:
    """Takes the state file's descriptor (``getfd``) and the migrate command."""

    def __init__(self) -> None:
        self.fds: list[tuple[str, str]] = []  # (name, the file it was open on)
        self.uris: list[str] = []

    def send_fd(self, fd: int, name: str) -> None:
        self.fds.append((name, os.readlink(f"/proc/self/fd/{fd}")))

    def qmp(self, command: str, *args: Any, **kw: Any) -> Any:
        if command == "migrate-incoming":
            self.uris.append(kw["uri"])
        return {}

    def stderr_tail(self) -> str:
        return ""


def test_qemu_gets_the_state_file_by_descriptor(tmp_path: Path) -> None:
    (tmp_path / snapshot.STATE_FILE).write_bytes(b"QEVM")
    q = FdQemu()
    with snapshot._state_fd(q, tmp_path / snapshot.STATE_FILE, os.O_RDONLY) as uri:  # type: ignore[arg-type]
        q.qmp("migrate-incoming", uri=uri)
    assert q.fds == [(snapshot.STATE_FD_NAME, str(tmp_path / snapshot.STATE_FILE))]
    assert q.uris == [f"fd:{snapshot.STATE_FD_NAME}"]


def test_a_state_file_gone_before_the_load_is_a_snapshot_error(tmp_path: Path) -> None:
    """Another run pruned it: the error names the file (the caller then cold-boots)."""
    q = FdQemu()
    with pytest.raises(snapshot.SnapshotError, match=f"loading the snapshot {tmp_path}.*failed"):
        snapshot.load(q, tmp_path)  # type: ignore[arg-type]
    assert q.fds == [] and q.uris == []


def test_a_refused_migration_command_has_qemu_close_the_descriptor(tmp_path: Path) -> None:
    from irqlab.vm.qmp.errors import QMPCommandError

    class Refusing(FdQemu):
        def qmp(self, command: str, *args: Any, **kw: Any) -> Any:
            if command == "migrate-incoming":
                raise QMPCommandError(command, kw, "GenericError", "refused")
            self.uris.append(f"{command} {kw.get('fdname', '')}".strip())
            return {}

    (tmp_path / snapshot.STATE_FILE).write_bytes(b"QEVM")
    q = Refusing()
    with pytest.raises(snapshot.SnapshotError, match="refused"):
        snapshot.load(q, tmp_path)  # type: ignore[arg-type]
    assert q.uris[-1] == f"closefd {snapshot.STATE_FD_NAME}", q.uris


class StillSaving:
    """A QEMU whose save never reports an end (the wait times out): it cancels when
    told, after two more looks."""

    returncode = None

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.cancel_looks = -1

    def is_running(self) -> bool:
        return True

    def wait_event(self, name: str, timeout: float) -> Any:
        from irqlab.vm.machine import MachineError

        raise MachineError("no event")

    def qmp(self, command: str, *args: Any, **kw: Any) -> Any:
        self.calls.append(command)
        if command == "migrate_cancel":
            self.cancel_looks = 2
            return {}
        if command == "query-migrate":
            if self.cancel_looks < 0:
                return {"status": "active"}
            self.cancel_looks -= 1
            return {"status": "cancelling" if self.cancel_looks >= 0 else "cancelled"}
        if command == "query-status":
            return {"status": "paused"}
        return {}


def test_a_save_that_times_out_is_cancelled_before_the_vm_goes_on() -> None:
    """Left running, it stopped the VM into postmigrate later, under a continued guest."""
    q = StillSaving()
    with pytest.raises(snapshot.SnapshotError, match="no result from QEMU"):
        snapshot._wait_migration(q, 0.01, "saving")  # type: ignore[arg-type]
    snapshot._cancel_migration(q)  # type: ignore[arg-type]
    assert q.calls[-4:] == ["migrate_cancel", "query-migrate", "query-migrate", "query-migrate"]


class SavingQemu(StillSaving):
    """StillSaving as save() drives it: the state file's descriptor, the VM stopped."""

    def send_fd(self, fd: int, name: str) -> None:
        self.calls.append("getfd")

    def take_events(self, names: list[str], timeout: float = 2.0) -> list[Any]:
        self.calls.append("take_events")  # the queue's leftovers: none here
        return []


def _save(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, q: SavingQemu) -> None:
    from irqlab.build import cache

    def build(name: str, key: str, write: Any, **kw: Any) -> Path:
        write(tmp_path)
        return tmp_path

    monkeypatch.setattr(cache, "cached_build", build)
    with pytest.raises(snapshot.SnapshotError, match="no result from QEMU"):
        snapshot.save(q, "k", {}, timeout=0.01)  # type: ignore[arg-type]


def test_save_cancels_a_save_that_timed_out_before_it_continues_the_vm(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    q = SavingQemu()
    _save(monkeypatch, tmp_path, q)
    cancel = q.calls.index("migrate_cancel")
    assert "cont" not in q.calls[:cancel] and q.calls[-1] == "cont", q.calls


def test_save_leaves_the_vm_stopped_when_the_save_cannot_be_cancelled(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Continued, it would be stopped again by the save's end, under the guest."""
    monkeypatch.setattr(snapshot, "_cancel_migration", lambda machine: False)
    q = SavingQemu()
    _save(monkeypatch, tmp_path, q)
    assert "cont" not in q.calls, q.calls
