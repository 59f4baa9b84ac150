"""A late burst timer: catch-up steps keep their deadlines, and a late storm is bounded.

Under qtest the virtual clock only moves by ``clock_step``/``clock_set``, which run
every timer at its deadline: the burst timer is never late.  It is late after a
migration into a QEMU whose clock is already past the timer's deadline (with TCG or
KVM: whenever the main loop runs the timer late), so these tests save a running burst
and load it into a destination whose clock was moved ahead first.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from devrig import RAM_MSI, RigFactory, device_arg, migrate_in, migrate_out

from irqlab.contract.regs import REGS
from irqlab.testing.plugin import QtestMachineFactory
from irqlab.testing.qtest_device import DEFAULT_BAR0, QtestIrqlab, reg
from irqlab.testing.qtest_pci import enable_msix
from irqlab.vm.qmp.injector import Injector

pytestmark = pytest.mark.device

P = 10_000
U32_MAX = 0xFFFF_FFFF


def _late_burst(
    rig_factory: RigFactory, irqlab_qtest_factory: QtestMachineFactory, tmp_path: Path,
    props: dict[str, object], count: int, period: int, steps_before: int, late_ns: int,
    line: int | None = None, msix: list[tuple[int, int]] | None = None,
) -> tuple[QtestIrqlab, Injector, int, float]:  # fmt: skip
    """Start a burst, run *steps_before* steps, migrate into a QEMU whose clock is
    *late_ns* past the source's, let its timer run; returns the device, its injector,
    the source's clock at the burst start and how long the load and the late timer run
    took (s).  *msix*: enable MSI-X with these (address, data) vectors first."""
    src = rig_factory(**props)
    if msix is not None:
        enable_msix(src.dev.cfg, src.dev.bar0 + REGS.MSIX_TABLE_OFFSET, msix)
    src.dev.write("IRQ_ENABLE", REGS.SRC_ALL)
    if line is not None:
        src.dev.write("GPIO_RISING", 1 << line)
        src.dev.write("GPIO_FALLING", 1 << line)
        src.dev.write("GPIO_IRQ_EN", 1 << line)
    start = src.qt.clock()
    src.inj.burst(count, period_ns=period, line=line)
    src.qt.clock_step((steps_before - 1) * period)
    clock = src.qt.clock()
    image = tmp_path / "burst.mig"
    migrate_out(src.machine, image)
    dst_m = irqlab_qtest_factory(device_arg(**props), extra_args=["-incoming", "defer"])
    dst_m.qtest.clock_set(clock + late_ns)  # before the load: the timer is late
    t0 = time.monotonic()
    migrate_in(dst_m, image)  # the main loop runs the expired timer once running
    dst_m.qtest.clock_step(1)  # or the qtest clock does now
    elapsed = time.monotonic() - t0
    dst = QtestIrqlab.attach(dst_m.qtest, src.dev.bar0)
    return dst, Injector(dst_m, "irq0"), start, elapsed


def test_catch_up_steps_carry_their_deadlines(
    rig_factory: RigFactory, irqlab_qtest_factory: QtestMachineFactory, tmp_path: Path
) -> None:
    dst, inj, start, _ = _late_burst(
        rig_factory, irqlab_qtest_factory, tmp_path, {"evq_depth": 64},
        count=10, period=P, steps_before=3, late_ns=4 * P + P // 2,
    )  # fmt: skip
    burst = [e for e in dst.drain() if e.source == REGS.SRC_BURST]
    # 3 before the migration, 4 due while the timer was late (deadlines 3P..6P)
    assert [e.value for e in burst] == list(range(7))
    assert [e.ts - start for e in burst] == [i * P for i in range(7)]
    # the raise->ack latency of a catch-up step includes the timer's lateness
    now = dst.qt.clock()
    dst.ack(burst[3].seq)
    assert dst.read64("ACK_LAT_LO") == now - (start + 3 * P)
    assert inj.burst_remaining() == 3


def test_catch_up_gpio_steps_carry_their_deadlines(
    rig_factory: RigFactory, irqlab_qtest_factory: QtestMachineFactory, tmp_path: Path
) -> None:
    dst, _, start, _ = _late_burst(
        rig_factory, irqlab_qtest_factory, tmp_path, {"evq_depth": 64, "gpio_lines": 8},
        count=10, period=P, steps_before=2, late_ns=5 * P, line=5,
    )  # fmt: skip
    gpio = [e for e in dst.drain() if e.source == REGS.SRC_GPIO]
    assert [e.ts - start for e in gpio] == [i * P for i in range(7)]
    assert [e.value for e in gpio] == [1, 0, 1, 0, 1, 0, 1]


def test_maximal_late_storm_on_an_undetected_line_only_toggles_it(
    rig_factory: RigFactory, irqlab_qtest_factory: QtestMachineFactory, tmp_path: Path
) -> None:
    """Steps that detect nothing (no edge or level enabled on the line) raise nothing,
    and must not be walked one by one either; the line ends at its last step's level."""
    pmin = REGS.MIN_BURST_PERIOD_NS
    src = rig_factory(evq_depth=16, gpio_lines=8)
    src.inj.burst(U32_MAX, period_ns=pmin, line=6)
    src.qt.clock_step(9 * pmin)  # 10 steps, the line back low
    image = tmp_path / "undetected.mig"
    migrate_out(src.machine, image)
    dst_m = irqlab_qtest_factory(
        device_arg(evq_depth=16, gpio_lines=8), extra_args=["-incoming", "defer"]
    )
    dst_m.qtest.clock_set(src.qt.clock() + U32_MAX * pmin)
    t0 = time.monotonic()
    migrate_in(dst_m, image)
    dst_m.qtest.clock_step(1)
    elapsed = time.monotonic() - t0
    inj = Injector(dst_m, "irq0")
    assert elapsed < 5.0, f"the late timer run took {elapsed:.1f} s"
    assert inj.burst_remaining() == 0
    c = inj.counters()
    assert c.raised == 0 and c.evq_count == 0 and c.next_seq == 1
    assert inj.gpio_in() == 1 << 6  # 2^32-1 toggles: an odd number, the line ends high


@pytest.mark.parametrize("line", [None, 2])
def test_maximal_late_storm_is_counted_in_bulk(
    rig_factory: RigFactory, irqlab_qtest_factory: QtestMachineFactory, tmp_path: Path,
    line: int | None,
) -> None:  # fmt: skip
    """The longest burst there is (2^32-1 steps at the minimum period), entirely
    overdue at once with the queue full: one timer run must not raise 4e9 events one by
    one (that held QEMU's main loop for minutes), and the counts stay exact."""
    depth = 16
    pmin = REGS.MIN_BURST_PERIOD_NS
    dst, inj, _, elapsed = _late_burst(
        rig_factory, irqlab_qtest_factory, tmp_path, {"evq_depth": depth, "gpio_lines": 8},
        count=U32_MAX, period=pmin, steps_before=depth + 4, late_ns=U32_MAX * pmin, line=line,
    )  # fmt: skip
    assert elapsed < 5.0, f"the late timer run took {elapsed:.1f} s"
    assert inj.burst_remaining() == 0
    c = inj.counters()
    # every step raised one event (a toggle with both edges enabled: one edge each)
    assert c.raised == U32_MAX
    assert c.evq_count == depth
    assert c.dropped == c.evq_overflow == U32_MAX - depth
    # BURST: only queued raises latch and coalesce; GPIO: every edge of the unmasked
    # line after the first found the status latched
    assert c.coalesced == (depth - 1 if line is None else U32_MAX - 1)
    # the sequence went on as if every raise had taken its number: 2^32-1 numbers
    # from 1 (0 is skipped) come back to 1
    assert c.next_seq == 1
    assert [e.seq for e in dst.drain()] == list(range(1, depth + 1))
    # a loss is never silent: the next queued event carries EVINFO_DROPPED
    inj.push(7)
    (ev,) = dst.drain()
    assert ev.value == 7 and ev.dropped and ev.seq == 1


def test_a_step_interrupt_that_clears_the_status_does_not_unbound_a_late_storm(
    rig_factory: RigFactory, irqlab_qtest_factory: QtestMachineFactory, tmp_path: Path
) -> None:
    """The GPIO vector's message is a write-1-to-clear of the device's own GPIO_STATUS
    bit of the burst line.  Sent after every step, it kept the status unlatched, so the
    overdue steps were never counted in bulk: one late timer run walked (and signalled)
    every step.  A timer run signals once, after its steps."""
    depth, line, late_steps = 16, 2, 1_000_000
    pmin = REGS.MIN_BURST_PERIOD_NS
    gpio_status = DEFAULT_BAR0 + reg("GPIO_STATUS")  # the source device's own register
    dst, inj, _, elapsed = _late_burst(
        rig_factory, irqlab_qtest_factory, tmp_path, {"evq_depth": depth, "gpio_lines": 8},
        count=U32_MAX, period=pmin, steps_before=depth + 5, late_ns=late_steps * pmin,
        line=line, msix=[(gpio_status, 1 << line), (RAM_MSI, 0), (RAM_MSI, 0)],
    )  # fmt: skip
    assert elapsed < 5.0, f"the late timer run took {elapsed:.1f} s"
    c = inj.counters()
    assert c.raised == depth + 5 + late_steps
    # one message per timer run: each of the source's steps ran on its own, then the
    # late run sent one
    assert c.delivered == depth + 5 + 1
    assert dst.read("GPIO_STATUS") == 0  # which cleared the status again
    assert inj.burst_remaining() == U32_MAX - (depth + 5 + late_steps)
