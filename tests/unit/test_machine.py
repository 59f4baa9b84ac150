"""Machine: command line (pure) and lifecycle against a fake QEMU (tests/unit/fake_qemu.py)."""

from __future__ import annotations

import errno
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fake_qemu import REFUSED_DEVICE  # same directory (rootdir-relative import)

from irqlab.testing.helpers import process_exited
from irqlab.vm import proc
from irqlab.vm.console import ConsoleTimeout
from irqlab.vm.machine import (
    Machine,
    MachineConfig,
    MachineError,
    MachineTimeout,
    QemuExited,
    RunPaths,
    build_argv,
)
from irqlab.vm.qmp.errors import QMPCommandError
from irqlab.vm.qtest import IrqEvent, QTestError

FAKE = Path(__file__).with_name("fake_qemu.py")


def _paths(tmp: Path) -> RunPaths:
    return RunPaths(sock_dir=tmp / "s,ock", log_dir=tmp / "log")


def _value_after(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == flag]


def test_argv_default_has_qmp_console_and_user_args_last(tmp_path: Path) -> None:
    p = _paths(tmp_path)
    cfg = MachineConfig(binary=Path("/q/qemu"), args=["-machine", "q35", "-device", "irqlab"])
    argv = build_argv(cfg, p)
    assert argv[0] == "/q/qemu"
    assert argv[-4:] == ["-machine", "q35", "-device", "irqlab"]
    assert _value_after(argv, "-accel") == ["tcg"]
    chardevs = _value_after(argv, "-chardev")
    esc = str(tmp_path / "s,,ock")  # commas doubled in QEMU option syntax
    assert f"socket,id=irqlab-qmp,path={esc}/qmp.sock" in chardevs
    assert f"socket,id=irqlab-console,path={esc}/console.sock" in chardevs
    assert _value_after(argv, "-mon") == ["chardev=irqlab-qmp,mode=control"]
    assert _value_after(argv, "-serial") == ["chardev:irqlab-console"]
    assert "-qtest" not in argv and "-L" not in argv
    assert {"-nodefaults", "-no-user-config"} <= set(argv)
    assert _value_after(argv, "-display") == ["none"]


def test_argv_qtest_mode_forces_qtest_accel(tmp_path: Path) -> None:
    p = _paths(tmp_path)
    cfg = MachineConfig(
        binary=Path("q"), datadir=Path("/fw"), accel="kvm", qtest=True, console=False
    )
    argv = build_argv(cfg, p)
    assert _value_after(argv, "-accel") == ["qtest"]
    assert _value_after(argv, "-qtest") == [f"unix:{str(p.qtest_sock).replace(',', ',,')}"]
    assert _value_after(argv, "-qtest-log") == [str(p.qtest_log)]
    assert _value_after(argv, "-L") == ["/fw"]
    assert "-serial" not in argv


def test_argv_without_accel(tmp_path: Path) -> None:
    argv = build_argv(MachineConfig(binary=Path("q"), accel=None), _paths(tmp_path))
    assert "-accel" not in argv


def test_run_paths_layout(tmp_path: Path) -> None:
    p = _paths(tmp_path)
    assert p.qmp_sock.parent == p.qtest_sock.parent == p.console_sock.parent == p.sock_dir
    assert p.stderr_log.parent == p.console_log.parent == p.qtest_log.parent == p.log_dir


@pytest.fixture
def fake_qemu(tmp_path: Path) -> Path:
    script = tmp_path / "qemu-system-fake"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" "$@"\n')
    script.chmod(0o755)
    return script


def _cfg(binary: Path, tmp_path: Path, **kw: object) -> MachineConfig:
    base: dict[str, object] = {
        "binary": binary,
        "log_root": tmp_path / "logs",
        "start_timeout": 10.0,
        "stop_timeout": 5.0,
        "name": "fake",
    }
    base.update(kw)
    return MachineConfig(**base)  # type: ignore[arg-type]


def test_lifecycle_qmp_console_and_clean_quit(fake_qemu: Path, tmp_path: Path) -> None:
    with Machine(_cfg(fake_qemu, tmp_path)) as m:
        pid = m.pid
        assert m.is_running()
        assert m.qmp("query-status") == {"status": "running", "running": True}
        assert m.qmp("echo", {"dash-name": 1}, other=2) == {"dash-name": 1, "other": 2}
        with pytest.raises(QMPCommandError) as info:
            m.qmp("fail-me")
        assert info.value.error_class == "GenericError"
        assert info.value.desc == "fake failure"
        assert m.wait_console("marker 42", timeout=10).endswith("READY marker 42")
        assert m.paths is not None
        sock_dir, log_dir = m.paths.sock_dir, m.paths.log_dir
        assert sock_dir.stat().st_mode & 0o777 == 0o700
    assert m.returncode == 0  # quit over QMP, not a signal
    assert process_exited(pid, 5)
    assert not sock_dir.exists()
    assert (log_dir / "console.log").read_text() == "booting\nREADY marker 42\n"
    assert str(fake_qemu) in (log_dir / "cmdline.sh").read_text()
    assert m.close() == 0  # idempotent


def test_console_timeout_names_the_log(fake_qemu: Path, tmp_path: Path) -> None:
    with Machine(_cfg(fake_qemu, tmp_path)) as m:
        m.wait_console("READY", 10)
        with pytest.raises(ConsoleTimeout, match=r"console\.log"):
            m.wait_console("never printed", timeout=0.2)


def test_start_failure_reports_stderr_and_logs(
    fake_qemu: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_QEMU_MODE", "exit-early")
    before = set(map(id, proc.live_children()))  # e.g. a session's guest in a full run
    with pytest.raises(MachineError) as info:
        Machine(_cfg(fake_qemu, tmp_path)).start()
    msg = str(info.value)
    assert "exit status 3" in msg
    assert "'nope' is not a valid device model name" in msg
    assert "qemu.log" in msg
    assert [p for p in proc.live_children() if id(p) not in before] == []


@pytest.mark.parametrize("mode", ["refuse-device", "exit-early"])
def test_qemu_refusing_its_command_line_is_said_in_its_own_words(
    fake_qemu: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    mode: str,
) -> None:
    """QEMU that exits while starting (after connecting to QMP, as with a bad -device
    property, or before): QemuExited with QEMU's words and status, and no ERROR of the
    QMP library's about the handshake that QEMU's exit cut short."""
    monkeypatch.setenv("FAKE_QEMU_MODE", mode)
    caplog.set_level(logging.DEBUG, logger="qemu.qmp")
    for _ in range(5):  # the EOF and the exit race each other
        with pytest.raises(QemuExited) as info:
            Machine(_cfg(fake_qemu, tmp_path)).start()
        e = info.value
        assert isinstance(e, MachineError)
        assert e.status == (1 if mode == "refuse-device" else 3)
        assert (REFUSED_DEVICE if mode == "refuse-device" else "not a valid device") in e.said
        assert "qemu.log" in e.logs
        assert "QEMU exited before connecting to the QMP socket" in str(e)
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not loud, [r.getMessage() for r in loud]


def test_start_timeout_kills_qemu(
    fake_qemu: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_QEMU_MODE", "hang")
    pidfile = tmp_path / "pid"
    monkeypatch.setenv("FAKE_QEMU_PIDFILE", str(pidfile))
    with pytest.raises(MachineError, match="did not connect"):
        Machine(_cfg(fake_qemu, tmp_path, start_timeout=0.5)).start()
    assert process_exited(int(pidfile.read_text()), 5)


def test_stubborn_qemu_is_killed(
    fake_qemu: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_QEMU_MODE", "stubborn")
    m = Machine(_cfg(fake_qemu, tmp_path, stop_timeout=0.3, qmp_timeout=5.0)).start()
    assert m.close() == -signal.SIGKILL


def test_keyboard_interrupt_still_cleans_up(fake_qemu: Path, tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt), Machine(_cfg(fake_qemu, tmp_path)) as m:
        pid = m.pid
        raise KeyboardInterrupt
    assert process_exited(pid, 5)
    assert not m.is_running()


def test_a_stopped_qemu_is_killed_at_once_not_after_quit_and_sigterm_time_out(
    fake_qemu: Path, tmp_path: Path
) -> None:
    """kill -STOP: QMP answers nothing and SIGTERM stays pending, so the quit and the
    SIGTERM waited their timeouts (2 x 10 s with the guest's) before the SIGKILL."""
    import time

    m = Machine(_cfg(fake_qemu, tmp_path, stop_timeout=5.0)).start()
    os.kill(m.pid, signal.SIGSTOP)
    deadline = time.monotonic() + 10  # the signal is delivered asynchronously
    while not proc.is_stopped(m.pid) and time.monotonic() < deadline:
        time.sleep(0.005)
    assert proc.is_stopped(m.pid)
    t0 = time.monotonic()
    assert m.close() == -signal.SIGKILL
    assert time.monotonic() - t0 < 2.0


def test_a_close_cut_short_is_finished_by_the_next(
    fake_qemu: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while close() waits for QEMU: a second close() stops it (it returned at
    once before, and QEMU ran on until the interpreter exited)."""
    monkeypatch.setenv("FAKE_QEMU_MODE", "stubborn")
    m = Machine(_cfg(fake_qemu, tmp_path, stop_timeout=0.3, qmp_timeout=5.0)).start()
    real = proc.wait_or_stop

    def interrupted(*a: object, **k: object) -> int | None:
        monkeypatch.setattr(proc, "wait_or_stop", real)
        raise KeyboardInterrupt

    monkeypatch.setattr(proc, "wait_or_stop", interrupted)
    with pytest.raises(KeyboardInterrupt):
        m.close()
    assert m.is_running()
    assert m.close() == -signal.SIGKILL
    assert not m.is_running() and m.close() == -signal.SIGKILL  # and then idempotent


def test_qtest_channel(fake_qemu: Path, tmp_path: Path) -> None:
    with Machine(_cfg(fake_qemu, tmp_path, qtest=True, console=False)) as m:
        qt = m.qtest
        assert qt.readl(0xFE000000) == 0x12345678
        assert qt.clock_step(250) == 250
        qt.outl(0xCF8, 0x80000000)
        assert qt.take_irq_events() == [IrqEvent(3, True)]
        assert qt.irq_level(3)
        with pytest.raises(QTestError, match="Unknown command"):
            qt.command("bogus")
        with pytest.raises(MachineError, match="no console"):
            _ = m.console


@pytest.mark.parametrize("qtest", [False, True], ids=["qmp", "qtest"])
def test_without_pidfd_open_qemu_starts_and_its_exit_while_starting_is_seen(
    fake_qemu: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, qtest: bool
) -> None:
    """Where Python has no ``os.pidfd_open`` (PyPy, old headers) start() raised
    AttributeError.  Now QEMU starts, and its exit while the start waits for its QMP
    (or qtest) connection is looked for: named as such, not a start timeout."""
    monkeypatch.delattr(os, "pidfd_open")
    with Machine(_cfg(fake_qemu, tmp_path, qtest=qtest, console=False)) as m:
        assert m.qmp("query-status")["running"]
        if qtest:
            assert m.qtest.readl(0xFE000000) == 0x12345678
    assert m.returncode == 0
    sock = "qtest" if qtest else "QMP"
    for mode in ("exit-early", "refuse-device"):  # before connecting, and after
        monkeypatch.setenv("FAKE_QEMU_MODE", mode)
        with pytest.raises(QemuExited, match=f"QEMU exited before connecting to the {sock} "):
            Machine(_cfg(fake_qemu, tmp_path, qtest=qtest, console=False)).start()


def _script_with_a_machine(fake_qemu: Path, tmp_path: Path, then: str) -> str:
    """A Python program that starts a Machine on *fake_qemu*, waits for its console,
    then runs the line *then* (``m`` is the machine; os and signal are imported)."""
    return (
        textwrap.dedent(
            f"""
        import os, signal
        from pathlib import Path
        from irqlab.vm.machine import Machine, MachineConfig
        m = Machine(MachineConfig(binary=Path({str(fake_qemu)!r}),
                                  log_root=Path({str(tmp_path / "logs")!r}))).start()
        m.wait_console("READY", 10)
        assert m.paths is not None
        """
        )
        + then
        + "\n"
    )


def test_a_script_that_never_closes_its_machine_leaves_nothing_behind(
    fake_qemu: Path, tmp_path: Path
) -> None:
    """QEMU was killed at exit, but its socket directory stayed in /tmp until the next
    irqlab run removed it as stale."""
    pidfile = tmp_path / "pid"
    code = _script_with_a_machine(fake_qemu, tmp_path, "print(m.paths.sock_dir, flush=True)")
    env = {**os.environ, "FAKE_QEMU_PIDFILE": str(pidfile)}
    r = subprocess.run(
        [sys.executable, "-c", code], env=env, timeout=30, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    sock_dir = Path(r.stdout.strip())
    assert sock_dir.name.startswith("irqlab-") and not sock_dir.exists(), "socket dir left"
    assert process_exited(int(pidfile.read_text()), 5), "QEMU survived its parent"


def test_qemu_dies_with_the_python_process(fake_qemu: Path, tmp_path: Path) -> None:
    """The parent is SIGKILLed (no cleanup at all): PR_SET_PDEATHSIG still kills QEMU."""
    pidfile = tmp_path / "pid"
    code = _script_with_a_machine(fake_qemu, tmp_path, "os.kill(os.getpid(), signal.SIGKILL)")
    env = {**os.environ, "FAKE_QEMU_PIDFILE": str(pidfile)}
    parent = subprocess.run([sys.executable, "-c", code], env=env, timeout=30, check=False)
    assert parent.returncode == -signal.SIGKILL
    assert process_exited(int(pidfile.read_text()), 5), "QEMU survived its parent"


def test_start_twice_is_refused(fake_qemu: Path, tmp_path: Path) -> None:
    with Machine(_cfg(fake_qemu, tmp_path)) as m, pytest.raises(MachineError, match="once"):
        m.start()


def test_qmp_events(fake_qemu: Path, tmp_path: Path) -> None:
    with Machine(_cfg(fake_qemu, tmp_path)) as m:
        m.qmp("emit", names=["A", "B", "C", "B"])
        ev = m.wait_event("B", timeout=5, match={"n": 3})
        assert ev["data"] == {"n": 3}
        assert [(e["event"], e["data"]["n"]) for e in m.qmp_events()] == [
            ("A", 0),
            ("B", 1),
            ("C", 2),
        ]
        assert m.qmp_events() == []
        with pytest.raises(MachineError, match="QMP event NEVER"):
            m.wait_event("NEVER", timeout=0.2)


def _cached_qemu(cache_root: Path) -> Path:
    """The fake QEMU installed like a built one: <cache>/qemu-<hash>/bin/, complete."""
    out = cache_root / "qemu-00000000000000aa"
    (out / "bin").mkdir(parents=True)
    binary = out / "bin" / "qemu-system-x86_64"
    binary.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" "$@"\n')
    binary.chmod(0o755)
    (out / ".complete").write_text("00000000000000aa\n")
    return binary


def test_a_running_qemu_holds_its_cache_outputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `irqlab cache --prune` removes never includes the QEMU (or kernel, image) of a
    running machine; once it stopped, the output can go."""
    from irqlab.build import cache

    root = tmp_path / "cache"
    monkeypatch.setenv("IRQLAB_CACHE_DIR", str(root))
    binary = _cached_qemu(root)
    out = binary.parent.parent
    (entry,) = cache.entries()
    with Machine(_cfg(binary, tmp_path, datadir=out / "share")):
        assert cache.in_use(out)
        assert not cache.remove_entry(entry) and cache.is_complete(out)
    assert not cache.in_use(out)
    assert cache.remove_entry(entry) and not out.exists()


def test_a_qemu_pruned_before_the_start_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from irqlab.build import cache

    root = tmp_path / "cache"
    monkeypatch.setenv("IRQLAB_CACHE_DIR", str(root))
    binary = _cached_qemu(root)
    (binary.parent.parent / ".complete").unlink()  # a removal under way
    with pytest.raises(MachineError, match="removed from the cache"):
        Machine(_cfg(binary, tmp_path)).start()
    assert not cache.in_use(binary.parent.parent)


def test_an_unwritable_log_dir_is_said_as_that(fake_qemu: Path, tmp_path: Path) -> None:
    """It said "QEMU failed to start: [Errno 30] Read-only file system" (a QEMU problem)."""
    from irqlab.vm.machine import LogDirError

    blocker = tmp_path / "a-file"
    blocker.write_text("")  # a log root under a file: mkdir fails (as on a read-only one)
    m = Machine(_cfg(fake_qemu, tmp_path, log_root=blocker / "logs"))
    with pytest.raises(
        LogDirError, match=r"cannot make the guest's log directory in .*IRQLAB_LOG_DIR"
    ):
        m.start()
    assert m.paths is None  # nothing made, nothing started
    named = Machine(
        _cfg(fake_qemu, tmp_path, log_root=blocker / "logs", log_root_setting="--my-logs")
    )
    with pytest.raises(LogDirError, match=r"\(point --my-logs at a writable directory\)"):
        named.start()


def _count_sends(m: Machine) -> list[int]:
    """A one-item list that counts the QMP commands *m*'s client sends from now on
    (the real ``execute``, wrapped)."""
    assert m._qmp is not None
    client = m._qmp._client
    sent = [0]
    execute = client.execute

    async def counted(*a: Any, **kw: Any) -> Any:
        sent[0] += 1
        return await execute(*a, **kw)

    client.execute = counted  # type: ignore[method-assign]
    return sent


def test_a_big_pipelined_batch_leaves_the_qmp_loop_free_and_ends_at_once(
    fake_qemu: Path, tmp_path: Path
) -> None:
    """While 200000 pipelined commands run, other QMP waits on the same loop (the health
    watch's, limit 3 s) are answered, and ending the batch (Ctrl-C, an abort) frees the
    loop at once: a task per command took the loop seconds to create and as long to
    cancel, and the watch's wait timed out meanwhile (its thread died of it).  The
    probes wait until the batch sends, and the batch is still sending after them."""
    from irqlab.testing.helpers import wait_until

    with Machine(_cfg(fake_qemu, tmp_path, qmp_timeout=600.0)) as m:
        ended: list[BaseException] = []

        def batch() -> None:
            try:
                m.qmp_many([("query-status", None)] * 200_000)
            except MachineError as e:
                ended.append(e)

        sent = _count_sends(m)
        worker = threading.Thread(target=batch)
        worker.start()
        try:
            wait_until(lambda: sent[0], bool, timeout=30.0, what="the batch's first command")
            for _ in range(10):  # while the batch runs
                t0 = time.monotonic()
                m.take_events(("RESET",), timeout=1.0)
                assert time.monotonic() - t0 < 1.0
            assert worker.is_alive() and sent[0] < 200_000, "the probes outlasted the batch"
        finally:
            m.abort_qmp("the test ends the batch", later=False)
            worker.join(10)
        assert not worker.is_alive() and ended, "the batch did not end with the abort"
        t0 = time.monotonic()
        m.take_events(("RESET",), timeout=1.0)  # the loop is free again at once
        assert time.monotonic() - t0 < 1.0
        assert m.qmp("query-status")["status"] == "running"


def test_a_batch_whose_qemu_died_ends_at_once(fake_qemu: Path, tmp_path: Path) -> None:
    """QEMU killed during 200000 pipelined commands: qemu.qmp refuses each later one at
    once, without a suspension, and the rest of the batch ran in one loop step (3.4 s
    here, the health watch's waits meanwhile); now the first refusal ends the sending."""
    from irqlab.testing.helpers import wait_until

    with Machine(_cfg(fake_qemu, tmp_path, qmp_timeout=600.0)) as m:
        ended: list[float] = []

        def batch() -> None:
            try:
                m.qmp_many([("query-status", None)] * 200_000)
            except MachineError:
                ended.append(time.monotonic())

        sent = _count_sends(m)
        worker = threading.Thread(target=batch)
        worker.start()
        try:
            # a few thousand commands in, most of the batch to come
            wait_until(lambda: sent[0], lambda n: n > 2000, 30.0, "the batch's commands")
            killed = time.monotonic()
            os.kill(m.pid, signal.SIGKILL)
        finally:
            worker.join(60)
        assert ended, "the batch did not fail with its QEMU"
        assert ended[0] - killed < 1.0, f"the batch ended {ended[0] - killed:.2f} s after"


def test_a_pipelined_batch_gets_time_by_its_size_or_the_timeout_given(
    fake_qemu: Path, tmp_path: Path
) -> None:
    """A batch's limit was the session's one-command timeout (30 s) whatever its size:
    100000 words (0.7 ms each under TCG) failed "not done in 30.0 s".  Now it grows
    with the batch unless a timeout is given; past it, how many were answered."""
    from irqlab.vm.qmp.client import PIPELINED_S_EACH, pipelined_limit

    assert pipelined_limit(100_000, 30.0) == 30.0 + 100_000 * PIPELINED_S_EACH >= 100.0
    with Machine(_cfg(fake_qemu, tmp_path)) as m:
        assert m._qmp is not None
        m._qmp.timeout = 0.02  # one command's limit (the start and the quit had the usual)
        t0 = time.monotonic()
        many = 5000
        try:
            assert len(m.qmp_many([("query-status", None)] * many)) == many
        finally:
            m._qmp.timeout = 30.0
        assert time.monotonic() - t0 > 0.02, "the fake answers too fast for this test"
        with pytest.raises(
            MachineTimeout,
            match=r"200000 pipelined commands not done in 0\.5 s "
            r"\(\d+ answered\)",
        ):
            m.qmp_many([("query-status", None)] * 200_000, timeout=0.5)
        with pytest.raises(ValueError, match="timeout"):
            m.qmp_many([("query-status", None)], timeout=0)


def _cut_once(monkeypatch: pytest.MonkeyPatch, obj: object, name: str) -> None:
    """*obj*.*name* raises KeyboardInterrupt at its first call (a Ctrl-C landing in it),
    then is itself again."""
    real = getattr(obj, name)

    def cut(*a: object, **kw: object) -> object:
        monkeypatch.setattr(obj, name, real)
        raise KeyboardInterrupt

    monkeypatch.setattr(obj, name, cut)


@pytest.mark.parametrize("where", ["qmp-disconnect", "qmp-close", "console"])
def test_a_close_cut_short_after_qemu_exited_is_finished_by_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """Ctrl-C in a clean-up step after QEMU was reaped (QMP's disconnect waits up to
    5 s, the console's reader as long): the next close() returned at once, QEMU being
    gone, and the steps after stayed undone: the cache outputs held (`irqlab cache
    --prune` left them for the rest of the process), the socket directory, the pidfd,
    the QMP loop thread (SyncQMP counted itself closed before its disconnect)."""
    from irqlab.build import cache

    root = tmp_path / "cache"
    monkeypatch.setenv("IRQLAB_CACHE_DIR", str(root))
    binary = _cached_qemu(root)
    out = binary.parent.parent
    m = Machine(_cfg(binary, tmp_path, datadir=out / "share")).start()
    qmp, console, paths = m._qmp, m._console, m.paths
    assert qmp is not None and console is not None and paths is not None
    if where == "qmp-disconnect":  # the interrupt in SyncQMP.close's wait
        real_run = qmp._aio.run

        def run(coro: Any, timeout: float | None = None, *, abortable: bool = True) -> Any:
            if not abortable:  # the disconnect's
                monkeypatch.setattr(qmp._aio, "run", real_run)
                coro.close()
                raise KeyboardInterrupt
            return real_run(coro, timeout, abortable=abortable)

        monkeypatch.setattr(qmp._aio, "run", run)
    elif where == "qmp-close":
        _cut_once(monkeypatch, qmp, "close")
    else:
        _cut_once(monkeypatch, console, "close")
    with pytest.raises(KeyboardInterrupt):
        m.close()
    assert not m.is_running()
    assert m.close() == 0  # the quit's status, and the rest done now
    assert not cache.in_use(out), "the cache outputs are still held"
    assert not paths.sock_dir.exists() and m._pidfd == -1
    assert not qmp._aio._thread.is_alive() and not console._thread.is_alive()
    assert m.close() == 0  # and then idempotent


def test_syncqmp_close_cut_short_is_finished_by_the_next(
    fake_qemu: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Machine(_cfg(fake_qemu, tmp_path)) as m:
        qmp = m._qmp
        assert qmp is not None
        _cut_once(monkeypatch, qmp._aio, "close")  # the interrupt as the loop stops
        with pytest.raises(KeyboardInterrupt):
            qmp.close()
        assert qmp._aio._thread.is_alive()
        qmp.close()
        assert not qmp._aio._thread.is_alive() and not qmp.connected


def test_a_full_log_disk_is_said_as_that(
    fake_qemu: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its log directory made, the command line could not be written (a full disk): it
    said "QEMU failed to start: [Errno 28] No space left on device", logs in a directory
    that held none."""
    from irqlab.vm.machine import LogDirError

    real = Path.open

    def full(self: Path, *a: Any, **kw: Any) -> Any:
        if self.name == "cmdline.sh":  # no inode left for it
            raise OSError(28, "No space left on device", str(self))
        return real(self, *a, **kw)

    monkeypatch.setattr(Path, "open", full)
    m = Machine(_cfg(fake_qemu, tmp_path, log_root_setting="--my-logs"))
    with pytest.raises(LogDirError) as e:
        m.start()
    assert m.paths is not None and str(e.value) == (
        f"cannot make the QEMU command line cmdline.sh in {m.paths.log_dir}: No space left on "
        "device (point --my-logs at a writable directory)"
    )
    assert not m.paths.log_dir.exists(), "the empty run directory was left behind"


@pytest.mark.parametrize(
    ("err", "said"),
    [
        (errno.EMFILE, "(this process may open at most "),
        (errno.ENFILE, "(the system's table of open files is full: fs.file-max)"),
    ],
)
def test_out_of_file_descriptors_says_which_limit(
    fake_qemu: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, err: int, said: str
) -> None:
    """`ulimit -n 22`: "QEMU failed to start: [Errno 24] Too many open files" said
    nothing of the limit, or that it is this process's."""
    from irqlab.vm import machine

    def no_fd(*a: Any, **kw: Any) -> None:
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(machine.SyncQMP, "listen", no_fd)
    with pytest.raises(MachineError) as e:
        Machine(_cfg(fake_qemu, tmp_path)).start()
    assert said in str(e.value), str(e.value)
    if err == errno.EMFILE:
        assert "raise `ulimit -n`" in str(e.value), str(e.value)
