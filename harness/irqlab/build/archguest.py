"""Prerequisites of a guest of another architecture than x86_64 (opt-in, see
:mod:`irqlab.build.arch`): its QEMU, its kernel, the module cross-built for it and
the Debian-package image from its Debian architecture.

``Guest`` (:mod:`irqlab.vm.guest`) asks here when ``GuestConfig(arch=...)`` or
``$IRQLAB_ARCH`` names such an architecture.  QEMU is only looked up (building it is
``IRQLAB_ARCHES=x86_64,aarch64 invoke build-qemu``); kernel, module and image are
built on demand like the x86_64 ones (seconds, cached).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from irqlab.build.arch import ARCHES, ARCHES_ENV, X86_64, Arch
from irqlab.build.boot import GuestImage
from irqlab.build.qemu import QemuInstall, find_qemu
from irqlab.errors import IrqlabError

__all__ = ["Missing", "absent_arches", "prerequisites", "present_arches"]


class Missing(IrqlabError, RuntimeError):
    """A prerequisite is not built and cannot be built here; the message says how."""


def _foreign_deb_arches() -> list[str]:
    try:
        r = subprocess.run(
            ["dpkg", "--print-foreign-architectures"], capture_output=True, text=True, check=False
        )
    except FileNotFoundError:
        return []
    return r.stdout.split()


def present_arches() -> list[Arch]:
    """x86_64 (the default guest: its absence is an error elsewhere, never hidden), plus
    every other architecture whose QEMU is built."""
    return [X86_64, *(a for a in ARCHES.values() if a != X86_64 and find_qemu(a) is not None)]


def absent_arches() -> list[Arch]:
    """The architectures :func:`present_arches` leaves out (their QEMU is not built)."""
    present = present_arches()
    return [a for a in ARCHES.values() if a not in present]


def prerequisites(
    arch: Arch, extra_packages: Sequence[str] = ()
) -> tuple[QemuInstall, GuestImage, Path]:
    """(QEMU install, image, module .ko) for a guest of *arch*."""
    kind = os.environ.get("IRQLAB_IMAGE", "debian")
    if kind != "debian":
        raise Missing(f"IRQLAB_IMAGE={kind}: only the Debian-package image exists for {arch.name}")
    qemu = find_qemu(arch)
    if qemu is None:
        raise Missing(
            f"{arch.qemu_binary} with the irqlab device is not built: "
            f"run `{ARCHES_ENV}=x86_64,{arch.name} invoke build-qemu`"
        )
    if arch.foreign and arch.deb_arch not in _foreign_deb_arches():
        raise Missing(
            f"apt does not know Debian's {arch.deb_arch} packages: run "
            f"`dpkg --add-architecture {arch.deb_arch} && apt-get update` (as root) once"
        )
    from irqlab.build.image import ensure_image
    from irqlab.build.kernel import ensure_kernel
    from irqlab.build.kmod import ensure_kmod

    try:
        kernel = ensure_kernel(arch=arch)
        ko = ensure_kmod(kernel=kernel)
        image = ensure_image(
            kmod=ko, extra_packages=tuple(dict.fromkeys(extra_packages)), arch=arch
        )
    except Exception as e:
        raise Missing(f"the {arch.name} guest image cannot be built: {e}") from e
    return qemu, image, ko
