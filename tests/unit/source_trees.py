"""The Python sources the literal guards scan (test_qom_literals.py, test_reg_literals.py)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path


def python_trees(
    root: Path, tops: tuple[str, ...], skipped: tuple[str, ...]
) -> Iterator[tuple[str, ast.Module]]:
    """(path relative to *root*, its parsed module) of each ``*.py`` under *root*'s
    folders *tops*, sorted, but those whose relative path starts with one of *skipped*."""
    for top in tops:
        for path in sorted((root / top).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            if not rel.startswith(skipped):
                yield rel, ast.parse(path.read_text(encoding="utf-8"), filename=rel)
