"""``irqlab build-image`` builds the image a default guest boots (it built one without
the packages every guest's image has, which no guest used: each first start then built
its own), for either architecture."""

from __future__ import annotations

import re

import pytest
from cli import irqlab  # same directory (rootdir-relative import)

from irqlab.build.archguest import present_arches
from irqlab.vm.guest import Guest, GuestConfig


@pytest.mark.parametrize("arch", [a.name for a in present_arches()])
def test_build_image_builds_the_image_a_guest_boots(arch: str) -> None:
    r = irqlab("build-image", "--arch", arch, timeout=900)
    assert r.returncode == 0, r.stderr
    built = re.search(r"^initramfs: (\S+)", r.stdout, re.M)
    assert built is not None, r.stdout
    guest = Guest(GuestConfig(name=f"build-image-{arch}", arch=arch)).prepare()  # no boot
    assert guest.image is not None
    assert built[1] == str(guest.image.initramfs), (r.stdout, guest.image)


def test_build_image_refuses_force_for_another_architecture() -> None:
    r = irqlab("build-image", "--arch", "arm64", "--force")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "--force: only the x86_64 image is rebuilt on demand" in r.stderr, r.stderr
