"""Build recipe: QEMU (x86_64 system emulator) with the irqlab device grafted in.

``IRQLAB_ARCHES=x86_64,aarch64`` (see :mod:`irqlab.build.arch`) adds
``qemu-system-aarch64`` from the same grafted source, configured in its own build
directory (``build-<version>-aarch64``) and installed into its own
``qemu-<hash>/`` (the configure flags, hence the hash, name the target).  The
default builds x86_64 only.

Source: Debian's ``qemu`` source package (``apt-get source``, Debian's patches
applied), or with ``IRQLAB_QEMU_SOURCE=upstream`` a pinned upstream release
tarball checked against a pinned SHA-256.  The device files in ``qemu-device/``
are grafted in (``qemu-device/graft.py``), QEMU is configured for a small TCG/KVM
x86_64 build and compiled through ccache in a build directory whose path never
changes (so a warm ccache hits), and the binary plus the firmware the guest needs
(from Debian's ``qemu-system-data``, ``seabios`` and ``ipxe-qemu`` binary
packages: Debian's dfsg source ships no firmware blobs) are installed into
``<cache>/qemu-<hash>/``.  The hash covers every input: this recipe's version,
the QEMU source version, the device files, the configure flags and the firmware
package versions.  A rerun with unchanged inputs returns at once.  The device files
are read once: the graft copies the bytes the hash covered (a copy of them in a
temporary directory), so an edit made while a build waits for the lock is never
stored under the key of the text it replaced.

The binary needs shared libraries (libglib2.0-0, libpixman-1-0, libslirp0, libfdt1,
...) that the build gets as a side effect of the ``-dev`` packages of
:data:`BUILD_DEPS`.  The install records the Debian packages that provide them
(``ldd`` + ``dpkg -S``, ``runtime_packages`` in ``manifest.json``), and a cache hit
(a cache restored into a fresh container) checks with ``ldd`` that every library is
found, installing the missing packages with apt as the build does
(:func:`ensure_runtime`).

Layout in the cache dir::

    qemu/src-<source version>/     source tree (grafted in place)
    qemu/build-<source version>/   meson/ninja build dir (stable path for ccache)
    qemu/dl/                       upstream tarballs
    ccache/                        ccache's cache (unless $CCACHE_DIR is set)
    qemu-<hash>/bin/qemu-system-x86_64, qemu-<hash>/share/qemu/<firmware>
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from irqlab import cancel, notice, paths
from irqlab.build import cache, debs, fetch, hostfacts, shared
from irqlab.build.arch import X86_64, Arch, built_arches
from irqlab.build.steps import BuildError, StepLog, failure_detail
from irqlab.errors import ConfigError, IrqlabError, hide_frame

__tracebackhide__ = hide_frame  # pytest: an IrqlabError's traceback leaves these frames out

__all__ = [
    "BuildError",
    "QemuInstall",
    "QemuSource",
    "QemuUnknown",
    "configure_flags",
    "current_digest",
    "current_source_dir",
    "debian_source_version",
    "device_paths",
    "ensure_qemu",
    "ensure_qemus",
    "ensure_runtime",
    "ensure_runtime_once",
    "env_source",
    "find_qemu",
    "libraries_not_found",
    "packages_from_dpkg_search",
    "runtime_packages",
    "source_dir",
]

# Part of QEMU's digest, as this file is not (input_digest hashes the source, the
# device files, the configure flags and the firmware): bump it (qemu-2, ...) with
# any change here that changes the install (a build step, its environment, what
# is installed), or the caches, CI's included, keep the QEMU built the old way.
RECIPE_VERSION = "qemu-1"
TARGET = "qemu-system-x86_64"

CONFIGURE_FLAGS: tuple[str, ...] = (
    "--target-list=x86_64-softmmu",
    "--without-default-features",
    "--enable-kvm",
    "--enable-tcg",
    "--enable-slirp",
    "--enable-fdt=system",
    "--disable-docs",
)


def configure_flags(arch: Arch = X86_64) -> tuple[str, ...]:
    """:data:`CONFIGURE_FLAGS` for *arch*'s target (x86_64: exactly :data:`CONFIGURE_FLAGS`)."""
    return (f"--target-list={arch.qemu_target}", *CONFIGURE_FLAGS[1:])


# Compiled-in prefix only; the install is a copy into the cache and callers pass -L.
CONFIGURE_PREFIX = "/opt/irqlab-qemu"

BUILD_DEPS: tuple[str, ...] = (
    "gcc",
    "make",
    "pkg-config",
    "python3",
    "xz-utils",
    "meson",
    "ninja-build",
    "ccache",
    "dpkg-dev",
    "libglib2.0-dev",
    "libpixman-1-dev",
    "libslirp-dev",
    "libfdt-dev",
)
# QEMU >= 8.1 sets up a Python venv in its build dir.
UPSTREAM_EXTRA_DEPS: tuple[str, ...] = ("python3-venv",)

# Where qemu-device/graft.py puts the device's sources in QEMU's tree -> the checkout's
# file: what a compiler error names (the shared tree's copy) is said as the latter.
GRAFTED: dict[str, str] = {
    "hw/misc/irqlab.c": "qemu-device/irqlab.c",
    "include/hw/misc/irqlab-regs.h": "qemu-device/irqlab-regs.h",
}
_GRAFTED_PATH = re.compile(
    r"(?<![^\s'\"`(])(?:[^\s:'\"`(]*/)?(" + "|".join(map(re.escape, GRAFTED)) + r")(?=[:\s'\"`]|$)"
)


def device_paths(line: str) -> str:
    """*line* (of the compiler's) with the grafted copies' paths
    (``../src-7.2+dfsg-7/hw/misc/irqlab.c``) as the checkout's (``qemu-device/irqlab.c``)."""
    return _GRAFTED_PATH.sub(lambda m: GRAFTED[m.group(1)], line)


DEVICE_FILES: tuple[str, ...] = (
    "irqlab.c",
    "irqlab-regs.h",
    "Kconfig",
    "meson.build",
    "graft.py",
)

# Firmware for the x86 machines (pc, q35, microvm), by Debian binary package:
# file name in <datadir> -> path inside the package.  qboot (fast PVH boot) and
# the option ROMs are built by Debian's qemu source package into
# qemu-system-data; SeaBIOS and iPXE come from their own source packages.
FIRMWARE: dict[str, dict[str, str]] = {
    "qemu-system-data": {
        "qboot.rom": "usr/share/qemu/qboot.rom",
        "bios-microvm.bin": "usr/share/qemu/qboot.rom",
        "pvh.bin": "usr/share/qemu/pvh.bin",
        "linuxboot.bin": "usr/share/qemu/linuxboot.bin",
        "linuxboot_dma.bin": "usr/share/qemu/linuxboot_dma.bin",
        "multiboot.bin": "usr/share/qemu/multiboot.bin",
        "multiboot_dma.bin": "usr/share/qemu/multiboot_dma.bin",
        "kvmvapic.bin": "usr/share/qemu/kvmvapic.bin",
    },
    "seabios": {
        "bios.bin": "usr/share/seabios/bios.bin",
        "bios-256k.bin": "usr/share/seabios/bios-256k.bin",
        "vgabios-stdvga.bin": "usr/share/seabios/vgabios-stdvga.bin",
        "vgabios-virtio.bin": "usr/share/seabios/vgabios-virtio.bin",
    },
    "ipxe-qemu": {
        "efi-virtio.rom": "usr/lib/ipxe/qemu/efi-virtio.rom",
        "efi-e1000.rom": "usr/lib/ipxe/qemu/efi-e1000.rom",
        "efi-e1000e.rom": "usr/lib/ipxe/qemu/efi-e1000e.rom",
    },
}
# qemu-system-data is built from the qemu source package: its version is the
# Debian source version we build.
SOURCE_VERSION_PACKAGE = "qemu-system-data"

# The runtime libraries' packages of a Debian 12 build (what `ldd` + `dpkg -S` found),
# for an install made before its manifest recorded them (``runtime_packages``).
RUNTIME_PACKAGES_FALLBACK: tuple[str, ...] = (
    "libc6",
    "libfdt1",
    "libgcc-s1",
    "libglib2.0-0",
    "libpcre2-8-0",
    "libpixman-1-0",
    "libslirp0",
    "zlib1g",
)

# Upstream release used with IRQLAB_QEMU_SOURCE=upstream.  The SHA-256 of
# qemu-9.1.0.tar.xz as published and pinned by independent packagers: Arch
# Linux's qemu PKGBUILD (sha256sums), LibreELEC's packages/.../qemu/package.mk
# (PKG_SHA256) and Spack's qemu package.py (version("9.1.0", sha256=...)) all
# carry this value.
UPSTREAM_RELEASES: dict[str, str] = {
    "9.1.0": "816b7022a8ba7c2ac30e2e0cf973e826f6bcc8505339603212c5ede8e94d7834",
}
UPSTREAM_DEFAULT = "9.1.0"
UPSTREAM_URL = "https://download.qemu.org/qemu-{version}.tar.xz"

SOURCE_ENV = "IRQLAB_QEMU_SOURCE"
UPSTREAM_VERSION_ENV = "IRQLAB_QEMU_UPSTREAM_VERSION"

DEB_SRC_FILE = Path("/etc/apt/sources.list.d/irqlab-deb-src.sources")
APT_SOURCES_D = Path("/etc/apt/sources.list.d")
APT_SOURCES_LIST = Path("/etc/apt/sources.list")

Log = Callable[[str], None]


@dataclass(frozen=True)
class QemuInstall:
    """A built QEMU: run ``binary -L datadir ...``."""

    binary: Path
    datadir: Path
    version: str


@dataclass(frozen=True)
class QemuSource:
    """Where the QEMU source comes from."""

    kind: str  # "debian" or "upstream"
    version: str  # Debian source version (with epoch) or upstream release
    url: str = ""  # upstream only
    sha256: str = ""  # upstream only

    @property
    def slug(self) -> str:
        """File-name-safe version, used for the stable source and build dirs."""
        v = self.version.split(":", 1)[-1]
        return v if self.kind == "debian" else f"upstream-{v}"


# ---- pure logic (unit-tested) ---------------------------------------------


def upstream_source(version: str | None = None) -> QemuSource:
    """The pinned upstream release *version* (default :data:`UPSTREAM_DEFAULT`)."""
    v = version or UPSTREAM_DEFAULT
    try:
        sha = UPSTREAM_RELEASES[v]
    except KeyError:
        known = ", ".join(sorted(UPSTREAM_RELEASES))
        raise ConfigError(
            f"{UPSTREAM_VERSION_ENV}={v!r}: no pinned checksum for that upstream QEMU "
            f"(pinned: {known})"
        ) from None
    return QemuSource("upstream", v, UPSTREAM_URL.format(version=v), sha)


def source_kind(env: Mapping[str, str]) -> str:
    kind = env.get(SOURCE_ENV, "debian").strip() or "debian"
    if kind not in ("debian", "upstream"):
        raise ConfigError(f"{SOURCE_ENV}={kind!r}: expected 'debian' or 'upstream'")
    return kind


def device_sources(device_dir: Path) -> cache.Sources:
    """The :data:`DEVICE_FILES` of *device_dir*, read now: what the key hashes and the
    graft copies."""
    return cache.Sources.read({name: device_dir / name for name in DEVICE_FILES})


def input_digest(
    source: QemuSource,
    device: Path | cache.Sources,
    firmware_versions: Mapping[str, str],
    configure_flags: Sequence[str] = CONFIGURE_FLAGS,
) -> str:
    """The hash naming the install: every input that changes the output (*device*: the
    device files, or the directory holding them)."""
    h = cache.InputHash(RECIPE_VERSION)
    h.add_str("source", f"{source.kind} {source.version} {source.sha256}")
    (device_sources(device) if isinstance(device, Path) else device).add_to(h, "device/")
    h.add_str("configure", " ".join([*configure_flags, f"--prefix={CONFIGURE_PREFIX}"]))
    for pkg in sorted(firmware_versions):
        h.add_str("firmware", f"{pkg}={firmware_versions[pkg]}")
    h.add_str("firmware-files", json.dumps(FIRMWARE, sort_keys=True))
    return h.hexdigest()


def parse_deb822(text: str) -> list[dict[str, str]]:
    """Stanzas of a deb822 sources file (comment lines dropped)."""
    lines = (ln for ln in text.splitlines() if not ln.startswith("#"))
    return debs.parse_stanzas("\n".join(lines))


def _one_line_entries(text: str) -> list[dict[str, str]]:
    """``deb [opts] URI suite comp...`` lines of a classic sources.list as deb822 fields."""
    out: list[dict[str, str]] = []
    for line in text.splitlines():
        m = re.match(r"^\s*deb\s+(?:\[(?P<opts>[^\]]*)\]\s+)?(?P<rest>.*)$", line)
        if not m:
            continue
        words = m.group("rest").split("#", 1)[0].split()
        if len(words) < 2:
            continue
        entry = {"Types": "deb", "URIs": words[0], "Suites": words[1]}
        if len(words) > 2:
            entry["Components"] = " ".join(words[2:])
        for opt in (m.group("opts") or "").split():
            k, _, v = opt.partition("=")
            if k == "signed-by":
                entry["Signed-By"] = v
        out.append(entry)
    return out


def deb_src_entries(deb822_texts: Sequence[str], one_line_text: str = "") -> str:
    """A deb822 file with a ``deb-src`` twin of every binary Debian source given.

    Only stanzas whose Types include ``deb`` are mirrored (URIs, Suites,
    Components, Signed-By kept); disabled stanzas (``Enabled: no``) are skipped.
    Empty string if there is nothing to mirror.
    """
    stanzas = [st for text in deb822_texts for st in parse_deb822(text)]
    stanzas += _one_line_entries(one_line_text)
    blocks: list[str] = []
    seen: set[tuple[str, str, str]] = set()
    for st in stanzas:
        if "deb" not in st.get("Types", "").split() or st.get("Enabled", "yes") == "no":
            continue
        if "URIs" not in st or "Suites" not in st:
            continue
        key = (st["URIs"], st["Suites"], st.get("Components", ""))
        if key in seen:
            continue
        seen.add(key)
        lines = ["Types: deb-src", f"URIs: {st['URIs']}", f"Suites: {st['Suites']}"]
        if st.get("Components"):
            lines.append(f"Components: {st['Components']}")
        if st.get("Signed-By"):
            signed = st["Signed-By"].replace("\n", "\n ")
            lines.append(f"Signed-By: {signed}")
        blocks.append("\n".join(lines))
    if not blocks:
        return ""
    header = "# Added by irqlab (harness/irqlab/build/qemu.py) for 'apt-get source qemu'.\n"
    return header + "\n\n".join(blocks) + "\n"


def apt_lists_state(lists: Path | None = None) -> str:
    """A cheap fingerprint of apt's package lists (changes with ``apt-get update``);
    *lists* defaults to where apt keeps them (``APT_CONFIG`` may move them)."""
    lists = debs.apt_lists_dir() if lists is None else lists
    h = hashlib.sha256()
    try:
        entries = sorted(os.scandir(lists), key=lambda e: e.name)
    except OSError:
        return "no-lists"
    for e in entries:
        if e.is_file() and ("Packages" in e.name or "Sources" in e.name):
            st = e.stat()
            h.update(f"{e.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


_LDD_NOT_FOUND = re.compile(r"^\s*(\S+) => not found\s*$", re.M)
_LDD_PATH = re.compile(r"=> (/\S+) \(0x[0-9a-f]+\)")


def libraries_not_found(ldd_output: str) -> list[str]:
    """The sonames ``ldd`` says are ``not found``."""
    return _LDD_NOT_FOUND.findall(ldd_output)


def _usr_twin(path: str) -> str:
    """The other spelling of *path* on a merged-/usr system (``/lib/x`` <-> ``/usr/lib/x``):
    dpkg knows a file by the one its package ships, ldd says either."""
    return path.removeprefix("/usr") if path.startswith("/usr/") else "/usr" + path


def packages_from_dpkg_search(text: str) -> list[str]:
    """Package names (architecture dropped) in ``dpkg -S`` output, sorted, once each
    (``libfdt1:amd64: /usr/lib/x86_64-linux-gnu/libfdt.so.1``; diversion lines and
    ``dpkg-query: no path found`` are not packages)."""
    names: set[str] = set()
    for line in text.splitlines():
        owners, sep, _path = line.partition(": /")
        if not sep or owners.startswith(("diversion ", "dpkg-query")):
            continue
        names.update(o.strip().split(":")[0] for o in owners.split(",") if o.strip())
    return sorted(names)


def _ldd(binary: Path) -> str:
    """``ldd binary``'s output ('' if it says nothing: a static or foreign binary)."""
    return debs.output_of(["ldd", str(binary)])


def _remembered_ldd(binary: Path) -> str:
    """:func:`_ldd`; when it found every library, not asked again while the binary, the
    loader's cache and dpkg's database are the same (:mod:`irqlab.build.hostfacts`)."""
    return hostfacts.remembered(
        "ldd",
        [binary, hostfacts.LOADER_CACHE, *hostfacts.DPKG_DATABASE],
        lambda: _ldd(binary),
        args=[str(binary), os.environ.get("LD_LIBRARY_PATH", "")],
        keep=lambda said: not libraries_not_found(said),  # one missing: asked again
    )


def _dpkg_search(paths: Sequence[str]) -> str:
    """``dpkg -S`` of *paths* (each also in its other /usr spelling); its stdout."""
    if not paths:
        return ""
    return debs.output_of(["dpkg", "-S", *sorted({q for p in paths for q in (p, _usr_twin(p))})])


def runtime_packages(binary: Path) -> list[str]:
    """The Debian packages providing *binary*'s shared libraries (``ldd`` + ``dpkg -S``;
    [] where dpkg knows none of them)."""
    return packages_from_dpkg_search(_dpkg_search(_LDD_PATH.findall(_ldd(binary))))


def _recorded_runtime_packages(out: Path) -> list[str]:
    try:
        recorded = json.loads((out / "manifest.json").read_text()).get("runtime_packages")
    except (OSError, ValueError, AttributeError):
        return []
    return [str(p) for p in recorded] if isinstance(recorded, list) else []


_RUNNABLE: set[tuple[Path, str]] = set()  # installs ensure_runtime_once found runnable
_RUNNABLE_LOCK = threading.Lock()  # two guests started at once: one apt-get, not two


def ensure_runtime_once(install: QemuInstall, arch: Arch = X86_64, log: Log = print) -> None:
    """:func:`ensure_runtime` for a found *install*, once per process (one ``ldd``, a
    few ms): a guest started by a script or ``irqlab shell``/``run`` from a restored cache
    gets QEMU's libraries as ``build-qemu`` and the pytest plugin do, not the loader's
    error."""
    out = install.binary.parent.parent
    key = (out, arch.name)
    with _RUNNABLE_LOCK:
        if key not in _RUNNABLE:
            ensure_runtime(out, arch, log)
            _RUNNABLE.add(key)


def ensure_runtime(out: Path, arch: Arch = X86_64, log: Log = print) -> None:
    """Make sure the cached install *out* can run here: when ``ldd`` finds a shared
    library of its binary missing (a cache restored into a fresh container, where the
    ``-dev`` build dependencies that brought them were never installed), install the
    packages its manifest records (:data:`RUNTIME_PACKAGES_FALLBACK` for an older
    install) with apt as the build does; :class:`BuildError` naming the packages where
    that cannot be done (not root) or does not help."""
    binary = out / "bin" / arch.qemu_binary
    missing = libraries_not_found(_remembered_ldd(binary))
    if not missing:
        return
    lp = log_path(arch)
    pkgs = _recorded_runtime_packages(out) or list(RUNTIME_PACKAGES_FALLBACK)
    absent = debs.missing_packages(pkgs)
    libs = ", ".join(missing)
    if not absent:
        raise BuildError(
            "runtime-deps",
            lp,
            f"{binary} cannot find {libs}, although {' '.join(pkgs)} are installed: "
            "rebuild it (irqlab build-qemu --force)",
        )
    if os.geteuid() != 0:
        raise BuildError(
            "runtime-deps",
            lp,
            debs.install_refusal(absent, f"{binary} cannot run: {libs} not found; it"),
        )
    with StepLog(lp, lambda m: log(f"qemu: {m}")) as steps:
        steps.log(f"{binary.name} needs {libs}: installing {' '.join(absent)}")
        debs.ensure_apt_packages(steps, absent, step="runtime-deps")
    still = libraries_not_found(_ldd(binary))
    if still:
        raise BuildError(
            "runtime-deps",
            lp,
            f"{binary} still cannot find {', '.join(still)} after installing {' '.join(absent)}",
        )


# ---- inputs ----------------------------------------------------------------


def device_dir() -> Path:
    return paths.repo_root() / "qemu-device"


def work_dir() -> Path:
    return paths.cache_dir() / "qemu"


def source_dir(source: QemuSource) -> Path:
    """The (shared, grafted) source tree of *source* in the cache."""
    return work_dir() / f"src-{source.slug}"


def log_path(arch: Arch = X86_64) -> Path:
    name = "qemu.log" if arch == X86_64 else f"qemu-{arch.name}.log"
    return paths.log_dir() / "build" / name


def _apt_versions(names: Sequence[str]) -> dict[str, str]:
    """Candidate versions of *names*, memoized per apt-lists state (apt-cache is slow).
    When apt cannot be asked, its last answer (:func:`irqlab.build.debs.apt_answer`),
    which is not memoized as this state's."""
    memo = work_dir() / "apt-versions.json"
    state = apt_lists_state()
    try:
        data = json.loads(memo.read_text())
        if data.get("state") == state and all(n in data["versions"] for n in names):
            return {n: str(data["versions"][n]) for n in names}
    except (OSError, ValueError, KeyError, TypeError):
        pass
    answer = debs.apt_answer(list(names))
    pkgs = answer.packages
    missing = [n for n in names if n not in pkgs]
    if missing:
        raise debs.AptError(f"apt knows no candidate for {', '.join(missing)} (apt-get update?)")
    versions = {n: pkgs[n].version for n in names}
    if answer.unanswered:  # an old answer: not the one of this apt state
        return versions
    tmp = memo.with_name(f"{memo.name}.{os.getpid()}.tmp")  # a fixed name: racers crashed
    try:  # a memo only: a full disk cost every start its QEMU ("not built")
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({"state": state, "versions": versions}))
        tmp.replace(memo)
    except OSError:
        with suppress(OSError):
            tmp.unlink(missing_ok=True)
    return versions


def debian_source_version() -> str:
    """The Debian QEMU source version the next build takes: apt's candidate (memoized
    as :func:`current_digest`'s inputs are; apt's last answer when it cannot be asked,
    unless :func:`irqlab.build.debs.apt_answers_only`); raises as :func:`current_digest`."""
    return _apt_versions([SOURCE_VERSION_PACKAGE])[SOURCE_VERSION_PACKAGE]


@dataclass(frozen=True)
class _Inputs:
    source: QemuSource
    firmware: dict[str, str]
    digest: str
    device: cache.Sources  # the device files the digest hashed: the graft's
    arch: Arch = X86_64


def env_source(env: Mapping[str, str]) -> QemuSource | None:
    """The upstream release ``$IRQLAB_QEMU_SOURCE=upstream`` asks for (the version
    ``$IRQLAB_QEMU_UPSTREAM_VERSION`` names), None for Debian's source (whose version apt
    says); :class:`~irqlab.errors.ConfigError` naming the variable for a value not
    taken."""
    if source_kind(env) != "upstream":
        return None
    return upstream_source(env.get(UPSTREAM_VERSION_ENV) or None)


def _current_inputs(arch: Arch = X86_64) -> _Inputs:
    """The inputs of *arch*'s QEMU; :class:`~irqlab.errors.ConfigError` first, before
    apt is asked, when the environment names no source (:func:`env_source`)."""
    upstream = env_source(os.environ)
    versions = _apt_versions(sorted(FIRMWARE))
    source = upstream or QemuSource("debian", versions[SOURCE_VERSION_PACKAGE])
    device = device_sources(device_dir())
    digest = input_digest(source, device, versions, configure_flags(arch))
    return _Inputs(source, versions, digest, device, arch)


def _install_from(out: Path, arch: Arch = X86_64) -> QemuInstall:
    version = (out / "VERSION").read_text().strip()
    binary = out / "bin" / arch.qemu_binary
    return QemuInstall(binary=binary, datadir=out / "share" / "qemu", version=version)


def current_digest(arch: Arch = X86_64) -> str:
    """The hash naming *arch*'s install for the current inputs, built or not (never
    builds; apt's candidate versions are memoized per apt-lists state).  Raises
    :class:`~irqlab.build.debs.AptError` or ValueError when the inputs are not known."""
    return _current_inputs(arch).digest


def build_dir(source: QemuSource, arch: Arch = X86_64) -> Path:
    """The (shared) build tree of *source* for *arch*'s target in the cache: one per
    target, so adding one never reconfigures (and so never rebuilds) the x86_64 one;
    each path is stable, so ccache stays warm."""
    suffix = "" if arch == X86_64 else f"-{arch.name}"
    return work_dir() / f"build-{source.slug}{suffix}"


def current_build_dir(arch: Arch = X86_64) -> Path:
    """The build tree the current inputs build in (there or not; never builds): where
    its compile_commands.json is.  Raises as :func:`current_digest`."""
    return build_dir(_current_inputs(arch).source, arch)


def current_source_dir(arch: Arch = X86_64) -> Path:
    """The source tree the current inputs build from (there or not; never builds):
    where its scripts/checkpatch.pl is.  Raises as :func:`current_digest`."""
    return source_dir(_current_inputs(arch).source)


class QemuUnknown(IrqlabError, RuntimeError):
    """apt cannot say the versions that name the current QEMU build (no package lists,
    as in a container that restored the cache; a lock) and no cached build matches what
    can be known: not "not built", which sent users to rebuild a QEMU they had."""


def find_qemu(arch: Arch = X86_64) -> QemuInstall | None:
    """The cached install for the current inputs (and *arch*'s target), or None;
    :class:`~irqlab.errors.ConfigError` when the environment names no QEMU source (not
    "not built": the value is what is wrong).  When apt cannot say its versions, the
    newest cached install of this device source and configuration
    (:func:`_known_match`), said once, else :class:`QemuUnknown` with apt's words.
    Never builds; marks the install used (pruning keeps the most recently used)."""
    try:
        out = cache.output_dir("qemu", current_digest(arch))
    except ConfigError:
        raise
    except (debs.AptError, ValueError, OSError) as e:
        why = str(e)
        found = _known_match(arch)
        if found is None:
            hint = "; run apt-get update" if isinstance(e, debs.AptError) else ""
            raise QemuUnknown(f"cannot tell which QEMU build is current: {why}{hint}") from e
        if found not in _SAID_MATCH:
            _SAID_MATCH.add(found)
            notice.say(
                f"irqlab: cannot tell which QEMU build is current ({why}): using {found.name}, "
                "the newest cached build of this device source and configuration"
            )
        out = found
    if not cache.is_complete(out):
        return None
    cache.touch(out)
    return _install_from(out, arch)


_SAID_MATCH: set[Path] = set()  # installs find_qemu said it fell back to


def _known_match(arch: Arch) -> Path | None:
    """The newest complete cached install whose recorded Debian versions (its
    ``manifest.json``), with this checkout's device files and *arch*'s configure flags,
    hash to its own name: all of the current inputs that can be known without apt.
    None when there is none, or the device files cannot be read."""
    upstream = env_source(os.environ)
    try:
        device = device_sources(device_dir())
        found = cache.entries(recipe="qemu")
    except OSError:
        return None
    for e in sorted(found, key=lambda e: e.mtime, reverse=True):
        try:
            manifest = json.loads((e.path / "manifest.json").read_text())
            recorded = QemuSource(manifest["source"]["kind"], manifest["source"]["version"])
            firmware = {str(k): str(v) for k, v in manifest["firmware"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
        if recorded.kind != (upstream.kind if upstream is not None else "debian"):
            continue
        source = upstream if upstream is not None else recorded  # an upstream's sha256
        if e.complete and e.digest == input_digest(source, device, firmware, configure_flags(arch)):
            return e.path
    return None


# ---- steps -----------------------------------------------------------------


def _root_opts() -> list[str]:
    return ["-o", "APT::Sandbox::User=root"] if os.geteuid() == 0 else []


_APT_ENV = debs.APT_ENV


def _have_qemu_source(version: str) -> bool:
    r = cancel.run_text(
        ["apt-cache", "showsrc", "--only-source", "qemu"],
        doing="asking apt for QEMU's source (apt-cache showsrc)",
        env={**os.environ, "LC_ALL": "C"},
    )
    return f"Version: {version}" in r.stdout


def _deb_src_entry(steps: StepLog) -> str:
    """The deb-src entries mirroring this host's Debian 'deb' sources."""
    texts = [p.read_text() for p in sorted(APT_SOURCES_D.glob("*.sources"))]
    one_line = APT_SOURCES_LIST.read_text() if APT_SOURCES_LIST.is_file() else ""
    entry = deb_src_entries(texts, one_line)
    if not entry:
        raise BuildError("deb-src", steps.path, "no Debian 'deb' source to mirror as deb-src")
    return entry


def _check_root_steps(steps: StepLog, deps: Sequence[str], source: QemuSource, src: Path) -> None:
    """Not root: refuse, before anything runs, with every step root must take (the
    missing build packages; the deb-src entry and apt's update, for a Debian source not
    unpacked yet).  A user was sent to root for the packages, then again with a raw
    PermissionError on the deb-src file."""
    todo = []
    missing = debs.missing_packages(deps)
    if missing:
        todo.append(f"apt-get install --no-install-recommends {' '.join(missing)}")
    needs_src = source.kind == "debian" and not (src / "configure").is_file()
    if needs_src and not _have_qemu_source(source.version):
        entry = _deb_src_entry(steps)
        todo.append(f"write {DEB_SRC_FILE} with:\n{textwrap.indent(entry.rstrip(), '    ')}")
        todo.append("apt-get update")
    if todo:
        steps_text = "\n".join(f"  {i}. {t}" for i, t in enumerate(todo, 1))
        raise BuildError(
            "root-steps",
            steps.path,
            f"building QEMU needs these steps as root first:\n{steps_text}\n"
            "then run the build again as this user",
        )


def _ensure_deb_src(steps: StepLog, version: str) -> None:
    if _have_qemu_source(version):
        return
    if not DEB_SRC_FILE.exists():
        entry = _deb_src_entry(steps)
        steps.write(f"writing {DEB_SRC_FILE}:\n{entry}")
        DEB_SRC_FILE.write_text(entry)
    steps.run("deb-src", ["apt-get", "update", "-q"], env=_APT_ENV, cancellable=False)
    if not _have_qemu_source(version):
        said = f"apt has no source for qemu {version}"
        if os.environ.get("APT_CONFIG"):
            said += (
                f" (APT_CONFIG={os.environ['APT_CONFIG']}: irqlab wrote its deb-src entry to "
                f"{DEB_SRC_FILE}, which a configuration that moves apt's sources does not "
                "read; give it a deb-src line of its own)"
            )
        raise BuildError("deb-src", steps.path, said)


def _fetch_debian_source(steps: StepLog, source: QemuSource, dest: Path) -> None:
    _ensure_deb_src(steps, source.version)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    steps.run(
        "source",
        ["apt-get", "source", "-q", *_root_opts(), f"qemu={source.version}"],
        cwd=tmp,
        env=_APT_ENV,
    )
    trees = [p for p in tmp.iterdir() if p.is_dir() and (p / "configure").is_file()]
    if len(trees) != 1:
        raise BuildError("source", steps.path, f"expected one unpacked tree in {tmp}")
    shutil.rmtree(dest, ignore_errors=True)
    trees[0].rename(dest)
    shutil.rmtree(tmp, ignore_errors=True)


def _fetch_upstream_source(steps: StepLog, source: QemuSource, dest: Path) -> None:
    tarball = fetch.download(
        source.url,
        work_dir() / "dl" / tarball_name(source.version),
        source.sha256,
        say=steps.log,
    )
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with tarfile.open(tarball) as tf:
        tf.extractall(tmp, filter="tar")
    shutil.rmtree(dest, ignore_errors=True)
    (tmp / f"qemu-{source.version}").rename(dest)
    shutil.rmtree(tmp, ignore_errors=True)


def _build_env() -> dict[str, str]:
    ccache_dir = os.environ.get("CCACHE_DIR") or str(paths.cache_dir() / "ccache")
    return {
        # Debian's ccache masquerade dir: "cc" resolves to ccache
        "PATH": "/usr/lib/ccache:" + os.environ.get("PATH", "/usr/bin:/bin"),
        "CCACHE_DIR": ccache_dir,
        "LC_ALL": "C",
    }


def _configure(steps: StepLog, src: Path, build: Path, arch: Arch = X86_64) -> None:
    argv = [str(src / "configure"), *configure_flags(arch), f"--prefix={CONFIGURE_PREFIX}"]
    stamp = build / ".irqlab-configure"
    if (build / "build.ninja").is_file() and stamp.is_file() and stamp.read_text() == str(argv):
        return
    shutil.rmtree(build, ignore_errors=True)
    build.mkdir(parents=True)
    steps.run("configure", argv, cwd=build, env=_build_env())
    stamp.write_text(str(argv))


_NINJA_PROGRESS = re.compile(r"^\[(\d+)/(\d+)\]")


def _ninja(steps: StepLog, build: Path, log: Log, arch: Arch = X86_64) -> None:
    # a second target is opt-in extra work on a shared machine: the lowest priority
    nice = "10" if arch == X86_64 else "19"
    argv = ["nice", "-n", nice, "ninja", "-C", str(build), arch.qemu_binary]
    steps.write("$ " + " ".join(argv))
    t0 = last = time.monotonic()
    output: list[str] = []
    with subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env={**os.environ, **_build_env()},
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            steps.write(line)
            output.append(line)
            m = _NINJA_PROGRESS.match(line)
            now = time.monotonic()
            if m and now - last >= 15:
                last = now
                log(f"compile: {m.group(1)}/{m.group(2)} ({now - t0:.0f} s)")
        rc = proc.wait()
    if rc != 0:
        detail = failure_detail("ninja", rc, "".join(output), device_paths)
        raise BuildError("compile", steps.path, detail)


def _firmware(steps: StepLog, versions: Mapping[str, str], datadir: Path) -> None:
    pkgs = [debs.Package(name, versions[name], "all") for name in sorted(FIRMWARE)]
    files = debs.download(pkgs, steps)
    datadir.mkdir(parents=True, exist_ok=True)
    for name, members in FIRMWARE.items():
        root = debs.extracted(files[name], steps)
        for dest, rel in members.items():
            src = root / rel
            if src.is_symlink():  # e.g. usr/share/qemu -> ../seabios links
                src = (src.parent / os.readlink(src)).resolve()
                if not src.is_relative_to(root):
                    src = root / str(src).lstrip("/")
            shutil.copyfile(src, datadir / dest)


BUILD_LOCK_WHAT = "preparing or building QEMU's source tree"


def build_lock(work: Path | None = None) -> Path:
    """The lock file a QEMU build holds while it prepares or builds the shared trees of
    *work* (default :func:`work_dir`); a prune of them takes it too
    (:mod:`irqlab.build.shared`)."""
    return (work if work is not None else work_dir()) / ".lock"


# A release tarball in work_dir()/"dl" (a download in progress ends in .part):
# its name, and the pattern that finds them (group 1: the version)
TARBALL = re.compile(r"^qemu-(.+)\.tar\.xz(?:\.part)?$")


def tarball_name(version: str) -> str:
    return f"qemu-{version}.tar.xz"


@contextmanager
def _lock() -> Iterator[None]:
    with cache.exclusive_lock(build_lock(), BUILD_LOCK_WHAT):
        yield


def build_in_progress() -> str | None:
    """Who is building QEMU now (``process N is preparing or building QEMU's source
    tree (lock ...)``), or None when nobody holds the build's lock."""
    try:
        with cache.exclusive_lock(build_lock(), BUILD_LOCK_WHAT, wait=False):
            return None
    except cache.LockHeld as e:
        return str(e)


def _build(inputs: _Inputs, out: Path, steps: StepLog, log: Log) -> None:
    source = inputs.source
    arch = inputs.arch
    src = source_dir(source)
    build = build_dir(source, arch)
    # marked used as the build lets them go (its lock still held): a prune that
    # surveyed before the output was there keeps them (irqlab.build.shared.remove)
    try:
        _build_in(inputs, out, steps, log, src, build)
    finally:
        shared.mark_used(src, build)


def _build_in(inputs: _Inputs, out: Path, steps: StepLog, log: Log, src: Path, build: Path) -> None:
    source = inputs.source
    arch = inputs.arch
    deps = [*BUILD_DEPS, *(UPSTREAM_EXTRA_DEPS if source.kind == "upstream" else ())]
    if os.geteuid() != 0:  # what root must do, all of it at once
        _check_root_steps(steps, deps, source, src)
    with steps.step("apt-deps"):
        debs.ensure_apt_packages(steps, deps)
    with steps.step("source"):
        if not (src / "configure").is_file():
            if source.kind == "upstream":
                _fetch_upstream_source(steps, source, src)
            else:
                _fetch_debian_source(steps, source, src)
    with steps.step("graft"), tempfile.TemporaryDirectory(prefix="irqlab-graft-") as tmp:
        # the files the digest hashed, not qemu-device/ now (edited since, maybe)
        inputs.device.write_to(Path(tmp))
        steps.run("graft", [sys.executable, str(Path(tmp) / "graft.py"), str(src)])
    with steps.step("configure"):
        _configure(steps, src, build, arch)
    with steps.step("compile"):
        _ninja(steps, build, log, arch)
    with steps.step("install"):
        (out / "bin").mkdir(parents=True)
        shutil.copy2(build / arch.qemu_binary, out / "bin" / arch.qemu_binary)
        _firmware(steps, inputs.firmware, out / "share" / "qemu")
        qemu_version = (src / "VERSION").read_text().strip()
        (out / "VERSION").write_text(f"{qemu_version} ({source.kind} {source.version})\n")
        manifest = {
            "source": {"kind": source.kind, "version": source.version, "url": source.url},
            "firmware": inputs.firmware,
            "configure": list(configure_flags(arch)),
            "digest": inputs.digest,
            # what a cache hit in a fresh container installs (ensure_runtime)
            "runtime_packages": runtime_packages(out / "bin" / arch.qemu_binary),
        }
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def ensure_qemus(*, force: bool = False, log: Log = print) -> dict[str, QemuInstall]:
    """The installs of every target ``IRQLAB_ARCHES`` asks for (default x86_64 only)."""
    return {a.name: ensure_qemu(force=force, log=log, arch=a) for a in built_arches(os.environ)}


def ensure_qemu(*, force: bool = False, log: Log = print, arch: Arch = X86_64) -> QemuInstall:
    """The QEMU install for the current inputs, building it first if needed.

    Raises :class:`BuildError` (naming the failed step and the log file).
    """
    lp = log_path(arch)
    try:
        try:
            inputs = _current_inputs(arch)
        except debs.AptError:
            if os.geteuid() != 0:
                raise
            # a fresh machine: apt has no lists yet
            cancel.run(
                ["apt-get", "update", "-q"],
                doing="apt-get update",
                env={**os.environ, **_APT_ENV},
                cancellable=False,  # apt's lists half-fetched
            )
            inputs = _current_inputs(arch)
    except ConfigError:
        raise  # the variable's value, not a build step, is what is wrong
    except (debs.AptError, ValueError) as e:
        raise BuildError("inputs", lp, str(e)) from e
    out = cache.output_dir("qemu", inputs.digest)
    keep = cache.keep_count()  # a bad value fails on a cache hit too, not only a build
    if cache.is_complete(out) and not force:
        cache.touch(out)
        install = _install_from(out, arch)
        ensure_runtime_once(install, arch, log)  # a guest's start then asks no ldd again
        return install

    with _lock():
        if cache.is_complete(out) and not force:  # another process built it meanwhile
            install = _install_from(out, arch)
            ensure_runtime_once(install, arch, log)
            return install
        t0 = time.monotonic()
        what = f"{inputs.source.kind} {inputs.source.version}"
        if arch != X86_64:
            what += f" {arch.qemu_target}"
        log(f"building QEMU {what} + irqlab (log: {lp})")
        with StepLog(lp, lambda m: log(f"qemu: {m}")) as steps:
            path = cache.cached_build(
                "qemu",
                inputs.digest,
                lambda tmp: _build(inputs, tmp, steps, log),
                force=force,
                evict=False,
            )
        log(f"QEMU ready in {time.monotonic() - t0:.0f} s: {path / 'bin' / arch.qemu_binary}")
    if keep is not None:
        # once the lock is let go: the source and build trees of the QEMU versions no
        # output left uses go with the outputs (irqlab.build.shared), a held lock keeps them
        cache.evict_after(path, keep)
    return _install_from(path, arch)
