"""Guest architectures: what differs between the x86_64 guest and the aarch64 one.

``x86_64`` is the default everywhere.  ``aarch64`` is opt-in:

- ``IRQLAB_ARCHES=x86_64,aarch64`` makes the QEMU recipe build ``aarch64-softmmu``
  too (in its own build directory, so the x86_64 build and its cache are untouched);
- ``IRQLAB_ARCH=aarch64`` (or ``GuestConfig(arch="aarch64")``) boots the arm64 guest.

Each :class:`Arch` names the QEMU target, the Debian architecture of the guest's
packages, the kernel's ``ARCH=`` and the cross compiler's prefix.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping
from dataclasses import dataclass

from irqlab.errors import ConfigError, hide_frame

__tracebackhide__ = hide_frame  # pytest: an IrqlabError's traceback leaves these frames out

__all__ = [
    "AARCH64",
    "ARCHES",
    "ARCHES_ENV",
    "ARCH_ENV",
    "DEFAULT",
    "MODULE_BUILD_PACKAGES",
    "X86_64",
    "Arch",
    "build_module_command",
    "built_arches",
    "by_name",
    "host_deb_arch",
    "selected",
]

ARCH_ENV = "IRQLAB_ARCH"
ARCHES_ENV = "IRQLAB_ARCHES"


@dataclass(frozen=True)
class Arch:
    name: str  # uname -m in the guest: "x86_64", "aarch64"
    deb_arch: str  # Debian architecture of the guest's packages: "amd64", "arm64"
    qemu_target: str  # meson target: "x86_64-softmmu"
    kernel_arch: str  # Kbuild ARCH=: "x86", "arm64"
    triplet: str  # multiarch triplet (library directory): "x86_64-linux-gnu"
    cross_compile: str  # CROSS_COMPILE= prefix on an x86_64 host ("" when native)
    kernel_meta: str  # Debian meta package naming the current kernel ABI
    elf_machine: int  # e_machine of its ELF files (kernel modules): EM_X86_64, EM_AARCH64

    @property
    def qemu_binary(self) -> str:
        return f"qemu-system-{self.name}"

    @property
    def foreign(self) -> bool:
        """Whether the guest's binaries cannot run on this host."""
        return self.deb_arch != host_deb_arch()


def _arch(name: str, deb_arch: str, kernel_arch: str, elf_machine: int, *, cross: bool) -> Arch:
    """An :class:`Arch` whose names follow Debian's and QEMU's conventions from *name*."""
    triplet = f"{name}-linux-gnu"
    return Arch(
        name=name,
        deb_arch=deb_arch,
        qemu_target=f"{name}-softmmu",
        kernel_arch=kernel_arch,
        triplet=triplet,
        cross_compile=f"{triplet}-" if cross else "",
        kernel_meta=f"linux-image-{deb_arch}",
        elf_machine=elf_machine,
    )


X86_64 = _arch("x86_64", "amd64", "x86", 62, cross=False)  # EM_X86_64
AARCH64 = _arch("aarch64", "arm64", "arm64", 183, cross=True)  # EM_AARCH64
ARCHES: dict[str, Arch] = {a.name: a for a in (X86_64, AARCH64)}
DEFAULT = X86_64
_ALIASES = {"amd64": "x86_64", "arm64": "aarch64"}


# What that command runs: make, gcc (Debian 12's, the guest kernel's gcc 12), and libelf1
# for the headers' objtool (their other tools need only libc).  A QEMU build brings them
# with its build dependencies; a restored build cache brings none.
MODULE_BUILD_PACKAGES: tuple[str, ...] = ("gcc", "make", "libelf1")


def build_module_command(arch: str = DEFAULT.name) -> str:
    """How a module is built against the Debian guest kernel of *arch* (the README,
    ``irqlab kdir --help`` and every refusal of a module built otherwise say this).

    Another architecture's make arguments are kept in a variable first: with
    ``make $(irqlab kdir ...)`` a failing kdir (apt without arm64, not root) left make
    run with no ``-C`` at all, in the module's own directory, where it built for the
    host or said "No rule to make target 'modules'"."""
    if arch == DEFAULT.name:
        return "make -C $(irqlab kdir) M=$PWD modules"
    return f"A=$(irqlab kdir --arch {arch} --make-args) && make $A M=$PWD modules"


def host_deb_arch() -> str:
    m = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(m, m)


def by_name(name: str) -> Arch:
    """The architecture called *name* (``x86_64``/``amd64``, ``aarch64``/``arm64``);
    :class:`~irqlab.errors.ConfigError` (a ValueError) for another name."""
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    try:
        return ARCHES[key]
    except KeyError:
        raise ConfigError(f"unknown architecture {name!r} ({_known()})") from None


def _known() -> str:
    return f"known: {', '.join(sorted(ARCHES))}"


def selected(env: Mapping[str, str]) -> Arch:
    """The guest architecture ``IRQLAB_ARCH`` names (default x86_64)."""
    value = env.get(ARCH_ENV, "").strip()
    return _from_env(ARCH_ENV, value) if value else DEFAULT


def _from_env(var: str, name: str) -> Arch:
    """:func:`by_name` of *name*, read from the environment variable *var*: its error
    names the variable."""
    try:
        return by_name(name)
    except ConfigError:
        raise ConfigError(f"{var}={name!r}: no such architecture ({_known()})") from None


def built_arches(env: Mapping[str, str]) -> tuple[Arch, ...]:
    """The QEMU targets to build: ``IRQLAB_ARCHES`` (comma-separated), default x86_64 only.

    x86_64 is always built (the default guest); duplicates are dropped.
    """
    out: list[Arch] = [X86_64]
    for part in env.get(ARCHES_ENV, "").split(","):
        if part.strip():
            a = _from_env(ARCHES_ENV, part.strip())
            if a not in out:
                out.append(a)
    return tuple(out)
