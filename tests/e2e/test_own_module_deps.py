"""A driver developer's module that needs a module of the guest kernel the standard
image does not ship (its ``depends=``) loads: the image ships that module and the
guest loads it first.  ``kernel_modules=`` ships more for a test to modprobe."""

from __future__ import annotations

import pytest
from kmods import build_test_kmod  # same directory (rootdir-relative import)

from irqlab.testing.plugin import start_guest
from irqlab.vm.guest import Guest, GuestConfig, GuestConfigError


def _crc_itu_t(data: bytes) -> int:
    """The kernel's crc_itu_t(0, data): CRC-16, polynomial 0x1021, MSB first."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021 if crc & 0x8000 else crc << 1) & 0xFFFF
    return crc


def test_an_extra_modules_kernel_dependency_is_shipped_and_loaded_first() -> None:
    ko = build_test_kmod("uses_crc_itu_t")
    config = GuestConfig(name="own-deps", extra_modules=[ko], kernel_modules=("crc7",))
    assert Guest(config).kernel_modules() == ("crc7", "crc-itu-t")
    g = start_guest(config)
    try:
        loaded = g.sh("cut -d' ' -f1 /proc/modules").split()
        assert "crc_itu_t" in loaded and "uses_crc_itu_t" in loaded, loaded
        crc = int(g.sh("cat /sys/module/uses_crc_itu_t/parameters/crc"))
        assert crc == _crc_itu_t(b"123456789") == 0x31C3
        # kernel_modules= ships a module a test loads itself
        g.sh("modprobe crc7")
        assert "crc7" in g.sh("cut -d' ' -f1 /proc/modules").split()
    finally:
        g.close()
    # the standard image has neither: another image, another snapshot
    assert Guest(GuestConfig()).prepare().image != Guest(config).prepare().image


def test_a_kernel_module_the_guest_kernel_lacks_is_refused_before_booting() -> None:
    with pytest.raises(GuestConfigError, match="has no module named no_such_module"):
        Guest(GuestConfig(kernel_modules=("no-such-module",))).prepare()
