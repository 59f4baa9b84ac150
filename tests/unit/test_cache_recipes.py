"""Every recipe name the build code gives the cache is one the cache knows
(irqlab.build.outputs.RECIPES): cached_build refuses any other, so a recipe missing
from the list failed only when its build ran (in a booted-guest test at best)."""

from __future__ import annotations

import re
from pathlib import Path

from irqlab.build.outputs import RECIPES

HARNESS = Path(__file__).resolve().parents[2] / "harness" / "irqlab"
NAMED = re.compile(r"\b(?:cached_build|output_dir)\(\s*\"([^\"]+)\"")


def test_the_recipe_names_in_the_code_are_the_known_ones() -> None:
    used: dict[str, set[str]] = {}
    for path in HARNESS.rglob("*.py"):
        for name in NAMED.findall(path.read_text()):
            used.setdefault(name, set()).add(path.name)
    assert len(used) >= 8, used  # the pattern still finds the calls
    unknown = {n: sorted(files) for n, files in used.items() if n not in RECIPES}
    assert not unknown, f"recipe names missing from outputs.RECIPES: {unknown}"
