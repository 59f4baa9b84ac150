"""The command a refused module's error (and ``irqlab kdir``) tells a user to run, run
by a real shell with ``irqlab`` and ``make`` faked on PATH (the boundary): when kdir
fails, make must not run at all.

``make $(irqlab kdir --arch aarch64 --make-args) M=$PWD modules``, which every refusal
of an x86_64 module for the aarch64 guest said, ran make without ``-C`` when kdir failed
(apt without arm64 packages, not root): in the module's directory, where it built for
the host or said "No rule to make target 'modules'", against what the README says.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

from irqlab.build.arch import AARCH64, build_module_command

HEADERS = "/cache/kernel/usr/src/linux-headers-6.1.0-57-arm64"


def _script(path: Path, body: str) -> None:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def _run_hint(tmp_path: Path, kdir_rc: int) -> tuple[subprocess.CompletedProcess[str], Path]:
    """The hint run by ``sh -c`` in a module directory, ``irqlab kdir`` exiting
    *kdir_rc*; (the shell's result, the file where the fake make wrote its arguments)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    made = tmp_path / "make-args"
    _script(
        bin_dir / "irqlab",
        f"echo '-C {HEADERS} ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu-'\nexit {kdir_rc}"
        if kdir_rc == 0
        else f"echo 'irqlab: apt does not know arm64' >&2\nexit {kdir_rc}",
    )
    _script(bin_dir / "make", f'echo "$@" > {made}')
    moddir = tmp_path / "mymod"
    moddir.mkdir()
    r = subprocess.run(
        ["/bin/sh", "-c", build_module_command(AARCH64.name)],
        cwd=moddir,
        env={**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin", "PWD": str(moddir)},
        capture_output=True,
        text=True,
        check=False,
    )
    return r, made


def test_a_failing_kdir_runs_no_make(tmp_path: Path) -> None:
    r, made = _run_hint(tmp_path, kdir_rc=1)
    assert r.returncode != 0, r
    assert not made.exists(), f"make ran without kdir's -C: {made.read_text()!r}"
    assert "apt does not know arm64" in r.stderr, r.stderr


def test_kdir_s_arguments_reach_make(tmp_path: Path) -> None:
    r, made = _run_hint(tmp_path, kdir_rc=0)
    assert r.returncode == 0, r
    args = made.read_text().split()
    assert args == [
        "-C",
        HEADERS,
        "ARCH=arm64",
        "CROSS_COMPILE=aarch64-linux-gnu-",
        f"M={tmp_path / 'mymod'}",
        "modules",
    ], args
