"""A real paramiko client and server in one process, over a socket pair, and a signal
raised in the main thread at a chosen place of the client's
``Transport._send_user_message`` (what opening a channel goes through):

* ``window``: in the ``clear_to_send.is_set()`` right after
  ``clear_to_send_lock.acquire()``, before the ``try`` that releases the lock, where a
  raise leaves the lock held for ever (irqlab.sigsafe's notes);
* ``before``: in the ``clear_to_send.wait(0.1)`` at the loop's top, the lock not taken;
* ``inside``: in ``_send_message``, inside the ``try``: its ``finally`` releases it.

The signal is raised by wrapping that call (an instance attribute of the transport or
its event, paramiko's own code otherwise): the handler runs in the wrapper's frame, whose
caller is ``_send_user_message`` at that place, as for a signal that came then.

``python paramiko_window.py PLACE SIGNAL`` plays it under the ``irqlab`` command's
handlers (``teardown_on_signals``) and prints :func:`outcome`'s line; the pytest
plugin's handlers are tried with :func:`play` in a pytest run of its own."""

from __future__ import annotations

import contextlib
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import paramiko

HOST_KEY = paramiko.ECDSAKey.generate()
PLACES = ("window", "before", "inside")
SEND_USER_MESSAGE = paramiko.Transport._send_user_message.__code__


class _Server(paramiko.ServerInterface):
    def get_allowed_auths(self, username: str) -> str:
        return "none"

    def check_auth_none(self, username: str) -> int:
        return paramiko.AUTH_SUCCESSFUL

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return paramiko.OPEN_SUCCEEDED


def _echo(chan: paramiko.Channel) -> None:
    with contextlib.suppress(EOFError, OSError), chan:
        while data := chan.recv(1024):
            chan.sendall(data)


def _serve(server: paramiko.Transport) -> None:
    while server.is_active():
        chan = server.accept(timeout=0.2)  # a poll, to end with the transport
        if chan is not None:
            threading.Thread(target=_echo, args=(chan,), daemon=True).start()


def connect() -> tuple[paramiko.Transport, paramiko.Transport]:
    """A client transport, authenticated, and the server's, whose channels echo."""
    a, b = socket.socketpair()
    server = paramiko.Transport(b)
    server.add_server_key(HOST_KEY)
    negotiating = threading.Thread(
        target=server.start_server, kwargs={"server": _Server()}, daemon=True
    )
    negotiating.start()
    client = paramiko.Transport(a)
    client.start_client(timeout=10)
    client.auth_none("irqlab")
    negotiating.join(10)
    threading.Thread(target=_serve, args=(server,), daemon=True).start()
    return client, server


def arm(client: paramiko.Transport, place: str, act: Callable[[], object]) -> Callable[..., Any]:
    """*act* (raising a signal, say) the next time the main thread's
    ``_send_user_message`` reaches *place* (one of :data:`PLACES`), once; the wrapper
    that calls it, whose frame is *act*'s caller (so the handler's frame when *act*
    raises a signal)."""
    done: list[bool] = []

    def due() -> bool:  # called by the wrapper, called by _send_user_message
        caller = sys._getframe(2).f_code
        if done or caller is not SEND_USER_MESSAGE:
            return False
        if threading.current_thread() is not threading.main_thread():
            # paramiko's own thread sending meanwhile (under load, now and then): it
            # took the one shot, and no signal came at all ("not interrupted")
            return False
        done.append(True)
        return True

    event = client.clear_to_send
    if place == "window":
        real_is_set = event.is_set

        def is_set() -> bool:
            if due():
                act()
            return real_is_set()

        event.is_set = is_set  # type: ignore[method-assign]
        return is_set
    if place == "before":
        real_wait = event.wait

        def wait(timeout: float | None = None) -> bool:
            if due():
                act()
            return real_wait(timeout)

        event.wait = wait  # type: ignore[method-assign]
        return wait
    assert place == "inside", place
    real_send = client._send_message

    def send(data: object) -> None:
        if due():
            act()
        real_send(data)

    client._send_message = send  # type: ignore[method-assign]
    return send


def _ping(client: paramiko.Transport) -> str:
    """A new channel's echo: the transport still sends (the lock is not held)."""
    chan = client.open_session(timeout=10)
    chan.settimeout(10)
    chan.sendall(b"ping")
    got = b""
    while len(got) < 4 and (data := chan.recv(4 - len(got))):
        got += data
    chan.close()
    return got.decode()


def outcome(client: paramiko.Transport, caught: BaseException | None, wrapper: object) -> str:
    """``raised=there`` (in *wrapper*, at once) or ``later`` (after the send), whether
    ``clear_to_send_lock`` is free (waited for 2 s: a leaked one never is), and the echo
    of a new channel (only with the lock free: it would wait for ever)."""
    if caught is None:
        return "not interrupted"
    code = getattr(wrapper, "__code__", None)
    frames = [f.f_code for f, _ in traceback.walk_tb(caught.__traceback__)]
    raised = "there" if code in frames else "later"
    free = client.clear_to_send_lock.acquire(timeout=2)
    if free:
        client.clear_to_send_lock.release()
    echo = _ping(client) if free else "skipped"
    return f"raised={raised} lock={'free' if free else 'held'} echo={echo}"


def play(
    place: str,
    signum: int,
    interrupts: tuple[type[BaseException], ...],
    handlers: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext,
) -> str:
    """Open a channel with *signum* raised at *place* in its send, under *handlers*
    (installed already when they are pytest's); wait for the interrupt (a deferred one
    comes a moment later), then say :func:`outcome`."""
    client, server = connect()
    wrapper = arm(client, place, lambda: signal.raise_signal(signum))
    caught: BaseException | None = None
    try:
        try:
            with handlers():
                client.open_session(timeout=10)
                threading.Event().wait(10)  # ended by the interrupt, if it was only deferred
        except interrupts as e:
            caught = e
        return outcome(client, caught, wrapper)
    finally:
        client.close()
        server.close()


def play_wedged(
    signum: int,
    interrupts: tuple[type[BaseException], ...],
    handlers: Callable[[], AbstractContextManager[object]],
) -> str:
    """*signum* while the main thread waits in the window's acquire on a lock another
    thread holds for good: it is deferred (the handler cannot tell that wait from the
    moment after it), but only MAX_DEFERRALS times, and then raised there: how long
    that took."""
    from irqlab import sigsafe

    client, server = connect()
    client.clear_to_send_lock.acquire()  # by this thread: main's acquire waits
    main = threading.main_thread()
    caught: list[BaseException] = []

    def send_it() -> None:  # once main waits in the window (where it stays)
        while (frame := sys._current_frames().get(main.ident or 0)) is not None:
            if sigsafe.in_paramiko_send_window(frame):
                signal.pthread_kill(main.ident or 0, signum)
                return
            threading.Event().wait(0.01)  # a poll of main's frame, not a guess

    threading.Thread(target=send_it, daemon=True).start()
    with handlers():
        start = time.monotonic()
        try:
            client.open_session(timeout=10)
        except interrupts as e:
            caught.append(e)
        took = time.monotonic() - start
    client.close()
    server.close()
    if not caught:
        return "not interrupted"
    frames = [f.f_code for f, _ in traceback.walk_tb(caught[0].__traceback__)]
    where = "there" if SEND_USER_MESSAGE in frames else "elsewhere"
    return f"raised={where} within={'20s' if took < 20 else f'{took:.0f}s'}"


if __name__ == "__main__":
    from irqlab.cli.main import Terminated, teardown_on_signals

    # Python's own Ctrl-C handler, even when started with SIGINT ignored (a shell's
    # background job): the command's handlers leave an ignored signal ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
    place, signame = sys.argv[1:3]
    signum = signal.Signals[signame]
    interrupts = (KeyboardInterrupt, Terminated)
    if place == "wedged":
        print(play_wedged(signum, interrupts, teardown_on_signals), flush=True)
    else:
        print(play(place, signum, interrupts, teardown_on_signals), flush=True)
