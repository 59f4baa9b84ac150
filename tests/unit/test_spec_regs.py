"""The device's spec, ``qemu-device/irqlab.rst``, lists the register map of the header:
its "Registers (BAR0)" table has exactly the header's ``IRQLAB_REG_*`` registers, at the
header's offsets, in the access the header's comment states (where it states one: the
parser drops comments, so the access is read from the header's text here)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from irqlab.contract import regs
from irqlab.contract.spec import ACCESS, SpecError, registers, spec_path

# How the header's comments spell an access the spec spells otherwise.
HEADER_ACCESS = {"RW1C": "W1C"}
_HEADER_REG_RE = re.compile(
    r"^#define\s+IRQLAB_REG_(?P<name>\w+)\s+[^/\n]*?(?:/\*(?P<comment>.*?)\*/)?\s*$", re.M
)


def header_access(text: str) -> dict[str, str]:
    """Name -> the access a register's comment in the header states (the spec's word for
    it); registers whose comment states none are left out.  ``RO / W1C`` states both,
    and the spec's access must be one of them: the last one is kept."""
    out: dict[str, str] = {}
    for m in _HEADER_REG_RE.finditer(text):
        words = re.findall(r"\b(RW1C|W1C|RO|RW|WO)\b", m.group("comment") or "")
        if words:
            out[m.group("name")] = HEADER_ACCESS.get(words[-1], words[-1])
    return out


def check(spec_text: str, header: regs.Regs, header_text: str) -> list[str]:
    """What differs between the spec's table and the header, one line each."""
    spec = registers(spec_text)
    offsets = header.with_prefix("REG_")
    access = header_access(header_text)
    problems = [f"{n}: in the header, not in the spec" for n in offsets if n not in spec]
    problems += [f"{n}: in the spec, not in the header" for n in spec if n not in offsets]
    for name, row in spec.items():
        offset, acc = row.offset, row.access
        if name not in offsets:
            continue
        if offset != offsets[name]:
            problems.append(f"{name}: spec {offset:#05x}, header {offsets[name]:#05x}")
        if acc not in ACCESS:
            problems.append(f"{name}: spec access {acc!r} is none of {ACCESS}")
        elif name in access and access[name] != acc:
            problems.append(f"{name}: spec access {acc}, header comment {access[name]}")
    return problems


def _spec_text() -> str:
    return spec_path().read_text(encoding="utf-8")


def test_the_specs_register_table_is_the_headers_register_map() -> None:
    header_text = regs.header_path().read_text(encoding="utf-8")
    problems = check(_spec_text(), regs.REGS, header_text)
    assert not problems, f"{spec_path()} against {regs.REGS.source}:\n" + "\n".join(problems)
    assert list(registers()) == list(regs.REGS.with_prefix("REG_"))  # in the header's order
    assert len(registers(_spec_text())) == len(regs.REGS.with_prefix("REG_"))
    # The access of most registers is stated in the header too, so it is compared.
    assert len(header_access(header_text)) > 30


@pytest.mark.parametrize(
    ("spec_edit", "header_edit", "said"),
    [
        (("0x014   SCRATCH  ", "0x018   SCRATCH  "), None, "SCRATCH: spec 0x018, header 0x014"),
        (("0x014   SCRATCH  ", "0x014   SCRATCHY "), None,
         "SCRATCH: in the header, not in the spec\nSCRATCHY: in the spec, not in the header"),
        (None, ("0x014    /* RW", "0x014    /* RO"), "SCRATCH: spec access RW, header comment RO"),
        (("0x014   SCRATCH                  RW", "0x014   SCRATCH                  R/W"),
         None, "SCRATCH: spec access 'R/W' is none of"),
        (None, ("#define IRQLAB_REG_CNT_DROPPED    0x190\n",
                "#define IRQLAB_REG_CNT_DROPPED    0x190\n#define IRQLAB_REG_NEW 0x194 /* RW */\n"),
         "NEW: in the header, not in the spec"),
    ],
)  # fmt: skip
def test_a_difference_is_named(
    tmp_path: Path,
    spec_edit: tuple[str, str] | None,
    header_edit: tuple[str, str] | None,
    said: str,
) -> None:
    """Each difference is one line naming the register (a rename is two)."""
    spec_text = _spec_text()
    header_text = regs.header_path().read_text(encoding="utf-8")
    if spec_edit:
        assert spec_text.count(spec_edit[0]) == 1
        spec_text = spec_text.replace(*spec_edit)
    if header_edit:
        assert header_text.count(header_edit[0]) == 1
        header_text = header_text.replace(*header_edit)
    copy = tmp_path / "irqlab-regs.h"
    copy.write_text(header_text, encoding="utf-8")
    problems = check(spec_text, regs.load(copy), header_text)
    assert len(problems) == len(said.splitlines()), problems
    for problem, want in zip(problems, said.splitlines(), strict=True):
        assert want in problem


def test_a_table_that_cannot_be_read_is_an_error() -> None:
    with pytest.raises(SpecError, match="no 'Registers"):
        registers("Registers\n---------\n")
    bad = _spec_text().replace("0x014   SCRATCH", "0x014   scratch", 1)
    with pytest.raises(SpecError, match="not an 'offset name access' row"):
        registers(bad)
