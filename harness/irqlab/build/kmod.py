"""Build recipe for the irqlab kernel module against the guest kernel's headers.

The sources (``guest-kmod/`` and the register map ``qemu-device/irqlab-regs.h``)
are copied, with their relative layout, into a scratch directory and built
there, so the checkout never collects build products.  The ``.ko`` is cached
by the hash of those sources and the kernel version; a compiler warning fails
the build (the driver is kept warning-free).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from irqlab.build.cache import InputHash, cached_build
from irqlab.build.kernel import KernelArtifacts, ensure_kernel
from irqlab.build.steps import Log, StepLog
from irqlab.paths import log_dir, repo_root

RECIPE_VERSION = "kmod-1"
MODULE = "irqlab.ko"
_BUILD_PRODUCT = re.compile(r"(\.o|\.ko|\.mod|\.mod\.c|\.cmd|Module\.symvers|modules\.order)$")


def source_files() -> dict[str, Path]:
    """Relative path in the scratch tree -> source file in the checkout."""
    root = repo_root()
    files = {"qemu-device/irqlab-regs.h": root / "qemu-device" / "irqlab-regs.h"}
    kmod = root / "guest-kmod"
    for p in sorted(kmod.rglob("*")):
        if p.is_file() and not _BUILD_PRODUCT.search(p.name) and not p.name.startswith("."):
            files[f"guest-kmod/{p.relative_to(kmod)}"] = p
    return files


def input_digest(kernel_version: str, files: dict[str, Path]) -> str:
    h = InputHash(RECIPE_VERSION)
    h.add_str("kernel", kernel_version)
    for rel, path in sorted(files.items()):
        h.add_file(path, label=rel)
    return h.hexdigest()


def warnings_in(output: str) -> list[str]:
    """Compiler/modpost warnings in a Kbuild log."""
    return [line for line in output.splitlines() if re.search(r"\bwarning:", line, re.IGNORECASE)]


def ensure_kmod(
    log: Log | None = None, *, force: bool = False, kernel: KernelArtifacts | None = None
) -> Path:
    """Path of ``irqlab.ko`` built for the guest kernel (cached)."""
    k = kernel if kernel is not None else ensure_kernel(log)
    files = source_files()
    digest = input_digest(k.version, files)

    def build(out: Path) -> None:
        with StepLog(log_dir() / "build" / f"kmod-{digest}.log", log) as steps:
            steps.log(f"kernel module for {k.version}: building")
            scratch = out / "src"
            with steps.step("copy module sources"):
                for rel, src in files.items():
                    dst = scratch / rel
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, dst)
            moddir = scratch / "guest-kmod"
            with steps.step("make modules"):
                result = steps.run(
                    "make modules",
                    ["make", "-C", k.headers_build_dir, f"M={moddir}", "modules"],
                )
                found = warnings_in(result)
                if found:
                    raise RuntimeError("the module builds with warnings:\n" + "\n".join(found))
            shutil.copy2(moddir / MODULE, out / MODULE)
            shutil.rmtree(scratch)

    return cached_build("kmod", digest, build, force=force) / MODULE
