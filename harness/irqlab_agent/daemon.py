"""The agent as a guest daemon: one listening TCP socket, one session per connection.

A saved VM state (the host's ready-state snapshot) cannot keep the SSH channel
that started the agent: that host process is gone after a restore.  So the
agent listens on a loopback port in the guest and the host reaches it through
an SSH port forward (``direct-tcpip``) on whatever SSH connection it has now.

Each connection is one session with the same protocol as stdin/stdout (hello
first, then requests and events as JSON lines).  When the connection ends the
session's paths are disarmed and its files closed, and the daemon waits for the
next connection: a restored guest starts with an idle agent.

``--reseed ADDRESS`` adds a second listening socket for the host's first words to a
restored guest: one line, a hex seed, mixed into the kernel's RNG and reseeded from
at once, answered ``ok <CLOCK_BOOTTIME ns>``.  QEMU forwards a host port to it
directly, so the host reseeds before it opens any SSH connection (dropbear draws
its keys for a new connection from the kernel's RNG).  It reports nothing else.

``--daemon`` detaches once the socket listens: the parent prints
``listening <port> <pid>`` and exits 0, so the command that started it returns
only when a connection can succeed (no polling for readiness on the host).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import sys
import threading
import time

TYPE_CHECKING = False  # typing is not imported at run time: it costs start-up time
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import BinaryIO

    from irqlab_agent.agent import Agent
    from irqlab_agent.protocol import Writer


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``PORT`` (host 127.0.0.1) -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host = "127.0.0.1"
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"bad listen address {text!r}: the port must be a number") from None
    if not 0 <= number <= 65535:
        raise ValueError(f"bad listen address {text!r}: port out of range")
    return host or "127.0.0.1", number


def listen(address: tuple[str, int]) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    sock.listen(4)
    return sock


def detach(sock: socket.socket, log_path: str) -> None:
    """Fork; the parent reports the port and pid on stdout and exits 0; the child
    becomes a session leader with stdio on *log_path* and returns."""
    r, w = os.pipe()
    pid = os.fork()
    if pid:
        os.close(w)
        with os.fdopen(r, "rb") as ready:
            child = ready.read().decode().strip()  # the grandchild's pid, once detached
        print(f"listening {sock.getsockname()[1]} {child}", flush=True)
        os._exit(0 if child else 1)
    os.close(r)
    os.setsid()
    if os.fork():  # the session leader exits: the daemon can never regain a tty
        os._exit(0)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(null)
    os.close(fd)
    os.write(w, str(os.getpid()).encode())
    os.close(w)


# How long a new connection waits for the previous session to end before shutting
# that session's agent down itself (its thread is stuck in a request).
TAKEOVER_JOIN_S = 10.0
# A previous session in one request this long is stuck in it (a blocking read, a
# long wait): its agent is stopped then, not after TAKEOVER_JOIN_S.
STUCK_REQUEST_S = 1.0
# accept() out of files or memory: the daemon waits this long and tries again.
ACCEPT_BACKOFF_S = 0.5
# A reseed connection that has not sent its line within this is dropped (its thread's).
RESEED_READ_TIMEOUT_S = 5.0
# Reseed connections served at once; one beyond is closed at once (the host tries again).
# Anyone on the host can open connections to the forwarded port: unbounded, idle ones
# took a thread each until the guest had none left.
RESEED_CONNECTIONS = 8
_SCARCE = (errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS)


def _log(message: str) -> None:
    print(f"irqlab-agent: {message}", file=sys.stderr, flush=True)


def _accept(sock: socket.socket) -> socket.socket | None:
    """The next connection on the listening *sock*; None once *sock* is shut down or
    closed (the loop that called it ends quietly).  Out of files or memory (EMFILE,
    ENFILE, ENOMEM, ENOBUFS) it logs, waits :data:`ACCEPT_BACKOFF_S` and goes on: the
    daemon outlives a session that leaked files."""
    while True:
        try:
            return sock.accept()[0]
        except (InterruptedError, ConnectionAbortedError):
            continue  # a signal; a client gone before we took it
        except OSError as e:
            if e.errno in (errno.EINVAL, errno.EBADF):
                return None
            if e.errno in _SCARCE:
                _log(f"accept: {e}; trying again in {ACCEPT_BACKOFF_S} s")
                time.sleep(ACCEPT_BACKOFF_S)
                continue
            raise


def serve_forever(sock: socket.socket, make_agent: Callable[[Writer], Agent]) -> None:
    """Accept connections for ever; each runs a session in its own thread.

    A new connection takes over: the previous session's socket is shut down (its
    paths are disarmed, its files closed) before the new one starts.  So a host
    that vanished without closing (a restored snapshot, a killed test run) never
    blocks the next one.  A previous session that has been in one request for
    :data:`STUCK_REQUEST_S`, or has not ended after :data:`TAKEOVER_JOIN_S`, has its
    agent stopped from here (paths, responders, signal dispatcher: ``Agent.stop``):
    nothing of it competes with the new session for the signals; its thread closes
    its handles when the request returns.
    """
    current: _Session | None = None
    while (conn := _accept(sock)) is not None:
        if current is not None:
            current.end(TAKEOVER_JOIN_S, STUCK_REQUEST_S)
        current = _Session.start(conn, make_agent)


def reseed_forever(sock: socket.socket) -> None:
    """Accept connections for ever; each sends one line, a hex seed of 16-256 bytes,
    and gets ``ok <CLOCK_BOOTTIME ns of the reseed>`` or ``error <why>``.  Each is
    served in a thread of its own: a connection that sends nothing (anyone's on the
    host can reach the port QEMU forwards on 127.0.0.1) held up the host's reseed
    after a restore until its read timed out.  At most :data:`RESEED_CONNECTIONS` are
    served at once: one beyond is closed at once, unanswered (the host's reseed tries
    again), so idle connections cannot use up the guest's threads."""
    slots = threading.BoundedSemaphore(RESEED_CONNECTIONS)
    while (conn := _accept(sock)) is not None:
        if not slots.acquire(blocking=False):
            conn.close()
            continue
        try:
            threading.Thread(target=_reseed, args=(conn, slots), name="reseed", daemon=True).start()
        except RuntimeError as e:  # no thread to be had: that connection is refused
            _log(f"reseed: {e}")
            conn.close()
            slots.release()


def _reseed(conn: socket.socket, slots: threading.BoundedSemaphore) -> None:
    """Serve one reseed connection (:func:`reseed_forever`), then give its slot back."""
    try:
        _serve_reseed(conn)
    finally:
        slots.release()


def _serve_reseed(conn: socket.socket) -> None:
    from irqlab_agent.sysio import reseed_kernel_rng

    with conn:
        try:
            conn.settimeout(RESEED_READ_TIMEOUT_S)
            with conn.makefile("rb") as r:
                seed = bytes.fromhex(r.readline(600).decode("ascii").strip())
            if not 16 <= len(seed) <= 256:
                raise ValueError(f"a seed is 16..256 bytes, not {len(seed)}")
            reseed_kernel_rng(seed)
            conn.sendall(f"ok {time.clock_gettime_ns(time.CLOCK_BOOTTIME)}\n".encode())
        except (OSError, ValueError) as e:
            with contextlib.suppress(OSError):
                conn.sendall(f"error {e}\n".encode())


class _Session:
    """One connection's agent, served in a thread of its own."""

    def __init__(self, conn: socket.socket, rfile: BinaryIO, wfile: BinaryIO, agent: Agent):
        self.conn, self.rfile, self.wfile, self.agent = conn, rfile, wfile, agent
        self.thread = threading.Thread(target=self._serve, name="session", daemon=True)

    @classmethod
    def start(cls, conn: socket.socket, make_agent: Callable[[Writer], Agent]) -> _Session | None:
        """The session of *conn*, running; None (the connection closed, the failure
        logged) when its agent cannot be made (out of files: the daemon goes on)."""
        from irqlab_agent.protocol import Writer

        files: list[BinaryIO] = []
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            files.append(conn.makefile("rb"))
            files.append(conn.makefile("wb"))
            session = cls(conn, files[0], files[1], make_agent(Writer(files[1])))
        except Exception as e:
            _log(f"cannot start a session: {e!r}")
            for f in files:
                with contextlib.suppress(OSError):
                    f.close()
            with contextlib.suppress(OSError):
                conn.close()
            return None
        session.thread.start()
        return session

    def _serve(self) -> None:
        with self.conn:
            try:
                self.agent.serve(self.rfile)
            except Exception as e:  # a broken session must not end the daemon
                _log(f"session ended: {e!r}")
                with contextlib.suppress(Exception):
                    self.agent.shutdown()
            finally:
                for f in (self.rfile, self.wfile):
                    with contextlib.suppress(OSError):
                        f.close()

    def end(self, timeout: float, stuck: float) -> None:
        """Shut the connection down and wait up to *timeout* for the session to end;
        if it does not, or has been in one request for *stuck* seconds (the request
        outlives its host: a blocking read, a long wait), stop its agent from here."""
        with contextlib.suppress(OSError):
            self.conn.shutdown(socket.SHUT_RDWR)
        start = time.monotonic()
        while self.thread.is_alive():
            now, since = time.monotonic(), self.agent.busy_since
            if since is not None and now - since >= stuck:
                why = f"has been in one request for {now - since:.1f} s"
                break
            if now - start >= timeout:
                why = f"did not end in {timeout} s"
                break
            self.thread.join(0.05)
        else:
            return
        _log(f"the previous session {why}: stopping its agent")
        with contextlib.suppress(Exception):
            self.agent.stop()
