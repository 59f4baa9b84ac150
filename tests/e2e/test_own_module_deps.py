"""A driver developer's module that needs a module of the guest kernel the standard
image does not ship (its ``depends=``) loads: the image ships that module and the
guest loads it first.  ``kernel_modules=`` ships more for a test to modprobe; the
module's own parameters are given as insmod takes them."""

from __future__ import annotations

import pytest
from kmods import build_test_kmod  # same directory (rootdir-relative import)

from irqlab.testing.plugin import start_guest
from irqlab.vm.guest import Guest, GuestConfig, GuestConfigError

SEED = 0x1D0F


def _crc_itu_t(seed: int, data: bytes) -> int:
    """The kernel's crc_itu_t(seed, data): CRC-16, polynomial 0x1021, MSB first."""
    crc = seed
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021 if crc & 0x8000 else crc << 1) & 0xFFFF
    return crc


def test_an_extra_modules_kernel_dependency_is_shipped_and_loaded_first() -> None:
    ko = build_test_kmod("uses_crc_itu_t")
    config = GuestConfig(
        name="own-deps",
        extra_modules=[ko],
        extra_module_params={"uses_crc_itu_t": {"seed": SEED}},
        kernel_modules=("crc7",),
    )
    assert Guest(config).kernel_modules() == ("crc7", "crc-itu-t")
    g = start_guest(config)
    try:
        loaded = g.sh("cut -d' ' -f1 /proc/modules").split()
        assert "crc_itu_t" in loaded and "uses_crc_itu_t" in loaded, loaded
        crc = int(g.sh("cat /sys/module/uses_crc_itu_t/parameters/crc"))
        assert crc == _crc_itu_t(SEED, b"123456789") != _crc_itu_t(0, b"123456789")
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


@pytest.fixture
def crc_module_marked(request: pytest.FixtureRequest) -> None:
    """The marker a driver developer writes, ``modules=["mydrv.ko seed=7"]``, with the
    path of the test module as built (not beside this file)."""
    ko = build_test_kmod("uses_crc_itu_t")
    request.applymarker(pytest.mark.irqlab(modules=[f"{ko} seed=7"], load_irqlab=False))


def test_the_marker_gives_an_own_module_its_parameters_as_insmod_takes_them(
    crc_module_marked: None, irqlab_fresh_guest: Guest
) -> None:
    crc = int(irqlab_fresh_guest.sh("cat /sys/module/uses_crc_itu_t/parameters/crc"))
    assert crc == _crc_itu_t(7, b"123456789")
