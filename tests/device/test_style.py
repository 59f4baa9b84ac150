"""The device model passes QEMU's own checkpatch.pl (from the source tree the recipe built)."""

from __future__ import annotations

import subprocess

from irqlab.build.qemu import QemuInstall, device_dir, work_dir


def test_device_passes_qemu_checkpatch(irqlab_qemu: QemuInstall) -> None:
    scripts = sorted(work_dir().glob("src-*/scripts/checkpatch.pl"))
    assert scripts, f"no QEMU source tree with scripts/checkpatch.pl under {work_dir()}"
    for path in (device_dir() / "irqlab.c", device_dir() / "irqlab-regs.h"):
        r = subprocess.run(
            [str(scripts[-1]), "--no-tree", "-f", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert r.returncode == 0 and "has no obvious style problems" in r.stdout, (
            f"checkpatch.pl {path.name}:\n{r.stdout}{r.stderr}"
        )
