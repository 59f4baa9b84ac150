"""SSH to the guest (paramiko) through QEMU user networking's forwarded port.

Pitfalls this module handles (see BRIEF.md):

* QEMU user networking accepts the TCP connection before the guest's sshd
  listens, so the first attempts fail with "Error reading SSH protocol banner"
  or a reset: :meth:`SshClient.connect` retries with short banner/auth timeouts
  until an overall deadline.
* dropbear misbehaves when a new channel is opened before the previous one's
  exit status arrived: :meth:`SshClient.run` (and :meth:`SshClient.put`, a command
  too) is serialised and always waits for the exit status before closing a channel.
* a connection on which opening a channel fails is not reused: it is replaced
  by a new one (channels already open on the old one, e.g. a running
  process's, stay usable until :meth:`SshClient.close`).
* :meth:`SshClient.put` writes a file as :meth:`irqlab.vm.guest.Guest.put` does, with
  the command of :mod:`irqlab.vm.guestfile` (SFTP wrote the target in place: a copy cut
  short left a cut file, and a running program could not be replaced).
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import posixpath
import secrets
import shlex
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple, Protocol

from irqlab.errors import IrqlabError, hide_frame
from irqlab.vm.exit_signal import ExitSignal, exit_signal, track_exit_signals
from irqlab.vm.guestfile import check_put, put_command, put_failure
from irqlab.vm.loadscale import check_timeout
from irqlab.vm.paramiko_import import paramiko

__tracebackhide__ = hide_frame  # pytest: an IrqlabError's traceback leaves these frames out

__all__ = [
    "RETRYABLE",
    "ChannelStream",
    "CommandError",
    "HostKeyRefused",
    "RemoteProcess",
    "RemoteWriteError",
    "RunResult",
    "SshClient",
    "SshError",
    "SshTimeout",
    "SshUnreachable",
    "channel_files",
    "load_private_key",
    "tagged",
]

log = logging.getLogger(__name__)
# paramiko's transport thread logs a connection closed under it (Ctrl-C while SSH
# connects) with a traceback at ERROR; without a handler of the application's, Python's
# last-resort handler printed it on stderr.  The caller gets the error raised anyway.
# Our connections log on a channel of their own below paramiko's, which has a handler
# that does nothing: an application's own paramiko connections keep the last resort,
# and handlers the application puts on "paramiko" still see ours (records propagate).
TRANSPORT_LOG = "paramiko.transport.irqlab"
logging.getLogger(TRANSPORT_LOG).addHandler(logging.NullHandler())
# The commands of SshClient.run and open_process, and `irqlab run`'s, run with this
# variable set to a tag of their own (:func:`tagged`), which their children inherit: a
# command that timed out or was interrupted is found by it and killed, pipeline and all
# (:meth:`SshClient.kill_command`).  Closing its channel does not end it: dropbear leaves
# a command blocked in a read running, holding the files it opened (a driver's node
# then kept the module from unloading).
CMD_TAG_VAR = "IRQLAB_CMD"
CHANNEL_OPEN_TIMEOUT = 10.0  # s: at least, for a command's channel to open
STATUS_GRACE = 0.5  # s: a finished command's exit status and stderr, at the deadline
KILL_TIMEOUT = 5.0  # s: the kill of a timed-out command's processes
KILL_TIMEOUT_INTERRUPTED = 2.0  # s: the same after Ctrl-C (a frozen guest: not long)
# s: how long the processes a kill sent SIGKILL to have to die (be gone or a zombie)
# before they are said not to have died (an uninterruptible wait in a driver, state D)
DEATH_WAIT_S = 1.0
DEATH_POLL_S = 0.05  # s: how often that wait looks
STACK_FRAMES = 8  # of a process that did not die, in the message
STATE_WORDS = {"D": "uninterruptible", "S": "sleeping", "R": "running", "T": "stopped"}

# A reconnect (a connection to the guest had worked) gives up after this many attempts
# in a row that nothing answered: QEMU's forward accepted the TCP connection and then
# reset or closed it before any SSH banner, as it does when nothing listens on the
# guest's port (its sshd was killed).  A guest that boots does the same for a while, but
# that is the first connect, which retries to its deadline; a busy guest's banner comes
# late (a timeout: retried), and a reset after the banner (during kex) counts as an answer.
GONE_ATTEMPTS = 5
# ... and a reconnect after one that found nothing answering: an sshd restarted meanwhile
# accepts the first attempt (five more cost each later command 1.5 s of backoff)
GONE_AGAIN_ATTEMPTS = 2
LOST_UNDER_COMMAND = "the SSH connection to the guest closed while it ran: no exit status came"

RETRYABLE: tuple[type[BaseException], ...] = (
    paramiko.SSHException,  # banner errors, resets during kex, auth timeouts
    EOFError,
    OSError,  # connection refused/reset, socket.timeout
)


class SshError(IrqlabError, RuntimeError):
    """SSH to the guest failed (no connection within its timeout, a refused forward,
    the connection lost); the base of :class:`CommandError` (a command exited
    non-zero), :class:`SshTimeout` and :class:`SshUnreachable`."""


class SshTimeout(SshError, TimeoutError):
    """A command did not finish within its timeout (its processes in the guest were
    killed, or the message says why not); a TimeoutError too."""


class SshUnreachable(SshError):
    """The guest's SSH server no longer answers: a reconnect found nothing listening in
    the guest (:data:`GONE_ATTEMPTS` connections in a row reset or closed before any SSH
    banner), said at once instead of after the reconnect's 30 s of retries; every later
    command of that :class:`SshClient` raises it again at once."""


class CommandError(SshError):
    """A command exited non-zero (``result``: its :class:`RunResult`); rc -1 with no
    signal: it did not finish, the connection closed under it (*detail*: what else is
    known, e.g. that the guest is alive)."""

    def __init__(self, cmd: str, result: RunResult, *, detail: str = "") -> None:
        how = f"{result.signal.describe()}, rc={result.rc}" if result.signal else f"rc={result.rc}"
        if result.rc == -1 and result.signal is None:
            first = f"command did not finish (rc=-1): {LOST_UNDER_COMMAND}"
            first += f" ({detail})" if detail else ""
            first += f": {cmd}"
        else:
            first = f"command failed ({how}): {cmd}"
        # what it wrote, each stream that has anything (two empty sections said nothing)
        streams = (("stdout", result.out), ("stderr", result.err))
        said = [f"--- {name}\n{text}" for name, text in streams if text.strip()]
        super().__init__("\n".join([first, *said]) if said else f"{first}\n(no output)")
        self.result = result


class RemoteWriteError(CommandError):
    """A file could not be written in the guest (:meth:`SshClient.put_bytes`); the
    message has the path and the guest's words (:func:`irqlab.vm.guestfile.put_failure`),
    ``result`` the command's :class:`RunResult`."""

    def __init__(self, message: str, result: RunResult) -> None:
        RuntimeError.__init__(self, message)
        self.result = result


class _Finished(NamedTuple):
    rc: int
    out: str
    err: str


class RunResult(_Finished):
    """A finished command; a tuple, so that ``rc, out, err = ssh.run(...)`` works (typed).

    ``rc`` is the exit status; 128 + N when signal N killed the command (as a shell
    says it), and then ``signal`` names it; -1 when the connection closed before
    any status came.  ``out`` is stdout decoded (undecodable bytes replaced),
    ``out_bytes`` stdout as it came (a binary file's bytes)."""

    # (class defaults too: _replace() and _make() build the tuple without __new__)
    signal: ExitSignal | None = None
    out_bytes: bytes = b""

    def __new__(
        cls,
        rc: int,
        out: str,
        err: str,
        signal: ExitSignal | None = None,
        out_bytes: bytes | None = None,
    ) -> RunResult:
        self = super().__new__(cls, rc, out, err)
        self.signal = signal
        self.out_bytes = out.encode() if out_bytes is None else out_bytes
        return self

    def _replace(self, **changes: Any) -> RunResult:
        """A copy with *changes* (``signal`` and ``out_bytes`` too; a new ``out`` without
        ``out_bytes`` gives its own bytes)."""
        rc, out, err = (changes.pop(f, getattr(self, f)) for f in ("rc", "out", "err"))
        signal = changes.pop("signal", self.signal)
        raw = changes.pop("out_bytes", self.out_bytes if out == self.out else None)
        if changes:
            raise ValueError(f"RunResult has no fields {sorted(changes)}")
        return RunResult(rc, out, err, signal, raw)

    def __repr__(self) -> str:
        more = f", signal={self.signal.name!r}" if self.signal else ""
        return f"RunResult(rc={self.rc!r}, out={self.out!r}, err={self.err!r}{more})"


class _Client(Protocol):
    """The part of paramiko.SSHClient we use (fakes implement it in tests)."""

    def connect(
        self,
        hostname: str,
        *,
        port: int,
        username: str,
        pkey: paramiko.PKey | None,
        timeout: float,
        banner_timeout: float,
        auth_timeout: float,
        channel_timeout: float,
        look_for_keys: bool,
        allow_agent: bool,
    ) -> None: ...

    def get_transport(self) -> paramiko.Transport | None: ...

    def close(self) -> None: ...

    # asked of an SshClient with a host_key only (fakes without one need none)
    def set_missing_host_key_policy(self, policy: paramiko.MissingHostKeyPolicy) -> None: ...


class HostKeyRefused(SshError):
    """The server's host key is not the one pinned: nothing was offered to it."""


def _refuse_other_host_key(key: paramiko.PKey, want: str, where: str) -> None:
    """Raise :class:`HostKeyRefused` unless *key* is *want* (``"ssh-ed25519 AAAA..."``)."""
    got = f"{key.get_name()} {key.get_base64()}"
    want = " ".join(want.split()[:2])
    if got != want:
        raise HostKeyRefused(
            f"{where} presented host key {got[:60]}..., not the guest "
            f"image's {want[:60]}...: refusing (another process on that port?)"
        )


class _PinnedHostKey(paramiko.MissingHostKeyPolicy):
    """The host key check, before authentication: paramiko's connect() asks this for
    the server's key (the client knows no host keys) before it authenticates, so a
    server whose key is not the pinned one (the guest image's, generated per image
    build; another process on the guest's forwarded port) is refused before our client
    key is offered to it.  *want* None accepts any key (tools that connect to something
    other than our image)."""

    def __init__(self, want: str | None = None, where: str = "") -> None:
        self.want = want
        self.where = where

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        if self.want is not None:
            _refuse_other_host_key(key, self.want, self.where or hostname)


class _NoDelayClient(paramiko.SSHClient):
    """paramiko's client on a socket with TCP_NODELAY.  paramiko leaves Nagle's algorithm
    on, and over loopback to QEMU's forward a small message sent right after another
    (the service request after NEWKEYS, the signed auth request) waited for the host
    kernel's delayed ACK: ~40 ms each, 145 → 105 ms per connection to a restored guest."""

    def connect(  # type: ignore[override]
        self,
        hostname: str,
        port: int = paramiko.config.SSH_PORT,
        *,
        sock: Any = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> None:
        if sock is None:
            sock = socket.create_connection((hostname, port), timeout=timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            super().connect(hostname, port, sock=sock, timeout=timeout, **kwargs)
        except BaseException:
            sock.close()
            raise


BANNER_ERROR = "Error reading SSH protocol banner"  # paramiko's, + its cause's words
# what paramiko's banner error says of a connection reset or refused under it (its
# cause's str(): "[Errno 104] Connection reset by peer")
_NO_ANSWER_WORDS = tuple(
    f"[Errno {n}]" for n in (errno.ECONNRESET, errno.EPIPE, errno.ECONNREFUSED, errno.ECONNABORTED)
)


# how long (s) connects that find no free local port, and nothing else, go on before
# the host is said to have none (ports in TIME_WAIT come free within seconds)
NO_LOCAL_PORT_S = 3.0


def no_local_port(e: BaseException) -> str | None:
    """Why *e*, a failed connect to the guest's forwarded port, is the host's own
    trouble: no local port left to connect from (EADDRNOTAVAIL, also inside paramiko's
    per-address ``NoValidConnectionsError``), else None.  Retrying that for the whole
    connect timeout (60 s) ended in "no SSH connection", as if the guest were at fault."""
    errors = getattr(e, "errors", None)
    found = [e, *(errors.values() if isinstance(errors, dict) else ())]
    if any(isinstance(x, OSError) and x.errno == errno.EADDRNOTAVAIL for x in found):
        return (
            "this host has no free local port to connect from ([Errno 99] Cannot assign "
            "requested address): its ephemeral ports (sysctl net.ipv4.ip_local_port_range) "
            "are used up"
        )
    return None


def answered_nothing(
    e: BaseException, client: _Client | None = None, *, quick: bool = False
) -> bool:
    """Whether a connection attempt's error *e* (on *client*, before it is closed) says
    nothing answers SSH at the other end: the TCP connection refused, or reset or closed
    before the server's banner (what QEMU's forward does when nothing listens on the
    guest's port: the banner's read fails, or our own banner's write).  A banner that
    did not come in time (a busy guest) is no such answer, nor any error after the
    server's banner came (a reset during kex).

    paramiko raises the banner's error in its own thread, with the reset or the EOF as
    its context, and again in the caller's; raised there inside an ``except`` block
    (a reconnect while an error is handled: ``Guest.start_agent``'s), Python replaces
    that context by the error handled.  Its words then tell a reset ("[Errno 104] ...");
    an EOF and a timeout both say nothing: *quick* (the attempt failed well within the
    banner's timeout) tells the EOF."""
    transport = client.get_transport() if client is not None else None
    if getattr(transport, "remote_version", ""):
        return False  # the server's banner came: something answers SSH
    if isinstance(e, paramiko.SSHException) and str(e).startswith(BANNER_ERROR):
        inner = e.__context__
        if isinstance(inner, TimeoutError):  # socket.timeout: a busy guest's late banner
            return False
        if isinstance(inner, (ConnectionError, EOFError)):
            return True
        said = str(e)[len(BANNER_ERROR) :]  # its context lost: its words, its speed
        return said.startswith(_NO_ANSWER_WORDS) if said else quick
    return isinstance(e, (ConnectionError, EOFError))


def _default_client() -> _Client:
    c = _NoDelayClient()
    c.set_missing_host_key_policy(_PinnedHostKey())  # SshClient pins its host_key
    c.set_log_channel(TRANSPORT_LOG)
    return c


def load_private_key(path: Path) -> paramiko.PKey:
    """Load an Ed25519, ECDSA or RSA private key (OpenSSH format)."""
    errors: list[str] = []
    key_classes: list[type[paramiko.PKey]] = [
        paramiko.Ed25519Key,
        paramiko.ECDSAKey,
        paramiko.RSAKey,
    ]
    for cls in key_classes:
        try:
            return cls.from_private_key_file(str(path))
        except (paramiko.SSHException, ValueError) as e:
            errors.append(f"{cls.__name__}: {e}")
    raise SshError(f"cannot load private key {path}: {'; '.join(errors)}")


class ChannelStream(io.RawIOBase):
    """One direction of a paramiko channel as a raw stream: ``"stdout"`` and ``"stderr"``
    read (``recv``/``recv_stderr``), ``"stdin"`` writes (``sendall``; closing it sends EOF).

    Instead of paramiko's ``makefile()`` objects: their ``__del__`` flushes a
    ``BytesIO`` even when closed, and when they die in a garbage cycle (a failed test's
    traceback holding a guest's agent) the cycle collector may have closed that
    ``BytesIO`` first, which pytest reports as ``PytestUnraisableExceptionWarning ...
    ValueError: I/O operation on closed file``.  Python's io classes close once and
    quietly.  Wrap it in :func:`channel_files`' buffered streams."""

    def __init__(self, channel: paramiko.Channel, which: str) -> None:
        if which not in ("stdin", "stdout", "stderr"):
            raise ValueError(f"ChannelStream: {which!r} is not stdin, stdout or stderr")
        super().__init__()
        self.channel = channel
        self.which = which

    def readable(self) -> bool:
        return self.which != "stdin"

    def writable(self) -> bool:
        return self.which == "stdin"

    def readinto(self, buffer: Any) -> int:
        if not self.readable():
            raise io.UnsupportedOperation("stdin is not readable")
        recv = self.channel.recv_stderr if self.which == "stderr" else self.channel.recv
        data = recv(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def write(self, data: Any) -> int:
        if not self.writable():
            raise io.UnsupportedOperation(f"{self.which} is not writable")
        view = memoryview(data).cast("B")
        send_all(self.channel, view)
        return len(view)

    def close(self) -> None:
        if self.closed:
            return
        try:
            if self.which == "stdin":
                with contextlib.suppress(OSError, EOFError):
                    self.channel.shutdown_write()
        finally:
            super().close()


def channel_files(channel: paramiko.Channel) -> tuple[BinaryIO, BinaryIO, BinaryIO]:
    """(stdin, stdout, stderr) of *channel* as buffered binary streams over
    :class:`ChannelStream` (closing stdin sends EOF; closing the others only frees them)."""
    return (
        io.BufferedWriter(ChannelStream(channel, "stdin")),
        io.BufferedReader(ChannelStream(channel, "stdout")),
        io.BufferedReader(ChannelStream(channel, "stderr")),
    )


def _stdin_bytes(input: bytes | str | None) -> bytes | None:
    """A command's *input* as sent: a str as UTF-8 (as its output is read as text,
    ``out``); anything else but bytes refused before the command starts (a str
    was a TypeError from the send, the command started and then killed)."""
    if isinstance(input, str):
        return input.encode()
    if input is None or isinstance(input, bytes):
        return input
    if isinstance(input, bytearray | memoryview):
        return bytes(input)
    raise TypeError(f"input must be bytes or str, not {type(input).__name__}")


# The most send_all hands paramiko at once: its Channel.sendall slices what is left
# after each packet (about 32 KiB), so a 64 MiB buffer was copied ~2000 times
# (quadratic: a 64 MiB file took 37 s to copy in, a 4 MiB one 0.4 s).
SEND_CHUNK = 64 * 1024


def tagged(cmd: str) -> tuple[str, str]:
    """A new tag and the command line that runs *cmd* under it (:data:`CMD_TAG_VAR`
    exported: what the command starts inherits it), for
    :meth:`SshClient.kill_command`."""
    tag = secrets.token_hex(8)
    return tag, f"export {CMD_TAG_VAR}={tag}; {cmd}"


def file_mode(local: Path) -> int:
    """The permission bits of the local file *local* (what a copy into the guest keeps)."""
    return local.stat().st_mode & 0o777


def send_all(
    channel: Any, data: bytes | bytearray | memoryview, deadline: float | None = None
) -> None:
    """``channel.sendall(data)`` in :data:`SEND_CHUNK` pieces: linear in the data's size;
    with *deadline* (time.monotonic()), TimeoutError once it passes (a reader that
    stopped reading held each piece for the channel's whole timeout)."""
    view = memoryview(data).cast("B")
    for start in range(0, len(view), SEND_CHUNK):
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            channel.settimeout(left)
        channel.sendall(bytes(view[start : start + SEND_CHUNK]))


def _read_all(
    recv: Callable[[int], bytes],
    chan: paramiko.Channel | None = None,
    deadline: float | None = None,
) -> bytes:
    """Everything *recv* gives until EOF; with *deadline* (time.monotonic()) on *chan*,
    TimeoutError once it passes, however steadily the data comes (the channel's own
    timeout bounds each read alone: a command that printed a line a second never
    timed out)."""
    chunks: list[bytes] = []
    while True:
        if chan is not None and deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            chan.settimeout(left)
        chunk = recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


class RemoteProcess:
    """A long-running command on its own channel, with file-like stdio; started by
    :meth:`SshClient.open_process` under a tag (:func:`tagged`), by which :meth:`kill`,
    and :meth:`close` when the command outlives its timeout, find its guest processes."""

    def __init__(
        self, channel: paramiko.Channel, cmd: str, client: SshClient | None = None, tag: str = ""
    ) -> None:
        self.channel = channel
        self.cmd = cmd
        self.tag = tag
        self._client = client
        self.stdin, self.stdout, self.stderr = channel_files(channel)

    def exit_status(self, timeout: float | None = None) -> int | None:
        """The exit status, or None if the command still runs after *timeout* s
        (128 + N when signal N killed it: :attr:`signal` names it)."""
        if timeout is not None and not self.channel.status_event.wait(timeout):
            return None
        return self.channel.recv_exit_status()

    @property
    def signal(self) -> ExitSignal | None:
        """The signal that killed the command, once it ended so."""
        return exit_signal(self.channel)

    def close_stdin(self) -> None:
        """End the command's stdin (EOF for a command that reads it to its end)."""
        with contextlib.suppress(OSError, EOFError, ValueError):
            self.stdin.close()

    def kill(self, timeout: float = KILL_TIMEOUT) -> str:
        """Close the channel and kill the command's processes in the guest (closing the
        channel alone leaves them running); what to add to a message about it
        (:meth:`SshClient.kill_command`)."""
        if self._client is None or not self.tag:  # not started under a tag
            self.channel.close()
            return ""
        return self._client.kill_command(self.channel, self.tag, timeout)

    def abandon(self) -> None:
        """Close the channel and the streams without waiting or killing: for a command
        whose guest is about to be stopped anyway."""
        self.channel.close()
        for f in (self.stdin, self.stdout, self.stderr):
            with contextlib.suppress(OSError, ValueError):
                f.close()

    def close(self, timeout: float = 5.0) -> str:
        """Close stdin (the command's cue to exit) and wait up to *timeout* s for its exit
        status; a command still running then, or when Ctrl-C interrupts the wait, is
        killed in the guest as :meth:`SshClient.run`'s is at its timeout.  Closes the
        channel and the output streams; returns what the kill said ("" if none was
        needed or it found nothing)."""
        self.close_stdin()
        killed = ""
        try:
            if not self.channel.status_event.wait(timeout):
                killed = self.kill()
        except KeyboardInterrupt:
            self.kill(KILL_TIMEOUT_INTERRUPTED)
            raise
        finally:
            self.channel.close()
            for f in (self.stdout, self.stderr):
                with contextlib.suppress(OSError, ValueError):
                    f.close()
        return killed


def _plural(n: int) -> str:
    return f"{n} process{'' if n == 1 else 'es'}"


def killed_message(sent: int, survivors: str) -> str:
    """What a timed-out command's message adds about its kill: *sent* processes were
    sent SIGKILL, and *survivors* is the kill script's report of those that did not die
    (lines "PID state|comm|wchan|stack VALUE", as :meth:`SshClient._kill_tagged` writes
    them), e.g. " (killed in the guest: 1 process; 1 process did not die: pid 151 (cat),
    state D (uninterruptible), wchan mydrv_read, kernel stack: mydrv_read+0x22/0x90
    [mydrv] <- vfs_read+0xa5/0x310 <- ...)"; "" when nothing was sent."""
    facts: dict[str, dict[str, list[str]]] = {}
    for line in survivors.splitlines():
        pid, _, rest = line.strip().partition(" ")
        kind, _, value = rest.partition(" ")
        if pid.isdigit() and kind:
            facts.setdefault(pid, {}).setdefault(kind, []).append(value.strip())
    said: list[str] = []  # in an uninterruptible wait (or stopped)
    slow: list[str] = []  # in another state: not run since the kill
    for pid, f in facts.items():
        comm = " ".join(f.get("comm", [])).strip()
        parts = [f"pid {pid}" + (f" ({comm})" if comm else "")]
        state = " ".join(f.get("state", [])).strip()
        if state:
            word = STATE_WORDS.get(state)
            parts.append(f"state {state}" + (f" ({word})" if word else ""))
        wchan = " ".join(f.get("wchan", [])).strip()
        if wchan and wchan != "0":
            parts.append(f"wchan {wchan}")
        frames = [fr.split("] ", 1)[-1].strip() for fr in f.get("stack", [])]
        frames = [fr for fr in frames if fr]
        if frames:
            more = " <- ..." if len(frames) > STACK_FRAMES else ""
            parts.append("kernel stack: " + " <- ".join(frames[:STACK_FRAMES]) + more)
        # D (uninterruptible) or T (stopped): SIGKILL waits for the wait's end; another
        # state (R, S: a loaded guest had not run it yet) is a death not seen yet
        (said if state in ("D", "T", "t") or not state else slow).append(", ".join(parts))
    died = sent - len(said) - len(slow)
    words = [f"killed in the guest: {_plural(died)}"] if died > 0 else []
    if said:
        words.append(f"{_plural(len(said))} did not die: " + "; ".join(said))
    if slow:
        words.append(
            f"{_plural(len(slow))} not dead yet when the kill stopped looking (no "
            "uninterruptible wait: a loaded guest had not run it since): " + "; ".join(slow)
        )
    return f" ({'; '.join(words)})" if words else ""


class SshClient:
    """One SSH connection to the guest."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        user: str = "root",
        key_path: Path | None = None,
        pkey: paramiko.PKey | None = None,
        client_factory: Callable[[], _Client] = _default_client,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        host_key: str | None = None,
        reconnect_check: Callable[[], None] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.user = user
        self.key_path = key_path
        # "ssh-ed25519 AAAA...": the only host key accepted (None: any, for tools that
        # connect to something other than our image)
        self.host_key = host_key
        self._pkey = pkey
        # runs before a broken connection is replaced and ends that by raising: the
        # guest died (its QEMU's exit reset the connection), so there is nothing to
        # reconnect to (the Guest's: the health watch's verdict, a short wait)
        self.reconnect_check = reconnect_check
        self._factory = client_factory
        self._clock = clock
        self._sleep = sleep
        self._client: _Client | None = None
        self._shut = False  # close() was called: never connect again
        self._retired: list[_Client] = []  # replaced connections, closed in close()
        # re-entrant: run() kills its own command (kill_command) with the lock held
        self._exec_lock = threading.RLock()
        self.reconnects = 0
        self.attempts = 0
        self.last_error: BaseException | None = None
        # why the connection is gone for good (SshUnreachable's message), once a
        # reconnect found nothing answering SSH in the guest
        self.unreachable: str | None = None

    # -- connection -------------------------------------------------------------
    def connect(
        self,
        timeout: float = 60.0,
        *,
        attempt_timeout: float = 3.0,
        banner_timeout: float = 2.0,
        retry_interval: float = 0.1,
        max_interval: float = 1.0,
        check: Callable[[], None] | None = None,
        gone_after: int | None = None,
    ) -> SshClient:
        """Connect, retrying every failure until *timeout* seconds have passed; *check*
        runs before every attempt and ends the retrying by raising (a guest that died
        meanwhile is named then, not by the last of many refused connections).  With
        *gone_after* (a reconnect: a connection had worked), that many attempts in a
        row that nothing answered (:func:`answered_nothing`) raise
        :class:`SshUnreachable` at once."""
        if self._pkey is None and self.key_path is not None:
            self._pkey = load_private_key(self.key_path)
        start = self._clock()
        deadline = start + timeout
        interval = retry_interval
        unanswered = 0  # attempts in a row that nothing answered
        portless_since: float | None = None  # since when every attempt found no port
        while True:
            if self._shut:
                raise SshError(f"SSH to {self.host}:{self.port} was closed")
            if check is not None:
                check()
            self.attempts += 1
            began = self._clock()
            client = self._factory()
            if self.host_key is not None:  # refused before authentication
                client.set_missing_host_key_policy(
                    _PinnedHostKey(self.host_key, f"{self.host}:{self.port}")
                )
            try:
                client.connect(
                    self.host,
                    port=self.port,
                    username=self.user,
                    pkey=self._pkey,
                    timeout=attempt_timeout,
                    banner_timeout=banner_timeout,
                    auth_timeout=attempt_timeout,
                    channel_timeout=attempt_timeout,
                    look_for_keys=False,
                    allow_agent=False,
                )
            except HostKeyRefused:
                client.close()
                raise
            except paramiko.AuthenticationException as e:
                client.close()
                raise SshError(
                    f"SSH authentication to {self.user}@{self.host}:{self.port} failed: {e}"
                ) from e
            except RETRYABLE as e:
                host_fault = no_local_port(e)
                if host_fault is None:
                    portless_since = None
                elif portless_since is None:
                    portless_since = began
                elif self._clock() - portless_since >= NO_LOCAL_PORT_S:
                    client.close()
                    raise SshError(
                        f"no SSH connection to {self.host}:{self.port}: {host_fault}"
                    ) from None
                quick = self._clock() - began < banner_timeout / 2
                unanswered = unanswered + 1 if answered_nothing(e, client, quick=quick) else 0
                client.close()
                self.last_error = e
                left = deadline - self._clock()
                log.debug("ssh attempt %d failed: %r (%.1fs left)", self.attempts, e, left)
                if gone_after is not None and unanswered >= gone_after:
                    self.unreachable = (
                        f"nothing answers SSH in the guest any more (was its sshd, dropbear, "
                        f"killed?): {self.host}:{self.port} reset or closed {unanswered} "
                        f"connections in a row at once, before any SSH banner, in "
                        f"{self._clock() - start:.1f} s, after a connection had worked; "
                        f"last error: {e!r}"
                    )
                    raise SshUnreachable(self.unreachable) from None  # its error is said
                if left <= 0:
                    raise SshError(
                        f"no SSH connection to {self.host}:{self.port} after {self.attempts} "
                        f"attempts in {timeout:.0f}s; last error: {e!r}"
                    ) from e
                self._sleep(min(interval, left))
                interval = min(interval * 2, max_interval)
                continue
            transport = client.get_transport()
            if self.host_key is not None and transport is not None:
                self._check_host_key(client, transport)
            self._client = client
            if transport is not None:
                track_exit_signals(transport)  # before any channel: a crash is no -1
                transport.set_keepalive(5)
            return self

    def is_active(self) -> bool:
        """Whether the connection is up, as far as this side knows (no round trip)."""
        t = self._client.get_transport() if self._client is not None else None
        return t is not None and t.is_active()

    @property
    def transport(self) -> paramiko.Transport:
        t = self._client.get_transport() if self._client is not None else None
        if t is None or not t.is_active():
            if self.unreachable is not None:
                raise SshUnreachable(self.unreachable)
            raise SshError("SSH is not connected")
        return t

    def _check_host_key(self, client: _Client, transport: paramiko.Transport) -> None:
        """Refuse a server whose host key is not the one pinned (the guest image's), once
        more after the connection: :class:`_PinnedHostKey` refused it before
        authentication, unless a client of a *client_factory* knew a key for that
        address (paramiko then asks no policy)."""
        try:
            _refuse_other_host_key(
                transport.get_remote_server_key(), self.host_key or "", f"{self.host}:{self.port}"
            )
        except HostKeyRefused:
            client.close()
            raise

    def close(self) -> None:
        self._shut = True
        for old in self._retired:
            old.close()
        self._retired.clear()
        if self._client is not None:
            self._client.close()
            self._client = None

    def _reconnect(self, why: BaseException) -> paramiko.Transport:
        """Replace the connection after *why*; the old one is closed in :meth:`close`.
        :attr:`reconnect_check` is asked first: what it raises (the guest is dead) ends this.
        A guest in which nothing answers SSH any more raises :class:`SshUnreachable` in a
        second or two, not after 30 s of retries; each later call tries as briefly again
        (an sshd restarted meanwhile, by a test or systemd, is found)."""
        if self._client is None and self.unreachable is None:
            raise SshError("SSH is not connected") from why
        if self.reconnect_check is not None:
            self.reconnect_check()
        log.warning(
            "SSH connection to %s:%d unusable (%r): reconnecting", self.host, self.port, why
        )
        if self._client is not None:
            self._retired.append(self._client)
            self._client = None
        # nothing answered the last reconnect: a restarted sshd answers the first attempt
        gone_after = GONE_ATTEMPTS if self.unreachable is None else GONE_AGAIN_ATTEMPTS
        self.unreachable = None  # set again by connect() if nothing answers still
        self.reconnects += 1
        self.connect(timeout=30.0, gone_after=gone_after)
        return self.transport

    def _open(self, open_: Callable[[paramiko.Transport], Any]) -> Any:
        """``open_(transport)`` (a new channel); on a dead transport or a failed channel
        open, once more on a new connection.  Called with the exec lock held."""
        t = self._client.get_transport() if self._client is not None else None
        if t is None or not t.is_active():
            t = self._reconnect(SshError("transport is closed"))
        try:
            return open_(t)
        except (paramiko.SSHException, EOFError, OSError) as e:
            return open_(self._reconnect(e))

    def _open_as_is(self, cmd: str, timeout: float) -> paramiko.Channel:
        """A session channel on the connection as it is, within *timeout* s; else
        :class:`SshTimeout` naming *cmd* (no reconnect).  Called with the exec lock held."""
        try:
            return self.transport.open_session(timeout=timeout)
        except (paramiko.SSHException, EOFError, OSError) as e:
            why = str(e) or type(e).__name__
            raise SshTimeout(
                f"timeout ({timeout}s) running: {cmd} (its channel did not open: {why})"
            ) from None

    def __enter__(self) -> SshClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- commands ---------------------------------------------------------------
    def run(
        self,
        cmd: str,
        *,
        timeout: float = 60.0,
        check: bool = False,
        input: bytes | str | None = None,
        reconnect: bool = True,
    ) -> RunResult:
        """Run *cmd* (*input* on its stdin: bytes, or a str sent as UTF-8), wait for its
        exit status, return (rc, stdout, stderr).  A command that does not finish within
        *timeout* s raises :class:`SshTimeout`, one that Ctrl-C interrupts
        KeyboardInterrupt: either way its guest processes are killed.

        ``reconnect=False`` (a probe of whether the guest still answers): on the
        connection as it is, *timeout* bounding the channel's opening too; a channel
        that does not open in time is :class:`SshTimeout` at once, not a reconnect (a
        frozen guest cost the channel's 10 s and then the connect's 30 s)."""
        __tracebackhide__ = hide_frame
        check_timeout(timeout)
        stdin = _stdin_bytes(input)
        tag, line = tagged(cmd)
        with self._exec_lock:
            if reconnect:
                # opening the channel is not the command: a short command timeout must
                # not make a busy guest's channel open fail (and the connection be
                # replaced)
                opening = max(timeout, CHANNEL_OPEN_TIMEOUT)
                chan = self._open(lambda t: t.open_session(timeout=opening))
                deadline = time.monotonic() + timeout  # the whole command's
            else:
                deadline = time.monotonic() + timeout  # the channel's opening included
                chan = self._open_as_is(cmd, timeout)
            try:
                chan.settimeout(max(0.01, deadline - time.monotonic()))
                chan.exec_command(line)
                if stdin is not None:
                    self._send_input(chan, stdin, deadline)
                chan.shutdown_write()
                out, err = self._collect(chan, deadline)
                # its exit status may trail its output's EOF a moment at the deadline
                if not chan.status_event.wait(max(STATUS_GRACE, deadline - time.monotonic())):
                    raise TimeoutError
                rc = chan.recv_exit_status()
            except TimeoutError:
                killed = self.kill_command(chan, tag)
                # the message is the whole story: the bare TimeoutError's traceback (this
                # method's source) was printed before it in a failed test
                raise SshTimeout(f"timeout ({timeout}s) running: {cmd}{killed}") from None
            except KeyboardInterrupt:  # Ctrl-C: the command does not outlive the wait
                self.kill_command(chan, tag, KILL_TIMEOUT_INTERRUPTED)
                raise
            except BaseException as e:
                # any other end of the wait but the connection's own failure (pytest-
                # timeout's Failed, raised by its SIGALRM handler; SystemExit): the
                # command does not outlive it either (it held a driver's node open,
                # and the next test's module reload failed on it)
                if not isinstance(e, (paramiko.SSHException, OSError, EOFError)):
                    self.kill_command(chan, tag, KILL_TIMEOUT_INTERRUPTED)
                raise
            finally:
                chan.close()
        result = RunResult(
            rc, out.decode(errors="replace"), err.decode(errors="replace"), exit_signal(chan), out
        )
        if check and rc != 0:
            raise CommandError(cmd, result)
        return result

    @staticmethod
    def _send_input(chan: paramiko.Channel, data: bytes, deadline: float) -> None:
        """:func:`send_all` of a command's stdin *data*; a command that ended before
        reading it all (its channel closed by the guest: "Socket is closed") stops the
        sending, and its status and output are collected as for any other."""
        try:
            send_all(chan, data, deadline)
        except TimeoutError:
            raise
        except OSError:
            if not chan.closed:
                raise
            # closed by the remote side (or under a dead connection: its status is then
            # missing, rc -1, which the caller takes as such)

    def kill_command(self, chan: paramiko.Channel, tag: str, timeout: float = KILL_TIMEOUT) -> str:
        """Close *chan*, the channel of a command run under *tag* (:func:`tagged`), and
        kill the command's processes in the guest (closing its channel does not end
        them); what to add to the message that says why: how many were killed, or why
        they may still run.  *timeout* bounds the whole of it (the lock, the kill's
        channel and its answer): a frozen guest costs that, not three times it."""
        deadline = time.monotonic() + timeout
        chan.close()
        # serialised with the other channels (dropbear), but not behind another
        # thread's long command for ever
        if not self._exec_lock.acquire(timeout=timeout):
            return (
                " (it may still run in the guest: killing it failed: another command "
                "held the connection)"
            )
        try:
            return self._kill_tagged(tag, deadline)
        finally:
            self._exec_lock.release()

    def _kill_tagged(self, tag: str, deadline: float) -> str:
        """Kill the guest processes of the command run with *tag* (CMD_TAG_VAR), on the
        connection as it is (no reconnect: a dead guest must not cost a connect
        timeout), by *deadline* (time.monotonic()); what :meth:`kill_command` says.
        Called with the exec lock held."""
        # The command's shell has the tag in its command line (so has a busybox applet
        # it forked without an exec), a program it ran in its environment.  "[x]yz"
        # matches "xyz" but not itself: the kill's own command line is no match.
        pattern = f"{CMD_TAG_VAR}=[{tag[0]}]{tag[1:]}"
        # Pass after pass until one finds nothing: a loop forks new ones until its
        # shell is gone.  Nothing found at first may be a command not started yet (its
        # channel just opened): the first passes then wait 0.1 s each.
        # Then, for at most DEATH_WAIT_S, whether the killed died (gone, or a zombie):
        # one in an uninterruptible wait (a driver's wait_event, state D) does not, and
        # is said with where it waits.  A killed one's pid for that is kept in $dead.
        # At most half the time left goes to that wait: the kill's answer must come.
        wait = min(DEATH_WAIT_S, (deadline - time.monotonic()) / 2)
        tries = " ".join(str(i) for i in range(1, max(1, round(wait / DEATH_POLL_S)) + 1))
        script = (
            "n=0; seen=' '; dead=''; for try in 1 2 3 4 5 6 7 8; do k=0; "
            f"for p in $(grep -l '{pattern}' /proc/[0-9]*/environ /proc/[0-9]*/cmdline "
            '2>/dev/null | cut -d/ -f3 | sort -u); do case $seen in *" $p "*) continue;; esac; '
            'seen="$seen$p "; kill -KILL $p 2>/dev/null && { k=$((k+1)); dead="$dead $p"; }; '
            "done; n=$((n+k)); [ $k -eq 0 ] && [ $n -gt 0 ] && break; "
            "[ $k -eq 0 ] && { usleep 100000 2>/dev/null || sleep 0.1; }; [ $try -ge 3 ] && "
            "[ $n -eq 0 ] && break; done; echo $n; "
            f"for try in {tries}; do left=''; for p in $dead; do st=''; "
            "read -r st 2>/dev/null < /proc/$p/stat; st=${st##*[)] }; st=${st%% *}; "
            'case $st in ""|Z|X) ;; *) left="$left $p";; esac; done; dead=$left; '
            f'[ -z "$dead" ] && break; usleep {round(DEATH_POLL_S * 1e6)} 2>/dev/null || '
            f"sleep {DEATH_POLL_S}; done; "
            "for p in $dead; do st=''; read -r st 2>/dev/null < /proc/$p/stat; "
            'st=${st##*[)] }; st=${st%% *}; case $st in ""|Z|X) continue;; esac; '
            'echo "$p state $st"; '
            'echo "$p comm $(cat /proc/$p/comm 2>/dev/null)"; '
            'echo "$p wchan $(cat /proc/$p/wchan 2>/dev/null)"; '
            'while read -r f; do echo "$p stack $f"; done 2>/dev/null < /proc/$p/stack; done'
        )

        def left() -> float:
            return max(0.01, deadline - time.monotonic())

        try:
            chan = self.transport.open_session(timeout=left())
            try:
                chan.settimeout(left())
                chan.exec_command(script)
                chan.shutdown_write()
                out = _read_all(chan.recv, chan, deadline).decode(errors="replace").strip()
                chan.status_event.wait(left())
            finally:
                chan.close()
        except (paramiko.SSHException, OSError, EOFError, SshError) as e:
            why = str(e) or type(e).__name__  # a timeout's message is empty
            return f" (it may still run in the guest: killing it failed: {why})"
        first, _, rest = out.partition("\n")
        if not first.isdigit():
            return f" (it may still run in the guest: the kill said {out[:80]!r})"
        return killed_message(int(first), rest)

    @staticmethod
    def _collect(chan: paramiko.Channel, deadline: float) -> tuple[bytes, bytes]:
        """Read stdout and stderr to EOF by *deadline* (stderr in a helper thread),
        straight from the channel (no file objects to close)."""
        err: list[bytes] = []

        def read_stderr() -> None:
            with contextlib.suppress(OSError, EOFError):
                err.append(_read_all(chan.recv_stderr, chan, deadline))

        t = threading.Thread(target=read_stderr, daemon=True)
        t.start()
        out = _read_all(chan.recv, chan, deadline)
        t.join(max(STATUS_GRACE, deadline - time.monotonic()))
        return out, (err[0] if err else b"")

    def check(self, cmd: str, *, timeout: float = 60.0) -> str:
        """Run *cmd*; raise :class:`CommandError` unless it exits 0; return stdout."""
        __tracebackhide__ = hide_frame
        return self.run(cmd, timeout=timeout, check=True).out

    def open_process(self, cmd: str, *, timeout: float = 30.0) -> RemoteProcess:
        """Start a long-running *cmd* on its own channel (e.g. the agent), under a tag:
        its processes are killed in the guest by :meth:`RemoteProcess.kill`, and by
        :meth:`RemoteProcess.close` when they do not end by its timeout."""
        tag, line = tagged(cmd)
        with self._exec_lock:
            chan = self._open(lambda t: t.open_session(timeout=timeout))
            chan.exec_command(line)
        return RemoteProcess(chan, cmd, self, tag)

    # -- files --------------------------------------------------------------------
    def open_forward(self, host: str, port: int, *, timeout: float = 10.0) -> paramiko.Channel:
        """A channel to *host*:*port* as seen from the guest (``direct-tcpip``, the
        SSH protocol's local port forward), e.g. to a daemon on the guest's loopback.

        Raises :class:`SshError` when nothing listens there (the server refuses)."""
        with self._exec_lock:
            try:
                return self.transport.open_channel(
                    "direct-tcpip", (host, port), ("127.0.0.1", 0), timeout=timeout
                )
            except paramiko.ChannelException as e:
                raise SshError(f"guest {host}:{port} refused a forwarded connection: {e}") from e

    def put(
        self, local: Path | str, remote: str, *, mode: int | None = None, timeout: float = 60.0
    ) -> None:
        """Copy the local file *local* to the absolute guest path *remote*
        (:meth:`put_bytes`; *mode* default: the local file's)."""
        local = Path(local)
        mode = file_mode(local) if mode is None else mode
        self.put_bytes(local.read_bytes(), remote, mode=mode, timeout=timeout)

    def put_bytes(
        self, data: bytes, remote: str, *, mode: int = 0o644, timeout: float = 60.0
    ) -> None:
        """Write *data* to the absolute guest path *remote* (parents made) as
        :meth:`irqlab.vm.guest.Guest.put_bytes` does: a regular file is written beside it
        and renamed over it once whole (:func:`irqlab.vm.guestfile.put_command`).
        :class:`RemoteWriteError` names a path the guest cannot write, with its words."""
        __tracebackhide__ = hide_frame
        check_put(data, remote)
        data = bytes(data)
        r = self.run(put_command(remote, mode, len(data)), input=data, timeout=timeout)
        if r.rc != 0:
            raise RemoteWriteError(put_failure(remote, r), r)

    def put_tree(self, local_dir: Path, remote_dir: str) -> int:
        """Copy a directory tree (no __pycache__), as one tar stream when tar exists."""
        files = sorted(
            p
            for p in local_dir.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
        )
        dirs = sorted(
            {posixpath.join(remote_dir, *p.relative_to(local_dir).parent.parts) for p in files}
        )
        self.run("mkdir -p " + " ".join(shlex.quote(d) for d in [remote_dir, *dirs]), check=True)
        for p in files:
            rel = "/".join(p.relative_to(local_dir).parts)
            self.put(p, posixpath.join(remote_dir, rel))
        return len(files)
