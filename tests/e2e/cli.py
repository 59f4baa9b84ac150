"""The ``irqlab`` command as a user runs it, for the end-to-end tests."""

from __future__ import annotations

import subprocess
import sys

IRQLAB = [sys.executable, "-m", "irqlab.cli.main"]


def irqlab(*args: str, timeout: float = 120, **kw: object) -> subprocess.CompletedProcess[str]:
    """The CLI as a process; its stdin is empty unless the test gives one (`irqlab run`
    forwards stdin: pytest's terminal is not the test's input)."""
    if "input" not in kw:
        kw.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.run(
        [*IRQLAB, *args], capture_output=True, text=True, timeout=timeout, check=False, **kw
    )  # type: ignore[call-overload,no-any-return]
