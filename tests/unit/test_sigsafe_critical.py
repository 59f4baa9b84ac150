"""Where a signal's exception must not land, besides locks: inside a :class:`critical`
block (a resource made but not yet recorded for its cleanup) and inside code exec() ran
from a string (CPython 3.11's "unhandled KeyboardInterrupt" flag, then ``python -m``'s
exit by SIGINT).  Each was a face of ``test_ctrl_c_while_the_guest_starts_ends_quietly``
failing one moment in a hundred: exit -2 and not a word; the socket folder left; the
half-made event loop's "no attribute '_ssock'" at exit."""

from __future__ import annotations

import asyncio
import gc
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from irqlab import sigsafe
from irqlab.sigsafe import SafeRaise, critical, in_critical
from irqlab.testing.parallel import WORKER_ENV
from irqlab.vm import aioloop, machine, proc

pytest_plugins = ["pytester"]

SIG = signal.SIGUSR2
WAIT_S = 5.0  # for the deferred raise: it comes DEFER_S after the block


class Raised(BaseException):
    """What the test's handler raises (as the irqlab command's raises Terminated)."""


@pytest.fixture
def handler() -> Iterator[SafeRaise]:
    """SIG handled as irqlab's handlers do: deferred where unsafe, else raised."""
    safe = SafeRaise(lambda e: None)

    def on_signal(signum: int, frame: Any) -> None:
        safe.redelivered(signum)
        if safe.deferred(signum, frame):
            return
        raise Raised(signum)

    safe.set_handlers([SIG], on_signal)
    try:
        yield safe
    finally:
        safe.restore()


def wait_for_the_raise() -> None:
    """Return only by the deferred raise (Raised), or fail after WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        time.sleep(0.001)  # the raise lands in this loop
    pytest.fail(f"the deferred signal was not raised within {WAIT_S} s")


def test_a_signal_inside_a_critical_block_is_raised_after_it(handler: SafeRaise) -> None:
    steps = []
    with pytest.raises(Raised):
        with critical():
            assert in_critical()
            signal.raise_signal(SIG)
            steps.append("the block went on")
        steps.append("after the block")
        assert not in_critical()
        wait_for_the_raise()
    assert steps == ["the block went on", "after the block"]
    assert not in_critical()


def test_a_signal_outside_one_is_raised_at_once(handler: SafeRaise) -> None:
    steps = []
    with pytest.raises(Raised):
        signal.raise_signal(SIG)
        steps.append("went on")
    assert steps == []


def raises_inside(real: Callable[..., Any]) -> Callable[..., Any]:
    """*real*, then the signal raised at its return (inside the caller's block)."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = real(*args, **kwargs)
        signal.raise_signal(SIG)
        return result

    return wrapper


def test_a_signal_as_the_socket_folder_is_made_leaves_it_recorded(
    handler: SafeRaise, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Raised between the mkdtemp and the record, the folder was never removed."""
    monkeypatch.setattr(machine, "sock_parent", lambda: tmp_path)
    monkeypatch.setattr(tempfile, "mkdtemp", raises_inside(tempfile.mkdtemp))
    with pytest.raises(Raised):
        machine.make_sock_dir()
        wait_for_the_raise()
    made = list(tmp_path.glob(f"irqlab-{os.getpid()}-*"))
    assert len(made) == 1 and made[0] in machine._SOCK_DIRS, (made, machine._SOCK_DIRS)
    machine.remove_sock_dir(made[0])
    assert not made[0].exists()


def test_a_signal_as_the_event_loop_is_made_leaves_no_half_made_loop(
    handler: SafeRaise, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Raised inside new_event_loop(), the loop's finaliser failed at exit:
    "'_UnixSelectorEventLoop' object has no attribute '_ssock'"."""
    unraisable: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    monkeypatch.setattr(selectors, "DefaultSelector", raises_inside(selectors.DefaultSelector))
    loops: list[aioloop.LoopThread] = []
    with pytest.raises(Raised):
        loops.append(aioloop.LoopThread(name="critical-test"))
        wait_for_the_raise()
    assert len(loops) == 1, "the loop is made before the raise"
    loops[0].close()
    gc.collect()
    assert not [u for u in unraisable if "_ssock" in str(u.exc_value)], unraisable
    assert isinstance(loops[0].loop, asyncio.AbstractEventLoop)


def test_a_signal_as_a_child_is_started_leaves_it_tracked(
    handler: SafeRaise, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Raised after Popen returned and before the child was recorded, the child ran on
    untracked: nothing stopped it but this process's exit."""
    before = set(proc.live_children())
    monkeypatch.setattr(subprocess, "Popen", raises_inside(subprocess.Popen))
    with pytest.raises(Raised):
        proc.spawn(["sleep", "30"])
        wait_for_the_raise()
    monkeypatch.undo()
    new = [p for p in proc.live_children() if p not in before]
    assert len(new) == 1, "the child is tracked"
    assert proc.stop(new[0]) is not None


MAIN_WRAPPER = """
import sys
import irqlab.contract.regs as regs

def interrupted(*args, **kwargs):
    exec("raise KeyboardInterrupt")  # as a dataclass's methods are made, Ctrl-C

regs.bit_numbers = interrupted
from irqlab.cli.main import main
sys.exit(main(["regs"]))
"""


def test_python_m_irqlab_ends_with_its_status_after_a_ctrl_c_in_exec_code(
    tmp_path: Path,
) -> None:
    """The Ctrl-C is caught (status 130) but it had left code exec() ran: python -m
    ended by SIGINT after it (-2, not a word said)."""
    (tmp_path / "wrap_main.py").write_text(MAIN_WRAPPER)
    r = subprocess.run(
        [sys.executable, "-m", "wrap_main"], cwd=tmp_path, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert r.returncode == 130, (r.returncode, r.stderr)


@pytest.fixture
def _plain_pytest(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in WORKER_ENV:  # the inner run is a user's, not an xdist worker's
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("_plain_pytest")
def test_python_m_pytest_ends_with_its_status_after_a_ctrl_c_in_exec_code(
    pytester: pytest.Pytester,
) -> None:
    """pytest catches the interrupt and exits 2 (interrupted); with the interrupt left
    from code exec() ran, python -m pytest ended by SIGINT instead."""
    pytester.makepyfile(
        test_exec=textwrap.dedent(
            """
            def test_interrupted():
                exec("raise KeyboardInterrupt")
            """
        )
    )
    r = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert r.ret == pytest.ExitCode.INTERRUPTED, (r.ret, r.stdout.str()[-2000:])


def test_each_signal_has_its_own_allowance_of_deferrals(
    handler: SafeRaise, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The allowance was one for the SafeRaise's whole life (a pytest session): one
    signal deferred long spent it, and every later one was raised anywhere, inside
    logging's lock or paramiko's window too."""
    monkeypatch.setattr(sigsafe, "MAX_DEFERRALS", 3)
    # the allowance runs out inside: raised there after 3 deferrals
    with pytest.raises(Raised), critical():
        signal.raise_signal(SIG)
        wait_for_the_raise()
    steps = []
    with pytest.raises(Raised):
        with critical():  # a new signal: deferred again, past the block
            signal.raise_signal(SIG)
            steps.append("the block went on")
        wait_for_the_raise()
    assert steps == ["the block went on"]
    assert not in_critical()


def test_a_signal_in_criticals_own_frames_is_deferred_even_with_none_left(
    handler: SafeRaise, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Raised inside critical.__exit__ before its count went down, the count stayed up
    for good (every later signal deferred a second in that process)."""
    monkeypatch.setattr(sigsafe, "MAX_DEFERRALS", 0)  # nothing may be deferred
    seen: list[bool] = []

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code is critical.__exit__.__code__ and not seen:
            seen.append(handler.deferred(SIG, frame))  # as if the signal came there

    with pytest.raises(Raised):  # raised a moment later
        sys.setprofile(profile)
        try:
            with critical():
                pass
        finally:
            sys.setprofile(None)
        wait_for_the_raise()
    assert seen == [True], "deferred although the allowance is spent"
    assert not in_critical(), "the count is right"
