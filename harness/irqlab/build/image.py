"""The default guest image: Debian's kernel plus an initramfs assembled from Debian packages.

Offline (only the Debian mirror, through apt), no root filesystem image, no
installation: ``.deb`` files are downloaded at exact versions and unpacked;
the initramfs takes busybox, dropbear (+ sftp-server), Python 3.11 with a
trimmed, precompiled stdlib, exactly the shared libraries those binaries need
(found through their ELF DT_NEEDED entries), the virtio and UIO modules, our
kernel module and the guest agent.  ``/init`` brings up the network with QEMU
user networking's static address, starts dropbear (key auth only) and prints
:data:`READY_MARKER` on the serial console.

The kernel is booted as an uncompressed ELF through QEMU's PVH entry with
qboot and a NIC without option ROM: see :meth:`GuestImage.qemu_args`.

Entry point: :func:`ensure_image` (cached by input hash).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from irqlab.build import debs, initramfs, pystdlib
from irqlab.build.arch import X86_64, Arch
from irqlab.build.boot import (
    GUEST_IP,
    HOSTNAME,
    GuestImage,
    authorized_keys,
    boot_values,
    guest_image,
)
from irqlab.build.cache import InputHash, Sources, cached_build, output_dir
from irqlab.build.cpio import Entry, tree_entries
from irqlab.build.guest import BOOT_SCRIPT, BOOT_SCRIPT_PATH, GUEST_DIR, INIT_TEMPLATE
from irqlab.build.initramfs import COMPRESSORS, DEFAULT_COMPRESSION, Stage
from irqlab.build.kernel import (
    KernelArtifacts,
    ensure_kernel,
    modinfo_depends,
    module_load_order,
    module_name,
    parse_modules_dep,
    run_depmod,
)
from irqlab.build.outputs import IMAGE_VARIANT_KEY, image_variant_record
from irqlab.build.pystdlib import PY
from irqlab.build.sshkeys import SshKeys, ensure_keys
from irqlab.build.steps import Log, StepLog
from irqlab.contract import uapi
from irqlab.errors import IrqlabError
from irqlab.paths import agent_package_dir, cache_dir, log_dir

__all__ = [
    "AARCH64_BOOT_MODULES",
    "AARCH64_SHIPPED_MODULES",
    "ABI_ARTIFACT",
    "BOOT_MODULES",
    "DEFAULT_EXTRA_PACKAGES",
    "EXCLUDED_PACKAGES",
    "PICK",
    "RECIPE_VERSION",
    "ROOT_PACKAGES",
    "SHIPPED_MODULES",
    "abi_artifact",
    "default_agent_dir",
    "default_agent_files",
    "ensure_image",
    "image_inputs",
    "render_init",
    "resolve_packages",
]

RECIPE_VERSION = "image-1"  # bump to force rebuilds when nothing else changed

# Debian packages the default guest ships besides the base set: libgpiod's tools, so a
# test can show that standard userspace tools (not only our agent) see the GPIO lines.
# Every guest's image has them (Guest adds a configuration's own): `irqlab build-image`
# builds that image, not one without them that no guest boots.
DEFAULT_EXTRA_PACKAGES = ("gpiod",)

ROOT_PACKAGES = (
    "busybox-static",
    "dropbear-bin",
    "openssh-sftp-server",
    "python3.11-minimal",
    "libpython3.11-stdlib",
)
# Dependencies the image does not ship.  What they would provide is dropped
# below (Python extension modules) or not needed (sftp-server runs without
# the OpenSSH client); the ELF check proves nothing left needs them.
EXCLUDED_PACKAGES = (
    "openssh-client",
    "media-types",
    "mime-support",
    "tzdata",
    "debconf",
    "debconf-2.0",
    "readline-common",
    "libreadline8",
    "libncursesw6",
    "libtinfo6",
    "libsqlite3-0",
    "libdb5.3",
    "libnsl2",
    "libtirpc3",
    "libssl3",
    "dpkg",
    "install-info",
)

# insmod-ed by /init (Debian: =m); pvpanic_pci reports a guest panic to QEMU
BOOT_MODULES = ("virtio_pci", "virtio_net", "virtio_rng", "pvpanic_pci")
# Debian's arm64 kernel has no pvpanic (CONFIG_PVPANIC is not set)
AARCH64_BOOT_MODULES = ("virtio_pci", "virtio_net", "virtio_rng")
SHIPPED_MODULES = ("uio", "uio_pci_generic")  # in the image for modprobe
# aarch64 also ships gpio_keys and evdev: a device-tree key on our gpiochip
# (KEYBOARD_GPIO=m, INPUT_EVDEV=m), read on /dev/input/eventN
AARCH64_SHIPPED_MODULES = (*SHIPPED_MODULES, "gpio_keys", "evdev")

# Where package files are taken from: package -> paths (files or whole dirs).
PICK: dict[str, tuple[str, ...]] = {
    "busybox-static": ("bin/busybox",),
    "dropbear-bin": ("usr/sbin/dropbear",),
    "openssh-sftp-server": ("usr/lib/openssh/sftp-server", "usr/lib/sftp-server"),
    "python3.11-minimal": (f"usr/bin/{PY}",),
    "libpython3.11-minimal": (f"usr/lib/{PY}",),
    "libpython3.11-stdlib": (f"usr/lib/{PY}",),
}


# ---------------------------------------------------------------------------
# pure helpers (unit-tested)


def render_init(template: str, values: Mapping[str, str]) -> str:
    """Fill ``@NAME@`` placeholders; every placeholder must be given, every value used."""
    out = template
    for k, v in values.items():
        token = f"@{k}@"
        if token not in out:
            raise ValueError(f"init template has no placeholder {token}")
        out = out.replace(token, v)
    left = sorted(set(re.findall(r"@[A-Z][A-Z0-9_]*@", out)))
    if left:
        raise ValueError(f"init template placeholders not filled: {', '.join(left)}")
    return out


# ---------------------------------------------------------------------------
# inputs


def default_agent_dir() -> Path:
    return agent_package_dir()


ABI_ARTIFACT = "abi.json"


def default_agent_files() -> dict[str, Path]:
    """Files shipped inside the agent package: ``abi.json``, the ABI artifact (see
    :func:`abi_artifact`), the only thing the agent knows of the uapi header."""
    return {ABI_ARTIFACT: abi_artifact(uapi.header_path())}


def abi_artifact(header: Path) -> Path:
    """``abi.json`` of *header* (:func:`irqlab.contract.uapi.abi_json`), cached by the
    header's text and the generator's code."""
    h = hashlib.sha256(header.read_bytes())
    harness = Path(uapi.__file__).resolve().parents[2]  # harness/ (or site-packages)
    for rel in uapi.GENERATOR_SOURCES:
        h.update((harness / rel.removeprefix("harness/")).read_bytes())
    out = cache_dir() / "agent-abi" / f"abi{uapi.ABI_SCHEMA}-{h.hexdigest()[:16]}.json"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(uapi.abi_json(header))
        tmp.replace(out)
    return out


def _recipe_sources() -> list[Path]:
    here = Path(__file__).resolve().parent
    srcs = [
        here / n
        for n in (
            "image.py",
            "boot.py",
            "initramfs.py",
            "pystdlib.py",
            "cpio.py",
            "elf.py",
            "debs.py",
            "sshkeys.py",
            "kernel.py",
        )
    ]
    srcs += sorted(p for p in GUEST_DIR.iterdir() if p.is_file() and p.suffix != ".pyc")
    return srcs


@dataclass(frozen=True)
class _Read:
    """The checkout's files an image is made of, read once: the digest hashes these
    bytes and the build writes these bytes (an edit made while the build waited for
    its lock is not stored under the key of the text it replaced)."""

    recipe: Sources  # "recipe/<name>" of each of _recipe_sources() (the /init template...)
    agent: Sources  # the agent package, by path inside it (bytecode caches left out)
    kmod: Sources | None = None  # our module, by its file name (None: no module)

    def text(self, path: Path) -> str:
        """The recipe file *path*'s text as read (one of :func:`_recipe_sources`)."""
        return self.recipe.contents[f"recipe/{path.name}"].decode()


@dataclass(frozen=True)
class _Inputs:
    kernel: KernelArtifacts
    packages: tuple[debs.Package, ...]
    extra_packages: tuple[str, ...]
    agent_dir: Path
    agent_files: Mapping[str, Path]
    kmod: Path | None
    authorized_keys: str
    keys: SshKeys
    compression: str
    stdlib_sources: bool = True
    arch: Arch = X86_64
    kernel_modules: tuple[str, ...] = ()  # more of the kernel's modules to ship

    @property
    def boot_modules(self) -> tuple[str, ...]:
        return AARCH64_BOOT_MODULES if self.arch.name == "aarch64" else BOOT_MODULES

    @property
    def shipped_modules(self) -> tuple[str, ...]:
        base = AARCH64_SHIPPED_MODULES if self.arch.name == "aarch64" else SHIPPED_MODULES
        return tuple(dict.fromkeys((*base, *self.kernel_modules)))

    def read(self) -> _Read:
        """The recipe's files and the agent package's, read now."""
        agent = sorted(
            p for p in self.agent_dir.rglob("*") if p.is_file() and "__pycache__" not in p.parts
        )
        return _Read(
            recipe=Sources.read({f"recipe/{src.name}": src for src in _recipe_sources()}),
            agent=Sources.read({str(p.relative_to(self.agent_dir)): p for p in agent}),
            kmod=Sources.read({self.kmod.name: self.kmod}) if self.kmod is not None else None,
        )

    def digest(self, read: _Read | None = None) -> str:
        """The hash naming the image of these inputs, of the files *read* (default: as
        they are now)."""
        files = read if read is not None else self.read()
        h = InputHash(RECIPE_VERSION)
        files.recipe.add_to(h)
        h.add_str("kernel", f"{self.kernel.version} {self.kernel.package_version}")
        for p in self.packages:
            h.add_str("package", f"{p.name}={p.version}")
        h.add_str("extra-packages", ",".join(self.extra_packages))
        h.add_str("agent", self.agent_dir.name)
        files.agent.add_to(h)
        for name, path in sorted(self.agent_files.items()):
            h.add_file(path, label=f"agent-file/{name}")
        if files.kmod is not None:  # as add_file(kmod, label="kmod/<name>") hashed it
            files.kmod.add_to(h, prefix="kmod/")
        else:
            h.add_str("kmod", "none")
        h.add_str("authorized_keys", self.authorized_keys)
        h.add_str("host_key", self.keys.host_pub)
        h.add_str("compression", self.compression)
        h.add_str("stdlib_sources", str(self.stdlib_sources))
        if self.arch != X86_64:
            h.add_str("arch", self.arch.name)
        if self.kernel_modules:  # none: the digest images had before there were any
            h.add_str("kernel-modules", ",".join(self.kernel_modules))
        return h.hexdigest()


# ---------------------------------------------------------------------------
# the build


def _etc_files(stage: Stage, inp: _Inputs) -> None:
    stage.write(
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
    )
    stage.write("etc/group", "root:x:0:\ntty:x:5:\nnogroup:x:65534:\n")
    stage.write("etc/shells", "/bin/sh\n/bin/ash\n/usr/bin/sh\n")
    stage.write("etc/hostname", HOSTNAME + "\n")
    stage.write("etc/hosts", f"127.0.0.1 localhost\n{GUEST_IP} {HOSTNAME}\n::1 localhost\n")
    stage.write(
        "etc/nsswitch.conf", "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n"
    )
    stage.write("etc/resolv.conf", "nameserver 10.0.2.3\n")
    stage.write(
        "etc/profile",
        "export PATH=/usr/sbin:/usr/bin:/sbin:/bin\nexport PS1='\\h:\\w\\$ '\n",
    )
    stage.mkdir("etc/dropbear", 0o700)
    stage.copy_file(inp.keys.host_key, "etc/dropbear/dropbear_ed25519_host_key")
    os.chmod(stage.path("etc/dropbear/dropbear_ed25519_host_key"), 0o600)
    stage.mkdir("root", 0o700)
    stage.mkdir("root/.ssh", 0o700)
    stage.write("root/.ssh/authorized_keys", inp.authorized_keys, 0o600)


def _modules(
    stage: Stage, inp: _Inputs, read: _Read, steps: StepLog
) -> tuple[list[str], list[str], str | None]:
    """Copy modules + depmod; returns (boot insmod order, all module names, kmod name).
    Our module is the bytes *read* holds (the key's), not the file as it is now."""
    k = inp.kernel
    deps = parse_modules_dep((k.modules_dir / "modules.dep").read_text())
    wanted = list(inp.boot_modules) + list(inp.shipped_modules)
    kmod_name: str | None = None
    ko: tuple[str, bytes, int] | None = None
    if read.kmod is not None:
        ((ko_name, ko_data),) = read.kmod.contents.items()
        ko = (ko_name, ko_data, read.kmod.modes.get(ko_name, 0o644))
        kmod_name = module_name(ko_name)
        wanted += modinfo_depends(ko_data)
    every = module_load_order(deps, wanted)
    modroot = f"usr/lib/modules/{k.version}"
    for rel in every:
        stage.copy_file(k.modules_dir / rel, f"{modroot}/{rel}")
    for meta in ("modules.order", "modules.builtin", "modules.builtin.modinfo"):
        if (k.modules_dir / meta).is_file():
            stage.copy_file(k.modules_dir / meta, f"{modroot}/{meta}")
    if ko is not None:
        stage.write(f"{modroot}/extra/{ko[0]}", ko[1], ko[2])
    run_depmod(k.kmod, stage.root, k.version, steps)
    boot = module_load_order(deps, inp.boot_modules)
    names = sorted({module_name(r) for r in every} | ({kmod_name} if kmod_name else set()))
    return boot, names, kmod_name


def _stage_agent(stage: Stage, inp: _Inputs, read: _Read) -> str:
    """The agent package into *stage* as *read* (as hashed, not as it is now; bytecode
    left out); returns its directory in the stage."""
    agent_dst = f"usr/lib/python3/dist-packages/{inp.agent_dir.name}"
    stage.mkdir(agent_dst)
    for arel, data in read.agent.contents.items():
        if not arel.endswith(".pyc"):
            stage.write(f"{agent_dst}/{arel}", data, read.agent.modes[arel])
    return agent_dst


def _build(inp: _Inputs, read: _Read, digest: str, tmp: Path, steps: StepLog) -> dict[str, object]:
    k = inp.kernel
    stage = Stage(tmp / "rootfs")
    stage.root.mkdir()
    with steps.step("fetch Debian packages"):
        files = debs.download(inp.packages, steps)
        trees = {name: debs.extracted(deb, steps) for name, deb in files.items()}
    with steps.step("assemble root tree"):
        for d in initramfs.SKELETON_DIRS:
            stage.root.joinpath(d).mkdir(parents=True, exist_ok=True)
        stage.mkdir("tmp", 0o1777)
        for top in initramfs.MERGED_TOP:
            (stage.root / top).symlink_to(f"usr/{top}")
        for pkg, paths in PICK.items():
            for rel in paths:
                initramfs.copy_pick(trees[pkg], rel, stage, keep=pystdlib.ships)
        for pkg in inp.extra_packages:
            initramfs.copy_package_all(trees[pkg], stage)
        stage.symlink("usr/bin/python3", PY)
        listing = steps.run(
            "busybox --list-full",
            [_runnable_busybox(inp, stage, steps), "--list-full"],
            capture=True,
        )
        for rel, target in initramfs.busybox_links(listing).items():
            if not stage.path(rel).exists() and not stage.path(rel).is_symlink():
                stage.symlink(rel, target)
        agent_dst = _stage_agent(stage, inp, read)
        for name, src in inp.agent_files.items():
            stage.copy_file(src, f"{agent_dst}/{name}")
        _etc_files(stage, inp)
    with steps.step("kernel modules"):
        boot, modnames, kmod_name = _modules(stage, inp, read, steps)
    with steps.step("shared libraries (ELF DT_NEEDED closure)"):
        libdir, search = initramfs.lib_dirs(inp.arch.triplet)
        index = initramfs.library_index(trees.values(), search)
        libs = initramfs.add_libraries(stage, index, libdir)
        steps.write("libraries: " + " ".join(libs))
    with steps.step("render /init"):
        init = render_init(
            read.text(INIT_TEMPLATE),
            {
                "KERNEL_VERSION": k.version,
                "BOOT_MODULES": " ".join(boot),
                **boot_values(),
            },
        )
        stage.write("init", init, 0o755)
        stage.write(BOOT_SCRIPT_PATH, read.text(BOOT_SCRIPT))
    with steps.step("precompile Python"):
        stdlib = stage.path(f"usr/lib/{PY}")
        if inp.stdlib_sources:
            pystdlib.compile_python(stage, [stdlib, stage.path(agent_dst)], steps)
        else:
            pystdlib.compile_python(stage, [stdlib], steps, legacy=True)
            steps.write(f"sourceless stdlib: {pystdlib.drop_sources(stdlib)} bytes of .py dropped")
            pystdlib.compile_python(stage, [stage.path(agent_dst)], steps)
    with steps.step(f"write initramfs ({inp.compression})"):
        entries = [*tree_entries(stage.root), Entry.chardev("dev/console", 5, 1)]
        out, raw_size = initramfs.write_archive(entries, tmp, inp.compression)
        manifest = "\n".join(f"{oct(e.mode)} {e.path}" for e in entries)
        (tmp / "manifest.txt").write_text(manifest + "\n")
    shutil.rmtree(stage.root)
    return {
        "digest": digest,
        "initramfs": out.name,
        "initramfs_size": out.stat().st_size,
        "cpio_size": raw_size,
        "entries": len(entries),
        "kernel_version": k.version,
        "boot_modules": boot,
        "modules": modnames,
        "kmod": kmod_name,
        "libraries": libs,
        "packages": {p.name: p.version for p in inp.packages},
    }


def resolve_packages(
    extra: Sequence[str] = (), lookup: debs.Lookup = debs.apt_show, arch: Arch = X86_64
) -> list[debs.Package]:
    if arch.foreign:
        lookup = debs.foreign_lookup(arch.deb_arch, lookup)
    return debs.closure([*ROOT_PACKAGES, *extra], lookup, exclude=EXCLUDED_PACKAGES)


def _runnable_busybox(inp: _Inputs, stage: Stage, steps: StepLog) -> Path:
    """A busybox this host can run, to list the applets of the image's busybox.

    The image's own unless it is another architecture's: then the host's
    ``busybox-static`` of the same version (same source and configuration, so the
    same applets).
    """
    if not inp.arch.foreign:
        return stage.path("usr/bin/busybox")
    image_bb = next(p for p in inp.packages if p.name == "busybox-static")
    host_bb = debs.apt_show([image_bb.name]).get(image_bb.name)
    if host_bb is None or host_bb.version != image_bb.version:
        found = host_bb.spec if host_bb else "none"
        raise debs.AptError(
            f"{image_bb.spec} ({image_bb.arch}): the host's busybox-static of that version "
            f"lists its applets, apt has {found}"
        )
    return debs.extracted(debs.download([host_bb], steps)[host_bb.name], steps) / "bin/busybox"


def image_inputs(
    kernel: KernelArtifacts,
    keys: SshKeys,
    agent_files: Mapping[str, Path],
    *,
    kmod: Path | None = None,
    agent_dir: Path | None = None,
    authorized_key: str | Path | None = None,
    extra_packages: Sequence[str] = (),
    compression: str = DEFAULT_COMPRESSION,
    stdlib_sources: bool = True,
    arch: Arch = X86_64,
    kernel_modules: Sequence[str] = (),
) -> _Inputs:
    """Everything an image for *arch* is made of (its digest names it), from parts built
    or looked up before: :func:`ensure_image` builds them, the cache's inventory
    (:mod:`irqlab.build.inventory`) only looks them up."""
    agent = (agent_dir or default_agent_dir()).resolve()
    if not agent.is_dir():
        raise FileNotFoundError(f"agent package directory {agent} does not exist")
    return _Inputs(
        kernel=kernel,
        packages=tuple(resolve_packages(extra_packages, arch=arch)),
        extra_packages=tuple(extra_packages),
        agent_dir=agent,
        agent_files=dict(agent_files),
        kmod=kmod.resolve() if kmod is not None else None,
        authorized_keys=authorized_keys(keys, authorized_key),
        keys=keys,
        compression=compression,
        stdlib_sources=stdlib_sources,
        arch=arch,
        kernel_modules=tuple(kernel_modules),
    )


class UnknownKernelModule(IrqlabError, ValueError):
    """A module asked for is not one of the guest kernel's."""


def kernel_modules_to_ship(
    kernel: KernelArtifacts, names: Sequence[str], present: Sequence[str] = ()
) -> tuple[str, ...]:
    """*names* as the kernel names its modules (``-`` is ``_``), sorted, without those
    built into *kernel* and those the image ships anyway (*present* and what they
    depend on: asking for ``uio`` keeps the standard image, its digest and snapshots);
    a name that is neither a module of the kernel nor built in is refused."""
    if not names:
        return ()
    wanted = {n.strip().replace("-", "_") for n in names if n.strip()}
    dep = parse_modules_dep((kernel.modules_dir / "modules.dep").read_text())
    modular = {module_name(rel) for rel in dep}
    known = [n for n in present if n.replace("-", "_") in modular]
    shipped = {module_name(rel) for rel in module_load_order(dep, known)}
    builtin_file = kernel.modules_dir / "modules.builtin"
    builtin = (
        {module_name(rel) for rel in builtin_file.read_text().split()}
        if builtin_file.is_file()
        else set()
    )
    unknown = sorted(wanted - modular - builtin)
    if unknown:
        raise UnknownKernelModule(
            f"the guest kernel {kernel.version} has no module named {', '.join(unknown)} "
            f"(its modules are under {kernel.modules_dir})"
        )
    return tuple(sorted((wanted & modular) - shipped))


def ensure_image(
    kmod: Path | None = None,
    agent_dir: Path | None = None,
    authorized_key: str | Path | None = None,
    log: Log | None = None,
    *,
    force: bool = False,
    agent_files: Mapping[str, Path] | None = None,
    extra_packages: Sequence[str] = (),
    compression: str = DEFAULT_COMPRESSION,
    stdlib_sources: bool = True,
    arch: Arch = X86_64,
    kernel_modules: Sequence[str] = (),
) -> GuestImage:
    """The guest image for these inputs, built into the cache if missing.

    kmod: our kernel module (.ko built against ``ensure_kernel().headers_build_dir``), or None.
    agent_dir: the guest agent package directory (default: the installed ``irqlab_agent``).
    authorized_key: an extra public key (line, or a file with lines) besides the cache's
        client key, which is always authorized.
    agent_files: extra files placed in the agent package (default :func:`default_agent_files`
        and the native responder, :func:`irqlab.build.responder.ensure_responder`).
    extra_packages: more Debian packages to ship whole (minus docs), e.g. ``rt-tests``.
    compression: of the initramfs, one of :data:`COMPRESSORS`.
    stdlib_sources: ship the stdlib's .py files (tracebacks show source lines) or only
        its bytecode (a smaller initramfs, which boots faster).
    arch: the guest architecture (:mod:`irqlab.build.arch`): aarch64 takes every
        package, the kernel and its modules from Debian's arm64 archive (``kmod`` must
        be a module built against that kernel: :func:`irqlab.build.kmod.ensure_kmod`
        with ``kernel=ensure_kernel(arch=AARCH64)``).
    kernel_modules: more of the guest kernel's own modules to ship (with what they
        depend on), e.g. what a driver developer's module needs (``depends=``); names
        built into the kernel are left out (they need no loading), unknown ones refused.
    """
    if compression not in COMPRESSORS:
        raise ValueError(f"compression must be one of {', '.join(COMPRESSORS)}")
    if kmod is not None and not kmod.is_file():
        raise FileNotFoundError(f"kernel module {kmod} does not exist (build it first)")
    kernel = ensure_kernel(log, arch=arch)
    keys = ensure_keys()
    files = dict(default_agent_files() if agent_files is None else agent_files)
    if agent_files is None:  # the native responder beside the agent (issue 15)
        from irqlab.build.responder import BINARY, ensure_responder

        files[BINARY] = ensure_responder(log)
    inp = image_inputs(
        kernel,
        keys,
        files,
        kmod=kmod,
        agent_dir=agent_dir,
        authorized_key=authorized_key,
        extra_packages=extra_packages,
        compression=compression,
        stdlib_sources=stdlib_sources,
        arch=arch,
    )
    if kernel_modules:  # beyond what the image ships anyway (its modules, ours' depends=)
        ours = modinfo_depends(kmod.read_bytes()) if kmod is not None else []
        present = (*inp.boot_modules, *inp.shipped_modules, *ours)
        inp = replace(inp, kernel_modules=kernel_modules_to_ship(kernel, kernel_modules, present))
    read = inp.read()  # built from these bytes, the digest's, not the checkout's then
    digest = inp.digest(read)

    def build(tmp: Path) -> None:
        with StepLog(log_dir() / "build" / f"image-{digest}.log", log) as steps:
            steps.log(f"guest image {digest}: building {output_dir('image', digest)}")
            meta = _build(inp, read, digest, tmp, steps)
            # what pruning groups by (irqlab.build.outputs) and the inventory looks up
            meta[IMAGE_VARIANT_KEY] = image_variant_record(
                inp.extra_packages, inp.compression, inp.stdlib_sources, inp.kernel_modules
            )
            (tmp / "image.json").write_text(json.dumps(meta, indent=2) + "\n")

    out = cached_build("image", digest, build, force=force)
    meta = json.loads((out / "image.json").read_text())
    agent = inp.agent_dir
    return guest_image(
        version=digest,
        kernel=kernel,
        initramfs=out / str(meta["initramfs"]),
        keys=keys,
        directory=out,
        kmod=meta.get("kmod"),
        modules=meta.get("modules", ()),
        agent_package=agent.name,
    )
