"""Raising a signal's exception (KeyboardInterrupt for Ctrl-C, SIGTERM's) in the main
thread where it cannot wedge the process.  Python raises it between any two bytecodes:

* inside logging's ``_acquireLock``/``_releaseLock`` (no ``with`` in Python 3.11) it
  leaves the logging module's lock held, and every other thread that logs (paramiko's
  transport threads) waits on it for ever, the teardown with them;
* inside paramiko's ``Transport._send_user_message`` between
  ``clear_to_send_lock.acquire()`` (a plain Lock) and the ``try`` whose ``finally``
  releases it, it leaves that lock held, and the teardown's next SSH channel and the
  transport's keepalive wait on it for ever (a pytest given two SIGTERMs hung 20
  minutes with its QEMU).  Only that window counts, not paramiko's code at large
  (:func:`in_paramiko_send_window`);
* inside a finaliser (a ``__del__``, a weakref callback such as logging's
  ``_removeHandlerRef``) it is printed as "Exception ignored" and lost;
* inside C code that runs the handlers and then drops the error: CPython's constant
  folder (``2**64`` in a module compiled as it is imported, the ``irqlab`` command's
  first second with PYTHONDONTWRITEBYTECODE) clears any exception a handler raised but
  KeyboardInterrupt, and the import goes on as if no signal had come;
* between making a resource and recording it where its cleanup finds it (a socket
  directory made but not yet listed for removal, an event loop half made whose
  finaliser then fails with "no attribute '_ssock'", a child forked but not yet
  tracked): such a block runs under :class:`critical`;
* inside code that ``exec()`` or ``eval()`` ran from a string (the methods a dataclass
  or a namedtuple makes as its module is imported; a signal that comes while that
  string is compiled is raised there too): CPython 3.11 then sets its global
  "unhandled KeyboardInterrupt" flag (``run_eval_code_obj`` in Python/pythonrun.c)
  although the exception is caught further up, and ``python -m ...`` ends by SIGINT
  after its exit (status -2, silently) instead of with the status it chose.  What
  catches KeyboardInterrupt for good calls :func:`clear_caught_interrupt`.

:class:`SafeRaise` defers the raise a few milliseconds while the main thread holds
logging's lock, is in that window of paramiko's or in a :class:`critical` block, and
delivers the signal again when a finaliser swallowed its exception (through
:data:`sys.unraisablehook`) or C code dropped it (a :class:`SignalRaise` destroyed
before it reached anyone); it sets the handlers and puts the old ones back.  The
``irqlab`` command's handlers and the pytest plugin's use it.
"""

from __future__ import annotations

import itertools
import logging
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from types import CodeType, FrameType
from typing import Any

__all__ = [
    "DEFER_S",
    "MAX_DEFERRALS",
    "SEND_WINDOW_DEPTH",
    "SafeRaise",
    "SignalRaise",
    "clear_caught_interrupt",
    "critical",
    "holds_logging_lock",
    "in_critical",
    "in_paramiko_send_window",
]

DEFER_S = 0.005  # how long a raise waits before it is tried again
MAX_DEFERRALS = 200  # per signal (1 s): a lock held longer is not worth a hung Ctrl-C
SEND_WINDOW_DEPTH = 4  # the interrupted frame and its callers looked at for paramiko's


def holds_logging_lock() -> bool:
    """Whether this thread holds the logging module's own lock (Python 3.11's
    ``logging._lock``, an RLock; False where it is not there)."""
    owned = getattr(getattr(logging, "_lock", None), "_is_owned", None)
    return bool(owned is not None and owned())


class critical:  # a block, used as ``with critical():``
    """A block of the main thread that a signal's exception must not cut in two: the
    handlers of a :class:`SafeRaise` defer the raise until it has ended (bounded like
    every deferral).  For a few lines that make something and record it where its
    cleanup finds it; nothing that waits long.  Other threads: no effect (a handler
    runs in the main thread only)."""

    # no Python call in either (a handler can run inside a Python callee's frame): a
    # signal inside these two frames is deferred whatever the allowance (_EDGES)
    def __enter__(self) -> None:
        if threading.get_ident() == _MAIN:
            _critical[0] += 1

    def __exit__(self, *exc: object) -> None:
        if threading.get_ident() == _MAIN:
            _critical[0] -= 1


_critical = [0]  # how deep the main thread is in critical blocks
_MAIN = threading.main_thread().ident
# where the count is half changed: a raise there would leave it wrong for good
_EDGES = frozenset({critical.__enter__.__code__, critical.__exit__.__code__})


def in_critical() -> bool:
    """Whether the main thread is inside a :class:`critical` block."""
    return _critical[0] > 0


def clear_caught_interrupt() -> None:
    """Clear CPython's "unhandled KeyboardInterrupt" flag (see the module's notes): a
    KeyboardInterrupt that left code exec() ran from a string set it though it was
    caught, and ``python -m`` would end by SIGINT instead of with its status.  Every
    exec() of a string clears it before it runs (``run_eval_code_obj``): one that runs
    nothing.  For the code that catches KeyboardInterrupt for good and chooses the
    status (the ``irqlab`` command's :func:`~irqlab.cli.main.main`, the pytest plugin
    at the run's end)."""
    exec("None")  # a constant string: only its side effect is wanted


def in_paramiko_send_window(frame: FrameType | None) -> bool:
    """Whether the interrupted *frame* (a signal handler's), or one of its first callers
    (:data:`SEND_WINDOW_DEPTH` frames in all: an ``Event.is_set`` or a finaliser run
    there), is paramiko's ``Transport._send_user_message`` between the load of
    ``clear_to_send_lock.acquire`` and the ``try`` that releases the lock.

    Why that rule is exact: an exception raised in a frame goes where the code's
    exception table sends the frame's last instruction (``f_lasti``).  From the acquire
    to the ``try`` no entry covers it, so nothing releases the lock; inside the ``try``
    (``_send_message`` and everything it calls) the ``finally`` does; before the acquire
    (the ``clear_to_send.wait(0.1)`` at the loop's top, where the main thread waits)
    the lock is not ours.  The window also holds the acquire's own call while it waits
    and the retry path after its ``release()``: a raise there would be harmless, a
    deferral is too (bounded like any other).  The first such frame decides.

    The code object is paramiko's own, looked up in :data:`sys.modules` (paramiko not
    imported: it cannot be running); a paramiko whose method no longer has that shape
    (one acquire of ``clear_to_send_lock``, one ``_send_message`` inside a ``try`` after
    it) has no window, and nothing is deferred."""
    transport = sys.modules.get("paramiko.transport")
    method = getattr(getattr(transport, "Transport", None), "_send_user_message", None)
    code = getattr(method, "__code__", None)
    if not isinstance(code, CodeType):
        return False
    for _ in range(SEND_WINDOW_DEPTH):
        if frame is None:
            return False
        if frame.f_code is code:
            if code not in _send_windows:
                _send_windows[code] = _send_window(code)
            window = _send_windows[code]
            return window is not None and window[0] <= frame.f_lasti < window[1]
        frame = frame.f_back
    return False


# code object -> its window [start, end) of bytecode offsets, or None (no such window)
_send_windows: dict[CodeType, tuple[int, int] | None] = {}


def _send_window(code: CodeType) -> tuple[int, int] | None:
    """In *code* (``_send_user_message``'s), the offsets [load of the lock's
    ``acquire``, first one of the ``try`` around ``_send_message``), or None."""
    import dis  # only when a signal came: 10 ms of the irqlab command's start otherwise

    ins = list(dis.get_instructions(code))
    loads = ("LOAD_ATTR", "LOAD_METHOD")
    acquires = [
        b.offset
        for a, b in itertools.pairwise(ins)
        if a.argval == "clear_to_send_lock" and b.opname in loads and b.argval == "acquire"
    ]
    sends = [i.offset for i in ins if i.opname in loads and i.argval == "_send_message"]
    if len(acquires) != 1 or len(sends) != 1 or sends[0] < acquires[0]:
        return None
    # the exception table's entries, [start, end) each (not in typeshed; none: no window)
    entries = getattr(dis.Bytecode(code), "exception_entries", ())
    tries = [e.start for e in entries if acquires[0] < e.start <= sends[0] < e.end]
    return (acquires[0], max(tries)) if tries else None


class SafeRaise:
    """The deferral and re-delivery for one set of signal handlers in the main thread,
    set with :meth:`set_handlers`.  A handler calls :meth:`redelivered` and
    :meth:`deferred` (with the frame it was given) first, and returns when the latter
    says so; *ours* tells the unraisable hook which exceptions are the handlers' own.
    Deliveries go through a thread started here (a handler or a finaliser starting one
    could deadlock on threading's own locks); :meth:`restore` ends it all, the old
    handlers back."""

    def __init__(self, ours: Callable[[BaseException], int | None]) -> None:
        main = threading.main_thread().ident
        assert main is not None
        self._main = main
        self._ours = ours  # the signal an exception of our handlers came from, or None
        self.again: set[int] = set()  # signals delivered again: their handler raises
        self.active = True  # False once uninstalled: no more deliveries
        self._spent = 0
        self._old_hook: Callable[[Any], object] | None = None
        self._old_handlers: dict[int, Any] = {}  # what set_handlers replaced
        self._queue: queue.SimpleQueue[int] = queue.SimpleQueue()  # put() is reentrant
        self._sending = threading.Lock()  # the sender's, and uninstall()'s (never a handler's)
        self._sender = threading.Thread(target=self._send, name="sigsafe", daemon=True)
        self._sender.start()

    def _send(self) -> None:
        while (signum := self._queue.get()) > 0:
            time.sleep(DEFER_S)  # by then the main thread has left where it could not raise
            with self._sending:  # not while uninstall() hands the pending ones back
                if self.active and signum in self.again:
                    signal.pthread_kill(self._main, signum)

    def deliver_again(self, signum: int, *, spend: bool = True) -> bool:
        """*signum* to the main thread again in DEFER_S; False when the deferrals of
        this signal are spent (not counted: *spend* False)."""
        if not self.active or (spend and self._spent >= MAX_DEFERRALS):
            return False
        self._spent += spend
        self.again.add(signum)
        self._queue.put(signum)
        return True

    def redelivered(self, signum: int) -> bool:
        """Whether this delivery of *signum* is one of ours again (it is then no longer
        pending), rather than a new signal."""
        if signum in self.again:
            self.again.discard(signum)
            return True
        return False

    def deferred(self, signum: int, frame: FrameType | None) -> bool:
        """Whether the handler must not raise now (it is delivered again shortly): this
        thread is in a :class:`critical` block or holds logging's lock, or the
        interrupted *frame* (the handler's) is in paramiko's window
        (:func:`in_paramiko_send_window`)."""
        if frame is not None and frame.f_code in _EDGES:  # critical's count half changed
            return self.deliver_again(signum, spend=False)
        unsafe = in_critical() or holds_logging_lock() or in_paramiko_send_window(frame)
        if unsafe and self.deliver_again(signum):
            return True
        self._spent = 0  # raised now: the next signal has an allowance of its own
        return False

    def dropped(self, signum: int) -> None:
        """A :class:`SignalRaise` for *signum* was destroyed while the handlers are ours:
        C code dropped it on its way out; *signum* again, unless it is pending already
        (the unraisable hook sent it)."""
        if signum not in self.again:
            self.deliver_again(signum)

    def install_hook(self) -> None:
        import sys

        self._old_hook = sys.unraisablehook

        def unraisable(u: Any) -> None:
            signum = self._ours(u.exc_value) if u.exc_value is not None else None
            if signum and self.deliver_again(signum):
                return  # lost in a finaliser: delivered again, not printed
            assert self._old_hook is not None
            self._old_hook(u)

        sys.unraisablehook = unraisable

    def set_handlers(self, signals: Iterable[int], handler: Callable[[int, Any], None]) -> None:
        """*handler* for each of *signals*, what they had kept for :meth:`restore`."""
        for signum in signals:
            self._old_handlers.setdefault(signum, signal.signal(signum, handler))

    def restore(self) -> None:
        """:meth:`uninstall`, then the old handlers back, then the signals still pending
        raised again, now theirs: a Ctrl-C deferred in the last milliseconds is not
        lost, and none reaches a handler of ours."""
        pending = self.uninstall()
        old, self._old_handlers = self._old_handlers, {}
        for signum, previous in old.items():
            signal.signal(signum, previous)
        for signum in pending:
            signal.raise_signal(signum)

    def uninstall(self) -> set[int]:
        """Stop delivering, put the unraisable hook back and end the sender; the
        signals whose delivery was still pending (send them again with the old
        handlers in place: a Ctrl-C deferred in the block's last milliseconds)."""
        import sys

        with self._sending:  # what the sender has not sent by now, it never sends
            self.active = False
            pending, self.again = set(self.again), set()
        if self._old_hook is not None:
            sys.unraisablehook = self._old_hook
            self._old_hook = None
        self._queue.put(0)
        return pending


class SignalRaise(BaseException):
    """What a handler raises for *signum* (a signal other than Ctrl-C's, whose
    KeyboardInterrupt CPython keeps where it drops other errors), delivered again
    through *safe* when it is destroyed before the handlers are put back: it never
    reached the code that ends the block (C code dropped it, see the module's notes).
    One that reached it is destroyed after :meth:`SafeRaise.restore`: nothing then."""

    def __init__(self, signum: int, safe: SafeRaise | None = None) -> None:
        super().__init__(signum)
        self.signum = signum
        self._safe = safe

    def __del__(self) -> None:
        safe, self._safe = self._safe, None
        # one that passed through a Python frame was raised there and met its fate (a
        # handler that caught it and tidied up must not get it again mid-teardown);
        # one C code dropped never reached a frame: no traceback
        if safe is not None and self.__traceback__ is None:
            safe.dropped(self.signum)
