"""An xdist worker whose controller is SIGKILLed stops at once, with its guest: it went
on for about 16 s with its test and its guest's QEMU (execnet's own end: 5 s, a SIGINT
that a run started in the background ignores, 10 s more, ``os._exit``).  Real
processes: a pytest controller with one worker (``-n 1``), whose session fixture
starts a stand-in QEMU the way guests start theirs (:func:`irqlab.vm.proc.spawn`) and
stops it at its teardown, as ``Guest.close`` does."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from irqlab.testing.parallel import WORKER_ENV, guarded_send
from irqlab.vm.proc import pidfd

CONFTEST = """
import os
import signal
import sys

import pytest

from irqlab.vm import proc


@pytest.fixture(scope="session")
def guest():
    qemu = proc.spawn([sys.executable, "-c", "import signal; signal.pause()"])
    # the outer test waits for it; the SIGTERM handler, for its failure message
    handler = getattr(signal.getsignal(signal.SIGTERM), "__qualname__", None)
    with open(os.environ["PIDS_FIFO"], "w") as f:
        f.write(f"{os.getppid()} {os.getpid()} {qemu.pid} {handler}\\n")
    yield qemu
    proc.stop(qemu)


def _ended(how):
    with open(os.environ["ENDED_FILE"], "a") as f:
        f.write(how + "\\n")


def pytest_keyboard_interrupt(excinfo):
    _ended(f"keyboard interrupt: {excinfo.value!r}")


import atexit  # noqa: E402

atexit.register(_ended, "atexit")
"""
TESTS = """
import threading


def test_runs_until_stopped(guest):
    threading.Event().wait(300)
"""
# The run's parent: a subreaper (prctl PR_SET_CHILD_SUBREAPER) that starts the pytest
# controller in a session of its own (as the test's Popen did) and reaps every process
# of the run, the worker too once its controller is gone: each one's wait status goes
# into the file argv[1] ("pid status" lines), so a worker that went without a word says
# how (killed by which signal, or which exit status).
REAPER = """
import ctypes
import os
import sys

libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
    raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
with open(sys.argv[1], "a", buffering=1) as out:
    child = os.fork()
    if child == 0:
        os.setsid()
        os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
    out.write(f"started {child}\\n")
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        out.write(f"{pid} {status}\\n")
"""
LIMIT_S = 8.0  # the worker and its QEMU gone by then (they went after 15 s or more)


PYTEST = ["-m", "pytest", "-n", "1", "-p", "no:cacheprovider", "-q"]


def _ignore_sigint() -> None:
    """As a shell does for a command it starts in the background (``pytest -n 1 &``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _read_line(path: Path, writer: subprocess.Popen[bytes], timeout: float) -> str:
    """The line *writer*'s run writes into the FIFO *path*; an AssertionError if it
    exits (its pidfd readable) or *timeout* passes first."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    ended = pidfd(writer.pid)
    try:
        data = b""
        deadline = time.monotonic() + timeout
        while not data.endswith(b"\n"):
            left = deadline - time.monotonic()
            ready = select.select([fd, *([ended] if ended is not None else [])], [], [], left)[0]
            assert left > 0 and fd in ready, f"nothing in {path}"
            data += os.read(fd, 100)
        return data.decode()
    finally:
        os.close(fd)
        if ended is not None:
            os.close(ended)


def _gone_within(fd: int, timeout: float) -> bool:
    """Whether the process of pidfd *fd* ends within *timeout* s."""
    return bool(select.select([fd], [], [], timeout)[0])


def test_a_worker_stops_with_its_guest_when_the_controller_is_killed(tmp_path: Path) -> None:
    """The worker and its QEMU go at once, and the worker says why.  The fixture's line
    makes the kill land as the worker sends its test's setup report, now and then after
    the channel broke but before the watch saw the end: that send's failure ended the
    run as pytest's internal error, without the notice (about 1 run in 10 on a loaded
    machine, 2 of 3 whole test-all runs once; :func:`guarded_send`).  A failure says
    how the worker ended (what its conftest noted, its wait status)."""
    took, said, ended = _kill_the_controller(tmp_path / "run")
    assert _NOTICE_START in said, (f"gone in {took:.3f} s; how the worker ended: {ended}", said)
    # xdist's sends to the controller that is gone: each worker printed a traceback
    # ("PluggyTeardownRaisedWarning ... OSError: cannot send (already closed?)")
    assert "cannot send" not in said and "Traceback" not in said, said


_NOTICE_START = "irqlab: xdist worker gw0: the pytest controller (pid "


def _kill_the_controller(tmp_path: Path) -> tuple[float, str, str]:
    """Run the stand-in session in *tmp_path*, SIGKILL its controller once its test
    runs, and wait for the worker and its QEMU to go: how long they took, the run's
    output (whitespace folded), how the worker ended (what its conftest noted, and its
    wait status as the run's subreaper saw it)."""
    tmp_path.mkdir()
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_stopped.py").write_text(TESTS)
    fifo = tmp_path / "pids"
    os.mkfifo(fifo)
    env = {k: v for k, v in os.environ.items() if k not in WORKER_ENV}
    ended = tmp_path / "ended"
    statuses = tmp_path / "statuses"  # the reaper's "pid status" lines
    env.update(PIDS_FIFO=str(fifo), IRQLAB_LOG_DIR=str(tmp_path / "logs"), ENDED_FILE=str(ended))
    err = tmp_path / "output.txt"  # its stdout and stderr, the worker's stderr too
    with err.open("wb") as output:
        run = subprocess.Popen(
            [sys.executable, "-c", REAPER, str(statuses), *PYTEST],
            cwd=tmp_path,
            env=env,
            stdout=output,
            stderr=output,
            preexec_fn=_ignore_sigint,
            start_new_session=True,
        )
    fds: list[int | None] = []
    try:
        try:
            line = _read_line(fifo, run, 120).split()
            controller, worker, qemu = (int(x) for x in line[:3])
            handler = line[3]
        except AssertionError:
            raise AssertionError(f"the run: {err.read_text()}") from None
        # opened before the kill: a worker (or QEMU) already gone is said as that, not
        # taken for one that stopped at once
        fds += [pidfd(controller), pidfd(worker), pidfd(qemu)]
        assert None not in fds, f"gone before the controller's kill: {fds}; {err.read_text()}"
        controller_fd, worker_fd, qemu_fd = (fd for fd in fds if fd is not None)
        signal.pidfd_send_signal(controller_fd, signal.SIGKILL)
        assert _gone_within(controller_fd, 5.0), "the controller outlived its SIGKILL"
        start = time.monotonic()
        assert _gone_within(worker_fd, LIMIT_S), f"the worker outlived its controller {LIMIT_S} s"
        assert _gone_within(qemu_fd, 2.0), "the worker's QEMU outlived it"
        took = time.monotonic() - start
    finally:
        for fd in fds:
            if fd is not None:
                os.close(fd)
        _end(run, statuses)
    said = " ".join(err.read_text().split())
    notice = (
        f"{_NOTICE_START}{controller}) ended without shutting it down; the worker "
        "stopped its tests and guests as on SIGTERM"
    )
    assert _NOTICE_START not in said or notice in said, said
    how = " ".join(ended.read_text().split()) if ended.exists() else "nothing noted"
    return took, said, f"{how}; {_wait_status(statuses, worker)} (its SIGTERM handler: {handler})"


def _end(run: subprocess.Popen[bytes], statuses: Path) -> None:
    """The reaper *run* ends once every process of the run is reaped; what is left of the
    run after 10 s (the test failed midway) is killed: the controller's process group
    (its session's: the worker's too), then the reaper."""
    try:
        run.wait(10)
    except subprocess.TimeoutExpired:
        lines = statuses.read_text().splitlines() if statuses.exists() else []
        for line in lines[:1]:  # "started PID": the controller
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(line.split()[1]), signal.SIGKILL)
        run.kill()
        run.wait()


def _wait_status(statuses: Path, pid: int) -> str:
    """How process *pid* of the run ended, from the reaper's lines in *statuses*."""
    text = statuses.read_text() if statuses.exists() else ""
    for line in text.splitlines()[1:]:
        child, status = (int(x) for x in line.split())
        if child == pid:
            if os.WIFSIGNALED(status):
                return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
            return f"exit status {os.waitstatus_to_exitcode(status)}"
    return f"its wait status not seen (the reaper's: {text!r})"


class _BrokenChannel:
    """A stand-in of xdist's sendevent on a channel whose other end is gone (what
    execnet raises then); it notes what it was asked to send."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, dict[str, object]]] = []

    def sendevent(self, name: str, **kwargs: object) -> None:
        self.asked.append((name, kwargs))
        raise OSError("cannot send (already closed?)")


def test_a_send_the_ended_controller_cannot_hear_is_dropped() -> None:
    """The worker's report of a test's setup, sent as its controller ended (before the
    watch saw the end), ended the run as pytest's internal error without the notice."""
    channel = _BrokenChannel()
    send = guarded_send(channel.sendevent, lambda: True)
    send("testreport", data={"when": "setup"})
    assert channel.asked == [("testreport", {"data": {"when": "setup"}})]


def test_a_failed_send_to_a_live_controller_is_raised() -> None:
    send = guarded_send(_BrokenChannel().sendevent, lambda: False)
    with pytest.raises(OSError, match="cannot send"):
        send("testreport")
