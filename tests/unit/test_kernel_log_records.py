"""Only the kernel's lines of its log are kernel reports: a line userspace wrote to
/dev/kmsg (``echo '<4>WARNING: ...' > /dev/kmsg``: facility 1, user, never 0) failed the
session as a kernel bug.  The log is read with its syslog prefixes (``dmesg -r``:
``<facility * 8 + level>`` on each line) and the records of a facility other than 0
(the kernel's) are left out of the scan, kept in the log."""

from __future__ import annotations

from irqlab.vm.kernlog import kernel_lines, kernel_problems

RAW = """\
<6>[    1.70] irqlab 0000:00:03.0: irqlab0: id 0x1a5b0100, msix x3
<12>[    4.00] WARNING: CPU: 0 PID: 1 at chaos21 fake warning
<14>[    4.10] irqlab-test: a test's marker
<11>[    4.20] BUG: a user's line at KERN_ERR
<4>[    4.30] WARNING: CPU: 0 PID: 185 at fs/proc/generic.c:740 remove_proc_entry
<4>[    4.31] Call Trace:
<4>[    4.32]  free_desc+0x4b/0x70
"""
KERNEL_WARN = "[    4.30] WARNING: CPU: 0 PID: 185 at fs/proc/generic.c:740 remove_proc_entry"


def test_records_of_userspace_are_kept_in_the_log_and_left_out_of_the_kernels() -> None:
    whole, kernel = kernel_lines(RAW)
    assert whole.splitlines()[1] == "[    4.00] WARNING: CPU: 0 PID: 1 at chaos21 fake warning"
    assert len(whole.splitlines()) == 7 and "<" not in whole
    assert kernel.splitlines() == [
        "[    1.70] irqlab 0000:00:03.0: irqlab0: id 0x1a5b0100, msix x3",
        KERNEL_WARN,
        "[    4.31] Call Trace:",
        "[    4.32]  free_desc+0x4b/0x70",
    ]


def test_a_line_without_a_prefix_goes_with_the_record_before() -> None:
    """A record's continuation; before any prefix (a kmemleak report read first, a
    dmesg that printed no prefixes) the kernel's."""
    leak = "unreferenced object 0xffff888004a1c000 (size 64):"
    raw = f"{leak}\n<14>user: a\ncontinued\n<0>k\n"
    assert kernel_lines(raw)[1].splitlines() == [leak, "k"]
    assert kernel_lines("[ 1.0] plain dmesg\n") == ("[ 1.0] plain dmesg", "[ 1.0] plain dmesg")


class _RawGuest:
    """A guest whose shell answers the kernel-log read with *raw* (and a taint)."""

    def __init__(self, raw: str, tainted: int = 1 << 12) -> None:
        self.out = f"{raw}\n{tainted}\n"
        self.commands: list[str] = []

    def sh(self, command: str, timeout: float) -> str:
        self.commands.append(command)
        return self.out


def test_only_the_kernels_lines_are_problems_and_the_report_quotes_the_first() -> None:
    user_only = "".join(RAW.splitlines(keepends=True)[:4])
    g = _RawGuest(user_only)
    assert kernel_problems(g, scan_leaks=False) is None  # type: ignore[arg-type]
    assert "dmesg -r" in g.commands[0]
    problems = kernel_problems(_RawGuest(RAW), scan_leaks=False)  # type: ignore[arg-type]
    assert problems is not None and problems.splats == [KERNEL_WARN]
    report = problems.report("lead")
    around = report.partition("\n--- kernel log around the first one\n")[2].splitlines()
    # around the kernel's WARNING, not the user's before it; the user's lines are there
    assert around[3] == KERNEL_WARN and "free_desc" in around[-1], report
    assert "irqlab-test: a test's marker" in problems.log
