"""Debian's kernel for the guest: image, modules (depmod-ed) and headers to build against.

``linux-image-amd64`` names the current ABI (``linux-image-6.1.0-NN-amd64``);
that package, the matching ``linux-headers-*`` (+ its ``-common`` and
``linux-kbuild-*``) and ``kmod`` (for depmod) are downloaded and extracted
into ``<cache>/kernel-<hash>/``, keyed by their exact versions.  The
uncompressed ``vmlinux`` is pulled out of the bzImage so QEMU can boot it
through its PVH entry point (much faster under TCG than the bzImage path).

The module author needs :func:`kernel_build_dir`: ``make -C <it> M=<dir>``.
"""

from __future__ import annotations

import json
import lzma
import os
import re
import struct
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from irqlab.build import debs
from irqlab.build.arch import ARCHES, X86_64, Arch
from irqlab.build.cache import InputHash, cached_build, output_dir
from irqlab.build.debs import Lookup, Package
from irqlab.build.elf import ELF_MAGIC
from irqlab.build.steps import Log, StepLog
from irqlab.errors import IrqlabError
from irqlab.paths import log_dir

__all__ = [
    "META_PACKAGE",
    "RECIPE_VERSION",
    "KernelArtifacts",
    "KernelPackages",
    "VmlinuxError",
    "current_kernel",
    "ensure_kernel",
    "extract_vmlinux",
    "kernel_build_dir",
    "modinfo_depends",
    "module_load_order",
    "module_name",
    "parse_modules_dep",
    "resolve_packages",
    "run_depmod",
]

RECIPE_VERSION = "kernel-1"
META_PACKAGE = "linux-image-amd64"

# bzImage boot protocol (Documentation/x86/boot.rst)
_SETUP_SECTS = 0x1F1
_HDR_MAGIC_OFF = 0x202
_HDR_VERSION = 0x206
_PAYLOAD_OFFSET = 0x248
_PAYLOAD_LENGTH = 0x24C

_XZ_MAGIC = b"\xfd7zXZ\x00"
_GZIP_MAGIC = b"\x1f\x8b\x08"


class VmlinuxError(IrqlabError, ValueError):
    pass


def _decompress(payload: bytes) -> bytes:
    if payload.startswith(_XZ_MAGIC):
        dec = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
        return dec.decompress(payload)
    if payload.startswith(_GZIP_MAGIC):
        return zlib.decompressobj(wbits=31).decompress(payload)
    if payload.startswith(ELF_MAGIC):
        return payload
    raise VmlinuxError(
        f"unsupported kernel payload compression (magic {payload[:6].hex()}); "
        "only xz, gzip and uncompressed are handled"
    )


def extract_vmlinux(image: bytes) -> bytes:
    """The uncompressed ELF kernel inside a bzImage (like scripts/extract-vmlinux).

    Uses the boot header's payload_offset/length (protocol >= 2.08); for other
    blobs it scans for an xz or gzip stream that decompresses to an ELF.
    """
    if len(image) > _PAYLOAD_LENGTH + 4 and image[_HDR_MAGIC_OFF : _HDR_MAGIC_OFF + 4] == b"HdrS":
        version = struct.unpack_from("<H", image, _HDR_VERSION)[0]
        if version >= 0x208:
            setup_sects = image[_SETUP_SECTS] or 4
            offset, length = struct.unpack_from("<II", image, _PAYLOAD_OFFSET)
            start = (setup_sects + 1) * 512 + offset
            payload = image[start : start + length]
            try:
                out = _decompress(payload)
            except (lzma.LZMAError, zlib.error) as e:
                raise VmlinuxError(f"kernel payload at {start:#x} does not decompress: {e}") from e
            if not out.startswith(ELF_MAGIC):
                raise VmlinuxError("kernel payload is not an ELF image")
            return out
    for magic in (_XZ_MAGIC, _GZIP_MAGIC):
        pos = image.find(magic)
        while pos >= 0:
            try:
                out = _decompress(image[pos:])
            except (lzma.LZMAError, zlib.error, VmlinuxError):
                out = b""
            if out.startswith(ELF_MAGIC):
                return out
            pos = image.find(magic, pos + 1)
    raise VmlinuxError("no compressed ELF kernel found in the image")


@dataclass(frozen=True)
class KernelPackages:
    abi: str  # uname -r, e.g. "6.1.0-56-amd64"
    image: Package
    headers: tuple[Package, ...]  # linux-headers-<abi>, its -common, linux-kbuild-*
    kmod: Package

    @property
    def all(self) -> tuple[Package, ...]:
        return (self.image, *self.headers, self.kmod)


def _one(lookup: Lookup, name: str) -> Package:
    got = lookup([name]).get(name)
    if got is None:
        raise debs.AptError(f"package {name} not found in the apt lists (run apt-get update?)")
    return got


def resolve_packages(lookup: Lookup = debs.apt_show, arch: Arch = X86_64) -> KernelPackages:
    """Exact packages for the current ``linux-image-amd64`` (from the local apt lists).

    For another architecture (*arch* foreign to this host) the kernel and its headers
    are *arch*'s packages while ``linux-kbuild-*`` (Kbuild's host tools: fixdep,
    modpost, genksyms...) and ``kmod`` (depmod) stay the host's: the same source
    version built to run here, which is what cross-building a module needs.
    """
    host_lookup = lookup
    if arch.foreign:
        lookup = debs.foreign_lookup(arch.deb_arch, lookup)
    meta_name = arch.kernel_meta
    meta = _one(lookup, meta_name)
    image_name = next(
        (a for g in meta.depends for a in g if a.startswith("linux-image-") and a != meta_name),
        None,
    )
    if image_name is None:
        raise debs.AptError(f"{meta_name} {meta.version} depends on no linux-image-<abi>")
    abi = image_name.removeprefix("linux-image-")
    image = _one(lookup, image_name)
    hdr = _one(lookup, f"linux-headers-{abi}")
    common = sorted(
        {
            a
            for g in hdr.depends
            for a in g[:1]
            if a.startswith("linux-headers-") and a.endswith("-common")
        }
    )
    kbuild = sorted({a for g in hdr.depends for a in g[:1] if a.startswith("linux-kbuild-")})
    got = {**lookup(common), **host_lookup(kbuild)}
    extra = sorted([*common, *kbuild])
    missing = [n for n in extra if n not in got]
    if missing:
        raise debs.AptError(f"linux-headers-{abi}: {', '.join(missing)} not in the apt lists")
    kb = [got[n] for n in kbuild]
    if arch.foreign and any(p.version != image.version for p in kb):
        found = ", ".join(p.spec for p in kb)
        raise debs.AptError(f"{image.spec} needs linux-kbuild of the same version, apt has {found}")
    headers = (hdr, *(got[n] for n in extra))
    return KernelPackages(abi, image, headers, _one(host_lookup, "kmod"))


@dataclass(frozen=True)
class KernelArtifacts:
    version: str  # uname -r ("6.1.0-56-amd64")
    package_version: str  # Debian version of the image package ("6.1.192-2")
    vmlinux: Path  # uncompressed ELF, boots through PVH with -kernel
    bzimage: Path  # Debian's vmlinuz, for comparison boots
    modules_dir: Path  # <root>/lib/modules/<version>, depmod-ed
    headers_build_dir: Path  # pass to make -C ... M=<module dir>
    config: Path
    root: Path  # extracted packages (lib/modules, usr/src, usr/lib/linux-kbuild-*)
    kmod: Path  # Debian's kmod binary (run as depmod/modinfo via argv[0])
    arch: Arch = X86_64  # the guest's: make ARCH=arch.kernel_arch CROSS_COMPILE=...


def module_name(rel: str) -> str:
    """Module name of a modules.dep path: ``kernel/drivers/uio/uio-pci.ko`` -> ``uio_pci``."""
    base = rel.rsplit("/", 1)[-1]
    for suffix in (".ko", ".ko.xz", ".ko.zst", ".ko.gz"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base.replace("-", "_")


def run_depmod(kmod: Path, basedir: Path, version: str, steps: StepLog) -> None:
    """``depmod -b <basedir> <version>`` with Debian's kmod (a multi-call binary)."""
    steps.run(
        "depmod",
        ["depmod", "-a", "-b", str(basedir), version],
        executable=kmod,
    )


def _kernel_digest(pk: KernelPackages) -> str:
    h = InputHash(RECIPE_VERSION)
    for p in pk.all:
        h.add_str(p.name, f"{p.version} {p.arch}")
    return h.hexdigest()


def _relativize_links(root: Path, abi: str) -> None:
    """lib/modules/<abi>/{build,source} point to /usr/src/...: make them relative."""
    mod = root / "lib" / "modules" / abi
    for name in ("build", "source"):
        link = mod / name
        if link.is_symlink():
            target = os.readlink(link)
            if target.startswith("/"):
                link.unlink()
                link.symlink_to(os.path.relpath(root / target.lstrip("/"), mod))


def _fix_headers_makefile(build_dir: Path) -> None:
    """Debian's flavour Makefile includes the -common one by absolute path: make it relative.

    ``make -C <build_dir>`` runs in build_dir, so the relative include resolves
    wherever the cache lives.
    """
    mk = build_dir / "Makefile"
    lines = mk.read_text().splitlines()
    out = []
    for line in lines:
        if line.startswith("include /usr/src/"):
            target = Path(line.removeprefix("include ").strip())
            line = f"include ../{target.parent.name}/{target.name}"
        out.append(line)
    mk.write_text("\n".join(out) + "\n")


def _build(pk: KernelPackages, final: Path, tmp: Path, steps: StepLog) -> None:
    files = debs.download(pk.all, steps)
    root = tmp / "root"
    with steps.step(f"extract linux-image-{pk.abi} {pk.image.version}"):
        debs.extract_into(files[pk.image.name], root, steps)
    with steps.step("extract kernel headers"):
        for p in pk.headers:
            debs.extract_into(files[p.name], root, steps)
        _relativize_links(root, pk.abi)
        _fix_headers_makefile(root / "usr" / "src" / f"linux-headers-{pk.abi}")
    if _boots_vmlinuz(pk):
        steps.write(f"{pk.image.arch}: QEMU boots vmlinuz itself (an uncompressed Image)")
    else:
        with steps.step("extract vmlinux from vmlinuz"):
            vmlinuz = root / "boot" / f"vmlinuz-{pk.abi}"
            (tmp / "vmlinux").write_bytes(extract_vmlinux(vmlinuz.read_bytes()))
    with steps.step("depmod"):
        kroot = tmp / "kmod"
        debs.extract_into(files[pk.kmod.name], kroot, steps)
        run_depmod(kroot / "bin" / "kmod", root, pk.abi, steps)
    meta = {
        "abi": pk.abi,
        "packages": {p.name: p.version for p in pk.all},
        "root": str(final / "root"),
    }
    (tmp / "kernel.json").write_text(json.dumps(meta, indent=2) + "\n")


def _boots_vmlinuz(pk: KernelPackages) -> bool:
    """arm64's vmlinuz is the kernel's uncompressed Image, which QEMU's -kernel boots as is."""
    return pk.image.arch == "arm64"


def _artifacts(out: Path, pk: KernelPackages) -> KernelArtifacts:
    root = out / "root"
    vmlinuz = root / "boot" / f"vmlinuz-{pk.abi}"
    return KernelArtifacts(
        version=pk.abi,
        package_version=pk.image.version,
        vmlinux=vmlinuz if _boots_vmlinuz(pk) else out / "vmlinux",
        bzimage=vmlinuz,
        modules_dir=root / "lib" / "modules" / pk.abi,
        headers_build_dir=root / "usr" / "src" / f"linux-headers-{pk.abi}",
        config=root / "boot" / f"config-{pk.abi}",
        root=root,
        kmod=out / "kmod" / "bin" / "kmod",
        arch=next((a for a in ARCHES.values() if a.deb_arch == pk.image.arch), X86_64),
    )


def ensure_kernel(
    log: Log | None = None,
    *,
    force: bool = False,
    lookup: Lookup = debs.apt_show,
    arch: Arch = X86_64,
) -> KernelArtifacts:
    """The guest kernel for the current Debian packages, extracted once into the cache."""
    pk = resolve_packages(lookup, arch)
    digest = _kernel_digest(pk)
    final = output_dir("kernel", digest)

    def build(tmp: Path) -> None:
        with StepLog(log_dir() / "build" / f"kernel-{digest}.log", log) as steps:
            steps.log(f"kernel {pk.abi} ({pk.image.version}): building {final}")
            _build(pk, final, tmp, steps)

    return _artifacts(cached_build("kernel", digest, build, force=force), pk)


def current_kernel(pk: KernelPackages) -> tuple[str, KernelArtifacts]:
    """(digest, artifacts) of the kernel output *pk* (:func:`resolve_packages`) makes,
    whether or not it is built: nothing is built or downloaded."""
    digest = _kernel_digest(pk)
    return digest, _artifacts(output_dir("kernel", digest), pk)


def kernel_build_dir(log: Log | None = None) -> Path:
    """The directory to build external modules against: ``make -C <it> M=<dir> modules``."""
    return ensure_kernel(log).headers_build_dir


def parse_modules_dep(text: str) -> dict[str, tuple[str, ...]]:
    """modules.dep -> {relative path: dependencies as listed}."""
    deps: dict[str, tuple[str, ...]] = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        mod, _, rest = line.partition(":")
        deps[mod.strip()] = tuple(rest.split())
    return deps


def module_load_order(deps: Mapping[str, Sequence[str]], names: Iterable[str]) -> list[str]:
    """Relative paths of *names* and their dependencies, each after what it needs.

    (modprobe loads a modules.dep line's dependencies last-to-first.)
    """
    by_name = {module_name(rel): rel for rel in deps}
    order: list[str] = []
    seen: set[str] = set()

    def visit(rel: str, chain: tuple[str, ...]) -> None:
        if rel in seen:
            return
        if rel in chain:
            raise ValueError(f"module dependency cycle: {' -> '.join((*chain, rel))}")
        for d in reversed(deps.get(rel, ())):
            visit(d, (*chain, rel))
        seen.add(rel)
        order.append(rel)

    for n in names:
        rel = by_name.get(n.replace("-", "_"))
        if rel is None:
            raise KeyError(f"module {n} is not in modules.dep")
        visit(rel, ())
    return order


def modinfo_depends(ko: bytes) -> list[str]:
    """The ``depends=`` list from a module's .modinfo (module names)."""
    m = re.search(rb"(?:^|\0)depends=([^\0]*)\0", ko)
    if not m or not m.group(1):
        return []
    return [n.decode() for n in m.group(1).split(b",") if n]
