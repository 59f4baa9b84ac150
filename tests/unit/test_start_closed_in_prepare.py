"""Another thread's close() while start() prepares (apt's lookups, the image's and
module's builds, their locks) ends the start at once: the command the prepare runs is
terminated with its whole process group, a lock's wait ends, and start() says that the
guest was closed while it prepared, naming the step.  It waited for the prepare to
return: an apt-cache of ~45 s (apt's lists changed) or a module's build.  A build that
a close ended leaves no output that looks complete.  Without a VM: the prepare's
prerequisites are a stand-in that runs a slow command as the real builds do."""

from __future__ import annotations

import os
import select
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from irqlab import cancel, notice
from irqlab.build import cache
from irqlab.build.steps import StepLog
from irqlab.testing.helpers import process_exited, start_closed_meanwhile
from irqlab.vm import proc
from irqlab.vm.guest import Guest, GuestConfig, GuestError
from irqlab.vm.loadscale import scaled

CLOSED = "the guest 't' was closed (or restarted) by another thread while it started (preparing: "
# a prompt end: TERM, at most cancel.TERM_GRACE_S, then KILL; load on a shared machine
PROMPT_S = 5.0


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("IRQLAB_CACHE_DIR", str(tmp_path / "cache"))
    old = notice.set_sink(None)
    yield
    notice.set_sink(old)


def _group_script(fifo: Path) -> list[str]:
    """A command whose child (in its process group) runs on: make and its compilers.
    The child's pid goes into *fifo* once it runs."""
    return ["sh", "-c", f"sleep 30 & echo $! > {fifo}; wait"]


def _read_pid(fifo: Path) -> int:
    """The pid written into *fifo*, waited for (scaled 20 s at most)."""
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        ready, _, _ = select.select([fd], [], [], scaled(20))
        assert ready, "the command did not start its child"
        return int(os.read(fd, 64).decode())
    finally:
        os.close(fd)


def test_a_close_during_a_prepare_command_ends_it_and_its_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fifo = tmp_path / "child.pid"
    os.mkfifo(fifo)
    spawned: list[int] = []
    real_spawn = proc.spawn

    def spawn(*args: object, **kwargs: object) -> object:
        p = real_spawn(*args, **kwargs)  # type: ignore[arg-type]
        spawned.append(p.pid)
        return p

    monkeypatch.setattr(proc, "spawn", spawn)
    g = Guest(GuestConfig(name="t"))

    def find_prerequisites() -> object:
        with StepLog(tmp_path / "build.log", log=lambda _msg: None) as steps:
            steps.run("fake slow step", _group_script(fifo))
        raise AssertionError("the slow step ran to its end")

    monkeypatch.setattr(g, "find_prerequisites", find_prerequisites)
    child: list[int] = []
    e, took = start_closed_meanwhile(g, lambda: child.append(_read_pid(fifo)), scaled(30))
    assert isinstance(e, GuestError), repr(e)
    assert str(e) == f"{CLOSED}build step 'fake slow step' (sh -c {_group_script(fifo)[2]}))"
    assert took < scaled(PROMPT_S), took
    assert len(spawned) == 1 and len(child) == 1
    for pid in (*spawned, *child):  # the command and its child: no process left
        assert process_exited(pid, scaled(2)), pid
    # none of its own left unreaped (the worker's session guest's QEMU is not its)
    assert [p for p in proc.live_children() if p.pid in spawned] == []
    assert "its process group was terminated" in (tmp_path / "build.log").read_text()


def test_a_close_during_a_lock_wait_of_prepare_ends_the_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A build's lock another process holds (its build of the same image): the wait
    went on until that build was done."""
    lock = tmp_path / "cache" / "image-x.lock"
    held = cache.take_lock(lock, "building image-x")  # another open file: another holder
    waiting = threading.Event()

    def sink(line: str) -> None:
        if line.startswith("irqlab: waiting for"):
            waiting.set()

    notice.set_sink(sink)
    g = Guest(GuestConfig(name="t"))

    def find_prerequisites() -> object:
        with cache.take_lock(lock, "building image-x"):
            raise AssertionError("the lock was taken")

    monkeypatch.setattr(g, "find_prerequisites", find_prerequisites)
    try:
        e, took = start_closed_meanwhile(g, lambda: waiting.wait(scaled(20)), scaled(30))
    finally:
        held.close()
    assert waiting.is_set()
    assert isinstance(e, GuestError), repr(e)
    assert str(e).startswith(f"{CLOSED}waiting for process {os.getpid()}, which is building "), e
    assert took < scaled(PROMPT_S), took


def test_a_build_a_cancel_ends_leaves_no_output(tmp_path: Path) -> None:
    """cached_build's output is whole or absent: its build killed midway (make's
    group terminated) leaves neither the output nor its .tmp."""
    fifo = tmp_path / "child.pid"
    os.mkfifo(fifo)
    raised: list[BaseException] = []
    s = cancel.Scope()

    def build(out: Path) -> None:
        (out / "half-written").write_text("x")
        with StepLog(tmp_path / "build.log", log=lambda _msg: None) as steps:
            steps.run("make modules", _group_script(fifo))

    def builder() -> None:
        with cancel.scope(s):
            try:
                cache.cached_build("kmod", "0123456789abcdef", build)
            except BaseException as e:
                raised.append(e)

    t = threading.Thread(target=builder)
    t.start()
    child = _read_pid(fifo)
    s.cancel()
    t.join(scaled(PROMPT_S))
    assert not t.is_alive()
    assert len(raised) == 1 and isinstance(raised[0], cancel.Cancelled), raised
    assert str(raised[0]).startswith("cancelled while build step 'make modules' (sh -c ")
    assert process_exited(child, scaled(2))
    out = cache.output_dir("kmod", "0123456789abcdef")
    assert not out.exists() and not out.with_name(out.name + ".tmp").exists()
    assert s.ended is not None and s.ended.startswith("build step 'make modules'")


def test_a_command_outside_a_scope_runs_as_subprocess_run() -> None:
    # an xdist worker's session guest (its QEMU) may be a live child all along
    before = {p.pid for p in proc.live_children()}
    r = cancel.run_text(["sh", "-c", "echo out; echo err >&2; exit 3"], doing="a test")
    assert (r.returncode, r.stdout, r.stderr) == (3, "out\n", "err\n")
    cancel.check("nothing")  # no scope: nothing to cancel
    assert [p for p in proc.live_children() if p.pid not in before] == []
