"""No QOM property name is typed by hand: outside the contract, tests/ and harness/ use
``QOM.PROP_*`` (:mod:`irqlab.contract.regs`, parsed from irqlab-regs.h), never a string
literal spelled like one of the device's properties.

A literal is allowed only where :data:`ALLOWED` says why: where the literal is the
point (a test of the contract itself), or where the same word names something else.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from source_trees import python_trees  # same directory (rootdir-relative import)

from irqlab.contract.regs import QOM
from irqlab.paths import repo_root

SCANNED = ("harness", "tests")
NOT_SCANNED = (
    "harness/irqlab/contract/",  # the one place that may spell them (it parses them)
    "tests/unit/test_qom_literals.py",  # this guard: it spells what it allows and tests
)

# Where a literal equal to a property name is allowed, and why.  A key is a file, a
# folder (ending in "/") or "file::function" (the innermost def or class enclosing the
# literal); its value, the literals allowed there.  An entry that allows nothing any
# more fails the test (a stale exemption).
ALLOWED: dict[str, frozenset[str]] = {
    # Tests of the contract: a known name written out is what they check the parse with.
    "tests/unit/test_regs.py::test_real_header_loads_and_matches_its_own_text": frozenset(
        {"fifo-push"}
    ),
    "tests/device/test_identity.py::test_the_headers_qom_names_are_the_devices": frozenset(
        {"fifo-push", "gpio-pulse", "burst-count", "counters"}
    ),
    # "counters" in a bench report: the JSON key of the counters a series read (the
    # report's own schema, which its readers share), not the device's property.
    "harness/irqlab/bench/": frozenset({"counters"}),
    "tests/unit/test_bench_native.py": frozenset({"counters"}),
    "tests/unit/test_bench_runner.py": frozenset({"counters"}),
    "tests/e2e/test_bench_gpio.py": frozenset({"counters"}),
    "tests/e2e/test_bench_smoke.py": frozenset({"counters"}),
    "tests/e2e/test_paths_native.py": frozenset({"counters"}),
    # "counters", the action of `irqlab inject counters`: a command word users type.
    "harness/irqlab/cli/guestcmd.py": frozenset({"counters"}),
    "tests/e2e/test_cli_guest.py": frozenset({"counters"}),
    "tests/unit/test_cli_guest_options.py": frozenset({"counters"}),
}


def property_names() -> frozenset[str]:
    return frozenset(QOM.with_prefix("PROP_").values())


def string_literals(tree: ast.AST) -> Iterator[tuple[int, str, str]]:
    """(line, text, the qualified name of the enclosing defs/classes) of each string
    constant in *tree* (f-strings' literal parts too)."""

    def walk(node: ast.AST, scope: str) -> Iterator[tuple[int, str, str]]:
        for child in ast.iter_child_nodes(node):
            inner = scope
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                inner = f"{scope}.{child.name}" if scope else child.name
            if isinstance(child, ast.Constant) and isinstance(child.value, str):
                yield child.lineno, child.value, scope
            yield from walk(child, inner)

    yield from walk(tree, "")


def allowed_by(rel: str, scope: str, text: str) -> str | None:
    """The :data:`ALLOWED` key that lets *text* stand in *rel* at *scope*, if any."""
    for key, texts in ALLOWED.items():
        if text not in texts:
            continue
        path, _, func = key.partition("::")
        if func:
            if path == rel and (scope == func or scope.startswith(func + ".")):
                return key
        elif rel == path or (path.endswith("/") and rel.startswith(path)):
            return key
    return None


def scan(root: Path, names: frozenset[str]) -> tuple[list[str], set[str]]:
    """The typed property names under *root* as ``file:line: 'name'`` (allowed ones
    left out), and the :data:`ALLOWED` keys that let one stand."""
    found: list[tuple[str, int, str]] = []
    used: set[str] = set()
    for rel, tree in python_trees(root, SCANNED, NOT_SCANNED):
        for line, text, scope in string_literals(tree):
            if text not in names:
                continue
            key = allowed_by(rel, scope, text)
            if key is None:
                found.append((rel, line, text))
            else:
                used.add(key)
    return [f"{rel}:{line}: {text!r}" for rel, line, text in sorted(found)], used


def test_no_qom_property_name_is_typed_outside_the_contract() -> None:
    found, used = scan(repo_root(), property_names())
    assert not found, "use QOM.PROP_* (irqlab.contract.regs) instead of:\n" + "\n".join(found)
    stale = sorted(set(ALLOWED) - used)
    assert not stale, f"ALLOWED entries that allow nothing any more: {stale}"


def test_the_scan_finds_a_typed_name_and_honours_the_allow_list(tmp_path: Path) -> None:
    """The guard itself: a literal is found with its file and line (an f-string's literal
    part too, a longer string not), the contract is not scanned, and an allow-list entry
    covers its file, folder or function (with what the function encloses), no more."""
    names = property_names()
    assert {"fifo-push", "counters"} <= names  # a sanity check of the parse
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text(
        "def f(inj):\n"
        "    inj.set('fifo-push', 1)\n"
        "    inj.set('fifo-push=1', f'{inj}fifo-push')\n"
        "    return {'counters': 1}, 'fifo-push-x'\n"
    )
    (tmp_path / "harness" / "irqlab" / "contract").mkdir(parents=True)
    (tmp_path / "harness" / "irqlab" / "contract" / "regs.py").write_text("X = 'fifo-push'\n")
    found, _ = scan(tmp_path, names)
    assert found == [
        "tests/test_x.py:2: 'fifo-push'",
        "tests/test_x.py:3: 'fifo-push'",  # the literal part of an f-string
        "tests/test_x.py:4: 'counters'",
    ]
    regs_test = "tests/unit/test_regs.py"
    func = "test_real_header_loads_and_matches_its_own_text"
    assert allowed_by(regs_test, func, "fifo-push")
    assert allowed_by(regs_test, f"{func}.inner", "fifo-push")
    assert allowed_by(regs_test, f"{func}_2", "fifo-push") is None
    assert allowed_by(regs_test, func, "gpio-set") is None
    assert allowed_by(regs_test, "other", "fifo-push") is None
    assert allowed_by("harness/irqlab/bench/latency.py", "run", "counters")
    assert allowed_by("harness/irqlab/bench/latency.py", "run", "fifo-push") is None
