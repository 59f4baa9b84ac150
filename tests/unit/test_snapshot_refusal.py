"""A cold boot is saved as a snapshot only when its kernel log is clean (a splat would
be in every guest restored from it) and could be read; a guest that died while it was
read is its start's failure.  Without a VM: the log read and the save are stand-ins."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from irqlab import notice
from irqlab.vm import kernlog, snapshot
from irqlab.vm.guest import Guest, GuestConfig
from irqlab.vm.health import Fault, GuestFault


@pytest.fixture(autouse=True)
def _notices_on_stderr() -> Iterator[None]:
    """What a guest says goes to stderr here (capsys), not to this session's terminal."""
    old = notice.set_sink(None)
    yield
    notice.set_sink(old)


def _guest(monkeypatch: pytest.MonkeyPatch, log: Any) -> tuple[Guest, list[str]]:
    """A Guest as a cold boot leaves it, whose kernel log read returns *log* (or raises
    it, an exception); the keys snapshot.save was called with."""
    g = Guest(GuestConfig(name="t"))
    g.image = SimpleNamespace(version="v")  # type: ignore[assignment]
    g.qemu = SimpleNamespace(binary=Path("/q"))  # type: ignore[assignment]
    g.machine = SimpleNamespace(  # type: ignore[assignment]
        argv=["q"], is_running=lambda: True, qmp=lambda cmd, **kw: {"status": "running"}
    )
    saved: list[str] = []

    def read(guest: Guest, *, scan_leaks: bool, raw: bool = False) -> tuple[str, int]:
        assert not scan_leaks  # a leak scan is the session's, not every boot's
        if isinstance(log, BaseException):
            raise log
        return log  # type: ignore[no-any-return]

    def save(machine: object, key: str, meta: dict[str, Any], **kw: object) -> Path:
        saved.append(key)
        return Path("/snap")

    monkeypatch.setattr(kernlog, "guest_kernel_log", read)
    monkeypatch.setattr(snapshot, "save", save)
    monkeypatch.setattr(g, "_connect_ssh", lambda: None)
    monkeypatch.setattr(g, "_connect_agent", lambda: None)
    return g, saved


def test_a_clean_boot_is_saved(monkeypatch: pytest.MonkeyPatch) -> None:
    """It failed on the first splat of none (IndexError) and no boot was saved."""
    g, saved = _guest(monkeypatch, ("[ 1.0] irqlab: loaded\n", kernlog.EXPECTED_TAINT))
    g._save_snapshot("k")
    assert saved == ["k"] and g.snapshot_error is None and g.snapshot_dir == Path("/snap")


def test_a_boot_with_a_splat_is_not_saved(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    warn = "[ 2.7] WARNING: CPU: 0 PID: 131 at mydrv.c:24 mydrv_init+0x4e/0x1000 [mydrv]"
    g, saved = _guest(monkeypatch, (f"[ 1.0] ok\n{warn}\n", 1 << 9))
    g._save_snapshot("k")
    assert saved == []
    assert g.snapshot_error == (
        f"not saved as the snapshot k: the kernel reported problems while this guest "
        f"booted ({warn})"
    )
    assert capsys.readouterr().err == f"irqlab: t: {g.snapshot_error}\n"


def test_a_log_that_cannot_be_read_is_not_saved(monkeypatch: pytest.MonkeyPatch) -> None:
    g, saved = _guest(monkeypatch, ValueError("invalid literal for int(): 'x'"))
    g._save_snapshot("k")
    assert saved == []
    assert g.snapshot_error == (
        "not saved as the snapshot k: its kernel log could not be read "
        "(invalid literal for int(): 'x')"
    )


def test_a_guest_that_died_while_its_log_was_read_fails_the_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    died = GuestFault(Fault("guest kernel panic: x", ""))
    g, saved = _guest(monkeypatch, died)
    with pytest.raises(GuestFault) as info:
        g._save_snapshot("k")
    assert info.value is died and saved == [] and g.snapshot_error is None


def test_a_failed_save_leaves_the_guest_running_and_says_why(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A full cache filesystem: the save fails, the guest goes on (reconnected), the
    next start boots cold.  It failed the start, so every test of a run errored."""
    g, _ = _guest(monkeypatch, ("[ 1.0] ok\n", kernlog.EXPECTED_TAINT))
    full = "saving x/state.mig: migration failed: Unable to write to file: No space left on device"
    reconnected: list[str] = []

    def save(machine: object, key: str, meta: dict[str, Any], **kw: object) -> Path:
        raise snapshot.SnapshotError(full)

    monkeypatch.setattr(snapshot, "save", save)
    monkeypatch.setattr(g, "_name_fault", lambda: None)  # the watch saw nothing wrong
    monkeypatch.setattr(g, "_connect_ssh", lambda: reconnected.append("ssh"))
    monkeypatch.setattr(g, "_connect_agent", lambda: reconnected.append("agent"))
    g._save_snapshot("k")
    assert reconnected == ["ssh", "agent"]
    assert g.snapshot_dir is None and g.snapshot_error == f"not saved as the snapshot k: {full}"
    assert "No space left on device; going on without it" in capsys.readouterr().err


def test_a_failed_migration_carries_qemus_words() -> None:
    class Qemu:
        returncode = None

        def is_running(self) -> bool:
            return True

        def wait_event(self, name: str, timeout: float) -> Any:
            return {"event": "MIGRATION", "data": {"status": "failed"}}

        def qmp(self, command: str, **kw: Any) -> Any:
            assert command == "query-migrate"
            return {"status": "failed", "error-desc": "Unable to write to file: No space left"}

    with pytest.raises(snapshot.SnapshotError, match=r"^saving s: migration failed: Unable to"):
        snapshot._wait_migration(Qemu(), 5.0, "saving s")  # type: ignore[arg-type]


def test_ensure_snapshot_starts_no_guest_when_the_snapshot_exists(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from irqlab.vm import guest as guest_mod

    (tmp_path / snapshot.STATE_FILE).write_bytes(b"QEVM")
    monkeypatch.setattr(Guest, "prepare", lambda self: self)
    monkeypatch.setattr(Guest, "snapshot_key", lambda self: "k1")
    monkeypatch.setattr(snapshot, "lookup", lambda key: tmp_path)
    monkeypatch.setattr(Guest, "start", lambda self: pytest.fail("a guest started"))
    assert guest_mod.ensure_snapshot(GuestConfig(name="t")) == tmp_path


def _cache_with_snapshot(monkeypatch: pytest.MonkeyPatch, root: Path) -> tuple[Guest, Path]:
    """A guest whose configuration's snapshot in the cache *root* has lost its state
    file (.complete and meta.json stay); its cold boot and save are stand-ins."""
    from irqlab.build import cache

    monkeypatch.setenv("IRQLAB_CACHE_DIR", str(root))
    d = cache.cached_build(
        "snapshot", "0" * 16, lambda t: (t / snapshot.META_FILE).write_text("{}")
    )
    g = Guest(GuestConfig(name="t"))
    monkeypatch.setattr(g, "prepare", lambda: g)
    monkeypatch.setattr(g, "snapshot_key", lambda: "0" * 16)
    monkeypatch.setattr(g, "_cold_start", lambda: None)
    return g, d


def test_a_snapshot_without_its_state_file_is_reported_removed_and_saved_again(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It cold-booted on every start, silently, and was never saved again."""
    g, d = _cache_with_snapshot(monkeypatch, tmp_path)
    saved: list[str] = []
    monkeypatch.setattr(g, "_save_snapshot", saved.append)
    g._start()
    missing = f"snapshot {d / snapshot.STATE_FILE} is missing (its directory is marked complete)"
    assert g.snapshot_error == missing and saved == ["0" * 16] and not d.exists()
    assert capsys.readouterr().err == f"irqlab: {missing}\nirqlab: removed it; booting cold\n"


def test_ensure_snapshot_replaces_a_snapshot_without_its_state_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from irqlab.vm import guest as guest_mod

    _cache_with_snapshot(monkeypatch, tmp_path)
    started: list[Guest] = []
    monkeypatch.setattr(Guest, "prepare", lambda self: self)
    monkeypatch.setattr(Guest, "snapshot_key", lambda self: "0" * 16)
    monkeypatch.setattr(Guest, "start", lambda self: started.append(self) or self)
    monkeypatch.setattr(Guest, "close", lambda self: None)
    with pytest.raises(guest_mod.GuestError, match="none was saved"):
        guest_mod.ensure_snapshot(GuestConfig(name="t"))
    assert len(started) == 1


def test_ensure_snapshot_says_why_none_was_saved(monkeypatch: pytest.MonkeyPatch) -> None:
    from irqlab.vm import guest as guest_mod

    monkeypatch.setattr(Guest, "prepare", lambda self: self)
    monkeypatch.setattr(Guest, "snapshot_key", lambda self: "k1")
    monkeypatch.setattr(snapshot, "lookup", lambda key: None)

    def start(self: Guest) -> Guest:
        self.snapshot_error = "not saved as the snapshot k1: migration failed: disk full"
        return self

    monkeypatch.setattr(Guest, "start", start)
    monkeypatch.setattr(Guest, "close", lambda self: None)
    with pytest.raises(guest_mod.GuestError, match=r"^no snapshot: not saved .* disk full$"):
        guest_mod.ensure_snapshot(GuestConfig(name="t"))
    with pytest.raises(guest_mod.GuestError, match="snapshot=False"):
        guest_mod.ensure_snapshot(GuestConfig(name="t", snapshot=False))
    monkeypatch.setattr(Guest, "start", lambda self: self)  # saved nothing, said nothing
    with pytest.raises(guest_mod.GuestError, match=r"^no snapshot: none was saved$"):
        guest_mod.ensure_snapshot(GuestConfig(name="t"))


def test_a_failed_save_that_left_the_vm_stopped_fails_the_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A save QEMU could not cancel stops the VM later: that guest is no guest to go on
    with (its SSH would time out), the save's error is the start's."""
    g, _ = _guest(monkeypatch, ("[ 1.0] ok\n", kernlog.EXPECTED_TAINT))
    g.machine = SimpleNamespace(  # type: ignore[assignment]
        argv=["q"], is_running=lambda: True, qmp=lambda cmd, **kw: {"status": "postmigrate"}
    )

    def save(machine: object, key: str, meta: dict[str, Any], **kw: object) -> Path:
        raise snapshot.SnapshotError("saving x: no result from QEMU within 120 s")

    monkeypatch.setattr(snapshot, "save", save)
    monkeypatch.setattr(g, "_name_fault", lambda: None)
    with pytest.raises(snapshot.SnapshotError, match="no result from QEMU"):
        g._save_snapshot("k")


def test_a_boot_lock_that_cannot_be_taken_costs_the_snapshot_not_the_guest(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An immutable (or another user's) boot lock failed the start: "irqlab: Operation not
    permitted: ...boot.lock", while an unwritable build lock only cost the save."""
    from irqlab.build import cache

    g, d = _cache_with_snapshot(monkeypatch, tmp_path)
    (d / snapshot.STATE_FILE).write_bytes(b"x")
    d.rename(d.with_name(d.name + ".old"))  # no snapshot: a cold boot, under the boot lock
    lock = cache.lock_file(d, "boot")
    lock.mkdir()  # what cannot be opened as a file
    booted: list[bool] = []
    monkeypatch.setattr(g, "_cold_start", lambda: booted.append(True))
    monkeypatch.setattr(g, "_save_snapshot", lambda key: pytest.fail("saved"))
    g._start()
    why = f"not saved as the snapshot {'0' * 16}: cannot take the lock {lock}: Is a directory"
    assert booted == [True] and g.snapshot_error == why
    assert capsys.readouterr().err == f"irqlab: t: {why}; booting cold\n"


def _count_restores(monkeypatch: pytest.MonkeyPatch, g: Guest) -> list[Path]:
    """The snapshot directories *g*'s start tries to restore (one with its state file
    restores, as a stand-in; one without fails as it does)."""
    tried: list[Path] = []
    real = g._restore

    def restore(directory: Path) -> None:
        tried.append(directory)
        if not snapshot.intact(directory):
            real(directory)

    monkeypatch.setattr(g, "_restore", restore)
    return tried


def test_a_bad_snapshot_that_cannot_be_removed_is_tried_once_per_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It was tried again under the boot lock (QEMU started and refused it twice, ~0.5 s
    of every start) and reported twice."""
    from irqlab.build import cache

    g, d = _cache_with_snapshot(monkeypatch, tmp_path)
    tried = _count_restores(monkeypatch, g)
    booted: list[bool] = []
    monkeypatch.setattr(g, "_cold_start", lambda: booted.append(True))
    monkeypatch.setattr(g, "_save_snapshot", lambda key: None)
    held = cache.hold([d])  # another process's: discard leaves it
    try:
        g._start()
    finally:
        held.release()
    assert tried == [d] and booted == [True] and d.exists()
    err = capsys.readouterr().err
    assert err.count("is missing (its directory is marked complete)") == 1, err
    assert "another process holds it, so it stays for now; booting cold" in err


def test_a_snapshot_saved_in_the_bad_ones_place_meanwhile_is_restored(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Another process saved a good one while this start waited for the boot lock: that
    one is tried (the same path, another directory)."""
    from irqlab.build import cache

    g, d = _cache_with_snapshot(monkeypatch, tmp_path)
    tried = _count_restores(monkeypatch, g)
    monkeypatch.setattr(g, "_cold_start", lambda: pytest.fail("booted cold"))
    real_lock = snapshot.boot_lock

    def saved_meanwhile(key: str, **kw: Any) -> Any:
        cache.cached_build(
            "snapshot", key, lambda t: (t / snapshot.STATE_FILE).write_bytes(b"QEVM")
        )
        return real_lock(key, **kw)

    monkeypatch.setattr(snapshot, "boot_lock", saved_meanwhile)
    g._start()
    assert tried == [d, d] and snapshot.intact(d)


def test_a_save_that_failed_without_qemus_words_says_how_full_the_disk_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A save into a full file system said only "migration failed" (QEMU 7.2 gives no
    error-desc for a descriptor whose write failed): the free space now says why."""
    import shutil as sh
    from collections import namedtuple

    from irqlab.vm import snapshot as snap

    state = tmp_path / "state.mig"
    state.write_bytes(bytes(3 * 2**20))
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(sh, "disk_usage", lambda p: usage(10 * 2**20, 10 * 2**20, 2**19))
    said = snap._failed(f"saving {state}", "failed", {}, state)
    assert said == (
        f"saving {state}: migration failed (QEMU gave no reason; {tmp_path} has 0 MiB "
        "free after 3 MiB were written: the disk is full?)"
    )
    # QEMU's own words stand alone; room enough: nothing guessed
    desc = {"error-desc": "Unable to write to file: No space left on device"}
    assert snap._failed("saving x", "failed", desc, state).endswith(": No space left on device")
    monkeypatch.setattr(sh, "disk_usage", lambda p: usage(2**40, 0, 2**40))
    assert snap._failed("saving x", "failed", {}, state) == "saving x: migration failed"


def test_an_interrupt_of_the_cold_boot_after_a_bad_snapshot_is_not_said_as_its_restore(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The restore's step ("restoring the snapshot DIR") stayed the start's after the
    load failed: a Ctrl-C in the cold boot that replaced it was noted as in the restore."""
    g, _ = _cache_with_snapshot(monkeypatch, tmp_path)
    g.qemu = SimpleNamespace(binary=Path("/q"), datadir=None)  # type: ignore[assignment]
    g.image = SimpleNamespace(version="v")  # type: ignore[assignment]
    monkeypatch.setattr(snapshot, "check", lambda directory: {"qemu": "/q", "image": "v"})
    monkeypatch.setattr(g, "_start_machine", lambda extra=None: None)
    monkeypatch.setattr(g, "_vm", lambda: SimpleNamespace())

    def load(*args: object, **kw: object) -> None:
        raise snapshot.SnapshotError("loading it failed: a test says so")

    def boot() -> None:
        assert g._start_doing == ""
        raise KeyboardInterrupt

    monkeypatch.setattr(snapshot, "load", load)
    monkeypatch.setattr(g, "_cold_start", boot)
    with pytest.raises(KeyboardInterrupt) as info:
        g.start()
    assert not [n for n in getattr(info.value, "__notes__", ()) if n.startswith("interrupted ")]
