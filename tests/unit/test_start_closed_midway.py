"""Another thread's close() while start() runs ends that start at its next step, with
GuestError "was closed (or restarted) by another thread while it started", and nothing
after the close starts a QEMU, discards a snapshot or waits (chaos runs: a start that
went on after the close returned a running guest, discarded the good snapshot a close
made fail to load and booted cold, or retried SSH for ssh_timeout after QEMU was gone).
Without a VM: each step is a stand-in, and the close runs in another thread at the
exact step, waited for before the step goes on."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NoReturn

import pytest

from irqlab import notice
from irqlab.testing.helpers import start_in_a_thread
from irqlab.vm import guest as guest_mod
from irqlab.vm import snapshot
from irqlab.vm.guest import Guest, GuestConfig, GuestError
from irqlab.vm.health import Fault
from irqlab.vm.loadscale import scaled
from irqlab.vm.ssh import SshError

CLOSED = r"^the guest 't' was closed \(or restarted\) by another thread while it started"


@pytest.fixture(autouse=True)
def _notices_on_stderr() -> Iterator[None]:
    old = notice.set_sink(None)
    yield
    notice.set_sink(old)


def _close_from_another_thread(g: Guest) -> None:
    """g.close() in another thread, waited for (as a closer's close() returns)."""
    errors: list[BaseException] = []

    def close() -> None:
        try:
            g.close()
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=close)
    t.start()
    t.join(scaled(10))
    assert not t.is_alive() and errors == []


def _guest(monkeypatch: pytest.MonkeyPatch, **config: Any) -> Guest:
    """A Guest whose prepare() finds everything at once (no QEMU, no image)."""
    g = Guest(GuestConfig(name="t", **config))

    def prepare() -> Guest:
        g.image = SimpleNamespace(  # type: ignore[assignment]
            version="v", ssh_user="root", client_key=Path("/k"), host_key="ssh-ed25519 AAAA"
        )
        g.qemu = SimpleNamespace(binary=Path("/q"))  # type: ignore[assignment]
        g.accel = SimpleNamespace(accel="tcg", probed=True)  # type: ignore[assignment]
        return g

    monkeypatch.setattr(g, "prepare", prepare)
    return g


def _start_in_a_thread(g: Guest) -> BaseException | None:
    """g.start() in a thread of its own (the closer is this one); what it raised."""
    t, raised = start_in_a_thread(g)
    t.join(scaled(20))
    assert not t.is_alive() and len(raised) == 1
    return raised[0]


def test_a_start_closed_as_its_steps_end_returns_no_running_guest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The close came as the last step ended: start() returned the guest, running, to
    a caller whose close() had returned (its QEMU ran on, nobody to stop it)."""
    g = _guest(monkeypatch)
    closes: list[int] = []
    monkeypatch.setattr(g, "_start", lambda: _close_from_another_thread(g))
    monkeypatch.setattr(g, "_stop_machine", lambda: closes.append(1))
    e = _start_in_a_thread(g)
    assert isinstance(e, GuestError) and re.match(CLOSED, str(e)), e
    assert str(e) == "the guest 't' was closed (or restarted) by another thread while it started"
    assert len(closes) == 2  # the closer's, and the start's own clean-up


def test_no_qemu_boots_after_a_close_that_came_before_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A close during prepare() (nothing to stop yet) was lost: the start booted QEMU
    after it and returned it running (10 of 10 chaos rounds)."""
    g = _guest(monkeypatch, snapshot=False)
    real_prepare = g.prepare
    booted: list[int] = []

    def prepare() -> Guest:
        real_prepare()
        _close_from_another_thread(g)
        return g

    def boot() -> NoReturn:
        booted.append(1)
        raise RuntimeError("booted")

    monkeypatch.setattr(g, "prepare", prepare)
    monkeypatch.setattr(g, "_boot", boot)
    e = _start_in_a_thread(g)
    assert isinstance(e, GuestError) and re.match(CLOSED, str(e)), e
    assert booted == []


def test_a_snapshot_load_a_close_ended_keeps_the_snapshot_and_boots_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The close stopped QEMU while it loaded the snapshot ("QMP query-migrate:
    connection lost before the reply"): with no machine left to ask, the start took
    the good snapshot for a bad one, discarded it and booted cold after the close."""
    g = _guest(monkeypatch)
    found = tmp_path / "snapshot-k"
    discarded: list[str] = []
    cold: list[int] = []

    def restore(directory: Path) -> NoReturn:
        _close_from_another_thread(g)
        raise snapshot.SnapshotError(
            f"loading the snapshot {directory}/state.mig failed: QMP query-migrate: "
            "connection lost before the reply"
        )

    monkeypatch.setattr(g, "snapshot_key", lambda: "k")
    monkeypatch.setattr(snapshot, "lookup", lambda key: found)
    monkeypatch.setattr(snapshot, "held", lambda d: _nothing())
    monkeypatch.setattr(snapshot, "discard", lambda key: discarded.append(key))
    monkeypatch.setattr(g, "_restore", restore)
    monkeypatch.setattr(g, "_boot_lock", lambda key: _nothing())
    monkeypatch.setattr(g, "_cold_start", lambda **kw: cold.append(1))
    monkeypatch.setattr(g, "_save_snapshot", lambda key: None)
    e = _start_in_a_thread(g)
    assert isinstance(e, GuestError) and re.match(CLOSED, str(e)), e
    assert discarded == [] and cold == [] and g.snapshot_error is None


class _RetryingSsh:
    """SshClient.connect's retries against a guest that never answers: *check* before
    each attempt, the first one closing the guest from another thread."""

    attempts = 0
    ended_by: BaseException | None = None

    def __init__(self, g: Guest) -> None:
        self.g = g

    def __call__(self, *a: object, **kw: object) -> _RetryingSsh:
        return self

    def connect(self, *, timeout: float, retry_interval: float, check: Callable[[], None]) -> Any:
        for attempt in range(1, 51):
            try:
                check()
            except BaseException as e:
                type(self).ended_by = e
                raise
            type(self).attempts = attempt
            if attempt == 1:
                _close_from_another_thread(self.g)
        raise SshError(f"could not connect within {timeout} s")


def test_ssh_retries_end_at_a_close(monkeypatch: pytest.MonkeyPatch) -> None:
    """The retries went on for ssh_timeout (60 s) after the close stopped QEMU: the
    check only asked the health watch, which the close had stopped."""
    g = _guest(monkeypatch)
    ssh = _RetryingSsh(g)
    monkeypatch.setattr(guest_mod, "SshClient", ssh)
    monkeypatch.setattr(g, "_start", lambda: (g.prepare(), g._connect_ssh()))
    e = _start_in_a_thread(g)
    assert isinstance(e, GuestError) and re.match(CLOSED, str(e)), e
    assert ssh.attempts == 1 and isinstance(ssh.ended_by, GuestError)


def test_a_start_after_a_close_is_a_fresh_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """A close() that returned before start() began ends nothing of it; a start that
    began after another thread's close of an earlier one is not ended either."""
    g = _guest(monkeypatch)
    started: list[int] = []
    monkeypatch.setattr(g, "_start", lambda: started.append(1))
    _close_from_another_thread(g)
    assert _start_in_a_thread(g) is None
    assert _start_in_a_thread(g) is None and started == [1, 1]


def _nothing() -> Any:
    import contextlib

    return contextlib.nullcontext()


def test_a_restart_from_another_thread_waits_for_the_start_it_ended(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """restart() from another thread while a start runs: its close ends that start, and
    its own start waits for that one's end; it began at once, and the ended start's
    clean-up close() then stopped the new start's QEMU and ended it too."""
    g = _guest(monkeypatch)
    inside = threading.Event()  # the first start is at its step
    go = threading.Event()  # the first start's step may end
    second_began = threading.Event()
    calls: list[str] = []

    def step() -> None:
        if not calls:
            calls.append("first")
            inside.set()
            go.wait(scaled(10))
            g._check_open()  # its next step: ended by the restart's close
        else:
            calls.append("second")
            second_began.set()

    monkeypatch.setattr(g, "_start", step)
    first = threading.Thread(target=lambda: _outcome(g.start, first_out))
    first_out: list[BaseException | None] = []
    first.start()
    assert inside.wait(scaled(10))
    restart_out: list[BaseException | None] = []
    restarter = threading.Thread(target=lambda: _outcome(g.restart, restart_out))
    restarter.start()
    # the restart's start must not begin before the first start ended
    began_early = second_began.wait(scaled(0.5))
    go.set()
    for t in (first, restarter):
        t.join(scaled(10))
        assert not t.is_alive()
    assert not began_early and calls == ["first", "second"]
    assert isinstance(first_out[0], GuestError) and re.match(CLOSED, str(first_out[0]))
    assert restart_out == [None]


def _outcome(fn: Callable[[], object], out: list[BaseException | None]) -> None:
    try:
        fn()
        out.append(None)
    except BaseException as e:
        out.append(e)


@pytest.mark.parametrize("closing", [False, True])
def test_the_exit_of_a_qemu_being_closed_is_no_fault_notice(
    closing: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    """A start's health watch that began as another thread's close quit QEMU printed
    "irqlab: NAME: QEMU exited with status 0" on stderr, as if the guest had failed."""
    g = Guest(GuestConfig(name="t"))
    g.machine = SimpleNamespace(  # type: ignore[assignment]
        closing=closing, abort_qmp=lambda *a, **kw: None
    )
    g._on_fault(Fault("QEMU exited with status 0", ""))
    said = capsys.readouterr().err
    assert said == ("" if closing else "irqlab: t: QEMU exited with status 0\n")
