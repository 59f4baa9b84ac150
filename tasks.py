"""irqlab tasks: `invoke --list` shows them, `invoke test-all` is the front door."""

from __future__ import annotations

import os
import sys

from invoke import Context, task

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
    from irqlab.cli.main import main

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
    from irqlab.cli.main import main

    rc = main(["probe-accel"])
    if rc:
        raise SystemExit(rc)


@task
def clean(c: Context) -> None:
    """Remove this checkout's logs (the build cache stays: `irqlab cache --prune 1`)."""
    c.run("rm -rf build/logs", echo=True)


# ``invoke bench``                      full run (10,000 events per path and placement, 10 s storms)
# ``invoke bench --quick``              minutes: small counts, 0.2 s storms
# ``invoke bench --compare OLD.json``   also print what got slower beyond noise (exit 1 if any)
# ``invoke bench --runs 3``             three fresh boots: the spread of every figure
# ``invoke bench --test-all``           also time a warm ``invoke test-all`` (long)
@task(
    auto_shortflags=False,
    help={
        "quick": "small counts (a few minutes) instead of the full run",
        "compare": "an older result.json: print figures worse beyond noise, exit 1 if any",
        "runs": "fresh boots that each measure everything (spread across runs); default 1",
        "wakeup_runs": "thread/workqueue placements in the first N runs only (default: all)",
        "events": "latency events per path and wakeup placement (full: 10000)",
        "paths": "comma list of agent paths (default: every path the agent implements)",
        "placements": "comma list of wakeup placements (default hardirq,thread,workqueue)",
        "storm_rates": "comma list of events/s (default 1000,10000,50000,100000)",
        "storm_seconds": "storm length per rate (full: 10)",
        "boots": "boots of the standard image for boot -> agent ready (full: 5)",
        "skip": "comma list of stages to skip: latency,wakeup,storm,injection,boot,cyclictest",
        "test_all": "also time `invoke test-all` (run it once before so the caches are warm)",
        "out": "output directory (default build/bench/<stamp>)",
        "report": "only re-render this result.json (no measurement)",
        "noise_floor": "compare: minimum relative threshold (default 0.10)",
    },
)
def bench(
    c: Context,
    quick: bool = False,
    compare: str = "",
    runs: int = 0,
    wakeup_runs: int = 0,
    events: int = 0,
    paths: str = "",
    placements: str = "",
    storm_rates: str = "",
    storm_seconds: str = "",
    boots: int = -1,
    skip: str = "",
    test_all: bool = False,
    out: str = "",
    report: str = "",
    noise_floor: str = "0.10",
) -> None:
    """Measure latency per path, storms, QMP and boot speed; JSON + text/HTML/PNG report."""
    from irqlab.bench.cli import main

    argv = ["bench", "--noise-floor", noise_floor]
    flags = {"--quick": quick, "--test-all": test_all}
    argv += [f for f, on in flags.items() if on]
    opts: dict[str, object] = {
        "--compare": compare,
        "--runs": runs,
        "--wakeup-runs": wakeup_runs,
        "--events": events,
        "--paths": paths,
        "--placements": placements,
        "--storm-rates": storm_rates,
        "--storm-seconds": storm_seconds,
        "--skip": skip,
        "--out": out,
        "--report": report,
    }
    for k, v in opts.items():
        if v:
            argv += [k, str(v)]
    if boots >= 0:
        argv += ["--boots", str(boots)]
    rc = main(argv)
    if rc:
        raise SystemExit(rc)


# Buildroot guest:
# ``invoke buildroot-build``  download the pinned Buildroot, build the image (30-60 min cold)
# ``invoke buildroot-check``  offline checks of buildroot/ against a Buildroot source tree
@task(
    help={
        "force": "rebuild even if the cache has an image for the current inputs",
        "clean": "remove Buildroot's output directory first (a cold build)",
        "jobs": "BR2_JLEVEL (default: Buildroot's, CPUs + 1)",
        "verbose": "show all of Buildroot's output, not only its '>>>' step lines",
    }
)
def buildroot_build(
    c: Context, force: bool = False, clean: bool = False, jobs: int = 0, verbose: bool = False
) -> None:
    """Build the Buildroot guest image (downloads Buildroot and its toolchain; 30-60 min cold).

    BR2_DL_DIR and BR2_CCACHE_DIR choose Buildroot's download and ccache directories.
    """
    from irqlab.build.buildroot import ensure_image

    img = ensure_image(force=force, clean=clean, jobs=jobs, verbose=verbose)
    print(f"Buildroot image {img.version}: {img.kernel} + {img.initramfs} ({img.size} bytes)")


@task(
    help={
        "tree": "Buildroot source tree (default: $IRQLAB_BUILDROOT_DIR)",
        "download": "use the pinned release, downloading it if needed (needs internet)",
        "python": "interpreter for check-package (needs the magic and flake8 modules)",
    }
)
def buildroot_check(c: Context, tree: str = "", download: bool = False, python: str = "") -> None:
    """Offline checks of buildroot/: defconfig, check-dotconfig, show-info, check-package."""
    from irqlab.build import buildroot as br
    from irqlab.build import buildroot_checks

    src = br.ensure_source() if download else br.source_tree(tree or None)
    results = buildroot_checks.offline_checks(src, python=python or sys.executable)
    print(buildroot_checks.format_results(results))
    failed = [r.name for r in results if not r.ok]
    if failed:
        sys.exit(
            f"buildroot-check: {len(failed)} of {len(results)} checks failed: {', '.join(failed)}"
        )
    print(f"buildroot-check: all {len(results)} checks passed")
