"""``--irqlab-arch aarch64``: a user's pytest session whose guests are aarch64, the
header saying so (collected only when the aarch64 QEMU is built)."""

from __future__ import annotations

import pytest

from irqlab.paths import cache_dir

pytest_plugins = ["pytester"]
CACHE = cache_dir()  # at import: the pytester fixture moves $HOME

USER_TESTS = """
def test_the_shared_guest_is_aarch64(irqlab_guest, irqlab_agent, irqlab_device):
    assert irqlab_guest.sh("uname -m").strip() == "aarch64"
    irqlab_agent.arm("read")
    seq = irqlab_device.next_seq()
    irqlab_device.push(7)
    assert irqlab_agent.expect(path="read", seq=seq, timeout=60)["value"] == 7
"""


def test_irqlab_arch_option_runs_the_session_on_aarch64(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IRQLAB_CACHE_DIR", str(CACHE))
    monkeypatch.setenv("IRQLAB_LOG_DIR", str(pytester.path / "logs"))
    monkeypatch.delenv("IRQLAB_ARCH", raising=False)
    pytester.makepyfile(USER_TESTS)
    r = pytester.runpytest_subprocess("--irqlab-arch", "arm64", "-p", "no:cacheprovider")
    r.assert_outcomes(passed=1)
    header = r.stdout.str().split("collected", 1)[0]
    assert "irqlab: arch aarch64" in header and "-arm64" in header, header
    assert "accel tcg: an aarch64 guest" in header, header


def test_irqlab_run_arch_runs_the_command_on_aarch64(monkeypatch: pytest.MonkeyPatch) -> None:
    from cli import irqlab  # same directory (rootdir-relative import)

    monkeypatch.delenv("IRQLAB_ARCH", raising=False)
    r = irqlab("run", "--arch", "aarch64", "-n", "--", "uname", "-m", timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "aarch64", (r.stdout, r.stderr)
