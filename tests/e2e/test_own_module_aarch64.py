"""Bring your own module to the aarch64 guest (collected only with the aarch64 QEMU).

A developer's module cross-built for arm64 the way the README says (``A=$(irqlab
kdir --arch aarch64 --make-args) && make $A M=... modules``: the arm64 headers,
``ARCH=arm64``, Debian's cross compiler) is loaded beside our driver; an x86_64 module, given as an
extra module or as ``$IRQLAB_KMOD``, is refused before anything boots with what to
run instead; ``$IRQLAB_KMOD`` naming an arm64 build of our driver is the guest's driver.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from cli import IRQLAB  # same directory (rootdir-relative import)

from irqlab.build import archguest
from irqlab.build.arch import AARCH64
from irqlab.testing.plugin import start_guest
from irqlab.vm.guest import Guest, GuestConfig, PrerequisiteMissing, find_kmod

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def mymod_arm64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/e2e/mymod cross-built for the aarch64 guest, as the README says."""
    src = tmp_path_factory.mktemp("mymod-arm64")
    shutil.copytree(HERE / "mymod", src, dirs_exist_ok=True)
    kdir = [*IRQLAB, "kdir", "--arch", "aarch64", "--make-args"]
    args = subprocess.run(kdir, check=True, capture_output=True, text=True).stdout.split()
    assert "ARCH=arm64" in args and "CROSS_COMPILE=aarch64-linux-gnu-" in args, args
    # reproducible, as in test_own_module.py: a warm run restores this configuration
    make = ["make", *args, f"M={src}", f"KCFLAGS=-fdebug-prefix-map={src}=mymod", "modules"]
    r = subprocess.run(make, capture_output=True, text=True)
    assert r.returncode == 0, f"building mymod failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    return src / "mymod.ko"


def _modules(g: Guest) -> set[str]:
    return {line.split()[0] for line in g.sh("cat /proc/modules").splitlines()}


def test_own_module_cross_built_beside_ours(mymod_arm64: Path) -> None:
    config = GuestConfig(
        name="own-mod-arm64",
        arch="aarch64",
        extra_modules=[mymod_arm64],
        snapshot_tag="test_own_module_aarch64",
    )
    g = start_guest(config)
    try:
        assert g.sh("uname -m").strip() == "aarch64"
        assert "mymod: hello" in g.sh("dmesg")
        assert {"mymod", "irqlab"} <= _modules(g)
        g.sh(f"test -c {g.dev}")  # ours still drives the device
    finally:
        g.close()


def test_x86_64_module_is_refused_before_boot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IRQLAB_KMOD", raising=False)
    x86_ko = find_kmod()  # our driver, built for the x86_64 guest
    g = Guest(GuestConfig(arch="aarch64", extra_modules=[x86_ko]))
    with pytest.raises(PrerequisiteMissing) as e:
        g.find_prerequisites()
    msg = str(e.value)
    assert "is built for x86_64, but the guest is aarch64" in msg, msg
    assert "A=$(irqlab kdir --arch aarch64 --make-args) && make $A M=$PWD modules" in msg, msg
    monkeypatch.setenv("IRQLAB_KMOD", str(x86_ko))
    with pytest.raises(PrerequisiteMissing, match=r"\$IRQLAB_KMOD .* is built for x86_64"):
        Guest(GuestConfig(arch="aarch64")).find_prerequisites()


def test_irqlab_kmod_arm64_build_of_our_driver(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _qemu, _image, ko = archguest.prerequisites(AARCH64)
    mine = tmp_path / "irqlab.ko"  # "a modified build": a copy outside the cache
    shutil.copy(ko, mine)
    monkeypatch.setenv("IRQLAB_KMOD", str(mine))
    g = Guest(GuestConfig(name="kmod-arm64", arch="aarch64"))
    assert g.find_prerequisites()[2] == mine
    g = start_guest(GuestConfig(name="kmod-arm64", arch="aarch64"))
    try:
        assert "irqlab" in _modules(g)
        g.sh(f"test -c {g.dev}")
    finally:
        g.close()
