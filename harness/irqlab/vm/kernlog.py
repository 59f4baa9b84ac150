"""The guest kernel's log as evidence of a bug: which lines are splats (sanitizers,
lockdep, kmemleak reports, oopses, warnings, lockups), which taint flags are not
expected, and a report that quotes the log around the first one.  Used when a test's
own guest ends (the pytest plugin), when a session ends (this repository's suite) and
before a cold-booted guest is saved as a snapshot (a splat is never saved into one)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from irqlab import notice
from irqlab.errors import hide_frame
from irqlab.vm.health import CONSOLE_FAULT, OOPS, OOPS_PRELUDE, OOPS_PRELUDE_LINES, printable
from irqlab.vm.loadscale import timeout_scale

if TYPE_CHECKING:
    from irqlab.vm.guest import Guest

__tracebackhide__ = hide_frame  # pytest: an IrqlabError's traceback leaves these frames out

__all__ = [
    "CONSOLE_LOGLEVEL",
    "EXPECTED_TAINT",
    "KERNEL_SPLAT",
    "KMEMLEAK",
    "KernelProblems",
    "console_problems",
    "console_shows_warnings",
    "guest_kernel_log",
    "kernel_lines",
    "kernel_problems",
    "kernel_report",
    "kernel_splats",
]

# A kernel report that means a bug (sanitizers, lockdep, kmemleak, oopses, warnings).
# kmemleak's own boot lines ("kmemleak: Kernel memory leak detector initialized",
# "... scanning thread started") are no report: only its findings are.
# The console's faults (panic, oops) are splats too, and so are the reports the health
# watch leaves to this check, the guest living on after them: a BUG: line without an
# oops (KASAN, sleeping function called from invalid context, scheduling while atomic,
# soft lockup), a hung task.
_MORE_SPLATS = (
    # (a kernel's general protection fault is its oops header, "...: 0000 [#1]"; a user
    # process's, "traps: x[1] general protection fault ip:...", is no kernel bug)
    r"WARNING:|BUG:|KASAN:|UBSAN:|KCSAN:|ODEBUG:|Oops|kernel BUG"
    r"|general protection fault(?!.*\bip:)"
    r"|INFO: task \S+ blocked for more than"
    r"|possible (?:circular|recursive) locking|inconsistent lock state|lockdep"
    r"|suspected memory leak|unreferenced object"
    r"|hard LOCKUP|rcu_sched self-detected"
)
KERNEL_SPLAT = re.compile(f"{CONSOLE_FAULT.pattern}|{_MORE_SPLATS}")
# Taint flags that are expected: O (out-of-tree module), E (unsigned module).
EXPECTED_TAINT = (1 << 12) | (1 << 13)
# The kernel's taint flags by bit: letter and meaning (taint_flags in kernel/panic.c,
# Documentation/admin-guide/tainted-kernels.rst), named in a report.
TAINT_FLAGS = (
    ("P", "proprietary module"), ("F", "module force-loaded"), ("S", "out of spec"),
    ("R", "module force-unloaded"), ("M", "machine check"), ("B", "bad page"),
    ("U", "taint requested by userspace"), ("D", "kernel died (oops or BUG)"),
    ("A", "ACPI table overridden"), ("W", "warning issued"), ("C", "staging driver"),
    ("I", "firmware workaround"), ("O", "out-of-tree module"), ("E", "unsigned module"),
    ("L", "soft lockup"), ("K", "live patched"), ("X", "auxiliary taint"),
    ("T", "structurally randomized build"), ("N", "in-kernel test"),
)  # fmt: skip


def taint_name(bit: int) -> str:
    """``W (warning issued, bit 9)`` for taint bit *bit*; ``bit N`` beyond the table."""
    if bit < len(TAINT_FLAGS):
        letter, meaning = TAINT_FLAGS[bit]
        return f"{letter} ({meaning}, bit {bit})"
    return f"bit {bit}"


KMEMLEAK = "/sys/kernel/debug/kmemleak"
SPLAT_BEFORE, SPLAT_AFTER = 3, 30  # the excerpt's lines around the first splat
TRACE_END = "---[ end trace"  # the last line of a WARN's or an oops's report
TRACE_MAX = 150  # the excerpt goes on to its trace's end, up to this many lines
LOG_TIMEOUT_S = 20.0  # reading the log (x host load); a leak scan gets more
LEAK_SCAN_TIMEOUT_S = 120.0  # a kmemleak scan of a KASAN kernel under TCG is slow


def kernel_splats(dmesg: str, tainted: int = 0) -> list[str]:
    """The lines of *dmesg* that report a kernel bug, and a line for each unexpected
    taint flag in *tainted* (``/proc/sys/kernel/tainted``: W warning, D oops, L soft
    lockup, ... also when the ring buffer lost the report)."""
    found = [line for line in dmesg.splitlines() if KERNEL_SPLAT.search(line)]
    bad = tainted & ~EXPECTED_TAINT
    found += [
        f"kernel tainted: {taint_name(bit)}" for bit in range(bad.bit_length()) if bad >> bit & 1
    ]
    return found


# The syslog prefix ``dmesg -r`` starts each line of a record with: ``<facility * 8 +
# level>``.  The kernel's own messages have facility 0 (LOG_KERN); a line userspace writes
# to /dev/kmsg has another (1, LOG_USER, unless it names one; never 0: the kernel makes a
# 0 a 1), even one that says ``<4>WARNING: ...``.
_RAW_PREFIX = re.compile(r"<(\d{1,4})>")


def kernel_lines(raw: str) -> tuple[str, str]:
    """``dmesg -r``'s output *raw* -> (the log without the prefixes, as ``dmesg`` shows
    it; the kernel's lines alone, those of facility 0).  A line without a prefix goes
    with the line before (a record's continuation) and, before any prefixed line (a
    kmemleak report read first, a ``dmesg`` without ``-r``), counts as the kernel's."""
    whole: list[str] = []
    kernel: list[str] = []
    facility = 0
    for line in raw.splitlines():
        m = _RAW_PREFIX.match(line)
        if m is not None:
            facility = int(m[1]) >> 3
            line = line[m.end() :]
        whole.append(line)
        if facility == 0:
            kernel.append(line)
    return "\n".join(whole), "\n".join(kernel)


def guest_kernel_log(
    guest: Guest, *, scan_leaks: bool = True, raw: bool = False
) -> tuple[str, int]:
    """The guest's kernel log (``dmesg``) and ``/proc/sys/kernel/tainted``, in one
    command; with *scan_leaks*, on a kernel with kmemleak, after a scan for leaks (with
    its report): slow under TCG, so once a session rather than after every test.  The
    log has userspace's lines too (written to /dev/kmsg); with *raw* each line keeps its
    syslog prefix (``dmesg -r``), which tells them from the kernel's
    (:func:`kernel_lines`; :func:`kernel_problems` counts only the kernel's)."""
    scan = (
        f"mount -t debugfs none /sys/kernel/debug 2>/dev/null; "
        f"if [ -w {KMEMLEAK} ]; then echo scan > {KMEMLEAK} && cat {KMEMLEAK}; fi; "
        if scan_leaks
        else ""
    )
    limit = (LEAK_SCAN_TIMEOUT_S if scan_leaks else LOG_TIMEOUT_S) * timeout_scale()
    # (busybox's dmesg and util-linux's both take -r; one that did not: plain dmesg)
    out = guest.sh(
        scan + "dmesg -r 2>/dev/null || dmesg; echo; cat /proc/sys/kernel/tainted",
        timeout=limit,
    )
    log, _, tainted = out.rstrip().rpartition("\n")
    return (log if raw else kernel_lines(log)[0]), int(tainted)


def kernel_report(lead: str, log: str, splats: list[str]) -> str:
    """*lead*, the splat lines (at most 50), then the kernel log around the first one:
    the lines before it (a WARN()'s own message) and after (where, the call trace, to
    its ``---[ end trace`` line within :data:`TRACE_MAX` lines; else
    :data:`SPLAT_AFTER`: a report with no such line)."""
    text = f"{lead}:\n" + "\n".join(splats[:50])
    lines = log.splitlines()
    reported = set(splats)  # (not a user's line that looks like one: the kernel's only)
    first = next((i for i, line in enumerate(lines) if line in reported), None)
    if first is not None:
        start = max(0, first - SPLAT_BEFORE)
        ends = (
            i for i in range(first, min(len(lines), first + TRACE_MAX)) if TRACE_END in lines[i]
        )
        stop = next(ends, first + SPLAT_AFTER)
        text += "\n--- kernel log around the first one\n" + "\n".join(lines[start : stop + 1])
    return text


@dataclass(frozen=True)
class KernelProblems:
    """What a guest's kernel log reports as bugs: the lines (:func:`kernel_splats`) and
    the log they are in."""

    splats: list[str]
    log: str

    def report(self, lead: str) -> str:
        """:func:`kernel_report` of them, after *lead*."""
        return kernel_report(lead, self.log, self.splats)


def kernel_problems(guest: Guest, *, scan_leaks: bool = True) -> KernelProblems | None:
    """Read the guest's kernel log (:func:`guest_kernel_log`, whose errors propagate)
    and scan it: what it reports as bugs, None when nothing.  Only the kernel's lines
    count (:func:`kernel_lines`): a line a test or a program wrote to /dev/kmsg (``echo
    '<4>WARNING: ...' > /dev/kmsg``) is userspace's, no kernel bug; it stays in the log."""
    text, tainted = guest_kernel_log(guest, scan_leaks=scan_leaks, raw=True)
    log, kernel = kernel_lines(text)
    splats = kernel_splats(kernel, tainted)
    return KernelProblems(splats, log) if splats else None


# The console's loglevel for a guest whose console is its kernel log's record: messages
# below it are printed, KERN_WARNING (4: a WARN()'s report, lockdep's) included.  The
# kernel runs ``quiet`` (4: errors and worse only).
CONSOLE_LOGLEVEL = 5


def console_shows_warnings(guest: Guest) -> bool:
    """Make *guest*'s serial console print the kernel's warnings too (its console
    loglevel :data:`CONSOLE_LOGLEVEL`; not saved in a snapshot: after every start).
    A guest that dies cannot be asked for its kernel log; its console log keeps what
    :func:`console_problems` reads.  Best effort: a guest that does not answer (SSH
    timing out on a loaded host) is said on the terminal (:func:`irqlab.notice.say`),
    never raised (the guest itself works: a test's failure on it would be none of the
    test's making); returns whether it was done."""
    try:
        guest.sh(
            f"echo {CONSOLE_LOGLEVEL} > /proc/sys/kernel/printk",
            timeout=LOG_TIMEOUT_S * timeout_scale(),
        )
    except Exception as e:  # whatever the SSH command raised: the guest goes on
        notice.say(
            f"irqlab: the console of the guest {guest.config.name!r} could not be made to print "
            f"the kernel's warnings ({type(e).__name__}: {e}): should it die, a warning "
            "before its death may be missing from its console log"
        )
        return False
    return True


# The printk timestamp that starts a kernel line on the console ("[    4.366610] ";
# CONFIG_PRINTK_TIME, set in the Debian and the buildroot kernels): what init, the
# agent or a shell write there (their stderr is the console too) has none.  A line
# where userspace's output ran on into the kernel's is the kernel's from the stamp on.
_PRINTK_STAMP = re.compile(r"\[\s*\d+\.\d+\] ")


def _kernel_part(line: str) -> str:
    """The kernel's part of a console line: from its printk timestamp on ("" if none)."""
    m = _PRINTK_STAMP.search(line)
    return line[m.start() :] if m is not None else ""


def console_problems(console: str) -> KernelProblems | None:
    """What a guest's serial console (*console*, its ``console.log``) reports as bugs
    before the report of its death: from the first panic or oops on (the health
    watch's verdict, told when the guest died; with the ``BUG:`` line naming an oops
    a few lines before it) the lines are left out.  Only the kernel's lines count
    (those with its printk timestamp): a ``WARNING:`` of init's or a test program's,
    which write on the console too, is no kernel bug (but one written to /dev/kmsg,
    printed with the stamp, is: the console shows no facility, unlike
    :func:`kernel_lines`).  The console shows what the
    kernel's console loglevel lets through (:func:`console_shows_warnings`), and no
    taint."""
    lines = printable(console).splitlines()
    end = next((i for i, line in enumerate(lines) if CONSOLE_FAULT.search(line)), len(lines))
    if end < len(lines) and OOPS.search(lines[end]):  # its BUG: line, a little before
        prelude = range(max(0, end - OOPS_PRELUDE_LINES), end)
        end = next((i for i in reversed(prelude) if OOPS_PRELUDE.search(lines[i])), end)
    before = "\n".join(lines[:end])
    splats = kernel_splats("\n".join(_kernel_part(line) for line in lines[:end]))
    return KernelProblems(splats, before) if splats else None
