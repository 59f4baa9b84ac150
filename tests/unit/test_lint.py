"""The Python code is ruff (lint, format) and mypy clean (tests, so they count and can fail)."""

from __future__ import annotations

import subprocess
import sys

from irqlab.paths import repo_root


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=repo_root(), capture_output=True, text=True, check=False
    )


def test_ruff_clean() -> None:
    r = _run("ruff", "check", "harness", "tests", "tasks.py", "docs/examples")
    assert r.returncode == 0, r.stdout + r.stderr


def test_ruff_format_clean() -> None:
    r = _run("ruff", "format", "--check", "harness", "tests", "tasks.py", "docs/examples")
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_clean() -> None:
    r = _run("mypy")
    assert r.returncode == 0, r.stdout + r.stderr
