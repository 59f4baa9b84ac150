"""Test-only kernel modules (one directory each), built like the driver: against the
guest kernel's headers, in a scratch copy, cached by the hash of their sources and the
kernel version, warnings fail the build.  A test copies the ``.ko`` into its guest and
loads it with ``insmod``."""

from __future__ import annotations

import shutil
from pathlib import Path

from irqlab.build.cache import InputHash, cached_build
from irqlab.build.kernel import ensure_kernel
from irqlab.build.kmod import ensure_module_build_tools, warnings_in
from irqlab.build.outputs import TEST_MODULE_PREFIX
from irqlab.build.steps import StepLog
from irqlab.paths import log_dir

HERE = Path(__file__).resolve().parent


def build_test_kmod(name: str) -> Path:
    """Path of ``<name>.ko`` built from ``tests/e2e/kmods/<name>/`` for the guest kernel."""
    k = ensure_kernel()
    src = HERE / name
    files = sorted(p for p in src.iterdir() if p.is_file() and p.suffix in ("", ".c", ".h"))
    h = InputHash("test-kmod-1")
    h.add_str("kernel", k.version)
    for p in files:
        h.add_file(p, label=p.name)
    digest = h.hexdigest()

    def build(out: Path) -> None:
        ensure_module_build_tools()  # a restored cache brings no make or gcc
        with StepLog(log_dir() / "build" / f"{TEST_MODULE_PREFIX}{name}-{digest}.log") as steps:
            scratch = out / "src"
            scratch.mkdir()
            for p in files:
                shutil.copy2(p, scratch / p.name)
            result = steps.run(
                f"make {name}", ["make", "-C", k.headers_build_dir, f"M={scratch}", "modules"]
            )
            found = warnings_in(result)
            if found:
                raise RuntimeError(f"{name} builds with warnings:\n" + "\n".join(found))
            shutil.copy2(scratch / f"{name}.ko", out / f"{name}.ko")
            shutil.rmtree(scratch)

    return cached_build(f"{TEST_MODULE_PREFIX}{name}", digest, build) / f"{name}.ko"
