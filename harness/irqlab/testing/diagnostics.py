"""What a failing guest test's report shows: the guest kernel's log since the test
started (dmesg: the kernel runs ``quiet``, so the console has little of it), the
device's counters, and the agent's last messages.

Nothing is asked of the guest while tests pass: the start of a test is known from
the agent's stream log (byte offset), and the guest time of that moment from the
agent's reset at the test's setup (its reply's ``monotonic_ns``, the clock of the
kernel log's timestamps; :meth:`GuestDiagnostics.mark`), else (a test without the
agent's fixture) from the heartbeats' stamps and when they arrived
(:meth:`~irqlab.vm.agent_client.AgentClient.guest_now_ns`: early by a delivery's
milliseconds), else from the last agent heartbeat before it (up to a heartbeat
interval early: earlier tests' lines too); those are CLOCK_MONOTONIC times, put onto
the kernel log's clock at a failure (the agent's ``kernel_clock``);
only a failure fetches ``dmesg`` (one SSH command).  The harness's own markers in
the kernel log (``irqlab-step-...``) are left out.

A test's own guest (``irqlab_fresh_guest``) is the test's from its boot: its
``dmesg.log`` has the whole kernel log, and the report has the load of the user's
modules too (their insmod and probe came before the snapshot it restored, so the
slice since the test's start never had them).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

from irqlab.testing.logslice import file_size
from irqlab.vm.health import file_tail

if TYPE_CHECKING:
    from irqlab.vm.guest import Guest

__all__ = [
    "AGENT_LINES",
    "BUILT_CONSOLE_LINES",
    "DMESG_LINES",
    "GuestDiagnostics",
    "built_guest_report",
    "dmesg_since",
    "heartbeat_before",
    "module_load_lines",
    "report_header",
]

DMESG_LINES = 60  # at most this many kernel log lines in the report (all in dmesg.log)
# The kernel log's stamps (printk's local_clock) and the agent's CLOCK_MONOTONIC are two
# clocks: measured in restored guests (2026-12-06), printk's ran ahead by about 20 ms
# (x86_64) and 115 ms (aarch64); on an Intel Xeon host (2026-12-08) it ran 4-18 ms
# behind, and a test's first kernel line (its rmmod's) fell before a start estimated by
# CLOCK_MONOTONIC.  A reset's time is the kernel log's own, an estimate is put onto it
# (_kernel_log_offset_s), so a slice loses none of the test's lines (it may show the
# last few milliseconds before the test: no margin more).
AGENT_LINES = 12
_STAMP = re.compile(r"^\[\s*(\d+\.\d+)\]")
_HEARTBEAT = re.compile(rb'"type":\s*"(?:heartbeat|hello)"')


def heartbeat_before(rx_log: Path, offset: int) -> float | None:
    """The guest time (s) of the last heartbeat (or hello) in *rx_log* before byte
    *offset*."""
    try:
        with rx_log.open("rb") as f:
            f.seek(max(0, offset - 64 * 1024))
            data = f.read(offset - max(0, offset - 64 * 1024))
    except OSError:
        return None
    for line in reversed(data.splitlines()):
        if not _HEARTBEAT.search(line):
            continue
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if isinstance(msg, dict) and isinstance(msg.get("monotonic_ns"), int):
            return float(msg["monotonic_ns"]) / 1e9
    return None


def dmesg_since(text: str, since: float | None) -> list[str]:
    """The kernel log lines stamped at or after *since* (s; None: all), without the
    harness's own step markers and the agent's clock calibration line (which a
    failure's ``kernel_clock`` may write)."""
    from irqlab.vm.guest import STEP_KMSG_MARK
    from irqlab_agent.protocol import KERNEL_CLOCK_LINE

    ours = (STEP_KMSG_MARK, KERNEL_CLOCK_LINE)
    out: list[str] = []
    for line in text.splitlines():
        m = _STAMP.match(line)
        if since is None or (m is not None and float(m[1]) >= since) or (m is None and out):
            out.append(line)
    return [line for line in out if not any(mark in line for mark in ours)]


def module_load_lines(text: str, since: float | None, *, last_step: bool = False) -> list[str]:
    """The kernel log lines of the user's modules' load in *text*: from the first step
    that loaded one (:data:`irqlab.vm.guest.EXTRA_KMSG_MARK`) until the test's start
    *since* (s; None: to the end), without the harness's step markers.  With no such
    step in it (a snapshot saved before that mark existed), from the last step before
    *since* when *last_step* (a guest with modules of the user's: they load last),
    else none."""
    from irqlab.vm.guest import EXTRA_KMSG_MARK, STEP_KMSG_MARK

    lines = text.splitlines()

    def before_start(i: int) -> bool:
        m = _STAMP.match(lines[i])
        return since is None or m is None or float(m[1]) < since

    first = next((i for i, line in enumerate(lines) if EXTRA_KMSG_MARK in line), None)
    if first is None and last_step:
        steps = [i for i, line in enumerate(lines) if STEP_KMSG_MARK in line and before_start(i)]
        first = steps[-1] if steps else None
    out: list[str] = []
    for i in range(first + 1, len(lines)) if first is not None else ():
        if not before_start(i):
            break
        if STEP_KMSG_MARK not in lines[i]:
            out.append(lines[i])
    return out


@dataclass
class GuestDiagnostics:
    """Marks a test's start in one guest; :meth:`collect` reports on it after a failure."""

    guest: Guest
    rx_log: Path | None
    rx_offset: int
    since: float | None = None  # the test's start in guest time (s), once known
    # the same from the heartbeats (never late): for a test whose setup resets no agent
    estimate: float | None = None
    # the test's own guest (irqlab_fresh_guest): its whole kernel log is the test's
    own: bool = False

    def mark(self, reset_at_ns: int | None) -> None:
        """The test's setup reset the guest's agent at *reset_at_ns* (guest time): its
        part of the kernel log starts there, and its part of the agent's messages after
        the reset (before it: the previous test's replies)."""
        if reset_at_ns is not None and self.since is None:
            self.since = reset_at_ns / 1e9
            if self.rx_log is not None:
                self.rx_offset = max(self.rx_offset, file_size(self.rx_log))

    @classmethod
    def start(cls, guest: Guest, *, own: bool = False) -> GuestDiagnostics:
        """The test's start in *guest*; *own*: the test's own guest (its dmesg.log gets
        the whole kernel log, its report the load of the user's modules)."""
        agent = guest._agent  # never (re)start an agent just to mark the start
        rx = Path(f"{agent.log_base}.rx.jsonl") if agent is not None else None
        now = agent.guest_now_ns() if agent is not None else None
        return cls(
            guest,
            rx,
            file_size(rx) if rx is not None else 0,
            estimate=None if now is None else now / 1e9,
            own=own,
        )

    def collect(self, dest: Path) -> tuple[str, list[Path]]:
        """(text for the failure report, files written into *dest*)."""
        parts: list[str] = []
        files: list[Path] = []
        g = self.guest
        if g.fault is None and g.machine is None:  # a test's own, closed at its end
            return "the guest was stopped at the test's end: its logs are listed", files
        if g.fault is not None or g.machine is None or not g.machine.is_running():
            return "the guest is gone: no kernel log or counters (see the failure)", files
        since = self.since  # by the kernel log's clock (the reset's)
        if since is None:  # by CLOCK_MONOTONIC
            rough = self.estimate
            if rough is None and self.rx_log is not None:
                rough = heartbeat_before(self.rx_log, self.rx_offset)
            since = None if rough is None else rough + _kernel_log_offset_s(g)
        try:
            out = g.sh(
                "dmesg -r 2>/dev/null || dmesg; echo; cat /proc/sys/kernel/tainted",
                timeout=10,
                check=False,
            )
            from irqlab.vm.kernlog import kernel_lines

            raw, tainted = _split_tainted(out)
            # (the prefixes tell userspace's /dev/kmsg lines from the kernel's reports)
            text, kernel = kernel_lines(raw)
            lines = dmesg_since(text, since)
            dest.mkdir(parents=True, exist_ok=True)
            log = dest / "dmesg.log"
            # a test's own guest: all of its log (its modules' load came before the
            # snapshot it restored, and was in no file)
            kept = dmesg_since(text, None) if self.own else lines
            log.write_text("".join(f"{line}\n" for line in kept))  # none: empty, unlisted
            files.append(log)
            loaded = (
                module_load_lines(text, since, last_step=bool(g.config.extra_modules))
                if self.own
                else []
            )
            if loaded:
                shown = loaded[:DMESG_LINES]
                cut = f", the first {len(shown)}" if len(shown) < len(loaded) else ""
                parts.append(
                    f"--- guest kernel log: your modules' load (until the test began: "
                    f"{len(loaded)} lines{cut}; {log})\n" + "\n".join(shown)
                )
            when = f"since {since:.3f} s guest time" if since is not None else "all of it"
            shown = lines[-DMESG_LINES:]
            cut = f", the last {len(shown)}" if len(shown) < len(lines) else ""
            whole = "; all of it since boot in " if self.own and since is not None else "; "
            parts.append(
                f"--- guest kernel log ({when}: {len(lines)} lines{cut}{whole}{log})\n"
                + ("\n".join(shown) or "(nothing)")
            )
            note = taint_note(kernel, tainted)
            if note:
                parts.append(note)
        except Exception as e:  # a diagnostic must not hide the test's own failure
            parts.append(f"--- guest kernel log: unavailable ({e})")
        try:
            c = g.injector.counters()
            parts.append(
                "--- device counters (QMP)\n"
                + " ".join(f"{f.name}={getattr(c, f.name)}" for f in fields(c))
            )
        except Exception as e:
            parts.append(_no_counters(g, e))
        if self.rx_log is not None:
            try:
                with self.rx_log.open("rb") as f:
                    f.seek(self.rx_offset)
                    new = f.read().decode(errors="replace").splitlines()
            except OSError:
                new = []
            msgs = [ln for ln in new if not _HEARTBEAT.search(ln.encode())]
            msgs = [ln if len(ln) <= 300 else ln[:300] + " ..." for ln in msgs[-AGENT_LINES:]]
            parts.append(
                f"--- the agent's last messages ({len(msgs)} shown; {self.rx_log})\n"
                + ("\n".join(msgs) or "(none since the test started)")
            )
        return "\n".join(parts), files


def _kernel_log_offset_s(guest: Guest) -> float:
    """The kernel log's clock minus CLOCK_MONOTONIC in *guest* (s), as its agent's
    ``kernel_clock`` says it; 0.0 when it cannot (no agent session, an older agent)."""
    agent = guest._agent  # never (re)start an agent for a diagnostic
    if agent is None:
        return 0.0
    try:
        reply = agent.request("kernel_clock", timeout=10.0)
    except Exception:  # a diagnostic must not hide the test's own failure
        return 0.0
    mono, klog = reply.get("monotonic_ns"), reply.get("kernel_log_ns")
    if not isinstance(mono, int) or not isinstance(klog, int):
        return 0.0
    return (klog - mono) / 1e9


BUILT_CONSOLE_LINES = 20  # a guest the test built itself: its console's last lines


def built_guest_report(guest: Guest) -> tuple[str, list[Path]]:
    """A guest a failed test built itself (``Guest(GuestConfig(...))``, not a fixture's;
    :mod:`irqlab.vm.logplace` put its logs in the test's directory): (text for the
    failure report, its run directory).  Its state, where its logs are, its console's
    last lines; a guest still running has its diagnostics too (the whole kernel log,
    written into its run directory, the device counters, the agent's messages)."""
    g = guest
    run = g.log_dir
    if run is None:
        return f"{g.config.name!r}: never started (no logs)", []
    if g.fault is not None:
        state = f"died ({g.fault.cause})"
    elif g.machine is None:
        state = "stopped"
    elif not g.machine.is_running():
        state = "its QEMU is gone"
    else:
        state = "running"
    try:
        logs = ", ".join(sorted(p.name for p in run.iterdir()))
    except OSError as e:
        logs = f"unreadable: {e.strerror or e}"
    parts = [f"{g.config.name!r} ({state}): logs in {run} ({logs})"]
    tail = file_tail(run / "console.log", BUILT_CONSOLE_LINES)
    parts.append(f"--- its console (last {BUILT_CONSOLE_LINES} lines)\n" + (tail or "(nothing)"))
    if state == "running":
        agent = g._agent  # its messages from the first (offset 0), the whole kernel log
        rx = Path(f"{agent.log_base}.rx.jsonl") if agent is not None else None
        text, _ = GuestDiagnostics(g, rx, 0).collect(run)
        parts.append(text)
    return "\n".join(parts), [run]


def _no_counters(g: Guest, e: Exception) -> str:
    """Why the device counters are missing: a device the test unplugged has none (not
    "unavailable" with QMP's "not found"), any other failure is named."""
    try:
        dev, vm = g.config.device_id, g.machine
        assert vm is not None  # collect() returned before when it was
        plugged = {p["name"] for p in vm.qmp("qom-list", path="/machine/peripheral")}
    except Exception:  # the counters' own error says more
        plugged = None
    if plugged is not None and dev not in plugged:
        return f"--- device counters: none (the device {dev} is unplugged)"
    return f"--- device counters: unavailable ({e})"


def _split_tainted(out: str) -> tuple[str, int | None]:
    """``dmesg; echo; cat /proc/sys/kernel/tainted``'s output -> (log, taint mask; None
    when the last line is no number)."""
    log, _, last = out.rstrip().rpartition("\n")
    try:
        return log, int(last)
    except ValueError:
        return out, None


def taint_note(log: str, tainted: int | None) -> str | None:
    """A failure's line on a guest kernel tainted beyond an out-of-tree or unsigned
    module's taint (a WARN or an oops during an earlier, passing test of the shared
    guest taints it for good): the flags, and the first report left in *log* (the whole
    kernel log: when it was first seen).  None when it is not."""
    from irqlab.vm.kernlog import EXPECTED_TAINT, KERNEL_SPLAT, taint_name

    bad = (tainted or 0) & ~EXPECTED_TAINT
    if not bad:
        return None
    names = ", ".join(taint_name(bit) for bit in range(bad.bit_length()) if bad >> bit & 1)
    first = next((ln for ln in log.splitlines() if KERNEL_SPLAT.search(ln)), None)
    seen = (
        f"first report in its kernel log: {first.strip()}"
        if first is not None
        else "no report of it left in its kernel log (overwritten or cleared)"
    )
    return (
        f"--- the guest kernel is tainted: {names}\n{seen}\n"
        "(a taint lasts for the guest's life: it may come from an earlier test)"
    )


def _newest(recipe: str, holding: str = "", suffix: str = "") -> Path | None:
    """The newest complete output of *recipe* (that has the file *holding*; a kernel:
    whose module directory's name ends with *suffix*, e.g. ``-arm64``)."""
    from irqlab.build import cache

    def fits(path: Path) -> bool:
        if not (path / holding).exists():
            return False
        modules = path / "root" / "lib" / "modules"
        return not suffix or any(m.name.endswith(suffix) for m in modules.iterdir())

    done = [e for e in cache.entries(recipe=recipe) if e.complete and fits(e.path)]
    return max(done, key=lambda e: e.mtime).path if done else None


def report_header() -> str:
    """One line for pytest's header: the guest architecture ($IRQLAB_ARCH), its QEMU's
    version, guest kernel, image, accelerator.  Cheap whatever the state of the cache:
    it reads the newest complete outputs in it (a build touches what it uses) and asks
    no package index; nothing is built, and no KVM probe runs (a kept verdict is said,
    else that none was reached yet)."""
    import os

    from irqlab.build import arch as arches
    from irqlab.build.imagekind import image_setting
    from irqlab.errors import ConfigError

    try:
        arch = arches.selected(os.environ)
    except ConfigError as e:  # the option check's error: said there
        return f"irqlab: {e}"
    parts: list[str] = [f"arch {arch.name}"]
    qemu = None
    try:
        qemu = _newest("qemu", f"bin/{arch.qemu_binary}")  # not another target's build
        version = (qemu / "VERSION").read_text().strip() if qemu is not None else None
        parts.append(f"QEMU {version}" if version else "QEMU not built yet")
    except Exception as e:
        parts.append(f"QEMU unknown ({e})")
    image = image_setting()  # as it is: a bad value is the option check's error
    if image == "debian":
        try:
            kernel = _newest("kernel", "root/lib/modules", f"-{arch.deb_arch}")
            mods = sorted((kernel / "root" / "lib" / "modules").iterdir()) if kernel else []
            parts.append(f"kernel {mods[0].name}" if mods else "kernel not extracted yet")
        except Exception as e:
            parts.append(f"kernel unknown ({e})")
    parts.append(f"image {image}")
    if qemu is not None and arch.name != "x86_64":
        from irqlab.vm.guest import foreign_arch_accel

        parts.append(f"accel {foreign_arch_accel(arch.name).reason}")
    elif qemu is not None:
        try:  # the probe's verdict if one is kept: no probe QEMU for the header
            from irqlab.vm.accel import choose_known

            binary = qemu / "bin" / arch.qemu_binary
            choice = choose_known(binary, datadir=qemu / "share" / "qemu")
            parts.append(
                f"accel {choice.reason}"
                if choice is not None
                else "accel not probed yet (the first guest probes)"
            )
        except Exception as e:
            parts.append(f"accel unknown ({e})")
    return "irqlab: " + ", ".join(parts)
