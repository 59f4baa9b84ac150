"""Keys for saving the build cache in CI (``irqlab cache --keys``), found without building.

``irqlab --version`` says the same for every commit, and the outputs' input hashes
include Debian package versions (QEMU's source and firmware, the kernel, the image's
packages), which change with a point release or a security update: a CI cache keyed by
irqlab's version went on restoring a cache whose QEMU and image no longer matched, and
each run built them again.  The digests here change whenever an input they hash
changes, nearly always when a build would make a new output of the Debian-image setup
(x86_64 QEMU plus the targets ``IRQLAB_ARCHES`` names, the guest kernel, our module,
the guest image), and :func:`combined` is one key for them all.

The image's own input hash also covers what only a build makes (the SSH keys the cache
generates once, the responder's and our module's binaries): its entry here hashes what
those are made from instead (the responder's sources, recipe version and flags and
Debian's compiler, the module's digest), with the image's recipe, agent and packages
(those of the default guest, with libgpiod's tools).  Only apt's local lists are read
(``apt-get update`` first in a fresh container).
"""

from __future__ import annotations

import hashlib
import os

from irqlab.build.arch import Arch, built_arches, selected
from irqlab.build.cache import InputHash
from irqlab.errors import hide_frame

__tracebackhide__ = hide_frame  # pytest: an IrqlabError's traceback leaves these frames out

__all__ = ["cache_keys", "combined", "image_key"]


def image_key(arch: Arch, kmod_digest: str) -> str:
    """The Debian image's inputs known before anything is built (see the module's doc)."""
    from irqlab.build import debs, image, responder

    h = InputHash("image-key-1")
    for src in image._recipe_sources():
        h.add_file(src, label=f"recipe/{src.name}")
    for p in image.resolve_packages(image.DEFAULT_EXTRA_PACKAGES, debs.apt_show, arch=arch):
        h.add_str("package", f"{p.name}={p.version}")
    agent = image.default_agent_dir().resolve()
    h.add_tree(agent)
    for name, path in sorted(image.default_agent_files().items()):
        h.add_file(path, label=f"agent-file/{name}")
    for rel, path in sorted(responder.source_files().items()):
        h.add_file(path, label=f"responder/{rel}")
    for label, value in responder.recipe_inputs().items():  # its flags: another binary
        h.add_str(f"responder-{label}", value)
    # the responder's compiler (gcc's version is an input of its binary): the versions
    # of its build packages' dependency closure
    for p in debs.closure(responder.BUILD_PACKAGES, debs.apt_show):
        h.add_str("compiler", f"{p.name}={p.version}")
    h.add_str("kmod", kmod_digest)
    return h.hexdigest()


def cache_keys() -> dict[str, str]:
    """``<recipe> <arch>`` -> digest, for every output the Debian-image setup builds here
    (``IRQLAB_ARCHES``'s QEMU targets, ``IRQLAB_ARCH``'s guest).  Raises what the
    lookups raise (:class:`~irqlab.build.debs.AptError` without apt lists)."""
    from irqlab.build import debs, kernel, kmod, qemu

    keys = {f"qemu {a.name}": qemu.current_digest(a) for a in built_arches(os.environ)}
    guest = selected(os.environ)
    digest, k = kernel.current_kernel(kernel.resolve_packages(debs.apt_show, guest))
    keys[f"kernel {guest.name}"] = digest
    keys[f"kmod {guest.name}"] = kmod.current_digest(k)
    keys[f"image {guest.name}"] = image_key(guest, keys[f"kmod {guest.name}"])
    return keys


def combined(keys: dict[str, str]) -> str:
    """One cache key for all of *keys*: ``irqlab-<16 hex digits>``."""
    text = "".join(f"{name}={value}\n" for name, value in sorted(keys.items()))
    return "irqlab-" + hashlib.sha256(text.encode()).hexdigest()[:16]
