"""The suite's own environment variables (tests/conftest.py) are checked at startup."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from irqlab.paths import repo_root


@pytest.mark.parametrize(
    ("name", "value", "said"),
    [
        ("IRQLAB_RANDOM_SEED", "x", "ERROR: $IRQLAB_RANDOM_SEED='x': expected an integer"),
        ("IRQLAB_RANDOM_STEPS", "-5", "$IRQLAB_RANDOM_STEPS='-5': expected a whole number >= 1"),
        ("IRQLAB_RANDOM_STEPS", "many", "$IRQLAB_RANDOM_STEPS='many': expected a whole number"),
        ("IRQLAB_QEMU_SOURCE", "bogus", "IRQLAB_QEMU_SOURCE='bogus': expected 'debian'"),
    ],
)
def test_a_bad_setting_is_a_usage_error(name: str, value: str, said: str) -> None:
    """A seed 'x' was a traceback while collecting, steps -5 a misleading assertion, a
    bad QEMU source a traceback in tests/e2e/conftest.py."""
    collect = ["--collect-only", "-p", "no:cacheprovider", "tests/device/test_random_sequence.py"]
    collect += ["tests/e2e"] if name == "IRQLAB_QEMU_SOURCE" else []  # its conftest looks
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", *collect],
        cwd=repo_root(),
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, name: value},
    )
    assert r.returncode == pytest.ExitCode.USAGE_ERROR, r.stdout + r.stderr
    assert said in r.stderr and "Traceback" not in r.stderr + r.stdout, r.stderr
