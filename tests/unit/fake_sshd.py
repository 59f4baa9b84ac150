"""A real SSH server in the test process, on a TCP port, standing in for the guest's
dropbear behind QEMU's forward: paramiko on both ends, so a closed connection, a reset
and a refused banner reach :class:`irqlab.vm.ssh.SshClient` as they do from a guest.

Exec channels run nothing: ``echo WORD`` prints WORD and exits 0, any other command
never ends.  A ``direct-tcpip`` channel (a port forward, the agent's) says an agent's
hello line.  :meth:`FakeSshd.kill` is ``kill $(pidof dropbear)``: every connection
closes, and from then on the port (QEMU's, which outlives the guest's sshd) accepts
each new connection and resets it before any banner, as QEMU's forward does when
nothing listens in the guest.  :meth:`FakeSshd.freeze` is a guest whose CPU spins with
interrupts off: no channel opens any more, a new connection gets no banner."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time

import paramiko

from irqlab.vm.ssh import SshClient

HOST_KEY = paramiko.RSAKey.generate(1024)
CLIENT_KEY = paramiko.RSAKey.generate(1024)
HELLO = b'{"type": "hello", "paths": []}\n'
HOST_PUB = f"{HOST_KEY.get_name()} {HOST_KEY.get_base64()}"  # as a GuestImage pins it


class _Dropbear(paramiko.ServerInterface):
    def __init__(self, auths: list[str], thawed: threading.Event) -> None:
        self.forward_ids: set[int] = set()
        self.auths = auths
        self.thawed = thawed

    def get_allowed_auths(self, username: str) -> str:
        self.auths.append(f"{username} asked the methods")
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        self.auths.append(f"{username} offered {key.get_name()}")
        return paramiko.AUTH_SUCCESSFUL

    def check_channel_request(self, kind: str, chanid: int) -> int:
        self.thawed.wait(60)  # frozen: the open is answered when it thaws (or never)
        return paramiko.OPEN_SUCCEEDED

    def check_channel_direct_tcpip_request(
        self, chanid: int, origin: tuple[str, int], destination: tuple[str, int]
    ) -> int:
        self.forward_ids.add(chanid)
        return paramiko.OPEN_SUCCEEDED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        words = command.decode().rsplit("; ", 1)[-1].split()  # after SshClient's tag
        if words[:1] == ["echo"]:

            def answer() -> None:
                # after the exec request's reply, which paramiko sends once this returns
                # (a channel closed before it fails the request: "Channel closed.")
                time.sleep(0.05)
                with contextlib.suppress(EOFError, OSError):
                    channel.sendall((" ".join(words[1:]) + "\n").encode())
                    channel.send_exit_status(0)
                    channel.shutdown_write()
                    channel.close()

            threading.Thread(target=answer, daemon=True).start()
        return True


class FakeSshd:
    """The server: :attr:`port` on 127.0.0.1; :meth:`kill` its sshd, :meth:`close` it."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.killed = threading.Event()
        self.transports: list[paramiko.Transport] = []
        self.auths: list[str] = []  # what clients tried to authenticate with, in order
        self.forwards: list[paramiko.Channel] = []
        self._channels: list[paramiko.Channel] = []  # held: a collected channel closes
        self.resets = 0
        self.listens_after: int | None = None  # resets before a killed sshd is back
        # s a killed sshd's port waits before each reset: QEMU's forward resets once the
        # guest's kernel refused the connection, after the client sent its banner (the
        # reset then comes to paramiko's thread, under its banner error)
        self.reset_after = 0.0
        self.thawed = threading.Event()
        self.thawed.set()
        self._held: list[socket.socket] = []  # connections a frozen guest never answers
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return  # closed
            if self.killed.is_set():  # nothing listens in the guest: a reset at once
                self.resets += 1
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                if self.reset_after > 0:
                    threading.Timer(self.reset_after, sock.close).start()
                else:
                    sock.close()
                if self.resets == self.listens_after:
                    self.killed.clear()
                continue
            if not self.thawed.is_set():  # accepted by QEMU's forward, no banner
                self._held.append(sock)
                continue
            t = paramiko.Transport(sock)
            t.add_server_key(HOST_KEY)
            self.transports.append(t)
            server = _Dropbear(self.auths, self.thawed)
            try:
                t.start_server(server=server)
            except (EOFError, OSError, paramiko.SSHException):
                continue  # the client left during the key exchange (a refused host key)
            threading.Thread(target=self._accept_channels, args=(t, server), daemon=True).start()

    def _accept_channels(self, t: paramiko.Transport, server: _Dropbear) -> None:
        while t.is_active():
            chan = t.accept(timeout=0.2)
            if chan is None:
                continue
            self._channels.append(chan)
            if chan.get_id() in server.forward_ids:
                with contextlib.suppress(EOFError, OSError):
                    chan.sendall(HELLO)
                self.forwards.append(chan)

    def agent_exits(self) -> None:
        """The agent daemon ends: its socket closes, dropbear sends EOF and closes the
        forwards (the SSH connection lives on)."""
        for chan in self.forwards:
            with contextlib.suppress(EOFError, OSError):
                chan.shutdown_write()
                chan.close()

    def freeze(self) -> None:
        """The guest stops running: channel opens and new connections go unanswered."""
        self.thawed.clear()

    def kill(self) -> None:
        self.killed.set()
        for t in self.transports:
            t.close()

    def client(self) -> SshClient:
        """An SshClient for this server, connected."""
        return SshClient("127.0.0.1", self.port, pkey=CLIENT_KEY).connect(timeout=10)

    def close(self) -> None:
        self.thawed.set()
        for sock in self._held:
            sock.close()
        self.kill()
        with contextlib.suppress(OSError):  # wakes the accept (close alone does not)
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(5)
