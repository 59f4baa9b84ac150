"""The Buildroot guest image: a thin back end of the boot contract (:mod:`irqlab.build.boot`).

:func:`ensure_image` downloads the pinned Buildroot release (URL + sha256,
:mod:`irqlab.build.fetch`), builds the guest architecture's defconfig
(:data:`DEFCONFIGS`: ``irqlab_x86_64_defconfig``, ``irqlab_aarch64_defconfig``) with the
BR2_EXTERNAL tree in ``<repo>/buildroot`` in that architecture's output directory and
copies the kernel (x86_64: ``vmlinux``, booted through PVH like the Debian image;
aarch64: ``Image``, booted directly on ``virt``) and the initramfs into a cache
directory named by the hash of every input (the architecture among them); it returns
a :class:`~irqlab.build.boot.GuestImage` as the Debian image does, so the harness
boots either with the same tests.  Buildroot downloads its
sources and toolchain from the internet and a cold build takes 30-60 minutes, so this
runs in GitHub Actions, not on machines without internet access.  ``BR2_DL_DIR`` and
``BR2_CCACHE_DIR`` in the environment choose the download and ccache directories
(default: in the irqlab cache).  The offline checks of the tree (no network) are
:mod:`irqlab.build.buildroot_checks`.  Logs (a :class:`~irqlab.build.steps.StepLog`)
go to :func:`irqlab.paths.log_dir`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from irqlab.build import fetch
from irqlab.build.arch import X86_64, Arch, by_name
from irqlab.build.boot import GuestImage, authorized_keys, boot_values, guest_image
from irqlab.build.cache import InputHash, cached_build, is_complete
from irqlab.build.cache import output_dir as output_dir_for
from irqlab.build.guest import BOOT_SCRIPT
from irqlab.build.kernel import KernelArtifacts, module_name, parse_modules_dep
from irqlab.build.sshkeys import SshKeys, ensure_keys
from irqlab.build.steps import Log, StepLog, stderr_log
from irqlab.contract import uapi
from irqlab.errors import IrqlabError
from irqlab.paths import PRIVATE_FILE_MODE, cache_dir, log_dir, repo_root

__all__ = [
    "AUTHORIZED_KEYS_ENV",
    "BUILDROOT_SHA256",
    "BUILDROOT_TARBALL",
    "BUILDROOT_URL",
    "BUILDROOT_VERSION",
    "DEFCONFIG",
    "DEFCONFIGS",
    "EXTERNAL_NAME",
    "EXTERNAL_PATH_VAR",
    "HOST_PACKAGES",
    "INITRD_IMAGE",
    "KERNEL_IMAGE",
    "KERNEL_IMAGES",
    "LOCAL_PACKAGES",
    "SOURCE_DIR_ENV",
    "BuildrootError",
    "CheckResult",
    "boot_env",
    "build_arch",
    "buildroot_version",
    "ccache_dir",
    "check_dotconfig",
    "defconfig_values",
    "dl_dir",
    "ensure_image",
    "ensure_source",
    "expected_sources",
    "external_tree",
    "fragment_files",
    "fragment_files_line",
    "image_inputs",
    "input_digest",
    "make_commands",
    "output_dir",
    "source_tree",
]

# Buildroot 2026.02.x is the current long-term-support line (maintained for a
# year).  The sha256 is the "SHA256:" line of buildroot-2026.02.3.tar.xz.sign,
# the release manager's PGP-signed manifest published next to the tarball
# (6,059,504 bytes, released 2026-06-16).  buildroot.org publishes no .tar.gz
# checksum we could verify, so we use the .tar.xz.
BUILDROOT_VERSION = "2026.02.3"
BUILDROOT_TARBALL = f"buildroot-{BUILDROOT_VERSION}.tar.xz"
BUILDROOT_URL = f"https://buildroot.org/downloads/{BUILDROOT_TARBALL}"
BUILDROOT_SHA256 = "5a59e7501b0b4ec52c41f4bfa79412320e0b37eae5f719605a258e8d0c6fc7fb"

DEFCONFIG = "irqlab_x86_64_defconfig"  # the default architecture's (x86_64)
# One defconfig per guest architecture (irqlab.build.arch): all pass the offline checks
# and ensure_image(arch=...) builds any of them.
DEFCONFIGS = {"x86_64": DEFCONFIG, "aarch64": "irqlab_aarch64_defconfig"}
EXTERNAL_NAME = "IRQLAB"
EXTERNAL_PATH_VAR = f"$(BR2_EXTERNAL_{EXTERNAL_NAME}_PATH)"  # the tree, in Buildroot's files
# Packages of the external tree that must be built from this repository.
LOCAL_PACKAGES = ("irqlab-kmod", "python-irqlab-agent")
# What the image consists of (Buildroot's output/images names): the kernel each
# architecture boots (x86_64 an uncompressed vmlinux through PVH, BR2_LINUX_KERNEL_VMLINUX;
# aarch64 the kernel's Image, which QEMU's -kernel boots as is, BR2_LINUX_KERNEL_IMAGE).
KERNEL_IMAGES = {"x86_64": "vmlinux", "aarch64": "Image"}
KERNEL_IMAGE = KERNEL_IMAGES["x86_64"]
INITRD_IMAGE = "rootfs.cpio.zst"
# board/irqlab/post-build.sh reads root's authorized keys from this file.
AUTHORIZED_KEYS_ENV = "IRQLAB_AUTHORIZED_KEYS_FILE"
# Debian packages a Buildroot build needs on the host (Buildroot's manual,
# "System requirements", plus what support/dependencies/dependencies.sh checks).
HOST_PACKAGES = (
    "build-essential",
    "bc",
    "bzip2",
    "ca-certificates",
    "cpio",
    "file",
    "git",
    "patch",
    "perl",
    "python3",
    "rsync",
    "unzip",
    "wget",
    "xz-utils",
    "zstd",
)

_RECIPE = "buildroot-image-1"
# IRQLAB_BUILDROOT_DEBUG=1: the kernel also gets board/irqlab/linux-debug.fragment
# (KASAN, lockdep, DEBUG_OBJECTS, kmemleak); a separate cached image.
DEBUG_ENV = "IRQLAB_BUILDROOT_DEBUG"
# A Buildroot source tree for the offline checks (source_tree()).
SOURCE_DIR_ENV = "IRQLAB_BUILDROOT_DIR"
DEBUG_FRAGMENT = "board/irqlab/linux-debug.fragment"


def debug_kernel() -> bool:
    """Whether the image's kernel is the debug (sanitizer) variant."""
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def defconfig_values(defconfig: str = DEFCONFIG) -> dict[str, str]:
    """The symbols a defconfig of the external tree sets (quotes stripped; ``n`` for
    ``# BR2_X is not set``)."""
    out: dict[str, str] = {}
    for line in (external_tree() / "configs" / defconfig).read_text().splitlines():
        if line.startswith("BR2_"):
            k, _, v = line.partition("=")
            out[k] = v.strip('"')
        elif m := re.match(r"# (BR2_\w+) is not set$", line):
            out[m.group(1)] = "n"
    return out


def fragment_files(defconfig: str = DEFCONFIG) -> list[str]:
    """The kernel fragments *defconfig* names, as written (``$(BR2_EXTERNAL_IRQLAB_PATH)/...``)."""
    return defconfig_values(defconfig).get("BR2_LINUX_KERNEL_CONFIG_FRAGMENT_FILES", "").split()


def fragment_files_line(debug: bool, defconfig: str = DEFCONFIG) -> str:
    """The .config line naming the kernel fragments (*defconfig*'s, plus the debug one)."""
    files = fragment_files(defconfig)
    if debug:
        files.append(f"{EXTERNAL_PATH_VAR}/{DEBUG_FRAGMENT}")
    return f'BR2_LINUX_KERNEL_CONFIG_FRAGMENT_FILES="{" ".join(files)}"'


class BuildrootError(IrqlabError, RuntimeError):
    pass


def build_arch(arch: Arch | str = X86_64) -> Arch:
    """The guest architecture *arch* (an :class:`Arch` or a name :func:`by_name` knows),
    checked to have a defconfig here."""
    if isinstance(arch, str):
        try:
            arch = by_name(arch)
        except ValueError as e:
            raise BuildrootError(str(e)) from None
    if arch.name not in DEFCONFIGS:
        raise BuildrootError(
            f"no Buildroot defconfig for {arch.name} (choose from {', '.join(DEFCONFIGS)})"
        )
    return arch


# -- locations ---------------------------------------------------------------------------


def external_tree() -> Path:
    """The BR2_EXTERNAL tree of this checkout (the Buildroot image is built from a
    checkout only: its packages copy files from all over it)."""
    from irqlab.paths import checkout_root

    root = checkout_root()
    if root is None:
        raise BuildrootError(
            "the Buildroot image is built and found from a source checkout of irqlab "
            "(pip install -e <checkout>; then `irqlab buildroot-build` there): this "
            "installation has none; unset IRQLAB_IMAGE to use the Debian image"
        )
    return root / "buildroot"


def dl_dir() -> Path:
    """Buildroot's download directory: ``$BR2_DL_DIR`` or ``<cache>/buildroot-dl``."""
    env = os.environ.get("BR2_DL_DIR")
    return Path(env).expanduser().resolve() if env else cache_dir() / "buildroot-dl"


def ccache_dir() -> Path:
    """Buildroot's ccache directory: ``$BR2_CCACHE_DIR`` or ``<cache>/buildroot-ccache``."""
    env = os.environ.get("BR2_CCACHE_DIR")
    return Path(env).expanduser().resolve() if env else cache_dir() / "buildroot-ccache"


def output_dir(arch: Arch = X86_64) -> Path:
    """Buildroot's O= directory for *arch*, kept between builds so that rebuilds are
    incremental: ``$IRQLAB_BUILDROOT_OUTPUT`` or ``<cache>/buildroot-<version>-output``
    for x86_64, the same name plus ``-<arch>`` for another architecture."""
    env = os.environ.get("IRQLAB_BUILDROOT_OUTPUT")
    if env:
        base = Path(env).expanduser().resolve()
    else:
        base = cache_dir() / f"buildroot-{BUILDROOT_VERSION}-output"
    return base if arch == X86_64 else base.with_name(f"{base.name}-{arch.name}")


def source_tree(path: str | os.PathLike[str] | None = None) -> Path:
    """A Buildroot source tree: *path*, else ``$IRQLAB_BUILDROOT_DIR``; checked to look like one."""
    given = os.fspath(path) if path else os.environ.get(SOURCE_DIR_ENV, "")
    if not given:
        raise BuildrootError(
            f"no Buildroot tree given: pass one or set {SOURCE_DIR_ENV} "
            f"(Buildroot {BUILDROOT_VERSION} from {BUILDROOT_URL})"
        )
    tree = Path(given).expanduser().resolve()
    for rel in ("Makefile", "support/scripts/check-dotconfig.py", "utils/check-package"):
        if not (tree / rel).is_file():
            raise BuildrootError(f"{tree} is not a Buildroot source tree: {rel} is missing")
    return tree


def buildroot_version(tree: Path) -> str:
    """The BR2_VERSION a Buildroot tree's Makefile declares."""
    for line in (tree / "Makefile").read_text(errors="replace").splitlines():
        if line.startswith("export BR2_VERSION :=") or line.startswith("export BR2_VERSION:="):
            return line.split(":=", 1)[1].strip()
    return "unknown"


# -- running commands ------------------------------------------------------------------------


def _make(tree: Path, out: Path, *targets: str) -> list[str]:
    return [
        "make",
        "-C",
        str(tree),
        f"O={out}",
        f"BR2_EXTERNAL={external_tree()}",
        *targets,
    ]


def _is_progress(line: str) -> bool:
    """Buildroot's own step lines (">>> pkg version Step", in reverse video) and make errors."""
    return ">>> " in line or "*** " in line


# -- download -----------------------------------------------------------------------------


def ensure_source(*, say: Log = stderr_log) -> Path:
    """The pinned Buildroot release, downloaded (into the dl dir) and unpacked (cached)."""
    tarball = fetch.download(
        BUILDROOT_URL, dl_dir() / "buildroot" / BUILDROOT_TARBALL, BUILDROOT_SHA256, say=say
    )

    def unpack(tmp: Path) -> None:
        say(f"unpacking {tarball.name}")
        # tar(1): Debian 12's Python 3.11.2 has no tarfile extraction filters
        subprocess.run(["tar", "-xJf", str(tarball), "-C", str(tmp)], check=True)

    top = cached_build("buildroot-src", BUILDROOT_SHA256[:16], unpack)
    tree = top / f"buildroot-{BUILDROOT_VERSION}"
    if not (tree / "Makefile").is_file():
        raise BuildrootError(f"{tarball} did not unpack to {tree}")
    return tree


# -- build -----------------------------------------------------------------------------------


def image_inputs() -> list[tuple[str, Path]]:
    """Every repository file the image is built from, as (label, path): the external
    tree and what its local packages copy (:func:`expected_sources`)."""
    tree = external_tree()  # a checkout, or BuildrootError saying so
    root = repo_root()
    rels = {
        str(p.relative_to(root))
        for p in tree.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    for files in expected_sources().values():
        rels |= files
    rels.add(str(BOOT_SCRIPT.relative_to(root)))  # post-build.sh installs it
    return [(rel, root / rel) for rel in sorted(rels)]


def boot_env(keys: SshKeys, authorized_keys: Path) -> dict[str, str]:
    """What board/irqlab/post-build.sh reads: the Debian image's values, never retyped."""
    return {
        AUTHORIZED_KEYS_ENV: str(authorized_keys),
        "IRQLAB_HOST_KEY_FILE": str(keys.host_key),
        **{f"IRQLAB_{name}": value for name, value in boot_values().items()},
    }


def input_digest(keys: SshKeys, authorized_keys: str, arch: Arch = X86_64) -> str:
    h = InputHash(_RECIPE)
    h.add_file(Path(__file__), label="recipe/buildroot.py")
    h.add_str("buildroot", f"{BUILDROOT_VERSION} {BUILDROOT_SHA256}")
    h.add_str("debug-kernel", str(debug_kernel()))
    for label, path in image_inputs():
        h.add_file(path, label=label)
    h.add_str("authorized_keys", authorized_keys)
    h.add_str("host_key", keys.host_pub)
    for name, value in sorted(boot_env(keys, Path("-")).items()):
        if name not in (AUTHORIZED_KEYS_ENV, "IRQLAB_HOST_KEY_FILE"):
            h.add_str(name, value)
    if arch != X86_64:  # as the Debian image: x86_64's digest is the one it always was
        h.add_str("arch", arch.name)
    return h.hexdigest()


def ensure_image(
    *,
    arch: Arch | str = X86_64,
    build: bool = True,
    authorized_key: str | Path | None = None,
    force: bool = False,
    clean: bool = False,
    jobs: int = 0,
    verbose: bool = False,
    say: Log = stderr_log,
) -> GuestImage:
    """The Buildroot guest of *arch* (default x86_64) for the current inputs, as the same
    :class:`GuestImage` the Debian image gives (same boot protocol, keys, markers and
    addresses; the architecture's machine, kernel file and command line).

    With ``build=False`` only a cached image is returned: :class:`BuildrootError` says
    how to build one.  Building downloads Buildroot's sources and toolchain (30-60 min
    cold); progress is Buildroot's ``>>>`` lines on the console (all output with
    *verbose*), everything in ``<log_dir>/build/buildroot-<digest>.log``.
    *authorized_key*: public key line(s) (or a file) let in besides the cache's client key.
    """
    arch = build_arch(arch)
    keys = ensure_keys()
    # the same authorized_keys text the Debian image gets
    authorized = authorized_keys(keys, authorized_key)
    digest = input_digest(keys, authorized, arch)
    final = output_dir_for("buildroot-image", digest)
    if not build and not (is_complete(final) and not force):
        command = "irqlab buildroot-build" + ("" if arch == X86_64 else f" --arch {arch.name}")
        raise BuildrootError(
            f"no Buildroot {arch.name} image for the current inputs ({final}); build it "
            f"with '{command}' (downloads Buildroot and its toolchain, 30-60 min cold; "
            "needs the internet)"
        )

    def build_into(tmp: Path) -> None:
        log = StepLog(log_dir() / "build" / f"buildroot-{digest}.log", say)
        try:
            keys_file = tmp / "authorized_keys"
            keys_file.write_text(authorized)
            _build_into(
                tmp,
                boot_env(keys, keys_file),
                log,
                arch=arch,
                clean=clean,
                jobs=jobs,
                verbose=verbose,
            )
            keys_file.unlink()
        finally:
            log.close()

    out = cached_build("buildroot-image", digest, build_into, force=force)
    return _guest_image(out, digest, keys)


def _guest_image(out: Path, digest: str, keys: SshKeys) -> GuestImage:
    meta = json.loads((out / "image.json").read_text())
    release = str(meta["kernel_version"])
    brout = Path(str(meta["output_dir"]))
    arch = build_arch(str(meta.get("arch", X86_64.name)))
    kernel_file = out / str(meta.get("kernel", KERNEL_IMAGES[arch.name]))
    kernel = KernelArtifacts(
        version=release,
        package_version=f"buildroot {meta['buildroot_version']}",
        vmlinux=kernel_file,
        bzimage=kernel_file,  # Buildroot is asked for the booted kernel file only
        modules_dir=out / "modules" / release,
        headers_build_dir=brout / "build" / f"linux-{meta['linux_version']}",
        config=out / "kernel.config",
        root=out,
        kmod=brout / "host" / "bin" / "kmod",
        arch=arch,
    )
    return guest_image(
        version=digest,
        kernel=kernel,
        initramfs=out / INITRD_IMAGE,
        keys=keys,
        directory=out,
        kmod=meta.get("kmod"),
        modules=meta.get("modules", ()),
    )


def make_commands(tree: Path, out: Path, arch: Arch, *, debug: bool, jobs: int) -> list[list[str]]:
    """The make invocations of a build of *arch*'s image in *out*, in order (the
    dotconfig check runs after the first): configure with the architecture's defconfig,
    (debug) resolve the appended debug fragment, re-sync our local packages, build."""
    cmds = [_make(tree, out, DEFCONFIGS[arch.name])]
    if debug:
        cmds.append(_make(tree, out, "olddefconfig"))
    # A plain `make` does not re-sync local packages: make Buildroot take the
    # repository's current sources (a no-op on a fresh output directory).
    cmds.append(_make(tree, out, *(f"{p}-clean-for-rebuild" for p in LOCAL_PACKAGES)))
    cmds.append(["nice", *_make(tree, out, *([f"BR2_JLEVEL={jobs}"] if jobs else []))])
    return cmds


def _build_into(
    dest: Path,
    env: Mapping[str, str],
    log: StepLog,
    *,
    arch: Arch,
    clean: bool,
    jobs: int,
    verbose: bool,
) -> None:
    t0 = time.monotonic()
    tree = ensure_source(say=log.log)
    out = output_dir(arch)
    defconfig = DEFCONFIGS[arch.name]
    debug = debug_kernel()
    if clean and out.exists():
        log.log(f"removing {out}")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    dl_dir().mkdir(parents=True, exist_ok=True)
    ccache_dir().mkdir(parents=True, exist_ok=True)
    env = {**env, "BR2_DL_DIR": str(dl_dir()), "BR2_CCACHE_DIR": str(ccache_dir())}
    log.log(f"Buildroot {BUILDROOT_VERSION}: {tree}; {arch.name} ({defconfig})")
    log.log(f"output {out}, downloads {dl_dir()}, ccache {ccache_dir()}")
    log.log(f"log {log.path}")
    configure, *rest = make_commands(tree, out, arch, debug=debug, jobs=jobs)
    log.stream(configure, env=env)
    _check_dotconfig(tree, out, log, defconfig=defconfig)
    if debug:
        # Kconfig takes the last assignment of a symbol: append, then resolve (olddefconfig).
        log.log(f"{DEBUG_ENV}: debug kernel ({DEBUG_FRAGMENT})")
        with (out / ".config").open("a") as f:
            f.write(fragment_files_line(True, defconfig) + "\n")
    *prepare, build = rest
    for cmd in prepare:
        log.stream(cmd, env=env)
    log.log("make (cold: 30-60 min; Buildroot's steps follow)")
    log.stream(build, env=env, echo=(lambda _line: True) if verbose else _is_progress)
    _collect(out, dest, log, arch)
    log.log(f"Buildroot {arch.name} image built in {(time.monotonic() - t0) / 60:.1f} min")


def _collect(out: Path, dest: Path, log: StepLog, arch: Arch = X86_64) -> None:
    """Copy what the harness needs from Buildroot's output directory (a build of *arch*'s
    defconfig) into *dest*."""
    images = out / "images"
    kernel = KERNEL_IMAGES[arch.name]
    for name in (kernel, INITRD_IMAGE):
        if not (images / name).is_file():
            raise BuildrootError(f"Buildroot did not produce {images / name} (log: {log.path})")
    # the root file system's archives hold the guest's SSH host key: the user's alone,
    # in Buildroot's output directory and in the cache entry
    for archive in images.glob("rootfs.cpio*"):
        os.chmod(archive, PRIVATE_FILE_MODE)
    for name in (kernel, INITRD_IMAGE):
        shutil.copy2(images / name, dest / name)
    os.chmod(dest / INITRD_IMAGE, PRIVATE_FILE_MODE)
    linux_dirs = sorted((out / "build").glob("linux-[0-9]*"))
    if not linux_dirs:
        raise BuildrootError(f"no linux build directory in {out / 'build'}")
    linux = linux_dirs[-1]
    release = (linux / "include/config/kernel.release").read_text().strip()
    shutil.copy2(linux / ".config", dest / "kernel.config")
    modules = out / "target/lib/modules" / release
    shutil.copytree(modules, dest / "modules" / release, symlinks=True)
    deps = parse_modules_dep((modules / "modules.dep").read_text())
    ours = sorted(module_name(rel) for rel in deps if rel.startswith("updates/"))
    meta = {
        "kind": "buildroot",
        "arch": arch.name,
        "buildroot_version": BUILDROOT_VERSION,
        "defconfig": DEFCONFIGS[arch.name],
        "output_dir": str(out),
        "linux_version": linux.name.removeprefix("linux-"),
        "kernel_version": release,
        "kernel": kernel,
        "initrd": INITRD_IMAGE,
        "kmod": ours[0] if ours else None,
        "modules": sorted({module_name(rel) for rel in deps}),
    }
    (dest / "image.json").write_text(json.dumps(meta, indent=2) + "\n")


def _check_dotconfig(
    tree: Path, out: Path, log: StepLog, python: str = sys.executable, defconfig: str = DEFCONFIG
) -> str:
    result = check_dotconfig(tree, out, log, python, defconfig)
    if not result.ok:
        raise BuildrootError(f"check-dotconfig.py: {result.detail} (log: {log.path})")
    return result.detail


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'PASS' if self.ok else 'FAIL'} {self.name}: {self.detail}"


def check_dotconfig(
    tree: Path, out: Path, log: StepLog, python: str, defconfig_name: str = DEFCONFIG
) -> CheckResult:
    defconfig = external_tree() / "configs" / defconfig_name
    rc, text = log.stream(
        [python, tree / "support/scripts/check-dotconfig.py", out / ".config", defconfig],
        check=False,
    )
    n = sum(
        1
        for line in defconfig.read_text().splitlines()
        if line.startswith("BR2_") or (line.startswith("# BR2_") and line.endswith(" is not set"))
    )
    detail = f"all {n} defconfig lines are in .config" if rc == 0 else text.strip()
    return CheckResult(f"check-dotconfig.py {defconfig_name}", rc == 0, detail)


def expected_sources() -> dict[str, set[str]]:
    """Repository files (relative paths) each local package must copy, and nothing more:
    the module with the register map it includes; the agent with the uapi header and
    the generator of its ABI artifact (:data:`irqlab.contract.uapi.GENERATOR_SOURCES`:
    the package writes ``abi.json`` with it, as the Debian image does)."""
    root = repo_root()

    def tree(sub: str, skip: tuple[str, ...] = ()) -> set[str]:
        return {
            str(p.relative_to(root))
            for p in (root / sub).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and not p.name.endswith(skip)
        }

    build_products = (".o", ".ko", ".mod", ".mod.c", ".cmd", "Module.symvers", "modules.order")
    agent_extra = {uapi.HEADER_REL, *uapi.GENERATOR_SOURCES}
    return {
        "irqlab-kmod": tree("guest-kmod", build_products) | {"qemu-device/irqlab-regs.h"},
        "python-irqlab-agent": tree("harness/irqlab_agent", (".pyc",)) | agent_extra,
    }
