"""A driver that loads but does not bind is explained by its own words about the device
(a module parameter that does not fit the device: "no interrupt of type msi"), not by
the taint lines or the generic hint that it may not be our driver."""

from __future__ import annotations

from irqlab.vm.guest import probe_failure

KMSG = """\
[    2.04] irqlab: loading out-of-tree module taints kernel.
[    2.04] irqlab: module verification failed: signature and/or required key missing - tainting
[    2.05] irqlab 0000:00:04.0: enabling device (0000 -> 0002)
[    2.05] irqlab 0000:00:04.0: error -EINVAL: no interrupt of type msi
[    2.05] irqlab: probe of 0000:00:04.0 failed with error -22
"""


def test_the_drivers_own_words_about_the_device_come_first() -> None:
    assert (
        probe_failure(KMSG, "irqlab")
        == "irqlab 0000:00:04.0: error -EINVAL: no interrupt of type msi"
    )


def test_the_cores_line_when_the_driver_said_nothing() -> None:
    kmsg = "\n".join(line for line in KMSG.splitlines() if "no interrupt" not in line)
    assert probe_failure(kmsg, "irqlab") == "irqlab: probe of 0000:00:04.0 failed with error -22"


def test_nothing_when_no_probe_failed() -> None:
    kmsg = "\n".join(KMSG.splitlines()[:3])  # taint lines and an enabled device only
    assert probe_failure(kmsg, "irqlab") is None
    assert probe_failure(KMSG, "mydrv") is None


def test_only_this_steps_messages_count() -> None:
    """A session guest's log holds an earlier load's failure: not this step's reason."""
    kmsg = (
        KMSG + "[    9.00] irqlab-step-321-8.99\n[    9.01] irqlab 0000:00:04.0: enabling device\n"
    )
    assert probe_failure(kmsg, "irqlab") is None
