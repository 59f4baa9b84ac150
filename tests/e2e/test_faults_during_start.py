"""QEMU killed or stopped while a guest starts (restoring its snapshot, connecting SSH,
opening the agent's session) is named within seconds, the snapshot is kept (it did
nothing wrong), and the stop takes no longer than a kill.  Before: a kill while SSH
connected waited out ssh_timeout (60 s) for "no SSH connection"; a kill while the
snapshot loaded deleted the snapshot and cold-booted as if it were bad; a stopped
QEMU took 20 s to close (quit and SIGTERM waited their timeouts)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from faultwait import raises_within  # same directory (rootdir-relative import)

from irqlab.vm import snapshot
from irqlab.vm.guest import Guest, GuestConfig, GuestError, ensure_snapshot
from irqlab.vm.health import GuestFault
from irqlab.vm.loadscale import timeout_scale

KILLED_S = 5.0  # the watch sees an exit within a tick; margin for a loaded host
STOPPED_S = 20.0  # the freeze verdict (QMP silent, ~3.5 s) and an attempt's timeout
FROZEN_S = 10.0  # the freeze verdict (QMP silent for 3 s) alone, with margin


_SENT_AT: dict[int, float] = {}  # pid -> when _on_entry's signal went to it


def sent_at(sent: list[int]) -> float:
    """When the signal of :func:`_on_entry` was sent (host monotonic clock)."""
    return _SENT_AT[sent[0]]


def _on_entry(
    monkeypatch: pytest.MonkeyPatch, owner: Any, name: str, sig: signal.Signals
) -> list[int]:
    """Send *sig* to the guest's QEMU as *owner.name* is entered the first time; the
    pids it went to."""
    real: Callable[..., Any] = getattr(owner, name)
    sent: list[int] = []

    def hooked(*args: Any, **kw: Any) -> Any:
        if not sent:
            target = args[0] if isinstance(args[0], Guest) else None
            machine = target.machine if target is not None else args[0]
            sent.append(machine.pid)
            _SENT_AT[machine.pid] = time.monotonic()
            os.kill(machine.pid, sig)
        return real(*args, **kw)

    monkeypatch.setattr(owner, name, hooked)
    return sent


def _start_fails_naming(config: GuestConfig, cause: str, limit: float) -> BaseException:
    e = raises_within(lambda: Guest(config).start().close(), limit, GuestFault)  # no close
    assert str(e).startswith(cause), str(e)
    return e


@pytest.mark.parametrize("step", ["_connect_ssh", "_open_agent_session"])
def test_qemu_killed_while_a_restored_guest_connects_is_named(
    monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    ensure_snapshot(GuestConfig())
    sent = _on_entry(monkeypatch, Guest, step, signal.SIGKILL)
    _start_fails_naming(GuestConfig(name=f"kill-{step}"), "QEMU exited with status -9", KILLED_S)
    assert sent
    with pytest.raises(ProcessLookupError):  # killed and reaped by the start's cleanup
        os.kill(sent[0], 0)


@pytest.mark.parametrize("command", ["cont", "human-monitor-command"])
def test_qemu_killed_under_a_qmp_call_of_the_start_is_named(
    monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    """A QMP call of the restore that lost its connection as QEMU died raised
    MachineError "QMP cont: connection lost before the reply", no GuestFault."""
    from irqlab.vm.machine import Machine

    ensure_snapshot(GuestConfig())
    real = Machine.qmp
    sent: list[int] = []

    def qmp(self: Machine, cmd: str, *args: Any, **kw: Any) -> Any:
        if cmd == command and not sent:
            sent.append(self.pid)
            os.kill(self.pid, signal.SIGKILL)
        return real(self, cmd, *args, **kw)

    monkeypatch.setattr(Machine, "qmp", qmp)
    _start_fails_naming(GuestConfig(name=f"kill-{command}"), "QEMU exited with status -9", KILLED_S)
    assert sent


def test_a_stopped_qemu_while_ssh_connects_is_named_and_killed_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ensure_snapshot(GuestConfig())
    sent = _on_entry(monkeypatch, Guest, "_connect_ssh", signal.SIGSTOP)
    e = _start_fails_naming(GuestConfig(name="stop-ssh"), "", STOPPED_S)
    assert "QMP" in str(e).splitlines()[0] or "frozen" in str(e).splitlines()[0], str(e)
    assert sent
    with pytest.raises(ProcessLookupError):  # killed and reaped by the start's cleanup
        os.kill(sent[0], 0)


@pytest.mark.parametrize(
    ("sig", "cause", "limit"),
    [
        (signal.SIGKILL, "QEMU exited with status -9", KILLED_S),
        # QEMU says "terminating on signal 15" and exits 0, as a quit would
        (signal.SIGTERM, "QEMU exited with status 0", KILLED_S),
        # the freeze verdict (QMP silent for 3 s) ends the load's QMP wait, which ran
        # to its own 30 s before
        (signal.SIGSTOP, "guest stopped responding: QEMU did not answer QMP", FROZEN_S),
    ],
    ids=["SIGKILL", "SIGTERM", "SIGSTOP"],
)
def test_qemu_killed_while_the_snapshot_loads_keeps_the_snapshot(
    monkeypatch: pytest.MonkeyPatch, sig: signal.Signals, cause: str, limit: float
) -> None:
    # a snapshot of each case's own: the other case, on another xdist worker, discards
    # its own at the end (one shared key was removed under this one's feet)
    config = GuestConfig(name="kill-load", snapshot_tag=f"test-kill-while-loading-{sig.name}")
    saved = ensure_snapshot(config)
    state = saved / snapshot.STATE_FILE
    before = state.stat()
    sent = _on_entry(monkeypatch, snapshot, "load", sig)
    _start_fails_naming(config, cause, limit)
    assert sent
    after = state.stat()  # the same file, not removed and saved again by a cold boot
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert snapshot.lookup(Guest(config).prepare().snapshot_key()) == saved
    snapshot.discard(Guest(config).prepare().snapshot_key())


@pytest.mark.parametrize(
    ("sig", "cause"),
    [
        (signal.SIGKILL, "QEMU exited with status -9"),
        (signal.SIGSTOP, "guest stopped responding: QEMU did not answer QMP"),
    ],
    ids=["SIGKILL", "SIGSTOP"],
)
def test_qemu_killed_or_stopped_while_the_snapshot_is_saved_is_named(
    monkeypatch: pytest.MonkeyPatch, sig: signal.Signals, cause: str
) -> None:
    """The health watch was stopped during the save: a stopped QEMU cost each of the
    save's QMP calls 30 s (33-63 s in all) and ended in "no reply within 30 s"."""
    config = GuestConfig(name="kill-save", snapshot_tag=f"test-kill-while-saving-{sig.name}")
    key = Guest(config).prepare().snapshot_key()
    snapshot.discard(key)  # a cold boot, then the save this test interrupts
    sent = _on_entry(monkeypatch, snapshot, "save", sig)
    with pytest.raises(GuestFault) as info:
        Guest(config).start().close()
    took = time.monotonic() - sent_at(sent)
    assert str(info.value).startswith(cause), info.value
    # which step it ended: the cause alone ("QEMU exited with status -9") named none
    assert f"the guest 'kill-save' was starting: saving the snapshot {key}" in getattr(
        info.value, "__notes__", ()
    ), info.value.__notes__
    limit = (KILLED_S if sig == signal.SIGKILL else FROZEN_S) * timeout_scale()
    assert took < limit, f"named {took:.1f} s after the signal (limit {limit:.1f} s)"
    with pytest.raises(ProcessLookupError):  # killed and reaped by the start's cleanup
        os.kill(sent[0], 0)
    assert snapshot.lookup(key) is None, "a save that did not finish is no snapshot"


def test_a_start_another_threads_close_ends_while_it_saves_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """close() from another thread during the save: the start said
    "concurrent.futures._base.CancelledError" (no message) or "GuestFault: QEMU exited
    with status 0 (starting the guest)", blaming the guest for the caller's close."""
    import threading

    config = GuestConfig(name="close-save", snapshot_tag="test-close-while-saving")
    g = Guest(config)
    key = g.prepare().snapshot_key()
    snapshot.discard(key)  # a cold boot, then the save another thread's close() ends
    real = snapshot.save
    closers: list[threading.Thread] = []

    def save(*args: Any, **kw: Any) -> Path:
        closers.append(threading.Thread(target=g.close))
        closers[0].start()
        return real(*args, **kw)

    monkeypatch.setattr(snapshot, "save", save)
    with pytest.raises(GuestError) as info:
        g.start()
    closers[0].join(30)
    assert str(info.value) == (
        "the guest 'close-save' was closed (or restarted) by another thread while it "
        f"started (saving the snapshot {key})"
    )
    assert not isinstance(info.value, GuestFault)
    assert g.machine is None
    assert snapshot.lookup(key) is None, "a save that did not finish is no snapshot"


def test_a_start_waiting_on_another_process_cold_boot_ends_at_close(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """close() from another thread while the start waits for another process's cold boot
    of the same snapshot (pytest-xdist workers, two terminals: minutes under load): the
    wait went on until that boot was done, then the start failed."""
    import fcntl
    import subprocess
    import sys
    import threading

    from irqlab.build import cache

    config = GuestConfig(name="close-wait", snapshot_tag="test-close-while-waiting")
    g = Guest(config)
    key = g.prepare().snapshot_key()
    snapshot.discard(key)  # a miss: the start waits on the boot lock
    lock = cache.lock_file(cache.output_dir(snapshot.RECIPE, key), cache.BOOT_LOCK)
    holder = subprocess.Popen(  # another process "cold-booting" it, as irqlab's would
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys; f = open(sys.argv[1], 'a+'); "
            "fcntl.flock(f, fcntl.LOCK_EX); f.truncate(0); f.write(str(os.getpid())); "
            "f.flush(); print('held', flush=True); sys.stdin.read()",
            str(lock),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    ended: list[BaseException] = []

    def start() -> None:
        try:
            g.start()
        except BaseException as e:  # the test looks at it
            ended.append(e)

    starter = threading.Thread(target=start, daemon=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with open(lock) as f, pytest.raises(BlockingIOError):  # held: no lock for us
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        starter.start()
        said = ""
        deadline = time.monotonic() + 30
        while f"waiting for process {holder.pid}" not in said and time.monotonic() < deadline:
            starter.join(0.02)  # until the start says it waits on the lock
            said += capsys.readouterr().err
        assert f"waiting for process {holder.pid}" in said, said
        t0 = time.monotonic()
        g.close()
        starter.join(5)
        took = time.monotonic() - t0
        assert not starter.is_alive(), "the start still waits on the other's boot lock"
        assert took < 2, f"the start ended {took:.1f} s after close()"
        assert [type(e) for e in ended] == [GuestError]
        assert str(ended[0]) == (
            "the guest 'close-wait' was closed (or restarted) by another thread while it "
            f"started (waiting for another process's cold boot for the snapshot {key})"
        )
        assert g.machine is None
    finally:
        holder.kill()
        holder.wait()
        if starter.is_alive():  # it went on once the lock was free (a failed test)
            starter.join(120)
        g.close()


def test_an_interrupt_while_the_snapshot_is_saved_names_the_save(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ctrl-C or SIGTERM of pytest during a save: its line said only "irqlab: the run
    was interrupted during test_base.py::test_own (its logs: ...)", where a command's
    says what ran; the interrupt notes the save (the plugin's line shows it)."""
    config = GuestConfig(name="int-save", snapshot_tag="test-interrupt-while-saving")
    g = Guest(config)
    key = g.prepare().snapshot_key()
    snapshot.discard(key)  # a cold boot, then the save the interrupt ends
    real = snapshot.save

    def save(*args: Any, **kw: Any) -> Path:
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, at once or inside the save
        return real(*args, **kw)

    monkeypatch.setattr(snapshot, "save", save)
    with pytest.raises(KeyboardInterrupt) as info:
        g.start()
    notes = [n for n in getattr(info.value, "__notes__", ()) if n.startswith("interrupted ")]
    assert notes == [f"interrupted in the guest 'int-save' saving the snapshot {key}"]
    assert g.machine is None
    assert snapshot.lookup(key) is None, "a save that did not finish is no snapshot"


def test_a_start_that_fails_before_qemu_runs_keeps_its_own_words(tmp_path: Path) -> None:
    """A log directory the user cannot make (root's ``build/logs`` in a non-root user's
    checkout) said "QEMU exited with status None (starting the guest)": the start's
    fault check took a QEMU never spawned for one that died."""
    from irqlab.vm.machine import LogDirError

    not_a_dir = tmp_path / "logs"
    not_a_dir.write_text("")  # mkdir under it fails as a root-owned one does for a user
    g = Guest(GuestConfig(name="nolog", log_dir=not_a_dir / "guest"))
    with pytest.raises(LogDirError, match="cannot make the guest's log directory") as e:
        g.start()
    assert "status None" not in str(e.value)
    # the setting that named it, not IRQLAB_LOG_DIR (which the user had not set)
    assert "(point GuestConfig(log_dir=...) at a writable directory)" in str(e.value)
    assert g.machine is None or not g.machine.spawned
