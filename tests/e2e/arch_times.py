"""Boot and restore times per guest architecture, measured by
``test_arch_paths.py::test_boot_and_restore_times`` and printed by the e2e conftest's
terminal summary (one run, so the figures compare)."""

from __future__ import annotations

import pytest

ARCH_TIMES = pytest.StashKey[dict[str, dict[str, float]]]()


def summary_lines(times: dict[str, dict[str, float]]) -> list[str]:
    """One line per architecture, plus the ratio of each to x86_64 when both ran."""
    lines = []
    base = times.get("x86_64", {})
    for arch, t in sorted(times.items()):
        parts = [f"{k} {v:.2f} s" for k, v in sorted(t.items())]
        if arch != "x86_64" and base:
            parts += [f"{k} {v / base[k]:.2f}x x86_64" for k, v in sorted(t.items()) if base.get(k)]
        lines.append(f"{arch}: " + ", ".join(parts))
    return lines
