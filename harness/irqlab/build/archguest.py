"""Prerequisites of a guest of another architecture than x86_64 (opt-in, see
:mod:`irqlab.build.arch`): its QEMU, its kernel, the module cross-built for it and
the Debian-package image from its Debian architecture.

``Guest`` (:mod:`irqlab.vm.guest`) asks here when ``GuestConfig(arch=...)`` or
``$IRQLAB_ARCH`` names such an architecture.  QEMU is only looked up (building it is
``IRQLAB_ARCHES=x86_64,aarch64 irqlab build-qemu``); kernel, module and image are
built on demand like the x86_64 ones (seconds, cached).  With ``IRQLAB_IMAGE=buildroot``
``Guest`` boots *arch*'s Buildroot image instead (:mod:`irqlab.build.buildroot`), on the
QEMU found here.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from irqlab import cancel
from irqlab.build import qemu as qemu_build
from irqlab.build.arch import ARCHES, ARCHES_ENV, X86_64, Arch
from irqlab.build.boot import GuestImage
from irqlab.build.qemu import QemuInstall
from irqlab.errors import IrqlabError, hide_frame

__tracebackhide__ = hide_frame  # pytest: an IrqlabError's traceback leaves these frames out

__all__ = [
    "KEY_DEBOUNCE_MS",
    "KEY_LINE",
    "KEY_SLOT",
    "Missing",
    "absent_arches",
    "arch_qemu",
    "check_apt_arch",
    "key_dtb_args",
    "prerequisites",
    "present_arches",
]

# The aarch64 guest's device tree places a key (gpio-keys, KEY_ENTER) on our gpiochip's
# line KEY_LINE with a KEY_DEBOUNCE_MS debounce interval; our function sits at slot
# KEY_SLOT of the root bus (after virtio-net and virtio-rng).  Nothing claims the line
# until the guest loads gpio_keys.
KEY_LINE = 31
KEY_DEBOUNCE_MS = 20
KEY_SLOT = 3


class Missing(IrqlabError, RuntimeError):
    """A prerequisite is not built and cannot be built here; the message says how."""


def _foreign_deb_arches() -> list[str]:
    try:
        r = cancel.run_text(
            ["dpkg", "--print-foreign-architectures"],
            doing="asking dpkg for its foreign architectures",
        )
    except FileNotFoundError:
        return []
    return r.stdout.split()


def check_apt_arch(arch: Arch) -> None:
    """:class:`Missing` saying how to add *arch*'s Debian packages to apt when it is a
    foreign architecture dpkg does not know ("package linux-image-arm64 not found in
    the apt lists (run apt-get update?)" said no more)."""
    if arch.foreign and arch.deb_arch not in _foreign_deb_arches():
        raise Missing(
            f"apt does not know Debian's {arch.deb_arch} packages: run "
            f"`dpkg --add-architecture {arch.deb_arch} && apt-get update` (as root) once"
        )


def present_arches() -> list[Arch]:
    """x86_64 (the default guest: its absence is an error elsewhere, never hidden), plus
    every other architecture whose QEMU is built."""
    return [X86_64, *(a for a in ARCHES.values() if a != X86_64 and _present(a))]


def _present(arch: Arch) -> bool:
    """Whether *arch*'s QEMU is found; one apt cannot tell is current is not (a guest of
    it says why: :func:`arch_qemu`)."""
    try:
        return find_qemu(arch) is not None
    except qemu_build.QemuUnknown:
        return False


def find_qemu(arch: Arch) -> QemuInstall | None:
    """:func:`irqlab.build.qemu.find_qemu`, looked up at each call: bound at this module's
    import, it kept a replacement a test had made then for the rest of the process."""
    return qemu_build.find_qemu(arch)


def absent_arches() -> list[Arch]:
    """The architectures :func:`present_arches` leaves out (their QEMU is not built)."""
    present = present_arches()
    return [a for a in ARCHES.values() if a not in present]


def arch_qemu(arch: Arch) -> QemuInstall:
    """The built QEMU of *arch*'s target, or :class:`Missing` naming the command that
    builds it."""
    from irqlab.paths import cache_description

    qemu = find_qemu(arch)
    if qemu is None:  # which cache, as for x86_64: a wrong $IRQLAB_CACHE_DIR is no build
        raise Missing(
            f"{arch.qemu_binary} with the irqlab device is not built: "
            f"run `{ARCHES_ENV}=x86_64,{arch.name} irqlab build-qemu`; looked in the build "
            f"cache {cache_description()}"
        )
    return qemu


def prerequisites(
    arch: Arch,
    extra_packages: Sequence[str] = (),
    kmod: Path | None = None,
    *,
    kernel_modules: Sequence[str] = (),
) -> tuple[QemuInstall, GuestImage, Path]:
    """(QEMU install, Debian-package image, module .ko) for a guest of *arch*; *kmod*: a
    build of our driver for *arch* to use instead of the module recipe's
    (``$IRQLAB_KMOD``).  The Buildroot image of *arch* is
    :func:`irqlab.build.buildroot.ensure_image` (``Guest`` chooses by ``$IRQLAB_IMAGE``)."""
    qemu = arch_qemu(arch)
    check_apt_arch(arch)
    from irqlab.build.image import ensure_image
    from irqlab.build.kernel import ensure_kernel
    from irqlab.build.kmod import ensure_kmod

    try:
        kernel = ensure_kernel(arch=arch)
        ko = kmod if kmod is not None else ensure_kmod(kernel=kernel)
        image = ensure_image(
            kmod=ko,
            extra_packages=tuple(dict.fromkeys(extra_packages)),
            arch=arch,
            kernel_modules=kernel_modules,
        )
    except (IrqlabError, OSError, subprocess.CalledProcessError) as e:
        raise Missing(f"the {arch.name} guest image cannot be built: {e}") from e
    return qemu, image, ko


def key_dtb_args(qemu: Path, machine_args: Sequence[str]) -> list[str]:
    """``-dtb <virt's tree + our function's node + the debounced key>`` for an aarch64
    guest booted with *machine_args* (machine, CPU, vCPUs: what the tree depends on)."""
    from irqlab.build.devicetree import ensure_key_dtb

    dtb = ensure_key_dtb(
        qemu, machine_args, slot=KEY_SLOT, line=KEY_LINE, debounce_ms=KEY_DEBOUNCE_MS
    )
    return ["-dtb", str(dtb)]
