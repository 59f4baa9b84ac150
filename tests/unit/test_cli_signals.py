"""SIGTERM and SIGHUP end an irqlab command as Ctrl-C does: every ``finally`` runs
(the terminal's modes restored, temporary directories removed), one line says so, and
the exit status is 128 + the signal.  A stand-in subcommand plays the guest commands'
part (a raw terminal, a temporary directory), on a pseudo-terminal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from irqlab.cli.main import TEARDOWN_SIGNALS, teardown_on_signals
from irqlab.testing.helpers import process_exited
from irqlab.testing.terminal import COOKED, Terminal

# `irqlab regs` replaced by a command that holds a raw terminal and a temporary
# directory until it is stopped; with a third argument (a file) its finally waits until
# that file exists, so that a second signal arrives during the teardown.
STAND_IN = textwrap.dedent(
    """
    import os, shutil, signal, sys, tempfile, time
    from irqlab.cli import main as cli
    from irqlab.cli.guestcmd import raw_tty

    def hold(args):
        d = tempfile.mkdtemp(prefix=f"irqlab-{os.getpid()}-unit", dir=sys.argv[1])
        try:
            with raw_tty(sys.stdin.fileno()):
                print(f"holding {d}", flush=True)
                time.sleep(60)
        finally:
            print("tearing down", flush=True)
            if len(sys.argv) > 2 and not sys.argv[2].startswith("--"):
                end = time.monotonic() + 30
                while not os.path.exists(sys.argv[2]) and time.monotonic() < end:
                    time.sleep(0.01)
            shutil.rmtree(d)
        return 0

    if "--limit" in sys.argv:  # a teardown limit of 1 s, and a process group to kill
        import subprocess
        from irqlab.vm import proc
        cli.TEARDOWN_LIMIT_S = 1.0
        # the sleep is a grandchild: the parent-death signal would not end it, the
        # SIGKILL of the group does
        child = proc.spawn(["sh", "-c", "sleep 60 & echo $!; wait"], stdout=subprocess.PIPE)
        print(f"grandchild {child.stdout.readline().decode().strip()}", flush=True)
    if "--nohup" in sys.argv:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    cli.cmd_regs = hold
    sys.exit(cli.main(["regs"]))
    """
)


@pytest.fixture
def stand_in(tmp_path: Path) -> Iterator[Terminal]:
    t = Terminal([sys.executable, "-c", STAND_IN, str(tmp_path)])
    try:
        yield t
    finally:
        t.close()


@pytest.mark.parametrize("sig", TEARDOWN_SIGNALS, ids=lambda s: s.name)
def test_a_signal_tears_down_like_ctrl_c(stand_in: Terminal, tmp_path: Path, sig: int) -> None:
    assert stand_in.lflags() & COOKED == COOKED
    cooked = stand_in.lflags()
    stand_in.expect("holding")
    assert not stand_in.lflags() & COOKED  # raw now
    stand_in.proc.send_signal(sig)
    assert stand_in.wait() == 128 + sig, stand_in.seen
    assert stand_in.seen.rstrip().endswith(f"irqlab: stopped by {signal.Signals(sig).name}")
    assert "Traceback" not in stand_in.seen
    assert stand_in.lflags() == cooked, "the terminal's modes are restored"
    assert list(tmp_path.iterdir()) == [], "the temporary directory is removed"


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (signal.SIGTERM, signal.SIGTERM),
        (signal.SIGTERM, signal.SIGINT),  # Ctrl-C while a SIGTERM tears down
        (signal.SIGINT, signal.SIGHUP),  # Ctrl-C, then the window closed
    ],
    ids=lambda s: signal.Signals(s).name,
)
def test_a_second_signal_does_not_cut_the_teardown_short(
    tmp_path: Path, first: int, second: int
) -> None:
    work, go_on = tmp_path / "work", tmp_path / "second-sent"
    work.mkdir()
    t = Terminal([sys.executable, "-c", STAND_IN, str(work), str(go_on)])
    try:
        t.expect("holding")
        t.proc.send_signal(first)
        t.expect("tearing down")  # the stand-in's finally waits for go_on
        t.proc.send_signal(second)
        go_on.touch()
        assert t.wait() == (130 if first == signal.SIGINT else 128 + first), t.seen
        assert "Traceback" not in t.seen
        assert list(work.iterdir()) == []
    finally:
        t.close()


def test_sighup_ignored_by_nohup_stays_ignored(tmp_path: Path) -> None:
    t = Terminal([sys.executable, "-c", STAND_IN, str(tmp_path), "--nohup"])
    try:
        t.expect("holding")
        t.proc.send_signal(signal.SIGHUP)
        with pytest.raises(subprocess.TimeoutExpired):
            t.proc.wait(0.5)
        t.proc.send_signal(signal.SIGTERM)
        assert t.wait() == 128 + signal.SIGTERM
    finally:
        t.close()


def test_the_handlers_are_put_back() -> None:
    before = [signal.getsignal(s) for s in TEARDOWN_SIGNALS]
    with teardown_on_signals():
        assert [signal.getsignal(s) for s in TEARDOWN_SIGNALS] != before
    assert [signal.getsignal(s) for s in TEARDOWN_SIGNALS] == before


@pytest.mark.parametrize("sig", [signal.SIGINT, *TEARDOWN_SIGNALS], ids=lambda s: s.name)
def test_a_teardown_that_hangs_is_ended_with_the_stacks_and_its_children(
    tmp_path: Path, sig: int
) -> None:
    """A teardown stuck past TEARDOWN_LIMIT_S (here 1 s; the stand-in's finally waits
    for a file that never comes) is ended: where it hung, children killed, the status."""
    never = tmp_path / "never"
    t = Terminal([sys.executable, "-c", STAND_IN, str(tmp_path), str(never), "--limit"])
    try:
        child = int(t.expect(r"grandchild (\d+)").group(1))
        t.expect("holding")
        t.proc.send_signal(sig)
        t.expect("tearing down")
        assert t.wait(15) == (130 if sig == signal.SIGINT else 128 + sig), t.seen
        name = signal.Signals(sig).name
        assert f"the teardown after {name} did not finish within 1 s" in t.seen, t.seen
        assert "most recent call first" in t.seen and "in hold" in t.seen, t.seen
        assert process_exited(child, 5), "the process group was killed"
    finally:
        t.close()


def test_a_signal_inside_the_handler_does_not_wait_on_the_first() -> None:
    """A second signal can run the handler inside the first one; if the first was
    inside the event's set() (its lock taken, the flag not yet set), the second one
    waited on that lock for ever: irqlab could then only be killed."""
    from irqlab.teardown_watch import TeardownWatch

    watch = TeardownWatch(60.0)
    try:
        watch.signum = signal.SIGINT  # the first handler's first step
        with watch.fired._cond:  # type: ignore[attr-defined]  # ...and inside set()
            answer: list[bool] = []
            nested = threading.Thread(target=lambda: answer.append(watch.start(signal.SIGTERM)))
            nested.start()
            nested.join(5)
            assert not nested.is_alive(), "the second signal waited on the first"
        assert answer == [False]
    finally:
        watch.end()


def _run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


def test_ctrl_c_is_not_raised_while_the_main_thread_holds_loggings_lock() -> None:
    """The CI failure of test_ctrl_c_while_the_guest_starts_ends_quietly: Ctrl-C raised
    inside logging's _releaseLock left the module's lock held; paramiko's threads then
    waited on it for ever in their next log call, and the teardown with them."""
    r = _run_python(
        """
        import logging, os, signal, time
        from irqlab.cli.main import teardown_on_signals
        with teardown_on_signals():
            try:
                logging._lock.acquire()
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.3)  # the handler runs here: it must not raise now
                logging._lock.release()
                time.sleep(10)
                print("never interrupted")
            except KeyboardInterrupt:
                print("lock held" if logging._lock._is_owned() else "lock free")
        """
    )
    assert r.stdout.strip() == "lock free", (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr


def test_ctrl_c_that_lands_in_a_finaliser_is_delivered_again() -> None:
    """Raised in a __del__ (or a weakref callback such as logging's), KeyboardInterrupt
    is printed as "Exception ignored" and lost: the command went on, and the teardown
    watch killed it 20 s later."""
    r = _run_python(
        """
        import os, signal, time
        from irqlab.cli.main import teardown_on_signals

        class Finalised:
            def __del__(self):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.3)  # the handler runs in here

        with teardown_on_signals():
            try:
                Finalised()  # dropped at once: its __del__ runs
                time.sleep(10)
                print("never interrupted")
            except KeyboardInterrupt:
                print("interrupted")
        """
    )
    assert r.stdout.strip() == "interrupted", (r.stdout, r.stderr)
    assert "Exception ignored" not in r.stderr, r.stderr


def test_a_signal_deferred_as_the_block_ends_is_not_lost() -> None:
    """Deferred in the block's last milliseconds, it was dropped with the handlers: a
    SIGTERM then ended nothing and irqlab exited as if none had come."""
    r = _run_python(
        """
        import logging, os, signal
        from irqlab.cli.main import teardown_on_signals
        with teardown_on_signals():
            logging._lock.acquire()
            os.kill(os.getpid(), signal.SIGTERM)  # deferred: logging's lock is held
            logging._lock.release()
        print("the block ended as if no SIGTERM had come")
        """
    )
    assert r.returncode == -signal.SIGTERM, (r.returncode, r.stdout, r.stderr)
    assert "as if no SIGTERM" not in r.stdout


def test_a_sigterm_that_cpythons_constant_folder_drops_is_raised_again() -> None:
    """CPython runs the signal handlers while it folds ``2**64`` and clears any
    exception they raise but KeyboardInterrupt: a SIGTERM that came while a module was
    compiled on import (``irqlab run``'s first second, vm/guest.py) was lost, and the
    command ran to its end with status 0.  The signal is tripped inside the C calls
    (no bytecode between them, so no handler runs before compile's folding)."""
    r = _run_python(
        """
        import _thread, itertools, operator, signal, threading
        from irqlab.cli.main import Terminated, teardown_on_signals
        steps = [(_thread.interrupt_main, signal.SIGTERM), (compile, "x = 2**64", "m", "exec")]
        try:  # caught where main() catches it: outside the block
            with teardown_on_signals():
                list(itertools.starmap(operator.call, steps))
                print("compiled", flush=True)  # the handler's raise was dropped in there
                threading.Event().wait(10)
                print("never interrupted")
        except Terminated:
            print("terminated")
        """
    )
    assert r.stdout.split() == ["compiled", "terminated"], (r.stdout, r.stderr)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr


# The first import of irqlab.cli.argtypes (main.py's, at its top) waits on stdin: the
# test signals the process while it is inside irqlab's imports.
BLOCKED_IMPORT = textwrap.dedent(
    """
    import importlib.abc, sys

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "irqlab.cli.argtypes":
                print("importing", flush=True)
                sys.stdin.readline()
            return None

    sys.meta_path.insert(0, Block())
    """
)
# The console script's target called as pip's wrapper calls it
CONSOLE_SCRIPT = textwrap.dedent(
    """
    import tomllib
    with open(sys.argv[1], "rb") as f:
        module, func = tomllib.load(f)["project"]["scripts"]["irqlab"].split(":")
    sys.argv[1:] = ["--version"]
    sys.exit(getattr(__import__(module, fromlist=[func]), func)())
    """
)


def _importing(entry: str, tmp_path: Path) -> subprocess.Popen[str]:
    """``irqlab --version`` started by *entry*, its imports blocked: the console script,
    or ``python -m irqlab.cli.main`` (the block then in a sitecustomize: Python's own
    ``-m`` runs the module)."""
    if entry == "irqlab":
        pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
        argv = [sys.executable, "-c", BLOCKED_IMPORT + CONSOLE_SCRIPT, str(pyproject)]
        env = None
    else:
        (tmp_path / "sitecustomize.py").write_text(BLOCKED_IMPORT)
        path = [str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
        argv = [sys.executable, "-m", "irqlab.cli.main", "--version"]
    return subprocess.Popen(
        argv, cwd=tmp_path, env=env,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@pytest.mark.parametrize("entry", ["irqlab", "python -m irqlab.cli.main"])
@pytest.mark.parametrize(
    "sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name
)
def test_a_signal_while_irqlab_imports_ends_it_as_documented(
    sig: int, entry: str, tmp_path: Path
) -> None:
    """Ctrl-C in the command's first few hundred ms (Python importing irqlab's modules)
    printed the import's traceback and exited -2; SIGTERM killed it without a word.
    ``python -m irqlab.cli.main`` (the README's) did so after the console script no
    longer did: it imported main.py's modules before any handler was set."""
    p = _importing(entry, tmp_path)
    try:
        assert p.stdout is not None
        assert p.stdout.readline() == "importing\n"
        p.send_signal(sig)
        err = p.communicate(timeout=30)[1]
    finally:
        p.kill()
        p.wait()
    assert p.returncode == 128 + sig, (p.returncode, err)
    said = "" if sig == signal.SIGINT else f"irqlab: stopped by {signal.Signals(sig).name}\n"
    assert err == said, err


def test_python_m_irqlab_cli_main_runs_the_command() -> None:
    """The module run directly goes through the console script's entry, to the end."""
    r = subprocess.run(
        [sys.executable, "-m", "irqlab.cli.main", "--version"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0 and r.stdout.startswith("irqlab "), (r.returncode, r.stderr)
