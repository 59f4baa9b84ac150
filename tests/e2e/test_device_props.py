"""GuestConfig.device_props (and ``irqlab run --device-prop``) reach QEMU as given: a
comma in a value is part of the value (QEMU's option syntax doubles it), never the
start of another option; QEMU's property parser judges the value in its own words.
A value the irqlab device refuses (a count, a mode, a bool) is refused before QEMU starts."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from cli import irqlab  # same directory (rootdir-relative import)

from irqlab.contract.regs import QOM
from irqlab.testing.helpers import host_processes
from irqlab.vm.guest import Guest, GuestConfig, GuestConfigError
from irqlab.vm.machine import QemuExited


def processes_with(text: str) -> list[int]:
    """The processes whose command line holds *text*."""
    return [p.pid for p in host_processes() if text.encode() in p.cmdline()]


def refused(props: dict[str, str], log_dir: Path) -> QemuExited:
    """QEMU's refusal of a guest with *props*, the guest stopped."""
    g = Guest(GuestConfig(name="comma-value", device_props=props, log_dir=log_dir))
    try:
        with pytest.raises(QemuExited) as info:
            g.start()
    finally:
        g.close()
    return info.value


ROMFILE = "romfile"  # every PCI device's: a string QEMU judges (the ROM file it looks for)


def test_a_comma_in_a_value_is_the_values(tmp_path: Path) -> None:
    marker = f"evil{uuid.uuid4().hex[:12]}"  # names this test's QEMU among the host's
    e = refused({ROMFILE: f"none,id={marker}"}, tmp_path)
    # QEMU's PCI core saw the whole value, not romfile=none plus an id
    assert f'failed to find romfile "none,id={marker}"' in e.said, e
    assert processes_with(marker) == [], "QEMU is not left running"
    # the message names the logs' directory: not a second time in a note (pytest shows both)
    assert f"logs in {tmp_path}/" in str(e), e
    assert not [n for n in getattr(e, "__notes__", ()) if n.startswith("logs: ")], e.__notes__
    # a count's comma: refused before QEMU starts (QEMU said "Parameter 'fifo-depth'
    # expects ..." after a boot had begun)
    with pytest.raises(GuestConfigError, match=r"'16,gpio-lines=8' is not a whole number 1\.\."):
        GuestConfig(device_props={QOM.PROP_FIFO_DEPTH: f"16,{QOM.PROP_GPIO_LINES}=8"})


def test_run_device_prop_with_a_comma_shows_qemus_refusal() -> None:
    marker = f"evil{uuid.uuid4().hex[:12]}"
    r = irqlab("run", "--device-prop", f"{ROMFILE}=none,id={marker}", "--", "true")
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr and "QEMU failed to start" in r.stderr, r.stderr
    assert f'failed to find romfile "none,id={marker}"' in r.stderr, r.stderr
    assert processes_with(marker) == [], "QEMU is not left running"


def test_run_device_prop_the_device_refuses_is_a_usage_error_before_qemu_starts() -> None:
    """``--device-prop irq-mode=msi,id=...`` (a mode the device has not) got QEMU's
    refusal after "booting the guest cold", exit 1: now exit 2 at once, naming the
    property and its values; no QEMU ran."""
    marker = f"evil{uuid.uuid4().hex[:12]}"
    r = irqlab("run", "--device-prop", f"{QOM.PROP_IRQ_MODE}=msi,id={marker}", "--", "true")
    assert r.returncode == 2, r.stderr
    assert r.stderr == (
        f"irqlab: --device-prop {QOM.PROP_IRQ_MODE!r}: 'msi,id={marker}' is not one of its "
        "values: intx, msi, msix (the header's IRQLAB_IRQ_MODE_*, irqlab-regs.h)\n"
    ), r.stderr
    assert processes_with(marker) == [], "no QEMU started"
    r = irqlab("run", "--device-prop", f"{QOM.PROP_BROKEN_INTX_DISABLE}=maybe", "--", "true")
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith(
        f"irqlab: --device-prop {QOM.PROP_BROKEN_INTX_DISABLE!r}: 'maybe' is not a bool: it "
        "takes True or False, or QEMU's words for one: on, yes, true, y; off, no, false, n"
    ), r.stderr
    assert "booting" not in r.stderr and "QEMU failed" not in r.stderr, r.stderr
