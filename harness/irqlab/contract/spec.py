"""The register table of the device's spec, ``qemu-device/irqlab.rst`` ("Registers
(BAR0)"): each register's offset and access as the spec states them; and its property
tables' "When" column (:func:`property_marks`).

The header (:mod:`irqlab.contract.regs`) is the register map's source of truth; this
reads what the spec says of it, so tests can hold the two together and pick registers by
their documented access (``RO``, ``RW``, ``WO``, ``W1C``).  Its property tables' "Type"
column (:func:`property_types`) is what the harness checks a ``-device`` value's kind
against before QEMU starts (a ``bool`` property takes QEMU's words for one).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from irqlab.errors import IrqlabError
from irqlab.paths import repo_root

__all__ = [
    "ACCESS",
    "TABLE_TITLE",
    "SpecError",
    "SpecRegister",
    "property_column",
    "property_marks",
    "property_types",
    "registers",
    "spec_path",
]

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


_BORDER_RE = re.compile(r"^=+(?:  +=+)+\s*$")


def property_marks(text: str | None = None) -> dict[str, str]:
    """Property -> its "When" cell (``AT_START``, ...), from every table of the spec
    whose header row is "Property ... When ..." (the QMP control surface's, the start-time
    properties'), in the spec's order; *text*: the spec's (default: :func:`spec_path`'s).
    A property in two rows is a :class:`SpecError`."""
    return property_column("When", text)


def property_types(text: str | None = None) -> dict[str, str]:
    """Property -> its "Type" cell (``bool``, ``uint32``, ``string``, ...) from the same
    tables as :func:`property_marks`."""
    return property_column("Type", text)


def property_column(column: str, text: str | None = None) -> dict[str, str]:
    """Property -> its cell in *column*, from every table of the spec whose header row is
    "Property ... When ..." (see :func:`property_marks`)."""
    if text is None:
        text = spec_path().read_text(encoding="utf-8")
    lines = text.splitlines()
    out: dict[str, str] = {}
    i = 0
    while i + 2 < len(lines):
        if not (_BORDER_RE.match(lines[i]) and _BORDER_RE.match(lines[i + 2])):
            i += 1
            continue
        columns = [m.span() for m in re.finditer(r"=+", lines[i])]

        def cells(line: str, columns: list[tuple[int, int]] = columns) -> list[str]:
            bounds = [start for start, _ in columns[1:]] + [len(line)]
            return [line[s:e].strip() for (s, _), e in zip(columns, bounds, strict=True)]

        header = cells(lines[i + 1])
        end = next((j for j in range(i + 3, len(lines)) if _BORDER_RE.match(lines[j])), None)
        if end is None:
            raise SpecError(f"a table at line {i + 1} has no closing border")
        if header[0] == "Property" and "When" in header:
            if column not in header:
                raise SpecError(f"the property table at line {i + 1} has no {column!r} column")
            at = header.index(column)
            for line in lines[i + 3 : end]:
                row = cells(line)
                if not row[0]:
                    continue  # a row's continuation lines
                if row[0] in out:
                    raise SpecError(f"property {row[0]} is listed twice")
                out[row[0]] = row[at]
        i = end + 1
    return out
