"""A register header the parser cannot read (``BIT(5)``): every command said so in a
traceback (``irqlab --help`` 32 lines, ``invoke --list`` 49), because the header was
parsed when irqlab.contract.regs was imported.  Now it is parsed at its first use: the
help and the task list answer, and a command that reads a register says the parser's
one line.

Each check runs in a fresh interpreter (the header is read once per process) whose
checkout's header is a broken copy: ``irqlab.paths.packaged_file`` answers the copy
before anything imports the register module."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from irqlab.contract.regs import header_path
from irqlab.paths import repo_root

BROKEN = "#define IRQLAB_FEAT_GPIO_LINES_MASK   BIT(5)"


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    text = header_path().read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("#define IRQLAB_FEAT_GPIO"))
    bad = tmp_path / "irqlab-regs.h"
    bad.write_text(text.replace(line, BROKEN, 1))
    return bad


def _run(header: Path, code: str) -> subprocess.CompletedProcess[str]:
    prelude = (
        "import sys, pathlib, irqlab.paths as p\n"
        f"p.packaged_file = lambda *_a: pathlib.Path({str(header)!r})\n"
    )
    return subprocess.run(
        [sys.executable, "-c", prelude + code],
        capture_output=True,
        text=True,
        cwd=repo_root(),
        timeout=60,
        check=False,
    )


def _line(header: Path) -> str:
    lineno = header.read_text().splitlines().index(BROKEN) + 1
    return f"{header}:{lineno}: unknown name 'BIT'"


def test_help_answers(broken: Path) -> None:
    r = _run(broken, "from irqlab.cli.main import main\nsys.exit(main(['--help']))")
    assert (r.returncode, r.stderr) == (0, "")
    assert "usage: irqlab" in r.stdout
    r = _run(broken, "from irqlab.cli.main import main\nsys.exit(main(['inject', '--help']))")
    assert (r.returncode, r.stderr) == (0, "")


def test_a_command_reading_a_register_says_the_parsers_line(broken: Path) -> None:
    r = _run(broken, "from irqlab.cli.main import main\nsys.exit(main(['regs', 'REG_']))")
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr == f"irqlab: {_line(broken)}\n"


def test_invoke_lists_its_tasks(broken: Path) -> None:
    r = _run(broken, "from invoke.main import program\nprogram.run(['invoke', '--list'])")
    assert (r.returncode, r.stderr) == (0, "")
    assert "build-qemu" in r.stdout


def test_pytest_loads_the_plugin(broken: Path) -> None:
    """The plugin (a pytest11 entry point, loaded by every pytest run) read the header at
    its import, in a default argument."""
    r = _run(broken, "import irqlab.testing.plugin")
    assert (r.returncode, r.stderr) == (0, "")
