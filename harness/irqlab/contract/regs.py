"""The device register map and QOM names, parsed from qemu-device/irqlab-regs.h (never
retyped).

The header is parsed by :mod:`irqlab.contract.cheader`, the parser of the uapi header
too; a register header may hold only ``#define IRQLAB_NAME <integer expression>``
lines and ``#define IRQLAB_PROP_/COUNTER_/HISTOGRAM_NAME "name"`` lines (the QOM
names, in :data:`QOM`), plus comments, blank lines and an include guard: no structs,
ioctls or includes.  Anything else is a :class:`~irqlab.contract.cheader.HeaderParseError`
naming the file and line, raised at the first use of :data:`REGS` or :data:`QOM` (not
at import: ``irqlab --help`` answers, and a command says the one line).

Each property ``IRQLAB_PROP_<NAME>`` has its mark ``IRQLAB_PROP_<NAME>_WHEN``: one of
the header's ``IRQLAB_SET_AT_START`` (given on ``-device``, fixed once the device is
realized), ``IRQLAB_SET_AT_RUN`` (a runtime control: ``qom-set`` on the realized device,
refused before) or ``IRQLAB_SET_NEVER`` (read-only).  :attr:`Regs.prop_when` holds them
by QOM name, :func:`props_when` picks the names of one mark (``props_when(AT_START)``:
what ``-device`` takes); a property without its mark, a mark of no property or of none
of the three values is a :class:`HeaderParseError` at its line.

The layout is checked as well (:func:`check_layout`): register offsets (``REG_*``) are
distinct, 4-byte aligned and below the MSI-X table (``MSIX_TABLE_OFFSET``, else
``BAR0_SIZE``); the bit fields of a register (a group such as ``FEAT_*`` or
``EVINFO_*``: see :func:`field_groups`) do not overlap, and a field's ``_SHIFT`` is its
``_MASK``'s lowest bit.

>>> REGS["IRQLAB_REG_ACK"] == REGS.REG_ACK
True
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from irqlab.contract import cheader
from irqlab.contract.cheader import HeaderParseError
from irqlab.paths import packaged_file

__all__ = [
    "AT_RUN",
    "AT_START",
    "NEVER",
    "PREFIX",
    "PROP_MARKS",
    "QOM",
    "REGS",
    "Defines",
    "HeaderParseError",
    "Regs",
    "bit_numbers",
    "check_layout",
    "field_groups",
    "header_path",
    "load",
    "parse",
    "props_when",
]

PREFIX = "IRQLAB_"

# When a device property can be set: the names of the header's IRQLAB_SET_* marks.
AT_START = "AT_START"  # given on -device (or device_add); fixed once realized
AT_RUN = "AT_RUN"  # a runtime control: qom-set on the realized device, refused before
NEVER = "NEVER"  # read-only: qom-get
PROP_MARKS = (AT_START, AT_RUN, NEVER)
_MARK_SUFFIX = "_WHEN"

V = TypeVar("V", int, str)


class Defines(Mapping[str, V]):
    """Read-only name -> value map; ``defs.REG_ACK`` is ``defs["IRQLAB_REG_ACK"]``."""

    def __init__(self, values: Mapping[str, V], source: str) -> None:
        self._values: dict[str, V] = dict(values)
        self._source = source

    @property
    def source(self) -> str:
        return self._source

    def __getitem__(self, key: str) -> V:
        try:
            return self._values[key]
        except KeyError:
            raise KeyError(f"{key!r} is not defined in {self._source}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __getattr__(self, name: str) -> V:
        if name.startswith("_"):
            raise AttributeError(name)
        values: dict[str, V] = self.__dict__.get("_values", {})
        for key in (PREFIX + name, name):
            if key in values:
                return values[key]
        raise AttributeError(f"neither {PREFIX}{name} nor {name} is defined in {self._source}")

    def with_prefix(self, prefix: str) -> dict[str, V]:
        """All entries whose name (without ``IRQLAB_``) starts with *prefix*, prefix removed,
        in the header's order.

        ``regs.with_prefix("REG_")["ACK"]`` is ``regs.REG_ACK``.
        """
        out: dict[str, V] = {}
        for key, value in self._values.items():
            short = key.removeprefix(PREFIX)
            if short.startswith(prefix):
                out[short[len(prefix) :]] = value
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self._values)} names from {self._source})"


class Regs(Defines[int]):
    """The integer definitions; :attr:`strings` holds the string ones (the QOM names),
    :attr:`prop_when` each property's mark (QOM name -> :data:`AT_START`, ... in the
    header's order)."""

    def __init__(
        self,
        values: Mapping[str, int],
        source: str,
        strings: Mapping[str, str] | None = None,
        prop_when: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(values, source)
        self.strings: Defines[str] = Defines(strings or {}, source)
        self.prop_when: dict[str, str] = dict(prop_when or {})


def parse(text: str, source: str = "<string>") -> Regs:
    """Parse the text of a register header."""
    h = cheader.parse(text, source, allow_strings=True)
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
    for name in h.strings:
        if not name.startswith((PREFIX + "PROP_", PREFIX + "COUNTER_", PREFIX + "HISTOGRAM_")):
            raise HeaderParseError(
                source, h.lines[name], f"string {name} is not a QOM name (PROP_, COUNTER_, ...)"
            )
    check_layout(h.constants, h.lines, source)
    return Regs(h.constants, source, h.strings, prop_marks(h.constants, h.strings, h.lines, source))


def prop_marks(
    values: Mapping[str, int], strings: Mapping[str, str], lines: Mapping[str, int], source: str
) -> dict[str, str]:
    """Each property's mark (QOM name -> :data:`AT_START`, :data:`AT_RUN` or
    :data:`NEVER`), read from its ``IRQLAB_PROP_<NAME>_WHEN``; :class:`HeaderParseError`
    at the line of a property without its mark, of a mark that is none of the header's
    ``IRQLAB_SET_*`` values or marks no property, and of an ``IRQLAB_SET_*`` that is
    not one of the three (or repeats another's value)."""
    props = {n: v for n, v in strings.items() if n.startswith(PREFIX + "PROP_")}
    marks = {n: v for n, v in values.items() if n.startswith(PREFIX + "SET_")}
    spelled = ", ".join(f"{PREFIX}SET_{m}" for m in PROP_MARKS)

    def fail(name: str, message: str) -> NoReturn:
        raise HeaderParseError(source, lines[name], f"{name} {message}")

    by_value: dict[int, str] = {}
    for name, value in marks.items():
        mark = name.removeprefix(PREFIX + "SET_")
        if mark not in PROP_MARKS:
            fail(name, f"is no property mark (those are {spelled})")
        if value in by_value:
            fail(name, f"is {value}, as {PREFIX}SET_{by_value[value]} is: marks must differ")
        by_value[value] = mark
    for name in values:
        if name.startswith(PREFIX + "PROP_") and name.removesuffix(_MARK_SUFFIX) not in props:
            fail(
                name,
                f"marks no property: an integer {PREFIX}PROP_ name is the mark"
                f" {PREFIX}PROP_<NAME>{_MARK_SUFFIX} of a property {PREFIX}PROP_<NAME>",
            )
    defined = ", ".join(f"{PREFIX}SET_{m} ({v})" for v, m in by_value.items()) or "(none)"
    out: dict[str, str] = {}
    for name, qom in props.items():
        mark_name = name + _MARK_SUFFIX
        if mark_name not in values:
            fail(name, f"has no {mark_name}: when the property can be set, one of {spelled}")
        if values[mark_name] not in by_value:
            fail(mark_name, f"is {values[mark_name]}, none of the defined marks {defined}")
        out[qom] = by_value[values[mark_name]]
    return out


def _where(name: str, value: int) -> str:
    return f"{name} ({value:#x})"


def check_layout(values: Mapping[str, int], lines: Mapping[str, int], source: str) -> None:
    """Raise :class:`HeaderParseError` (at the line of the name at fault) for a register
    offset that repeats another's (both named), is not 4-byte aligned or is not below the
    MSI-X table, and for overlapping bit fields (see :func:`field_groups`)."""
    limit_name = next(
        (PREFIX + n for n in ("MSIX_TABLE_OFFSET", "BAR0_SIZE") if PREFIX + n in values), None
    )
    seen: dict[int, str] = {}
    for name, off in values.items():
        if not name.startswith(PREFIX + "REG_"):
            continue
        if off in seen:
            raise HeaderParseError(
                source,
                lines[name],
                f"{name} has offset {off:#x}, as {seen[off]} (line {lines[seen[off]]}) has",
            )
        seen[off] = name
        if off < 0 or off % 4:
            raise HeaderParseError(
                source, lines[name], f"{_where(name, off)} is not a 4-byte aligned offset"
            )
        if limit_name is not None and off + 4 > values[limit_name]:
            raise HeaderParseError(
                source,
                lines[name],
                f"{_where(name, off)} is not below {_where(limit_name, values[limit_name])}",
            )
    for group, fields in field_groups(values).items():
        taken: dict[str, int] = {}
        for name in fields:
            bits = values[name]
            for other, other_bits in taken.items():
                if bits & other_bits:
                    raise HeaderParseError(
                        source,
                        lines[name],
                        f"{group}* field {_where(name, bits)} overlaps {_where(other, other_bits)}"
                        f" (line {lines[other]})",
                    )
            taken[name] = bits
            shift = name.removesuffix("_MASK") + "_SHIFT"
            lowest = (bits & -bits).bit_length() - 1
            if name.endswith("_MASK") and shift in values and lowest != values[shift]:
                raise HeaderParseError(
                    source,
                    lines[shift],
                    f"{_where(shift, values[shift])} is not the lowest bit of {_where(name, bits)}",
                )


def field_groups(values: Mapping[str, int]) -> dict[str, list[str]]:
    """The bit fields of each field group, by group prefix (``IRQLAB_FEAT_``, ...).

    A field group is the names sharing their first word after ``IRQLAB_`` when one of
    them ends in ``_MASK`` or ``_SHIFT`` (the registers, ``IRQLAB_REG_*``, are none); its
    fields are its ``_MASK`` names and its single-bit flags (a positive power of two).
    Other names of the group (a ``_SHIFT``, a value such as ``IRQLAB_ID_MAGIC``) are no
    field, so they are never compared."""
    groups: dict[str, list[str]] = {}
    for name in values:
        word = name.removeprefix(PREFIX).split("_", 1)[0]
        if word == "REG":
            continue
        groups.setdefault(f"{PREFIX}{word}_", []).append(name)
    out: dict[str, list[str]] = {}
    for group, names in groups.items():
        if not any(n.endswith(("_MASK", "_SHIFT")) for n in names):
            continue
        fields = [
            n
            for n in names
            if n.endswith("_MASK") or (not n.endswith("_SHIFT") and _is_flag(values[n]))
        ]
        if fields:
            out[group] = fields
    return out


def bit_numbers(values: Mapping[str, int]) -> dict[str, str]:
    """Which values are bit numbers and which a mask of them, as far as the header
    shows it: each ``_SHIFT`` (the lowest bit of its field), and the members of a group
    whose ``_ALL`` is the mask of exactly their bits (``IRQLAB_SRC_FIFO`` is 1, bit 1 of
    ``IRQLAB_SRC_ALL`` 0x7, the mask of bits 0, 1, 2): name -> what it is."""
    out = {n: f"bit {v}" for n, v in values.items() if n.endswith("_SHIFT") and v >= 0}
    for all_name, mask in values.items():
        if not all_name.endswith("_ALL"):
            continue
        group = all_name.removesuffix("ALL")
        members = {n: v for n, v in values.items() if n.startswith(group) and n != all_name}
        bits = sorted(members.values())
        distinct = bits and len(set(bits)) == len(bits) and all(0 <= v < 64 for v in bits)
        if distinct and sum(1 << v for v in bits) == mask:
            out.update({n: f"bit {v} of {all_name}" for n, v in members.items()})
            out[all_name] = f"mask of bits {', '.join(map(str, bits))}"
    return out


def _is_flag(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


def header_path() -> Path:
    """The register header: from the checkout, or the copy packaged in the wheel."""
    return packaged_file("irqlab-regs.h", "qemu-device/irqlab-regs.h")


def load(path: Path | None = None) -> Regs:
    """Parse the register header (default: :func:`header_path`)."""
    p = path if path is not None else header_path()
    return parse(p.read_text(encoding="utf-8"), source=str(p))


def props_when(mark: str, regs: Regs | None = None) -> tuple[str, ...]:
    """The QOM names of the properties the header marks *mark* (:data:`AT_START`:
    those ``-device`` takes), in its order; *regs*: :data:`REGS` unless given."""
    if mark not in PROP_MARKS:
        raise ValueError(f"{mark!r} is no property mark: one of {', '.join(PROP_MARKS)}")
    when = (regs if regs is not None else REGS).prop_when
    return tuple(name for name, m in when.items() if m == mark)


def _filled(lazy: Defines[Any], fill: Callable[[], Defines[Any]]) -> None:
    """*lazy*'s tables taken from *fill*'s result (at its first use)."""
    if "_values" not in lazy.__dict__:
        lazy.__dict__.update(vars(fill()))


class _HeaderRegs(Regs):
    """:data:`REGS`: the header parsed at its first use, not at import.  A header the
    parser cannot read (``BIT(5)``) then fails what reads a register, in one line
    (:class:`HeaderParseError` is an :class:`~irqlab.errors.IrqlabError`), and not every
    import of irqlab: ``irqlab --help`` and ``invoke --list`` still answer."""

    def __init__(self) -> None:  # filled by __getattr__, at the first use
        pass

    def __getattr__(self, name: str) -> int:
        if "_values" in self.__dict__:
            return super().__getattr__(name)
        _filled(self, load)
        return getattr(self, name)  # type: ignore[no-any-return]


class _HeaderStrings(Defines[str]):
    """:data:`QOM`: :data:`REGS`' strings, at their first use."""

    def __init__(self) -> None:  # filled by __getattr__, at the first use
        pass

    def __getattr__(self, name: str) -> str:
        if "_values" in self.__dict__:
            return super().__getattr__(name)
        _filled(self, lambda: REGS.strings)
        return getattr(self, name)  # type: ignore[no-any-return]


REGS: Regs = _HeaderRegs()
# The device's QOM names: properties (QOM.PROP_FIFO_PUSH is "fifo-push"), the members of
# its counters (COUNTER_*) and latency-histogram (HISTOGRAM_*) properties.
QOM: Defines[str] = _HeaderStrings()
