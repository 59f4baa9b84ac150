"""The device register map, parsed from qemu-device/irqlab-regs.h (never retyped).

The header is parsed by :mod:`irqlab.contract.cheader`, the parser of the uapi header
too; a register header may hold only ``#define IRQLAB_NAME <integer expression>``
lines (plus comments, blank lines and an include guard): no structs, ioctls or
includes.  Anything else is a :class:`~irqlab.contract.cheader.HeaderParseError`
naming the file and line.

>>> REGS["IRQLAB_REG_ACK"] == REGS.REG_ACK
True
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

from irqlab.contract import cheader
from irqlab.contract.cheader import HeaderParseError
from irqlab.paths import packaged_file

__all__ = ["PREFIX", "REGS", "HeaderParseError", "Regs", "header_path", "load", "parse"]

PREFIX = "IRQLAB_"


class Regs(Mapping[str, int]):
    """Read-only name -> value map; ``regs.REG_ACK`` is ``regs["IRQLAB_REG_ACK"]``."""

    def __init__(self, values: Mapping[str, int], source: str) -> None:
        self._values = dict(values)
        self._source = source

    @property
    def source(self) -> str:
        return self._source

    def __getitem__(self, key: str) -> int:
        try:
            return self._values[key]
        except KeyError:
            raise KeyError(f"{key!r} is not defined in {self._source}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __getattr__(self, name: str) -> int:
        if name.startswith("_"):
            raise AttributeError(name)
        values: dict[str, int] = self.__dict__.get("_values", {})
        for key in (PREFIX + name, name):
            if key in values:
                return values[key]
        raise AttributeError(f"neither {PREFIX}{name} nor {name} is defined in {self._source}")

    def with_prefix(self, prefix: str) -> dict[str, int]:
        """All entries whose name (without ``IRQLAB_``) starts with *prefix*, prefix removed.

        ``regs.with_prefix("REG_")["ACK"]`` is ``regs.REG_ACK``.
        """
        out: dict[str, int] = {}
        for key, value in self._values.items():
            short = key.removeprefix(PREFIX)
            if short.startswith(prefix):
                out[short[len(prefix) :]] = value
        return out

    def __repr__(self) -> str:
        return f"Regs({len(self._values)} names from {self._source})"


def parse(text: str, source: str = "<string>") -> Regs:
    """Parse the text of a register header."""
    h = cheader.parse(text, source)
    if h.includes:
        line, directive = h.includes[0]
        raise HeaderParseError(source, line, f"a register header includes nothing: {directive}")
    others = [*h.ioctls, *(f"struct {name}" for name in h.structs)]
    if others:
        first = min(others, key=h.lines.__getitem__)
        raise HeaderParseError(source, h.lines[first], f"{first} is not a register definition")
    for name, line in h.lines.items():
        if not name.startswith(PREFIX):
            raise HeaderParseError(source, line, f"name {name} does not start with {PREFIX}")
    if not h.constants:
        raise HeaderParseError(source, 1, f"no {PREFIX} definitions found")
    return Regs(h.constants, source)


def header_path() -> Path:
    """The register header: from the checkout, or the copy packaged in the wheel."""
    return packaged_file("irqlab-regs.h", "qemu-device/irqlab-regs.h")


def load(path: Path | None = None) -> Regs:
    """Parse the register header (default: :func:`header_path`)."""
    p = path if path is not None else header_path()
    return parse(p.read_text(encoding="utf-8"), source=str(p))


REGS: Regs = load()
