"""Host side of the guest agent protocol (see ``irqlab_agent.protocol``).

:class:`AgentClient` talks to one agent process over any pair of byte streams:
an SSH channel in a guest (:func:`start_over_ssh`) or a local subprocess
(:meth:`AgentClient.spawn_local`, used by the unit tests with pipes/FIFOs
standing in for the device).  A reader thread sorts the agent's output into
responses (matched by ``id``) and events (kept in arrival order); tests take
events with :meth:`next_event`, :meth:`events` and :meth:`expect`, all with
timeouts.  The raw JSON streams and the agent's stderr go to log files under
:func:`irqlab.paths.log_dir`.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

from irqlab import notice
from irqlab.contract import uapi
from irqlab.errors import IrqlabError, hide_frame
from irqlab.paths import log_dir
from irqlab.vm.health import Fault, GuestFault
from irqlab.vm.loadscale import check_timeout
from irqlab.vm.logfile import LogFile
from irqlab_agent.protocol import COUNT_DEVICE, DEVICE, MAX_LINE

__tracebackhide__ = hide_frame  # pytest: an IrqlabError's traceback leaves these frames out

__all__ = [
    "AGENT_PACKAGE_DIR",
    "COUNT_DEVICE",
    "DEVICE",
    "AgentClient",
    "AgentError",
    "AgentFault",
    "AgentRefused",
    "AgentTimeout",
    "RequestTooLong",
    "orphan_notice",
    "request_timeout",
    "stage_agent",
]

Event = dict[str, Any]
_T = TypeVar("_T")

AGENT_PACKAGE_DIR = Path(__file__).resolve().parents[2] / "irqlab_agent"


# What a request's answer may take beyond the wait the request itself asks of the agent
REQUEST_TIMEOUT = 30.0
# The request arguments that make the agent wait: seconds per unit, and the agent's
# longest (irqlab_agent's agent.MAX_WAIT_MS and native.MAX_WAIT_S: a unit test compares;
# a longer or malformed one the agent refuses at once)
WAIT_ARGS = {"wait_ms": (1e-3, 60.0), "timeout_ms": (1e-3, 60.0), "wait_s": (1.0, 3600.0)}
# The agent's own wait, in seconds, of an op that waits when its request names none
DEFAULT_WAITS = {"read": 10.0, "wait_blocked": 10.0, "interrupt": 10.0, "native_wait": 60.0}


def request_timeout(op: str, args: Mapping[str, Any]) -> float:
    """How long :meth:`AgentClient.request` waits for the answer by default:
    :data:`REQUEST_TIMEOUT` plus the wait the request asks of the agent (its
    ``wait_ms``, ``timeout_ms`` or ``wait_s``, else the op's default wait)."""
    wait = DEFAULT_WAITS.get(op, 0.0)
    for key, (unit, most) in WAIT_ARGS.items():
        v = args.get(key)
        if isinstance(v, int | float) and not isinstance(v, bool) and v >= 0:  # not NaN
            wait = v * unit if v <= most / unit else most  # a huge int: no float overflow
    return REQUEST_TIMEOUT + wait


CLOCK_SAMPLES = 8  # heartbeats (1 s apart) that guest_now_ns reads the offset from

# the fields a message is told by, first in its summary (a long message is cut at the end)
KEY_FIELDS = ("type", "path", "seq", "value", "count", "errno", "error")
SUMMARY_CHARS = 240
REQUEST_SUMMARY_CHARS = 160  # of a request, in its timeout's message


def describe_request(op: str, args: Mapping[str, Any]) -> str:
    """A request in short, for the errors of its wait: its op, then its arguments as
    ``key=value``, the ones that name what it works on (``name``: a handle or path,
    ``dev``, ``path``) first, cut to about :data:`REQUEST_SUMMARY_CHARS` characters
    (e.g. ``op 'read', name='h', as='raw', size=4, wait_ms=1000``)."""
    first = [k for k in ("name", "dev", "path") if k in args]
    keys = first + [k for k in args if k not in first]
    text = ", ".join([f"op {op!r}", *(f"{k}={args[k]!r}" for k in keys)])
    return text if len(text) <= REQUEST_SUMMARY_CHARS else text[:REQUEST_SUMMARY_CHARS] + " ..."


def summarize_message(msg: Event) -> str:
    """*msg* as JSON with its :data:`KEY_FIELDS` first, cut to about
    :data:`SUMMARY_CHARS` characters (the fields a test asks for survive the cut)."""
    ordered = {k: msg[k] for k in KEY_FIELDS if k in msg}
    ordered.update((k, msg[k]) for k in sorted(msg) if k not in ordered)
    text = json.dumps(ordered)
    return text if len(text) <= SUMMARY_CHARS else text[:SUMMARY_CHARS] + " ...}"


def criteria_hints(crit: Mapping[str, Any], queued: Sequence[Event]) -> list[str]:
    """Why *crit* may never match what is queued of its type: a field none of them has
    (a misspelt name), or a value of another type than theirs (``seq="2"``)."""
    if not queued:
        return []
    hints = []
    for k, v in crit.items():
        if k == "type":
            continue
        seen = {type(e[k]).__name__ for e in queued if k in e}
        if not seen:
            hints.append(f"no queued message of its type has a field {k!r}")
        elif type(v).__name__ not in seen:
            hints.append(
                f"{k}={v!r} is a {type(v).__name__}; the queued messages' {k} is "
                + " or ".join(sorted(seen))
            )
    return hints


def orphan_notice(guest: str, reply: Mapping[str, Any]) -> str | None:
    """The line the user is told after a ``reset`` (or ``close``) of *guest*'s agent
    answered *reply*: the reads the agent left in drivers (state D, no signal ends them)
    whose handles are closed now, still blocked there (``orphans``: they take the next
    data their driver hands a reader, a later test's), and what those that returned
    since got (``orphan_data``); None when there are none."""
    parts = []
    orphans = reply.get("orphans")
    if isinstance(orphans, list) and orphans:
        which = "; ".join(
            f"request {o.get('request')} (handle {o.get('handle')!r} of {o.get('dev')}, "
            f"{o.get('in_driver_s')} s in the driver: {o.get('where')})"
            for o in orphans
            if isinstance(o, dict)
        )
        parts.append(
            f"{len(orphans)} read(2) left in the driver by closed handles still blocked "
            f"uninterruptibly: {which}; the next data its driver hands a reader may go to "
            "them, not to a later test's read (nothing can end them; their data is told "
            "when they return)"
        )
    data = reply.get("orphan_data")
    if isinstance(data, list) and data:
        got = "; ".join(
            f"request {d.get('request')} (handle {d.get('handle')!r} of {d.get('dev')}) got "
            + (
                f"{d.get('nbytes')} bytes {str(d.get('hex', ''))[:64]}"
                if d.get("errno") is None
                else f"errno {d.get('errno')}"
            )
            for d in data
            if isinstance(d, dict)
        )
        parts.append(f"reads left in the driver by closed handles returned: {got}")
    if not parts:
        return None
    return f"irqlab: {guest}: " + "; ".join(parts)


def _refusal(resp: Mapping[str, Any]) -> str:
    """Why the agent refused a request, as its answer says: its ``error``, and the
    operations it has when it names them (an unknown op's answer: ``ops``)."""
    ops = resp.get("ops")
    known = ", ".join(str(o) for o in ops) if isinstance(ops, list) and ops else ""
    return str(resp.get("error")) + (f" (the agent's ops: {known})" if known else "")


class AgentError(IrqlabError, RuntimeError):
    """The agent refused a request, died, or said something unexpected."""

    def __init__(self, message: str, response: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.response = dict(response) if response is not None else None


class AgentTimeout(AgentError, TimeoutError):
    """Nothing the wait asked for came within its timeout: a request's answer, or a
    message :meth:`AgentClient.expect`/:meth:`~AgentClient.events` waited for; the
    message names the wait, a ``path=`` no armed path is named, and what is queued."""


class AgentRefused(AgentError):
    """The agent answered a request, refusing it (``ok`` false: an unknown op or path,
    an option it does not take, a path not in the state asked for): its words, and
    :attr:`response`.  ``except AgentRefused`` tells it from a guest that died
    (:class:`AgentFault`) or an answer that did not come (:class:`AgentTimeout`), which
    ``except AgentError`` catches too."""


class RequestTooLong(AgentError, ValueError):
    """A request whose line the agent would not read (longer than its MAX_LINE),
    refused before it is sent: the agent's refusal of it names no id (it never parsed
    one), so no wait would take it and the request's ran its whole time."""


class AgentFault(AgentError, GuestFault):
    """The agent's session ended because the guest died or froze: a
    :class:`~irqlab.vm.health.GuestFault` (``except GuestFault`` catches a wait that was
    in progress as it catches every later call) and an :class:`AgentError` (as before);
    :attr:`fault` is the health watch's verdict."""

    def __init__(self, message: str, fault: Fault) -> None:
        RuntimeError.__init__(self, message)  # not the bases' own: the message is made
        self.response = None
        self.fault = fault
        if fault.log_dir:  # as every GuestFault
            self.add_note(f"logs: {fault.log_dir}")


def _check_length(op: str, line: bytes) -> None:
    """Refuse request *line* of *op* when, with its newline, it is longer than the
    agent reads (:class:`RequestTooLong`, naming both sizes)."""
    size = len(line) + 1  # the newline that send_raw adds
    if size > MAX_LINE:
        raise RequestTooLong(
            f"agent op {op!r}: the request is {size} bytes as a line, longer than the "
            f"agent reads ({MAX_LINE} bytes); nothing was sent"
        )


CLOSED = "this agent session is closed (a running guest's is g.agent)"


def stage_agent(dest: Path) -> Path:
    """Lay out everything the guest needs to run ``python3 -m irqlab_agent`` in *dest*.

    ``dest/irqlab_agent/`` gets the agent package and ``abi.json``, the ABI artifact
    (:func:`irqlab.contract.uapi.abi_json` of the uapi header), so the agent decodes
    records with the header's layout without retyping it or parsing it.
    Run it in the guest with ``PYTHONPATH=<dest> python3 -m irqlab_agent``.
    Returns *dest* (usable as the image recipe's ``agent_dir``).
    """
    pkg = dest / "irqlab_agent"
    if pkg.exists():
        shutil.rmtree(pkg)
    shutil.copytree(AGENT_PACKAGE_DIR, pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (pkg / "abi.json").write_text(uapi.abi_json(uapi.header_path()))
    return dest


class AgentClient:
    """Requests/responses and an event stream over the agent's stdin/stdout."""

    def __init__(
        self,
        stdin: IO[bytes],
        stdout: IO[bytes],
        stderr: IO[bytes] | None = None,
        *,
        name: str = "agent",
        logs: Path | None = None,
        on_close: Callable[[], None] | None = None,
        diagnose: Callable[[], Fault | None] | None = None,
        link_lost: Callable[[], str | None] | None = None,
        frozen: Callable[[], Fault | None] | None = None,
    ) -> None:
        self._stdin = stdin
        self.label = name  # who it is in its notices (a guest's: "the guest 'e2e'")
        self._stdout = stdout
        self._stderr = stderr
        self._on_close = on_close
        # Why the agent's end went away, when someone knows better than "end of output"
        # (a guest health watch: "guest kernel panic ..."); first line of the error.
        self._diagnose = diagnose
        # Whether the end of output was the connection's, not the agent's: what closed
        # (an SSH forward that ended with its SSH connection, the agent alive), or None
        self._link_lost = link_lost
        # Asked when a wait times out: the guest's fault if it froze meanwhile (its
        # verdict awaited), else None (the wait's own timeout is the story)
        self._frozen = frozen
        self.last_heartbeat: float | None = None  # host monotonic time of the last one
        # host CLOCK_MONOTONIC minus the guest's at each of the last heartbeats (ns): the
        # least is the two clocks' offset plus the quickest delivery (guest_now_ns)
        self._clock_offsets: deque[int] = deque(maxlen=CLOCK_SAMPLES)
        self._cond = threading.Condition()
        self._responses: dict[int, dict[str, Any]] = {}
        self._backlog: deque[Event] = deque()
        self._next_id = 1
        self._send_lock = threading.Lock()
        # the agent's hello message, once it came (the hello property's; None before)
        self.hello_message: dict[str, Any] | None = None
        self.fatal: str | None = None
        self.eof = False
        # why the session was given up with the agent still there (abandon()): it
        # stopped answering while the guest still does
        self.abandoned: str | None = None
        # a request whose wait was ended from outside (Ctrl-C, pytest-timeout's Failed):
        # the agent still works on it, and would answer the next only after it
        self.interrupted: str | None = None
        self.closed = False  # close() was called: requests are refused
        self.stderr_tail: deque[str] = deque(maxlen=50)
        logs = logs if logs is not None else log_dir()
        logs.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.log_base = logs / f"{name}-{stamp}"
        # a full disk stops a log, never the session (it read as the agent's end)
        self._rx_log = LogFile(f"{self.log_base}.rx.jsonl")
        self._tx_log = LogFile(f"{self.log_base}.tx.jsonl")
        self._err_log = LogFile(f"{self.log_base}.stderr.log")
        self._reader = threading.Thread(target=self._read_loop, name=f"{name}-rx", daemon=True)
        self._reader.start()
        self._err_reader: threading.Thread | None = None
        if stderr is not None:
            self._err_reader = threading.Thread(
                target=self._stderr_loop, name=f"{name}-stderr", daemon=True
            )
            self._err_reader.start()

    # -- construction -------------------------------------------------------------
    @classmethod
    def spawn_local(
        cls,
        args: list[str],
        *,
        env: Mapping[str, str] | None = None,
        name: str = "agent-local",
        logs: Path | None = None,
    ) -> AgentClient:
        """Run ``python -m irqlab_agent <args>`` here (tests use FIFOs as devices)."""
        proc = subprocess.Popen(
            [sys.executable, "-m", "irqlab_agent", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env) if env is not None else None,
        )
        assert proc.stdin and proc.stdout and proc.stderr

        def _close() -> None:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

        client = cls(proc.stdin, proc.stdout, proc.stderr, name=name, logs=logs, on_close=_close)
        client.process = proc
        return client

    process: subprocess.Popen[bytes] | None = None

    # -- reader threads -----------------------------------------------------------
    def _read_loop(self) -> None:
        try:
            for line in self._stdout:
                self._rx_log.write(line if line.endswith(b"\n") else line + b"\n")
                try:
                    msg = json.loads(line)
                except ValueError:
                    msg = {"type": "garbage", "line": line.decode(errors="replace")}
                if not isinstance(msg, dict):
                    msg = {"type": "garbage", "line": line.decode(errors="replace")}
                with self._cond:
                    if "id" in msg and "type" not in msg:
                        rid = msg["id"]
                        self._responses[rid if isinstance(rid, int) else -1] = msg
                    elif msg.get("type") == "hello":
                        self.hello_message = msg
                        if isinstance(msg.get("monotonic_ns"), int):  # the first stamp
                            self._clock_offsets.append(time.monotonic_ns() - msg["monotonic_ns"])
                    elif msg.get("type") == "heartbeat":
                        self.last_heartbeat = time.monotonic()
                        sent = msg.get("monotonic_ns")
                        if isinstance(sent, int):
                            self._clock_offsets.append(time.monotonic_ns() - sent)
                    else:
                        if msg.get("type") == "fatal":
                            self.fatal = str(msg.get("error"))
                        self._backlog.append(msg)
                    self._cond.notify_all()
        except (OSError, ValueError):
            pass
        finally:
            with self._cond:
                self.eof = True
                self._cond.notify_all()

    def _stderr_loop(self) -> None:
        assert self._stderr is not None
        with contextlib.suppress(OSError, ValueError):
            for line in self._stderr:
                self._err_log.write(line)
                self.stderr_tail.append(line.decode(errors="replace").rstrip("\n"))

    def _gone(self, doing: str) -> AgentError:
        """The error for an agent whose end went away (see :meth:`_dead`):
        :class:`AgentFault` when the guest's fault is known."""
        if self.abandoned is not None:  # the guest answers: no verdict to wait for
            return AgentError(f"{self.abandoned} ({doing}); logs {self.log_base}.*")
        fault = self._diagnose() if self._diagnose is not None else None
        text = self._dead(doing, fault)
        return AgentFault(text, fault) if fault is not None else AgentError(text)

    def _dead(self, doing: str, fault: Fault | None = None) -> str:
        """Why the agent's end went away, *doing* (what we were at) on the first line:
        the guest's fault when one is known (then the agent did nothing wrong), else
        the connection to the agent when that closed under it, else the agent's exit;
        then where its logs are and its last words."""
        cause = fault.describe() if fault is not None else None
        lost = self._link_lost() if self._link_lost is not None and not cause else None
        if self.fatal:
            what = f"agent exited (fatal: {self.fatal})"
        elif cause:
            what = "the agent's session ended with it"
        elif lost:
            what = f"the connection to the agent closed: {lost}"
        else:
            what = "agent exited (end of output)"
        tail = "\n".join(self.stderr_tail)
        where = f"logs {self.log_base}.*" + (f"; stderr tail:\n{tail}" if tail else "")
        if cause:  # *doing* on the cause's line, not after the console's tail below it
            first, _, rest = cause.partition("\n")
            return f"{first} ({doing})" + (f"\n{rest}" if rest else "") + f"\n({what}; {where})"
        return f"{what} ({doing}); {where}"

    def _wait(self, pred: Callable[[], bool], timeout: float, what: str) -> None:
        """Until *pred* holds, asked whenever a message came, for *timeout* s.  A session
        given up (:meth:`abandon`) raises before *pred* is asked: what the agent said,
        before or after, no wait hands out, however soon it came."""
        __tracebackhide__ = hide_frame
        check_timeout(timeout, zero=True)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if self.abandoned is not None:
                    raise self._gone(f"waiting for {what}")
                if pred():
                    return
                if self.closed:  # what came before it closed is still there (pred)
                    raise AgentError(f"{CLOSED}: waiting for {what}")
                if self.eof:
                    raise self._gone(f"waiting for {what}")
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    self._cond.wait(left)
                except KeyboardInterrupt as e:  # Ctrl-C: the plugin's line names the wait
                    e.add_note(f"interrupted waiting for the agent's {what}")
                    raise
        # a guest that froze meanwhile is named, not the timeout (asked out of the lock:
        # the reader goes on taking heartbeats)
        fault = self._frozen() if self._frozen is not None else None
        if fault is not None:
            raise AgentFault(self._dead(f"waiting for {what}", fault), fault)
        if self.abandoned is not None:  # the watch's verdict on the agent alone came
            raise self._gone(f"waiting for {what}")  # meanwhile: it, not a timeout
        raise AgentTimeout(f"timeout ({timeout:g}s) waiting for {what}")

    def _take(self, take: Callable[[], _T | None], timeout: float, what: str) -> _T:
        """What *take* returns once it returns something, waited for as :meth:`_wait`
        waits.  *take* runs under the lock that the reader appends under: the check and
        the take are one step, so two threads waiting for one message never both see
        it (the one that lost had an IndexError after its wait)."""
        __tracebackhide__ = hide_frame
        got: list[_T] = []

        def pred() -> bool:
            item = take()
            if item is None:
                return False
            got.append(item)
            return True

        self._wait(pred, timeout, what)
        return got[0]

    # -- requests -------------------------------------------------------------------
    def __repr__(self) -> str:
        """``<AgentClient session open, agent pid 128, 2 messages queued>``, or closed,
        ended (the agent's output ended), given up (and why); a print of ``g.agent``
        said only ``<irqlab.vm.agent_client.AgentClient object at 0x...>``."""
        if self.closed:
            state = "closed"
        elif self.abandoned is not None:
            state = f"given up: {self.abandoned}"
        elif self.eof:
            state = "ended" + (f": {self.fatal}" if self.fatal is not None else "")
        else:
            state = "open"
        hello = self.hello_message
        pid = f", agent pid {hello['pid']}" if hello is not None and "pid" in hello else ""
        with self._cond:
            queued = len(self._backlog)
        return f"<AgentClient session {state}{pid}, {queued} messages queued>"

    @property
    def hello(self) -> dict[str, Any]:
        """The agent's hello: its ``paths`` (each with ``summarizable``,
        ``device_events``), ``abi``, ``version``, ``pid``, ...  A session a guest hands
        out (``g.agent``) has it; before it came, :class:`AgentError` (use
        :meth:`wait_hello`).  It was typed ``dict | None``: ``agent.hello["paths"]``, the
        README's, failed ``mypy --strict``."""
        hello = self.hello_message
        if hello is None:
            raise AgentError(
                "the agent has not said hello yet"
                + (f" (it failed: {self.fatal})" if self.fatal is not None else "")
                + ": wait_hello() waits for it"
            )
        return hello

    def wait_hello(self, timeout: float = 30.0) -> dict[str, Any]:
        """Wait up to *timeout* s for the agent's hello and return it (:attr:`hello`);
        :class:`AgentError` if the agent failed to start, :class:`AgentTimeout` if it
        said nothing in time."""
        self._wait(
            lambda: self.hello_message is not None or self.fatal is not None, timeout, "hello"
        )
        if self.fatal is not None:
            raise AgentError(f"agent failed to start: {self.fatal}")
        return self.hello

    def send_raw(self, line: bytes) -> None:
        """Write one raw line (tests use it to send malformed requests)."""
        __tracebackhide__ = hide_frame
        if self.closed:  # its logs are closed too: that was a ValueError
            raise AgentError(CLOSED)
        if self.abandoned is not None:  # a stopped agent that goes on would still do it
            raise self._gone("nothing sent to it")
        with self._send_lock:
            self._tx_log.write(line if line.endswith(b"\n") else line + b"\n")
            try:
                self._stdin.write(line if line.endswith(b"\n") else line + b"\n")
                self._stdin.flush()
            except (OSError, ValueError, EOFError) as e:  # the agent's end is gone
                raise self._gone(f"cannot send to the agent: {e}") from e

    def submit(self, op: str, **args: Any) -> int:
        """Send the request ``{"op": op, **args}`` without waiting; its id, for
        :meth:`response` (several requests in flight; :meth:`request` sends and waits)."""
        __tracebackhide__ = hide_frame
        with self._send_lock:
            rid = self._next_id
            self._next_id += 1
        line = json.dumps({"id": rid, "op": op, **args}).encode()
        _check_length(op, line)
        self.send_raw(line)
        return rid

    def response(self, rid: int, timeout: float = 30.0) -> dict[str, Any]:
        """The answer to the request :meth:`submit` sent as *rid*, waiting up to
        *timeout* s (:class:`AgentTimeout`); returned as it is, ``ok`` false too."""
        __tracebackhide__ = hide_frame
        try:
            return self._take(
                lambda: self._responses.pop(rid, None), timeout, f"response to request {rid}"
            )
        except BaseException as e:
            if not isinstance(e, Exception) and self.interrupted is None:  # see request()
                self.interrupted = f"request {rid} was interrupted ({type(e).__name__})"
            raise

    def request(
        self, op: str, *, timeout: float | None = None, check: bool = True, **args: Any
    ) -> dict[str, Any]:
        """Send ``{"op": op, **args}``; return the response (raise if not ok and *check*).
        *timeout*: seconds to wait for it; ``None``: :func:`request_timeout` (30 s plus
        the request's own ``wait_ms``, ``timeout_ms`` or ``wait_s``)."""
        __tracebackhide__ = hide_frame
        if timeout is not None:  # before it is sent: its answer was left to no one
            check_timeout(timeout, zero=True)
        try:
            rid = self.submit(op, **args)  # (a line cut short by it is as bad)
            resp = self.response(rid, request_timeout(op, args) if timeout is None else timeout)
        except AgentTimeout as e:  # which request, and on what (a handle's name)
            raise AgentTimeout(f"{e} ({describe_request(op, args)})") from None
        except BaseException as e:
            if not isinstance(e, Exception):  # its own errors are no interruption
                self.interrupted = f"request {op!r} was interrupted ({type(e).__name__})"
            raise
        if check and not resp.get("ok"):
            raise AgentRefused(f"agent op {op!r} {args} failed: {_refusal(resp)}", resp)
        return resp

    def ping(self, timeout: float = 10.0) -> dict[str, Any]:
        """A round trip to the agent (``{"pong": True, ...}``) within *timeout* s."""
        __tracebackhide__ = hide_frame
        return self.request("ping", timeout=timeout)

    def arm(self, path: str, *, dev: str | None = None, **opts: Any) -> dict[str, Any]:
        """Arm notification *path* (read, nonblock, poll, select, epoll-lt, epoll-et,
        sigio, setsig, count, eventfd, gpio-cdev, uio, ...) on *dev* (default: our
        driver's device, :data:`DEVICE`; for ``count`` its counting file,
        :data:`COUNT_DEVICE`: ``arm("count")`` on the device itself got EINVAL, which
        said nothing of the file it needs); its events then come as messages
        (:meth:`next_event`, :meth:`expect`).  *opts*: ``op_arm``'s
        (harness/irqlab_agent/agent.py), e.g. ``name``, ``batch``, ``ack``."""
        __tracebackhide__ = hide_frame
        if dev is None:
            dev = COUNT_DEVICE if path == "count" else DEVICE
        return self.request("arm", path=path, dev=dev, **opts)

    def disarm(self, name: str | None = None, *, timeout: float = 30.0) -> dict[str, Any]:
        """Disarm the path *name* (default: every one); their final statistics by name."""
        __tracebackhide__ = hide_frame
        args: dict[str, Any] = {"name": name} if name is not None else {}
        paths: dict[str, Any] = self.request("disarm", timeout=timeout, **args)["paths"]
        return paths

    def stats(self, dev: str | None = None) -> dict[str, Any]:
        """The armed paths' statistics (events, reads, wake-ups, ACKs, ...) and, with
        *dev*, the driver's for that device file."""
        __tracebackhide__ = hide_frame
        args: dict[str, Any] = {"dev": dev} if dev is not None else {}
        return self.request("stats", **args)

    def reset(self, dev: str | None = None) -> dict[str, Any]:
        """Disarm all paths and close all handles (per-test cleanup); the reply's
        ``paths``, ``monotonic_ns`` (the guest time it began), and with *dev* also
        ``present``: that character device exists.  Reads the agent left in drivers
        (state D) whose handles it closed are named in ``orphans`` and what they got
        once they returned in ``orphan_data``, and said on the terminal
        (:func:`orphan_notice`, :func:`irqlab.notice.say`): a module-scoped guest's next
        test would have lost its data silently."""
        __tracebackhide__ = hide_frame
        args: dict[str, Any] = {"dev": dev} if dev is not None else {}
        reply = self.request("reset", timeout=60.0, **args)
        said = orphan_notice(self.label, reply)
        if said is not None:
            notice.say(said)
        return reply

    # -- events -----------------------------------------------------------------------
    def next_event(self, timeout: float = 10.0) -> Event:
        """The next message from the agent, whatever its type (0: only one queued
        already); :class:`AgentTimeout` when none comes within *timeout* s."""
        __tracebackhide__ = hide_frame
        return self._take(
            lambda: self._backlog.popleft() if self._backlog else None, timeout, "an event"
        )

    def events(
        self,
        n: int,
        timeout: float = 30.0,
        *,
        path: str | None = None,
        type: str = "event",
        idle: float | None = None,
    ) -> list[Event]:
        """The next *n* messages of *type* (and *path*), within *timeout* for all of them
        and, if *idle* is given, with no gap longer than *idle* seconds between two."""
        __tracebackhide__ = hide_frame
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"events: n must be a count >= 0, not {n!r}")
        check_timeout(timeout, zero=True)
        deadline = time.monotonic() + timeout
        out: list[Event] = []
        while len(out) < n:
            left = max(deadline - time.monotonic(), 0.0)
            wait = min(left, idle) if idle is not None else left
            try:
                out.append(self.expect(path=path, type=type, timeout=wait))
            except AgentTimeout:
                gap = f", at most {idle:g}s between two" if idle is not None else ""
                last = summarize_message(out[-1]) if out else "none"
                unarmed = "".join(f" ({h})" for h in self._unarmed(path))
                raise AgentTimeout(
                    f"got {len(out)} of {n} {type} messages"
                    f"{' on ' + path if path else ''} (timeout {timeout:g}s{gap}){unarmed}; "
                    f"last: {last}; pending: {self.pending_summary()}"
                ) from None
        return out

    def _unarmed(self, path: str | None) -> list[str]:
        """After a wait for *path*'s messages timed out: that no path of that name is
        armed (asked of the agent), if so; a forgotten ``arm`` or a misspelt name was
        only "no message matching {...}"."""
        if path is None:
            return []
        try:
            armed = sorted(self.request("stats", timeout=5.0)["paths"])
        except AgentError:  # gone or slow: the timeout's own message says enough
            return []
        return [] if path in armed else [f"no path named {path!r} is armed; armed: {armed}"]

    def expect(
        self,
        *,
        path: str | None = None,
        seq: int | None = None,
        type: str | tuple[str, ...] = "event",
        timeout: float = 10.0,
        **match: Any,
    ) -> Event:
        """The first message matching all criteria (*type*: one, or a tuple of types);
        others stay queued in order."""
        __tracebackhide__ = hide_frame
        types = (type,) if isinstance(type, str) else type
        crit: dict[str, Any] = {"type": type, **match}
        if path is not None:
            crit["path"] = path
        if seq is not None:
            crit["seq"] = seq

        def take() -> Event | None:
            for i, ev in enumerate(self._backlog):
                if ev.get("type") in types and all(
                    ev.get(k) == v for k, v in crit.items() if k != "type"
                ):
                    del self._backlog[i]
                    return ev
            return None

        try:
            return self._take(take, timeout, f"message {crit}")
        except AgentTimeout:
            hints = criteria_hints(crit, [e for e in self.pending() if e.get("type") in types])
            hints += self._unarmed(path)
            raise AgentTimeout(
                f"no message matching {crit} within {timeout:g}s"
                + "".join(f" ({h})" for h in hints)
                + f"; pending: {self.pending_summary()}"
            ) from None

    def guest_now_ns(self) -> int | None:
        """The guest's CLOCK_MONOTONIC now (ns), from the heartbeats' stamps and when they
        arrived, without asking the guest: early by at most the quickest delivery of the
        last :data:`CLOCK_SAMPLES` (never late); None before a heartbeat came."""
        with self._cond:
            least = min(self._clock_offsets, default=None)
        return None if least is None else time.monotonic_ns() - least

    def pending(self) -> list[Event]:
        """The messages queued and not taken yet (a copy; they stay queued)."""
        with self._cond:
            return list(self._backlog)

    def pending_summary(self, limit: int = 5) -> str:
        """How many messages are queued, and the first *limit* of them in short
        (:func:`summarize_message`)."""
        items = self.pending()
        head = ", ".join(summarize_message(e) for e in items[:limit])
        return f"{len(items)} queued [{head}{', ...' if len(items) > limit else ''}]"

    def drain_events(self) -> list[Event]:
        """Take every queued message at once (the queue is empty afterwards)."""
        with self._cond:
            items = list(self._backlog)
            self._backlog.clear()
            return items

    def iter_events(self, timeout: float = 10.0) -> Iterator[Event]:
        """Yield events until none arrives within *timeout*."""
        while True:
            try:
                yield self.next_event(timeout)
            except AgentTimeout:
                return

    def abandon(self, cause: str) -> None:
        """Give the session up for *cause* (the health watch: the agent stopped
        answering while the guest still does): every wait, now and later, raises
        :class:`AgentError` with *cause* first, whatever came already (an answer, an
        event), and a request is not sent; :meth:`close` ends the channel."""
        with self._cond:
            self.abandoned = cause
            self.eof = True
            self._cond.notify_all()

    # -- shutdown -----------------------------------------------------------------------
    def close(self, timeout: float = 10.0, *, goodbye: bool = True) -> None:
        """End the session: the agent's ``quit`` (not with *goodbye* False: a guest that
        cannot answer), then its streams; each wait at most *timeout* s."""
        check_timeout(timeout, zero=True)  # before anything ends: not half closed
        if goodbye and not self.eof and not self.closed:
            with contextlib.suppress(AgentError, OSError, ValueError):
                self.request("quit", timeout=timeout)
        self.closed = True
        with contextlib.suppress(OSError, ValueError):
            self._stdin.close()
        # an agent given up (abandon()) says nothing more: its streams end with on_close
        first = 0.0 if self.abandoned is not None else timeout
        self._reader.join(first)
        if self._err_reader is not None:
            self._err_reader.join(first)
        if self._on_close is not None:
            self._on_close()
            # closing the channel ends a read still blocked on it: let the readers finish
            for reader in (self._reader, self._err_reader):
                if reader is not None:
                    reader.join(timeout)
        # the agent's output streams too, once nothing reads them (a reader still
        # blocked would hold the stream's lock)
        for stream, reader in ((self._stdout, self._reader), (self._stderr, self._err_reader)):
            if stream is not None and (reader is None or not reader.is_alive()):
                with contextlib.suppress(OSError, ValueError):
                    stream.close()
        for f in (self._rx_log, self._tx_log, self._err_log):
            f.close()

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
