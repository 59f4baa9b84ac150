"""GuestConfig and Guest refuse values of the wrong shape, naming the setting: a
string where a list belongs was taken a character at a time ("extra module not found:
m", "no module named 7, c, r"), a list where a dict belongs ended in AttributeError."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from irqlab.vm.guest import Guest, GuestConfig, GuestConfigError


@pytest.mark.parametrize(
    ("kw", "says"),
    [
        (
            {"extra_modules": "mod/mydrv.ko"},
            "GuestConfig(extra_modules='mod/mydrv.ko'): give a list",
        ),
        ({"kernel_modules": "crc7"}, "GuestConfig(kernel_modules='crc7'): give a list"),
        ({"extra_packages": "rt-tests"}, "GuestConfig(extra_packages='rt-tests'): give a list"),
        ({"extra_files": [("/a", "b")]}, "GuestConfig(extra_files=[('/a', 'b')]): give a dict"),
        ({"module_params": ["uio=1"]}, "GuestConfig(module_params=['uio=1']): give a dict"),
        ({"extra_module_params": {"mydrv": "tag=x"}}, "each module's parameters are a dict"),
    ],
)
def test_a_value_of_the_wrong_shape_is_refused(kw: dict[str, Any], says: str) -> None:
    with pytest.raises(GuestConfigError) as info:
        GuestConfig(**kw)
    assert says in str(info.value), str(info.value)


def test_lists_and_dicts_are_taken() -> None:
    c = GuestConfig(
        extra_modules=("a.ko",), kernel_modules=("crc7",), extra_module_params={"a": {"t": 1}}
    )
    assert [Path(m).name for m in c.extra_modules] == ["a.ko"]


def test_a_guest_is_given_a_config() -> None:
    with pytest.raises(GuestConfigError, match=r"Guest\('x'\): give a GuestConfig"):
        Guest("x")  # type: ignore[arg-type]


def test_the_injector_of_a_guest_not_started_is_a_guest_error() -> None:
    """It was None, and g.injector.push(1) an AttributeError."""
    from irqlab.vm.guest import GuestError

    with pytest.raises(GuestError, match="not running: start"):
        Guest(GuestConfig()).injector.push(1)


@pytest.mark.parametrize(
    ("devices", "says"),
    [
        ("edu", "GuestConfig(extra_devices='edu'): give a list"),
        (["-device edu"], "one -device spec, without the option itself"),
        (["edu\n-S"], "one -device spec, without the option itself or line breaks"),
        ([""], "give a -device spec as QEMU takes it"),
        ([5], "give a -device spec as QEMU takes it"),
        (["irqlab,id=x"], "the irqlab device is the guest's own: set its properties with"),
        (["help"], "-device help` lists the devices"),
    ],
)
def test_extra_devices_are_device_specs(devices: Any, says: str) -> None:
    with pytest.raises(GuestConfigError) as info:
        GuestConfig(extra_devices=devices)
    assert says in str(info.value), str(info.value)


def test_extra_devices_reach_the_command_line_after_ours() -> None:
    from irqlab.vm.guest import extra_device_problem

    c = GuestConfig(extra_devices=["edu", "pci-testdev,id=t"])
    assert c.extra_devices == ("edu", "pci-testdev,id=t")
    assert extra_device_problem("edu,id=edu0,dma_mask=0xffffffff") is None


@pytest.mark.parametrize(
    ("field", "bad", "says"),
    [
        ("smp", 0, "GuestConfig(smp=0)"),
        ("name", "../x", "GuestConfig(name='../x')"),
        ("boot_timeout", -1, "GuestConfig.boot_timeout"),
        ("ssh_timeout", -1, "GuestConfig.ssh_timeout"),
        ("extra_modules", "mydrv.ko", "GuestConfig(extra_modules='mydrv.ko'): give a list"),
        ("extra_files", {"etc/x": "x"}, "extra_files: guest path 'etc/x' is not absolute"),
        ("log_dir", 7, "GuestConfig(log_dir=7): give a path"),
    ],
)
def test_a_config_changed_after_it_was_made_is_checked_again_before_anything_starts(
    field: str, bad: object, says: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plain dataclass: `cfg.smp = 0` booted a guest with -smp 0 and saved its
    snapshot, `cfg.name = "../x"` put its logs outside the log directory."""
    # were anything looked for or started, it would fail on this cache directory
    monkeypatch.setenv("IRQLAB_CACHE_DIR", "/proc/no-cache-here")
    config = GuestConfig()
    setattr(config, field, bad)
    with pytest.raises(GuestConfigError) as info:
        Guest(config).prepare()
    assert says in str(info.value), str(info.value)


def test_a_config_changed_after_an_explicit_prepare_is_checked_by_the_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``g = Guest(cfg).prepare(); cfg.smp = 0; g.start()``: the start skips its own
    prepare() (the caller's just ran, as irqlab run/shell do), which alone checked."""
    monkeypatch.setenv("IRQLAB_CACHE_DIR", "/proc/no-cache-here")
    config = GuestConfig()
    g = Guest(config)
    g._prepared = True  # what a prepare() leaves (it needs the built QEMU and image)
    config.smp = 0
    with pytest.raises(GuestConfigError, match=r"GuestConfig\(smp=0\)"):
        g.start()
