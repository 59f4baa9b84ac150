"""What a module load that never returns says (:func:`irqlab.vm.guest.hang_report`):
where the command waits in the kernel and the kernel's lines since the load began.
The error had 30 lines of the kernel log, all but the last the boot's, and no word of
where insmod was stuck."""

from __future__ import annotations

import pytest

from irqlab.vm.guest import (
    HANG_KMSG_MARK,
    HANG_PID_MARK,
    STEP_KMSG_MARK,
    Guest,
    GuestConfig,
    GuestTimeout,
    hang_report,
)
from irqlab.vm.ssh import RunResult

BOOT = "".join(f"[    0.{i:06d}] boot line {i}\n" for i in range(40))
STACK = "[<0>] msleep+0x29/0x40\n[<0>] mydrv_init+0x65/0x1000 [mydrv]\n"


def test_the_stuck_command_and_the_loads_own_lines_are_said() -> None:
    script = f'sh -c m="{STEP_KMSG_MARK}$$"; insmod /root/irqlab-extra/mydrv.ko'
    probe = (
        f"{HANG_PID_MARK} 147 msleep {script}\n{STACK}"
        f"{HANG_PID_MARK} 150 0 rmmod other\n"
        f"{HANG_KMSG_MARK}\n{BOOT}[    6.1] {STEP_KMSG_MARK}147-6.0\n[    6.2] mydrv: loading\n"
    )
    stacks, kmsg = hang_report(probe, "insmod mydrv.ko")
    assert stacks == (
        "where it waits in the kernel:\n"
        "  pid 147 `insmod mydrv.ko`, in msleep; its kernel stack:\n"
        "    [<0>] msleep+0x29/0x40\n"
        "    [<0>] mydrv_init+0x65/0x1000 [mydrv]\n"
        "  pid 150 `rmmod other`; its kernel stack:\n"
    )
    assert kmsg == "kernel messages since it began:\n[    6.2] mydrv: loading\n"


def test_without_a_step_mark_the_logs_tail_is_said_and_a_killed_command_too() -> None:
    stacks, kmsg = hang_report(f"{HANG_KMSG_MARK}\n{BOOT}", "insmod mydrv.ko")
    assert stacks.startswith("no insmod, modprobe or rmmod is left in the guest"), stacks
    assert kmsg.startswith("last kernel messages:\n[    0.000010] boot line 10\n"), kmsg
    assert kmsg.count("\n") == 31, kmsg


def test_a_driver_that_did_not_bind_says_the_loads_kernel_lines_not_the_boots() -> None:
    """``reload_module()`` whose node did not appear (the device bound to
    uio_pci_generic by an earlier test, its reset before the next test): the error
    quoted ``dmesg | tail -n 12``, the boot's lines and the harness's own step marks,
    none of them the load's; now the kernel's lines since the load began."""
    g = Guest(GuestConfig())
    kmsg = f"{BOOT}[    6.1] {STEP_KMSG_MARK}147-6.0\n[    6.2] irqlab: unbound here\n"
    commands: list[str] = []

    def sh(cmd: str, **_: object) -> str:
        commands.append(cmd)
        return kmsg

    held = ": the device's driver_override names uio_pci_generic"
    g._run_kernel_step = lambda script, what, timeout=None: RunResult(0, "absent\n", "")  # type: ignore[method-assign]
    g.sh = sh  # type: ignore[method-assign]
    g._held_elsewhere = lambda name: held  # type: ignore[method-assign]
    with pytest.raises(GuestTimeout) as info:
        g.reload_module()
    said = str(info.value)
    assert said.endswith(
        f"the driver did not bind the irqlab device{held}; kernel messages since it "
        "began:\n[    6.2] irqlab: unbound here"
    ), said
    assert "boot line" not in said and STEP_KMSG_MARK not in said, said
