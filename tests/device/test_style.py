"""The device model passes QEMU's own checkpatch.pl (from the source tree the recipe built)."""

from __future__ import annotations

import subprocess

from irqlab.build.qemu import QemuInstall, current_source_dir, device_dir


def test_device_passes_qemu_checkpatch(irqlab_qemu: QemuInstall) -> None:
    # the tree of the current build: the cache may hold others (an upstream release's)
    script = current_source_dir() / "scripts" / "checkpatch.pl"
    assert script.is_file(), f"the QEMU source tree of this build has no {script}"
    for path in (device_dir() / "irqlab.c", device_dir() / "irqlab-regs.h"):
        r = subprocess.run(
            [str(script), "--no-tree", "-f", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert r.returncode == 0 and "has no obvious style problems" in r.stdout, (
            f"checkpatch.pl {path.name}:\n{r.stdout}{r.stderr}"
        )
