"""docs/examples/test_own_driver.py, the example test for another project's driver, run
as that project's CI runs it (docs/examples/own-project-ci.yml): the project's PCI
driver (tests/e2e/mydrv/, for irqlab's device) built at its root against ``irqlab
kdir``, the example copied to its tests/, pytest run there as a plain user's run. It
passes: the marker found ../mydrv.ko, irqlab's driver stayed out, and the project's
driver has the device."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from cli import IRQLAB  # same directory (rootdir-relative import)

from irqlab.contract.regs import REGS
from irqlab.paths import cache_dir, repo_root
from irqlab.testing.parallel import WORKER_ENV

HERE = Path(__file__).resolve().parent
EXAMPLE = repo_root() / "docs" / "examples" / "test_own_driver.py"


def test_the_example_passes_against_a_driver_of_the_projects_own(tmp_path: Path) -> None:
    source = (HERE / "mydrv" / "mydrv.c").read_text()
    ids = f"PCI_DEVICE({REGS.PCI_VENDOR_ID:#06x}, {REGS.PCI_DEVICE_ID:#06x})"
    assert ids in source, "mydrv.c binds irqlab's device"
    project = tmp_path / "project"
    shutil.copytree(HERE / "mydrv", project, ignore=shutil.ignore_patterns("*.ko", "*.o"))
    (project / "tests").mkdir()
    shutil.copy(EXAMPLE, project / "tests" / "test_own_driver.py")
    kdir = subprocess.run([*IRQLAB, "kdir"], check=True, capture_output=True, text=True)
    make = ["make", "-C", kdir.stdout.strip(), f"M={project}", "modules"]
    r = subprocess.run(make, capture_output=True, text=True, check=False)
    assert r.returncode == 0, f"building mydrv failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    # a plain user's run (not an xdist worker's), logging into its own directory, with
    # this run's build cache
    env = {k: v for k, v in os.environ.items() if k not in WORKER_ENV}
    env |= {"IRQLAB_CACHE_DIR": str(cache_dir()), "IRQLAB_LOG_DIR": str(tmp_path / "logs")}
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "tests", "-p", "no:cacheprovider", "-rA"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert re.search(r"\b1 passed\b", r.stdout) and r.returncode == 0, (
        r.stdout[-4000:] + r.stderr[-2000:]
    )
