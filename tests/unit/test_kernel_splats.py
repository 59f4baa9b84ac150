"""The kernel-log scan that ends the e2e session (and the Buildroot CI run) finds splats."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from irqlab.testing.helpers import EXPECTED_TAINT, kernel_report, kernel_splats

CLEAN = """\
[    1.679955] irqlab: module verification failed: signature and/or required key missing
[    1.704462] irqlab 0000:00:03.0: irqlab0: id 0x1a5b0100, msix x3, hardirq, 32 gpio lines
[    2.317328] IPv6: ADDRCONF(NETDEV_CHANGE): eth0: link becomes ready
"""


@pytest.mark.parametrize(
    "line",
    [
        "[   12.1] BUG: KASAN: slab-use-after-free in irqlab_gpio_work_fn+0x2c/0x1a0",
        "[   12.2] WARNING: CPU: 0 PID: 57 at kernel/workqueue.c:1438 __queue_work+0x3b5/0x4b0",
        "[   12.3] WARNING: possible circular locking dependency detected",
        "[   12.4] kmemleak: 2 new suspected memory leaks (see /sys/kernel/debug/kmemleak)",
        "[   12.5] BUG: sleeping function called from invalid context at mm/slab.h:742",
        "[   12.6] Oops: general protection fault, probably for non-canonical address",
        "[   12.7] watchdog: BUG: soft lockup - CPU#0 stuck for 26s! [kworker/0:1H:37]",
        "[   12.8] INFO: task rmmod:312 blocked for more than 120 seconds.",
        "unreferenced object 0xffff888004a1c000 (size 64):",
        "[   12.9] ODEBUG: free active (active state 0) object: 0000 object type: work_struct",
        "[   13.0] Kernel panic - not syncing: sysrq triggered crash",
        "[   13.1] watchdog: Watchdog detected hard LOCKUP on cpu 1",
    ],
)
def test_a_splat_is_found(line: str) -> None:
    assert kernel_splats(CLEAN + line + "\n") == [line]


def test_every_console_fault_is_a_splat() -> None:
    """What the health watch calls a fault on the console, the log scan reports too
    (one list of patterns, extended, not a second copy)."""
    from irqlab.vm.health import CONSOLE_FAULTS

    lines = {
        "guest kernel panic": "Kernel panic - not syncing: Fatal exception",
        "guest kernel oops": "general protection fault, probably for non-canonical address "
        "0xdead000000000122: 0000 [#1] PREEMPT SMP NOPTI",
    }
    assert sorted(lines) == sorted(cause for _, cause in CONSOLE_FAULTS)
    for line in lines.values():
        assert kernel_splats(line) == [line]


@pytest.mark.parametrize(
    "line",
    [
        "[   25.1] BUG: sleeping function called from invalid context at mm/slab.h:742",
        "[   30.5] BUG: scheduling while atomic: insmod/312/0x00000002",
        "[   52.2] watchdog: BUG: soft lockup - CPU#0 stuck for 26s! [kworker/0:1H:37]",
        "[  242.1] INFO: task python3:120 blocked for more than 120 seconds.",
        "[   12.1] BUG: KASAN: slab-use-after-free in irqlab_gpio_work_fn+0x2c/0x1a0",
    ],
)
def test_a_report_the_watch_leaves_to_the_check_is_a_splat(line: str) -> None:
    """The health watch ends a guest on a panic or an oops only: the reports the guest
    lives on after are this check's (they were splats as console faults before)."""
    from irqlab.vm.health import CONSOLE_FAULT

    assert not CONSOLE_FAULT.search(line)
    assert kernel_splats(CLEAN + line + "\n") == [line]


def test_a_clean_log_with_the_expected_taint_passes() -> None:
    assert kernel_splats(CLEAN, tainted=EXPECTED_TAINT) == []


def test_kmemleaks_own_boot_lines_are_no_report() -> None:
    """The Buildroot debug kernel prints them at every boot: a bare "kmemleak" in the
    pattern made every test of a fresh guest fail there."""
    boot = (
        "[ 0.41] kmemleak: Kernel memory leak detector initialized (mem pool available: 15783)\n"
        "[    0.413] kmemleak: Automatic memory scanning thread started\n"
    )
    assert kernel_splats(CLEAN + boot) == []
    leak = "[   60.1] kmemleak: 2 new suspected memory leaks (see /sys/kernel/debug/kmemleak)"
    assert kernel_splats(CLEAN + boot + leak + "\n") == [leak]


def test_an_unexpected_taint_is_reported_even_without_a_log_line() -> None:
    assert kernel_splats(CLEAN, tainted=(1 << 9) | (1 << 12)) == [
        "kernel tainted: W (warning issued, bit 9)"
    ]


def test_the_report_shows_the_log_around_the_first_splat() -> None:
    """The WARN()'s own message comes on the line before "WARNING:", the call trace
    after: the splat lines alone said neither."""
    log = CLEAN + (
        "[ 4.30] remove_proc_entry: removing non-empty directory 'irq/24'\n"
        "[ 4.31] WARNING: CPU: 0 PID: 185 at fs/proc/generic.c:740 remove_proc_entry\n"
        "[ 4.32] Call Trace:\n"
        "[ 4.33]  free_desc+0x4b/0x70\n"
    )
    splats = kernel_splats(log, tainted=1 << 9)
    text = kernel_report("problems", log, splats)
    head, _, around = text.partition("\n--- kernel log around the first one\n")
    assert head.splitlines() == ["problems:", *splats]
    assert "WARNING: CPU: 0" in around.splitlines()[3]  # after the 3 lines before it
    assert "removing non-empty directory 'irq/24'" in around and "free_desc" in around
    assert kernel_report("x", CLEAN, ["kernel tainted: bit 9"]) == "x:\nkernel tainted: bit 9"


class _LogGuest:
    """A guest whose shell answers the kernel-log read with *log* and *tainted*."""

    def __init__(self, log: str, tainted: int = EXPECTED_TAINT) -> None:
        self.out = f"{log}\n{tainted}\n"
        self.commands: list[str] = []

    def sh(self, command: str, timeout: float) -> str:
        self.commands.append(command)
        return self.out


WARN = "[ 4.31] WARNING: CPU: 0 PID: 185 at fs/proc/generic.c:740 remove_proc_entry"


def test_one_read_and_scan_serves_every_check(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """kernel_problems reads the log, scans it and reports it, for the snapshot's
    refusal, the per-test check (the plugin) and check_guest_kernel_log alike."""
    from irqlab.testing import helpers, plugin
    from irqlab.vm.kernlog import KMEMLEAK, kernel_problems

    clean = _LogGuest(CLEAN)
    assert kernel_problems(clean, scan_leaks=False) is None  # type: ignore[arg-type]
    assert KMEMLEAK not in clean.commands[0]
    helpers.check_guest_kernel_log(clean)  # type: ignore[arg-type]
    assert KMEMLEAK in clean.commands[1]  # the session's check scans for leaks first
    bad = _LogGuest(CLEAN + WARN)
    problems = kernel_problems(bad, scan_leaks=False)  # type: ignore[arg-type]
    assert problems is not None and problems.splats == [WARN]
    assert problems.report("lead") == kernel_report("lead", CLEAN + WARN, [WARN])
    with pytest.raises(AssertionError) as info:
        helpers.check_guest_kernel_log(bad)  # type: ignore[arg-type]
    assert str(info.value) == problems.report("the guest kernel reported problems")
    bad_guest = SimpleNamespace(
        sh=bad.sh, fault=None, ssh=object(), machine=SimpleNamespace(is_running=lambda: True)
    )
    log = tmp_path / "test" / "dmesg.log"
    with pytest.raises(pytest.fail.Exception) as failed:
        plugin._check_kernel_log(bad_guest, "the lead", log)  # type: ignore[arg-type]
    assert str(failed.value).startswith("the lead:\n")
    report, _, whole = str(failed.value).rpartition("\n")
    assert report.endswith(problems.report("x").partition("\n")[2])
    assert whole == f"(the whole kernel log: {log})"  # a quiet guest's console has none
    assert log.read_text() == CLEAN + WARN + "\n"
    assert KMEMLEAK not in bad.commands[-1]  # not after every test: slow under TCG


def test_taint_bits_are_named_by_the_kernels_letters() -> None:
    from irqlab.vm.kernlog import EXPECTED_TAINT, TAINT_FLAGS, taint_name

    assert taint_name(7) == "D (kernel died (oops or BUG), bit 7)"
    assert taint_name(14) == "L (soft lockup, bit 14)"
    assert taint_name(40) == "bit 40"
    # the expected ones are O and E, as the table names them
    expected = [TAINT_FLAGS[b][0] for b in range(len(TAINT_FLAGS)) if EXPECTED_TAINT >> b & 1]
    assert expected == ["O", "E"]
    assert "".join(letter for letter, _ in TAINT_FLAGS) == "PFSRMBUDAWCIOELKXTN"


def test_the_report_quotes_the_first_trace_to_its_end() -> None:
    """A WARN's call trace is longer than 30 lines under a debug kernel: the quote
    stopped mid-trace; it goes on to the "---[ end trace" line, within a bound."""
    trace = [f"[ 4.{i:02d}]  frame_{i}+0x1/0x2" for i in range(40)]
    log = CLEAN + "\n".join(
        [
            "[ 4.00] WARNING: CPU: 0 PID: 1 at x.c:1 f",
            "[ 4.00] Call Trace:",
            *trace,
            "[ 4.99] ---[ end trace 0000000000000000 ]---",
            "[ 5.00] an unrelated line after it",
        ]
    )
    around = kernel_report("p", log, kernel_splats(log)).split("around the first one\n")[1]
    assert around.splitlines()[-1].endswith("---[ end trace 0000000000000000 ]---"), around
    assert "frame_39" in around and "unrelated" not in around
    endless = CLEAN + "[ 4.00] WARNING: CPU: 0\n" + "\n".join(trace * 10)
    around = kernel_report("p", endless, kernel_splats(endless)).split("first one\n")[1]
    assert len(around.splitlines()) == 3 + 1 + 30  # no end in sight: as before
