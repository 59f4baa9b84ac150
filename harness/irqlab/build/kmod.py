"""Build recipe for the irqlab kernel module against the guest kernel's headers.

The sources (``guest-kmod/`` and the register map ``qemu-device/irqlab-regs.h``)
are read once, and the bytes the key hashed are written, with their relative
layout, into a scratch directory and built there, so the checkout never collects
build products (and an edit made meanwhile is not stored under the old key).  The ``.ko`` is cached
by the hash of those sources and the kernel version; a compiler warning fails
the build (the driver is kept warning-free).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

from irqlab import cancel
from irqlab.build import debs
from irqlab.build.arch import MODULE_BUILD_PACKAGES
from irqlab.build.cache import InputHash, Sources, cached_build
from irqlab.build.kernel import KernelArtifacts, ensure_kernel
from irqlab.build.steps import BuildError, Log, StepLog
from irqlab.errors import IrqlabError, hide_frame
from irqlab.paths import log_dir, repo_root

__tracebackhide__ = hide_frame  # pytest: an IrqlabError's traceback leaves these frames out

__all__ = [
    "BUILD_INPUTS",
    "CHECKPATCH_FILES",
    "CHECKPATCH_IGNORE",
    "CHECKPATCH_PACKAGE",
    "MODULE",
    "MODULE_BUILD_PACKAGES",
    "RECIPE_VERSION",
    "STYLE_TOOL_PACKAGES",
    "ToolMissing",
    "checkpatch_digest",
    "checkpatch_digest_of",
    "checkpatch_findings",
    "compiler_version",
    "cross_args",
    "current_digest",
    "ensure_checkpatch",
    "ensure_cross_compiler",
    "ensure_kmod",
    "ensure_module_build_tools",
    "ensure_style_tools",
    "input_digest",
    "is_build_input",
    "kcflags",
    "kernel_inputs",
    "module_make_args",
    "read_sources",
    "source_files",
    "sparse_findings",
    "warnings_in",
]

RECIPE_VERSION = "kmod-2"  # 2: kernel headers mapped to / in the .ko
MODULE = "irqlab.ko"
_BUILD_PRODUCT = re.compile(r"(\.o|\.ko|\.mod|\.mod\.c|\.cmd|Module\.symvers|modules\.order)$")


# What the build reads, below guest-kmod/ (besides the register map): Kbuild (the build
# description), the Makefile (its wrapper) and the C sources and headers.  One list for
# the key and the copy, so they cannot disagree; a README edit is no new module.
BUILD_INPUTS: tuple[str, ...] = ("Kbuild", "Makefile", "*.c", "*.h")


def is_build_input(rel: Path) -> bool:
    """Whether *rel* (relative to guest-kmod/) is one of :data:`BUILD_INPUTS`."""
    if "responder" in rel.parts or rel.name.startswith(".") or _BUILD_PRODUCT.search(rel.name):
        return False  # the native responder has its own recipe (irqlab.build.responder)
    return any(rel.match(pat) for pat in BUILD_INPUTS)


def source_files() -> dict[str, Path]:
    """Relative path in the scratch tree -> source file in the checkout."""
    root = repo_root()
    files = {"qemu-device/irqlab-regs.h": root / "qemu-device" / "irqlab-regs.h"}
    kmod = root / "guest-kmod"
    for p in sorted(kmod.rglob("*")):
        if p.is_file() and is_build_input(p.relative_to(kmod)):
            files[f"guest-kmod/{p.relative_to(kmod)}"] = p
    return files


def read_sources(files: Mapping[str, Path]) -> Sources:
    """*files* (:func:`source_files`) read now, in the order the key hashes them."""
    return Sources.read(dict(sorted(files.items())))


def compiler_version(k: KernelArtifacts) -> str | None:
    """First line of ``gcc --version`` of the compiler that builds for *k* (the cross
    one for another architecture), or None when it is not installed."""
    cc = shutil.which(f"{k.arch.cross_compile if k.arch.foreign else ''}gcc")
    if cc is None:
        return None
    r = cancel.run_text([cc, "--version"], doing=f"asking {cc} its version")
    if r.returncode != 0:
        raise subprocess.CalledProcessError(r.returncode, r.args, r.stdout, r.stderr)
    return r.stdout.splitlines()[0]


def kernel_inputs(k: KernelArtifacts) -> str:
    """The kernel a module is built against: its ABI name and the Debian version of its
    packages (headers and image are one upload: an upload that keeps the ABI name, a
    -2 -> -3 revision, brings other headers)."""
    return f"{k.version} {k.package_version}"


def input_digest(k: KernelArtifacts, files: Mapping[str, Path] | Sources) -> str:
    """The module's key: *files* built against *k*'s headers.  Not the host compiler's
    version: a cached module is found where no compiler is installed (a CI shard that
    restored the cache, ``irqlab cache --keys`` before anything is built), and the key
    must be the same there (a gcc update alone does not rebuild the module)."""
    h = InputHash(RECIPE_VERSION)
    h.add_str("kernel", kernel_inputs(k))
    (files if isinstance(files, Sources) else read_sources(files)).add_to(h)
    return h.hexdigest()


def current_digest(k: KernelArtifacts) -> str:
    """The key of the module the checkout's sources make for *k* (nothing is built)."""
    return input_digest(k, source_files())


def warnings_in(output: str) -> list[str]:
    """Compiler/modpost warnings in a Kbuild log."""
    return [line for line in output.splitlines() if re.search(r"\bwarning:", line, re.IGNORECASE)]


def cross_args(k: KernelArtifacts) -> list[str]:
    """``ARCH=`` and ``CROSS_COMPILE=`` for a kernel of another architecture (else none).

    The headers' host tools (scripts/basic/fixdep, scripts/mod/modpost...) are the
    host's own ``linux-kbuild`` package (see :func:`irqlab.build.kernel.resolve_packages`),
    so only the compiler is a cross one (Debian's ``gcc-<triplet>``, the guest kernel's
    gcc 12).
    """
    if not k.arch.foreign:
        return []
    return [f"ARCH={k.arch.kernel_arch}", f"CROSS_COMPILE={k.arch.cross_compile}"]


CROSS_COMPILER_PACKAGE = "gcc-{triplet}"


def ensure_module_build_tools(log: Log | None = None) -> None:
    """:data:`MODULE_BUILD_PACKAGES`, installed with apt as root when missing; not root,
    an error naming them (:func:`irqlab.build.debs.ensure_host_packages`)."""
    debs.ensure_host_packages(MODULE_BUILD_PACKAGES, "building a kernel module", log)


def ensure_cross_compiler(k: KernelArtifacts, log: Log | None = None) -> None:
    """Debian's cross compiler for a kernel of another architecture (apt, once), on
    PATH: installed but not found there (a PATH without /usr/bin), make would fail
    later on ``aarch64-linux-gnu-gcc-12: not found`` after ``irqlab kdir`` said
    nothing was wrong; a :class:`BuildError` says where it is instead."""
    if not k.arch.foreign:
        return
    cc = f"{k.arch.cross_compile}gcc"
    if shutil.which(cc) is not None:
        return
    pkg = CROSS_COMPILER_PACKAGE.format(triplet=k.arch.triplet)
    with StepLog(log_dir() / "build" / "cross-compiler.log", log) as steps:
        debs.ensure_apt_packages(steps, [pkg], step="cross compiler")
        if shutil.which(cc) is not None:
            return
        path = os.environ.get("PATH", "")
        where = Path("/usr/bin") / cc
        if where.exists():
            fix = f"it is {where}: put {where.parent} on PATH"
        else:
            fix = f"reinstall it: apt-get install --reinstall {pkg} (as root)"
        raise BuildError(
            "cross compiler",
            steps.path,
            f"{cc} ({pkg}, installed) is not on PATH ({path or 'empty'}): {fix}",
        )


def module_make_args(k: KernelArtifacts) -> list[str]:
    """``make`` arguments that build an external module for kernel *k*: with ``M=<dir>
    modules`` after them (``-C`` its headers, and ``ARCH=``/``CROSS_COMPILE=`` when
    it is another architecture's)."""
    return ["-C", str(k.headers_build_dir), *cross_args(k)]


def kcflags(scratch: Path, kernel_root: Path | None = None) -> str:
    """``KCFLAGS=`` mapping the scratch directory (named by the key) to ``.`` in the
    debug info and ``__FILE__``, and the kernel output's extracted packages
    (*kernel_root*, below the cache directory) to ``/`` (its headers as Debian installs
    them): the ``.ko`` bytes do not depend on where it was built or where the cache is,
    so the image (and every snapshot) is not new for a module that is not."""
    maps = [f"-ffile-prefix-map={scratch}=."]
    if kernel_root is not None:
        maps.append(f"-ffile-prefix-map={kernel_root}/=/")
    return "KCFLAGS=" + " ".join(maps)


def ensure_kmod(
    log: Log | None = None, *, force: bool = False, kernel: KernelArtifacts | None = None
) -> Path:
    """Path of ``irqlab.ko`` built for the guest kernel (cached)."""
    k = kernel if kernel is not None else ensure_kernel(log)
    # read once: the build copies the bytes the key hashed, not the checkout's files then
    files = read_sources(source_files())
    digest = input_digest(k, files)

    def build(out: Path) -> None:
        ensure_module_build_tools(log)  # only to build: a cached module needs none
        ensure_cross_compiler(k, log)
        with StepLog(log_dir() / "build" / f"kmod-{digest}.log", log) as steps:
            steps.log(f"kernel module for {k.version}: building")
            scratch = out / "src"
            with steps.step("copy module sources"):
                files.write_to(scratch)
            moddir = scratch / "guest-kmod"
            with steps.step("make modules"):
                result = steps.run(
                    "make modules",
                    [
                        "make",
                        *module_make_args(k),
                        f"M={moddir}",
                        "modules",
                        kcflags(scratch, k.root),
                    ],
                    where=lambda line: line.replace(f"{scratch}/", ""),  # as the checkout's
                )
                found = warnings_in(result)
                if found:
                    raise RuntimeError("the module builds with warnings:\n" + "\n".join(found))
            shutil.copy2(moddir / MODULE, out / MODULE)
            shutil.rmtree(scratch)

    return cached_build("kmod", digest, build, force=force) / MODULE


# --- style tools: the kernel's checkpatch.pl and sparse --------------------------------

CHECKPATCH_PACKAGE = "linux-source-6.1"
CHECKPATCH_FILES = (
    "scripts/checkpatch.pl",
    "scripts/spelling.txt",
    "scripts/const_structs.checkpatch",
)
# An out-of-tree module that builds for several kernels compares LINUX_VERSION_CODE,
# which checkpatch flags twice (LINUX_VERSION_CODE and the "constant on the left" rule).
CHECKPATCH_IGNORE = ("LINUX_VERSION_CODE", "CONSTANT_COMPARISON")


STYLE_TOOL_PACKAGES = ("sparse",)


def ensure_style_tools(log: Log | None = None) -> None:
    """Install the Debian packages the driver's style checks run (sparse), if missing."""
    debs.ensure_host_packages(STYLE_TOOL_PACKAGES, "style tools", log)


class ToolMissing(IrqlabError, RuntimeError):
    """A style tool is not installed and cannot be fetched; the message says how."""


def ensure_checkpatch(log: Log | None = None) -> Path:
    """The kernel's ``scripts/checkpatch.pl`` with its data files (spelling.txt,
    const_structs.checkpatch), taken from Debian's linux-source-6.1 package, cached."""
    pkg, digest = _checkpatch_package()

    def build(out: Path) -> None:
        with StepLog(log_dir() / "build" / f"checkpatch-{digest}.log", log) as steps:
            deb = debs.download([pkg], steps)[pkg.name]
            with tempfile.TemporaryDirectory(dir=out) as tmp:
                debs.extract_into(deb, Path(tmp), steps)
                tarball = next(Path(tmp, "usr", "src").glob("linux-source-*.tar.*"))
                steps.run(
                    "extract checkpatch.pl",
                    [
                        "tar",
                        "-xf",
                        tarball,
                        "-C",
                        out,
                        "--strip-components=1",
                        "--wildcards",
                        *(f"*/{f}" for f in CHECKPATCH_FILES),
                    ],
                )
            for f in CHECKPATCH_FILES:
                if not (out / f).is_file():
                    raise ToolMissing(f"{pkg.spec} has no {f}")

    return cached_build("checkpatch", digest, build) / CHECKPATCH_FILES[0]


def _checkpatch_package() -> tuple[debs.Package, str]:
    pkg = debs.apt_show([CHECKPATCH_PACKAGE]).get(CHECKPATCH_PACKAGE)
    if pkg is None:
        raise ToolMissing(
            f"{CHECKPATCH_PACKAGE} is not in the apt lists: run apt-get update "
            "(checkpatch.pl comes from that package)"
        )
    return pkg, checkpatch_digest_of(pkg.spec)


def checkpatch_digest_of(spec: str) -> str:
    """The hash naming the checkpatch output made from the package *spec*
    (``linux-source-6.1=6.1.192-3``): the output records no more of it."""
    h = InputHash("checkpatch-1")
    h.add_str("package", spec)
    return h.hexdigest()


def checkpatch_digest() -> str:
    """The hash naming the checkpatch output of the current apt lists (nothing is built)."""
    return _checkpatch_package()[1]


def _run(argv: list[str | Path], cwd: Path | None = None) -> tuple[int, str]:
    r = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True, check=False)
    return r.returncode, r.stdout + r.stderr


def checkpatch_findings(log: Log | None = None) -> list[str]:
    """``checkpatch.pl --strict`` over the driver sources and its uapi header: every
    ERROR/WARNING/CHECK line (empty when clean)."""
    script = ensure_checkpatch(log)
    kmod = repo_root() / "guest-kmod"
    srcs: list[str | Path] = sorted(p.relative_to(kmod).as_posix() for p in kmod.glob("*.[ch]"))
    srcs.append("include/uapi/linux/irqlab.h")  # relative: the uapi rules apply
    rc, out = _run(
        [
            "perl",
            script,
            "--no-tree",
            "--strict",
            "--show-types",
            "--terse",
            "--ignore",
            ",".join(CHECKPATCH_IGNORE),
            "-f",
            *srcs,
        ],
        cwd=kmod,
    )
    found = [ln for ln in out.splitlines() if re.search(r": (ERROR|WARNING|CHECK):", ln)]
    if rc != 0 and not found:
        raise RuntimeError(f"checkpatch.pl failed (exit {rc}):\n{out}")
    return found


def sparse_findings(kernel: KernelArtifacts | None = None, log: Log | None = None) -> list[str]:
    """Warnings and errors of ``make C=2`` (every file through sparse) against the guest
    kernel's headers, in a scratch copy of the sources."""
    if shutil.which("sparse") is None:
        raise ToolMissing("sparse is not installed: apt-get install sparse")
    k = kernel if kernel is not None else ensure_kernel(log)
    with tempfile.TemporaryDirectory(prefix="irqlab-sparse-") as tmp:
        for rel, src in source_files().items():
            dst = Path(tmp) / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
        moddir = Path(tmp) / "guest-kmod"
        rc, out = _run(["make", "-C", k.headers_build_dir, f"M={moddir}", "C=2", "modules"])
    found = [ln for ln in out.splitlines() if re.search(r"\b(warning|error):", ln)]
    if rc != 0 and not found:
        raise RuntimeError(f"make C=2 failed (exit {rc}):\n{out[-3000:]}")
    return found
