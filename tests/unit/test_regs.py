"""Register header parser: the real header, and malformed ones."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from irqlab.contract import regs
from irqlab.contract.cheader import HeaderParseError, evaluate
from irqlab.contract.regs import REGS, parse


def test_real_header_loads_and_matches_its_own_text() -> None:
    text = regs.header_path().read_text()
    # Every plain-literal #define in the header is reproduced exactly (no value retyped here).
    literal = re.findall(r"^#define\s+(IRQLAB_\w+)\s+(0x[0-9a-fA-F]+|\d+)\b", text, re.M)
    assert len(literal) > 40
    for name, value in literal:
        assert REGS[name] == int(value, 0), name
    assert len(REGS) + len(REGS.strings) == len(
        re.findall(r"^#define[ \t]+IRQLAB_\w+[ \t]+\S", text, re.M)
    )
    # ... and so is every string #define (the QOM names), in the header's order.
    strings = re.findall(r'^#define\s+(IRQLAB_\w+)\s+"([^"]*)"', text, re.M)
    assert list(REGS.strings.items()) == strings
    assert regs.QOM.PROP_FIFO_PUSH == "fifo-push"


def test_counters_fields_are_the_headers_counter_names() -> None:
    """The typed view of the counters property has the header's members, in its order."""
    import dataclasses

    from irqlab.vm.qmp.stats import Counters

    names = [key.replace("-", "_") for key in regs.QOM.with_prefix("COUNTER_").values()]
    assert [f.name for f in dataclasses.fields(Counters)] == names


def test_derived_values_follow_their_expressions() -> None:
    assert REGS.SRC_ALL == (1 << REGS.NUM_SOURCES) - 1
    assert REGS.ID_VALUE >> 16 == REGS.ID_MAGIC
    assert REGS.EVINFO_LINE_MASK == 0xFF << REGS.EVINFO_LINE_SHIFT
    assert REGS.FEAT_IRQ_MODE_MASK >> REGS.FEAT_IRQ_MODE_SHIFT == 0x3


def test_item_and_attribute_access_agree() -> None:
    assert REGS["IRQLAB_REG_ACK"] == REGS.REG_ACK == REGS.IRQLAB_REG_ACK
    assert "IRQLAB_REG_ACK" in REGS
    assert REGS.get("IRQLAB_NOPE") is None
    with pytest.raises(KeyError, match="IRQLAB_NOPE"):
        REGS["IRQLAB_NOPE"]
    with pytest.raises(AttributeError, match="IRQLAB_NOPE"):
        _ = REGS.NOPE


def test_with_prefix_strips_names() -> None:
    kinds = REGS.with_prefix("KIND_")
    assert set(kinds) == {"RISING", "FALLING", "LEVEL_HIGH", "LEVEL_LOW"}
    assert kinds["FALLING"] == REGS.KIND_FALLING
    assert REGS.with_prefix("REG_")["ACK"] == REGS.REG_ACK


def test_registers_are_distinct_aligned_and_inside_bar0() -> None:
    offsets = REGS.with_prefix("REG_")
    assert len(set(offsets.values())) == len(offsets)
    for name, off in offsets.items():
        assert off % 4 == 0, name
        assert 0 <= off < REGS.MSIX_TABLE_OFFSET < REGS.BAR0_SIZE, name


def test_load_from_explicit_path(tmp_path: Path) -> None:
    p = tmp_path / "h.h"
    p.write_text("#define IRQLAB_A 1\n")
    r = regs.load(p)
    assert dict(r) == {"IRQLAB_A": 1}
    assert r.source == str(p)


GOOD = """\
/* a header
 * with a block comment */
#ifndef IRQLAB_T_H
#define IRQLAB_T_H
#define IRQLAB_A        0x10   /* trailing comment */
#define IRQLAB_B        (IRQLAB_A << 2)  // line comment
#define IRQLAB_C        ((1 << 4) - 1)
#define IRQLAB_D        (~IRQLAB_C & 0xff)
#define IRQLAB_E        (IRQLAB_A | IRQLAB_C) >> 1
#define IRQLAB_F        10u
#define IRQLAB_G        0x1ULL + \\
                        2
#define IRQLAB_H        -1
#define IRQLAB_I        0
#define IRQLAB_SET_AT_START 1
#define IRQLAB_SET_AT_RUN 2
#define IRQLAB_SET_NEVER 3
#define IRQLAB_PROP_X   "x-y"  /* a QOM name */
#define IRQLAB_PROP_X_WHEN IRQLAB_SET_AT_RUN  /* ... and when it can be set */
#endif /* IRQLAB_T_H */
"""


def test_grammar() -> None:
    r = parse(GOOD)
    assert dict(r) == {
        "IRQLAB_A": 0x10,
        "IRQLAB_B": 0x40,
        "IRQLAB_C": 15,
        "IRQLAB_D": 0xF0,
        "IRQLAB_E": 0x1F >> 1,
        "IRQLAB_F": 10,
        "IRQLAB_G": 3,
        "IRQLAB_H": -1,
        "IRQLAB_I": 0,
        "IRQLAB_SET_AT_START": 1,
        "IRQLAB_SET_AT_RUN": 2,
        "IRQLAB_SET_NEVER": 3,
        "IRQLAB_PROP_X_WHEN": 2,
    }
    assert dict(r.strings) == {"IRQLAB_PROP_X": "x-y"} and r.strings.PROP_X == "x-y"
    assert r.prop_when == {"x-y": regs.AT_RUN}
    assert regs.props_when(regs.AT_RUN, r) == ("x-y",) and not regs.props_when(regs.NEVER, r)


def test_the_real_headers_marks_are_its_text() -> None:
    """Every property of the header has its mark, read from its text (none retyped): the
    QOM name of each IRQLAB_PROP_<NAME> -> the IRQLAB_SET_<mark> its _WHEN names."""
    text = regs.header_path().read_text()
    names = dict(re.findall(r'^#define\s+IRQLAB_PROP_(\w+)\s+"([^"]*)"', text, re.M))
    marks = dict(re.findall(r"^#define\s+IRQLAB_PROP_(\w+)_WHEN\s+IRQLAB_SET_(\w+)\b", text, re.M))
    assert sorted(marks) == sorted(names)
    assert REGS.prop_when == {names[n]: marks[n] for n in names}
    assert list(REGS.prop_when) == list(regs.QOM.with_prefix("PROP_").values())  # its order
    start = regs.props_when(regs.AT_START)
    assert regs.QOM.PROP_GPIO_LINES in start and regs.QOM.PROP_FIFO_PUSH not in start
    assert regs.QOM.PROP_FIFO_PUSH in regs.props_when(regs.AT_RUN)
    assert regs.QOM.PROP_COUNTERS in regs.props_when(regs.NEVER)
    assert sorted(start + regs.props_when(regs.AT_RUN) + regs.props_when(regs.NEVER)) == sorted(
        names.values()
    )
    with pytest.raises(ValueError, match="'AT_BOOT' is no property mark: one of AT_START"):
        regs.props_when("AT_BOOT")


MARKS = "#define IRQLAB_SET_AT_START 1\n#define IRQLAB_SET_AT_RUN 2\n#define IRQLAB_SET_NEVER 3\n"


@pytest.mark.parametrize(
    ("text", "line", "said"),
    [
        (MARKS + '#define IRQLAB_PROP_X "x"\n', 4,
         "IRQLAB_PROP_X has no IRQLAB_PROP_X_WHEN: when the property can be set, one of "
         "IRQLAB_SET_AT_START, IRQLAB_SET_AT_RUN, IRQLAB_SET_NEVER"),
        (MARKS + '#define IRQLAB_PROP_X "x"\n#define IRQLAB_PROP_X_WHEN 7\n', 5,
         "IRQLAB_PROP_X_WHEN is 7, none of the defined marks IRQLAB_SET_AT_START (1), "
         "IRQLAB_SET_AT_RUN (2), IRQLAB_SET_NEVER (3)"),
        ('#define IRQLAB_PROP_X "x"\n#define IRQLAB_PROP_X_WHEN 1\n', 2,
         "IRQLAB_PROP_X_WHEN is 1, none of the defined marks (none)"),
        (MARKS + '#define IRQLAB_PROP_X "x"\n#define IRQLAB_PROP_Y_WHEN 1\n', 5,
         "IRQLAB_PROP_Y_WHEN marks no property"),
        (MARKS + "#define IRQLAB_PROP_COUNT 1\n", 4, "IRQLAB_PROP_COUNT marks no property"),
        ("#define IRQLAB_SET_AT_BOOT 1\n", 1, "IRQLAB_SET_AT_BOOT is no property mark"),
        ("#define IRQLAB_SET_AT_START 1\n#define IRQLAB_SET_NEVER 1\n", 2,
         "IRQLAB_SET_NEVER is 1, as IRQLAB_SET_AT_START is: marks must differ"),
    ],
)  # fmt: skip
def test_a_property_mark_mistake_is_a_parse_error_at_its_line(
    text: str, line: int, said: str
) -> None:
    """A property without its mark would pass the device_props check whatever it is: the
    header says when each property can be set, or it does not parse."""
    with pytest.raises(HeaderParseError) as e:
        parse(text, "h.h")
    assert (e.value.line, e.value.message[: len(said)]) == (line, said), e.value


def test_the_register_header_grammar_is_the_uapi_headers() -> None:
    """One parser for both headers: what the uapi header may use, the register map may
    (the malformed headers of both are in test_uapi.py)."""
    r = parse("#define IRQLAB_A (2 * 3)\n#define IRQLAB_B 1 ^ 3\n#define IRQLAB_C 010\n")
    assert dict(r) == {"IRQLAB_A": 6, "IRQLAB_B": 2, "IRQLAB_C": 8}


def test_evaluate_does_not_execute_code() -> None:
    with pytest.raises(HeaderParseError):
        evaluate("(lambda: 1)()", {})
    with pytest.raises(HeaderParseError):
        evaluate("IRQLAB_A.x", {"IRQLAB_A": 1})
    assert evaluate("IRQLAB_A + 1", {"IRQLAB_A": 1}) == 2


# --- the layout checks, on copies of the real header with one line changed ------------


def _changed_header(tmp_path: Path, old: str, new: str) -> Path:
    """A copy of the real header with *old* (which must occur once) replaced by *new*."""
    text = regs.header_path().read_text(encoding="utf-8")
    assert text.count(old) == 1, old
    p = tmp_path / "irqlab-regs.h"
    p.write_text(text.replace(old, new), encoding="utf-8")
    return p


def _line_of(path: Path, needle: str) -> int:
    lines = path.read_text(encoding="utf-8").splitlines()
    return next(i for i, line in enumerate(lines, 1) if needle in line)


@pytest.mark.parametrize(
    ("old", "new", "at", "said"),
    [
        # a duplicate offset names both registers, at the second one's line
        (
            "IRQLAB_REG_SCRATCH        0x014",
            "IRQLAB_REG_SCRATCH        0x010",
            "IRQLAB_REG_SCRATCH ",
            "IRQLAB_REG_SCRATCH has offset 0x10, as IRQLAB_REG_IRQ_PENDING (line ",
        ),
        (
            "IRQLAB_REG_SCRATCH        0x014",
            "IRQLAB_REG_SCRATCH        0x015",
            "IRQLAB_REG_SCRATCH ",
            "IRQLAB_REG_SCRATCH (0x15) is not a 4-byte aligned offset",
        ),
        (
            "IRQLAB_REG_CNT_DROPPED    0x190",
            "IRQLAB_REG_CNT_DROPPED    0x800",
            "IRQLAB_REG_CNT_DROPPED ",
            "IRQLAB_REG_CNT_DROPPED (0x800) is not below IRQLAB_MSIX_TABLE_OFFSET (0x800)",
        ),
        (
            "IRQLAB_REG_CNT_DROPPED    0x190",
            "IRQLAB_REG_CNT_DROPPED    0x1000",
            "IRQLAB_REG_CNT_DROPPED ",
            "IRQLAB_REG_CNT_DROPPED (0x1000) is not below IRQLAB_MSIX_TABLE_OFFSET",
        ),
        (
            "IRQLAB_EVINFO_DROPPED     (1 << 17)",
            "IRQLAB_EVINFO_DROPPED     (1 << 16)",
            "IRQLAB_EVINFO_DROPPED ",
            "IRQLAB_EVINFO_* field IRQLAB_EVINFO_DROPPED (0x10000) overlaps "
            "IRQLAB_EVINFO_VALID (0x10000) (line ",
        ),
        (
            "IRQLAB_FEAT_BROKEN_INTX       (1 << 16)",
            "IRQLAB_FEAT_BROKEN_INTX       (1 << 9)",
            "IRQLAB_FEAT_BROKEN_INTX ",
            "IRQLAB_FEAT_* field IRQLAB_FEAT_BROKEN_INTX (0x200) overlaps "
            "IRQLAB_FEAT_IRQ_MODE_MASK (0x300)",
        ),
        (
            "(0x3 << IRQLAB_FEAT_IRQ_MODE_SHIFT)",
            "(0x3 << 10)",
            "IRQLAB_FEAT_IRQ_MODE_SHIFT ",
            "IRQLAB_FEAT_IRQ_MODE_SHIFT (0x8) is not the lowest bit of "
            "IRQLAB_FEAT_IRQ_MODE_MASK (0xc00)",
        ),
    ],
)
def test_a_layout_mistake_is_a_parse_error_naming_the_file_and_line(
    tmp_path: Path, old: str, new: str, at: str, said: str
) -> None:
    p = _changed_header(tmp_path, old, new)
    with pytest.raises(HeaderParseError) as err:
        regs.load(p)
    assert err.value.source == str(p)
    assert err.value.line == _line_of(p, f"#define {at}")
    assert said in err.value.message
    assert str(err.value).startswith(f"{p}:{err.value.line}: ")


def test_the_layout_checks_leave_values_that_are_no_fields_alone() -> None:
    """Only ``_MASK`` names and single-bit flags of a group with a ``_MASK``/``_SHIFT``
    are fields: a magic number beside its shift, registers at power-of-two offsets and
    a header without an MSI-X table or BAR size parse."""
    r = parse(
        "#define IRQLAB_ID_MAGIC 0x1a5b\n"
        "#define IRQLAB_ID_MAGIC_SHIFT 16\n"
        "#define IRQLAB_ID_VALUE ((IRQLAB_ID_MAGIC << IRQLAB_ID_MAGIC_SHIFT) | 0x0100)\n"
        "#define IRQLAB_REG_A 0x4\n"
        "#define IRQLAB_REG_A_MASK 0x8\n"
        "#define IRQLAB_REG_B 0x2000\n"
    )
    assert r.REG_B == 0x2000
    assert regs.field_groups(r) == {}
    assert regs.field_groups(REGS) == {
        "IRQLAB_FEAT_": ["IRQLAB_FEAT_GPIO_LINES_MASK", "IRQLAB_FEAT_IRQ_MODE_MASK",
                         "IRQLAB_FEAT_BROKEN_INTX"],
        "IRQLAB_EVINFO_": ["IRQLAB_EVINFO_SRC_MASK", "IRQLAB_EVINFO_LINE_MASK",
                           "IRQLAB_EVINFO_VALID", "IRQLAB_EVINFO_DROPPED",
                           "IRQLAB_EVINFO_KIND_MASK"],
    }  # fmt: skip


def test_bit_numbers_are_told_from_masks() -> None:
    """`irqlab regs` printed IRQLAB_SRC_FIFO 0x1 (a bit number) and IRQLAB_SRC_ALL 0x7
    (a mask) alike: the header's values say which is which."""
    kinds = regs.bit_numbers(REGS)
    assert kinds["IRQLAB_SRC_FIFO"] == f"bit {REGS.SRC_FIFO} of IRQLAB_SRC_ALL"
    assert kinds["IRQLAB_SRC_ALL"].startswith("mask of bits 0, ")
    assert kinds["IRQLAB_FEAT_IRQ_MODE_SHIFT"] == f"bit {REGS.FEAT_IRQ_MODE_SHIFT}"
    assert "IRQLAB_REG_IRQ_ENABLE" not in kinds and "IRQLAB_FEAT_IRQ_MODE_MASK" not in kinds
    # an _ALL that is no mask of the others' bits says nothing of them
    assert regs.bit_numbers({"IRQLAB_X_A": 1, "IRQLAB_X_B": 3, "IRQLAB_X_ALL": 3}) == {}


def test_irqlab_regs_prints_which_is_a_bit_number(capsys: pytest.CaptureFixture[str]) -> None:
    from irqlab.cli.main import main

    assert main(["regs", "SRC_"]) == 0
    out = {ln.split()[0]: ln for ln in capsys.readouterr().out.splitlines()}
    assert out["IRQLAB_SRC_FIFO"].endswith(f"{REGS.SRC_FIFO:#x}  (bit 1 of IRQLAB_SRC_ALL)")
    assert "(mask of bits" in out["IRQLAB_SRC_ALL"]
