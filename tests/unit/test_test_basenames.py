"""Test modules have unique basenames across the suites: pytest imports them by
basename (rootdir-relative imports, no __init__.py), so tests/unit/test_x.py beside
tests/e2e/test_x.py failed the whole run's collection ("import file mismatch"; seen
in a fresh-clone CI run, 2026-12-07)."""

from __future__ import annotations

from collections import defaultdict

from irqlab.paths import repo_root


def test_no_two_test_modules_share_a_basename() -> None:
    seen: dict[str, list[str]] = defaultdict(list)
    for path in (repo_root() / "tests").rglob("test_*.py"):
        seen[path.name].append(str(path.relative_to(repo_root())))
    shared = {name: where for name, where in seen.items() if len(where) > 1}
    assert not shared, f"test modules sharing a basename: {shared}"
