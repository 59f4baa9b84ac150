"""The ``-device`` argument of a guest's irqlab device, built from GuestConfig's
device_props: QEMU's option syntax (``,`` separates options, ``,,`` is a comma in a
value) keeps every value one option's value, without a guest."""

from __future__ import annotations

import re

import pytest
from qemu_opts import qemu_options  # same directory (rootdir-relative import)

from irqlab.contract.regs import QOM
from irqlab.vm.guest import GuestConfig, GuestConfigError, device_arg


@pytest.mark.parametrize(
    ("props", "value"),
    [
        ({QOM.PROP_FIFO_DEPTH: "16,gpio-lines=8"}, "16,gpio-lines=8"),
        ({QOM.PROP_IRQ_MODE: "msi,id=evil"}, "msi,id=evil"),
        ({QOM.PROP_IRQ_MODE: "a,,b,"}, "a,,b,"),
        ({QOM.PROP_IRQ_MODE: ",id=x"}, ",id=x"),
    ],
)
def test_a_comma_in_a_value_stays_in_the_value(props: dict[str, str], value: str) -> None:
    ((key, _),) = props.items()
    options = qemu_options(device_arg("irqlab0", props))
    assert options == [("", "irqlab"), ("id", "irqlab0"), (key, value)]


def test_plain_values_are_as_before() -> None:
    x, y = QOM.PROP_BROKEN_INTX_DISABLE, "multifunction"  # bools: the device's, PCI's
    props = {QOM.PROP_GPIO_LINES: 4, QOM.PROP_IRQ_MODE: "intx", x: True, y: False}
    assert device_arg("irqlab0", props, "rp0") == (
        f"irqlab,id=irqlab0,bus=rp0,{QOM.PROP_GPIO_LINES}=4,{QOM.PROP_IRQ_MODE}=intx,{x}=on,{y}=off"
    )


def test_the_device_id_is_one_value_too() -> None:
    assert qemu_options(device_arg("a,bus=b", {})) == [("", "irqlab"), ("id", "a,bus=b")]


@pytest.mark.parametrize("key", ["fifo-depth,gpio-lines", "gpio-lines=8", ""])
def test_a_key_qemu_cannot_take_is_refused(key: str) -> None:
    said = rf"device_props key {re.escape(repr(key))}: .*"
    with pytest.raises(GuestConfigError, match=said):
        GuestConfig(device_props={key: 1})
    with pytest.raises(GuestConfigError, match=said):
        device_arg("irqlab0", {key: 1})  # a config changed after it was made


@pytest.mark.parametrize(
    ("key", "hint"),
    [
        ("gpio_lines", " (did you mean 'gpio-lines'? its property names are spelled with '-')"),
        ("gpio-lnes", " (did you mean 'gpio-lines'?)"),
        ("nonesuch", ""),
    ],
)
def test_a_property_the_device_does_not_have_is_refused_before_booting(key: str, hint: str) -> None:
    """``device={"gpio_lines": 8}`` got only QEMU's "Property 'irqlab.gpio_lines' not
    found", after QEMU started: refused when the config is made, naming the device's
    properties as its header has them."""
    with pytest.raises(GuestConfigError) as e:
        GuestConfig(device_props={key: 8})
    text = str(e.value)
    assert text.startswith(
        f"device_props key {key!r}: the irqlab device has no property {key!r}{hint}; "
    ), text
    own = list(QOM.with_prefix("PROP_").values())
    assert f"its own are {', '.join(own)} (irqlab-regs.h)" in text, text
    assert QOM.PROP_GPIO_LINES in own and QOM.PROP_EVQ_DEPTH in own


def test_the_devices_and_pcis_own_properties_are_taken() -> None:
    props = {name: 1 for name in QOM.with_prefix("PROP_").values()}
    GuestConfig(device_props={**props, "addr": "05.0", "rombar": 0, "failover_pair_id": "x"})
