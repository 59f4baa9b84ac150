"""Guest architectures: selection from the environment and what the QEMU recipe builds."""

from __future__ import annotations

from pathlib import Path

import pytest

from irqlab.build import arch, qemu
from irqlab.build.arch import AARCH64, X86_64


def test_default_is_x86_64_only() -> None:
    assert arch.selected({}) == X86_64
    assert arch.built_arches({}) == (X86_64,)


@pytest.mark.parametrize("name", ["aarch64", "arm64", " AArch64 "])
def test_aarch64_by_either_name(name: str) -> None:
    assert arch.selected({arch.ARCH_ENV: name}) == AARCH64


def test_unknown_arch_is_an_error() -> None:
    with pytest.raises(ValueError, match="riscv64"):
        arch.selected({arch.ARCH_ENV: "riscv64"})


def test_built_arches_always_include_x86_64_once() -> None:
    assert arch.built_arches({arch.ARCHES_ENV: "aarch64"}) == (X86_64, AARCH64)
    env = {arch.ARCHES_ENV: "x86_64, aarch64,arm64,"}
    assert arch.built_arches(env) == (X86_64, AARCH64)


def test_x86_64_configure_flags_are_unchanged() -> None:
    # the x86_64 build keeps its hash (and so its cache) whatever else is built
    assert qemu.configure_flags() == qemu.CONFIGURE_FLAGS
    assert qemu.configure_flags(X86_64) == qemu.CONFIGURE_FLAGS


def test_aarch64_flags_differ_only_in_the_target() -> None:
    flags = qemu.configure_flags(AARCH64)
    assert flags[0] == "--target-list=aarch64-softmmu"
    assert flags[1:] == qemu.CONFIGURE_FLAGS[1:]


def test_each_target_has_its_own_hash(tmp_path: Path) -> None:
    dev = tmp_path / "dev"
    dev.mkdir()
    for name in qemu.DEVICE_FILES:
        (dev / name).write_text(name)
    src = qemu.QemuSource("debian", "1:7.2+dfsg-7")
    x86 = qemu.input_digest(src, dev, {}, qemu.configure_flags(X86_64))
    a64 = qemu.input_digest(src, dev, {}, qemu.configure_flags(AARCH64))
    assert x86 == qemu.input_digest(src, dev, {})
    assert x86 != a64


def test_binary_names() -> None:
    assert X86_64.qemu_binary == "qemu-system-x86_64"
    assert AARCH64.qemu_binary == "qemu-system-aarch64"
