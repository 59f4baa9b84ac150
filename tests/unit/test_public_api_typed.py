"""A script of a driver developer's, typed and checked with ``mypy --strict`` against
the package, as the README's library examples are written: what it uses of the public
API type-checks without casts or asserts, and is imported from where the README says."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from irqlab.vm.agent_client import AgentClient, AgentError


def _mypy_strict(tmp_path: Path, code: str) -> str:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(code))
    r = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    return r.stdout + r.stderr if r.returncode else ""


def test_the_agents_hello_is_indexed_as_the_readme_does(tmp_path: Path) -> None:
    """``g.agent.hello["paths"]`` (the README's) failed mypy --strict: the attribute was
    ``dict | None``, though a session a guest hands out always has it."""
    said = _mypy_strict(
        tmp_path,
        """
        from typing import Any
        from irqlab.vm.guest import Guest

        def paths(g: Guest) -> Any:
            return g.agent.hello["paths"]
        """,
    )
    assert said == ""


def test_a_hello_not_come_yet_is_said_as_such() -> None:
    agent = object.__new__(AgentClient)
    agent.hello_message, agent.fatal = None, None
    with pytest.raises(AgentError, match=r"has not said hello yet: wait_hello\(\) waits for it"):
        _ = agent.hello
    agent.fatal = "python3: not found"
    with pytest.raises(AgentError, match=r"yet \(it failed: python3: not found\)"):
        _ = agent.hello
    agent.hello_message = {"type": "hello", "paths": {}}
    assert agent.hello == {"type": "hello", "paths": {}}
