"""A synchronous QMP client: qemu.qmp's QMPClient driven on a background event loop.

QEMU connects to us (``-chardev socket,path=...`` without ``server``), so the
socket exists before QEMU starts and there is no connect/retry race:
:meth:`SyncQMP.listen` binds, QEMU is started, :meth:`SyncQMP.accept` waits for
it (and gives up if QEMU exits: at once when given its pidfd, else when a look at
the process, every :data:`irqlab.vm.proc.EXIT_POLL_S` s, finds it gone).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from qemu.qmp import EventListener, ExecInterruptedError, ExecuteError, QMPClient, QMPError
from qemu.qmp.protocol import Runstate

from irqlab.errors import hide_frame
from irqlab.vm.aioloop import LoopAborted, LoopThread, LoopTimeout
from irqlab.vm.loadscale import check_timeout
from irqlab.vm.proc import EXIT_POLL_S
from irqlab.vm.qmp.errors import QMPCommandError, QMPFailure, QMPNoReply

__tracebackhide__ = hide_frame  # pytest: an IrqlabError's traceback leaves these frames out

__all__ = [
    "PIPELINED_S_EACH",
    "SyncQMP",
    "pipelined_limit",
]

log = logging.getLogger(__name__)
_T = TypeVar("_T")

# s a pipelined command may take on average, besides the session's timeout, before a
# batch given no timeout of its own times out: about 0.7 ms each under TCG, with room
# for a loaded host (a QEMU that froze is the health watch's to name, within seconds)
PIPELINED_S_EACH = 0.01


def pipelined_limit(count: int, base: float) -> float:
    """The time limit of *count* pipelined commands on a session whose one-command
    timeout is *base* s: it grows with the batch."""
    return base + count * PIPELINED_S_EACH


class _HeldRecords(logging.Filter):
    """Keeps a logger's records instead of letting them through."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        self.records.append(record)
        return False


# qemu.qmp's record for a reply whose command nobody waits for any more (its format
# string): after a timeout or an abort on a stopped QEMU, the replies that come once
# it runs again are expected, not a warning on the user's terminal.
_LATE_REPLY = "Unknown ID '%s', message dropped."


class _LateReplies(logging.Filter):
    """Lets through every record of the client's logger but a late reply's, which goes
    to irqlab's own log at debug level."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == _LATE_REPLY:
            log.debug("QMP: a reply to a command given up on: %s", record.getMessage())
            return False
        return True


_LATE_REPLIES = _LateReplies()


class _PeerStopped(logging.Filter):
    """A client whose QEMU is being stopped: its lost connection (qemu.qmp's
    ``Task.Reader: ConnectionResetError`` at ERROR, in the next test's captured log
    after a guest was replaced) goes to irqlab's own log at debug level."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            log.debug("QMP of a QEMU being stopped: %s", record.getMessage())
            return False
        return True


_Event = dict[str, Any]
# Events nobody takes (STOP, RESUME, a MIGRATION pass's) are kept up to this many, the
# oldest dropped first: a long session's store stays small and a wait's look short.
MAX_KEPT_EVENTS = 1000


class _Events(EventListener):
    """Every QMP event, in the order of arrival, until someone takes it: the one place
    qemu.qmp's reader hands events to (:meth:`put`, on the loop thread), and the one
    place they are taken from, under a lock, by whoever returns them.

    A wait (:meth:`arrival`, on the loop) only learns that a matching event is there
    and takes nothing: its caller takes it (:meth:`take`) once the wait returned.  So a
    look at the events meanwhile (the health watch's take, every 0.2 s) never hides
    one from a wait (the reader's queue, emptied by that look, was all a wait in
    progress watched), and a wait that gives up (its time ran out while the loop was
    busy, its coroutine still ran afterwards) never takes one with it."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._events: list[_Event] = []
        self._changed: asyncio.Event | None = None  # made and set on the loop thread

    async def put(self, event: Any) -> None:
        if not self.accept(event):
            return
        with self._lock:
            self._events.append(dict(event))
            if len(self._events) > MAX_KEPT_EVENTS:  # the oldest nobody took go
                del self._events[: len(self._events) - MAX_KEPT_EVENTS]
        changed, self._changed = self._changed, None
        if changed is not None:  # every wait looks again
            changed.set()

    async def arrival(self, wanted: Callable[[_Event], bool]) -> None:
        """Return once an event *wanted* is there (on the loop thread)."""
        while True:
            with self._lock:
                if any(wanted(ev) for ev in self._events):
                    return
            if self._changed is None:
                self._changed = asyncio.Event()
            await self._changed.wait()

    def take(self, wanted: Callable[[_Event], bool], *, first: bool = False) -> list[_Event]:
        """Remove and return the events *wanted* (with *first*, the oldest alone)."""
        with self._lock:
            out: list[_Event] = []
            rest: list[_Event] = []
            for ev in self._events:
                (out if wanted(ev) and not (first and out) else rest).append(ev)
            self._events = rest
            return out


async def _nothing() -> None:
    pass


class SyncQMP:
    """One QMP session; every method blocks until QEMU answered (or the timeout hit)."""

    def __init__(self, name: str = "irqlab", *, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self._aio = LoopThread(name=f"qmp-{name}")
        self._client = QMPClient(name)
        self._client.logger.addFilter(_LATE_REPLIES)  # its logger is per name: added once
        self._events = _Events()
        self._client.register_listener(self._events)
        self._closed = False

    def listen(self, path: Path) -> None:
        """Bind and listen on the unix socket *path* (QEMU will connect to it)."""
        self._aio.run(self._client.start_server(str(path)), self.timeout)

    def connect(self, path: Path) -> None:
        """Connect to a QMP server socket QEMU listens on (``-qmp unix:PATH,server=on``),
        e.g. the one ``irqlab shell`` prints."""
        try:
            self._aio.run(self._client.connect(str(path)), self.timeout)
        except (QMPError, LoopTimeout, OSError) as e:
            raise QMPFailure(f"cannot connect to QMP at {path}: {e}") from e

    def accept(
        self,
        timeout: float,
        exit_fd: int | None = None,
        *,
        exited: Callable[[], bool] | None = None,
    ) -> None:
        """Wait for QEMU to connect and negotiate; fail early when *exit_fd* (QEMU's
        pidfd) becomes readable, or, where there is none, when *exited* says QEMU
        exited (asked every :data:`irqlab.vm.proc.EXIT_POLL_S` s)."""
        try:
            self._aio.run(self._accept(timeout, exit_fd, exited), timeout + 5.0)
        except (QMPError, LoopTimeout, OSError) as e:
            raise QMPFailure(f"QMP connection not established: {e}") from e

    async def _accept(
        self, timeout: float, exit_fd: int | None, has_exited: Callable[[], bool] | None
    ) -> None:
        loop = asyncio.get_running_loop()
        exited: asyncio.Future[None] = loop.create_future()

        def on_exit() -> None:
            if not exited.done():
                exited.set_result(None)

        async def look_for_exit(has_exited: Callable[[], bool]) -> None:
            while not has_exited():
                await asyncio.sleep(EXIT_POLL_S)
            on_exit()

        # qemu.qmp logs a failed negotiation at ERROR (with a traceback at CRITICAL): held
        # back here, and dropped when the cause is QEMU's exit, which the caller reports
        # with QEMU's own words (a bad -device property, say)
        held = _HeldRecords()
        logger = self._client.logger
        logger.addFilter(held)
        if exit_fd is not None:
            loop.add_reader(exit_fd, on_exit)
        watch = None if has_exited is None else asyncio.ensure_future(look_for_exit(has_exited))
        task = asyncio.ensure_future(self._client.accept())
        # read below, or given up when this wait is cancelled (Ctrl-C while QEMU starts):
        # then its failure is no "Task exception was never retrieved" trace at exit
        task.add_done_callback(_retrieve)
        try:
            done, _ = await asyncio.wait(
                {task, exited}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            failed = task in done and task.exception() is not None
            watched = exit_fd is not None or watch is not None
            if failed and watched:  # QEMU closing the socket as it exits?
                await asyncio.wait({exited}, timeout=1.0)
            if task not in done:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        finally:
            if not task.done():  # this wait was cancelled: so is the accept
                task.cancel()
            if exit_fd is not None:
                loop.remove_reader(exit_fd)
            if watch is not None:
                watch.cancel()
            logger.removeFilter(held)
        connected = task.done() and not task.cancelled() and task.exception() is None
        if exited.done() and not connected:
            raise QMPFailure("QEMU exited before connecting to the QMP socket")
        for record in held.records:
            logger.handle(record)
        if task.done() and not task.cancelled():
            task.result()
            return
        raise QMPFailure(f"QEMU did not connect to the QMP socket within {timeout} s")

    @property
    def connected(self) -> bool:
        return not self._closed and self._client.runstate == Runstate.RUNNING

    def execute(
        self,
        command: str,
        arguments: Mapping[str, object] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Run one command and return its ``return`` value; errors become exceptions."""
        __tracebackhide__ = hide_frame
        args = dict(arguments or {})
        limit = self.timeout if timeout is None else timeout
        return self._run(self._client.execute(command, args or None), command, args, limit)

    def _run(
        self, coro: Coroutine[Any, Any, Any], command: str, args: dict[str, object], limit: float
    ) -> Any:
        """Run *coro* (which executes *command*) on the loop; its errors as ours."""
        __tracebackhide__ = hide_frame
        if not self.connected:
            coro.close()
            raise QMPFailure(f"QMP {command}: not connected")
        try:
            return self._aio.run(coro, limit)
        except ExecuteError as e:
            raise QMPCommandError(command, args, e.error_class, str(e)) from None
        except ExecInterruptedError as e:
            raise QMPFailure(f"QMP {command}: connection lost before the reply ({e})") from e
        except LoopTimeout:
            raise QMPNoReply(f"QMP {command}: no reply within {round(limit, 2):g} s") from None
        except LoopAborted as e:
            raise QMPFailure(f"QMP {command}: {e}") from None
        except (QMPError, OSError) as e:
            raise QMPFailure(f"QMP {command}: {e}") from e

    def _loop(self, coro: Coroutine[Any, Any, _T], timeout: float, what: str) -> _T:
        """*coro* run on the loop; an :meth:`abort` that ends it is a QMPFailure saying
        *what* was waited for (a timeout stays the caller's to say)."""
        try:
            return self._aio.run(coro, timeout)
        except LoopAborted as e:
            raise QMPFailure(f"{what}: {e}") from None

    def abort(self, reason: str, *, later: bool = True) -> None:
        """End every command or event wait now pending, and with *later* each one after,
        with :class:`QMPFailure` (*reason*): the peer is known dead or frozen (the health
        watch's verdict), so nothing waits out its timeout.  :meth:`close` still works."""
        self._aio.abort(reason, later=later)

    def send_fd(self, fd: int, name: str) -> None:
        """Hand QEMU a copy of the open file descriptor *fd* (SCM_RIGHTS) under *name*
        (``getfd``), for arguments such as ``fd:NAME``; *fd* stays open here."""
        args: dict[str, object] = {"fdname": name}

        async def send() -> None:  # on the loop thread, as every write to the socket
            self._client.send_fd_scm(fd)
            await self._client.execute("getfd", args)

        self._run(send(), "getfd", args, self.timeout)

    def execute_many(
        self,
        commands: Sequence[tuple[str, Mapping[str, object] | None]],
        *,
        window: int = 8,
        timeout: float | None = None,
    ) -> list[Any]:
        """Run *commands* pipelined, up to *window* in flight; their return values, in order.

        QEMU still executes them one at a time and in order (a QMP session
        dispatches serially); pipelining only removes the client's wait for each
        reply before sending the next.  The first error is raised once every
        command sent has been answered (the ones after a failing one still run:
        give a batch only commands that are independent of each other).

        *timeout*: seconds for the whole batch; None gives this session's timeout
        plus :data:`PIPELINED_S_EACH` per command (:func:`pipelined_limit`: a big
        batch under TCG takes about 0.7 ms a command, and a fixed 30 s cut 100000
        of them short).  Past it, :class:`QMPNoReply` says how many were answered.
        """
        __tracebackhide__ = hide_frame
        if not self.connected:
            raise QMPFailure("QMP: not connected")
        if window < 1:
            raise ValueError(f"window must be >= 1, not {window}")
        if timeout is not None:
            check_timeout(timeout)
        limit = pipelined_limit(len(commands), self.timeout) if timeout is None else timeout
        client = self._client
        answered = [0]

        async def run_all() -> list[Any]:
            # *window* workers taking the commands in order (each send happens before the
            # worker's first await: QEMU receives them in order).  Not a task per
            # command: 200000 of them took the loop seconds to create and as long to
            # cancel (Ctrl-C), every other wait on the loop (the health watch's) meanwhile
            results: list[Any] = [None] * len(commands)
            todo = iter(enumerate(commands))
            lost: list[BaseException] = []  # the session ended: nothing more is sent

            async def worker() -> None:
                for i, (cmd, args) in todo:
                    if lost:  # qemu.qmp refuses at once, without a suspension: the rest
                        results[i] = lost[0]  # of a big batch took the loop seconds in
                        continue  # one step (the health watch's waits meanwhile)
                    try:
                        results[i] = await client.execute(cmd, dict(args) if args else None)
                    except ExecuteError as e:  # raised below, once every command is answered
                        results[i] = e
                    except Exception as e:  # the connection's end: every later one fails
                        results[i] = e
                        lost.append(e)
                    answered[0] += 1

            await asyncio.gather(*(worker() for _ in range(min(window, len(commands)))))
            return results

        try:
            results = self._loop(run_all(), limit, f"QMP: {len(commands)} pipelined commands")
        except LoopTimeout:
            raise QMPNoReply(
                f"QMP: {len(commands)} pipelined commands not done in {round(limit, 2):g} s "
                f"({answered[0]} answered)"
            ) from None
        for (cmd, args), r in zip(commands, results, strict=True):
            if isinstance(r, ExecuteError):
                raise QMPCommandError(cmd, dict(args or {}), r.error_class, str(r)) from None
            if isinstance(r, ExecInterruptedError):
                raise QMPFailure(f"QMP {cmd}: connection lost before the reply ({r})") from r
            if isinstance(r, BaseException):
                raise QMPFailure(f"QMP {cmd}: {r}") from r
        return results

    def events(self) -> list[dict[str, Any]]:
        """Asynchronous events received and not yet returned (oldest first)."""
        return self._events.take(lambda ev: True)

    def take_events(
        self, names: Sequence[str], timeout: float | None = None
    ) -> list[dict[str, Any]]:
        """Events named *names* received so far (removed); all others stay queued.

        The loop is asked first (what it was handed by then is taken): a loop busy
        longer than *timeout* is :class:`QMPNoReply`, as a command's silence."""
        wanted = set(names)
        limit = self.timeout if timeout is None else timeout
        try:
            self._loop(_nothing(), limit, f"QMP events {sorted(wanted)}")
        except LoopTimeout:  # the loop was busy that long: a QMPFailure, as for a command
            raise QMPNoReply(
                f"QMP events {sorted(wanted)}: not taken within {round(limit, 2):g} s"
            ) from None
        return self._events.take(lambda ev: ev.get("event") in wanted)

    def wait_event(
        self, name: str, timeout: float, match: Mapping[str, object] | None = None
    ) -> dict[str, Any]:
        """Block until event *name* arrives (with ``data`` containing *match*); return it.

        Other events received meanwhile stay available to :meth:`events`."""

        def matches(ev: _Event) -> bool:
            data = ev.get("data") or {}
            return ev.get("event") == name and all(
                data.get(k) == v for k, v in (match or {}).items()
            )

        deadline = time.monotonic() + timeout
        # taken here, not on the loop: a wait that gives up takes nothing with it
        while not (found := self._events.take(matches, first=True)):
            # (none, or another wait for the same event took it first: wait on)
            try:
                self._loop(
                    self._events.arrival(matches),
                    max(0.0, deadline - time.monotonic()),
                    f"QMP event {name}",
                )
            except LoopTimeout:
                raise QMPFailure(
                    f"QMP event {name} {dict(match or {})} not seen within {timeout} s"
                ) from None
        return found[0]

    def closing(self) -> None:
        """Its QEMU is about to be stopped: what qemu.qmp logs of the connection's loss
        from now on is no error.  This client's alone: another with the same name (the
        replacement guest's) shares qemu.qmp's logger, so this one gets a logger of its
        own below it."""
        if any(isinstance(f, _PeerStopped) for f in self._client.logger.filters):
            return  # said already
        mine = logging.Logger(self._client.logger.name)  # not registered: this client's
        mine.parent = self._client.logger
        mine.addFilter(_PeerStopped())
        self._client.logger = mine

    def close(self) -> None:
        """Disconnect (ignoring errors of a dead peer) and stop the loop thread; idempotent.
        A close cut short (Ctrl-C during the disconnect's wait, up to 5 s) is finished
        by the next call (the session counts as closed once both steps ran)."""
        if self._closed:
            return
        self.closing()
        with contextlib.suppress(Exception):
            self._aio.run(self._client.disconnect(), 5.0, abortable=False)
        self._aio.close()
        self._closed = True


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark *task*'s exception as seen (the code that awaits it reports it)."""
    if not task.cancelled():
        task.exception()
