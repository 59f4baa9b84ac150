"""Guest health: notice within seconds that a guest died or froze, and say why.

A :class:`HealthWatch` thread per running guest looks at four things, several
times a second:

* the serial console (the kernel prints panics and oopses there even with
  ``quiet``): the line itself becomes the cause.  A report the guest lives on after
  (a ``BUG:`` line with no oops after it: KASAN, "sleeping function called from
  invalid context", "scheduling while atomic", a soft lockup; a hung task) is no
  fault: the kernel-log check (:mod:`irqlab.vm.kernlog`) reports it.  The OOM
  killer's kill is a fault when it took the agent or the SSH server (the harness's
  ways in), none for another process (a test's memory hog);  a poweroff's or reboot's
  last line names the exit that follows;
* the QEMU process: an exit is a fault with its status and QEMU's last words;
* QMP: a QEMU that stops answering (frozen, SIGSTOPped) or whose run state says
  the guest stopped (``guest-panicked``, ``internal-error``, ``shutdown``);
* the agent's heartbeat (``{"type": "heartbeat"}`` every second): none for
  *freeze_timeout* seconds means the guest no longer schedules userspace, unless
  its SSH server still greets (*answers*): then the agent alone stopped, and its
  session is given up (:meth:`AgentClient.abandon`), no fault.

On the first fault it calls *on_fault* once (the guest then breaks every wait of
the harness: SSH commands, agent requests, expects) and stops.  The fault's
first line names the cause; :meth:`Fault.describe` adds the console tail.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from irqlab.errors import IrqlabError, hide_frame
from irqlab.vm import proc
from irqlab.vm.loadscale import timeout_scale
from irqlab.vm.qmp.errors import QMPNoReply

if TYPE_CHECKING:
    from irqlab.vm.agent_client import AgentClient
    from irqlab.vm.machine import Machine

__tracebackhide__ = hide_frame  # pytest: an IrqlabError's traceback leaves these frames out

__all__ = [
    "CONSOLE_FAULT",
    "CONSOLE_FAULTS",
    "OOM_KILL",
    "OOPS",
    "OOPS_PRELUDE",
    "Fault",
    "GuestFault",
    "HealthWatch",
    "console_faults",
    "exited_cause",
    "file_tail",
    "printable",
    "scan_console",
]

# The header die() prints for an oops, with its counter in brackets: x86's "Oops: 0002
# [#1] PREEMPT SMP NOPTI", "general protection fault, probably for non-canonical address
# 0x...: 0000 [#1] ...", "invalid opcode: 0000 [#1] ..." (a BUG()), "Oops: invalid
# opcode: ..." (newer kernels), arm64's "Internal error: Oops: 96000005 [#1] ...".  A
# user process's "traps: x[1] general protection fault ip:..." has no counter: no oops.
OOPS = re.compile(
    r"(?:Oops|Internal error|general protection fault|invalid opcode|stack segment"
    r"|double fault|kernel stack overflow)[^\[\]]*\[#\d+\].*"
)
# Most severe first: a panic usually follows an oops, and the panic is the story (told
# with the oops that led to it: "Fatal exception in interrupt" alone does not say what).
CONSOLE_FAULTS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"Kernel panic - not syncing.*"), "guest kernel panic"),
    (OOPS, "guest kernel oops"),
)
PANIC_RANK, OOPS_RANK = 0, 1  # CONSOLE_FAULTS' indexes
# Any of them on one line (a quick look at what a command's time printed)
CONSOLE_FAULT = re.compile("|".join(f"(?:{p.pattern})" for p, _ in CONSOLE_FAULTS))
# A line the kernel prints a few lines before an oops's header, saying what happened
# ("BUG: kernel NULL pointer dereference, address: ...", "BUG: unable to handle page
# fault for address: ...", "kernel BUG at mm/slub.c:1!", arm64's "Unable to handle
# kernel NULL pointer dereference ..."): the oops is named by it.  Alone (no oops
# within OOPS_PRELUDE_LINES after it) it is no fault: "BUG: KASAN: ...", "BUG: sleeping
# function called from invalid context", "BUG: scheduling while atomic", "BUG: soft
# lockup" and the like leave the guest running.
OOPS_PRELUDE = re.compile(r"(?:BUG: |kernel BUG at |Unable to handle kernel ).*")
# The kernel's reports of a CPU or task that stopped making progress: no fault by
# themselves (the guest may recover), but what a guest that stops responding meanwhile
# is named by (a driver's IRQ handler spinning: "BUG: soft lockup" comes ~20 s before
# the heartbeat's verdict under load, which said only that the agent was silent).
STALL_REPORT = re.compile(
    r"(?:BUG: soft lockup|Watchdog detected hard LOCKUP|rcu: INFO: \S+ (?:self-)?detected "
    r"stalls?|INFO: task .* blocked for more than).*"
)
# The kernel's last words before it powers the machine off or resets it (Debian 6.1:
# kernel_power_off()'s "reboot: Power down", kernel_restart()'s "reboot: Restarting
# system", kernel_halt()'s "reboot: System halted"; SysRq's "sysrq: Power Off" and
# "sysrq: Resetting", the latter with no reboot: line after it).  QEMU runs with
# -no-reboot: a reboot ends it too, with status 0, as a poweroff does.
SHUTDOWN = re.compile(
    r"(?:reboot: (?:Power down|Restarting system|System halted)|sysrq: (?:Power Off|Resetting)).*"
)
SHUTDOWN_CAUSES = (
    ("Power", "guest powered off"),
    ("Restart", "guest rebooted"),
    ("Resetting", "guest rebooted"),
    ("halted", "guest halted"),
)
# The OOM killer's line for each process it kills ("Out of memory: Killed process 128
# (python3) total-vm:..."; a memory cgroup's "Memory cgroup out of memory: ..."): no
# fault for an ordinary process (a test's memory hog: the guest lives on), a fault when
# it is the harness's way into the guest: the agent (its hello's pid) or the SSH server
OOM_KILL = re.compile(r"(?:Memory cgroup )?Out of memory.*?: Killed process (\d+) \(([^)]*)\)")
SSH_SERVERS = frozenset({"dropbear", "sshd"})
OOPS_PRELUDE_LINES = 16  # arm64 prints 13 lines of abort details in between
TAIL_LINES = 40
log = logging.getLogger(__name__)
OOM_RANK = len(CONSOLE_FAULTS)  # an OOM kill that matters: less severe than an oops
GRACE = 0.4  # s: after a console fault, wait this long for a more severe line (oops -> panic)
EXIT_AFTER_LOST_QMP_S = 2.0  # s a load that lost QMP waits to see whether QEMU exits
EXIT_POLL_S = 0.02  # s between two looks at a QEMU that may be exiting


def exited_cause(status: int | None) -> str:
    """The cause of a fault that is QEMU's exit (status -N: killed by signal N)."""
    return f"QEMU exited with status {status}"


@dataclass(frozen=True)
class Fault:
    """The health watch's verdict on a guest that died or froze (``GuestFault.fault``,
    ``Guest.fault``): its cause in one line, the guest console's and QEMU's last words,
    and where the guest's logs are."""

    cause: str  # one line: "guest kernel panic: Kernel panic - not syncing: ..."
    console_tail: str
    qemu_tail: str = ""
    console_span: str = f"last {TAIL_LINES} lines"  # which lines console_tail shows
    qmp_silent: bool = False  # QEMU stopped answering QMP (frozen): no call will return
    log_dir: str = ""  # the guest's run directory (console, QEMU's output, agent logs)

    def describe(self) -> str:
        """The cause, then the guest console's and QEMU's last words, as a report."""
        text = self.cause
        if self.console_tail:
            text += f"\n--- guest console ({self.console_span})\n{self.console_tail}"
        if self.qemu_tail:
            text += f"\n--- QEMU said\n{self.qemu_tail}"
        return text


class GuestFault(IrqlabError, RuntimeError):
    """The guest died or froze; the message's first line names the cause."""

    def __init__(self, fault: Fault, doing: str = "") -> None:
        first, _, rest = fault.describe().partition("\n")
        super().__init__(
            f"{first}" + (f" ({doing})" if doing else "") + (f"\n{rest}" if rest else "")
        )
        self.fault = fault
        if fault.log_dir:  # where to look next (pytest and the irqlab command show notes)
            self.add_note(f"logs: {fault.log_dir}")


def console_faults(text: str, before: Sequence[str] = ()) -> list[tuple[int, str]]:
    """Every fault line in *text*, in order: (severity rank, "cause: line").  An oops is
    named by the line before it that says what happened (OOPS_PRELUDE), looked for in
    *text* and the console's lines *before* it (the previous look's)."""
    found: list[tuple[int, str]] = []
    lines = text.splitlines()
    earlier = list(before)[-OOPS_PRELUDE_LINES:]
    for i, line in enumerate(lines):
        for rank, (pattern, cause) in enumerate(CONSOLE_FAULTS):
            m = pattern.search(line)
            if m:
                what = m.group(0).strip()
                if pattern is OOPS:
                    what = _prelude((earlier + lines[:i])[-OOPS_PRELUDE_LINES:]) or what
                found.append((rank, f"{cause}: {what}"))
    return found


def scan_console(text: str, before: Sequence[str] = ()) -> tuple[int, str] | None:
    """The most severe fault line in *text* (the first of them): (severity rank,
    "cause: line"), or None (:func:`console_faults`)."""
    return min(console_faults(text, before), key=lambda hit: hit[0], default=None)


def _last_match(pattern: re.Pattern[str], lines: Sequence[str]) -> str | None:
    """What *pattern* matches on the last of *lines* it matches, stripped; or None."""
    for line in reversed(lines):
        m = pattern.search(line)
        if m:
            return m.group(0).strip()
    return None


def _prelude(lines: Sequence[str]) -> str | None:
    """The last line of *lines* that says what an oops after them is (OOPS_PRELUDE)."""
    return _last_match(OOPS_PRELUDE, lines)


# A terminal's escape sequences (CSI ... final byte; two-byte ESC x) and other control
# characters but tab and newline.  The guest's shell writes some to the console (its
# prompt asks the terminal where the cursor is: ESC [ 6 n), and an excerpt printed on
# the user's terminal must not do the same (the terminal's answer lands in their shell).
_TERMINAL_CONTROL = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-_]|[\x00-\x08\x0b-\x1f\x7f]")


def printable(text: str) -> str:
    """*text* without terminal escape sequences and control characters (tab and
    newline stay; a carriage return goes)."""
    return _TERMINAL_CONTROL.sub("", text)


def file_tail(path: Path, lines: int = TAIL_LINES) -> str:
    """The last *lines* lines of the file *path* (a console or QEMU log), printable;
    "" when it cannot be read."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(printable(text).rstrip().splitlines()[-lines:])


BEFORE_FAULT = 10  # console lines shown before the fault's own line
LAST_LINES = 8  # ... and the last lines, when the fault is further back than TAIL_LINES


def console_excerpt(text: str, line: str) -> tuple[str, str] | None:
    """The console *text* from a little before its last line containing *line* (an oops
    runs to 50 lines and more: the last lines alone miss its BUG line and the lines
    the module printed before it), as (excerpt, what it spans); None when *line* is
    within the last TAIL_LINES lines anyway (or not found)."""
    lines = printable(text).rstrip().splitlines()
    at = next((i for i in range(len(lines) - 1, -1, -1) if line in lines[i]), None)
    if at is None or at >= len(lines) - TAIL_LINES + BEFORE_FAULT:
        return None
    start = max(0, at - BEFORE_FAULT)
    shown = lines[start : start + TAIL_LINES]
    rest = lines[start + TAIL_LINES :]
    if len(rest) > LAST_LINES:
        shown += [f"[... {len(rest) - LAST_LINES} lines ...]"]
        rest = rest[-LAST_LINES:]
    return "\n".join(shown + rest), f"from {BEFORE_FAULT} lines before the fault"


def console_view(text: str, line: str) -> tuple[str, str]:
    """The console *text* to show for a fault at its *line*: from a little before it
    (:func:`console_excerpt`) or its last TAIL_LINES lines, and what that spans."""
    found = console_excerpt(text, line)
    if found is not None:
        return found
    return "\n".join(
        printable(text).rstrip().splitlines()[-TAIL_LINES:]
    ), f"last {TAIL_LINES} lines"


SSH_GREETING_S = 3.0  # s an SSH server has to greet before the guest counts as silent


def ssh_greets(port: int, timeout: float) -> bool:
    """Whether the SSH server on the host's *port* (forwarded to the guest's) greets
    within *timeout* s ("SSH-2.0-..."): the guest's userspace runs.  A connection that
    opens proves nothing (QEMU and the guest's kernel accept it)."""
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            data = b""
            while b"\n" not in data and len(data) < 256:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                sock.settimeout(left)
                chunk = sock.recv(256)
                if not chunk:
                    return False
                data += chunk
    except OSError:
        return False
    return data.startswith(b"SSH-")


class HealthWatch(threading.Thread):
    """Watches one machine (and its agent) until :meth:`stop` or the first fault."""

    def __init__(
        self,
        machine: Machine,
        on_fault: Callable[[Fault], None],
        *,
        agent: Callable[[], AgentClient | None] = lambda: None,
        freeze_timeout: float | None = 10.0,
        answers: Callable[[], bool] | None = None,
        tick: float = 0.2,
        qmp_every: float = 2.0,
        qmp_timeout: float = 3.0,
    ) -> None:
        super().__init__(name=f"health-{machine.config.name}", daemon=True)
        self.machine = machine
        self.on_fault = on_fault
        self.agent = agent
        self.freeze_timeout = freeze_timeout
        # whether the guest's userspace still answers (its SSH server's greeting): a
        # silent agent in a guest that does is the agent's fault, not the guest's
        self.answers = answers
        self.tick = tick
        self.qmp_every = qmp_every
        self.qmp_timeout = qmp_timeout
        self.fault: Fault | None = None
        self._stop_event = threading.Event()
        self._verdict = threading.Event()  # set once a fault is known
        self._offset = 0
        # the console's last lines looked at: an oops's prelude may come in a look before
        self._recent: deque[str] = deque(maxlen=OOPS_PRELUDE_LINES)
        # a console fault: (severity rank, cause, grace deadline, the console line's text)
        self._pending: tuple[float, str, float, str] | None = None
        # the first oops read on the console ("BUG: kernel NULL pointer dereference, ..."):
        # a panic after it (a fatal exception) is told with it
        self._oops: str | None = None
        # the console's last STALL_REPORT line, and when it was read (time.monotonic())
        self._stall: tuple[float, str] | None = None
        self._next_qmp = time.monotonic() + qmp_every
        # read-only for others (tests): the QMP pings begun, and whether one waits for
        # its reply now (see qmp_ping_pending)
        self.qmp_pings = 0
        self._qmp_in_flight = threading.Event()
        # read-only for others (tests): time.monotonic() at the start of the last look
        # that found nothing wrong and nothing pending (no console line in its grace)
        self.last_clean_look = 0.0
        self._silent: tuple[str, float] | None = None  # silent(): (why, since)

    @property
    def qmp_ping_pending(self) -> bool:
        """Whether the watch's QMP ping is in flight now: begun (``qmp_pings`` counts
        it) and not yet answered, failed or timed out.  Read-only, for tests that must
        act while the watch waits on QEMU (one stopped by SIGSTOP answers nothing)."""
        return self._qmp_in_flight.is_set()

    def stop(self, wait: float = 5.0) -> None:
        """End the watch, waiting up to *wait* s for its thread (0: only tell it)."""
        self._stop_event.set()
        if wait > 0 and self.is_alive() and threading.current_thread() is not self:
            self.join(wait)

    def wait_verdict(self, timeout: float) -> Fault | None:
        """Wait up to *timeout* s for a fault (returns at once if the watch stopped)."""
        if self.is_alive():
            self._verdict.wait(timeout)
        return self.fault

    def run(self) -> None:
        failures = 0  # checks in a row that raised
        while not self._stop_event.is_set():
            began = time.monotonic()
            try:
                fault = self.check()
            except Exception:
                # one look that failed (a QMP loop busy past its limit, a file that
                # vanished) must not end the watch: the guest would go unwatched, its
                # death unnamed.  Said once, at debug level each time after.
                failures += 1
                log.log(
                    logging.WARNING if failures == 1 else logging.DEBUG,
                    "health watch of %s: a check failed (watching on)",
                    self.machine.config.name,
                    exc_info=True,
                )
                self._stop_event.wait(self.tick)
                continue
            failures = 0
            if fault is None:
                if self._pending is None:
                    self.last_clean_look = began
            else:
                self.fault = fault
                if not self._stop_event.is_set():
                    self.on_fault(fault)
                self._verdict.set()
                return
            self._stop_event.wait(self.tick)

    # -- one look ---------------------------------------------------------------------
    def _console_log(self) -> Path | None:
        paths = self.machine.paths
        return paths.console_log if paths is not None and self.machine.config.console else None

    def _new_console_text(self) -> str:
        log = self._console_log()
        if log is None:
            return ""
        try:
            with log.open("rb") as f:
                f.seek(self._offset)
                data = f.read()
        except OSError:
            return ""
        # keep a partial last line for the next look
        cut = data.rfind(b"\n") + 1
        self._offset += cut
        return data[:cut].decode(errors="replace")

    def _fault(
        self, cause: str, *, qemu: bool = False, line: str = "", qmp_silent: bool = False
    ) -> Fault:
        """The fault *cause*; a console fault's *line* places the console excerpt."""
        log = self._console_log()
        qemu_tail = self.machine.stderr_tail() if qemu else ""
        paths = self.machine.paths
        logs = str(paths.log_dir) if paths is not None else ""
        if log is not None and line:
            try:
                found = console_excerpt(log.read_text(errors="replace"), line)
            except OSError:
                found = None
            if found is not None:
                return Fault(cause, found[0], qemu_tail, found[1], qmp_silent, logs)
        tail = file_tail(log) if log is not None else ""
        return Fault(cause, tail, qemu_tail, qmp_silent=qmp_silent, log_dir=logs)

    def _scan_console(self, now: float) -> None:
        """Read the console's new lines; a fault among them is pending (worse first)."""
        text = self._new_console_text()
        hits = console_faults(text, self._recent)
        hit = min(hits, key=lambda h: h[0], default=None)
        if self._oops is None:
            oops = next((h[1] for h in hits if h[0] == OOPS_RANK), None)
            self._oops = oops.partition(": ")[2] if oops is not None else None
        self._recent.extend(text.splitlines())
        for m in STALL_REPORT.finditer(text):
            self._stall = (now, m.group(0).strip())
        found = (*hit, hit[1].partition(": ")[2]) if hit is not None else self._oom_kill(text)
        if found is not None and (self._pending is None or found[0] < self._pending[0]):
            self._pending = (found[0], found[1], now + GRACE, found[2])

    def _oom_kill(self, text: str) -> tuple[float, str, str] | None:
        """The OOM killer's kill of the agent or the SSH server in *text*, as a console
        fault (rank, cause, line); None for other processes (a memory hog)."""
        agent = self.agent()
        hello = agent.hello_message if agent is not None else None
        pid = hello.get("pid") if isinstance(hello, dict) else None
        for m in OOM_KILL.finditer(text):
            if int(m.group(1)) == pid:
                who = "the agent"
            elif m.group(2) in SSH_SERVERS:
                who = "the SSH server"
            else:
                continue
            return (OOM_RANK, f"guest out of memory: {m.group(0)} ({who})", m.group(0))
        return None

    def _pending_fault(self) -> Fault:
        assert self._pending is not None
        rank, cause, _, line = self._pending
        if rank == PANIC_RANK and self._oops is not None:
            # the panic of an oops ("Fatal exception in interrupt": an IRQ handler's NULL
            # dereference): the last lines missed the oops's BUG line and its first
            # trace, and the cause did not say what went wrong; shown from the oops
            cause = f"{cause}, after an oops: {self._oops}"
            line = self._oops
        return self._fault(cause, qemu=not self.machine.is_running(), line=line)

    def check(self) -> Fault | None:
        now = time.monotonic()
        self._scan_console(now)
        running = self.machine.is_running()
        if running:
            fault = self._check_events()
            if fault is not None:
                return fault
        if self._pending is not None and (now >= self._pending[2] or not running):
            return self._pending_fault()
        if not running:
            return self._exit_fault()
        if now >= self._next_qmp:
            self._next_qmp = now + self.qmp_every
            fault = self._check_qmp()
            if fault is not None:
                # a QEMU that exits after the guest's panic is silent on QMP first: the
                # console's line, read now, names the cause (seen under a loaded host)
                # (still silent: callers must not wait on QMP)
                self._scan_console(time.monotonic())
                if self._pending is None:
                    return fault
                return replace(self._pending_fault(), qmp_silent=fault.qmp_silent)
        if self._silent is not None:
            return self._silence_fault(*self._silent)
        agent = self.agent()
        beat = agent.last_heartbeat if agent is not None and not agent.eof else None
        if self.freeze_timeout is not None and beat is not None:
            silent = now - beat
            # a loaded host (TCG guests sharing cores) slows every guest: the limit
            # stretches with the load (irqlab.vm.loadscale)
            limit = self.freeze_timeout * timeout_scale()
            if silent > limit:
                why = f"no agent heartbeat for {silent:.0f} s (limit {limit:.3g} s: "
                why += f"{self.freeze_timeout:g} s x host load)"
                greets = self.answers is not None and self.answers()
                if not greets:
                    return self._silence_fault(why, beat)
                # the probe took a while (seconds x load): what came meanwhile first
                self._scan_console(time.monotonic())
                if self._pending is not None:
                    return self._pending_fault()
                if not self.machine.is_running():
                    return self._exit_fault()
                # the agent alone (stopped, stuck): its waits end, SSH goes on
                assert agent is not None
                cause = f"agent stopped responding: {why}{self._stall_said(beat)}; the guest "
                agent.abandon(cause + "still answers (its SSH server greets)")
                log.warning("%s: %s", self.machine.config.name, agent.abandoned)
        return None

    def silent(self, why: str, since: float) -> None:
        """Another look (the harness's own, where no heartbeat comes yet: a module's load
        while the guest starts) found the guest silent since *since* (time.monotonic()):
        the watch's next look names it as frozen, *why* saying how it was seen (unless
        the console or QEMU's exit names a better cause meanwhile)."""
        self._silent = (why, since)

    def _stall_said(self, since: float) -> str:
        """The kernel's stall report read after *since*, as the verdict adds it ("" if
        none: a report read before is one the guest got over)."""
        stall = self._stall[1] if self._stall and self._stall[0] > since else ""
        return f"; the kernel said: {stall}" if stall else ""

    def _silence_fault(self, why: str, since: float) -> Fault:
        """The guest, silent since *since* (*why*: how that was seen), is frozen: named
        so, with the kernel's stall report if one came meanwhile; a console fault or
        QEMU's exit that came meanwhile names it better."""
        # the probes took a while (seconds x load): what came meanwhile first
        self._scan_console(time.monotonic())
        if self._pending is not None:
            return self._pending_fault()
        if not self.machine.is_running():
            return self._exit_fault()
        stall = self._stall[1] if self._stall and self._stall[0] > since else ""
        return self._fault(f"guest stopped responding: {why}{self._stall_said(since)}", line=stall)

    def _exit_fault(self) -> Fault:
        """QEMU's exit; status 0 after the kernel's last words of a poweroff or reboot
        (SHUTDOWN) is the guest's own doing, named by that line."""
        status = self.machine.returncode
        exited = exited_cause(status)
        self._scan_console(time.monotonic())  # its last lines, written as it exited
        if self._pending is not None:  # a panic read only now names it better
            return self._pending_fault()
        if status == 0:
            said = _last_match(SHUTDOWN, self._recent)
            if said is not None:
                what = next(c for key, c in SHUTDOWN_CAUSES if key in said)
                return self._fault(f"{what} ({said}; {exited})", qemu=True)
        return self._fault(exited, qemu=True)

    def _check_qmp(self) -> Fault | None:
        from irqlab.vm.machine import MachineError

        limit = self.qmp_timeout * timeout_scale()
        self.qmp_pings += 1
        self._qmp_in_flight.set()
        try:
            status = self.machine.qmp_ping(limit)
        except MachineError as e:
            silent = isinstance(e.__cause__, QMPNoReply)
            if not silent:  # the socket closed: QEMU exiting?  (not when told to stop:
                self._wait_exit(EXIT_AFTER_LOST_QMP_S * timeout_scale())  # a close cut it)
            if not self.machine.is_running():
                return None  # the exit is reported on the next look, with its status
            # no reply in time is what the verdict says already: not twice
            why = "" if silent else f" ({str(e).splitlines()[0]})"
            try:
                pid: int | None = self.machine.pid
            except (AttributeError, MachineError):  # gone meanwhile (or a stand-in's)
                pid = None
            if pid is not None and proc.is_stopped(pid):  # the cause, not a guess at one
                why += (
                    f"; its process (pid {pid}) is stopped (SIGSTOP, SIGTSTP, a debugger): "
                    "SIGCONT continues it"
                )
            return self._fault(
                f"guest stopped responding: QEMU did not answer QMP within {limit:.3g} s{why}",
                qmp_silent=True,
            )
        finally:
            self._qmp_in_flight.clear()
        if status == "guest-panicked":
            # pvpanic told QEMU; the console's own panic line usually follows within
            # the grace period and names it better (it replaces this one, rank 0 < 0.5)
            self._note_panic("guest kernel panic (pvpanic; QEMU's run state 'guest-panicked')")
            return None
        if status in ("internal-error", "shutdown", "io-error"):
            return self._fault(f"guest stopped: QEMU run state {status!r}", qemu=True)
        return None

    def _wait_exit(self, limit: float) -> None:
        """Up to *limit* s for QEMU's exit, ended early by :meth:`stop`."""
        deadline = time.monotonic() + limit
        while self.machine.is_running() and not self._stop_event.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._stop_event.wait(min(EXIT_POLL_S, left))

    def _note_panic(self, cause: str) -> None:
        if self._pending is None or self._pending[0] > 0.5:
            self._pending = (0.5, cause, time.monotonic() + GRACE, cause.partition(": ")[2])

    def _check_events(self) -> Fault | None:
        """pvpanic's GUEST_PANICKED (the guest kernel said it panicked) and RESET (our
        machines never reset: -no-reboot turns a reboot into an exit)."""
        from irqlab.vm.machine import MachineError

        try:
            events = self.machine.take_events(("GUEST_PANICKED", "RESET"), self.qmp_timeout)
        except MachineError:
            return None  # QMP trouble is reported by the liveness check
        for ev in events:
            if ev.get("event") == "GUEST_PANICKED":
                action = (ev.get("data") or {}).get("action", "?")
                # the console's own panic line usually follows and replaces this one
                self._note_panic(f"guest kernel panic (pvpanic; QEMU's action: {action})")
            else:
                return self._fault("guest reset itself (QEMU event RESET)", qemu=True)
        return None
