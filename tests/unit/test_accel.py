"""Accelerator choice with the probe faked, the probe runner against fake QEMUs, the probe ROM."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import pytest

from irqlab.vm import accel, probe_rom
from irqlab.vm.accel import ProbeResult


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(accel.ENV_VAR, raising=False)
    monkeypatch.setenv("IRQLAB_CACHE_DIR", str(tmp_path / "cache"))
    # never the host's /dev/kvm (a forced kvm asks whether it opens): a test that needs
    # one there says so with its own
    monkeypatch.setattr(accel, "KVM_DEVICE", tmp_path / "no-kvm")
    accel.clear_cache()


class FakeProbe:
    def __init__(self, result: ProbeResult) -> None:
        self.result = result
        self.calls: list[tuple[Path, Path | None, float]] = []

    def __call__(self, binary: Path, datadir: Path | None, timeout: float) -> ProbeResult:
        self.calls.append((binary, datadir, timeout))
        return self.result


def _kvm_usable(monkeypatch: pytest.MonkeyPatch, why_not: str | None = None) -> None:
    monkeypatch.setattr(accel, "_kvm_usable", lambda: why_not)


@pytest.mark.parametrize(("value", "expected"), [("kvm", "kvm"), ("TCG", "tcg"), (" tcg ", "tcg")])
def test_env_override_skips_the_probe(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: str
) -> None:
    monkeypatch.setenv(accel.ENV_VAR, value)
    fake = FakeProbe(ProbeResult(False, "unused"))
    choice = accel.choose(Path("/q"), probe_fn=fake)
    assert choice.accel == expected
    assert not choice.probed and not fake.calls
    assert f"{accel.ENV_VAR}={expected}" in choice.reason
    assert choice.qemu_args() == ["-accel", expected]


def test_argument_beats_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(accel.ENV_VAR, "kvm")
    choice = accel.choose(Path("/q"), accel="tcg", probe_fn=FakeProbe(ProbeResult(True, "x")))
    assert choice.accel == "tcg"
    assert "argument" in choice.reason


@pytest.mark.parametrize("value", ["auto", "", "AUTO"])
def test_auto_probes(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(accel.ENV_VAR, value)
    _kvm_usable(monkeypatch)
    fake = FakeProbe(ProbeResult(True, "booted"))
    choice = accel.choose(Path("/q"), datadir=Path("/fw"), timeout=3.0, probe_fn=fake)
    assert (choice.accel, choice.probed) == ("kvm", True)
    assert fake.calls == [(Path("/q"), Path("/fw"), 3.0)]
    assert "booted" in choice.reason


@pytest.mark.parametrize("source", ["env", "arg"])
def test_invalid_override_is_an_error(monkeypatch: pytest.MonkeyPatch, source: str) -> None:
    if source == "env":
        monkeypatch.setenv(accel.ENV_VAR, "hvf")
        with pytest.raises(ValueError, match=r"\$IRQLAB_ACCEL must be kvm, tcg or auto"):
            accel.choose(Path("/q"))
    else:
        with pytest.raises(ValueError, match="accel argument must be"):
            accel.choose(Path("/q"), accel="xen")


def test_failed_probe_gives_tcg_with_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    _kvm_usable(monkeypatch)
    choice = accel.choose(Path("/q"), probe_fn=FakeProbe(ProbeResult(False, "hung in real mode")))
    assert (choice.accel, choice.probed) == ("tcg", True)
    assert "KVM probe failed: hung in real mode" in choice.reason


def test_no_kvm_device_means_tcg_without_probe(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(accel, "KVM_DEVICE", tmp_path / "kvm")
    fake = FakeProbe(ProbeResult(True, "unused"))
    choice = accel.choose(Path("/q"), probe_fn=fake)
    assert (choice.accel, choice.probed) == ("tcg", False)
    assert "does not exist" in choice.reason
    assert not fake.calls


def test_unopenable_kvm_device(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    d = tmp_path / "kvm"
    d.mkdir()  # opening a directory O_RDWR fails
    monkeypatch.setattr(accel, "KVM_DEVICE", d)
    assert "cannot open" in (accel._kvm_usable() or "")


def test_a_kvm_device_the_user_may_not_open_says_who_may(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A non-root user: "cannot open /dev/kvm: Permission denied" and nothing on what
    to do; and --accel kvm was taken without a word until QEMU refused."""
    import errno
    import os

    d = tmp_path / "kvm"
    d.write_text("")
    d.chmod(0o600)
    monkeypatch.setattr(accel, "KVM_DEVICE", d)

    def denied(path: object, flags: int, *a: object) -> int:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(accel.os, "open", denied)
    why = accel._kvm_usable() or ""
    user = __import__("pwd").getpwuid(os.getuid()).pw_name
    assert why.startswith(f"cannot open {d}: Permission denied (-rw------- {user}:")
    assert "ask for read-write access: the kvm group or an ACL" in why
    forced = accel.choose(tmp_path / "qemu", accel="kvm")
    assert forced.accel == "kvm" and forced.reason.endswith(f", though {why}")


def _probe_finds(monkeypatch: pytest.MonkeyPatch, result: ProbeResult) -> list[Path]:
    """The probe guest's run replaced: it finds *result*; the binaries it ran for."""
    calls: list[Path] = []

    def fake_run(binary: Path, acc: str, *, datadir: Path | None, timeout: float) -> ProbeResult:
        calls.append(binary)
        return result

    monkeypatch.setattr(accel, "run_probe_guest", fake_run)
    return calls


def test_probe_is_cached_per_binary(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls = _probe_finds(monkeypatch, ProbeResult(False, "no"))
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("1")
    b.write_text("2")
    accel.probe(a)
    accel.probe(a)
    accel.probe(b)
    assert calls == [a, b]
    a.write_text("rebuilt binary")  # a new build is probed again
    accel.probe(a)
    assert calls == [a, b, a]


def test_verdict_outlives_the_process_but_not_a_host_reboot(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls = _probe_finds(monkeypatch, ProbeResult(False, "KVM hangs"))
    a = tmp_path / "a"
    a.write_text("1")
    first = accel.probe(a)
    accel._cache.clear()  # as in a new process: only the disk copy is left
    again = accel.probe(a)
    assert calls == [a] and not again.ok and "KVM hangs" in again.reason
    assert "cached verdict" in again.reason and "cached" not in first.reason
    monkeypatch.setattr(accel, "_boot_id", lambda: "another-boot")
    accel._cache.clear()
    accel.probe(a)
    assert calls == [a, a]


def test_the_probe_and_forced_kvm_read_the_same_kept_verdict(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """known_verdict (forced KVM's note) and probe look a verdict up the same way: in
    memory, else on disk (then kept in memory)."""
    calls = _probe_finds(monkeypatch, ProbeResult(False, "KVM hangs"))
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("1")
    b.write_text("2")
    assert accel.known_verdict(a) is None and calls == []  # none reached: not probed
    accel.probe(a)
    accel._cache.clear()  # a new process: the verdict on disk
    kept = accel.known_verdict(a)
    assert kept is not None and "KVM hangs (cached verdict)" in kept.reason
    for f in (tmp_path / "cache" / "accel-probe").glob("*.json"):
        f.unlink()
    assert accel.probe(a) is kept and calls == [a]  # kept in memory by the lookup
    monkeypatch.setattr(accel, "_save_verdict", lambda key, result: None)  # not writable
    found = accel.probe(b)
    assert accel.known_verdict(b) is found and calls == [a, b]  # in memory only


def test_forced_kvm_says_what_the_probe_found_without_probing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """--accel kvm where the probe had found KVM unusable ended in QEMU's assertion and
    nothing else: the reason (a note on a failed start) now says what the probe found."""
    calls = _probe_finds(monkeypatch, ProbeResult(False, "KVM hangs"))
    _kvm_usable(monkeypatch)  # /dev/kvm opens (the probe decides)
    a = tmp_path / "a"
    a.write_text("1")
    forced = accel.choose(a, accel="kvm")
    assert forced.reason == "kvm forced by accel='kvm' argument" and calls == []  # no verdict
    accel.probe(a)
    accel._cache.clear()  # a new process: the verdict on disk
    forced = accel.choose(a, accel="kvm")
    assert forced.accel == "kvm" and not forced.probed and calls == [a]
    assert "though the KVM probe found it does not work here (KVM hangs" in forced.reason
    assert accel.choose(a, accel="tcg").reason == "tcg forced by accel='tcg' argument"


@pytest.mark.parametrize(
    ("env", "source", "said"),
    [
        ("tcg", "", "tcg forced by $IRQLAB_ACCEL=tcg"),
        ("tcg", "--irqlab-accel tcg", "tcg forced by --irqlab-accel tcg"),
        # the variable changed since the option set it: the variable is the cause
        ("kvm", "--irqlab-accel tcg", "kvm forced by $IRQLAB_ACCEL=kvm"),
    ],
)
def test_a_forced_accelerator_names_what_forced_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: str, source: str, said: str
) -> None:
    monkeypatch.setenv(accel.ENV_VAR, env)
    monkeypatch.setenv(accel.SOURCE_ENV, source)
    assert accel.choose(tmp_path / "qemu").reason.startswith(said)


def _fake_qemu(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "fake-qemu"
    script.write_text(f"#!{sys.executable}\nimport sys, time\n{body}\n")
    script.chmod(0o755)
    return script


def test_probe_runner_success(tmp_path: Path) -> None:
    marker = probe_rom.LONG_MODE_MARKER.decode().strip()
    q = _fake_qemu(tmp_path, f"print('R{marker}', flush=True)\ntime.sleep(60)")
    r = accel.run_probe_guest(q, "kvm", timeout=10)
    assert r.ok, r.reason
    assert "-accel kvm ran the long-mode probe guest" in r.reason


def test_probe_runner_stuck_in_real_mode(tmp_path: Path) -> None:
    q = _fake_qemu(tmp_path, "print('R', end='', flush=True)\ntime.sleep(60)")
    r = accel.run_probe_guest(q, "kvm", timeout=0.5)
    assert not r.ok
    assert "ran real-mode code but did not reach long mode within 0.5 s" in r.reason


def test_probe_runner_qemu_refuses(tmp_path: Path) -> None:
    q = _fake_qemu(
        tmp_path,
        "print('qemu: failed to initialize kvm: No such device', file=sys.stderr)\nsys.exit(1)",
    )
    r = accel.run_probe_guest(q, "kvm", timeout=10)
    assert not r.ok
    assert r.reason.startswith("QEMU -accel kvm exited with status 1 at startup")
    assert "failed to initialize kvm" in r.reason


def test_a_qemu_that_cannot_start_leaves_no_verdict(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A cached QEMU in a fresh container lacks a shared library: its probe said tcg, and
    that verdict was kept for the host boot, so once build-qemu had installed the
    library every guest still ran under TCG.  A refusal of KVM itself is kept."""
    monkeypatch.setenv("IRQLAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(accel, "_cache", {})
    q = _fake_qemu(
        tmp_path,
        "print(sys.argv[0] + ': error while loading shared libraries: libslirp.so.0: "
        "cannot open shared object file: No such file or directory', file=sys.stderr)\n"
        "sys.exit(127)",
    )
    r = accel.probe(q)
    assert not r.ok and not r.kept
    assert "error while loading shared libraries: libslirp.so.0" in r.reason
    assert accel.known_verdict(q) is None
    q.write_text(
        f"#!{sys.executable}\nimport sys\n"
        "print('qemu: failed to initialize kvm: No such device', file=sys.stderr)\n"
        "sys.exit(1)\n"
    )
    accel.probe(q)
    assert accel.known_verdict(q) is not None


def test_probe_argv(tmp_path: Path) -> None:
    argv = accel.probe_argv(Path("/q"), tmp_path / "rom", "kvm", Path("/fw"))
    assert argv[:3] == ["/q", "-L", "/fw"]
    assert argv[argv.index("-accel") : argv.index("-accel") + 2] == ["-accel", "kvm"]
    assert argv[argv.index("-bios") + 1] == str(tmp_path / "rom")


def test_probe_rom_layout() -> None:
    rom = probe_rom.build()
    assert len(rom) == probe_rom.SIZE == 0x10000
    # Reset vector (F000:FFF0): far jump to F000:0000, where the code starts with cli.
    assert rom[0xFFF0:0xFFF5] == b"\xea\x00\x00\x00\xf0"
    assert rom[0] == 0xFA
    assert probe_rom.LONG_MODE_MARKER + b"\0" in rom
    # The GDTR points into the ROM at a null + 64-bit code + data descriptor table.
    gdtr = rom.index(struct.pack("<H", 23) + struct.pack("<I", probe_rom.BASE + 0x180))
    assert gdtr == 0x198
    null, code, data = struct.unpack_from("<3Q", rom, 0x180)
    assert null == 0 and code >> 53 & 1 == 1 and data >> 47 & 1 == 1
    # The 64-bit far jump lands on the long-mode code; its lea reaches the message.
    jmp = rom.index(b"\x66\xea")
    target, sel = struct.unpack_from("<IH", rom, jmp + 2)
    assert (target - probe_rom.BASE, sel) == (0x100, 0x08)
    lea = rom.index(b"\x48\x8d\x35", 0x100)
    (rel,) = struct.unpack_from("<i", rom, lea + 3)
    assert rom[lea + 7 + rel :].startswith(probe_rom.LONG_MODE_MARKER)


def test_choose_known_says_what_needs_no_probe_and_never_probes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """pytest's header (``--co``, ``--fixtures`` too) says the accelerator without
    starting a probe QEMU: the kept verdict, else None."""
    probed: list[Path] = []

    def run_probe_guest(binary: Path, *_: object, **__: object) -> ProbeResult:
        probed.append(binary)
        return ProbeResult(False, "hung in real mode")

    monkeypatch.setattr(accel, "run_probe_guest", run_probe_guest)
    qemu = tmp_path / "qemu-system-x86_64"
    qemu.write_text("")
    _kvm_usable(monkeypatch)
    assert accel.choose_known(qemu) is None and probed == []
    accel.probe(qemu)  # a guest's choice probes, and keeps the verdict
    accel._cache.clear()  # on disk only: another run's
    choice = accel.choose_known(qemu)
    assert choice is not None and probed == [qemu], probed
    assert choice.reason == "tcg: KVM probe failed: hung in real mode (cached verdict)"
    _kvm_usable(monkeypatch, "/dev/kvm does not exist")
    assert accel.choose_known(tmp_path / "other") == accel.choose(tmp_path / "other")
    monkeypatch.setenv(accel.ENV_VAR, "tcg")
    choice = accel.choose_known(tmp_path / "other")
    assert choice is not None and choice.reason == f"tcg forced by ${accel.ENV_VAR}=tcg"
    assert probed == [qemu]


def test_the_report_header_starts_no_probe(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The header's docstring says it is cheap whatever the state of the cache: with no
    verdict kept it started the KVM probe's QEMU (5 s of ``pytest --co``)."""
    import time

    import fake_cache  # same directory (rootdir-relative import)

    from irqlab.testing.diagnostics import report_header

    for name in ("IRQLAB_ARCH", "IRQLAB_IMAGE"):
        monkeypatch.delenv(name, raising=False)
    built = fake_cache.qemu(tmp_path / "cache", 1, "x86_64", time.time())
    probed: list[Path] = []
    monkeypatch.setattr(accel, "run_probe_guest", lambda b, *_, **__: probed.append(b))
    _kvm_usable(monkeypatch)
    header = report_header()
    assert header.endswith(", accel not probed yet (the first guest probes)"), header
    assert probed == []
    binary = built / "bin" / "qemu-system-x86_64"
    key = accel.verdict_key(binary, built / "share" / "qemu")
    accel._save_verdict(key, ProbeResult(True, "reached long mode"))
    header = report_header()
    assert header.endswith(", accel kvm: reached long mode (cached verdict)"), header
    assert probed == []
