"""The README's GuestConfig table names every field, with its default, so that it
cannot fall behind the dataclass."""

from __future__ import annotations

import ast
import dataclasses
import re

from irqlab.paths import repo_root
from irqlab.vm.guest import GuestConfig


def _table() -> dict[str, str]:
    """{field: default cell} from the README's table whose first header is `field`."""
    text = (repo_root() / "README.md").read_text()
    start = text.index("| field | default | what |")
    rows: dict[str, str] = {}
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        names, default = (c.strip() for c in line.strip("|").split("|")[:2])
        fields = re.findall(r"`(\w+)`", names)
        defaults = [d.strip() for d in default.split(",")] if len(fields) > 1 else [default]
        for name, value in zip(fields, defaults, strict=True):
            rows[name] = value
    return rows


def test_every_field_is_in_the_table_with_its_default() -> None:
    rows = _table()
    fields = {f.name: f for f in dataclasses.fields(GuestConfig)}
    assert sorted(rows) == sorted(fields), "README's GuestConfig table and the dataclass differ"
    made = GuestConfig()
    for name, cell in rows.items():
        value = getattr(made, name)
        shown = cell.strip("`")
        # "180" for 180.0, "()" for an empty tuple, "{}" for an empty dict
        expected = ast.literal_eval(shown) if shown not in ("None",) else None
        if isinstance(value, (dict, tuple)) or hasattr(value, "items"):
            assert not value and not expected, (name, value, cell)
        else:
            assert value == expected, (name, value, cell)
