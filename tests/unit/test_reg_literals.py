"""Every register name the Python code spells is one the header defines, so a renamed or
removed register fails here, not only in a device test or a booted guest.

The register accessors take a register's name without ``IRQLAB_REG_``:
``QtestIrqlab.read/write/read64`` and ``reg()`` (:mod:`irqlab.testing.qtest_device`,
the device tests) and the UIO path's ``rd/wr`` (:mod:`irqlab_agent.uio`, in the guest).
A string literal given to one of them as its first argument must be a ``REG_`` name of
the header (``read64``'s a ``_LO`` one with its ``_HI``).  The UIO path also reads the
header's other constants from ``self.r`` (the header as its arm request sent it): a
literal key of an ``.r[...]`` subscript must be a name the header defines.  An AST walk,
not a regex: only calls and subscripts count, never a docstring or a comment.  A name the
code builds at run time, or passes through a variable, is not seen here (the device tests
meet it).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

from source_trees import python_trees  # same directory (rootdir-relative import)

from irqlab.contract.regs import PREFIX, REGS, Regs
from irqlab.paths import repo_root

SCANNED = ("harness", "tests")
NOT_SCANNED = ("tests/unit/test_reg_literals.py",)  # this guard: its fixtures are wrong names
# Accessor method or function names -> what their first argument is.
REGISTER_ACCESSORS = frozenset({"read", "write", "rd", "wr", "reg"})
PAIR_ACCESSORS = frozenset({"read64"})  # a _LO register, whose _HI is read after it
CONSTANTS_SUBSCRIPTED = frozenset({"r"})  # uio.py's self.r[...]: the header's constants
# An argument shaped like a register name (a path, a line of text is not one).
_NAME_RE = re.compile(r"(?:IRQLAB_REG_)?[A-Z][A-Z0-9_]*")


def _called_name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Name):
        return func.id
    return None


def literals(tree: ast.AST) -> Iterator[tuple[int, str, str]]:
    """(line, kind, text): kind ``reg``, ``pair`` or ``constant``, for each register-shaped
    literal given to an accessor or used as a key of ``.r[...]``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args:
            arg, name = node.args[0], _called_name(node.func)
            if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
                continue
            if not _NAME_RE.fullmatch(arg.value):
                continue
            if name in REGISTER_ACCESSORS:
                yield node.lineno, "reg", arg.value
            elif name in PAIR_ACCESSORS:
                yield node.lineno, "pair", arg.value
        elif (
            isinstance(node, ast.Subscript)
            and isinstance(node.value, ast.Attribute)
            and node.value.attr in CONSTANTS_SUBSCRIPTED
            and isinstance(node.slice, ast.Constant)
            and isinstance(node.slice.value, str)
        ):
            yield node.lineno, "constant", node.slice.value


def problem(kind: str, text: str, regs: Regs) -> str | None:
    """Why *text* is no name the header defines for *kind*, or None."""
    registers = regs.with_prefix("REG_")
    short = text.removeprefix(PREFIX + "REG_")
    if kind == "constant":
        return None if text.removeprefix(PREFIX) in regs.with_prefix("") else "no such name"
    if short not in registers:
        return "no such register"
    if kind == "pair":
        if not short.endswith("_LO"):
            return "not a _LO register"
        if short[:-3] + "_HI" not in registers:
            return f"no {short[:-3]}_HI register"
    return None


def scan(root: Path, regs: Regs) -> tuple[list[str], int]:
    """``file:line: 'text' (why)`` for each literal the header does not define, and how
    many literals were checked."""
    found: list[str] = []
    checked = 0
    for rel, tree in python_trees(root, SCANNED, NOT_SCANNED):
        for line, kind, text in literals(tree):
            checked += 1
            if (why := problem(kind, text, regs)) is not None:
                found.append(f"{rel}:{line}: {text!r} ({why})")
    return found, checked


def test_every_register_name_in_the_code_is_the_headers() -> None:
    found, checked = scan(repo_root(), REGS)
    assert not found, f"register names {REGS.source} does not define:\n" + "\n".join(found)
    assert checked > 150  # the device tests and the UIO path use names by the hundred


def test_the_scan_finds_a_renamed_register(tmp_path: Path) -> None:
    """A register the header renamed (here: the copy of the real UIO path against a
    header whose EVQ_POP is EVQ_DROP) is found at its file and line; so is a wrong
    name in each accessor, a _HI or unpaired name given to read64 and an unknown
    constant in ``self.r``; paths and text given to read/write are not names."""
    agent = tmp_path / "harness" / "irqlab_agent"
    agent.mkdir(parents=True)
    uio = repo_root() / "harness" / "irqlab_agent" / "uio.py"
    (agent / "uio.py").write_text(uio.read_text(encoding="utf-8"), encoding="utf-8")
    renamed = {k.replace("EVQ_POP", "EVQ_DROP"): v for k, v in REGS.items()}
    found, _ = scan(tmp_path, Regs(renamed, "renamed.h"))
    pop_line = next(
        i
        for i, line in enumerate(uio.read_text(encoding="utf-8").splitlines(), 1)
        if 'self.wr("EVQ_POP", 0)' in line
    )
    assert found == [f"harness/irqlab_agent/uio.py:{pop_line}: 'EVQ_POP' (no such register)"]

    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text(
        "def f(d, self):\n"
        "    d.read('SCRATCHY')\n"
        "    d.write('IRQLAB_REG_NOPE', 1)\n"
        "    d.read64('TIME_HI')\n"
        "    d.read64('SCRATCH')\n"
        "    reg('ACKK')\n"
        "    self.rd('ID'), self.wr('ACK', 1), d.read('IRQLAB_REG_ID')\n"
        "    return self.r['SRC_ALLL'], self.r['SRC_ALL'], self.r['IRQLAB_BAR0_SIZE']\n"
        "def g(f, os):\n"
        "    f.write('etc/passwd', b''), f.read('a line'), os.read(3, 4)\n"
    )
    found, _ = scan(tmp_path, Regs(renamed, "renamed.h"))
    assert found[1:] == [  # after the UIO path's EVQ_POP
        "tests/test_x.py:2: 'SCRATCHY' (no such register)",
        "tests/test_x.py:3: 'IRQLAB_REG_NOPE' (no such register)",
        "tests/test_x.py:4: 'TIME_HI' (not a _LO register)",
        "tests/test_x.py:5: 'SCRATCH' (not a _LO register)",
        "tests/test_x.py:6: 'ACKK' (no such register)",
        "tests/test_x.py:8: 'SRC_ALLL' (no such name)",
    ]
