"""The one parser of the project's C headers: ``qemu-device/irqlab-regs.h`` (the device's
register map) and ``guest-kmod/include/uapi/linux/irqlab.h`` (the driver's uapi).

Nothing in Python retypes either header: constants, struct layouts (field offsets
and sizes) and ioctl request numbers are computed from their text here, and
:mod:`irqlab.contract.regs` and :mod:`irqlab.contract.uapi` only present the result.
``_IO``/``_IOR``/``_IOW``/``_IOWR`` follow the asm-generic encoding the kernel uses on
x86 and arm (:func:`ioc` is the project's only implementation of it; the guest agent
gets its shifts from the ABI artifact)::

    request = dir << 30 | size << 16 | type << 8 | nr    (dir: 0 none, 1 write, 2 read)

The grammar (anything else is a :class:`HeaderParseError` naming the file and line):

* comments, blank lines, ``#include``, the include guard (``#ifndef``/``#define``/``#endif``);
* ``#define NAME <expression>``: integer and character literals, earlier names,
  ``( ) ~ - + * << >> & ^ |`` (shift counts 0..63), ``sizeof(<type>)`` and ``_IO*(...)``;
* ``#define NAME "text"``: a string literal without escapes, only where the caller allows
  strings (the register header: its QOM names); elsewhere (the uapi header) any string
  ``#define`` is an error naming the macro, never taken silently;
* ``struct NAME { <type> <member>; ... };`` with one member per declaration, types
  ``__u8 __s8 __u16 __s16 __u32 __s32 __u64 __s64 int``, optional ``[<expression>]``.
  Members must be naturally aligned: implicit padding is an error, because the
  driver's ABI promises there is none.

Expressions are parsed by recursive descent, never ``eval``.  Stdlib only.
"""

from __future__ import annotations

import operator
import re
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from irqlab.errors import IrqlabError

__all__ = [
    "IOC_NONE",
    "IOC_READ",
    "IOC_WRITE",
    "SCALAR_CODES",
    "CStruct",
    "Field",
    "Header",
    "HeaderParseError",
    "Ioctl",
    "evaluate",
    "ioc",
    "ioc_layout",
    "parse",
]

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
_STRING_RE = re.compile(r'"(?P<text>[^"\\]*)"$')
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


class HeaderParseError(IrqlabError, ValueError):
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


def ioc_layout() -> dict[str, int]:
    """The encoding :func:`ioc` uses, as data (for the ABI artifact the guest agent reads)."""
    return {
        "nrshift": IOC_NRSHIFT,
        "typeshift": IOC_TYPESHIFT,
        "sizeshift": IOC_SIZESHIFT,
        "dirshift": IOC_DIRSHIFT,
        "nrbits": IOC_NRBITS,
        "typebits": IOC_TYPEBITS,
        "sizebits": IOC_SIZEBITS,
        "dirbits": IOC_DIRBITS,
        "none": IOC_NONE,
        "write": IOC_WRITE,
        "read": IOC_READ,
    }


@dataclass(frozen=True)
class Header:
    """What a header defines; ``lines`` says where (name or ``struct NAME`` -> line)."""

    source: str
    constants: dict[str, int]  # every integer #define that is not an ioctl request
    structs: dict[str, CStruct]
    ioctls: dict[str, Ioctl]  # by full macro name
    lines: dict[str, int] = field(default_factory=dict)
    includes: tuple[tuple[int, str], ...] = ()  # (line, the #include directive)
    strings: dict[str, str] = field(default_factory=dict)  # #define NAME "text", in order

    def struct(self, name: str) -> CStruct:
        try:
            return self.structs[name]
        except KeyError:
            raise KeyError(f"struct {name} is not defined in {self.source}") from None

    def with_prefix(self, prefix: str) -> dict[str, int]:
        """Constants whose name starts with *prefix*, the prefix stripped."""
        return {k[len(prefix) :]: v for k, v in self.constants.items() if k.startswith(prefix)}


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
            if tok.text in ("<<", ">>") and not 0 <= rhs < 64:
                raise _ExprError(f"shift count {rhs} out of range 0..63")
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
        raise HeaderParseError(source, text.count("\n", 0, pos) + 1, "unterminated comment")
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
            raise HeaderParseError(
                source,
                lineno,
                f"struct {name}: member {mname} at offset {offset} needs implicit padding "
                f"to {f.elem_size}-byte alignment",
            )
        fields.append(f)
        offset += f.size
        align = max(align, f.elem_size)
    if not fields:
        raise HeaderParseError(source, start, f"struct {name} is empty")
    if offset % align:
        raise HeaderParseError(
            source,
            members[-1][0],
            f"struct {name}: size {offset} needs tail padding to {align}-byte alignment",
        )
    return CStruct(name, tuple(fields), offset, align)


def evaluate(expr: str, known: Mapping[str, int], *, source: str = "<expr>", line: int = 0) -> int:
    """Evaluate one ``#define`` body, resolving names in *known* (no sizeof, no _IO*)."""

    def no_sizeof(type_name: str) -> int:
        raise _ExprError(f"sizeof of unknown type {type_name!r}")

    try:
        return _Parser(_tokenize(expr), known, no_sizeof).parse()
    except _ExprError as e:
        raise HeaderParseError(source, line, str(e)) from None


def parse(text: str, source: str = "<header>", *, allow_strings: bool = False) -> Header:
    """Parse a header; raise :class:`HeaderParseError` on anything unexpected (a string
    ``#define`` too, unless *allow_strings*)."""
    lines = _strip_comments(text, source)
    constants: dict[str, int] = {}
    strings: dict[str, str] = {}
    structs: dict[str, CStruct] = {}
    ioctls: dict[str, Ioctl] = {}
    lines_of: dict[str, int] = {}
    includes: list[tuple[int, str]] = []
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

    def define_value(lineno: int, body: str) -> tuple[int, _Parser]:
        try:
            p = _Parser(_tokenize(body), constants, sizeof)
            return p.parse(), p
        except _ExprError as e:
            raise HeaderParseError(source, lineno, str(e)) from None

    for lineno, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line:
            continue
        if current is not None:
            start, sname, members = current
            if _STRUCT_CLOSE_RE.match(line):
                structs[sname] = _layout(source, start, sname, members)
                lines_of[f"struct {sname}"] = start
                current = None
                continue
            m = _MEMBER_RE.match(line)
            if not m:
                raise HeaderParseError(
                    source, lineno, f"struct {sname}: not a '<type> <name>[<n>];' member"
                )
            ctype, mname = m.group("type"), m.group("name")
            if ctype not in SCALAR_CODES:
                raise HeaderParseError(
                    source, lineno, f"struct {sname}: unsupported member type {ctype!r}"
                )
            if any(mname == mem[2] for mem in members):
                raise HeaderParseError(source, lineno, f"struct {sname}: duplicate member {mname}")
            count, is_array = 1, m.group("count") is not None
            if is_array:
                count, _ = define_value(lineno, m.group("count"))
                if count < 1:
                    raise HeaderParseError(source, lineno, f"array {mname}[{count}] is empty")
            members.append((lineno, ctype, mname, count, is_array))
            continue
        if line.startswith("#"):
            if m := _IFNDEF_RE.match(line):
                if guard is not None:
                    raise HeaderParseError(source, lineno, "only the include guard may use #ifndef")
                guard = m.group("name")
                guard_open = True
                continue
            if _ENDIF_RE.match(line):
                if not guard_open:
                    raise HeaderParseError(source, lineno, "#endif without #ifndef")
                guard_open = False
                continue
            if _INCLUDE_RE.match(line):
                includes.append((lineno, line))
                continue
            m = _DEFINE_RE.match(line)
            if not m:
                raise HeaderParseError(source, lineno, f"unsupported directive {line.split()[0]!r}")
            name, rest = m.group("name"), m.group("rest").strip()
            if m.group("paren"):
                raise HeaderParseError(
                    source, lineno, f"function-like macro {name} is not supported"
                )
            if m.group("rest")[:1] not in ("", " ", "\t"):
                raise HeaderParseError(
                    source, lineno, f"malformed #define {name}{m.group('rest')!r}"
                )
            if name == guard and not rest:
                continue
            if name in constants or name in ioctls or name in strings:
                raise HeaderParseError(source, lineno, f"{name} is defined twice")
            lines_of[name] = lineno
            if rest.startswith('"') and not allow_strings:
                raise HeaderParseError(
                    source, lineno, f"{name} is a string #define: this header defines integers only"
                )
            if string := _STRING_RE.match(rest):
                strings[name] = string.group("text")
                continue
            value, p = define_value(lineno, rest)
            if p.ioc is not None:
                direction, type_, nr, size, arg_type = p.ioc
                ioctls[name] = Ioctl(name, value, direction, type_, nr, size, arg_type)
            else:
                constants[name] = value
            continue
        if m := _STRUCT_OPEN_RE.match(line):
            sname = m.group("name")
            if sname in structs:
                raise HeaderParseError(source, lineno, f"struct {sname} is defined twice")
            current = (lineno, sname, [])
            continue
        raise HeaderParseError(source, lineno, f"cannot parse {line[:40]!r}")
    if current is not None:
        raise HeaderParseError(source, current[0], f"struct {current[1]} is not closed")
    if guard_open:
        raise HeaderParseError(source, len(lines), "include guard #ifndef is not closed")
    return Header(source, constants, structs, ioctls, lines_of, tuple(includes), strings)
