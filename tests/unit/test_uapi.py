"""uapi header parser: the real header (checked against a C compiler), and synthetic ones."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from irqlab.contract import cheader, regs, uapi
from irqlab.contract.cheader import IOC_NONE, IOC_READ, IOC_WRITE, HeaderParseError, ioc
from irqlab.contract.uapi import abi_spec, parse
from irqlab_agent.abi import Abi

HEADER = uapi.header_path()
TEXT = HEADER.read_text()
U = uapi.load(HEADER)


# --- the real header -------------------------------------------------------------------


def test_every_define_and_struct_member_of_the_header_is_parsed() -> None:
    defines = re.findall(r"^#define[ \t]+(IRQLAB_\w+)[ \t]+\S", TEXT, re.M)
    assert sorted(defines) == sorted([*U.constants, *U.ioctls])
    blocks = re.findall(r"^struct (\w+) \{\n(.*?)^\};", TEXT, re.M | re.S)
    assert sorted(name for name, _ in blocks) == sorted(U.structs)
    for name, body in blocks:
        members = re.findall(r"^\s*\w+\s+(\w+)\s*(?:\[[^\]]*\])?\s*;", body, re.M)
        assert [f.name for f in U.structs[name].fields] == members, name


def test_record_layout_agrees_with_the_size_the_header_promises() -> None:
    rec = U.record
    assert rec.size == U.constants["IRQLAB_EVENT_SIZE"]
    # Members are contiguous (no padding) and the struct format packs to the same size.
    end = 0
    for f in rec.fields:
        assert f.offset == end, f
        end += f.size
    assert end == rec.size == len(rec.pack({}))


def test_ioctls_are_well_formed() -> None:
    magic = U.constants["IRQLAB_IOC_MAGIC"]
    assert {n.removeprefix("IRQLAB_IOC_") for n in U.ioctls} >= {
        "ACK",
        "GET_STATS",
        "SET_EVENTFD",
        "GET_INFO",
        "SET_SOURCES",
        "FLUSH",
    }
    nrs = [io.nr for io in U.ioctls.values()]
    assert len(set(nrs)) == len(nrs)
    for io in U.ioctls.values():
        assert io.type == magic, io
        assert io.request == ioc(io.direction, io.type, io.nr, io.size)
        if io.direction == IOC_NONE:
            assert io.arg_type is None and io.size == 0
        elif io.arg_struct is not None:
            assert io.size == U.struct(io.arg_struct).size
        else:
            assert io.arg_type in cheader.SCALAR_CODES
    assert U.ioctl("ACK").direction == IOC_READ | IOC_WRITE
    assert U.ioctl("GET_STATS").direction == IOC_READ
    assert U.ioctl("SET_EVENTFD").direction == IOC_WRITE


def _c_program(u: uapi.Uapi) -> tuple[str, list[str]]:
    """C source printing what the compiler thinks, and the lines the parser expects."""
    body: list[str] = []
    expect: list[str] = []
    for name, s in u.structs.items():
        body.append(f'printf("sizeof %s %zu\\n", "{name}", sizeof(struct {name}));')
        expect.append(f"sizeof {name} {s.size}")
        for f in s.fields:
            body.append(
                f'printf("offsetof %s.%s %zu\\n", "{name}", "{f.name}", '
                f"offsetof(struct {name}, {f.name}));"
            )
            expect.append(f"offsetof {name}.{f.name} {f.offset}")
            body.append(
                f'printf("sizeof %s.%s %zu\\n", "{name}", "{f.name}", '
                f"sizeof(((struct {name} *)0)->{f.name}));"
            )
            expect.append(f"sizeof {name}.{f.name} {f.size}")
    for name, value in [*u.constants.items(), *((n, io.request) for n, io in u.ioctls.items())]:
        body.append(f'printf("value %s %llu\\n", "{name}", (unsigned long long)({name}));')
        expect.append(f"value {name} {value % (1 << 64)}")
    src = (
        "#include <stddef.h>\n#include <stdio.h>\n#include <linux/irqlab.h>\n"
        "int main(void)\n{\n" + "\n".join(body) + "\nreturn 0;\n}\n"
    )
    return src, expect


def test_layout_and_numbers_match_the_c_compiler(tmp_path: Path) -> None:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.fail("no C compiler to cross-check against: apt-get install gcc")
    src, expect = _c_program(U)
    (tmp_path / "check.c").write_text(src)
    include = HEADER.parent.parent  # .../include/uapi (for <linux/irqlab.h>)
    exe = tmp_path / "check"
    build = subprocess.run(
        [cc, "-std=c11", "-Wall", "-Werror", "-Wpadded", f"-I{include}", "-o", str(exe),
         str(tmp_path / "check.c")],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True, check=True)
    assert run.stdout.splitlines() == expect


def test_record_pack_unpack_roundtrip() -> None:
    rec = U.record
    values: dict[str, int] = {f.name: i + 1 for i, f in enumerate(rec.fields)}
    out = rec.unpack(rec.pack(values))
    assert out == values
    with pytest.raises(KeyError, match="no member"):
        rec.pack({"nope": 1})


def test_abi_spec_builds_the_agents_abi() -> None:
    spec = abi_spec(U)
    assert json.loads(json.dumps(spec)) == spec
    abi = Abi(spec)
    assert abi.record_size == U.record.size
    assert list(abi.record.fields) == [f.name for f in U.record.fields]
    assert abi.ioctl("ACK").request == U.ioctl("ACK").request
    assert abi.ioctl("FLUSH").arg is None
    assert abi.ioctl("SET_EVENTFD").arg is not None
    assert abi.flags == U.with_prefix("EVF_")
    assert "OVERFLOW" in abi.flag_names(U.constants["IRQLAB_EVF_OVERFLOW"])


def test_the_generator_needs_only_the_standard_library() -> None:
    """Buildroot's package runs ``python -m irqlab.contract.uapi`` with the host Python and
    GENERATOR_SOURCES only: those modules import nothing else at module level."""
    root = Path(uapi.__file__).resolve().parents[3]
    ours = {
        ".".join(Path(r).with_suffix("").parts[1:]).removesuffix(".__init__")
        for r in uapi.GENERATOR_SOURCES
    }
    assert "irqlab.contract.cheader" in ours
    for rel in uapi.GENERATOR_SOURCES:
        tree = ast.parse((root / rel).read_text())
        for node in tree.body:  # module level only; header_path() imports lazily on purpose
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for n in names:
                top = n.split(".")[0]
                ok = top in sys.stdlib_module_names or top == "__future__"
                assert ok or n in ours, (rel, n)


def test_main_prints_the_artifact(capsys: pytest.CaptureFixture[str]) -> None:
    assert uapi.main([str(HEADER)]) == 0
    assert json.loads(capsys.readouterr().out) == abi_spec(U)


# --- encodings and synthetic headers ----------------------------------------------------


@pytest.mark.parametrize(
    ("define", "expected"),
    [
        ("_IOW('T', 202, int)", 0x400454CA),  # TUNSETIFF
        ("_IOR('E', 0x01, int)", 0x80044501),  # EVIOCGVERSION
        ("_IO(0x12, 95)", 0x125F),  # BLKRRPART
        ("_IOWR(0xB4, 0x0C, struct s)", 0xC010B40C),
    ],
)
def test_ioctl_encoding_matches_known_kernel_values(define: str, expected: int) -> None:
    u = parse(f"struct s {{\n__u64 a;\n__u32 b[2];\n}};\n#define X_IOCTL {define}\n")
    assert u.ioctls["X_IOCTL"].request == expected


def test_expressions() -> None:
    u = parse(
        "#define A 0x10\n#define B (A << 2 | 1)\n#define C ~0u & 0xff\n#define D 010\n"
        "#define E -A + 3 * 2\n#define F sizeof(__u64)\n#define G 'a' ^ 1\n"
        "#define H (1 << \\\n 4)\n"
    )
    assert u.constants == {
        "A": 16,
        "B": 65,
        "C": 255,
        "D": 8,
        "E": -10,
        "F": 8,
        "G": 96,
        "H": 16,
    }


def test_arrays_and_alignment() -> None:
    u = parse("struct t {\n__u8 a;\n__u8 b[3];\n__u32 c;\n__u64 d[2];\n};\n")
    t = u.struct("t")
    assert t.format == "<B3BI2Q"
    assert [f.offset for f in t.fields] == [0, 1, 4, 8]
    assert t.size == 24 and t.align == 8
    assert t.item_names[:4] == ("a", "b[0]", "b[1]", "b[2]")
    assert t.unpack(t.pack({"b": [1, 2, 3], "d": [4, 5]}))["b"] == (1, 2, 3)


# Malformed headers, for the uapi header's parser and the register map's (one grammar;
# the register map also holds only IRQLAB_ registers and QOM names).
@pytest.mark.parametrize(
    ("kind", "text", "line", "message"),
    [
        ("uapi", "struct p {\n__u8 a;\n__u32 b;\n};\n", 3, "implicit padding"),
        ("uapi", "struct p {\n__u64 a;\n__u32 b;\n};\n", 3, "tail padding"),
        ("uapi", "struct p {\nchar a;\n};\n", 2, "unsupported member type"),
        ("uapi", "struct p {\n__u32 a, b;\n};\n", 2, "member"),
        ("uapi", "struct p {\n__u32 a;\n", 1, "not closed"),
        ("uapi", "struct p {\n};\n", 1, "empty"),
        ("uapi", "#define F(x) (x)\n", 1, "function-like"),
        ("uapi", "#define A B\n", 1, "unknown name"),
        ("uapi", "#define A 1\n#define A 2\n", 2, "defined twice"),
        ("uapi", "#define A 1 +\n", 1, "too early"),
        ("uapi", "#define A 1 2\n", 1, "unexpected"),
        ("uapi", "#define A 08\n", 1, "bad integer"),
        ("uapi", "#define A _IOR(1, 2, struct nope)\n", 1, "unknown type"),
        ("uapi", "#define A _IO(1, 256)\n", 1, "nr"),
        ("uapi", "#define A (_IO(1, 2))\n", 1, "whole definition"),
        ("uapi", "/* open\n#define A 1\n", 1, "unterminated comment"),
        ("uapi", "#if 1\n#endif\n", 1, "unsupported directive"),
        ("uapi", "typedef int x;\n", 1, "cannot parse"),
        ("uapi", "#ifndef G\n#define G\n", 2, "not closed"),
        ("uapi", "#define A 1\n#endif\n", 2, "#endif without #ifndef"),
        ("uapi", "#define A 0x\n", 1, "bad integer literal '0x'"),
        ("uapi", "#define A 1.5\n", 1, "unexpected"),
        ("uapi", '#define A 1\n#define IRQLAB_NAME "x"\n', 2, "IRQLAB_NAME is a string #define"),
        ("uapi", '#define A "x\\n"\n', 1, "A is a string #define"),
        ("regs", '#define IRQLAB_PROP_A "x\\n"\n', 1, "unexpected"),
        ("regs", '#define IRQLAB_PROP_A "x" "y"\n', 1, "unexpected"),
        ("uapi", "#define A\n", 1, "empty definition"),
        ("uapi", "#define A+1\n", 1, "malformed #define"),
        ("uapi", "#define A 1 << 64\n", 1, "shift count 64"),
        ("uapi", "#define A 1 << -1\n", 1, "shift count -1"),
        ("uapi", "#define A 1 and 2\n", 1, "unexpected 'and'"),
        ("uapi", "#define A True\n", 1, "unknown name 'True'"),
        ("uapi", "#define A __import__\n", 1, "unknown name '__import__'"),
        ("regs", "#define OTHER_A 1\n", 1, "does not start with IRQLAB_"),
        ("regs", "#define IRQLAB_A 1\n#include <stdint.h>\n", 2, "includes nothing"),
        (
            "regs",
            "#define IRQLAB_A 1\nstruct irqlab_s {\n__u32 a;\n};\n",
            2,
            "struct irqlab_s is not a",
        ),
        (
            "regs",
            "#define IRQLAB_A 1\n#define IRQLAB_IO _IO(1, 2)\n",
            2,
            "IRQLAB_IO is not a register",
        ),
        (
            "regs",
            '#define IRQLAB_A 1\n#define IRQLAB_NAME "x"\n',
            2,
            "IRQLAB_NAME is not a QOM name",
        ),
        ("regs", "/* nothing */\n", 1, "no IRQLAB_ definitions"),
        (
            "regs",
            "#define IRQLAB_B (IRQLAB_A + 1)\n#define IRQLAB_A 1\n",
            1,
            "unknown name 'IRQLAB_A'",
        ),
    ],
)
def test_malformed_headers_name_the_line(kind: str, text: str, line: int, message: str) -> None:
    with pytest.raises(HeaderParseError) as ei:
        {"uapi": parse, "regs": regs.parse}[kind](text, "h.h")
    assert message in ei.value.message, ei.value.message
    assert ei.value.line == line
    assert str(ei.value).startswith(f"h.h:{line}: ")


def test_a_string_in_the_uapi_header_is_refused_naming_header_line_and_macro(
    tmp_path: Path,
) -> None:
    """Only the register header defines strings (its QOM names); one in the uapi header
    would be dropped from abi.json without a word, so it is an error."""
    anchor = "#define IRQLAB_SRC_KEY"
    header = tmp_path / "irqlab.h"
    header.write_text(TEXT.replace(anchor, f'#define IRQLAB_NAME "irqlab"\n{anchor}', 1))
    line = TEXT[: TEXT.index(anchor)].count("\n") + 1
    with pytest.raises(HeaderParseError) as ei:
        uapi.load(header)
    assert str(ei.value) == (
        f"{header}:{line}: IRQLAB_NAME is a string #define: this header defines integers only"
    )


def test_comments_and_guard_are_ignored() -> None:
    u = parse(
        "/* x */\n#ifndef G\n#define G\n// y\n#include <linux/types.h>\n"
        "#define A /* inline */ 1 // tail /* not a block\n#endif /* G */\n"
    )
    assert u.constants == {"A": 1}
