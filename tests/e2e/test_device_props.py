"""GuestConfig.device_props (and ``irqlab run --device-prop``) reach QEMU as given: a
comma in a value is part of the value (QEMU's option syntax doubles it), never the
start of another option; QEMU's property parser judges the value in its own words."""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path

import pytest
from cli import irqlab  # same directory (rootdir-relative import)

from irqlab.contract.regs import QOM
from irqlab.vm.guest import Guest, GuestConfig, GuestConfigError
from irqlab.vm.machine import QemuExited


def processes_with(text: str) -> list[int]:
    """The processes whose command line holds *text*."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if text.encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
    return found


def refused(props: dict[str, str], log_dir: Path) -> QemuExited:
    """QEMU's refusal of a guest with *props*, the guest stopped."""
    g = Guest(GuestConfig(name="comma-value", device_props=props, log_dir=log_dir))
    try:
        with pytest.raises(QemuExited) as info:
            g.start()
    finally:
        g.close()
    return info.value


def test_a_comma_in_a_value_is_the_values(tmp_path: Path) -> None:
    marker = f"evil{uuid.uuid4().hex[:12]}"  # names this test's QEMU among the host's
    e = refused({QOM.PROP_IRQ_MODE: f"msi,id={marker}"}, tmp_path)
    # the device's own check saw the whole value, not irq-mode=msi plus an id
    assert f"irq-mode must be intx, msi or msix, not 'msi,id={marker}'" in e.said, e
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
    r = irqlab("run", "--device-prop", f"{QOM.PROP_IRQ_MODE}=msi,id={marker}", "--", "true")
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr and "QEMU failed to start" in r.stderr, r.stderr
    assert f"irq-mode must be intx, msi or msix, not 'msi,id={marker}'" in r.stderr, r.stderr
    assert processes_with(marker) == [], "QEMU is not left running"
