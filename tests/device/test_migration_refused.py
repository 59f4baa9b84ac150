"""A migration stream the device could never have produced is refused on load.

The stream is a real one from a source QEMU with one field rewritten in place: the
source's ``burst-period-ns`` is set to a marker value that occurs once in the stream,
and the destination gets the stream with that value replaced.  QEMU 7.2 exits (status
1) when an incoming migration fails; what matters is that it refuses the state instead
of loading it (a zero period divides by zero when the next burst starts: SIGFPE).
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from devrig import FIFO, RAM_MSI, RigFactory, device_arg, migrate_in, migrate_in_start, migrate_out

from irqlab.contract.regs import QOM, REGS
from irqlab.testing.plugin import QtestMachineFactory
from irqlab.testing.qtest_pci import COMMAND_INTX_DISABLE, enable_msix
from irqlab.vm.qmp.injector import Injector

pytestmark = pytest.mark.device

PROPS: dict[str, object] = {"irq_mode": "msix", "gpio_lines": 8, "evq_depth": 16}
MARKER = 9_876_543_211  # a valid period (ns) whose 8 big-endian bytes occur once


def _stream_with_period(rig_factory: RigFactory, tmp_path: Path, period: int) -> Path:
    src = rig_factory(**PROPS)
    src.inj.set_burst_period(MARKER)
    image = tmp_path / "src.mig"
    migrate_out(src.machine, image)
    data = image.read_bytes()
    needle = struct.pack(">Q", MARKER)
    assert data.count(needle) == 1, "marker not unique in the stream"
    out = tmp_path / "patched.mig"
    out.write_bytes(data.replace(needle, struct.pack(">Q", period)))
    return out


@pytest.mark.parametrize("period", [0, 999, 10_000_000_001])
def test_stream_with_bad_burst_period_is_refused(
    rig_factory: RigFactory, irqlab_qtest_factory: QtestMachineFactory, tmp_path: Path,
    period: int,
) -> None:  # fmt: skip
    image = _stream_with_period(rig_factory, tmp_path, period)
    dst = irqlab_qtest_factory(device_arg(**PROPS), extra_args=["-incoming", "defer"])
    migrate_in_start(dst, image)
    # Refused: the incoming migration fails and QEMU 7.2 exits with status 1 (not a
    # signal).  Had the state loaded, QEMU would wait in "paused" for ever.
    assert dst.wait_exit(timeout=30) == 1


def test_stream_with_valid_period_loads(
    rig_factory: RigFactory, irqlab_qtest_factory: QtestMachineFactory, tmp_path: Path
) -> None:
    """The control: the same rewrite with a valid period loads and that period is used."""
    image = _stream_with_period(rig_factory, tmp_path, 5_000)
    dst = irqlab_qtest_factory(device_arg(**PROPS), extra_args=["-incoming", "defer"])
    migrate_in_start(dst, image)
    dst.wait_event("MIGRATION", timeout=30, match={"status": "completed"})
    assert (
        dst.qmp("qom-get", path="/machine/peripheral/irq0", property=QOM.PROP_BURST_PERIOD_NS)
        == 5_000
    )
    dst.qmp("qom-set", path="/machine/peripheral/irq0", property=QOM.PROP_BURST_COUNT, value=3)
    assert dst.is_running()


@pytest.mark.parametrize("src_broken", [False, True])
def test_broken_intx_disable_must_match(
    rig_factory: RigFactory, irqlab_qtest_factory: QtestMachineFactory, tmp_path: Path,
    src_broken: bool,
) -> None:  # fmt: skip
    """``COMMAND.INTX_DISABLE`` is writable on one side only: set by the guest on a
    source without ``broken-intx-disable`` it would stay set on a destination with it
    (INTx dead for good).  Either mismatch is refused; matching properties load."""
    src = rig_factory(irq_mode="intx", broken_intx_disable=src_broken)
    src.dev.cfg.set_command_bits(COMMAND_INTX_DISABLE)
    image = tmp_path / "src.mig"
    migrate_out(src.machine, image)
    for dst_broken in (not src_broken, src_broken):
        dst = irqlab_qtest_factory(
            device_arg(irq_mode="intx", broken_intx_disable=dst_broken),
            extra_args=["-incoming", "defer"],
        )
        migrate_in_start(dst, image)
        if dst_broken != src_broken:
            assert dst.wait_exit(timeout=30) == 1
        else:
            dst.wait_event("MIGRATION", timeout=30, match={"status": "completed"})
            dst.close()


def test_a_running_burst_without_its_timer_is_rearmed(
    rig_factory: RigFactory, irqlab_qtest_factory: QtestMachineFactory, tmp_path: Path
) -> None:
    """A stream whose running burst has no pending timer (expire -1) would stall the
    burst for good; the load arms the timer for the next step's deadline."""
    start, period = 1_000, 9_876_543_211
    src = rig_factory(**PROPS)
    src.qt.clock_set(start)
    src.inj.burst(5, period_ns=period)
    src.inj.set_burst_period(5_000)  # the next burst's: the marker stays the timer's
    image = tmp_path / "src.mig"
    migrate_out(src.machine, image)
    data = image.read_bytes()
    needle = struct.pack(">Q", start + period)  # the timer's expire time
    assert data.count(needle) == 1, "marker not unique in the stream"
    patched = tmp_path / "patched.mig"
    patched.write_bytes(data.replace(needle, struct.pack(">q", -1)))
    dst = irqlab_qtest_factory(device_arg(**PROPS), extra_args=["-incoming", "defer"])
    dst.qtest.clock_set(start)
    migrate_in(dst, patched)
    dst.qtest.clock_step(period)
    inj = Injector(dst, "irq0")
    assert inj.burst_remaining() == 3


def _stream_with_intx_state(
    rig_factory: RigFactory, tmp_path: Path, mode: str, patch: tuple[int, int] | None
) -> Path:
    """A stream of a device whose FIFO source is pending (INTx: the line high), with
    the device's (``last_pending``, ``intx_level``) rewritten to *patch*.  The two are
    found by what follows them, the counters ``raised`` and ``delivered`` (the first
    of the counter array, in the CNT_* registers' order)."""
    src = rig_factory(irq_mode=mode, gpio_lines=8, evq_depth=16)
    if mode == "msix":
        enable_msix(
            src.dev.cfg,
            src.dev.bar0 + REGS.MSIX_TABLE_OFFSET,
            [(RAM_MSI + 0x10 * i, 0x100 + i) for i in range(REGS.NUM_SOURCES)],
        )
    src.dev.write("IRQ_ENABLE", REGS.SRC_ALL)
    for word in (1, 2, 3):
        src.inj.push(word)
    c = src.inj.counters()
    assert (c.raised, c.delivered) == (3, 1)
    image = tmp_path / "src.mig"
    migrate_out(src.machine, image)
    data = image.read_bytes()
    level = 1 if mode == "intx" else 0
    needle = struct.pack(">IBQQ", FIFO, level, c.raised, c.delivered)
    assert data.count(needle) == 1, "last_pending/intx_level not found once in the stream"
    out = tmp_path / "patched.mig"
    if patch is None:
        out.write_bytes(data)
    else:
        out.write_bytes(data.replace(needle, struct.pack(">IBQQ", *patch, 3, 1)))
    return out


@pytest.mark.parametrize(
    ("mode", "patch"),
    [
        pytest.param("intx", (FIFO, 0), id="intx-line-high-level-low"),
        pytest.param("intx", (0, 1), id="intx-level-high-nothing-pending"),
        pytest.param("msix", (FIFO, 1), id="msix-level-high"),
    ],
)
def test_an_intx_level_the_device_could_not_have_is_refused(
    rig_factory: RigFactory, irqlab_qtest_factory: QtestMachineFactory, tmp_path: Path,
    mode: str, patch: tuple[int, int],
) -> None:  # fmt: skip
    """The device's INTx level must be the PCI core's (migrated with the function),
    low off the INTx route and high exactly while a source is pending there: loaded,
    a level low under a high line was never lowered again (INTA stuck for good)."""
    image = _stream_with_intx_state(rig_factory, tmp_path, mode, patch)
    dst = irqlab_qtest_factory(
        device_arg(irq_mode=mode, gpio_lines=8, evq_depth=16), extra_args=["-incoming", "defer"]
    )
    migrate_in_start(dst, image)
    assert dst.wait_exit(timeout=30) == 1


@pytest.mark.parametrize("mode", ["intx", "msix"])
def test_an_unpatched_intx_state_loads(
    rig_factory: RigFactory, irqlab_qtest_factory: QtestMachineFactory, tmp_path: Path,
    mode: str,
) -> None:  # fmt: skip
    """The control of the test above: the same stream, unpatched, loads."""
    image = _stream_with_intx_state(rig_factory, tmp_path, mode, None)
    dst = irqlab_qtest_factory(
        device_arg(irq_mode=mode, gpio_lines=8, evq_depth=16), extra_args=["-incoming", "defer"]
    )
    migrate_in_start(dst, image)
    dst.wait_event("MIGRATION", timeout=30, match={"status": "completed"})
    assert Injector(dst, "irq0").counters().raised == 3
