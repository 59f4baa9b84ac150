"""The register table of the device's spec, ``qemu-device/irqlab.rst`` ("Registers
(BAR0)"): each register's offset and access as the spec states them.

The header (:mod:`irqlab.contract.regs`) is the register map's source of truth; this
reads what the spec says of it, so tests can hold the two together and pick registers by
their documented access (``RO``, ``RW``, ``WO``, ``W1C``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from irqlab.errors import IrqlabError
from irqlab.paths import repo_root

__all__ = ["ACCESS", "TABLE_TITLE", "SpecError", "SpecRegister", "registers", "spec_path"]

TABLE_TITLE = "Registers (BAR0)"
ACCESS = ("RO", "RW", "WO", "W1C")
_ROW_RE = re.compile(r"^(?P<offset>0x[0-9a-fA-F]+)\s+(?P<name>[A-Z][A-Z0-9_]*)\s+(?P<acc>\S+)")


class SpecError(IrqlabError, ValueError):
    """The spec's register table cannot be read."""


@dataclass(frozen=True)
class SpecRegister:
    offset: int
    access: str  # as the table's "Acc." column says (one of ACCESS, if the spec is right)


def spec_path() -> Path:
    return repo_root() / "qemu-device" / "irqlab.rst"


def registers(text: str | None = None) -> dict[str, SpecRegister]:
    """Name (without ``IRQLAB_REG_``) -> its row of the spec's register table, in the
    table's order; *text*: the spec's (default: :func:`spec_path`'s)."""
    if text is None:
        text = spec_path().read_text(encoding="utf-8")
    lines = text.splitlines()
    try:
        start = lines.index(TABLE_TITLE)
    except ValueError:
        raise SpecError(f"no {TABLE_TITLE!r} section") from None
    borders = [i for i in range(start, len(lines)) if lines[i].startswith("======  ")]
    if len(borders) < 3:
        raise SpecError(f"no table (three ====== borders) under {TABLE_TITLE!r}")
    out: dict[str, SpecRegister] = {}
    for line in lines[borders[1] + 1 : borders[2]]:
        if not line or line[0] == " ":
            continue  # a row's continuation lines
        m = _ROW_RE.match(line)
        if not m:
            raise SpecError(f"not an 'offset name access' row: {line!r}")
        name = m.group("name")
        if name in out:
            raise SpecError(f"{name} is listed twice")
        out[name] = SpecRegister(int(m.group("offset"), 16), m.group("acc"))
    return out
