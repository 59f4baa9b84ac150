"""``irqlab probe-accel --qemu`` with each guest architecture's built QEMU: the host's
own is probed; another's says that KVM runs the host's architecture only (it said
QEMU's "unsupported machine type", the probe's x86 machine refused)."""

from __future__ import annotations

import platform

import pytest
from cli import irqlab  # same directory

from irqlab.build.archguest import arch_qemu, present_arches


@pytest.mark.parametrize("arch", [a.name for a in present_arches()])
def test_probe_accel_of_each_arch_qemu(arch: str) -> None:
    from irqlab.build.arch import by_name

    qemu = arch_qemu(by_name(arch)).binary
    host = platform.machine()
    # --fresh: probed now (a verdict kept from before the fix said QEMU's refusal)
    r = irqlab("probe-accel", "--qemu", str(qemu), "--fresh", timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout in ("kvm\n", "tcg\n"), r.stdout
    if arch == host:
        assert "emulates" not in r.stderr, r.stderr
    else:
        assert (r.stdout, r.stderr) == (
            "tcg\n",
            f"tcg: {qemu.name} emulates {arch} and this host is {host}: KVM runs guests of "
            f"the host's own architecture only, so {arch} guests run under TCG here\n",
        )
        assert "unsupported machine type" not in r.stderr
