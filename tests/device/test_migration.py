"""Migration to a file and back keeps the device's state (VMState), including a running burst."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from devrig import FIFO, GPIO, RigFactory, device_arg, migrate_in, migrate_out

from irqlab.contract import spec
from irqlab.contract.regs import QOM, REGS
from irqlab.testing.plugin import QtestMachineFactory
from irqlab.testing.qtest_device import QtestIrqlab
from irqlab.vm.qmp.injector import Injector

pytestmark = pytest.mark.device

P = 10_000
PROPS: dict[str, object] = {"irq_mode": "msix", "gpio_lines": 16, "evq_depth": 64}
# Every register of the header is read before and after migration and compared, but
# these (a new register is compared without a change here).  Registers are read in the
# header's order, so a _HI right after its _LO: the pair's 64-bit value is compared.
NOT_COMPARED = {
    "EVQ_POP": "write-only, a command: reads 0 on any device",
    "ACK": "write-only, a command: reads 0 on any device",
}
REGS_COMPARED = tuple(r for r in REGS.with_prefix("REG_") if r not in NOT_COMPARED)
# The registers the guest writes state into: the scenario leaves none at 0, so a
# register VMState forgot shows as a difference (a 0 would read 0 after a forgetful load).
GUEST_SET = tuple(r for r, row in spec.registers().items() if row.access in ("RW", "W1C"))


def test_the_exclusions_name_registers_of_the_header() -> None:
    assert set(NOT_COMPARED) <= set(REGS.with_prefix("REG_"))
    assert set(GUEST_SET) <= set(REGS_COMPARED) and len(GUEST_SET) >= 8


def _state(dev: QtestIrqlab, inj: Injector) -> dict[str, Any]:
    return {
        "regs": {r: dev.read(r) for r in REGS_COMPARED},
        QOM.PROP_COUNTERS: inj.counters(),
        "histogram": inj.histogram(),
        "period": inj.burst_period(),
        "head": dev.head(),
        "clock": dev.qt.clock(),
    }


def test_state_survives_migration(
    rig_factory: RigFactory, irqlab_qtest_factory: QtestMachineFactory, tmp_path: Path
) -> None:
    src = rig_factory(**PROPS)
    d, inj = src.dev, src.inj
    d.write("IRQ_ENABLE", GPIO | FIFO)
    d.write("SCRATCH", 0x5EED)
    d.write("GPIO_RISING", 0x00FF)
    d.write("GPIO_FALLING", 0x0F00)
    d.write("GPIO_LEVEL_HIGH", 0x8000)
    d.write("GPIO_IRQ_EN", 0x00F0)
    inj.set_lines(0x8011)
    d.write("GPIO_LEVEL_LOW", 0x0010)  # line 4, high: nothing detected
    inj.push(0xFEED)
    first = d.pop()
    assert first is not None
    src.qt.clock_step(777)
    d.ack(first.seq)
    d.ack(4242)
    inj.set_burst_period(3 * P)
    inj.burst(5, period_ns=P)
    src.qt.clock_step(2 * P)  # 3 of 5 burst events so far
    inj.set_burst_period(4 * P)
    before = _state(d, inj)
    assert before["regs"]["BURST_REMAINING"] == 2
    left_at_zero = [r for r in GUEST_SET if before["regs"][r] == 0]
    assert not left_at_zero, f"give these a value in the scenario: {left_at_zero}"

    image = tmp_path / "irqlab.mig"
    migrate_out(src.machine, image)
    dst_m = irqlab_qtest_factory(device_arg(**PROPS), extra_args=["-incoming", "defer"])
    migrate_in(dst_m, image)
    dst = QtestIrqlab.attach(dst_m.qtest, d.bar0)  # BAR0 came along in config space
    dst_inj = Injector(dst_m, "irq0")
    # qtest's virtual clock is a counter outside the migration stream (with TCG/KVM the
    # clock migrates): bring it to the source's time; nothing is due until then.
    assert dst_m.qtest.clock_set(before["clock"]) == before["clock"]
    assert _state(dst, dst_inj) == before

    dst_m.qtest.clock_step(2 * P)  # the burst goes on where it stopped
    events = dst.drain()
    burst = [e for e in events if e.source == REGS.SRC_BURST]
    assert [e.value for e in burst] == [0, 1, 2, 3, 4]
    t0 = burst[0].ts
    assert [e.ts for e in burst] == [t0 + i * P for i in range(5)]
    assert dst_inj.counters().raised == before[QOM.PROP_COUNTERS].raised + 2


@pytest.mark.parametrize("line", [None, 3])
def test_burst_line_survives_migration(
    rig_factory: RigFactory, irqlab_qtest_factory: QtestMachineFactory, tmp_path: Path,
    line: int | None,
) -> None:  # fmt: skip
    """A burst on a GPIO line goes on toggling that line after migration (the
    ``irqlab/burst-line`` subsection); without a line the stream has no subsection and
    the destination keeps the default."""
    src = rig_factory(**PROPS)
    src.dev.write("GPIO_RISING", 0xFFFF)
    src.dev.write("GPIO_FALLING", 0xFFFF)
    src.inj.burst(6, period_ns=P, line=line)
    src.qt.clock_step(2 * P)  # 3 of 6 steps
    seq_before = [e.seq for e in src.dev.drain()]
    clock = src.qt.clock()
    image = tmp_path / "irqlab.mig"
    migrate_out(src.machine, image)
    dst_m = irqlab_qtest_factory(device_arg(**PROPS), extra_args=["-incoming", "defer"])
    migrate_in(dst_m, image)
    dst = QtestIrqlab.attach(dst_m.qtest, src.dev.bar0)
    dst_inj = Injector(dst_m, "irq0")
    assert dst_inj.burst_line() == line
    dst_m.qtest.clock_set(clock)
    dst_m.qtest.clock_step(10 * P)
    after = dst.drain()
    assert [e.seq for e in after] == [seq_before[-1] + i for i in range(1, 4)]
    want = REGS.SRC_BURST if line is None else REGS.SRC_GPIO
    assert {e.source for e in after} == {want}
    if line is not None:
        assert [e.kind for e in after] == [REGS.KIND_FALLING, REGS.KIND_RISING,
                                           REGS.KIND_FALLING]  # fmt: skip
        assert {e.line for e in after} == {line}
