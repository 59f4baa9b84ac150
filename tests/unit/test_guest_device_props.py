"""The ``-device`` argument of a guest's irqlab device, built from GuestConfig's
device_props: QEMU's option syntax (``,`` separates options, ``,,`` is a comma in a
value) keeps every value one option's value, without a guest."""

from __future__ import annotations

import re

import pytest
from qemu_opts import qemu_options  # same directory (rootdir-relative import)

from irqlab.contract.regs import AT_RUN, AT_START, NEVER, QOM, REGS, props_when
from irqlab.contract.spec import property_types
from irqlab.vm.guest import (
    GuestConfig,
    GuestConfigError,
    device_arg,
    device_choices,
    device_value_problem,
)
from irqlab.vm.qmp.injector import method_of

ROMFILE = "romfile"  # every PCI device's: a string the device's checks leave to QEMU


@pytest.mark.parametrize("value", ["16,gpio-lines=8", "msi,id=evil", "a,,b,", ",id=x"])
def test_a_comma_in_a_value_stays_in_the_value(value: str) -> None:
    options = qemu_options(device_arg("irqlab0", {ROMFILE: value}))
    assert options == [("", "irqlab"), ("id", "irqlab0"), (ROMFILE, value)]


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
    assert f"-device takes its start-time properties {START} (irqlab-regs.h marks" in text, text
    run, never = props_when(AT_RUN), props_when(NEVER)
    assert f"(Its runtime controls, {', '.join(run)}, act on a running device" in text, text
    assert f"its read-only {', '.join(never)} are read from one" in text, text
    assert QOM.PROP_GPIO_LINES in START and QOM.PROP_FIFO_PUSH in run


START = ", ".join(props_when(AT_START))


def _refusal(key: str) -> str:
    with pytest.raises(GuestConfigError) as e:
        GuestConfig(device_props={key: 1})
    return str(e.value)


TAKES = f"-device takes its start-time properties {START} (irqlab-regs.h marks them "


@pytest.mark.parametrize("key", props_when(AT_RUN))
def test_a_runtime_control_is_refused_before_booting(key: str) -> None:
    """``device={"fifo-push": 1}`` passed the check and QEMU refused it when it started
    (the device: "acts on a running device; set it with qom-set after realize"): the
    header marks it a runtime control, so it is refused when the config is made, naming
    the injector's method for it and what -device takes."""
    said = _refusal(key)
    assert said.startswith(
        f"device_props key {key!r}: acts on a running device (a runtime control); set it "
        f"after the start with the injector (e.g. guest.injector.{method_of(key)}) or "
        f"qom-set; {TAKES}IRQLAB_SET_AT_START) and every PCI device's addr, "
    ), said
    with pytest.raises(GuestConfigError, match="acts on a running device"):
        device_arg("irqlab0", {key: 1})  # a config changed after it was made


@pytest.mark.parametrize("key", props_when(NEVER))
def test_a_read_only_property_is_refused_before_booting(key: str) -> None:
    said = _refusal(key)
    assert said.startswith(
        f"device_props key {key!r}: a read-only property (read it after the start with the "
        f"injector, e.g. guest.injector.{method_of(key)}, or qom-get); {TAKES}"
    ), said


@pytest.mark.parametrize(
    ("prop", "value"),
    [
        (QOM.PROP_GPIO_LINES, "many"),
        (QOM.PROP_GPIO_LINES, 33),
        (QOM.PROP_FIFO_DEPTH, 0),
        (QOM.PROP_EVQ_DEPTH, "4097"),
        (QOM.PROP_EVQ_DEPTH, True),
        (QOM.PROP_FIFO_DEPTH, "16,gpio-lines=8"),
    ],
)
def test_a_count_out_of_the_devices_range_is_refused_before_booting(
    prop: str, value: object
) -> None:
    """gpio-lines="many" and fifo-depth=0 reached QEMU, which refused them after
    "booting the guest cold" (and the command exited 1, not as a usage error)."""
    with pytest.raises(GuestConfigError) as info:
        GuestConfig(device_props={prop: value})
    assert f"{value!r} is not a whole number 1.." in str(info.value), str(info.value)
    for good in (1, "0x10", 16):
        GuestConfig(device_props={prop: good})


def _good(name: str) -> object:
    """A value the device takes for its start-time property *name*."""
    words = device_choices(name)
    return words[-1] if words else True if property_types()[name] == "bool" else 1


def test_the_devices_start_time_and_pcis_own_properties_are_taken() -> None:
    props = {name: _good(name) for name in props_when(AT_START)}
    assert QOM.PROP_GPIO_LINES in props and QOM.PROP_IRQ_MODE in props
    GuestConfig(device_props={**props, "addr": "05.0", "rombar": 0, "failover_pair_id": "x"})


@pytest.mark.parametrize(
    ("typo", "said"),
    [
        (QOM.PROP_FIFO_PUSH[:-1], "That is a runtime control: set it after the start"),
        (QOM.PROP_COUNTERS[:-1], "That is read-only: read it after the start"),
        (QOM.PROP_GPIO_LINES[:-1], "?);"),
    ],
)
def test_a_typo_suggests_the_property_and_says_when_it_is_set(typo: str, said: str) -> None:
    """A suggestion that -device would refuse too says so at once (the next try was
    refused as a runtime control); the runtime and read-only ones are listed apart."""
    with pytest.raises(GuestConfigError) as info:
        GuestConfig(device_props={typo: 1})
    msg = str(info.value)
    assert said in msg, msg


MODES = device_choices(QOM.PROP_IRQ_MODE)
BOOL_SAID = (
    "is not a bool: it takes True or False, or QEMU's words for one: on, yes, true, y; "
    "off, no, false, n"
)


@pytest.mark.parametrize(
    ("prop", "value", "said"),
    [
        (QOM.PROP_IRQ_MODE, "MSIX", "'MSIX' is not one of its values: intx, msi, msix"),
        (QOM.PROP_IRQ_MODE, "msi,id=x", "'msi,id=x' is not one of its values: intx, msi, msix"),
        (QOM.PROP_IRQ_MODE, "", "'' is not one of its values: intx, msi, msix"),
        (QOM.PROP_IRQ_MODE, 1, "1 is not one of its values: intx, msi, msix"),
        (QOM.PROP_BROKEN_INTX_DISABLE, "maybe", f"'maybe' {BOOL_SAID}"),
        (QOM.PROP_BROKEN_INTX_DISABLE, "ON", f"'ON' {BOOL_SAID}"),
        (QOM.PROP_BROKEN_INTX_DISABLE, "1", f"'1' {BOOL_SAID}"),
        (QOM.PROP_BROKEN_INTX_DISABLE, 1, f"1 {BOOL_SAID}"),
    ],
)
def test_a_word_or_bool_the_device_refuses_is_refused_before_booting(
    prop: str, value: object, said: str
) -> None:
    """irq-mode=MSIX and broken-intx-disable=maybe reached QEMU, which refused them
    after "booting the guest cold" ("irq-mode must be intx, msi or msix", "Parameter
    'broken-intx-disable' expects 'on' or 'off'"), exit 1: refused when the config is
    made, naming the property and the values it takes."""
    with pytest.raises(GuestConfigError) as info:
        GuestConfig(device_props={prop: value})
    assert str(info.value).startswith(f"device_props key {prop!r}: {said}"), str(info.value)
    with pytest.raises(GuestConfigError, match="is not"):
        device_arg("irqlab0", {prop: value})  # a config changed after it was made


def test_the_modes_are_the_headers() -> None:
    assert tuple(m.lower() for m in REGS.with_prefix("IRQ_MODE_")) == MODES
    assert "IRQLAB_IRQ_MODE_*, irqlab-regs.h" in str(device_value_problem(QOM.PROP_IRQ_MODE, "x"))


@pytest.mark.parametrize(
    ("prop", "value"),
    [
        *((QOM.PROP_IRQ_MODE, m) for m in MODES),
        *((QOM.PROP_BROKEN_INTX_DISABLE, v) for v in (True, False, "on", "off", "yes", "n")),
    ],
)
def test_a_word_or_bool_the_device_takes_is_taken(prop: str, value: object) -> None:
    GuestConfig(device_props={prop: value})


@pytest.mark.parametrize("prop", props_when(AT_START))
def test_every_start_time_property_has_its_values_checked(prop: str) -> None:
    """A property the header adds is a count, a word of the header's or a bool of the
    spec's (its "Type" column): else its wrong values reach QEMU unchecked again."""
    assert device_value_problem(prop, "nonsense,x") is not None
    assert device_value_problem(prop, _good(prop)) is None
    assert property_types()[prop] in ("uint32", "string", "bool")
