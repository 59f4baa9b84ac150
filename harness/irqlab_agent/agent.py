"""The agent process: reads requests on stdin, runs paths, writes JSON lines to stdout."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import stat
import sys
import threading
import time
from collections.abc import Callable

from irqlab_agent import __version__
from irqlab_agent.abi import Abi, load_abi
from irqlab_agent.acks import parse_ack_mode
from irqlab_agent.checks import MAX_DRAIN_READS, drain, run_checks
from irqlab_agent.evdev import EVDEV_PATHS
from irqlab_agent.fastack import ops as tune_ops
from irqlab_agent.fastack import reset_tuning
from irqlab_agent.gpio_cdev import GpioCdevPath
from irqlab_agent.kclock import printk_offset_ns
from irqlab_agent.native import NativeRuns
from irqlab_agent.native import ops as native_ops
from irqlab_agent.paths import (
    COUNT_FMT,
    PATH_KINDS,
    RESTART_SIGNAL,
    STOP_SIGNAL,
    AsyncPath,
    NotificationPath,
    PathOptions,
    mono_ns,
)
from irqlab_agent.protocol import (
    DEVICE,
    PROTOCOL_VERSION,
    JsonObj,
    ProtocolError,
    Request,
    Writer,
    errno_name,
    error_id,
    fail,
    ok,
    parse_request,
    read_line,
)
from irqlab_agent.sysio import SigInfo, SignalFd, block_signals, raw_read
from irqlab_agent.uio import UioPath

HW_PATH_KINDS: dict[str, type[NotificationPath]] = {
    cls.kind: cls for cls in (GpioCdevPath, UioPath)
}
# Paths on another subsystem's file (an input device): not the device's event records.
INPUT_PATH_KINDS: dict[str, type[NotificationPath]] = {cls.kind: cls for cls in EVDEV_PATHS}
ALL_PATH_KINDS = {**PATH_KINDS, **HW_PATH_KINDS, **INPUT_PATH_KINDS}

TYPE_CHECKING = False  # typing is not imported at run time: it costs start-up time
if TYPE_CHECKING:
    from typing import IO, Any, Protocol

DEFAULT_DEV = DEVICE
# What op_arm reads itself; a path kind reads its own ``options`` too.
ARM_OPTIONS = frozenset(
    {"path", "name", "ack", "summarize", "dev", "batch", "drain", "summary_interval_ms"}
)
SUMMARY_BATCH = 1024  # records per read(2) in storm mode (the driver's ring is 256 by default)
NUM_RT_SIGNALS = 8  # setsig may use SIGRTMIN+0 .. SIGRTMIN+7
# The longest a request may wait (wait_blocked/interrupt's timeout_ms, a blocking
# handle's read wait_ms): the session answers nothing else meanwhile.
MAX_WAIT_MS = 60_000.0
READ_WAIT_MS = 10_000.0  # a read on a blocking handle waits this long for data by default
MAX_INTERVAL_MS = 60_000.0  # nonblock's pause between polls
MAX_SUMMARY_INTERVAL_MS = 3_600_000.0


def async_signals() -> list[int]:
    return [signal.SIGIO, *range(signal.SIGRTMIN, signal.SIGRTMIN + NUM_RT_SIGNALS)]


if TYPE_CHECKING:

    class SignalSource(Protocol):
        fd: int

        def read_all(self) -> list[SigInfo]: ...

        def close(self) -> None: ...


class SignalDispatcher(threading.Thread):
    """Reads the one signalfd and hands each signal to the async path it belongs to."""

    def __init__(self, source: SignalSource, lookup: Callable[[], list[AsyncPath]]) -> None:
        super().__init__(name="signals", daemon=True)
        self.source = source
        self.lookup = lookup
        self.total = 0
        self.orphans = 0
        self._stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC)
        self._stopping = False
        self._closed = False
        self._close_lock = threading.Lock()

    def run(self) -> None:
        import select

        try:
            while True:
                r, _, _ = select.select([self.source.fd, self._stop_r], [], [])
                if self._stop_r in r:
                    return
                # The RT signals first: a plain SIGIO read with them (another path's,
                # or an RT queue overflow) then finds their records taken.
                infos = sorted(self.source.read_all(), key=lambda i: i.signo == signal.SIGIO)
                for info in infos:
                    self.dispatch(info)
        finally:
            if self._stopping:  # a stop() whose join timed out left the closing to us
                self._close()

    def dispatch(self, info: SigInfo) -> None:
        self.total += 1
        paths = self.lookup()
        if info.signo == signal.SIGIO:
            targets = paths  # plain SIGIO carries no fd (or is the RT-overflow fallback)
        else:
            targets = [p for p in paths if p.fd == info.fd and p.opts.signo == info.signo]
        if not targets:
            self.orphans += 1
        for p in targets:
            p.deliver(info)

    def stop(self, timeout: float = 2.0) -> None:
        """End the thread and close the signalfd and pipe (a daemon agent runs many
        sessions: no fd leaks).  A thread still in a delivery after *timeout* closes
        them itself when that returns.  Stopping twice is harmless."""
        with self._close_lock:
            if self._stopping:
                return
            self._stopping = True
            os.write(self._stop_w, b"x")
        self.join(timeout)
        if not self.is_alive():
            self._close()

    def _close(self) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            self.source.close()
            os.close(self._stop_r)
            os.close(self._stop_w)


class Agent:
    def __init__(
        self,
        abi: Abi,
        writer: Writer,
        signals: SignalSource | None = None,
        orphans: OrphanReads | None = None,
    ) -> None:
        self.abi = abi
        # reads left in a driver by handles closed since (the process's: they outlive
        # the session that closed them, see OrphanReads)
        self.orphans = orphans if orphans is not None else ORPHANS
        self.writer = writer
        self.paths: dict[str, NotificationPath] = {}
        self.handles: dict[str, Handle] = {}
        self.running = True
        self.closed = False  # shut down: arms nothing more
        # time.monotonic() at the start of the request being handled, None between
        # requests (the daemon's takeover tells a stuck session from one ending)
        self.busy_since: float | None = None
        self.lock = threading.Lock()
        self._shutdown_lock = threading.Lock()
        self.dispatcher: SignalDispatcher | None = None
        if signals is not None:
            self.dispatcher = SignalDispatcher(signals, self._async_paths)
            self.dispatcher.start()
        self._ops: dict[str, Callable[[Request], JsonObj]] = {
            "ping": self.op_ping,
            "arm": self.op_arm,
            "disarm": self.op_disarm,
            "stats": self.op_stats,
            "open": self.op_open,
            "read": self.op_read,
            "close": self.op_close,
            "ioctl": self.op_ioctl,
            "interrupt": self.op_interrupt,
            "wait_blocked": self.op_wait_blocked,
            "check": self.op_check,
            "flush": self.op_flush,
            "release": self.op_release,
            "reset": self.op_reset,
            "kernel_clock": self.op_kernel_clock,
            "quit": self.op_quit,
            "heartbeat": self.op_heartbeat,
        }
        self._heartbeat: threading.Event | None = None
        self.native = NativeRuns()  # the native responder (irqlab_agent.native)
        self._ops.update(native_ops(self.native))
        self._ops.update(tune_ops())

    def _async_paths(self) -> list[AsyncPath]:
        with self.lock:
            return [p for p in self.paths.values() if isinstance(p, AsyncPath)]

    # -- request handling ----------------------------------------------------------
    def handle_line(self, line: bytes) -> JsonObj:
        try:
            req = parse_request(line)
        except ProtocolError as e:
            return fail(e.req_id if e.req_id is not None else error_id(line), str(e))
        handler = self._ops.get(req.op)
        if handler is None:
            return fail(req.id, f"unknown op {req.op!r}", ops=sorted(self._ops))
        try:
            return handler(req)
        except ProtocolError as e:
            return fail(req.id, str(e))
        except OSError as e:
            return fail(req.id, str(e), errno=errno_name(e.errno or 0))
        except Exception as e:
            return fail(req.id, f"internal error: {e!r}")

    def serve(self, stdin: IO[bytes]) -> None:
        self.writer.send(
            {
                "type": "hello",
                "version": __version__,
                "protocol": PROTOCOL_VERSION,
                "pid": os.getpid(),
                "monotonic_ns": mono_ns(),
                "abi": self.abi.summary(),
                "paths": path_kinds(),
            }
        )
        while self.running:
            line = read_line(stdin)
            if not line:
                break
            if not line.strip():
                continue
            self.busy_since = time.monotonic()
            try:
                reply = self.handle_line(line)
            finally:
                self.busy_since = None
            self.writer.send(reply)
        self.shutdown()

    def shutdown(self) -> None:
        """End the session: :meth:`stop`, then close the open handles."""
        self.stop()
        self._close_handles()

    def stop(self) -> None:
        """Stop what the session runs: paths, responders, heartbeat, the signal
        dispatcher; put the ``tune`` settings back.  Once only, from any thread: the
        daemon stops a session whose thread is still in a request (a takeover, see
        :mod:`irqlab_agent.daemon`); the handles stay for that thread's shutdown (a
        request may be using one, and a closed fd number is soon another file's)."""
        with self._shutdown_lock:
            if self.closed:
                return
            self.closed = True
            self.running = False
            self._stop_heartbeat()
            self._disarm_all()
            self.native.close()
            if self.dispatcher is not None:
                self.dispatcher.stop()
            reset_tuning()

    def _close_handles(self) -> None:
        handles = list(self.handles.values())
        self.handles.clear()
        for h in handles:
            self._orphan(h)
            with contextlib.suppress(OSError):
                os.close(h.fd)  # a read stuck in it holds the file: it is released then

    def _orphan(self, h: Handle) -> None:
        """Before *h* closes: a read of it left in the driver (or its result, not taken
        yet) becomes an orphan (:class:`OrphanReads`), kept and reported, not lost."""
        if h.stuck is not None:
            self.orphans.add(h.stuck, h)
            h.stuck = None

    # -- ops ------------------------------------------------------------------------
    def op_ping(self, req: Request) -> JsonObj:
        return ok(req.id, pong=True, pid=os.getpid(), monotonic_ns=mono_ns(), version=__version__)

    def op_arm(self, req: Request) -> JsonObj:
        kind = req.get_str("path")
        kinds = ALL_PATH_KINDS
        cls = kinds.get(kind)
        if cls is None:
            raise ProtocolError(f"unknown path {kind!r}; known: {sorted(kinds)}")
        unknown = sorted(set(req.args) - ARM_OPTIONS - cls.options)
        if unknown:  # a misspelt option was ignored: the default ran instead
            known = ", ".join(sorted(ARM_OPTIONS - {"path"} | cls.options))
            raise ProtocolError(
                f"op 'arm': path {kind!r} takes no {', '.join(unknown)}; its options: {known}",
                req.id,
            )
        name = req.get_str("name", kind)
        sig = req.get_int("sig", 1 if kind == "setsig" else 0, lo=0, hi=NUM_RT_SIGNALS - 1)
        if issubclass(cls, AsyncPath) and self.dispatcher is None:
            raise ProtocolError("async paths need the signalfd dispatcher (not running)")
        try:
            ack = parse_ack_mode(req.args.get("ack", True))
        except ValueError as e:
            raise ProtocolError(f"op 'arm': {e}", req.id) from None
        summarize = req.get_int_list("summarize", lo=0, hi=255)
        opts = PathOptions(
            dev=req.get_str("dev", DEFAULT_DEV),
            ack=ack,
            batch=req.get_int("batch", SUMMARY_BATCH if summarize else 64, lo=1, hi=4096),
            interval_s=req.get_float("interval_ms", 1.0, hi=MAX_INTERVAL_MS) / 1000.0,
            max_polls=req.get_int("max_polls", 0, lo=0),
            signo=(signal.SIGRTMIN + sig) if kind == "setsig" else 0,
            drain=req.get_bool("drain", False),
            summarize=frozenset(summarize),
            summary_interval_s=req.get_float(
                "summary_interval_ms", 250.0, lo=1.0, hi=MAX_SUMMARY_INTERVAL_MS
            )
            / 1000.0,
            params=dict(req.args),
        )
        if summarize and not (
            getattr(cls, "summarizable", False) or getattr(cls, "own_summary", False)
        ):
            raise ProtocolError(f"op 'arm': path {kind!r} has no records to summarize", req.id)
        with self.lock:
            if self.closed:
                raise ProtocolError("the session is shut down")
            if name in self.paths:
                raise ProtocolError(f"a path named {name!r} is already armed")
            path = cls(name, self.abi, opts, self.writer.send)
            try:
                info = path.arm()  # closes what it opened if it fails
            except ValueError as e:  # a kind's own option the request got wrong
                raise ProtocolError(f"op 'arm': {e}", req.id) from None
            self.paths[name] = path
        if opts.signo:
            info["signo"] = opts.signo
        return ok(req.id, **info)

    def _take(self, req: Request) -> list[NotificationPath]:
        name = req.get_opt_str("name")
        with self.lock:
            if name is None:
                taken = list(self.paths.values())
                self.paths.clear()
                return taken
            if name not in self.paths:
                raise ProtocolError(f"no armed path named {name!r}")
            return [self.paths.pop(name)]

    def _disarm_all(self) -> dict[str, Any]:
        with self.lock:
            taken = list(self.paths.values())
            self.paths.clear()
        return self._stop(taken)

    def _stop(self, paths: list[NotificationPath]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for p in paths:
            p.stop()
            out[p.path_name] = self._describe(p)
        return out

    def _describe(self, p: NotificationPath) -> dict[str, Any]:
        return {
            "path": p.kind,
            "dev": p.opts.dev,
            "alive": p.is_alive(),
            "exit_reason": p.exit_reason,
            **p.stats.as_json(),
        }

    def op_disarm(self, req: Request) -> JsonObj:
        return ok(req.id, paths=self._stop(self._take(req)))

    def op_stats(self, req: Request) -> JsonObj:
        with self.lock:
            paths = {n: self._describe(p) for n, p in self.paths.items()}
        sig = None
        if self.dispatcher is not None:
            sig = {"total": self.dispatcher.total, "orphans": self.dispatcher.orphans}
        out: JsonObj = ok(req.id, paths=paths, signals=sig, handles=sorted(self.handles))
        dev = req.get_opt_str("dev")
        stats_ioctl = self.abi.ioctls.get("GET_STATS")
        if dev is not None and stats_ioctl is not None:
            fd = os.open(dev, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                out["driver"] = stats_ioctl.call(fd, {})
            finally:
                os.close(fd)
        return out

    def op_open(self, req: Request) -> JsonObj:
        name = req.get_str("name")
        if name in self.handles:
            raise ProtocolError(f"handle {name!r} already open")
        flags = os.O_CLOEXEC | (os.O_RDWR if req.get_bool("rdwr", True) else os.O_RDONLY)
        if req.get_bool("nonblock", True):
            flags |= os.O_NONBLOCK
        dev = req.get_str("dev", DEFAULT_DEV)
        fd = os.open(dev, flags)
        h = self.handles[name] = Handle(name, fd, dev)
        return ok(req.id, name=name, fd=fd, **self.orphans.notes(h.key))

    def _handle(self, req: Request) -> Handle:
        name = req.get_str("name")
        try:
            return self.handles[name]
        except KeyError:
            raise ProtocolError(f"no open handle {name!r}") from None

    def op_read(self, req: Request) -> JsonObj:
        """One read(2) on an open handle; ``as`` = records | count | raw.  A blocking
        handle (``nonblock=false``) waits up to ``wait_ms`` (default 10 s, at most
        :data:`MAX_WAIT_MS`) for something to read, then answers ``errno``
        ``ETIMEDOUT`` without reading: a read never blocks the session for ever.

        The read(2) itself runs in a thread of its own (:class:`BoundedRead`), waited for
        until ``wait_ms`` ran out: a driver's read() may block although poll(2) said
        readable (one without a .poll handler is always "readable") or O_NONBLOCK was
        asked.  Then a signal (:data:`STOP_SIGNAL`, EINTR) ends it: ETIMEDOUT,
        ``interrupted`` true.  One that no signal ends (the driver waits
        uninterruptibly, wait_event) is left in the driver: ETIMEDOUT and ``stuck`` (where
        the thread waits), :data:`INTERRUPT_GRACE_S` after ``wait_ms``; the handle's
        later reads wait their ``wait_ms`` for it and answer what it read (``late``: the
        id of the request it was) or ``EBUSY``, its ioctls ``EBUSY``, until it returns;
        ``close`` and ``reset`` close the handle at once, and the rest of the session
        works on, while the read stays in the driver (an orphan: :class:`OrphanReads`)."""
        h = self._handle(req)
        mode = req.get_str("as", "records")
        if mode not in ("records", "count", "raw"):  # before the read consumes anything
            raise ProtocolError(f"read: 'as' must be records, count or raw, not {mode!r}")
        out = self._read(req, h, mode)
        out.update(self.orphans.notes(h.key))  # after it: what an orphan took meanwhile
        return out

    def _read(self, req: Request, h: Handle, mode: str) -> JsonObj:
        default = COUNT_FMT.size if mode == "count" else self.abi.record_size * 64
        size = req.get_int("size", default, lo=0, hi=1 << 20)
        wait_ms = req.get_float("wait_ms", READ_WAIT_MS, hi=MAX_WAIT_MS)
        deadline = time.monotonic() + wait_ms / 1000
        if h.stuck is not None:  # an earlier read still in the driver, or its result
            earlier = h.stuck
            if not earlier.wait(deadline, self._stopped):
                return ok(req.id, errno="EBUSY", nbytes=None, stuck=earlier.describe(h.name))
            h.stuck = None  # answered as its own request asked (its size, its 'as')
            return self._read_answer(req.id, earlier.mode, earlier, late=earlier.req_id)
        blocking = not fcntl.fcntl(h.fd, fcntl.F_GETFL) & os.O_NONBLOCK
        if blocking and not _readable(h.fd, wait_ms, self._stopped):
            return ok(req.id, errno="ETIMEDOUT", nbytes=None)
        rd = BoundedRead(h.fd, size, req.id, mode)
        if not rd.wait(deadline, self._stopped):
            if not rd.interrupt(INTERRUPT_GRACE_S, INTERRUPT_MAX_S):
                h.stuck = rd
                return ok(req.id, errno="ETIMEDOUT", nbytes=None, stuck=rd.describe(h.name))
            if rd.errno == errno.EINTR:
                return ok(req.id, errno="ETIMEDOUT", nbytes=None, interrupted=True)
        return self._read_answer(req.id, mode, rd)

    def _stopped(self) -> bool:
        return self.closed

    def _read_answer(
        self, req_id: int, mode: str, rd: BoundedRead, late: int | None = None
    ) -> JsonObj:
        """The answer to a read of *rd*'s result as ``as`` *mode*; *late*: the id of
        the request whose read it was (one left in the driver)."""
        extra: JsonObj = {} if late is None else {"late": late}
        if rd.data is None:
            return ok(req_id, errno=errno_name(rd.errno or 0), nbytes=None, **extra)
        data = rd.data
        out = ok(req_id, errno=None, nbytes=len(data), wake_ns=rd.wake_ns, **extra)
        if mode == "raw":
            out["hex"] = data.hex()
        elif mode == "count":
            out["count"] = COUNT_FMT.unpack(data)[0] if len(data) == COUNT_FMT.size else None
        else:
            out["events"] = self.abi.decode(data)
        return out

    def op_close(self, req: Request) -> JsonObj:
        """Close a handle at once, a read of it left in the driver or not: that read
        stays in the driver (no signal ends it) and becomes an orphan, named in the
        answer (``orphans``; see :class:`OrphanReads`)."""
        h = self._handle(req)
        del self.handles[h.name]
        self._orphan(h)
        os.close(h.fd)  # at once, a read stuck in it too (it holds the file until it returns)
        return ok(req.id, **self.orphans.notes())

    def op_ioctl(self, req: Request) -> JsonObj:
        h = self._handle(req)
        if h.stuck is not None and not h.stuck.done.is_set():  # its driver may hold a lock
            return ok(req.id, errno="EBUSY", result=None, stuck=h.stuck.describe(h.name))
        fd = h.fd
        io = self.abi.ioctls.get(req.get_str("ioctl"))
        if io is None:
            raise ProtocolError(f"unknown ioctl; known: {sorted(self.abi.ioctls)}")
        raw = req.args.get("arg", {})
        if isinstance(raw, dict):
            arg: dict[str, int] | int = {str(k): int(v) for k, v in raw.items()}
        elif isinstance(raw, int) and not isinstance(raw, bool):
            arg = raw
        else:
            raise ProtocolError("ioctl: 'arg' must be an object of integers or an integer")
        try:
            return ok(req.id, errno=None, result=io.call(fd, arg))
        except OSError as e:
            return ok(req.id, errno=errno_name(e.errno or 0), result=None)

    def op_interrupt(self, req: Request) -> JsonObj:
        """Signal an armed path's thread while it sits in read(2) (a path whose
        ``waits_in_read``: read, count, uio, evdev-read).

        ``restart=false`` (SIGUSR1, no SA_RESTART): the read returns EINTR, the path
        reports ``{"type": "interrupted"}`` and reads again.  ``restart=true``
        (SIGUSR2 with SA_RESTART): the kernel restarts the read transparently.
        """
        path = self._wait_blocked(req)
        signo = RESTART_SIGNAL if req.get_bool("restart", False) else STOP_SIGNAL
        ident = path.ident
        assert ident is not None
        signal.pthread_kill(ident, signo)
        return ok(req.id, signo=int(signo), restart=signo == RESTART_SIGNAL)

    def _wait_blocked(self, req: Request) -> NotificationPath:
        name = req.get_str("name")
        timeout = req.get_float("timeout_ms", 10000.0, hi=MAX_WAIT_MS) / 1000.0
        with self.lock:
            path = self.paths.get(name)
        if path is None or not path.waits_in_read:
            kinds = "/".join(k for k, cls in ALL_PATH_KINDS.items() if cls.waits_in_read)
            what = (
                f"no armed path named {name!r}" if path is None
                else f"the {path.kind} path {name!r} does not wait in read(2)"
            )  # fmt: skip
            raise ProtocolError(f"{what}: this takes a path that does ({kinds})")
        deadline = time.monotonic() + timeout
        while not path.in_read():
            if time.monotonic() > deadline or not path.is_alive():
                raise ProtocolError(f"path {name!r} is not blocked in read(2)")
            time.sleep(0.001)
        return path

    def op_wait_blocked(self, req: Request) -> JsonObj:
        """Return once the named path's thread sits in read(2) (see op_interrupt)."""
        path = self._wait_blocked(req)
        return ok(req.id, name=path.path_name, tid=path.native_id)

    def op_check(self, req: Request) -> JsonObj:
        results = run_checks(
            self.abi, req.get_str("dev", DEFAULT_DEV), req.get_opt_str("count_dev")
        )
        return ok(req.id, results=results)

    def op_flush(self, req: Request) -> JsonObj:
        """Discard whatever is queued for a fresh open file of ``dev``."""
        dev = req.get_str("dev", DEFAULT_DEV)
        fd = os.open(dev, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            if "FLUSH" in self.abi.ioctls:
                self.abi.ioctl("FLUSH").call(fd, 0)
            nbytes = drain(fd, self.abi.record_size * 256)
        finally:
            os.close(fd)
        if nbytes is None:
            raise ProtocolError(
                f"flush: {dev} never ran empty ({MAX_DRAIN_READS} reads): not a device queue"
            )
        return ok(req.id, discarded=nbytes // self.abi.record_size)

    def op_release(self, req: Request) -> JsonObj:
        """Let a gated uio path handle the wake-up it reported (``uio_wake``)."""
        name = req.get_str("name")
        with self.lock:
            path = self.paths.get(name)
        if not isinstance(path, UioPath):
            raise ProtocolError(f"no armed uio path named {name!r}")
        path.release()
        return ok(req.id)

    def op_reset(self, req: Request) -> JsonObj:
        """Disarm every path, close every handle, stop the responders, put the ``tune``
        settings back to their defaults; with ``dev``, say whether that
        character device is present (``present``).  ``monotonic_ns``: the guest time
        the reset began (CLOCK_MONOTONIC); ``kernel_log_ns``: the same by the kernel log's
        clock (where a test's part of the kernel log starts; printk's clock is another,
        milliseconds apart: :mod:`irqlab_agent.kclock`)."""
        offset = printk_offset_ns()  # measured once (a line in the kernel log) before
        began = mono_ns()
        paths = self._disarm_all()
        self.native.close()
        self._close_handles()
        reset_tuning()
        # reads left in drivers by the handles it closed (or earlier ones): named, and
        # what those that returned since got
        out = ok(req.id, paths=paths, monotonic_ns=began, **self.orphans.notes())
        if offset is not None:  # the same instant by the kernel log's clock
            out["kernel_log_ns"] = began + offset
        dev = req.get_opt_str("dev")
        if dev is not None:  # saves the host a shell round trip per test
            try:
                out["present"] = stat.S_ISCHR(os.stat(dev).st_mode)
            except OSError:
                out["present"] = False
        return out

    def op_kernel_clock(self, req: Request) -> JsonObj:
        """The guest time now (``monotonic_ns``: CLOCK_MONOTONIC, the heartbeats' clock)
        and, where /dev/kmsg says it, the same instant by the kernel log's clock
        (``kernel_log_ns``: printk's, milliseconds apart either way,
        :mod:`irqlab_agent.kclock`): how a heartbeat's time is put onto kernel log
        stamps."""
        offset = printk_offset_ns()
        now = mono_ns()
        if offset is None:
            return ok(req.id, monotonic_ns=now)
        return ok(req.id, monotonic_ns=now, kernel_log_ns=now + offset)

    def op_heartbeat(self, req: Request) -> JsonObj:
        """Send ``{"type": "heartbeat"}`` every ``interval_ms`` (0 stops): the host's
        proof that the guest still schedules userspace."""
        interval = req.get_int("interval_ms", 1000, lo=0, hi=60_000)
        self._stop_heartbeat()
        if interval:
            stop = threading.Event()
            self._heartbeat = stop
            threading.Thread(
                target=self._beat, args=(stop, interval / 1000), name="heartbeat", daemon=True
            ).start()
        return ok(req.id, interval_ms=interval)

    def _beat(self, stop: threading.Event, interval: float) -> None:
        n = 0
        while not stop.wait(interval):
            n += 1
            self.writer.send({"type": "heartbeat", "n": n, "monotonic_ns": mono_ns()})

    def _stop_heartbeat(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.set()
            self._heartbeat = None

    def op_quit(self, req: Request) -> JsonObj:
        self.running = False
        return ok(req.id, paths=self._disarm_all())


# How often a read's wait looks whether its session was stopped meanwhile (a new one
# took over: the host's wait for it was interrupted, by pytest-timeout for example).
STOP_CHECK_S = 0.1


def _readable(fd: int, wait_ms: float, stopped: Callable[[], bool]) -> bool:
    """Whether *fd* has something to read within *wait_ms* (or is at end/error: the
    read then says what); False at once when *stopped* says so: the session that waits
    was stopped, and its handles (the driver's node) close when the request returns."""
    import select

    p = select.poll()
    p.register(fd, select.POLLIN | select.POLLRDNORM)
    deadline = time.monotonic() + wait_ms / 1000
    while True:
        left = deadline - time.monotonic()
        if p.poll(max(0.0, min(left, STOP_CHECK_S)) * 1000):
            return True
        if left <= STOP_CHECK_S or stopped():
            return False


# A read left in the driver after its wait_ms: how long STOP_SIGNAL is sent (every
# INTERRUPT_RETRY_S: one that came before the thread entered read(2) ended nothing)
# for it to return before it counts as stuck (the driver waits uninterruptibly).
INTERRUPT_GRACE_S = 1.0
# ... and how long at most while the thread is not in an uninterruptible wait (state
# S or R: a loaded guest had not run it to take the signal yet): not stuck, just late
INTERRUPT_MAX_S = 10.0
INTERRUPT_RETRY_S = 0.05
STACK_FRAMES = 8  # of a stuck read's kernel stack, in its description


class Handle:
    """A file the session opened (``open``): its *name*, its *fd*, the path it opened
    (*dev*), which file that is (:attr:`key`), and the read(2) of it that the agent left
    in the driver (``stuck``, see :meth:`Agent.op_read`) until a read request takes its
    result."""

    __slots__ = ("dev", "fd", "key", "name", "stuck")

    def __init__(self, name: str, fd: int, dev: str = "") -> None:
        self.name = name
        self.fd = fd
        self.dev = dev
        self.key = file_key(fd)
        self.stuck: BoundedRead | None = None


def file_key(fd: int) -> tuple[int, int]:
    """Which device or file *fd* is, as two opens of it have it alike: a character or
    block device by its number (``(0, st_rdev)``; any node of it, any path), another
    file by its inode (``(st_dev, st_ino)``)."""
    st = os.fstat(fd)
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        return (-1, st.st_rdev)
    return (st.st_dev, st.st_ino)


def _can_interrupt() -> bool:
    """Whether :data:`STOP_SIGNAL` has a handler here (the agent's main() sets it): sent
    with none it would end the process."""
    handler = signal.getsignal(STOP_SIGNAL)
    return handler not in (signal.SIG_DFL, signal.SIG_IGN, None)


class BoundedRead:
    """One read(2) of *fd* (at most *size* bytes) for request *req_id*, in a daemon
    thread of its own: the session waits for it until a deadline, can end it with a
    signal, and can leave behind one that no signal ends."""

    def __init__(self, fd: int, size: int, req_id: int, mode: str = "raw") -> None:
        # its own descriptor of the file, closed by its thread: a close or reset of the
        # handle while it is left in the driver frees the handle's number, which the
        # next open may take (its late read then read another file)
        self.fd = os.dup(fd)
        self.size = size
        self.req_id = req_id
        self.mode = mode  # the request's 'as': its result is answered so, late or not
        self.data: bytes | None = None
        self.errno: int | None = None
        self.wake_ns = 0
        self.tid: int | None = None
        self.started = time.monotonic()
        self.done = threading.Event()
        # held while the thread may be signalled: once done is set under it the thread
        # is never signalled again (its pthread id may be another thread's by then)
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"read-{req_id}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self.tid = threading.get_native_id()
        try:
            self.data = raw_read(self.fd, self.size)  # EINTR raised, not retried
        except OSError as e:
            self.errno = e.errno or errno.EIO
        self.wake_ns = mono_ns()
        with contextlib.suppress(OSError):
            os.close(self.fd)
        with self._lock:
            self.done.set()

    def wait(self, deadline: float, stopped: Callable[[], bool]) -> bool:
        """Whether the read returned by *deadline* (time.monotonic()); False at once
        when *stopped* says so (the session was stopped, as :func:`_readable`)."""
        while True:
            left = deadline - time.monotonic()
            if self.done.wait(max(0.0, min(left, STOP_CHECK_S))):
                return True
            if left <= STOP_CHECK_S or stopped():
                return self.done.is_set()

    def interrupt(self, grace: float, longest: float | None = None) -> bool:
        """Send :data:`STOP_SIGNAL` to the thread until its read returns, for *grace* s,
        and on up to *longest* s while the thread is not in an uninterruptible wait (a
        loaded guest had not run it to take the signal); whether it returned."""
        if not _can_interrupt():
            return self.done.wait(0)
        start = time.monotonic()
        deadline = start + grace
        while True:
            with self._lock:
                ident = self._thread.ident
                if self.done.is_set():
                    return True
                if ident is not None:
                    with contextlib.suppress(ProcessLookupError, OSError):
                        signal.pthread_kill(ident, STOP_SIGNAL)
            left = deadline - time.monotonic()
            if self.done.wait(max(0.0, min(left, INTERRUPT_RETRY_S))):
                return True
            if left <= INTERRUPT_RETRY_S:
                if longest is None or time.monotonic() - start >= longest:
                    return False
                if self.state() in ("D", ""):  # in the driver for good (or gone: asked)
                    return self.done.is_set()
                deadline = time.monotonic() + INTERRUPT_RETRY_S  # late, not stuck

    def state(self) -> str:
        """The thread's state letter (R, S, D, ...) from /proc, "" when unreadable."""
        text = _proc_text(f"/proc/self/task/{self.tid}/stat")
        return text.rsplit(")", 1)[1].split()[0] if ")" in text else ""

    def describe(self, handle: str) -> str:
        """That the read of handle *handle* is still in the driver, and where
        (:meth:`location`)."""
        waited = time.monotonic() - self.started
        how = "a signal did not end it" if _can_interrupt() else "no signal was sent"
        return (
            f"the read(2) of request {self.req_id} is still blocked in the driver's read() "
            f"{waited:.1f} s after it began ({how}: the driver waits uninterruptibly?): "
            f"{self.location()}; handle {handle!r} answers EBUSY until it returns "
            "(close or reset closes the handle; the read stays in the driver, an orphan "
            "that takes the next data the driver hands a reader)"
        )

    def location(self) -> str:
        """Where the read's thread is: its state, wait channel and kernel stack (from
        /proc, as far as they can be read)."""
        where = [f"thread {self.tid}"]
        task = f"/proc/self/task/{self.tid}"
        letter = self.state()
        if letter:
            where.append(f"state {letter}{STATE_WORDS.get(letter, '')}")
        wchan = _proc_text(f"{task}/wchan").strip()
        if wchan and wchan != "0":
            where.append(f"wchan {wchan}")
        frames = [
            line.split("] ", 1)[-1].strip() for line in _proc_text(f"{task}/stack").splitlines()
        ]
        frames = [f for f in frames if f]
        if frames:
            more = " <- ..." if len(frames) > STACK_FRAMES else ""
            where.append("kernel stack: " + " <- ".join(frames[:STACK_FRAMES]) + more)
        return ", ".join(where)


class Orphan:
    """A read left in the driver (:class:`BoundedRead`) whose handle was closed: which
    handle and file it was, and since when it has no handle (time.monotonic())."""

    __slots__ = ("dev", "handle", "key", "orphaned", "read")

    def __init__(self, read: BoundedRead, handle: Handle) -> None:
        self.read = read
        self.handle = handle.name
        self.dev = handle.dev
        self.key = handle.key
        self.orphaned = time.monotonic()

    def blocked(self) -> JsonObj:
        """Its description while it is still in the driver."""
        now = time.monotonic()
        return {
            "request": self.read.req_id,
            "handle": self.handle,
            "dev": self.dev,
            "in_driver_s": round(now - self.read.started, 1),
            "orphaned_s": round(now - self.orphaned, 1),
            "where": self.read.location(),
        }

    def returned(self) -> JsonObj:
        """What it got once it returned: ``hex`` (its bytes) or ``errno``."""
        rd = self.read
        out: JsonObj = {
            "request": rd.req_id,
            "handle": self.handle,
            "dev": self.dev,
            "errno": None if rd.data is not None else errno_name(rd.errno or 0),
            "nbytes": None if rd.data is None else len(rd.data),
            "returned_s_ago": round((mono_ns() - rd.wake_ns) / 1e9, 1),
        }
        if rd.data is not None:
            out["hex"] = rd.data.hex()
        return out


class OrphanReads:
    """The reads the agent left in drivers (state D: no signal ends them) whose handles
    were closed since (``close``, ``reset``, a session's end).  Such a read still waits
    in the driver, its thread holding the file: the next data the driver hands a reader
    may go to it rather than to a handle opened since (a driver with one queue for
    every reader), and nothing can take it back.  So each is kept, the process's (its
    thread outlives the session), and reported: while it waits, in every answer to
    ``close`` and ``reset`` and in the answers to ``open`` and ``read`` of the same
    device (``orphans``, with a ``notice``); once it returned, what it got
    (``orphan_data``: its bytes as hex, or its errno), reported once, in the first such
    answer, then forgotten."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reads: list[Orphan] = []

    def add(self, read: BoundedRead, handle: Handle) -> None:
        with self._lock:
            self._reads.append(Orphan(read, handle))

    def notes(self, key: tuple[int, int] | None = None) -> JsonObj:
        """The fields an answer gets for the orphans of the file *key* (None: every
        file): ``orphans`` (those still in the driver) with a ``notice``, and
        ``orphan_data`` (what those that returned got; reported once); {} for none."""
        with self._lock:
            mine = [o for o in self._reads if key is None or o.key == key]
            done = [o for o in mine if o.read.done.is_set()]
            self._reads = [o for o in self._reads if o not in done]
        waiting = [o.blocked() for o in mine if o not in done]
        out: JsonObj = {}
        if waiting:
            out["orphans"] = waiting
            devs = ", ".join(sorted({str(o["dev"]) for o in waiting}))
            ids = ", ".join(str(o["request"]) for o in waiting)
            out["notice"] = (
                f"{len(waiting)} read(2) of {devs} left in the driver by closed handles "
                f"(request {ids}) still blocked uninterruptibly: the next data that driver "
                "hands a reader may go to them and not to a handle opened since; what they "
                "get is reported as orphan_data"
            )
        if done:
            out["orphan_data"] = [o.returned() for o in done]
        return out


# The agent process's orphans: every session's Agent reports them
ORPHANS = OrphanReads()


STATE_WORDS = {"D": " (uninterruptible)", "S": " (sleeping)", "R": " (running)"}


def _proc_text(path: str) -> str:
    """The text of a /proc file, or "" when it cannot be read."""
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def path_kinds() -> dict[str, dict[str, bool]]:
    """The paths ``arm`` knows, in order, as the hello lists them: whether each reads event
    records (``summarizable``: storm mode summarizes them) and whether it sees the
    device's events at all (``device_events``: not the input devices' paths)."""
    return {
        name: {
            "summarizable": bool(getattr(cls, "summarizable", False)),
            "device_events": name not in INPUT_PATH_KINDS,
        }
        for name, cls in ALL_PATH_KINDS.items()
    }


def _noop(signo: int, frame: object) -> None:
    return None


OPTIONS = ("spec", "listen", "reseed", "daemon")  # each --NAME VALUE or --NAME=VALUE


def quick_args(argv: list[str]) -> Any:
    """*argv* parsed without argparse when it is well formed (options of :data:`OPTIONS`,
    each at most once and with its value; --daemon and --reseed only with --listen), as
    :func:`parse_args` would parse it; else None.  argparse, with the gettext, locale and
    shutil it imports, is a tenth of the daemon's start-up in a cold TCG guest; anything
    else (``--help``, a mistake) goes to :func:`parse_args` for its usage and messages."""
    from types import SimpleNamespace

    values: dict[str, str | None] = dict.fromkeys(OPTIONS)
    rest = list(argv)
    while rest:
        name, eq, value = rest.pop(0).partition("=")
        key = name[2:]
        if not name.startswith("--") or key not in values or values[key] is not None:
            return None
        if not eq:
            if not rest or rest[0].startswith("-"):
                return None
            value = rest.pop(0)
        values[key] = value
    if (values["daemon"] or values["reseed"]) and not values["listen"]:
        return None
    return SimpleNamespace(**values)


def parse_args(argv: list[str]) -> Any:
    import argparse  # only for a command line quick_args() leaves: it costs start-up time

    ap = argparse.ArgumentParser(
        prog="python3 -m irqlab_agent", description=__doc__, allow_abbrev=False
    )
    ap.add_argument("--spec", help="ABI artifact (default: the shipped abi.json)")
    ap.add_argument(
        "--listen",
        metavar="[HOST:]PORT",
        help="serve sessions on this TCP address (one connection at a time) "
        "instead of stdin/stdout; the host reaches it through an SSH port forward",
    )
    ap.add_argument(
        "--reseed",
        metavar="[HOST:]PORT",
        help="with --listen: also take RNG seeds on this TCP address (one hex line per "
        "connection, answered 'ok BOOTTIME_NS'): a restored guest's first words",
    )
    ap.add_argument(
        "--daemon",
        metavar="LOG",
        help="with --listen: detach once listening (prints 'listening PORT PID') "
        "and write stderr to LOG",
    )
    args = ap.parse_args(argv)
    if (args.daemon or args.reseed) and not args.listen:
        ap.error("--daemon and --reseed need --listen")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    spec = listen_at = daemon_log = reseed_at = None
    if argv:
        args = quick_args(argv) or parse_args(argv)
        spec, listen_at, daemon_log = args.spec, args.listen, args.daemon
        reseed_at = args.reseed

    # Block the async-notification signals before any thread exists, so every
    # thread inherits the mask and only the signalfd sees them.
    block_signals(async_signals())
    signal.signal(STOP_SIGNAL, _noop)  # no SA_RESTART: a blocked read returns EINTR
    signal.signal(RESTART_SIGNAL, _noop)
    signal.siginterrupt(RESTART_SIGNAL, False)  # SA_RESTART
    writer = Writer(sys.stdout.buffer)
    try:
        abi = load_abi(spec)
    except Exception as e:
        writer.send({"type": "fatal", "error": f"cannot load the uapi ABI: {e!r}"})
        return 2
    if listen_at is not None:
        return _serve_tcp(abi, listen_at, daemon_log, reseed_at)
    agent = Agent(abi, writer, SignalFd(async_signals()))
    try:
        agent.serve(sys.stdin.buffer)
    except KeyboardInterrupt:
        agent.shutdown()
    return 0


def _serve_tcp(abi: Abi, listen_at: str, daemon_log: str | None, reseed_at: str | None) -> int:
    from irqlab_agent import daemon

    try:
        sock = daemon.listen(daemon.parse_address(listen_at))
        seeds = daemon.listen(daemon.parse_address(reseed_at)) if reseed_at else None
    except (OSError, ValueError) as e:
        print(f"irqlab-agent: cannot listen on {listen_at} / {reseed_at}: {e}", file=sys.stderr)
        return 2
    if daemon_log is not None:
        daemon.detach(sock, daemon_log)
    if seeds is not None:  # after detach: a thread does not survive fork
        threading.Thread(
            target=daemon.reseed_forever, args=(seeds,), name="reseed", daemon=True
        ).start()
    with contextlib.suppress(KeyboardInterrupt):
        daemon.serve_forever(sock, lambda w: Agent(abi, w, SignalFd(async_signals())))
    return 0
