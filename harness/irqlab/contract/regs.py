"""The device register map, parsed from qemu-device/irqlab-regs.h (never retyped).

The header is restricted to ``#define IRQLAB_NAME <integer expression>`` lines
(plus comments, blank lines and an include guard).  Expressions may use
integer literals, parentheses, ``<< >> | & ~ + -`` and names defined earlier
in the same header.  They are evaluated with :mod:`ast`, never ``eval``;
anything else is a :class:`RegsParseError` naming the file and line.

>>> REGS["IRQLAB_REG_ACK"] == REGS.REG_ACK
True
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

from irqlab.paths import packaged_file

PREFIX = "IRQLAB_"

_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DEFINE_RE = re.compile(r"#\s*define\s+(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<rest>.*)$")
_GUARD_IFNDEF_RE = re.compile(r"#\s*ifndef\s+(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*$")
_ENDIF_RE = re.compile(r"#\s*endif\s*$")
# C integer literal: hex, or decimal without a leading zero (octal is refused as ambiguous),
# with optional u/l suffixes.
_INT_RE = re.compile(r"(?:0[xX][0-9A-Fa-f]+|0|[1-9][0-9]*)(?P<suffix>[uUlL]*)")
_TOKEN_RE = re.compile(
    r"\s*(?:(?P<num>[0-9][0-9A-Za-z_]*)|(?P<name>[A-Za-z_]\w*)|(?P<op><<|>>|[()|&~+\-]))"
)

_BINOPS = (ast.LShift, ast.RShift, ast.BitOr, ast.BitAnd, ast.Add, ast.Sub)
_UNARYOPS = (ast.Invert, ast.USub, ast.UAdd)


class RegsParseError(ValueError):
    """The header contains something the restricted grammar does not allow."""

    def __init__(self, source: str, line: int, message: str) -> None:
        super().__init__(f"{source}:{line}: {message}")
        self.source = source
        self.line = line
        self.message = message


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


def _strip_comments(text: str, source: str) -> list[tuple[int, str]]:
    """Return (line number, logical line) pairs with comments removed and continuations joined."""
    out: list[tuple[int, str]] = []
    in_block = False
    block_start = 0
    pending = ""
    pending_line = 0
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = ""
        i = 0
        while i < len(raw):
            if in_block:
                end = raw.find("*/", i)
                if end < 0:
                    i = len(raw)
                    continue
                in_block = False
                line += " "
                i = end + 2
            elif raw.startswith("/*", i):
                in_block = True
                block_start = lineno
                i += 2
            elif raw.startswith("//", i):
                break
            else:
                line += raw[i]
                i += 1
        if not pending:
            pending_line = lineno
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append((pending_line, pending + line))
        pending = ""
    if in_block:
        raise RegsParseError(source, block_start, "unterminated /* comment")
    if pending:
        raise RegsParseError(source, pending_line, "line continuation at end of file")
    return out


def _to_python_expr(expr: str, source: str, line: int) -> str:
    """Tokenize a C expression, check the tokens, and render it as Python source."""
    parts: list[str] = []
    pos = 0
    expr = expr.strip()
    while pos < len(expr):
        m = _TOKEN_RE.match(expr, pos)
        if m is None or m.end() == pos:
            bad = expr[pos:].strip()
            raise RegsParseError(source, line, f"unsupported token {bad[:20]!r} in {expr!r}")
        pos = m.end()
        if m.group("num") is not None:
            lit = m.group("num")
            im = _INT_RE.fullmatch(lit)
            if im is None:
                raise RegsParseError(source, line, f"unsupported integer literal {lit!r}")
            parts.append(lit[: len(lit) - len(im.group("suffix"))])
        elif m.group("name") is not None:
            parts.append(m.group("name"))
        else:
            parts.append(m.group("op"))
    if not parts:
        raise RegsParseError(source, line, "empty expression")
    return " ".join(parts)


def _evaluate(node: ast.expr, known: Mapping[str, int], source: str, line: int) -> int:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.Name):
        if node.id not in known:
            raise RegsParseError(source, line, f"{node.id} is not defined earlier in the header")
        return known[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, _UNARYOPS):
        v = _evaluate(node.operand, known, source, line)
        if isinstance(node.op, ast.Invert):
            return ~v
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp) and isinstance(node.op, _BINOPS):
        a = _evaluate(node.left, known, source, line)
        b = _evaluate(node.right, known, source, line)
        op = node.op
        if isinstance(op, ast.LShift | ast.RShift):
            if not 0 <= b < 64:
                raise RegsParseError(source, line, f"shift count {b} out of range 0..63")
            return a << b if isinstance(op, ast.LShift) else a >> b
        if isinstance(op, ast.BitOr):
            return a | b
        if isinstance(op, ast.BitAnd):
            return a & b
        return a + b if isinstance(op, ast.Add) else a - b
    raise RegsParseError(source, line, f"unsupported expression {ast.dump(node)[:60]}")


def evaluate(expr: str, known: Mapping[str, int], *, source: str = "<expr>", line: int = 0) -> int:
    """Evaluate one restricted C integer expression, resolving names in *known*."""
    py = _to_python_expr(expr, source, line)
    try:
        tree = ast.parse(py, mode="eval")
    except SyntaxError as e:
        raise RegsParseError(
            source, line, f"malformed expression {expr.strip()!r}: {e.msg}"
        ) from None
    return _evaluate(tree.body, known, source, line)


def parse(text: str, source: str = "<string>") -> Regs:
    """Parse the text of a register header."""
    values: dict[str, int] = {}
    guard: str | None = None
    guard_defined = False
    depth = 0
    for line, logical in _strip_comments(text, source):
        stripped = logical.strip()
        if not stripped:
            continue
        m = _GUARD_IFNDEF_RE.fullmatch(stripped)
        if m is not None:
            if guard is not None or values:
                raise RegsParseError(
                    source, line, "only one #ifndef include guard, before all defines"
                )
            guard = m.group("name")
            depth += 1
            continue
        if _ENDIF_RE.fullmatch(stripped):
            if depth == 0:
                raise RegsParseError(source, line, "#endif without #ifndef")
            depth -= 1
            continue
        m = _DEFINE_RE.fullmatch(stripped)
        if m is None:
            raise RegsParseError(
                source, line, f"expected '#define {PREFIX}NAME value', got {stripped!r}"
            )
        name, rest = m.group("name"), m.group("rest")
        if name == guard and not rest.strip() and not guard_defined:
            guard_defined = True
            continue
        if rest.startswith("("):
            raise RegsParseError(source, line, f"function-like macro {name}(...) is not supported")
        if rest and not rest[0].isspace():
            raise RegsParseError(source, line, f"malformed #define {name}{rest!r}")
        if not name.startswith(PREFIX):
            raise RegsParseError(source, line, f"name {name} does not start with {PREFIX}")
        if name in values:
            raise RegsParseError(source, line, f"{name} is defined twice")
        if not rest.strip():
            raise RegsParseError(source, line, f"{name} has no value")
        values[name] = evaluate(rest, values, source=source, line=line)
    if depth != 0:
        raise RegsParseError(source, len(text.splitlines()), "#ifndef without #endif")
    if not values:
        raise RegsParseError(source, 1, f"no {PREFIX} definitions found")
    return Regs(values, source)


def header_path() -> Path:
    """The register header: from the checkout, or the copy packaged in the wheel."""
    return packaged_file("irqlab-regs.h", "qemu-device/irqlab-regs.h")


def load(path: Path | None = None) -> Regs:
    """Parse the register header (default: :func:`header_path`)."""
    p = path if path is not None else header_path()
    return parse(p.read_text(encoding="utf-8"), source=str(p))


REGS: Regs = load()
