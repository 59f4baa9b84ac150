"""The driver's userspace ABI, parsed from guest-kmod/include/uapi/linux/irqlab.h.

Nothing here retypes the header: struct layouts (field offsets, :mod:`struct`
format strings, sizes), ``#define`` constants and ioctl request numbers are
computed from its text.  ``_IO``/``_IOR``/``_IOW``/``_IOWR`` follow the
asm-generic encoding the kernel uses on x86 and arm::

    request = dir << 30 | size << 16 | type << 8 | nr    (dir: 0 none, 1 write, 2 read)

The header grammar this accepts (anything else is a :class:`UapiParseError`
naming the line):

* comments, blank lines, ``#include``, the include guard (``#ifndef``/``#define``/``#endif``);
* ``#define NAME <expression>``: integer and character literals, earlier names,
  ``( ) ~ - + * << >> & ^ |``, ``sizeof(<type>)`` and ``_IO*(...)`` calls;
* ``struct NAME { <type> <member>; ... };`` with one member per declaration, types
  ``__u8 __s8 __u16 __s16 __u32 __s32 __u64 __s64 int``, optional ``[<expression>]``.
  Members must be naturally aligned: implicit padding is an error, because the
  driver's ABI promises there is none.

This module is stdlib-only and imports nothing else from the package, so the guest
agent can ship a copy of it (as ``irqlab_agent/_uapi.py``, see :func:`agent_spec`).
"""

from __future__ import annotations

import json
import operator
import re
import struct
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

PREFIX = "IRQLAB_"
IOCTL_PREFIX = "IRQLAB_IOC_"
EVENT_FLAG_PREFIX = "IRQLAB_EVF_"
RECORD_STRUCT = "irqlab_event"
HEADER_REL = "guest-kmod/include/uapi/linux/irqlab.h"

# asm-generic/ioctl.h
IOC_NRBITS = 8
IOC_TYPEBITS = 8
IOC_SIZEBITS = 14
IOC_DIRBITS = 2
IOC_NRSHIFT = 0
IOC_TYPESHIFT = IOC_NRSHIFT + IOC_NRBITS
IOC_SIZESHIFT = IOC_TYPESHIFT + IOC_TYPEBITS
IOC_DIRSHIFT = IOC_SIZESHIFT + IOC_SIZEBITS
IOC_NONE = 0
IOC_WRITE = 1
IOC_READ = 2

_IOC_MACROS: dict[str, int] = {
    "_IO": IOC_NONE,
    "_IOW": IOC_WRITE,
    "_IOR": IOC_READ,
    "_IOWR": IOC_READ | IOC_WRITE,
}

# C type -> struct code (little endian, standard sizes); size and alignment = calcsize.
SCALAR_CODES: dict[str, str] = {
    "__u8": "B",
    "__s8": "b",
    "__u16": "H",
    "__s16": "h",
    "__u32": "I",
    "__s32": "i",
    "__u64": "Q",
    "__s64": "q",
    "int": "i",
}

_IDENT = r"[A-Za-z_]\w*"
_DEFINE_RE = re.compile(rf"#\s*define\s+(?P<name>{_IDENT})(?P<paren>\()?(?P<rest>.*)$")
_IFNDEF_RE = re.compile(rf"#\s*ifndef\s+(?P<name>{_IDENT})\s*$")
_ENDIF_RE = re.compile(r"#\s*endif\s*$")
_INCLUDE_RE = re.compile(r"#\s*include\s*[<\"][\w./-]+[>\"]\s*$")
_STRUCT_OPEN_RE = re.compile(rf"struct\s+(?P<name>{_IDENT})\s*\{{\s*$")
_STRUCT_CLOSE_RE = re.compile(r"\}\s*;\s*$")
_MEMBER_RE = re.compile(
    rf"(?P<type>{_IDENT})\s+(?P<name>{_IDENT})\s*(?:\[(?P<count>[^\]]+)\])?\s*;\s*$"
)
_TOKEN_RE = re.compile(
    r"\s*(?:(?P<num>\d\w*)|(?P<char>'(?:\\.|[^'\\])')|(?P<name>[A-Za-z_]\w*)"
    r"|(?P<op><<|>>|[()~+\-*&^|,]))"
)
_INT_RE = re.compile(r"(?P<digits>0[xX][0-9A-Fa-f]+|0[0-7]*|[1-9]\d*)[uUlL]*$")
_CHAR_ESCAPES = {"\\n": 10, "\\t": 9, "\\0": 0, "\\\\": 92, "\\'": 39}

# Binary operators by C precedence, loosest first.
_BINARY_LEVELS: tuple[dict[str, Callable[[int, int], int]], ...] = (
    {"|": operator.or_},
    {"^": operator.xor},
    {"&": operator.and_},
    {"<<": operator.lshift, ">>": operator.rshift},
    {"+": operator.add, "-": operator.sub},
    {"*": operator.mul},
)


class UapiParseError(ValueError):
    """The header contains something this parser does not understand."""

    def __init__(self, source: str, line: int, message: str) -> None:
        super().__init__(f"{source}:{line}: {message}")
        self.source = source
        self.line = line
        self.message = message


@dataclass(frozen=True)
class Field:
    """One struct member; arrays have ``count`` > 1 (or an explicit ``[1]``)."""

    name: str
    ctype: str
    offset: int
    count: int
    is_array: bool

    @property
    def code(self) -> str:
        return SCALAR_CODES[self.ctype]

    @property
    def elem_size(self) -> int:
        return struct.calcsize("<" + self.code)

    @property
    def size(self) -> int:
        return self.elem_size * self.count

    @property
    def item_names(self) -> tuple[str, ...]:
        """Names of the values this member contributes to an unpacked tuple."""
        if not self.is_array:
            return (self.name,)
        return tuple(f"{self.name}[{i}]" for i in range(self.count))


@dataclass(frozen=True)
class CStruct:
    name: str
    fields: tuple[Field, ...]
    size: int
    align: int

    @property
    def format(self) -> str:
        """:mod:`struct` format, little endian, no padding (the header has none)."""
        return "<" + "".join((f"{f.count}{f.code}" if f.is_array else f.code) for f in self.fields)

    @property
    def item_names(self) -> tuple[str, ...]:
        return tuple(n for f in self.fields for n in f.item_names)

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"struct {self.name} has no member {name!r}")

    def unpack(self, data: bytes, offset: int = 0) -> dict[str, int | tuple[int, ...]]:
        values = struct.unpack_from(self.format, data, offset)
        out: dict[str, int | tuple[int, ...]] = {}
        i = 0
        for f in self.fields:
            if f.is_array:
                out[f.name] = tuple(values[i : i + f.count])
            else:
                out[f.name] = values[i]
            i += f.count
        return out

    def pack(self, values: Mapping[str, int | Sequence[int]]) -> bytes:
        """Pack *values* (missing members are 0; unknown names are an error)."""
        unknown = set(values) - {f.name for f in self.fields}
        if unknown:
            raise KeyError(f"struct {self.name} has no member(s) {sorted(unknown)}")
        flat: list[int] = []
        for f in self.fields:
            v = values.get(f.name, 0)
            if f.is_array:
                if isinstance(v, int):
                    if v:
                        raise TypeError(f"{self.name}.{f.name} takes {f.count} values")
                    v = [0] * f.count
                if len(v) != f.count:
                    raise ValueError(f"{self.name}.{f.name} takes {f.count} values")
                flat.extend(int(x) for x in v)
            else:
                if not isinstance(v, int):
                    raise TypeError(f"{self.name}.{f.name} takes an integer")
                flat.append(v)
        return struct.pack(self.format, *flat)


@dataclass(frozen=True)
class Ioctl:
    name: str
    request: int
    direction: int  # IOC_NONE / IOC_WRITE / IOC_READ bits
    type: int
    nr: int
    size: int
    arg_type: str | None  # "struct irqlab_ack", "__s32", or None for _IO

    @property
    def arg_struct(self) -> str | None:
        if self.arg_type and self.arg_type.startswith("struct "):
            return self.arg_type.split()[1]
        return None


def ioc(direction: int, type_: int, nr: int, size: int) -> int:
    """The kernel's ``_IOC(dir, type, nr, size)``."""
    if not 0 <= direction < 1 << IOC_DIRBITS:
        raise ValueError(f"ioctl direction {direction} out of range")
    if not 0 <= type_ < 1 << IOC_TYPEBITS:
        raise ValueError(f"ioctl type {type_:#x} out of range")
    if not 0 <= nr < 1 << IOC_NRBITS:
        raise ValueError(f"ioctl nr {nr:#x} out of range")
    if not 0 <= size < 1 << IOC_SIZEBITS:
        raise ValueError(f"ioctl size {size} out of range")
    return (
        (direction << IOC_DIRSHIFT)
        | (type_ << IOC_TYPESHIFT)
        | (nr << IOC_NRSHIFT)
        | (size << IOC_SIZESHIFT)
    )


@dataclass(frozen=True)
class Uapi:
    source: str
    constants: dict[str, int]  # every #define that is not an ioctl request
    structs: dict[str, CStruct]
    ioctls: dict[str, Ioctl]  # by full macro name

    def struct(self, name: str) -> CStruct:
        try:
            return self.structs[name]
        except KeyError:
            raise KeyError(f"struct {name} is not defined in {self.source}") from None

    def with_prefix(self, prefix: str) -> dict[str, int]:
        """Constants whose name starts with ``IRQLAB_<prefix>``, the prefix stripped."""
        full = prefix if prefix.startswith(PREFIX) else PREFIX + prefix
        return {k[len(full) :]: v for k, v in self.constants.items() if k.startswith(full)}

    @property
    def record(self) -> CStruct:
        return self.struct(RECORD_STRUCT)

    def ioctl(self, short: str) -> Ioctl:
        """``uapi.ioctl("ACK")`` is ``IRQLAB_IOC_ACK``."""
        name = short if short.startswith(IOCTL_PREFIX) else IOCTL_PREFIX + short
        try:
            return self.ioctls[name]
        except KeyError:
            raise KeyError(f"{name} is not defined in {self.source}") from None


# --- expressions -------------------------------------------------------------------


class _ExprError(Exception):
    pass


@dataclass
class _Tok:
    kind: str  # num, char, name, op
    text: str


def _tokenize(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if not m or m.end() == pos:
            raise _ExprError(f"unexpected {text[pos:].strip()[:20]!r}")
        kind = m.lastgroup
        assert kind is not None
        toks.append(_Tok(kind, m.group(kind)))
        pos = m.end()
    return toks


def _int_literal(text: str) -> int:
    m = _INT_RE.match(text)
    if not m:
        raise _ExprError(f"bad integer literal {text!r}")
    digits = m.group("digits")
    if digits.lower().startswith("0x"):
        return int(digits, 16)
    if len(digits) > 1 and digits.startswith("0"):
        return int(digits, 8)
    return int(digits)


def _char_literal(text: str) -> int:
    body = text[1:-1]
    if len(body) == 1:
        return ord(body)
    if body in _CHAR_ESCAPES:
        return _CHAR_ESCAPES[body]
    raise _ExprError(f"unsupported character literal {text}")


class _Parser:
    """Recursive descent over one #define body."""

    def __init__(
        self,
        toks: list[_Tok],
        names: Mapping[str, int],
        sizeof: Callable[[str], int],
    ) -> None:
        self.toks = toks
        self.pos = 0
        self.names = names
        self.sizeof = sizeof
        self.ioc: tuple[int, int, int, int, str | None] | None = None

    def peek(self) -> _Tok | None:
        return self.toks[self.pos] if self.pos < len(self.toks) else None

    def take(self) -> _Tok:
        tok = self.peek()
        if tok is None:
            raise _ExprError("expression ends too early")
        self.pos += 1
        return tok

    def expect(self, op: str) -> None:
        tok = self.take()
        if tok.kind != "op" or tok.text != op:
            raise _ExprError(f"expected {op!r}, got {tok.text!r}")

    def parse(self) -> int:
        if not self.toks:
            raise _ExprError("empty definition")
        value = self.binary(0)
        if self.peek() is not None:
            raise _ExprError(f"unexpected {self.take().text!r}")
        return value

    def binary(self, level: int) -> int:
        if level == len(_BINARY_LEVELS):
            return self.unary()
        ops = _BINARY_LEVELS[level]
        value = self.binary(level + 1)
        while (tok := self.peek()) is not None and tok.kind == "op" and tok.text in ops:
            self.pos += 1
            rhs = self.binary(level + 1)
            if tok.text in ("<<", ">>") and rhs < 0:
                raise _ExprError("negative shift count")
            value = ops[tok.text](value, rhs)
        return value

    def unary(self) -> int:
        tok = self.take()
        if tok.kind == "op":
            if tok.text == "~":
                return ~self.unary()
            if tok.text == "-":
                return -self.unary()
            if tok.text == "+":
                return self.unary()
            if tok.text == "(":
                value = self.binary(0)
                self.expect(")")
                return value
            raise _ExprError(f"unexpected {tok.text!r}")
        if tok.kind == "num":
            return _int_literal(tok.text)
        if tok.kind == "char":
            return _char_literal(tok.text)
        if tok.text == "sizeof":
            self.expect("(")
            size = self.sizeof(self.type_name())
            self.expect(")")
            return size
        if tok.text in _IOC_MACROS:
            return self.ioc_call(tok.text)
        if tok.text in self.names:
            return self.names[tok.text]
        raise _ExprError(f"unknown name {tok.text!r}")

    def type_name(self) -> str:
        tok = self.take()
        if tok.kind != "name":
            raise _ExprError(f"expected a type, got {tok.text!r}")
        if tok.text == "struct":
            tag = self.take()
            if tag.kind != "name":
                raise _ExprError(f"expected a struct tag, got {tag.text!r}")
            return f"struct {tag.text}"
        return tok.text

    def ioc_call(self, macro: str) -> int:
        direction = _IOC_MACROS[macro]
        self.expect("(")
        type_ = self.binary(0)
        self.expect(",")
        nr = self.binary(0)
        size, arg_type = 0, None
        if direction != IOC_NONE:
            self.expect(",")
            arg_type = self.type_name()
            size = self.sizeof(arg_type)
        self.expect(")")
        try:
            request = ioc(direction, type_, nr, size)
        except ValueError as e:
            raise _ExprError(f"{macro}: {e}") from None
        if self.ioc is not None or self.pos != len(self.toks):
            raise _ExprError(f"{macro}(...) must be the whole definition")
        self.ioc = (direction, type_, nr, size, arg_type)
        return request


# --- the header ----------------------------------------------------------------------


# Either comment kind, whichever starts first (a "/*" inside a "//" comment is no block).
_COMMENT_RE = re.compile(r"/\*.*?\*/|//[^\n]*", re.S)


def _strip_comments(text: str, source: str) -> list[str]:
    """Lines without comments (line numbers kept), continuation lines joined."""

    def blank(m: re.Match[str]) -> str:
        return " " + "\n" * m.group().count("\n")

    text = _COMMENT_RE.sub(blank, text)
    if (pos := text.find("/*")) >= 0:
        raise UapiParseError(source, text.count("\n", 0, pos) + 1, "unterminated comment")
    out = text.splitlines()
    # Join backslash continuations onto the first line, keeping line numbers.
    i = 0
    while i < len(out):
        j = i
        while out[i].rstrip().endswith("\\") and j + 1 < len(out):
            j += 1
            out[i] = out[i].rstrip()[:-1] + " " + out[j]
            out[j] = ""
        i = j + 1
    return out


def _layout(
    source: str, start: int, name: str, members: list[tuple[int, str, str, int, bool]]
) -> CStruct:
    fields: list[Field] = []
    offset = 0
    align = 1
    for lineno, ctype, mname, count, is_array in members:
        f = Field(mname, ctype, offset, count, is_array)
        if offset % f.elem_size:
            raise UapiParseError(
                source,
                lineno,
                f"struct {name}: member {mname} at offset {offset} needs implicit padding "
                f"to {f.elem_size}-byte alignment",
            )
        fields.append(f)
        offset += f.size
        align = max(align, f.elem_size)
    if not fields:
        raise UapiParseError(source, start, f"struct {name} is empty")
    if offset % align:
        raise UapiParseError(
            source,
            members[-1][0],
            f"struct {name}: size {offset} needs tail padding to {align}-byte alignment",
        )
    return CStruct(name, tuple(fields), offset, align)


def parse(text: str, source: str = "<uapi header>") -> Uapi:
    """Parse a uapi header; raise :class:`UapiParseError` on anything unexpected."""
    lines = _strip_comments(text, source)
    constants: dict[str, int] = {}
    structs: dict[str, CStruct] = {}
    ioctls: dict[str, Ioctl] = {}
    guard: str | None = None
    guard_open = False
    current: tuple[int, str, list[tuple[int, str, str, int, bool]]] | None = None

    def sizeof(type_name: str) -> int:
        if type_name in SCALAR_CODES:
            return struct.calcsize("<" + SCALAR_CODES[type_name])
        if type_name.startswith("struct "):
            tag = type_name.split()[1]
            if tag in structs:
                return structs[tag].size
        raise _ExprError(f"sizeof of unknown type {type_name!r}")

    def evaluate(lineno: int, body: str) -> tuple[int, _Parser]:
        try:
            p = _Parser(_tokenize(body), constants, sizeof)
            return p.parse(), p
        except _ExprError as e:
            raise UapiParseError(source, lineno, str(e)) from None

    for lineno, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line:
            continue
        if current is not None:
            start, sname, members = current
            if _STRUCT_CLOSE_RE.match(line):
                structs[sname] = _layout(source, start, sname, members)
                current = None
                continue
            m = _MEMBER_RE.match(line)
            if not m:
                raise UapiParseError(
                    source, lineno, f"struct {sname}: not a '<type> <name>[<n>];' member"
                )
            ctype, mname = m.group("type"), m.group("name")
            if ctype not in SCALAR_CODES:
                raise UapiParseError(
                    source, lineno, f"struct {sname}: unsupported member type {ctype!r}"
                )
            if any(mname == mem[2] for mem in members):
                raise UapiParseError(source, lineno, f"struct {sname}: duplicate member {mname}")
            count, is_array = 1, m.group("count") is not None
            if is_array:
                count, _ = evaluate(lineno, m.group("count"))
                if count < 1:
                    raise UapiParseError(source, lineno, f"array {mname}[{count}] is empty")
            members.append((lineno, ctype, mname, count, is_array))
            continue
        if line.startswith("#"):
            if m := _IFNDEF_RE.match(line):
                if guard is not None:
                    raise UapiParseError(source, lineno, "only the include guard may use #ifndef")
                guard = m.group("name")
                guard_open = True
                continue
            if _ENDIF_RE.match(line):
                if not guard_open:
                    raise UapiParseError(source, lineno, "#endif without #ifndef")
                guard_open = False
                continue
            if _INCLUDE_RE.match(line):
                continue
            m = _DEFINE_RE.match(line)
            if not m:
                raise UapiParseError(source, lineno, f"unsupported directive {line.split()[0]!r}")
            name, rest = m.group("name"), m.group("rest").strip()
            if m.group("paren"):
                raise UapiParseError(source, lineno, f"function-like macro {name} is not supported")
            if name == guard and not rest:
                continue
            if name in constants or name in ioctls:
                raise UapiParseError(source, lineno, f"{name} is defined twice")
            value, p = evaluate(lineno, rest)
            if p.ioc is not None:
                direction, type_, nr, size, arg_type = p.ioc
                ioctls[name] = Ioctl(name, value, direction, type_, nr, size, arg_type)
            else:
                constants[name] = value
            continue
        if m := _STRUCT_OPEN_RE.match(line):
            sname = m.group("name")
            if sname in structs:
                raise UapiParseError(source, lineno, f"struct {sname} is defined twice")
            current = (lineno, sname, [])
            continue
        raise UapiParseError(source, lineno, f"cannot parse {line[:40]!r}")
    if current is not None:
        raise UapiParseError(source, current[0], f"struct {current[1]} is not closed")
    if guard_open:
        raise UapiParseError(source, len(lines), "include guard #ifndef is not closed")
    return Uapi(source, constants, structs, ioctls)


def load(path: Path) -> Uapi:
    return parse(path.read_text(), str(path))


def header_path() -> Path:
    """The header of the checkout, or the copy packaged as irqlab/data/irqlab-uapi.h (host only)."""
    # Imported here so that the module stays self-contained for the agent's copy.
    from irqlab.paths import packaged_file

    return packaged_file("irqlab-uapi.h", HEADER_REL)


def _struct_spec(s: CStruct) -> dict[str, object]:
    return {"format": s.format, "fields": list(s.item_names), "size": s.size}


def agent_spec(header_text: str) -> dict[str, object]:
    """The JSON-able ABI description the guest agent builds its ``Abi`` from.

    ``record``: the event record; ``flags``: IRQLAB_EVF_* bits by short name;
    ``ioctls``: by short name (IRQLAB_IOC_ stripped), each with its ``request`` and, when
    it takes an argument, the argument's ``format``/``fields`` (a scalar argument is one
    field named ``value``); ``constants``: every other #define.
    """
    u = parse(header_text)
    ioctls: dict[str, object] = {}
    for name, io in u.ioctls.items():
        short = name[len(IOCTL_PREFIX) :] if name.startswith(IOCTL_PREFIX) else name
        entry: dict[str, object] = {"request": io.request, "direction": io.direction}
        if io.arg_struct is not None:
            entry.update(_struct_spec(u.struct(io.arg_struct)))
        elif io.arg_type is not None:
            entry.update(
                {"format": "<" + SCALAR_CODES[io.arg_type], "fields": ["value"], "size": io.size}
            )
        ioctls[short] = entry
    return {
        "record": _struct_spec(u.record),
        "flags": {
            k[len(EVENT_FLAG_PREFIX) :]: v
            for k, v in u.constants.items()
            if k.startswith(EVENT_FLAG_PREFIX)
        },
        "ioctls": ioctls,
        "constants": dict(u.constants),
        "structs": {name: _struct_spec(s) for name, s in u.structs.items()},
    }


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m irqlab.contract.uapi [HEADER]``: print :func:`agent_spec` as JSON."""
    args = list(sys.argv[1:] if argv is None else argv)
    path = Path(args[0]) if args else header_path()
    print(json.dumps(agent_spec(path.read_text()), indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
