"""irqlab tasks: `invoke --list` shows them, `invoke test-all` is the front door."""

from __future__ import annotations

import os
import sys

from invoke import Context, task

from irqlab.tasks_bench import bench  # noqa: F401
from irqlab.tasks_buildroot import buildroot_build, buildroot_check  # noqa: F401

PYTEST = f"{sys.executable} -m pytest"


def _pytest(c: Context, args: str) -> None:
    c.run(f"{PYTEST} {args}", pty=False, echo=True)


@task(help={"force": "rebuild even if the cache has a build for the current inputs"})
def build_qemu(c: Context, force: bool = False) -> None:
    """Build QEMU with the irqlab device (cached by input hash)."""
    from irqlab.build.qemu import ensure_qemu

    inst = ensure_qemu(force=force)
    print(f"QEMU {inst.version}: {inst.binary}")


@task(help={"force": "rebuild even if the cache has an image for the current inputs"})
def build_image(c: Context, force: bool = False) -> None:
    """Build the guest kernel, module and initramfs from Debian packages (cached)."""
    from irqlab.cli import main

    rc = main(["build-image", *(["--force"] if force else [])])
    if rc:
        raise SystemExit(rc)


@task
def build(c: Context) -> None:
    """Build everything the tests need: QEMU and the guest image."""
    build_qemu(c)
    build_image(c)


@task
def lint(c: Context) -> None:
    """ruff (lint, format check) and mypy over the Python code."""
    c.run("ruff check harness tests tasks.py", echo=True)
    c.run("ruff format --check harness tests tasks.py", echo=True)
    c.run("mypy", echo=True)


@task(help={"k": "only tests matching this pytest -k expression"})
def test_unit(c: Context, k: str = "") -> None:
    """Unit tests: no QEMU, no guest (seconds)."""
    _pytest(c, "tests/unit" + (f" -k '{k}'" if k else ""))


@task(help={"k": "only tests matching this pytest -k expression"})
def test_device(c: Context, k: str = "") -> None:
    """Device tests: the real built QEMU under the qtest accelerator, no guest."""
    _pytest(c, "tests/device" + (f" -k '{k}'" if k else ""))


@task(help={"k": "only tests matching this pytest -k expression"})
def test_e2e(c: Context, k: str = "") -> None:
    """End-to-end tests in a booted guest."""
    _pytest(c, "tests/e2e" + (f" -k '{k}'" if k else ""))


@task(
    help={
        "k": "only tests matching this pytest -k expression",
        "junit": "also write a JUnit XML report to this path",
    }
)
def test_all(c: Context, k: str = "", junit: str = "") -> None:
    """Build what is missing, then run every test (lint, unit, device, end-to-end)."""
    build(c)
    args = "tests"
    if k:
        args += f" -k '{k}'"
    if junit:
        args += f" --junitxml={junit}"
    if os.environ.get("CI"):
        args += " -p no:cacheprovider"
    _pytest(c, args)


@task
def probe_accel(c: Context) -> None:
    """Say which accelerator (kvm or tcg) guests will use here, and why."""
    from irqlab.cli import main

    rc = main(["probe-accel"])
    if rc:
        raise SystemExit(rc)


@task
def clean(c: Context) -> None:
    """Remove this checkout's logs (the build cache stays: `irqlab cache --prune 1`)."""
    c.run("rm -rf build/logs", echo=True)
