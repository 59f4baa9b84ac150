"""A normal (non-editable) install works outside a checkout: the wheel is built, installed
into a throwaway venv, and a user's tiny pytest file in an empty directory runs against a
guest (the wheel carries the sources the build recipes read; logs go under that
directory's .irqlab/)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from irqlab.paths import checkout_root

USER_TEST = """
def test_fifo_word_reaches_a_blocking_reader(irqlab_agent, irqlab_device):
    irqlab_agent.arm("read")
    seq = irqlab_device.next_seq()
    irqlab_device.push(0xC0FFEE)
    assert irqlab_agent.expect(path="read", seq=seq, timeout=10)["value"] == 0xC0FFEE
"""


def _run(argv: list[str | Path], **kw: object) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, check=False, timeout=600, **kw
    )  # type: ignore[call-overload]
    assert r.returncode == 0, f"{argv}: exit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r  # type: ignore[no-any-return]


def test_wheel_in_a_fresh_venv_runs_a_users_pytest(tmp_path: Path) -> None:
    root = checkout_root()
    if root is None:
        pytest.fail("this test builds the wheel from a checkout")
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp_path / "dist", root])
    (wheel,) = (tmp_path / "dist").glob("irqlab-*.whl")
    venv = tmp_path / "venv"
    # A venv without its own pip (ensurepip took 3 s), filled by this pip: the same
    # resolution and install of the wheel and its dependencies into that venv.
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    _run([sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "-q", wheel])
    user = tmp_path / "user"
    user.mkdir()
    (user / "test_mine.py").write_text(USER_TEST)
    env = {k: v for k, v in os.environ.items() if k != "IRQLAB_LOG_DIR"}
    r = _run(
        [venv / "bin" / "python", "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=user, env=env
    )
    assert "1 passed" in r.stdout
    assert list((user / ".irqlab" / "logs").glob("pytest-*")), "logs under the user's rootdir"
    r = _run([venv / "bin" / "irqlab", "run", "--", "echo", "from-the-wheel"], cwd=user, env=env)
    assert r.stdout == "from-the-wheel\n"
