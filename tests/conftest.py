"""The whole suite: the session header names the guest architectures the end-to-end
tests run on (here, not in tests/e2e/conftest.py: pytest prints the header before it
loads the conftest files below the directories it was given)."""

from __future__ import annotations

import pytest


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Which guest architectures test_arch_paths.py runs on, and why any is left out
    (not collected, so never counted as a pass or a skip)."""
    from irqlab.build.arch import ARCHES_ENV
    from irqlab.build.archguest import absent_arches, present_arches

    lines = ["irqlab guest architectures: " + ", ".join(a.name for a in present_arches())]
    for a in absent_arches():
        lines.append(
            f"irqlab: {a.name} NOT TESTED: {a.qemu_binary} is not built "
            f"(build it with {ARCHES_ENV}=x86_64,{a.name} invoke build-qemu)"
        )
    return lines
