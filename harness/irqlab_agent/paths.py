"""Notification paths: each armed path is one thread on its own open file.

A path waits for the driver in its own way (blocking read, O_NONBLOCK polling,
poll/select/epoll, SIGIO/F_SETSIG through a signalfd, the counting file, an
eventfd), reads the event records, ACKs each one to the device (``ack``: the ACK
ioctl per record by default, one write(2) per read buffer, or none; see
:mod:`irqlab_agent.acks`) and reports it as ``{"type": "event", ...}``.  With
``summarize`` (storm mode, :mod:`irqlab_agent.summary`) the records of the listed
sources are counted into ``{"type": "summary", ...}`` messages instead.

Stopping: paths that wait in poll/select/epoll/queues also watch a wake-up
pipe; paths blocked in read(2) are woken by :data:`STOP_SIGNAL` sent to their
thread (their reads go through :func:`sysio.raw_read`, which returns EINTR).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import queue
import select
import signal
import stat
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping

from irqlab_agent.abi import Abi
from irqlab_agent.acks import SeqAcker, SeqAcks, open_ack_node
from irqlab_agent.fastack import TUNING, FastAcker
from irqlab_agent.protocol import errno_name
from irqlab_agent.summary import Summarizer
from irqlab_agent.sysio import SigInfo, raw_read, thread_in_read

TYPE_CHECKING = False  # typing is not imported at run time: it costs start-up time
if TYPE_CHECKING:
    from typing import Any, ClassVar

    Emit = Callable[[dict[str, Any]], None]

STOP_SIGNAL = signal.SIGUSR1  # interrupts a blocked read(2): no SA_RESTART
RESTART_SIGNAL = signal.SIGUSR2  # installed with SA_RESTART: the read restarts

COUNT_FMT = struct.Struct("=I")  # the counting file returns a u32 (seed 003)


def mono_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


class PathOptions:
    """What an arm request configures of a path (see ``Agent.op_arm``)."""

    def __init__(
        self,
        dev: str,
        *,
        ack: str = "ioctl",  # ioctl (per record) | write (one write(2) per read buffer) | none
        batch: int = 64,  # records per read(2)
        interval_s: float = 0.001,  # nonblock: pause between EAGAIN polls
        max_polls: int = 0,  # nonblock: stop after this many EAGAINs in a row (0 = never)
        signo: int = 0,  # setsig: the F_SETSIG signal
        drain: bool = False,  # read until EAGAIN after each wake-up (always on for epoll-et)
        summarize: frozenset[int] = frozenset(),  # sources counted into summaries (storm mode)
        summary_interval_s: float = 0.25,  # a summary at least this often while there are counts
        params: Mapping[str, Any] | None = None,  # the arm request's arguments
    ) -> None:
        self.dev = dev
        self.ack = ack
        self.batch = batch
        self.interval_s = interval_s
        self.max_polls = max_polls
        self.signo = signo
        self.drain = drain
        self.summarize = summarize
        self.summary_interval_s = summary_interval_s
        self.params: Mapping[str, Any] = params if params is not None else {}


class PathStats:
    """A path's counters, reported by ``stats``/``disarm`` (:meth:`as_json`)."""

    def __init__(self) -> None:
        self.events = 0
        self.reads = 0
        self.wakeups = 0
        self.eagain = 0
        self.spurious = 0
        self.eintr = 0
        self.signals = 0
        self.acks = 0
        self.ack_errors = 0
        self.errors = 0
        self.counted = 0  # count path: sum of counts read
        # an F_SETSIG path: plain SIGIOs handed to it (another path's SIGIO, or the
        # kernel's fallback when the RT signal queue is full); not in signals/wakeups
        self.sigio_fallback = 0
        self.summaries = 0  # summary messages sent (storm mode)
        self.cpu_ns: int | None = None  # CPU time of the path's thread, once it has ended
        self.last_seq: int | None = None
        self.flags: dict[str, int] = {}

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class NotificationPath(threading.Thread):
    """Base: owns the fd, the stats, ACK + report; subclasses implement :meth:`loop`."""

    kind: ClassVar[str] = ""
    # sits in a syscall the wake-up pipe cannot end: stop() signals its thread
    # (STOP_SIGNAL, no SA_RESTART) until it returns
    stopped_by_signal: ClassVar[bool] = False
    # waits for the driver in read(2) itself: the agent's interrupt and wait_blocked
    # take it (a path that sleeps elsewhere, say ppoll(2), needs the signal to stop
    # but would never be seen "in read(2)")
    waits_in_read: ClassVar[bool] = False
    summarizable: ClassVar[bool] = False  # reads event records through report(): summarize
    open_nonblock: ClassVar[bool] = True
    records: ClassVar[bool] = True  # opens the driver's event node (opts.dev): checked
    # the arm request's options this kind reads beyond op_arm's own (opts.params and
    # op_arm's per-kind ones): ACKs on a second file of ack_dev
    options: ClassVar[frozenset[str]] = frozenset({"ack_dev"})

    def __init__(self, name: str, abi: Abi, opts: PathOptions, emit: Emit) -> None:
        super().__init__(name=f"path-{name}", daemon=True)
        self.path_name = name
        self.abi = abi
        self.opts = opts
        self.emit = emit
        self.stats = PathStats()
        self.fd = -1
        self.stopping = threading.Event()
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self.ready = threading.Event()
        self.setup_error: BaseException | None = None
        self.exit_reason: str | None = None
        self._ack = abi.ioctls.get("ACK")
        self.acks: SeqAcks | None = None  # write/none ACK modes and summaries
        self._ack_fd = -1  # a second file of ack_dev, if the ACKs go there
        self.summary: Summarizer | None = None
        self._fast: FastAcker | None = None  # ioctl ACKs before decoding (fastack)

    # -- life cycle -------------------------------------------------------------
    def open(self) -> None:
        flags = os.O_RDWR | os.O_CLOEXEC | (os.O_NONBLOCK if self.open_nonblock else 0)
        self.fd = os.open(self.opts.dev, flags)
        if self.records:
            self.check_node()

    def check_node(self) -> None:
        """The open file is one of the driver's record nodes (its GET_INFO ioctl
        answers), or a FIFO (a test's stand-in, records written into it): a regular
        file or ``dev="/dev/zero"`` was armed and its bytes read as thousands of garbage
        events."""
        dev = self.opts.dev
        mode = os.fstat(self.fd).st_mode
        if stat.S_ISFIFO(mode):
            return
        if not stat.S_ISCHR(mode):
            raise OSError(errno.ENOTTY, f"{dev} is not a character device (an irqlab node?)")
        try:
            self.abi.ioctl("GET_INFO").call(self.fd)
        except OSError as e:
            if e.errno not in (errno.ENOTTY, errno.EINVAL):
                raise
            raise OSError(  # one errno whatever the device answered (ENOTTY or EINVAL)
                errno.ENOTTY, f"{dev} is not an irqlab event node: its GET_INFO ioctl fails"
            ) from None

    def setup(self) -> None:
        """Configure the open fd (FASYNC, eventfd, ...). Runs in the caller's thread."""

    def teardown(self) -> None:
        """Undo :meth:`setup` before the fd is closed."""

    def arm(self) -> dict[str, Any]:
        """Open, configure and start the thread; return what the host should know.
        A failure at any step closes everything opened so far (the wake-up pipe, the
        device file, what a kind's :meth:`open` got before it failed)."""
        try:
            self.open()
        except BaseException:
            self.close_fds()
            raise
        try:
            self.setup()
        except BaseException:
            self.close_fds()
            raise
        try:
            self.setup_acks()
        except BaseException:
            with contextlib.suppress(OSError):
                self.teardown()
            self.close_fds()
            raise
        if self.summary is not None:
            self.summary.start()
        self.start()
        info = {"name": self.path_name, "path": self.kind, "fd": self.fd, "dev": self.opts.dev}
        if self.summarizable:
            info.update(ack=self.opts.ack, batch=self.opts.batch)
        if self.summary is not None:
            info["summarize"] = sorted(self.opts.summarize)
        return info

    def setup_acks(self) -> None:
        """The batched ACKs (``ack`` write/none, or any mode with ``summarize``), on the
        path's own file or on a second file of ``ack_dev``; and the summarizer."""
        o = self.opts
        if not self.summarizable or (o.ack == "ioctl" and not o.summarize):
            return  # per-record ioctl through self.ack(): the latency series' way
        fd = self.fd
        dev = o.params.get("ack_dev")
        if isinstance(dev, str) and o.ack != "none":
            self._ack_fd = fd = open_ack_node(self.abi, dev)
        self.acks = SeqAcks(self.abi, o.ack, fd)
        if o.summarize:
            self.summary = Summarizer(
                name=self.path_name,
                abi=self.abi,
                sources=o.summarize,
                acks=self.acks,
                emit=self.emit,
                emit_record=self.report_record,
                stats=self.stats,
                interval_s=o.summary_interval_s,
                clock=mono_ns,
            )

    def run(self) -> None:
        try:
            self.loop()
        except OSError as e:
            if not self.stopping.is_set():
                self.stats.errors += 1
                self.exit_reason = errno_name(e.errno or 0)
                self.emit(
                    {
                        "type": "path_error",
                        "path": self.path_name,
                        "errno": errno_name(e.errno or 0),
                        "message": str(e),
                    }
                )
        except Exception as e:  # a bug: report it rather than die silently
            self.stats.errors += 1
            self.exit_reason = repr(e)
            self.emit(
                {"type": "path_error", "path": self.path_name, "errno": None, "message": repr(e)}
            )
        finally:
            self.stats.cpu_ns = time.thread_time_ns()

    def loop(self) -> None:
        raise NotImplementedError

    def stop(self, timeout: float = 5.0) -> None:
        self.stopping.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        deadline = time.monotonic() + timeout
        if self.is_alive() and self.stopped_by_signal:
            while self.is_alive() and time.monotonic() < deadline:
                ident = self.ident
                if ident is not None:
                    with contextlib.suppress(ProcessLookupError, OSError):
                        signal.pthread_kill(ident, STOP_SIGNAL)
                self.join(0.02)
        elif self.is_alive():
            self.join(max(0.0, deadline - time.monotonic()))
        if self.summary is not None:
            self.summary.close()  # the last counts, before the disarm answer
        with contextlib.suppress(OSError):
            self.teardown()
        self.close_fds()

    def close_fds(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1
        for fd in (self._wake_r, self._wake_w, self._ack_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._wake_r = self._wake_w = self._ack_fd = -1

    @property
    def record_size(self) -> int:
        """Bytes of one record of this path's file (the driver's event record)."""
        return self.abi.record_size

    def in_read(self) -> bool:
        tid = self.native_id
        return tid is not None and self.is_alive() and thread_in_read(tid)

    # -- reading and reporting -------------------------------------------------------
    def read_once(self) -> bytes | None:
        """One non-blocking read(2) of up to ``batch`` records; None on EAGAIN."""
        size = self.record_size * self.opts.batch
        try:
            data = os.read(self.fd, size)
        except BlockingIOError:
            self.stats.eagain += 1
            return None
        self.stats.reads += 1
        return data

    def read_interruptible(self, size: int) -> bytes | None:
        """Blocking read(2); None when a signal interrupted it (reported unless stopping)."""
        try:
            data = raw_read(self.fd, size)
        except InterruptedError:
            if not self.stopping.is_set():
                self.stats.eintr += 1
                self.emit({"type": "interrupted", "path": self.path_name, "errno": "EINTR"})
            return None
        self.stats.reads += 1
        return data

    def wake_reads(self, size: int) -> Iterator[tuple[bytes, int]]:
        """Each blocking read(2) of up to *size* bytes, with its wake-up time (counted),
        until the path stops; a read a signal interrupted yields nothing."""
        while not self.stopping.is_set():
            data = self.read_interruptible(size)
            if data is None:
                continue
            wake = mono_ns()
            self.stats.wakeups += 1
            yield data, wake

    def drain(self, wake_ns: int, extra: Mapping[str, Any] | None = None) -> int:
        """Read until EAGAIN, reporting everything; return the number of events."""
        n = 0
        while not self.stopping.is_set():
            data = self.read_once()
            if data is None:
                break
            n += self.report(data, wake_ns, extra if n == 0 else None)
            if not data:
                break
        return n

    def report(self, data: bytes, wake_ns: int, extra: Mapping[str, Any] | None = None) -> int:
        if self.summary is not None:
            return self.summary.add(data, wake_ns, extra)
        if self.acks is None and self._ack is not None and TUNING.ack_first:
            return self._ack_first(data, wake_ns, extra)  # ioctl: ACK first, then decode
        events = self.abi.decode(data)
        if self.acks is not None:  # write/none: the whole buffer before reporting any
            before_a, before_e = self.acks.acks, self.acks.errors
            self.acks.ack([s for ev in events if isinstance(s := ev.get("seq"), int) and s])
            self.stats.acks += self.acks.acks - before_a
            self.stats.ack_errors += self.acks.errors - before_e
        for i, ev in enumerate(events):
            lat = self.ack(ev) if self.acks is None else None
            self._report_event(ev, wake_ns, extra if i == 0 else None, lat)
        return len(events)

    def _ack_first(self, data: bytes, wake_ns: int, extra: Mapping[str, Any] | None) -> int:
        """Per-record ioctl ACKs straight after the read, then decode and report."""
        if self._fast is None:
            self._fast = FastAcker(self.abi, self.fd)
        fast = self._fast
        before_a, before_e = fast.acks.acks, fast.acks.errors
        lats = fast.ack_records(data)
        self.stats.acks += fast.acks.acks - before_a
        self.stats.ack_errors += fast.acks.errors - before_e
        events = self.abi.decode(data)
        for i, (ev, lat) in enumerate(zip(events, lats, strict=False)):
            self._report_event(ev, wake_ns, extra if i == 0 else None, lat)
        return len(events)

    def report_record(
        self, data: bytes, wake_ns: int, extra: Mapping[str, Any] | None, lat: int | None
    ) -> None:
        """Report one record the caller has ACKed (a summarizing path's other sources)."""
        self._report_event(self.abi.decode(data)[0], wake_ns, extra, lat)

    def _report_event(
        self, ev: dict[str, Any], wake_ns: int, extra: Mapping[str, Any] | None, lat: int | None
    ) -> None:
        ev["type"] = "event"
        ev["path"] = self.path_name
        ev["wake_ns"] = wake_ns
        ev["ack_latency_ns"] = lat
        if extra:
            ev.update(extra)
        self.stats.events += 1
        seq = ev.get("seq")
        if isinstance(seq, int):
            self.stats.last_seq = seq
        for fname in ev.get("flag_names", ()):
            self.stats.flags[fname] = self.stats.flags.get(fname, 0) + 1
        self.emit(ev)

    def ack(self, ev: Mapping[str, Any]) -> int | None:
        if self._ack is None or not isinstance(ev.get("seq"), int) or not ev["seq"]:
            return None  # seq 0: a record the driver made (debounced key), no device event
        try:
            out = self._ack.call(self.fd, {"seq": int(ev["seq"])})
        except OSError:
            self.stats.ack_errors += 1
            return None
        self.stats.acks += 1
        for k, v in out.items():
            if "lat" in k:
                return v
        return None

    def wait_readable(self, fd: int) -> bool:
        """Block until *fd* is readable (True) or the path is being stopped (False)."""
        r, _, _ = select.select([fd, self._wake_r], [], [])
        return fd in r and not self.stopping.is_set()


class ReadPath(NotificationPath):
    """Blocking read(2): the driver sleeps in wait_event_interruptible."""

    kind = "read"
    summarizable = True
    stopped_by_signal = True
    waits_in_read = True
    open_nonblock = False

    def loop(self) -> None:
        while not self.stopping.is_set():
            data = self.read_interruptible(self.record_size * self.opts.batch)
            if data is None:
                continue
            wake = mono_ns()
            self.stats.wakeups += 1
            if not data:
                raise OSError(0, "read returned 0 bytes (end of file)")
            self.report(data, wake)


class NonblockPath(NotificationPath):
    """O_NONBLOCK read in a loop: EAGAIN while empty (counted), data when there is some."""

    kind = "nonblock"
    summarizable = True
    options = NotificationPath.options | {"interval_ms", "max_polls"}

    def loop(self) -> None:
        misses = 0
        while not self.stopping.is_set():
            data = self.read_once()
            if data is None:
                misses += 1
                if self.opts.max_polls and misses >= self.opts.max_polls:
                    self.exit_reason = "max_polls"
                    self.emit(
                        {
                            "type": "path_done",
                            "path": self.path_name,
                            "reason": "max_polls",
                            "eagain": self.stats.eagain,
                        }
                    )
                    return
                self.stopping.wait(self.opts.interval_s)
                continue
            wake = mono_ns()
            self.stats.wakeups += 1
            self.report(data, wake, {"eagain_before": misses})
            misses = 0


class _ReadinessPath(NotificationPath):
    """poll/select/epoll: wait for readiness, then read (once, or until EAGAIN)."""

    summarizable = True

    def wait(self) -> int | None:
        """Return the readiness mask for the device fd, or None when stopping."""
        raise NotImplementedError

    def loop(self) -> None:
        while not self.stopping.is_set():
            mask = self.wait()
            if mask is None:
                return
            wake = mono_ns()
            self.stats.wakeups += 1
            extra = {"revents": mask}
            if self.opts.drain:
                got = self.drain(wake, extra)
            else:
                data = self.read_once()
                got = self.report(data, wake, extra) if data is not None else 0
            if got == 0:
                self.stats.spurious += 1
                if mask & (select.POLLERR | select.POLLHUP | select.POLLNVAL):
                    # The device went away: read once more to learn the errno.
                    os.read(self.fd, self.record_size)
                    raise OSError(0, f"poll reported revents={mask:#x}")


class PollPath(_ReadinessPath):
    kind = "poll"

    def wait(self) -> int | None:
        p = select.poll()
        p.register(self.fd, select.POLLIN | select.POLLRDNORM)
        p.register(self._wake_r, select.POLLIN)
        while True:
            for fd, ev in p.poll():
                if fd == self._wake_r or self.stopping.is_set():
                    return None
                return ev


class SelectPath(_ReadinessPath):
    kind = "select"

    def wait(self) -> int | None:
        r, _, x = select.select([self.fd, self._wake_r], [], [self.fd])
        if self._wake_r in r or self.stopping.is_set():
            return None
        return (select.POLLIN if self.fd in r else 0) | (select.POLLPRI if self.fd in x else 0)


class EpollPath(_ReadinessPath):
    kind = "epoll-lt"
    edge: ClassVar[bool] = False

    def setup(self) -> None:
        self._ep = select.epoll(flags=select.EPOLL_CLOEXEC)
        flags = select.EPOLLIN | select.EPOLLRDNORM | (select.EPOLLET if self.edge else 0)
        try:
            self._ep.register(self.fd, flags)
            self._ep.register(self._wake_r, select.EPOLLIN)
        except BaseException:
            self._ep.close()  # arm() closes the rest
            raise
        if self.edge:
            self.opts.drain = True

    def teardown(self) -> None:
        self._ep.close()

    def wait(self) -> int | None:
        while True:
            for fd, ev in self._ep.poll():
                if fd == self._wake_r or self.stopping.is_set():
                    return None
                return ev


class EpollEtPath(EpollPath):
    kind = "epoll-et"
    edge = True


class AsyncPath(NotificationPath):
    """SIGIO (F_SETOWN + FASYNC); with ``signo`` set also F_SETSIG (queued RT signal).

    Signals are blocked in every thread and read by the agent's single signalfd
    dispatcher, which hands them to the path by ``si_fd`` (plain SIGIO carries no
    fd and goes to every async path).  The dispatcher's thread does the path's work
    itself (:meth:`deliver`: read, ACK, report), with no hand-off to another thread
    that would wait for the interpreter lock; the path's own thread only reports an
    error that work met (as every path does: a ``path_error``, then the path ends).
    """

    kind = "sigio"
    summarizable = True

    def __init__(self, name: str, abi: Abi, opts: PathOptions, emit: Emit) -> None:
        super().__init__(name, abi, opts, emit)
        self.failures: queue.SimpleQueue[Exception | None] = queue.SimpleQueue()
        self._work = threading.Lock()  # held by a delivery; stop() waits for it
        self._failed = False
        self._work_cpu_ns = 0  # CPU time the deliveries took in the dispatcher's thread
        self._fallback_took = False  # a sigio_fallback drain read records since the last signal

    def setup(self) -> None:
        fcntl.fcntl(self.fd, fcntl.F_SETOWN, os.getpid())
        if self.opts.signo:
            fcntl.fcntl(self.fd, fcntl.F_SETSIG, self.opts.signo)
        fl = fcntl.fcntl(self.fd, fcntl.F_GETFL)
        fcntl.fcntl(self.fd, fcntl.F_SETFL, fl | os.O_ASYNC)

    def teardown(self) -> None:
        if self.fd >= 0:
            fl = fcntl.fcntl(self.fd, fcntl.F_GETFL)
            fcntl.fcntl(self.fd, fcntl.F_SETFL, fl & ~os.O_ASYNC)

    def deliver(self, info: SigInfo) -> None:
        """Called by the signal dispatcher: read until EAGAIN, ACKing and reporting.

        A plain SIGIO handed to an F_SETSIG path (it carries no fd: it may be another
        path's, or the kernel's fallback for a full RT signal queue) still drains the
        file, but counts as ``sigio_fallback``, never as a signal, wake-up or spurious
        one: the path's ``signals`` are its own RT signals alone."""
        with self._work:
            if self.stopping.is_set() or self._failed:
                return
            wake = mono_ns()
            cpu0 = time.thread_time_ns()
            fallback = bool(self.opts.signo) and info.signo != self.opts.signo
            if fallback:
                self.stats.sigio_fallback += 1
            else:
                self.stats.signals += 1
                self.stats.wakeups += 1
            try:
                n = self.drain(wake, {"signal": info.as_json()})
                if fallback:
                    self._fallback_took = self._fallback_took or n > 0
                elif n == 0 and not self._fallback_took:
                    self.stats.spurious += 1
                else:
                    self._fallback_took = False  # its records went with a fallback drain
            except Exception as e:  # an OSError, or a bug such as a torn record (ValueError)
                self._failed = True
                self.failures.put(e)  # the path's thread reports it and ends; the
                # dispatcher goes on serving the other async paths
            finally:
                self._work_cpu_ns += time.thread_time_ns() - cpu0

    def stop(self, timeout: float = 5.0) -> None:
        self.stopping.set()  # deliveries return at once from now on
        self.failures.put(None)
        # One in progress finishes before the file closes; one stuck (a host that stopped
        # reading the reports) does not keep the path armed: its read then fails.
        finishing = self._work.acquire(timeout=timeout)
        try:
            super().stop(timeout)
        finally:
            if finishing:
                self._work.release()

    def run(self) -> None:
        super().run()
        if self.stats.cpu_ns is not None:
            self.stats.cpu_ns += self._work_cpu_ns

    def loop(self) -> None:
        error = self.failures.get()
        if error is not None and not self.stopping.is_set():
            raise error


class SetsigPath(AsyncPath):
    kind = "setsig"
    options = AsyncPath.options | {"sig"}


class CountPath(NotificationPath):
    """The counting interrupt file: read returns a u32, interrupts since the last read."""

    kind = "count"
    records = False  # the counting file: a u32 per read, no GET_INFO
    stopped_by_signal = True
    waits_in_read = True
    open_nonblock = False
    options = NotificationPath.options | {"ack_first_seq"}
    acker: SeqAcker | None = None

    def setup(self) -> None:
        # With ack_dev/ack_first_seq: ACK the newest event each count includes.
        self.acker = SeqAcker.from_params(self.abi, self.opts.params)

    def teardown(self) -> None:
        if self.acker is not None:
            self.acker.close()

    def loop(self) -> None:
        for data, wake in self.wake_reads(COUNT_FMT.size):
            if len(data) != COUNT_FMT.size:
                raise OSError(0, f"count read returned {len(data)} bytes")
            (count,) = COUNT_FMT.unpack(data)
            self.stats.events += 1
            self.stats.counted += count
            ev: dict[str, Any] = {"type": "event", "path": self.path_name, "count": count}
            if self.acker is not None:  # every event the count includes, oldest first
                first = self.stats.counted - count + 1
                acks, errors = self.acker.counts()
                ev["ack_latency_ns"] = [self.acker.ack_nth(k) for k in range(first, first + count)]
                now_acks, now_errors = self.acker.counts()  # a refused ACK is an error
                self.stats.acks += now_acks - acks
                self.stats.ack_errors += now_errors - errors
            ev["wake_ns"] = wake
            self.emit(ev)


class EventfdPath(NotificationPath):
    """The driver signals an eventfd we hand it (SET_EVENTFD); then we read the records."""

    kind = "eventfd"
    summarizable = True

    def setup(self) -> None:
        self.efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        try:
            self.abi.ioctl("SET_EVENTFD").call(self.fd, self.efd)
        except BaseException:
            os.close(self.efd)
            raise

    def teardown(self) -> None:
        with contextlib.suppress(OSError, KeyError):
            if self.fd >= 0:
                self.abi.ioctl("SET_EVENTFD").call(self.fd, -1)
        with contextlib.suppress(OSError):
            os.close(self.efd)

    def loop(self) -> None:
        while not self.stopping.is_set():
            if not self.wait_readable(self.efd):
                return
            wake = mono_ns()
            try:
                count = os.eventfd_read(self.efd)
            except BlockingIOError:
                self.stats.spurious += 1
                continue
            self.stats.wakeups += 1
            if self.drain(wake, {"eventfd_count": count}) == 0:
                self.stats.spurious += 1


PATH_KINDS: dict[str, type[NotificationPath]] = {
    cls.kind: cls
    for cls in (
        ReadPath,
        NonblockPath,
        PollPath,
        SelectPath,
        EpollPath,
        EpollEtPath,
        AsyncPath,
        SetsigPath,
        CountPath,
        EventfdPath,
    )
}
