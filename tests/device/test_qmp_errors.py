"""Bad QMP values: a QMP error with a clear message; QEMU keeps running, device state unchanged."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from devrig import Rig, RigFactory

from irqlab.contract.regs import QOM, REGS
from irqlab.testing.plugin import QtestMachineFactory
from irqlab.vm.qmp.errors import DeviceRejected, InvalidArgument, QMPCommandError

pytestmark = pytest.mark.device


@pytest.fixture
def small(rig_factory: RigFactory) -> Rig:
    r = rig_factory(gpio_lines=8, fifo_depth=4)
    r.dev.write("GPIO_RISING", 0xFF)
    r.dev.write("GPIO_LEVEL_HIGH", 0x80)
    r.inj.set_lines(0x81)
    r.inj.push(0xAB)
    r.inj.set_burst_period(50_000)
    return r


def _snapshot(r: Rig) -> dict[str, Any]:
    regs = ("GPIO_IN", "GPIO_STATUS", "IRQ_STATUS", "EVQ_COUNT", "FIFO_COUNT",
            "BURST_REMAINING", "EVQ_HEAD_SEQ", "EVQ_HEAD_VALUE")  # fmt: skip
    return {
        QOM.PROP_GPIO_IN: r.inj.gpio_in(),
        QOM.PROP_BURST_PERIOD_NS: r.inj.burst_period(),
        QOM.PROP_BURST_COUNT: r.inj.burst_remaining(),
        QOM.PROP_BURST_LINE: r.inj.get(QOM.PROP_BURST_LINE),
        QOM.PROP_COUNTERS: r.inj.counters(),
        "histogram": r.inj.histogram(),
        "clock": r.qt.clock(),
        **{reg: r.dev.read(reg) for reg in regs},
    }


QEMU_VISITOR = ("Parameter '", "Invalid parameter type")  # QEMU's messages, irqlab.rst quotes them
BEYOND = f"names lines beyond {QOM.PROP_GPIO_LINES}=8"  # the fixture's 8 lines
BAD = [
    (QOM.PROP_GPIO_SET, 1 << 8, BEYOND),
    (QOM.PROP_GPIO_CLEAR, 0xFFFF, BEYOND),
    (QOM.PROP_GPIO_IN, 0x100, BEYOND),
    (QOM.PROP_GPIO_PULSE, 1 << 31, BEYOND),
    (QOM.PROP_BURST_PERIOD_NS, 0, "out of range"),
    (QOM.PROP_BURST_PERIOD_NS, REGS.MIN_BURST_PERIOD_NS - 1, "out of range"),
    (QOM.PROP_BURST_PERIOD_NS, 10_000_000_001, "out of range"),
    (QOM.PROP_GPIO_SET, -1, f"Parameter '{QOM.PROP_GPIO_SET}' expects uint32_t"),
    (QOM.PROP_FIFO_PUSH, 1 << 32, f"Parameter '{QOM.PROP_FIFO_PUSH}' expects uint32_t"),
    (QOM.PROP_FIFO_PUSH, "0x12", f"Parameter '{QOM.PROP_FIFO_PUSH}' expects uint64"),
    (QOM.PROP_BURST_COUNT, 1.5, f"Parameter '{QOM.PROP_BURST_COUNT}' expects uint64"),
    (QOM.PROP_BURST_LINE, 8, f"{QOM.PROP_BURST_LINE} 8 out of range [-1, 7]"),
    (QOM.PROP_BURST_LINE, -2, "out of range"),
    (QOM.PROP_BURST_LINE, 1 << 40, "out of range"),
    (QOM.PROP_BURST_LINE, "1", f"Invalid parameter type for '{QOM.PROP_BURST_LINE}', expected"),
    (QOM.PROP_BURST_LINE, 1.5, ""),
    (QOM.PROP_BURST_LINE, None, ""),
    (QOM.PROP_GPIO_IN, [1], ""),
    (QOM.PROP_RESET_COUNTERS, "yes", ""),
    ("no-such-property", 1, "no-such-property"),
    (QOM.PROP_COUNTERS, {}, ""),  # read-only
]


@pytest.mark.parametrize(("prop", "value", "message"), BAD, ids=[f"{p}={v!r}" for p, v, _ in BAD])
def test_bad_value_is_refused_and_nothing_changes(
    small: Rig, prop: str, value: object, message: str
) -> None:
    before = _snapshot(small)
    with pytest.raises(DeviceRejected) as info:
        small.inj.set(prop, value)
    assert info.value.desc, "QEMU gave no error text"
    assert message in info.value.desc
    if message and prop != "no-such-property" and not message.startswith(QEMU_VISITOR):
        assert info.value.desc.startswith("irqlab: ")
    assert small.machine.qmp("query-status")["status"] == "running"
    assert _snapshot(small) == before


def test_write_only_property_cannot_be_read(small: Rig) -> None:
    with pytest.raises(DeviceRejected):
        small.inj.get(QOM.PROP_GPIO_SET)
    assert small.machine.is_running()


def test_client_side_validation_matches_the_device(small: Rig) -> None:
    """The injector refuses what the device would refuse, without sending it."""
    assert small.inj.gpio_lines == 8
    before = _snapshot(small)
    refused: list[Callable[[], None]] = [
        lambda: small.inj.set_line(8, True),
        lambda: small.inj.pulse_mask(0x100),
        lambda: small.inj.set_burst_period(999),
        lambda: small.inj.push(1 << 32),
    ]
    for bad in refused:
        with pytest.raises(InvalidArgument):
            bad()
    assert _snapshot(small) == before


@pytest.mark.parametrize("prop", [QOM.PROP_GPIO_SET, QOM.PROP_FIFO_PUSH, QOM.PROP_BURST_COUNT])
def test_an_action_property_before_realize_says_so(
    irqlab_qtest_factory: QtestMachineFactory, prop: str
) -> None:
    """``-device``/``device_add`` with an action property: the device is not running
    yet.  A GPIO mask said it named lines beyond gpio-lines (valid bits 0x0): the lines
    are only known once the device is realized."""
    m = irqlab_qtest_factory("", extra_args=["-device", "pcie-root-port,id=rp0,chassis=1"])
    with pytest.raises(QMPCommandError) as info:
        m.qmp("device_add", driver="irqlab", id="irq1", bus="rp0", **{prop: 1})
    assert info.value.desc == (
        f"irqlab: property '{prop}' acts on a running device; set it with qom-set after realize"
    )
    assert m.qmp("query-status")["status"] == "running"
