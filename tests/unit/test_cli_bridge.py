"""``bridge``: our stdin to an SSH channel and its output back (``irqlab run``'s and the
non-terminal ``irqlab shell``'s plumbing), against a fake channel: all input arrives in
order and its EOF follows; a command that reads no input neither blocks us nor
keeps us once it exits."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from irqlab.cli.guestcmd import bridge


class FakeChannel:
    """A paramiko channel's surface that bridge uses: its fileno is readable while
    output or EOF waits; *window* is the bytes it takes before blocking; with *echo*
    the command sends back what it reads at once (its window never fills)."""

    def __init__(self, *, echo: bool, window: int = 1 << 20) -> None:
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        self.echo, self.window = echo, window
        self.out = bytearray()
        self.sent = bytearray()
        self.eof_received = self.closed = self.write_shut = False
        self.status = 0

    def fileno(self) -> int:
        return self._r

    def _wake(self) -> None:
        os.write(self._w, b"!")

    def recv_stderr_ready(self) -> bool:
        return False

    def recv_ready(self) -> bool:
        return bool(self.out)

    def recv(self, n: int) -> bytes:
        data = bytes(self.out[:n])
        del self.out[:n]
        if not self.out and not self.eof_received:
            while True:
                try:
                    os.read(self._r, 4096)
                except BlockingIOError:
                    break
        return data

    def send_ready(self) -> bool:
        return self.closed or self.window > 0

    def send(self, data: bytes) -> int:
        if self.closed:
            raise OSError("Socket is closed")
        n = min(len(data), self.window, 32768)
        self.sent += data[:n]
        if self.echo:
            self.out += data[:n]
            self._wake()
        else:
            self.window -= n
        return n

    def shutdown_write(self) -> None:
        self.write_shut = True
        if self.echo:  # cat: input's EOF is the end
            self.exit()

    def exit(self, status: int = 0) -> None:
        self.status = status
        self.eof_received = self.closed = True
        self._wake()

    def recv_exit_status(self) -> int:
        return self.status


@pytest.fixture
def pipes() -> Iterator[dict[str, int]]:
    fds: dict[str, int] = {}
    fds["in_r"], fds["in_w"] = os.pipe()
    fds["out_r"], fds["out_w"] = os.pipe()
    yield fds
    for fd in fds.values():
        with contextlib.suppress(OSError):
            os.close(fd)


def _read_all(fd: int, into: bytearray) -> threading.Thread:
    def run() -> None:
        while chunk := os.read(fd, 65536):
            into.extend(chunk)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_all_input_arrives_in_order_then_eof(pipes: dict[str, int]) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB, more than a pipe or a packet holds
    chan = FakeChannel(echo=True)
    out = bytearray()
    reader = _read_all(pipes["out_r"], out)

    def feed() -> None:
        os.write(pipes["in_w"], data)
        os.close(pipes["in_w"])

    threading.Thread(target=feed, daemon=True).start()
    chan_: Any = chan
    assert bridge(chan_, pipes["in_r"], pipes["out_w"], pipes["out_w"]) == 0
    os.close(pipes["out_w"])
    reader.join(10)
    assert chan.sent == data and chan.write_shut
    assert out == data


def test_no_stdin_is_eof_at_once(pipes: dict[str, int]) -> None:
    chan = FakeChannel(echo=True)
    chan_: Any = chan
    assert bridge(chan_, None, pipes["out_w"], pipes["out_w"]) == 0
    assert chan.write_shut and chan.sent == b""


def test_a_command_that_reads_nothing_ends_the_bridge(pipes: dict[str, int]) -> None:
    """`yes | irqlab run -- true`: the window fills, the command exits; we neither
    block on the full window nor wait for the endless input to end."""
    chan = FakeChannel(echo=False, window=100_000)
    os.set_blocking(pipes["in_w"], False)
    stop = threading.Event()

    def endless() -> None:
        while not stop.is_set():
            try:
                os.write(pipes["in_w"], b"y\n" * 4096)
            except BlockingIOError:
                time.sleep(0.01)
            except OSError:
                return

    threading.Thread(target=endless, daemon=True).start()
    threading.Timer(0.5, chan.exit, args=(3,)).start()
    t0 = time.monotonic()
    chan_: Any = chan
    try:
        assert bridge(chan_, pipes["in_r"], pipes["out_w"], pipes["out_w"]) == 3
    finally:
        stop.set()
    assert time.monotonic() - t0 < 5
    assert len(chan.sent) == 100_000  # the window's worth, no more


def test_a_wakeup_runs_its_call_in_the_bridge_loop(pipes: dict[str, int]) -> None:
    """The shell's SIGWINCH handler only writes to a pipe; the resize runs in the
    bridge's loop (between sends), called once per wake-up, the pipe drained."""
    chan = FakeChannel(echo=False)
    woken, wake = os.pipe()
    os.set_blocking(woken, False)
    calls: list[int] = []

    def call() -> None:
        calls.append(threading.get_ident())
        if len(calls) == 2:
            chan.exit(0)
        else:
            os.write(wake, b"w")  # another signal: the loop wakes once more

    os.write(wake, b"ww")  # two signals before the loop looked: one wake-up
    chan_: Any = chan
    try:
        assert bridge(chan_, None, pipes["out_w"], pipes["out_w"], wakeup=(woken, call)) == 0
    finally:
        os.close(woken)
        os.close(wake)
    assert calls == [threading.get_ident()] * 2
