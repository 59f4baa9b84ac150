"""``irqlab run``, ``irqlab shell`` on a terminal and ``irqlab inject`` on the QMP
socket the shell prints, as a user runs them (subprocesses, a pseudo-terminal)."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from irqlab.contract.regs import QOM
from irqlab.vm.qmp.stats import Counters

IRQLAB = [sys.executable, "-m", "irqlab.cli.main"]


def irqlab(*args: str, timeout: float = 120, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*IRQLAB, *args], capture_output=True, text=True, timeout=timeout, check=False, **kw
    )  # type: ignore[call-overload,no-any-return]


def test_run_exits_with_the_commands_status_and_streams_its_output() -> None:
    r = irqlab("run", "--", "sh", "-c", "echo to-out; echo to-err >&2; exit 3")
    assert r.returncode == 3, r.stderr
    assert r.stdout == "to-out\n"
    assert "to-err" in r.stderr and "guest ready" in r.stderr


def test_run_with_a_device_property_and_a_file(tmp_path: Path) -> None:
    f = tmp_path / "note.txt"
    f.write_text("hello guest\n")
    r = irqlab(
        "run", "--device-prop", f"{QOM.PROP_GPIO_LINES}=4", "--put", f"{f}:/tmp/n.txt",
        "--", "cat /tmp/n.txt; gpiodetect",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("hello guest\n")
    assert re.search(r"\[irqlab-[^]]+\] \(4 lines\)", r.stdout), r.stdout


class Terminal:
    """irqlab shell on a pseudo-terminal: what a user types and sees."""

    def __init__(self, args: list[str]) -> None:
        self.master, slave = pty.openpty()
        os.set_blocking(self.master, False)
        self.proc = subprocess.Popen(
            args, stdin=slave, stdout=slave, stderr=slave, close_fds=True, start_new_session=True
        )
        os.close(slave)
        self.seen = ""

    def expect(self, pattern: str, timeout: float = 120.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while True:
            m = rx.search(self.seen)
            if m:
                self.seen = self.seen[m.end() :]
                return m
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{pattern!r} not seen within {timeout} s:\n{self.seen}")
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    self.seen += os.read(self.master, 65536).decode(errors="replace")
                except OSError:  # EIO: the other side closed
                    raise AssertionError(f"{pattern!r} not seen; EOF:\n{self.seen}") from None

    def send(self, text: str) -> None:
        os.write(self.master, text.encode())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)
        os.close(self.master)


@pytest.fixture
def shell() -> Iterator[Terminal]:
    t = Terminal([*IRQLAB, "shell"])
    try:
        yield t
    finally:
        t.close()


def test_shell_on_a_terminal_with_injection_over_its_qmp_socket(shell: Terminal) -> None:
    sock = shell.expect(r"QMP socket (\S+)")[1]
    shell.expect(r"irqlab:~# ")
    shell.send("stty size; tty\r")
    shell.expect(r"/dev/pts/\d+")
    r = irqlab("inject", "--qmp", sock, "push", "0x42", "0x43")
    assert r.returncode == 0, r.stderr
    r = irqlab("inject", "--qmp", sock, "counters")
    assert r.returncode == 0, r.stderr
    counters = Counters(**json.loads(r.stdout))  # the device's counters, every one
    assert counters.raised == 2
    # two pushes back to back: the second one coalesces when the guest had not yet
    # cleared the first one's status (a loaded host), so the guest sees one or two
    delivered = counters.delivered
    assert delivered + counters.coalesced == 2, counters
    shell.send("grep irqlab0-fifo /proc/interrupts\r")
    shell.expect(rf"\s{delivered}\s+PCI-MSI \d+-edge\s+irqlab0-fifo")
    shell.send("exit 7\r")
    assert shell.proc.wait(30) == 7
    assert not Path(sock).parent.exists(), "the QMP socket and its folder go with the guest"


def test_shell_without_a_terminal_reads_stdin() -> None:
    r = irqlab("shell", input="echo from-stdin; exit 5\n")
    assert r.returncode == 5, r.stderr
    assert "from-stdin" in r.stdout


def test_inject_without_a_socket_says_so() -> None:
    r = irqlab("inject", "--qmp", "/nonexistent/qmp.sock", "counters", timeout=30)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert "no such socket" in r.stderr
