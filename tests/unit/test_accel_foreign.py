"""A QEMU of another architecture than the host's: KVM cannot run its guests, and
``irqlab probe-accel`` says so (it said QEMU's "unsupported machine type", the probe's
x86 machine refused by qemu-system-aarch64)."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest

from irqlab.cli.main import main
from irqlab.vm import accel
from irqlab.vm.accel import ProbeResult

# what the real probe of qemu-system-aarch64 said on an x86_64 host
REFUSED = ProbeResult(
    False,
    "QEMU -accel kvm exited with status 1 at startup: qemu-system-aarch64: "
    "unsupported machine type Use -machine help to list supported machines",
)


@pytest.fixture
def probes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[Path]:
    """The probe guest's runs (each answers as the real aarch64 QEMU did), on an
    x86_64 host whose /dev/kvm works."""
    monkeypatch.setenv("IRQLAB_CACHE_DIR", str(tmp_path / "cache"))
    # set, so that they are restored afterwards: --accel sets them
    monkeypatch.setenv(accel.ENV_VAR, "auto")
    monkeypatch.setenv(accel.SOURCE_ENV, "")
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(accel, "_kvm_usable", lambda: None)
    monkeypatch.setattr(accel, "_cache", {})
    runs: list[Path] = []

    def probe_guest(binary: Path, how: str, *, datadir: object, timeout: float) -> ProbeResult:
        runs.append(binary)
        return REFUSED if binary.name.endswith("aarch64") else ProbeResult(True, "long mode")

    monkeypatch.setattr(accel, "run_probe_guest", probe_guest)
    return runs


def _fake_qemu(tmp_path: Path, target: str) -> Path:
    qemu = tmp_path / f"qemu-system-{target}"
    qemu.write_text("#!/bin/sh\necho 'QEMU emulator version 7.2.0'\n")
    qemu.chmod(0o755)
    return qemu


def test_probe_accel_says_kvm_runs_the_hosts_architecture_only(
    tmp_path: Path, probes: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    qemu = _fake_qemu(tmp_path, "aarch64")
    assert main(["probe-accel", "--qemu", str(qemu)]) == 0
    out, err = capsys.readouterr()
    assert out == "tcg\n"
    assert err == (
        "tcg: qemu-system-aarch64 emulates aarch64 and this host is x86_64: KVM runs "
        "guests of the host's own architecture only, so aarch64 guests run under TCG here\n"
    )
    assert probes == []  # nothing to probe: QEMU's refusal said only its own words


@pytest.mark.parametrize(
    ("argv", "env", "by"),
    [
        (["--accel", "kvm"], None, "--accel kvm"),
        ([], "kvm", "$IRQLAB_ACCEL=kvm"),
    ],
)
def test_a_kvm_forced_for_a_foreign_qemu_is_said_unused(
    tmp_path: Path,
    probes: list[Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    env: str | None,
    by: str,
) -> None:
    """As a Guest of another architecture does: TCG, and the KVM asked for unused
    (printed kvm, whose QEMU then refused to start)."""
    if env is not None:
        monkeypatch.setenv(accel.ENV_VAR, env)
    qemu = _fake_qemu(tmp_path, "aarch64")
    assert main(["probe-accel", "--qemu", str(qemu), *argv]) == 0
    out, err = capsys.readouterr()
    assert out == "tcg\n"
    assert "emulates aarch64 and this host is x86_64" in err, err
    assert err.rstrip().endswith(f"; the KVM forced by {by} is not used"), err


def test_the_hosts_own_architecture_is_probed(
    tmp_path: Path, probes: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    qemu = _fake_qemu(tmp_path, "x86_64")
    assert main(["probe-accel", "--qemu", str(qemu)]) == 0
    assert capsys.readouterr().out == "kvm\n"
    assert probes == [qemu]


@pytest.mark.parametrize(
    ("name", "host", "foreign"),
    [
        ("qemu-system-aarch64", "x86_64", True),
        ("qemu-system-x86_64", "aarch64", True),
        ("qemu-system-x86_64", "x86_64", False),
        ("qemu-system-i386", "x86_64", False),  # x86_64 CPUs run 32-bit guests under KVM
        ("qemu-system-arm", "aarch64", False),
        ("qemu-system-riscv64", "riscv64", False),
        ("qemu-kvm", "x86_64", False),  # its name says no target: the probe tells
    ],
)
def test_foreign_target(name: str, host: str, foreign: bool) -> None:
    said = accel.foreign_target(Path("/opt/bin") / name, host)
    assert (said is not None) == foreign, said
    if said is not None:
        assert name.removeprefix("qemu-system-") in said and host in said
