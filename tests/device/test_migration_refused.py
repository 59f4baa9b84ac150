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
from devrig import (
    BURST,
    FIFO,
    GPIO,
    RAM_MSI,
    RigFactory,
    device_arg,
    migrate_in,
    migrate_in_start,
    migrate_out,
)

from irqlab.contract.regs import QOM, REGS
from irqlab.testing.plugin import QtestMachineFactory
from irqlab.testing.qtest_device import QtestIrqlab
from irqlab.testing.qtest_pci import COMMAND_INTX_DISABLE, enable_msix, vector_ctrl
from irqlab.vm.machine import Machine
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


def _said(m: Machine, words: str) -> None:
    """The refused load's QEMU said *words* on stderr (the device's error_report)."""
    assert m.paths is not None
    said = m.paths.stderr_log.read_text(errors="replace")
    assert f"irqlab: {words}" in said, said


@pytest.mark.parametrize(
    "last_pending",
    [pytest.param(0, id="fifo-pending-not-signalled"),
     pytest.param(FIFO | GPIO, id="gpio-signalled-not-pending"),
     pytest.param(FIFO | BURST, id="burst-signalled-not-pending")],
)  # fmt: skip
def test_a_last_pending_unlike_the_pending_sources_is_refused(
    rig_factory: RigFactory, irqlab_qtest_factory: QtestMachineFactory, tmp_path: Path,
    last_pending: int,
) -> None:  # fmt: skip
    """``last_pending`` (IRQ_PENDING when last signalled) equals ``IRQ_STATUS &
    IRQ_ENABLE`` after every access.  Loaded unlike it, on MSI-X a source pending but
    not signalled is never signalled, and one signalled but not pending sends nothing
    on its next 0->1: a lost interrupt."""
    image = _stream_with_intx_state(rig_factory, tmp_path, "msix", (last_pending, 0))
    dst = irqlab_qtest_factory(
        device_arg(irq_mode="msix", gpio_lines=8, evq_depth=16), extra_args=["-incoming", "defer"]
    )
    migrate_in_start(dst, image)
    assert dst.wait_exit(timeout=30) == 1
    _said(dst, f"last signalled IRQ_PENDING {last_pending:#x} differs from IRQ_STATUS")


TS_MARKER = 9_876_543_217  # the clock at the raise: the event's timestamp, once in the stream
GPIO_LINE = 2
WORD = 0x5A5A_0F0F


def _info(source: int, line: int = 0, kind: int = 0, extra: int = 0) -> int:
    return source | line << REGS.EVINFO_LINE_SHIFT | kind << REGS.EVINFO_KIND_SHIFT | extra


def _stream_with_event(
    rig_factory: RigFactory, tmp_path: Path, source: int, patch: tuple[int, int] | None
) -> Path:
    """A stream whose queue holds one event (sequence 1; a FIFO word, or a rising edge
    of line 2), with its (seq, info) rewritten to *patch*; found by its value and
    timestamp."""
    src = rig_factory(irq_mode="msix", gpio_lines=8, evq_depth=16)
    src.qt.clock_set(TS_MARKER)
    if source == REGS.SRC_GPIO:
        src.dev.write("GPIO_RISING", 1 << GPIO_LINE)
        src.inj.set_line(GPIO_LINE, True)
        info, value = _info(source, GPIO_LINE, REGS.KIND_RISING), 1
    else:
        src.inj.push(WORD)
        info, value = _info(source), WORD
    head = src.dev.head()
    assert head is not None and (head.seq, head.ts) == (1, TS_MARKER)
    image = tmp_path / "src.mig"
    migrate_out(src.machine, image)
    data = image.read_bytes()
    needle = struct.pack(">IIIQ", 1, info, value, TS_MARKER)
    assert data.count(needle) == 1, "the event not found once in the stream"
    out = tmp_path / "patched.mig"
    if patch is None:
        out.write_bytes(data)
    else:
        out.write_bytes(data.replace(needle, struct.pack(">IIIQ", *patch, value, TS_MARKER)))
    return out


BAD_EVENTS = [
    pytest.param(REGS.SRC_FIFO, (0, _info(REGS.SRC_FIFO)), id="seq-0"),
    pytest.param(REGS.SRC_FIFO, (1, _info(REGS.SRC_FIFO, extra=REGS.EVINFO_VALID)),
                 id="valid-bit"),
    pytest.param(REGS.SRC_FIFO, (1, _info(REGS.SRC_FIFO, extra=1 << 20)), id="bit-20"),
    pytest.param(REGS.SRC_FIFO, (1, _info(REGS.SRC_FIFO, extra=1 << 31)), id="bit-31"),
    pytest.param(REGS.SRC_FIFO, (1, _info(REGS.SRC_FIFO, line=3)), id="fifo-with-line"),
    pytest.param(REGS.SRC_FIFO, (1, _info(REGS.SRC_FIFO, kind=REGS.KIND_FALLING)),
                 id="fifo-with-kind"),
    pytest.param(REGS.SRC_GPIO, (1, _info(REGS.SRC_GPIO, 8, REGS.KIND_RISING)),
                 id="gpio-line-8-of-8"),
    pytest.param(REGS.SRC_GPIO, (1, _info(REGS.SRC_GPIO, GPIO_LINE, REGS.KIND_LEVEL_LOW + 1)),
                 id="gpio-kind-4"),
]  # fmt: skip


@pytest.mark.parametrize(("source", "patch"), BAD_EVENTS)
def test_a_queued_event_the_device_could_not_raise_is_refused(
    rig_factory: RigFactory, irqlab_qtest_factory: QtestMachineFactory, tmp_path: Path,
    source: int, patch: tuple[int, int],
) -> None:  # fmt: skip
    """Sequence 0 is "queue empty" to the guest, the driver indexes its lines by the
    line field, and VALID or undefined info bits are never stored: such an event is
    refused, not handed to the guest."""
    image = _stream_with_event(rig_factory, tmp_path, source, patch)
    dst = irqlab_qtest_factory(
        device_arg(irq_mode="msix", gpio_lines=8, evq_depth=16), extra_args=["-incoming", "defer"]
    )
    migrate_in_start(dst, image)
    assert dst.wait_exit(timeout=30) == 1
    _said(dst, f"queued event seq {patch[0]} info {patch[1]:#x} is not one the device raises")


@pytest.mark.parametrize(
    ("source", "patch"),
    [pytest.param(REGS.SRC_FIFO, None, id="fifo-unpatched"),
     pytest.param(REGS.SRC_GPIO, None, id="gpio-unpatched"),
     pytest.param(REGS.SRC_GPIO,
                  (7, _info(REGS.SRC_GPIO, 7, REGS.KIND_LEVEL_LOW, REGS.EVINFO_DROPPED)),
                  id="gpio-line-7-level-low-dropped")],
)  # fmt: skip
def test_a_queued_event_the_device_could_raise_loads(
    rig_factory: RigFactory, irqlab_qtest_factory: QtestMachineFactory, tmp_path: Path,
    source: int, patch: tuple[int, int] | None,
) -> None:  # fmt: skip
    """The control of the test above: the last line, the last kind and DROPPED load."""
    image = _stream_with_event(rig_factory, tmp_path, source, patch)
    dst = irqlab_qtest_factory(
        device_arg(irq_mode="msix", gpio_lines=8, evq_depth=16), extra_args=["-incoming", "defer"]
    )
    migrate_in(dst, image)
    ev = QtestIrqlab.attach(dst.qtest).head()
    assert ev is not None and ev.ts == TS_MARKER
    if patch is not None:
        assert (ev.seq, ev.line, ev.kind, ev.dropped) == (7, 7, REGS.KIND_LEVEL_LOW, True)


def test_a_parked_message_of_a_serviced_source_is_withdrawn_on_load(
    rig_factory: RigFactory, irqlab_qtest_factory: QtestMachineFactory, tmp_path: Path
) -> None:
    """A build before the withdrawal left a masked vector's PBA bit set after its
    source was serviced; loaded, unmasking the vector would send that message for
    nothing.  The load withdraws it (the stream: the FIFO vector masked, its status
    cleared, the PBA bit set again in the stream)."""
    slots = [RAM_MSI + 0x10 * i for i in range(REGS.NUM_SOURCES)]
    vectors = [(a, 0x100 + i) for i, a in enumerate(slots)]
    src = rig_factory(irq_mode="msix", gpio_lines=8, evq_depth=16)
    table = src.dev.bar0 + REGS.MSIX_TABLE_OFFSET
    enable_msix(src.dev.cfg, table, vectors)
    src.qt.writel(vector_ctrl(table, REGS.SRC_FIFO), 1)
    src.dev.write("IRQ_ENABLE", REGS.SRC_ALL)
    src.inj.push(1)
    src.dev.write("IRQ_STATUS", FIFO)
    assert src.qt.readl(src.dev.bar0 + REGS.MSIX_PBA_OFFSET) == 0
    entries = b"".join(
        struct.pack("<IIII", a, 0, d, 1 if i == REGS.SRC_FIFO else 0)
        for i, (a, d) in enumerate(vectors)
    )
    image = tmp_path / "src.mig"
    migrate_out(src.machine, image)
    data = image.read_bytes()
    needle = entries + bytes([0])  # the MSI-X table, then the PBA (one byte)
    assert data.count(needle) == 1, "the MSI-X table not found once in the stream"
    patched = tmp_path / "patched.mig"
    patched.write_bytes(data.replace(needle, entries + bytes([1 << REGS.SRC_FIFO])))
    dst = irqlab_qtest_factory(
        device_arg(irq_mode="msix", gpio_lines=8, evq_depth=16), extra_args=["-incoming", "defer"]
    )
    migrate_in(dst, patched)
    dev = QtestIrqlab.attach(dst.qtest)
    for a in slots:
        dst.qtest.writel(a, 0)
    assert dst.qtest.readl(dev.bar0 + REGS.MSIX_PBA_OFFSET) == 0
    dst.qtest.writel(vector_ctrl(dev.bar0 + REGS.MSIX_TABLE_OFFSET, REGS.SRC_FIFO), 0)
    assert [dst.qtest.readl(a) for a in slots] == [0, 0, 0]
    assert Injector(dst, "irq0").counters().delivered == 0
