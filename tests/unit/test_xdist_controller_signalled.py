"""SIGTERM or SIGHUP to an xdist controller alone (``kill PID``, an IDE's stop) stops its
workers' tests at once, as the same signal to the run's process group does: the
controller passes it on (:func:`irqlab.testing.parallel.forward_interrupt`).  Before,
the workers went on with their tests, starting new ones, and with their guests' QEMUs,
until xdist's teardown ended them: execnet's SIGINT 5 s later, its ``os._exit`` 10 s
after that (a ``pytest -n 2`` of two guests took 9 to 26 s to end after a SIGHUP to its
controller, chaos review 2026-12-08).  Real processes: a controller with two workers
whose tests wait until they are interrupted and note by what."""

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

from irqlab.testing.parallel import WORKER_ENV

TESTS = """
import os
import threading

import pytest


@pytest.mark.parametrize("n", range(6))
def test_waits_until_interrupted(n):
    try:  # from before its line: the signal may come as soon as it is read
        with open(os.environ["STARTED_FIFO"], "w") as f:
            f.write(f"{os.getpid()}\\n")
        threading.Event().wait(300)
    except KeyboardInterrupt as e:
        with open(os.environ["ENDED_FILE"], "a") as f:
            f.write(f"{os.getpid()} {e!r}\\n")
        raise
"""
WORKERS = 2
START_LIMIT_S = 120.0  # both workers in a test by then (imports on a loaded machine)
END_LIMIT_S = 60.0  # the run over by then, either way (xdist's own end: 15 s at most)


def _started(fifo: Path, run: subprocess.Popen[bytes], count: int) -> list[int]:
    """The pids of the first *count* tests' processes, each written as a line into
    *fifo* as the test starts; an AssertionError if the run ends or START_LIMIT_S
    passes first.  Opened read-write: no EOF between the tests' writes."""
    fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    try:
        data = b""
        deadline = time.monotonic() + START_LIMIT_S
        while data.count(b"\n") < count:
            left = deadline - time.monotonic()
            lines = data.count(b"\n")
            assert left > 0 and run.poll() is None, f"{lines} of {count} tests started"
            if select.select([fd], [], [], min(left, 1.0))[0]:
                data += os.read(fd, 4096)
        return [int(line) for line in data.decode().split()[:count]]
    finally:
        os.close(fd)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_a_signal_to_the_controller_alone_interrupts_the_workers_tests(
    tmp_path: Path, sig: signal.Signals
) -> None:
    (tmp_path / "test_waits.py").write_text(TESTS)
    fifo, ended, output = tmp_path / "started", tmp_path / "ended", tmp_path / "output.txt"
    os.mkfifo(fifo)
    env = {k: v for k, v in os.environ.items() if k not in WORKER_ENV}
    env.update(STARTED_FIFO=str(fifo), ENDED_FILE=str(ended), IRQLAB_LOG_DIR=str(tmp_path / "logs"))
    argv = [sys.executable, "-m", "pytest", "-n", str(WORKERS), "-p", "no:cacheprovider", "-q"]
    with output.open("wb") as out:
        run = subprocess.Popen(
            argv, cwd=tmp_path, env=env, stdout=out, stderr=out, start_new_session=True
        )
    try:
        try:
            workers = _started(fifo, run, WORKERS)
        except AssertionError as e:
            raise AssertionError(f"{e}; the run: {output.read_text()}") from None
        assert len(set(workers)) == WORKERS, f"one worker ran two tests at once? {workers}"
        run.send_signal(sig)  # the controller only, not its process group
        run.wait(END_LIMIT_S)
    finally:
        if run.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    said = output.read_text()
    # each worker's test was interrupted by the signal itself (the plugin's
    # KeyboardInterrupt names it), not by execnet's plain SIGINT seconds later
    noted = ended.read_text().splitlines() if ended.exists() else []
    by = {int(line.split()[0]): line.split(maxsplit=1)[1] for line in noted}
    expected = repr(KeyboardInterrupt(f"signal {int(sig)}"))
    assert by == dict.fromkeys(workers, expected), (noted, said)
    assert run.returncode == pytest.ExitCode.INTERRUPTED, said
    assert "Traceback" not in said, said
