"""A channel's stdio as Python io streams (irqlab.vm.ssh.channel_files): what is opened is
closed, and a stream that dies in a garbage cycle (a failed test's traceback holding the
guest's agent) is collected without an "Exception ignored in ... __del__" (pytest's
PytestUnraisableExceptionWarning), as paramiko's makefile() objects were not."""

from __future__ import annotations

import gc
import socket
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from irqlab.vm.agent_client import AgentClient
from irqlab.vm.ssh import SEND_CHUNK, ChannelStream, RemoteProcess, channel_files, send_all


class SocketChannel:
    """The part of paramiko.Channel the streams use, over a socket pair (stderr: its
    own pair)."""

    def __init__(self) -> None:
        self.out, self.peer = socket.socketpair()
        self.err, self.err_peer = socket.socketpair()
        self.eof_sent = False
        self.closed = False
        self.status_event = threading.Event()  # the command's exit status arrived

    def recv(self, n: int) -> bytes:
        return self.out.recv(n)

    def recv_stderr(self, n: int) -> bytes:
        return self.err.recv(n)

    def sendall(self, data: bytes) -> None:
        self.out.sendall(data)

    def shutdown_write(self) -> None:
        self.eof_sent = True
        self.out.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.closed = True
        for s in (self.out, self.peer, self.err, self.err_peer):
            s.close()


@pytest.fixture
def unraisable() -> Iterator[list[Any]]:
    """What reaches sys.unraisablehook (exceptions in __del__) while the test runs."""
    seen: list[Any] = []
    old = sys.unraisablehook
    sys.unraisablehook = seen.append
    try:
        yield seen
    finally:
        sys.unraisablehook = old


def test_streams_read_write_and_close_sends_eof() -> None:
    chan = SocketChannel()
    stdin, stdout, stderr = channel_files(chan)  # type: ignore[arg-type]
    stdin.write(b"hello\n")
    stdin.flush()
    assert chan.peer.recv(100) == b"hello\n"
    chan.peer.sendall(b"line one\nline two\n")
    chan.err_peer.sendall(b"oops")
    chan.peer.shutdown(socket.SHUT_WR)
    chan.err_peer.shutdown(socket.SHUT_WR)
    assert list(stdout) == [b"line one\n", b"line two\n"]
    assert stderr.read() == b"oops"
    stdin.close()
    assert chan.eof_sent and chan.peer.recv(10) == b""
    with pytest.raises(ValueError, match="not stdin, stdout or stderr"):
        ChannelStream(chan, "both")  # type: ignore[arg-type]
    chan.close()


def test_remote_process_close_closes_its_streams() -> None:
    chan = SocketChannel()
    chan.status_event.set()
    proc = RemoteProcess(chan, "cmd")  # type: ignore[arg-type]
    proc.close()
    assert chan.eof_sent and chan.closed
    assert proc.stdin.closed and proc.stdout.closed and proc.stderr.closed


def test_streams_in_a_garbage_cycle_are_collected_quietly(unraisable: list[Any]) -> None:
    for close_first in (True, False):
        chan = SocketChannel()
        holder: dict[str, Any] = {"files": channel_files(chan)}  # type: ignore[arg-type]
        holder["self"] = holder  # a cycle, as a traceback's frames make one
        holder["files"][0].write(b"unflushed")
        if close_first:
            for f in holder["files"]:
                f.close()
        del holder
        gc.collect()
        chan.close()
    assert not unraisable, [u.exc_value for u in unraisable]


def test_agent_client_closes_its_streams(unraisable: list[Any], tmp_path: Any) -> None:
    """An AgentClient over a channel's streams (as Guest._connect_agent makes it), closed,
    then dropped in a garbage cycle."""
    chan = SocketChannel()
    stdin, stdout, _ = channel_files(chan)  # type: ignore[arg-type]
    chan.peer.sendall(b'{"type": "hello"}\n')
    client = AgentClient(stdin, stdout, None, logs=tmp_path, on_close=chan.close)
    client.wait_hello(5)
    cycle: dict[str, Any] = {"client": client}
    cycle["self"] = cycle
    client.close(timeout=0.1)  # the peer never answers "quit": the channel's close ends it
    assert stdin.closed and stdout.closed
    del client, cycle, stdin, stdout
    gc.collect()
    assert not unraisable, [u.exc_value for u in unraisable]


class PacketChannel:
    """paramiko.Channel's sendall as it is (send() takes one packet; sendall slices
    what is left), counting the bytes the slicing copies."""

    PACKET = 32 * 1024

    def __init__(self) -> None:
        self.received = bytearray()
        self.copied = 0

    def send(self, data: bytes) -> int:
        n = min(len(data), self.PACKET)
        self.received += data[:n]
        return n

    def sendall(self, data: bytes) -> None:
        while data:
            sent = self.send(data)
            data = data[sent:]
            self.copied += len(data)


@pytest.mark.parametrize("size", [0, 1, SEND_CHUNK - 1, SEND_CHUNK, 8 * SEND_CHUNK + 5])
def test_send_all_sends_everything_in_order(size: int) -> None:
    data = bytes(i % 251 for i in range(size))
    chan = PacketChannel()
    send_all(chan, data)
    assert chan.received == data


def test_big_writes_are_linear_not_quadratic() -> None:
    """A 64 MiB copy into the guest took 37 s (paramiko's sendall copied what was left
    after each 32 KiB packet); send_all hands it SEND_CHUNK at a time."""
    data = bytes(16 * 2**20)
    chan = PacketChannel()
    send_all(chan, data)
    assert len(chan.received) == len(data)
    assert chan.copied <= len(data), f"{chan.copied} bytes copied to send {len(data)}"
    stream = ChannelStream(chan, "stdin")  # type: ignore[arg-type]
    chan.copied = 0
    assert stream.write(memoryview(data)) == len(data)
    assert chan.copied <= len(data), f"{chan.copied} bytes copied to send {len(data)}"


def test_send_all_stops_at_its_deadline() -> None:
    """The command's deadline bounds sending its input too: a reader that stopped
    reading held each piece for the channel's whole timeout."""

    class Timed(PacketChannel):
        def __init__(self) -> None:
            super().__init__()
            self.timeouts: list[float] = []

        def settimeout(self, t: float) -> None:
            self.timeouts.append(t)

    late = Timed()
    with pytest.raises(TimeoutError):
        send_all(late, bytes(3 * SEND_CHUNK), deadline=time.monotonic() - 1)
    assert late.received == b""  # nothing sent past the deadline
    timely = Timed()
    send_all(timely, bytes(3 * SEND_CHUNK), deadline=time.monotonic() + 60)
    assert len(timely.received) == 3 * SEND_CHUNK
    assert len(timely.timeouts) == 3 and all(0 < t <= 60 for t in timely.timeouts)
