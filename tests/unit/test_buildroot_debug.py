"""The Buildroot image's debug kernel (issue 16, sanitizers): the fragment, how it is
selected (IRQLAB_BUILDROOT_DEBUG=1), and the CI job that builds and tests it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from irqlab.build import buildroot
from irqlab.paths import repo_root

ROOT = repo_root()
BOARD = ROOT / "buildroot" / "board" / "irqlab"
DEBUG_FRAGMENT = ROOT / "buildroot" / buildroot.DEBUG_FRAGMENT
CHECK_SCRIPT = BOARD / "check-kernel-fragment.sh"
WORKFLOW = ROOT / ".github" / "workflows" / "regression.yml"
E2E_WORKFLOW = ROOT / ".github" / "workflows" / "e2e.yml"  # called by WORKFLOW per image

# What the issue asks the debug kernel for.
REQUIRED = (
    "CONFIG_KASAN=y",
    "CONFIG_PROVE_LOCKING=y",
    "CONFIG_DEBUG_ATOMIC_SLEEP=y",
    "CONFIG_DEBUG_OBJECTS=y",
    "CONFIG_DEBUG_OBJECTS_WORK=y",
    "CONFIG_DEBUG_OBJECTS_TIMERS=y",
    "CONFIG_DEBUG_KMEMLEAK=y",
    "CONFIG_DEBUG_FS=y",  # /sys/kernel/debug/kmemleak
)


def _lines() -> list[str]:
    return [ln for ln in DEBUG_FRAGMENT.read_text().splitlines() if ln.startswith("CONFIG_")]


def test_debug_fragment_has_the_sanitizers() -> None:
    lines = _lines()
    for want in REQUIRED:
        assert want in lines, want
    names = [ln.split("=", 1)[0] for ln in lines]
    assert len(names) == len(set(names)), "an option twice"


def test_debug_fragment_passes_the_post_configure_check(tmp_path: Path) -> None:
    """The fragment speaks the syntax check-kernel-fragment.sh checks (which runs on it:
    the hook checks every file in LINUX_KCONFIG_FRAGMENT_FILES); a dropped line fails."""
    cfg = tmp_path / ".config"
    cfg.write_text("\n".join(_lines()) + "\n")
    ok = subprocess.run([CHECK_SCRIPT, cfg, DEBUG_FRAGMENT], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    cfg.write_text("\n".join(ln for ln in _lines() if "KASAN=" not in ln) + "\n")
    bad = subprocess.run([CHECK_SCRIPT, cfg, DEBUG_FRAGMENT], capture_output=True, text=True)
    assert bad.returncode == 1 and "CONFIG_KASAN=y" in bad.stderr


def test_debug_selects_both_fragments(monkeypatch: pytest.MonkeyPatch) -> None:
    plain = buildroot.fragment_files_line(False)
    debug = buildroot.fragment_files_line(True)
    defconfig = (ROOT / "buildroot" / "configs" / buildroot.DEFCONFIG).read_text()
    assert plain in defconfig.splitlines()  # the defconfig's own line, unchanged
    assert debug == plain[:-1] + f' $(BR2_EXTERNAL_IRQLAB_PATH)/{buildroot.DEBUG_FRAGMENT}"'
    monkeypatch.delenv(buildroot.DEBUG_ENV, raising=False)
    assert not buildroot.debug_kernel()
    monkeypatch.setenv(buildroot.DEBUG_ENV, "1")
    assert buildroot.debug_kernel()


def test_debug_image_is_its_own_cache_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = buildroot.ensure_keys()
    monkeypatch.setattr(buildroot, "image_inputs", lambda: [])  # the files are not the point
    monkeypatch.setenv(buildroot.DEBUG_ENV, "0")
    plain = buildroot.input_digest(keys, "key")
    monkeypatch.setenv(buildroot.DEBUG_ENV, "1")
    assert buildroot.input_digest(keys, "key") != plain


def test_ci_builds_and_tests_the_debug_kernel() -> None:
    """The Buildroot job's x86_64 entry builds the debug variant and the e2e suite runs
    on it (whose session ends with the kernel-log scan); the aarch64 entry builds the
    plain kernel (its guest runs under TCG)."""
    text = WORKFLOW.read_text()
    build = text[text.index("\n  buildroot:\n") :].split("\n  e2e-debian:\n", 1)[0]
    assert '- arch: x86_64\n            debug: "1"\n' in build
    assert '- arch: aarch64\n            debug: "0"\n' in build
    assert (
        f"\n    env:\n      {buildroot.DEBUG_ENV}: ${{{{ matrix.debug }}}}\n" in build
    )  # job-wide
    assert "invoke buildroot-build" in build
    call = text[text.index("\n  e2e-buildroot:\n") :].split("\n\n", 1)[0]
    assert "uses: $/.github/workflows/e2e.yml\n    with:\n      image: buildroot" in call
    e2e = E2E_WORKFLOW.read_text()
    e2e = e2e[e2e.index("\n  shard:\n") :]
    assert "\n    env:\n      IRQLAB_IMAGE: ${{ inputs.image }}\n" in e2e  # job-wide
    assert f'      {buildroot.DEBUG_ENV}: "1"\n' in e2e  # the same (debug) image is tested
    assert "pytest tests/e2e" in e2e
