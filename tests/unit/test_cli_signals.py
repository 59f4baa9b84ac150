"""SIGTERM and SIGHUP end an irqlab command as Ctrl-C does: every ``finally`` runs
(the terminal's modes restored, temporary directories removed), one line says so, and
the exit status is 128 + the signal.  A stand-in subcommand plays the guest commands'
part (a raw terminal, a temporary directory), on a pseudo-terminal."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import termios
import textwrap
import time
from pathlib import Path

import pytest

from irqlab.cli.main import TEARDOWN_SIGNALS, teardown_on_signals

# `irqlab regs` replaced by a command that holds a raw terminal and a temporary
# directory until it is stopped; its finally sleeps a little, so that a second signal
# can arrive during the teardown.
STAND_IN = textwrap.dedent(
    """
    import os, shutil, sys, tempfile, time
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
            time.sleep(0.5)
            shutil.rmtree(d)
        return 0

    cli.cmd_regs = hold
    sys.exit(cli.main(["regs"]))
    """
)


class Pty:
    """A child on a pseudo-terminal; :meth:`expect` reads what it writes."""

    def __init__(self, argv: list[str], **kw: object) -> None:
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True, **kw
        )  # type: ignore[call-overload]
        os.close(slave)
        self.seen = ""

    def read(self, timeout: float) -> bool:
        """Read what is there within *timeout*; False at EOF."""
        ready, _, _ = select.select([self.master], [], [], timeout)
        if ready:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: every slave is closed
                return False
            self.seen += data.decode(errors="replace")
            return bool(data)
        return True

    def expect(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            if time.monotonic() > deadline or not self.read(deadline - time.monotonic()):
                raise AssertionError(f"{text!r} not seen:\n{self.seen}")

    def wait(self, timeout: float = 30.0) -> int:
        """The exit status, reading the terminal meanwhile (a full one would block a
        writer, and a mode change waits for the output to drain)."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            if not self.read(0.05):
                break
        return self.proc.wait(max(0.1, deadline - time.monotonic()))

    def lflags(self) -> int:
        return int(termios.tcgetattr(self.master)[3])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)


@pytest.fixture
def stand_in(tmp_path: Path) -> Pty:
    return Pty([sys.executable, "-c", STAND_IN, str(tmp_path)])


@pytest.mark.parametrize("sig", TEARDOWN_SIGNALS, ids=lambda s: s.name)
def test_a_signal_tears_down_like_ctrl_c(stand_in: Pty, tmp_path: Path, sig: int) -> None:
    cooked = stand_in.lflags()
    assert cooked & termios.ICANON and cooked & termios.ECHO
    try:
        stand_in.expect("holding")
        assert not stand_in.lflags() & (termios.ICANON | termios.ECHO)  # raw now
        stand_in.proc.send_signal(sig)
        rc = stand_in.wait()
        assert rc == 128 + sig, stand_in.seen
        assert stand_in.seen.rstrip().endswith(f"irqlab: stopped by {signal.Signals(sig).name}")
        assert "Traceback" not in stand_in.seen
        assert stand_in.lflags() == cooked, "the terminal's modes are restored"
        assert list(tmp_path.iterdir()) == [], "the temporary directory is removed"
    finally:
        stand_in.close()


def test_a_second_signal_does_not_cut_the_teardown_short(stand_in: Pty, tmp_path: Path) -> None:
    try:
        stand_in.expect("holding")
        stand_in.proc.send_signal(signal.SIGTERM)
        stand_in.expect("tearing down")
        stand_in.proc.send_signal(signal.SIGTERM)
        assert stand_in.wait() == 128 + signal.SIGTERM, stand_in.seen
        assert list(tmp_path.iterdir()) == []
    finally:
        stand_in.close()


def test_sighup_ignored_by_nohup_stays_ignored(tmp_path: Path) -> None:
    t = Pty(
        [sys.executable, "-c", STAND_IN, str(tmp_path)],
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),
    )
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
