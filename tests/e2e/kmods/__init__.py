"""Test-only kernel modules (one directory each), built like the driver: against the
guest kernel's headers, in a scratch copy of the bytes the key hashed (read once), cached
by the hash of their sources (the register header ``irqlab-regs.h`` among them), the
kernel (ABI name and package version) and the compiler's version, warnings fail the
build.  A test copies the ``.ko`` into its guest and loads it with ``insmod``."""

from __future__ import annotations

import shutil
from pathlib import Path

from irqlab.build.cache import InputHash, Sources, cached_build
from irqlab.build.kernel import ensure_kernel
from irqlab.build.kmod import (
    compiler_version,
    ensure_module_build_tools,
    kcflags,
    kernel_inputs,
    warnings_in,
)
from irqlab.build.outputs import TEST_MODULE_PREFIX
from irqlab.build.steps import StepLog
from irqlab.contract.regs import header_path
from irqlab.paths import log_dir

HERE = Path(__file__).resolve().parent
REGS_HEADER = "irqlab-regs.h"


def kmod_digest(kernel: str, cc: str | None, sources: Sources) -> str:
    """The key of a test module: *kernel* (:func:`~irqlab.build.kmod.kernel_inputs`), the
    compiler's version line *cc* and the *sources* read."""
    h = InputHash("test-kmod-2")
    h.add_str("kernel", kernel)
    h.add_str("cc", cc if cc is not None else "not installed")
    sources.add_to(h)
    return h.hexdigest()


def build_test_kmod(name: str) -> Path:
    """Path of ``<name>.ko`` built from ``tests/e2e/kmods/<name>/`` for the guest kernel."""
    k = ensure_kernel()
    src = HERE / name
    files = sorted(p for p in src.iterdir() if p.is_file() and p.suffix in ("", ".c", ".h"))
    # the register header beside them: a module of the irqlab device takes its ids from it
    found = {p.name: p for p in files} | {REGS_HEADER: header_path()}
    sources = Sources.read(found)  # built from these bytes, the key's
    cc = compiler_version(k)
    if cc is None:  # the compiler names the module: installed first to be hashed
        ensure_module_build_tools()
        cc = compiler_version(k)
    digest = kmod_digest(kernel_inputs(k), cc, sources)

    def build(out: Path) -> None:
        ensure_module_build_tools()  # a restored cache brings no make or gcc
        with StepLog(log_dir() / "build" / f"{TEST_MODULE_PREFIX}{name}-{digest}.log") as steps:
            scratch = out / "src"
            scratch.mkdir()
            sources.write_to(scratch)
            result = steps.run(
                f"make {name}",
                [
                    "make",
                    "-C",
                    k.headers_build_dir,
                    f"M={scratch}",
                    "modules",
                    kcflags(scratch, k.root),
                ],
            )
            found = warnings_in(result)
            if found:
                raise RuntimeError(f"{name} builds with warnings:\n" + "\n".join(found))
            shutil.copy2(scratch / f"{name}.ko", out / f"{name}.ko")
            shutil.rmtree(scratch)

    return cached_build(f"{TEST_MODULE_PREFIX}{name}", digest, build) / f"{name}.ko"
