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


def _accept(sock: socket.socket) -> socket.socket | None:
    """The next connection on the listening *sock*; None once *sock* is shut down or
    closed (the loop that called it ends quietly)."""
    while True:
        try:
            return sock.accept()[0]
        except (InterruptedError, ConnectionAbortedError):
            continue  # a signal; a client gone before we took it
        except OSError as e:
            if e.errno in (errno.EINVAL, errno.EBADF):
                return None
            raise


def serve_forever(sock: socket.socket, make_agent: Callable[[Writer], Agent]) -> None:
    """Accept connections for ever; each runs a session in its own thread.

    A new connection takes over: the previous session's socket is shut down (its
    paths are disarmed, its files closed) before the new one starts.  So a host
    that vanished without closing (a restored snapshot, a killed test run) never
    blocks the next one.
    """
    current: tuple[socket.socket, threading.Thread] | None = None
    while (conn := _accept(sock)) is not None:
        if current is not None:
            old, thread = current
            with contextlib.suppress(OSError):
                old.shutdown(socket.SHUT_RDWR)
            thread.join(10.0)
        thread = threading.Thread(
            target=_session, args=(conn, make_agent), name="session", daemon=True
        )
        thread.start()
        current = (conn, thread)


def reseed_forever(sock: socket.socket) -> None:
    """Accept connections for ever; each sends one line, a hex seed of 16-256 bytes,
    and gets ``ok <CLOCK_BOOTTIME ns of the reseed>`` or ``error <why>``."""
    from irqlab_agent.sysio import reseed_kernel_rng

    while (conn := _accept(sock)) is not None:
        with conn:
            try:
                conn.settimeout(5.0)
                with conn.makefile("rb") as r:
                    seed = bytes.fromhex(r.readline(600).decode("ascii").strip())
                if not 16 <= len(seed) <= 256:
                    raise ValueError(f"a seed is 16..256 bytes, not {len(seed)}")
                reseed_kernel_rng(seed)
                conn.sendall(f"ok {time.clock_gettime_ns(time.CLOCK_BOOTTIME)}\n".encode())
            except (OSError, ValueError) as e:
                with contextlib.suppress(OSError):
                    conn.sendall(f"error {e}\n".encode())


def _session(conn: socket.socket, make_agent: Callable[[Writer], Agent]) -> None:
    from irqlab_agent.protocol import Writer

    with conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rfile = conn.makefile("rb")
        wfile = conn.makefile("wb")
        agent = make_agent(Writer(wfile))
        try:
            agent.serve(rfile)
        except Exception as e:  # a broken session must not end the daemon
            print(f"irqlab-agent: session ended: {e!r}", file=sys.stderr, flush=True)
            with contextlib.suppress(Exception):
                agent.shutdown()
        finally:
            for f in (rfile, wfile):
                with contextlib.suppress(OSError):
                    f.close()
