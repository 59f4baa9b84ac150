"""Burst generator on a GPIO line (``burst-line``): each step toggles the line's input.

The steps go through the same edge/level detection as a host-driven ``gpio-in``
change: an enabled edge is a GPIO event with its own seq and raise timestamp, a
disabled one only changes the level.
"""

from __future__ import annotations

import pytest
from devrig import BURST, GPIO, Rig, RigFactory

from irqlab.contract.regs import QOM, REGS
from irqlab.testing.plugin import QtestMachineFactory
from irqlab.testing.qtest_device import Event, QtestIrqlab
from irqlab.testing.qtest_pci import (
    COMMAND_MASTER,
    COMMAND_MEMORY,
    PciAddress,
    PciConfig,
    enable_msix,
)
from irqlab.vm.qmp.errors import DeviceRejected
from irqlab.vm.qmp.injector import Injector

pytestmark = pytest.mark.device

P = 10_000  # ns
RISING, FALLING = REGS.KIND_RISING, REGS.KIND_FALLING
LINE = 5


def _edges(rig: Rig, mask: int, *, rising: bool = True, falling: bool = True) -> None:
    rig.dev.write("GPIO_RISING", mask if rising else 0)
    rig.dev.write("GPIO_FALLING", mask if falling else 0)


def _gpio(events: list[Event]) -> list[tuple[int, int, int]]:
    assert all(e.source == REGS.SRC_GPIO for e in events), events
    return [(e.line, e.kind, e.value) for e in events]


def test_n_steps_give_n_edges_with_consecutive_seqs(rig: Rig) -> None:
    _edges(rig, 1 << LINE)
    rig.inj.reset_counters()
    seq0 = rig.inj.counters().next_seq
    t0 = rig.qt.clock()
    n = 7
    rig.inj.burst(n, period_ns=P, line=LINE)
    assert rig.inj.burst_line() == LINE
    assert rig.dev.read("EVQ_COUNT") == 1  # step 0 is due at the start, like a BURST event
    rig.qt.clock_step((n - 1) * P)
    events = rig.dev.drain()
    assert [e.seq for e in events] == list(range(seq0, seq0 + n))
    assert _gpio(events) == [(LINE, RISING if i % 2 == 0 else FALLING, 1 - i % 2) for i in range(n)]
    assert [e.ts for e in events] == [t0 + i * P for i in range(n)]
    assert not any(e.dropped for e in events)
    assert rig.inj.gpio_in() == 1 << LINE  # odd number of toggles: the line ends high
    assert rig.dev.read("GPIO_STATUS") == 1 << LINE
    assert rig.dev.read("IRQ_STATUS") & BURST == 0  # no BURST event, no BURST status
    assert rig.dev.read("BURST_COUNT") == n and rig.inj.burst_remaining() == 0
    c = rig.inj.counters()
    assert c.raised == n and c.dropped == 0


def test_a_line_that_starts_high_falls_first(rig: Rig) -> None:
    _edges(rig, 1 << LINE)
    rig.inj.set_line(LINE, True)
    rig.dev.drain()
    rig.inj.burst(4, period_ns=P, line=LINE)
    rig.qt.clock_step(10 * P)
    assert [e.kind for e in rig.dev.drain()] == [FALLING, RISING, FALLING, RISING]
    assert rig.inj.gpio_in() == 1 << LINE


def _host_toggles(rig: Rig, line: int, n: int) -> None:
    for _ in range(n):
        rig.inj.set_lines(rig.inj.gpio_in() ^ (1 << line))


CONFIGS = {
    "both": {"GPIO_RISING": 1, "GPIO_FALLING": 1},
    "rising": {"GPIO_RISING": 1},
    "falling": {"GPIO_FALLING": 1},
    "none": {},
    "level-high": {"GPIO_LEVEL_HIGH": 1},
}


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_steps_match_host_driven_changes(rig_factory: RigFactory, config: str) -> None:
    """The same detection config on a burst line and on a host-toggled line: same events."""
    n = 9
    seen = []
    for by_burst in (True, False):
        rig = rig_factory(gpio_lines=8)
        for reg, bit in CONFIGS[config].items():
            rig.dev.write(reg, bit << LINE)
        rig.dev.write("GPIO_IRQ_EN", 1 << LINE)
        rig.dev.write("IRQ_ENABLE", GPIO)
        rig.inj.reset_counters()
        if by_burst:
            rig.inj.burst(n, period_ns=P, line=LINE)
            rig.qt.clock_step(n * P)
        else:
            _host_toggles(rig, LINE, n)
        c = rig.inj.counters()
        seen.append(
            {
                "events": _gpio(rig.dev.drain()),
                "gpio_in": rig.inj.gpio_in(),
                "status": rig.dev.read("GPIO_STATUS"),
                "raised": c.raised,
                "coalesced": c.coalesced,
                "delivered": c.delivered,
            }
        )
        rig.machine.close()
    burst, host = seen
    assert burst == host
    expected = {"both": n, "rising": 5, "falling": 4, "none": 0, "level-high": 1}[config]
    assert burst["raised"] == len(burst["events"]) == expected
    assert burst["gpio_in"] == 1 << LINE  # every step toggled the level, detected or not


def test_catch_up_raises_every_step_with_its_own_deadline(rig: Rig) -> None:
    _edges(rig, 1 << LINE)
    t0 = rig.qt.clock()
    n = 1000
    rig.inj.burst(n, period_ns=REGS.MIN_BURST_PERIOD_NS, line=LINE)
    rig.qt.clock_step(10**9)  # one late timer run: the catch-up raises all of them
    events = rig.dev.drain()
    assert len(events) == n
    assert [e.kind for e in events] == [RISING, FALLING] * (n // 2)
    assert [e.ts for e in events] == [t0 + i * REGS.MIN_BURST_PERIOD_NS for i in range(n)]
    assert [e.seq for e in events] == list(range(events[0].seq, events[0].seq + n))


def test_full_queue_drops_gpio_edges_and_flags_the_next(rig_factory: RigFactory) -> None:
    rig = rig_factory(evq_depth=4)
    _edges(rig, 1 << LINE)
    rig.inj.burst(6, period_ns=P, line=LINE)
    rig.qt.clock_step(10 * P)
    first = rig.dev.drain()
    assert len(first) == 4
    c = rig.inj.counters()
    assert (c.raised, c.dropped, c.evq_overflow) == (6, 2, 2)
    rig.inj.burst(1, line=LINE)
    (after,) = rig.dev.drain()
    assert after.dropped and after.seq == first[-1].seq + 3


def test_ack_measures_gpio_edges_like_any_event(rig: Rig) -> None:
    _edges(rig, 1 << LINE)
    rig.inj.reset_counters()
    rig.inj.burst(3, period_ns=P, line=LINE)
    rig.qt.clock_step(2 * P)
    events = rig.dev.drain()
    rig.qt.clock_step(500)
    for e in events:
        rig.dev.ack(e.seq)
    assert rig.dev.read64("ACK_LAT_LO") == 500
    h = rig.inj.histogram()
    assert h.count == 3 and (h.min_ns, h.max_ns) == (500, 2 * P + 500)


def test_default_and_back_to_burst_events(rig: Rig) -> None:
    assert rig.inj.burst_line() is None
    assert rig.inj.get(QOM.PROP_BURST_LINE) == REGS.BURST_LINE_NONE
    _edges(rig, 1 << LINE)
    rig.inj.burst(2, period_ns=P, line=LINE)
    rig.qt.clock_step(P)
    rig.inj.burst(2, period_ns=P)  # line=None: BURST events again
    rig.qt.clock_step(P)
    sources = [e.source for e in rig.dev.drain()]
    assert sources == [REGS.SRC_GPIO] * 2 + [REGS.SRC_BURST] * 2
    assert rig.inj.burst_line() is None


def test_line_cannot_change_while_a_burst_runs(rig: Rig) -> None:
    _edges(rig, 0b11)
    rig.inj.burst(10, period_ns=P, line=0)
    rig.qt.clock_step(P)
    before = (rig.inj.burst_remaining(), rig.inj.counters(), rig.inj.gpio_in(), rig.qt.clock())
    for value in (1, REGS.BURST_LINE_NONE):
        with pytest.raises(DeviceRejected, match="cannot change while a burst runs") as info:
            rig.inj.set(QOM.PROP_BURST_LINE, value)
        assert info.value.desc.startswith("irqlab: burst-line")
    assert rig.machine.qmp("query-status")["status"] == "running"
    assert rig.inj.burst_line() == 0
    assert (
        rig.inj.burst_remaining(),
        rig.inj.counters(),
        rig.inj.gpio_in(),
        rig.qt.clock(),
    ) == before
    rig.inj.set(QOM.PROP_BURST_LINE, 0)  # the same line is no change
    rig.inj.burst(3, period_ns=P, line=0)  # a restart on the same line replaces the burst
    assert rig.inj.burst_line() == 0
    rig.qt.clock_step(100 * P)
    events = rig.dev.drain()
    assert {e.line for e in events} == {0} and len(events) == 2 + 3
    rig.inj.set_burst_line(1)  # finished: it may change now
    assert rig.inj.burst_line() == 1


def test_stop_keeps_the_line_level_and_reset_keeps_the_setting(rig: Rig) -> None:
    _edges(rig, 1 << LINE)
    rig.inj.burst(10, period_ns=P, line=LINE)
    rig.qt.clock_step(2 * P)  # 3 steps: high, low, high
    rig.inj.stop_burst()
    rig.qt.clock_step(100 * P)
    assert len(rig.dev.drain()) == 3
    assert rig.inj.gpio_in() == 1 << LINE
    rig.machine.qmp("system_reset")
    rig.machine.wait_event("RESET", timeout=30)
    assert rig.inj.burst_line() == LINE  # host-side setting, like burst-period-ns


# A q35 machine's MMCONFIG window (MCH PCIEXBAR), and where irqlab's BAR0 goes
# behind a root port whose memory window is FE000000-FE0FFFFF.
MMCONFIG = 0xB000_0000
MCH_PCIEXBAR = 0x60
BRIDGE_BUS_NUMBERS = 0x18
BRIDGE_MEMORY_WINDOW = 0x20
BRIDGE_CONTROL = 0x3E
BRIDGE_CONTROL_SBR = 0x40
BEHIND_PORT_BAR0 = 0xFE00_0000
ROOT_PORT_SLOT = 2
ROOT_PORT = f"pcie-root-port,id=rp0,bus=pcie.0,chassis=1,addr={ROOT_PORT_SLOT:#x}"


def test_a_step_interrupt_that_resets_the_device_ends_the_burst(
    irqlab_qtest_factory: QtestMachineFactory,
) -> None:
    """A step's MSI-X message may be a memory write that resets the device itself (here
    the secondary bus reset of the root port above it, through MMCONFIG).  The step was
    taken off the burst before it was signalled, so the reset's stop holds: the burst
    must not wrap its remaining count to 2^32-1 and run on."""
    m = irqlab_qtest_factory(
        "",
        extra_args=["-device", ROOT_PORT, "-device", "irqlab,id=irq0,bus=rp0,gpio-lines=8"],
    )
    qt = m.qtest
    mch = PciConfig(qt, PciAddress(0, 0, 0))
    mch.writel(MCH_PCIEXBAR + 4, 0)
    mch.writel(MCH_PCIEXBAR, MMCONFIG | 1)  # 256 buses, enabled
    port = PciConfig(qt, PciAddress(0, ROOT_PORT_SLOT, 0))
    port.writel(BRIDGE_BUS_NUMBERS, 0x0001_0100)  # primary 0, secondary 1, subordinate 1
    port.writel(BRIDGE_MEMORY_WINDOW, BEHIND_PORT_BAR0 >> 16 | BEHIND_PORT_BAR0)
    port.set_command_bits(COMMAND_MEMORY | COMMAND_MASTER)
    cfg = PciConfig(qt, PciAddress(1, 0, 0))
    cfg.map_bar(0, BEHIND_PORT_BAR0)
    dev = QtestIrqlab(qt, cfg, BEHIND_PORT_BAR0)
    inj = Injector(m, "irq0")
    # vector 0 (GPIO): a dword write at 0x3c (interrupt line, pin, bridge control)
    # that keeps the first two and sets the bridge's secondary bus reset
    port_0x3c = MMCONFIG + (port.addr.devfn << 12) + BRIDGE_CONTROL - 2
    data = port.readw(BRIDGE_CONTROL - 2) | BRIDGE_CONTROL_SBR << 16
    enable_msix(cfg, BEHIND_PORT_BAR0 + REGS.MSIX_TABLE_OFFSET, [(port_0x3c, data)])
    _edges(Rig(m, qt, dev, inj), 1 << LINE)
    dev.write("GPIO_IRQ_EN", 1 << LINE)
    dev.write("IRQ_ENABLE", GPIO)
    inj.burst(10, period_ns=P, line=LINE)
    assert port.readw(BRIDGE_CONTROL) & BRIDGE_CONTROL_SBR  # the message was sent
    assert inj.burst_remaining() == 0  # the reset stopped the burst
    qt.clock_step(20 * P)
    assert inj.burst_remaining() == 0
    assert inj.gpio_in() == 1 << LINE  # the first step's level, no step after the reset
    assert inj.counters().raised == 1
