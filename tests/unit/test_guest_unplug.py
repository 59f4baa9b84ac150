"""Guest.unplug's errors: a wait for DEVICE_DELETED that failed early keeps its own
error; only one whose time ran out is a GuestTimeout."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from irqlab.vm import guest as guest_mod
from irqlab.vm.guest import Guest, GuestError, GuestTimeout
from irqlab.vm.qmp.errors import QMPCommandError


def _guest(wait_event: object) -> SimpleNamespace:
    class Watch:
        def wait_verdict(self, t: float) -> None:  # no verdict: the wait's whole time
            threading.Event().wait(t)

    g = SimpleNamespace(config=SimpleNamespace(device_id="irqlab0"), fault=None, _watch=Watch())
    g._need_hotplug = lambda: None
    g._control_qmp = lambda *a: None
    g._plug_qmp = lambda *a: Guest._plug_qmp(g, *a)  # type: ignore[arg-type]
    g._vm = lambda: SimpleNamespace(wait_event=wait_event)
    g.wait_fault = lambda t: Guest.wait_fault(g, t)  # type: ignore[arg-type]
    return g


def _lost(*_a: object, **_k: object) -> None:
    raise RuntimeError("QMP connection lost")


def test_an_early_failure_of_a_short_wait_is_not_a_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The deadline was read after the wait for the watch's verdict (2 s): a 1 s unplug
    whose QMP was lost at once said 'never reported DEVICE_DELETED within 1 s'."""
    monkeypatch.setattr(guest_mod, "FAULT_VERDICT", 0.3)
    with pytest.raises(GuestError) as info:
        Guest.unplug(_guest(_lost), timeout=0.2)  # type: ignore[arg-type]
    assert not isinstance(info.value, GuestTimeout), info.value
    assert "QMP connection lost" in str(info.value)


def test_a_wait_whose_time_ran_out_is_a_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guest_mod, "FAULT_VERDICT", 0.0)

    def ran_out(_name: str, timeout: float, _match: object) -> None:
        threading.Event().wait(timeout)
        raise RuntimeError("not seen")

    with pytest.raises(GuestTimeout, match=r"never reported DEVICE_DELETED within 0\.2 s"):
        Guest.unplug(_guest(ran_out), timeout=0.2)  # type: ignore[arg-type]


def _refusing(error_class: str, desc: str) -> SimpleNamespace:
    """A hot-plug guest whose QEMU refuses every device_del and device_add so."""
    g = _guest(_lost)

    def refuse(command: str, args: dict[str, object], _doing: str) -> None:
        raise QMPCommandError(command, args, error_class, desc)

    g._control_qmp = refuse
    g.config.device_props = {}
    return g


def test_an_unplug_of_a_device_not_plugged_says_so() -> None:
    """A second unplug() raised QMP's raw 'DeviceNotFound'."""
    g = _refusing("DeviceNotFound", "Device 'irqlab0' not found")
    with pytest.raises(
        GuestError, match=r"^unplugging the device: the device 'irqlab0' is not plugged"
    ):
        Guest.unplug(g, timeout=5)  # type: ignore[arg-type]


def test_a_replug_of_a_device_plugged_says_so() -> None:
    """A replug() while plugged raised QMP's raw "Duplicate device ID 'irqlab0'"."""
    g = _refusing("GenericError", "Duplicate device ID 'irqlab0' for device")
    with pytest.raises(
        GuestError, match=r"^plugging the device back: the device 'irqlab0' is already plugged"
    ):
        Guest.replug(g, timeout=5)  # type: ignore[arg-type]


def test_other_refusals_are_qemus_own() -> None:
    g = _refusing("GenericError", "Bus 'irqlab-hp0' does not support hotplugging")
    with pytest.raises(QMPCommandError, match="does not support hotplugging"):
        Guest.replug(g, timeout=5)  # type: ignore[arg-type]
    with pytest.raises(QMPCommandError, match="does not support hotplugging"):
        Guest.unplug(g, timeout=5)  # type: ignore[arg-type]
