"""The header's property marks (``IRQLAB_PROP_<NAME>_WHEN``, :attr:`REGS.prop_when`) are
the device's behaviour, so that the harness's check of ``device_props`` (which refuses
what is not marked start-time before QEMU starts) cannot drift from irqlab.c:

* a start-time property (``AT_START``) is taken when the device is created and refused
  by ``qom-set`` once it is realized (fixed);
* a runtime control (``AT_RUN``) is refused when the device is created, in the device's
  words, and taken by ``qom-set`` on the realized device;
* a read-only property (``NEVER``) is refused both ways, and read.

The device is created with ``device_add`` behind a PCIe root port: QEMU's ``-device``
goes through the same ``qdev_device_add`` (the properties are set, then the device is
realized), and one QEMU tries them all.
"""

from __future__ import annotations

from typing import Any

import pytest

from irqlab.contract.regs import AT_RUN, AT_START, NEVER, PROP_MARKS, REGS, props_when
from irqlab.testing.plugin import QtestMachineFactory
from irqlab.vm.machine import Machine
from irqlab.vm.qmp.errors import QMPCommandError
from irqlab.vm.qmp.injector import DEVICE_ID, DEVICE_TYPE, device_path

pytestmark = pytest.mark.device

PORTS = ("rp0", "rp1")  # rp0: the device made of every start-time property; rp1: refusals
# A value of a property's QOM type, for one that cannot be read (set-only)
ZERO_OF_TYPE: dict[str, object] = {"uint32": 0, "uint64": 0, "int": 0, "bool": False}


def _refusal(m: Machine, command: str, **args: Any) -> str:
    """The error QEMU answers *command* with (the test fails if it succeeds)."""
    with pytest.raises(QMPCommandError) as info:
        m.qmp(command, args)
    return info.value.desc


def _refused_at_creation(m: Machine, name: str, value: object) -> str:
    """The error of ``device_add`` of a device with the property *name*=*value* (behind the
    port left free: a device that was made would take it)."""
    return _refusal(
        m, "device_add", driver=DEVICE_TYPE, id="irq-refused", bus=PORTS[1], **{name: value}
    )


def _values(m: Machine, path: str) -> dict[str, object]:
    """A value each marked property takes: the realized device's own, or a zero of its
    type where it cannot be read."""
    types = {p["name"]: p["type"] for p in m.qmp("qom-list", {"path": path})}
    missing = sorted(set(REGS.prop_when) - set(types))
    assert not missing, f"properties of the header that the device does not have: {missing}"
    out: dict[str, object] = {}
    for name in REGS.prop_when:
        try:
            out[name] = m.qmp("qom-get", {"path": path, "property": name})
        except QMPCommandError:
            out[name] = ZERO_OF_TYPE[types[name]]
    return out


def test_every_mark_is_the_devices_behaviour(irqlab_qtest_factory: QtestMachineFactory) -> None:
    ports = [
        a for i, p in enumerate(PORTS, 1) for a in ("-device", f"pcie-root-port,id={p},chassis={i}")
    ]
    m = irqlab_qtest_factory(f"{DEVICE_TYPE},id={DEVICE_ID}", extra_args=ports)
    path = device_path(DEVICE_ID)
    values = _values(m, path)
    assert set(REGS.prop_when.values()) == set(PROP_MARKS), REGS.prop_when

    start = {name: values[name] for name in props_when(AT_START)}
    m.qmp("device_add", {"driver": DEVICE_TYPE, "id": "irq-start", "bus": PORTS[0], **start})
    made = device_path("irq-start")
    assert {n: m.qmp("qom-get", {"path": made, "property": n}) for n in start} == start
    for name, value in start.items():
        said = _refusal(m, "qom-set", path=path, property=name, value=value)
        assert said.endswith("after it was realized"), (name, said)

    for name in props_when(AT_RUN):
        said = _refused_at_creation(m, name, values[name])
        assert said == (
            f"irqlab: property '{name}' acts on a running device; set it with qom-set after realize"
        ), name
        m.qmp("qom-set", {"path": path, "property": name, "value": values[name]})

    for name in props_when(NEVER):
        said = _refused_at_creation(m, name, 0)  # -device's kind of value (device_add drops a dict)
        assert said == f"Property '{DEVICE_TYPE}.{name}' is not writable", (name, said)
        said = _refusal(m, "qom-set", path=path, property=name, value=values[name])
        assert said == f"Property '{DEVICE_TYPE}.{name}' is not writable", (name, said)
    assert m.qmp("query-status")["status"] == "running"
