"""The aarch64 guest's cross compiler installed but not on PATH (a PATH without
/usr/bin): ``irqlab kdir --arch aarch64 --make-args`` printed its arguments and exited
0, then make failed on ``/bin/sh: 1: aarch64-linux-gnu-gcc-12: not found``; the image
build failed the same way inside make.  Now the check that installs the compiler says
that it is not on PATH, and where it is.  dpkg (it says the package is installed) is
the faked boundary; PATH and the lookup on it are real."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from irqlab.build import debs, kmod
from irqlab.build.arch import AARCH64, X86_64
from irqlab.build.kernel import KernelArtifacts
from irqlab.build.steps import BuildError


def _kernel(arch: object) -> KernelArtifacts:
    return cast(KernelArtifacts, SimpleNamespace(arch=arch))


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[list[str]]:
    """dpkg has every package installed; what apt was asked to install is recorded."""
    asked: list[list[str]] = []
    monkeypatch.setattr(debs, "missing_packages", lambda names: [])
    real = debs.ensure_apt_packages

    def ensure(steps: object, names: list[str], step: str = "apt-deps") -> None:
        asked.append(list(names))
        real(steps, names, step)  # type: ignore[arg-type]

    monkeypatch.setattr(debs, "ensure_apt_packages", ensure)
    monkeypatch.setenv("IRQLAB_LOG_DIR", str(tmp_path / "logs"))
    return asked


def test_installed_cross_compiler_off_path_is_named(
    installed: list[list[str]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(BuildError) as e:
        kmod.ensure_cross_compiler(_kernel(AARCH64))
    msg = str(e.value)
    assert "aarch64-linux-gnu-gcc (gcc-aarch64-linux-gnu, installed) is not on PATH" in msg
    assert f"({empty})" in msg, msg
    if Path("/usr/bin/aarch64-linux-gnu-gcc").exists():
        assert "it is /usr/bin/aarch64-linux-gnu-gcc: put /usr/bin on PATH" in msg, msg
    else:
        assert "apt-get install --reinstall gcc-aarch64-linux-gnu" in msg, msg
    assert installed == [["gcc-aarch64-linux-gnu"]]


def test_cross_compiler_on_path_asks_apt_nothing(
    installed: list[list[str]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    gcc = bin_dir / "aarch64-linux-gnu-gcc"
    gcc.write_text("#!/bin/sh\n")
    gcc.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    assert shutil.which("aarch64-linux-gnu-gcc") == str(gcc)
    kmod.ensure_cross_compiler(_kernel(AARCH64))
    kmod.ensure_cross_compiler(_kernel(X86_64))  # the host's own: no cross compiler
    assert installed == []
