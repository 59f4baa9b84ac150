"""PCI identity, BAR0, static properties and their registers, -device irqlab,help."""

from __future__ import annotations

import subprocess

import pytest
from devrig import Rig, RigFactory

from irqlab.build.qemu import QemuInstall
from irqlab.contract.regs import AT_START, QOM, REGS, props_when
from irqlab.testing.plugin import QtestMachineFactory
from irqlab.testing.qtest_pci import DEVICE_ID, INTERRUPT_PIN, REVISION, VENDOR_ID
from irqlab.vm.accel import AccelChoice
from irqlab.vm.guest import (
    PCI_DEVICE_PROPS,
    QEMU_BOOL_WORDS,
    device_value_problem,
    unknown_device_prop,
)
from irqlab.vm.machine import Machine, MachineError
from irqlab.vm.qmp.injector import Injector

pytestmark = pytest.mark.device

STATIC_PROPERTIES = props_when(AT_START)  # the header's start-time (-device) properties


def test_pci_identity(rig: Rig) -> None:
    cfg = rig.dev.cfg
    assert cfg.readw(VENDOR_ID) == REGS.PCI_VENDOR_ID
    assert cfg.readw(DEVICE_ID) == REGS.PCI_DEVICE_ID
    assert cfg.readb(REVISION) == REGS.PCI_REVISION
    assert cfg.readw(0x0A) == REGS.PCI_CLASS  # sub-class and base class
    assert cfg.readb(INTERRUPT_PIN) == 1  # INTA
    assert cfg.bar_size(0) == (REGS.BAR0_SIZE, cfg.bar_size(0)[1])


def test_id_and_defaults(rig: Rig) -> None:
    d = rig.dev
    assert d.read("ID") == REGS.ID_VALUE
    feat = d.read("FEATURES")
    assert feat & REGS.FEAT_GPIO_LINES_MASK == REGS.MAX_GPIO_LINES
    assert (feat & REGS.FEAT_IRQ_MODE_MASK) >> REGS.FEAT_IRQ_MODE_SHIFT == REGS.IRQ_MODE_MSIX
    assert not feat & REGS.FEAT_BROKEN_INTX
    assert d.read("GPIO_NLINES") == REGS.MAX_GPIO_LINES
    assert d.read("FIFO_DEPTH") == 256
    assert d.read("EVQ_DEPTH") == 1024
    assert d.read("IRQ_ENABLE") == 0
    assert d.read("EVQ_COUNT") == 0
    assert d.read("EVQ_HEAD_INFO") & REGS.EVINFO_VALID == 0


@pytest.mark.parametrize(
    ("props", "mode"),
    [
        ({"irq_mode": "intx", "gpio_lines": 8, "broken_intx_disable": True}, "INTX"),
        ({"irq_mode": "msi", "gpio_lines": 1, "fifo_depth": 7, "evq_depth": 9}, "MSI"),
    ],
)
def test_properties_show_in_registers(
    rig_factory: RigFactory, props: dict[str, object], mode: str
) -> None:
    d = rig_factory(**props).dev
    feat = d.read("FEATURES")
    assert feat & REGS.FEAT_GPIO_LINES_MASK == props["gpio_lines"]
    assert (feat & REGS.FEAT_IRQ_MODE_MASK) >> REGS.FEAT_IRQ_MODE_SHIFT == REGS[
        f"IRQLAB_IRQ_MODE_{mode}"
    ]
    assert bool(feat & REGS.FEAT_BROKEN_INTX) == bool(props.get("broken_intx_disable"))
    assert d.read("GPIO_NLINES") == props["gpio_lines"]
    assert d.read("FIFO_DEPTH") == props.get("fifo_depth", 256)
    assert d.read("EVQ_DEPTH") == props.get("evq_depth", 1024)


def test_scratch_and_clock(rig: Rig) -> None:
    d, qt = rig.dev, rig.qt
    d.write("SCRATCH", 0xA5A5F00D)
    assert d.read("SCRATCH") == 0xA5A5F00D
    t0 = qt.clock()
    assert d.read64("TIME_LO") == t0
    qt.clock_step(5_000_000_123)  # crosses 2**32 ns: exercises the _HI latch
    assert d.read64("TIME_LO") == t0 + 5_000_000_123


def test_gpio_lines_beyond_the_bank_are_not_writable(rig_factory: RigFactory) -> None:
    d = rig_factory(gpio_lines=8).dev
    for reg in ("GPIO_RISING", "GPIO_FALLING", "GPIO_IRQ_EN", "GPIO_LEVEL_HIGH"):
        d.write(reg, 0xFFFFFFFF)
        assert d.read(reg) == 0xFF, reg


@pytest.mark.parametrize(
    ("prop", "value", "message"),
    [
        (QOM.PROP_IRQ_MODE, "bogus", "{prop} must be intx, msi or msix"),
        (QOM.PROP_GPIO_LINES, "0", "{prop}=0 out of range"),
        (QOM.PROP_GPIO_LINES, "33", "{prop}=33 out of range"),
        (QOM.PROP_FIFO_DEPTH, "0", "{prop}=0 out of range"),
        (QOM.PROP_FIFO_DEPTH, "4097", "{prop}=4097 out of range"),
        (QOM.PROP_EVQ_DEPTH, "5000", "{prop}=5000 out of range"),
        (QOM.PROP_BROKEN_INTX_DISABLE, "maybe", "{prop}"),
    ],
)
def test_bad_static_property_refuses_to_start(
    irqlab_qtest_factory: QtestMachineFactory, prop: str, value: str, message: str
) -> None:
    with pytest.raises(MachineError, match=message.format(prop=prop)):
        irqlab_qtest_factory(f"irqlab,id=irq0,{prop}={value}")


@pytest.mark.parametrize(
    "word", [*QEMU_BOOL_WORDS, "ON", "True", "1", "0", "enable", ""]
)  # fmt: skip
def test_the_bool_words_refused_before_boot_are_exactly_the_built_qemus(
    rig_factory: RigFactory, irqlab_qtest_factory: QtestMachineFactory, word: str
) -> None:
    """The harness refuses a start-time bool property's value before booting unless it
    is one of QEMU_BOOL_WORDS (typed from QEMU's qapi_bool_parse): the built QEMU takes
    each of them with that meaning, and refuses the near misses the harness refuses."""
    prop = QOM.PROP_BROKEN_INTX_DISABLE
    problem = device_value_problem(prop, word)
    if word in QEMU_BOOL_WORDS:
        assert problem is None
        dev = rig_factory(irq_mode="intx", broken_intx_disable=word).dev
        assert bool(dev.read("FEATURES") & REGS.FEAT_BROKEN_INTX) == QEMU_BOOL_WORDS[word]
    else:
        assert problem is not None and "is not a bool" in problem, problem
        with pytest.raises(MachineError, match=prop):
            irqlab_qtest_factory(f"irqlab,id=irq0,{prop}={word}")


def _device_help(qemu: QemuInstall) -> str:
    """What the built QEMU's ``-device irqlab,help`` prints."""
    r = subprocess.run(
        [str(qemu.binary), "-L", str(qemu.datadir), "-device", "irqlab,help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_device_help_lists_properties(irqlab_qemu: QemuInstall) -> None:
    help_text = _device_help(irqlab_qemu)
    for prop in STATIC_PROPERTIES:
        assert f"  {prop}=" in help_text, f"{prop} missing from:\n{help_text}"
    assert "intx, msi or msix" in help_text  # descriptions are shown
    # the limits they state are the header's (stringified, not typed again)
    lines = dict(
        line.strip().split("=", 1) for line in help_text.splitlines() if line.startswith("  ")
    )
    for prop, top in (
        (QOM.PROP_GPIO_LINES, REGS.MAX_GPIO_LINES),
        (QOM.PROP_FIFO_DEPTH, REGS.MAX_FIFO_DEPTH),
        (QOM.PROP_EVQ_DEPTH, REGS.MAX_EVQ_DEPTH),
    ):
        assert f", 1..{top} (default" in lines[prop], lines[prop]
    burst = lines[QOM.PROP_BURST_PERIOD_NS]
    assert f", {REGS.MIN_BURST_PERIOD_NS}..{REGS.MAX_BURST_PERIOD_NS}" in burst, burst


def test_the_device_takes_the_headers_properties_and_every_pci_devices_exactly(
    irqlab_qemu: QemuInstall,
) -> None:
    """The names the harness checks a device_props key against before booting (the
    header's QOM properties and PCI_DEVICE_PROPS, typed from QEMU's pci_props) are
    exactly what the built QEMU's -device irqlab takes: a QEMU whose PCI devices gained
    or lost one would make the harness refuse a good name or pass a bad one to QEMU."""
    help_text = _device_help(irqlab_qemu)
    names = {
        line.strip().split("=", 1)[0] for line in help_text.splitlines() if line.startswith("  ")
    }
    header = set(QOM.with_prefix("PROP_").values())
    assert names == header | set(PCI_DEVICE_PROPS), (
        f"QEMU only: {sorted(names - header - set(PCI_DEVICE_PROPS))}; "
        f"harness only: {sorted((header | set(PCI_DEVICE_PROPS)) - names)}"
    )
    for name in names:
        assert unknown_device_prop(name) is None, name


def test_plugin_fixtures(irqlab_qtest_machine: Machine, irqlab_qtest_injector: Injector) -> None:
    """The plugin's default machine has the device on q35 under qtest, reachable over QMP,
    with the id a guest's device has (DEVICE_ID)."""
    from irqlab.vm.qmp.injector import DEVICE_ID

    assert irqlab_qtest_machine.qmp("query-status")["status"] == "running"
    assert (
        irqlab_qtest_injector.path
        == f"/machine/peripheral/{DEVICE_ID}"
        == "/machine/peripheral/irqlab0"
    )
    assert irqlab_qtest_injector.gpio_lines == REGS.MAX_GPIO_LINES
    assert (
        irqlab_qtest_machine.qmp("qom-get", path=irqlab_qtest_injector.path, property="type")
        == "irqlab"
    )
    assert "-accel" in irqlab_qtest_machine.argv and "qtest" in irqlab_qtest_machine.argv


def test_irqlab_accel_fixture(irqlab_accel: AccelChoice) -> None:
    assert irqlab_accel.accel in ("kvm", "tcg")
    assert irqlab_accel.reason


def test_the_headers_qom_names_are_the_devices(irqlab_qtest_machine: Machine) -> None:
    """The QOM names of irqlab-regs.h (the host's only copy: the injector and the stats
    use them) are the device's: every IRQLAB_PROP_* is a property, and the counters and
    latency-histogram objects have exactly the IRQLAB_COUNTER_*/HISTOGRAM_* members."""
    from irqlab.vm.qmp.injector import DEVICE_ID, device_path

    path = device_path(DEVICE_ID)
    listed = {p["name"] for p in irqlab_qtest_machine.qmp("qom-list", {"path": path})}
    props = set(QOM.with_prefix("PROP_").values())
    assert {"fifo-push", "gpio-pulse", "burst-count", "counters"} <= props, props
    assert props <= listed, sorted(props - listed)

    def members(prop: str) -> set[str]:
        return set(irqlab_qtest_machine.qmp("qom-get", {"path": path, "property": prop}))

    assert members(QOM.PROP_COUNTERS) == set(QOM.with_prefix("COUNTER_").values())
    assert members(QOM.PROP_LATENCY_HISTOGRAM) == set(QOM.with_prefix("HISTOGRAM_").values())
