"""What this checkout resolves to in the build cache, found without building anything.

``irqlab cache`` marks these outputs *current*, and pruning (``irqlab cache --prune N``,
the eviction after each build: :mod:`irqlab.build.cache`) never removes them.  For each
architecture that has outputs in the cache:

- ``qemu``: the install of the current inputs (:func:`irqlab.build.qemu.current_digest`,
  what :func:`~irqlab.build.qemu.find_qemu` returns once built);
- ``kernel``: the one the current Debian packages make;
- ``kmod``: our module's current sources built against that kernel;
- ``image``: for every image variant in the cache (extra packages, compression,
  module or not: ``image.json`` records them), the image the current kernel, module,
  responder, agent, keys and packages make; an image whose parts are not built yet
  has no current output;
- ``responder``, ``checkpatch``, ``buildroot-image``, ``buildroot-src``: theirs.

Only inputs are read: the checkout's files, apt's candidate versions (memoized per
apt-lists state, as the recipes do) and outputs already built.  Where that fails
(e.g. no apt lists for arm64), :attr:`Current.unknown` says why, and the most recently
used output of each such group counts as current.  Snapshots, device trees and the
tests' own modules have no current output: their recency and use decide.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from irqlab.build.arch import Arch, by_name
from irqlab.build.cache import CacheEntry, output_dir
from irqlab.build.outputs import IMAGE_VARIANT_KEY
from irqlab.errors import IrqlabError, hide_frame

if TYPE_CHECKING:
    from irqlab.build.kernel import KernelArtifacts

__tracebackhide__ = hide_frame  # pytest: an IrqlabError's traceback leaves these frames out

__all__ = ["Current", "current", "current_paths"]

# what a lookup that cannot be done raises (apt has no lists, no gcc, no checkout, ...)
_LOOKUP_ERRORS = (IrqlabError, OSError, ValueError, KeyError, subprocess.CalledProcessError)


@dataclass
class Current:
    """The outputs this checkout resolves to (built or not) and the groups whose current
    output could not be determined, with the reason."""

    paths: set[Path] = field(default_factory=set)
    unknown: dict[tuple[str, str], str] = field(default_factory=dict)  # (recipe, arch) -> why

    def protected(self, found: Iterable[CacheEntry]) -> set[Path]:
        """:attr:`paths`, plus the most recently used output of each group (of *found*)
        whose recipe and architecture are :attr:`unknown`."""
        newest: dict[tuple[str, str, str], CacheEntry] = {}
        for e in found:
            if e.complete and (e.name, e.arch) in self.unknown:
                best = newest.get(e.group)
                if best is None or e.mtime > best.mtime:
                    newest[e.group] = e
        return self.paths | {e.path for e in newest.values()}


class _Lookups:
    """One inventory's lookups, each done once (the kernel serves kernel, module, image)."""

    def __init__(self) -> None:
        self._kernels: dict[str, tuple[str, KernelArtifacts]] = {}

    def kernel(self, arch: Arch) -> tuple[str, KernelArtifacts]:
        """(digest, artifacts) of *arch*'s kernel for the current Debian packages."""
        from irqlab.build import debs, kernel

        if arch.name not in self._kernels:
            packages = kernel.resolve_packages(debs.apt_show, arch)
            self._kernels[arch.name] = kernel.current_kernel(packages)
        return self._kernels[arch.name]

    def kmod(self, arch: Arch) -> Path:
        """Our module's output directory for *arch*'s current kernel (built or not)."""
        from irqlab.build import kmod

        return output_dir("kmod", kmod.current_digest(self.kernel(arch)[1]))

    def responder(self) -> Path:
        from irqlab.build import responder

        return output_dir("responder", responder.input_digest(responder.compiler()))


Resolver = Callable[[_Lookups, Arch, Sequence[CacheEntry]], set[Path]]


def _qemu(_lk: _Lookups, arch: Arch, _group: Sequence[CacheEntry]) -> set[Path]:
    from irqlab.build import qemu

    return {output_dir("qemu", qemu.current_digest(arch))}


def _kernel(lk: _Lookups, arch: Arch, _group: Sequence[CacheEntry]) -> set[Path]:
    return {output_dir("kernel", lk.kernel(arch)[0])}


def _kmod(lk: _Lookups, arch: Arch, _group: Sequence[CacheEntry]) -> set[Path]:
    return {lk.kmod(arch)}


def _responder(lk: _Lookups, _arch: Arch, _group: Sequence[CacheEntry]) -> set[Path]:
    return {lk.responder()}


def _checkpatch(_lk: _Lookups, _arch: Arch, _group: Sequence[CacheEntry]) -> set[Path]:
    from irqlab.build import kmod

    return {output_dir("checkpatch", kmod.checkpatch_digest())}


def _image_variants(
    group: Sequence[CacheEntry],
) -> set[tuple[bool, tuple[str, ...], str, bool, tuple[str, ...]]]:
    """(with our module, extra packages, compression, stdlib sources, kernel modules) of
    each image in *group* that records its variant."""
    found = set()
    for e in group:
        try:
            meta = json.loads((e.path / "image.json").read_text())
        except (OSError, ValueError):
            continue
        rec = meta.get(IMAGE_VARIANT_KEY) if isinstance(meta, dict) else None
        if isinstance(rec, dict) and "extra_packages" in rec:
            extra = tuple(str(p) for p in rec["extra_packages"])
            compression = str(rec.get("compression", "none"))
            stdlib = bool(rec.get("stdlib_sources", True))
            kmods = tuple(str(m) for m in rec.get("kernel_modules") or ())
            found.add((bool(meta.get("kmod")), extra, compression, stdlib, kmods))
    return found


def _image(lk: _Lookups, arch: Arch, group: Sequence[CacheEntry]) -> set[Path]:
    from irqlab.build import image
    from irqlab.build.kmod import MODULE
    from irqlab.build.responder import BINARY
    from irqlab.build.sshkeys import find_keys

    variants = _image_variants(group)
    if not variants:
        return set()
    keys = find_keys()
    responder = lk.responder()
    if keys is None or not (responder / BINARY).is_file():
        return set()  # no image is current before the keys and responder it is made with
    kernel = lk.kernel(arch)[1]
    files = {**image.default_agent_files(), BINARY: responder / BINARY}
    ko = lk.kmod(arch) / MODULE
    out = set()
    for module, extra, compression, stdlib, kmods in variants:
        if module and not ko.is_file():
            continue
        inputs = image.image_inputs(
            kernel,
            keys,
            files,
            kmod=ko if module else None,
            extra_packages=extra,
            compression=compression,
            stdlib_sources=stdlib,
            arch=arch,
            kernel_modules=kmods,
        )
        out.add(output_dir("image", inputs.digest()))
    return out


def _buildroot_image(_lk: _Lookups, arch: Arch, _group: Sequence[CacheEntry]) -> set[Path]:
    from irqlab.build import buildroot
    from irqlab.build.boot import authorized_keys
    from irqlab.build.sshkeys import find_keys

    keys = find_keys()
    if keys is None:
        return set()
    digest = buildroot.input_digest(keys, authorized_keys(keys, None), arch)
    return {output_dir("buildroot-image", digest)}


def _buildroot_src(_lk: _Lookups, _arch: Arch, _group: Sequence[CacheEntry]) -> set[Path]:
    from irqlab.build import buildroot

    return {output_dir("buildroot-src", buildroot.BUILDROOT_SHA256[:16])}


RESOLVERS: dict[str, Resolver] = {
    "qemu": _qemu,
    "kernel": _kernel,
    "kmod": _kmod,
    "image": _image,
    "responder": _responder,
    "checkpatch": _checkpatch,
    "buildroot-image": _buildroot_image,
    "buildroot-src": _buildroot_src,
}
# outputs that name no architecture (the Buildroot source, checkpatch.pl) count as x86_64's
_NO_ARCH = "x86_64"


def current(found: Sequence[CacheEntry]) -> Current:
    """What this checkout resolves to, for every recipe and architecture in *found*."""
    groups: dict[tuple[str, str], list[CacheEntry]] = {}
    for e in found:
        if e.complete and e.name in RESOLVERS:
            groups.setdefault((e.name, e.arch), []).append(e)
    result = Current()
    lookups = _Lookups()
    for (recipe, arch_name), group in sorted(groups.items()):
        try:
            arch = by_name(arch_name or _NO_ARCH)
        except ValueError:
            result.unknown[(recipe, arch_name)] = f"unknown architecture {arch_name!r}"
            continue
        try:
            result.paths |= RESOLVERS[recipe](lookups, arch, group)
        except _LOOKUP_ERRORS as e:
            result.unknown[(recipe, arch_name)] = f"{type(e).__name__}: {e}"
    return result


def current_paths(recipe: str, group: Sequence[CacheEntry]) -> set[Path]:
    """The outputs of *group* (outputs of *recipe*) that count as current: see
    :meth:`Current.protected`."""
    return current([e for e in group if e.name == recipe]).protected(group)
