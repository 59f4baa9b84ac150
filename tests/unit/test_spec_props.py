"""The device's spec, ``qemu-device/irqlab.rst``, shows each property's mark: its
property tables' "When" column has exactly the header's properties, each with the mark
its ``IRQLAB_PROP_<NAME>_WHEN`` gives (``REGS.prop_when``)."""

from __future__ import annotations

import pytest

from irqlab.contract.regs import AT_RUN, AT_START, REGS, props_when
from irqlab.contract.spec import (
    SpecError,
    property_column,
    property_marks,
    property_types,
    spec_path,
)


def test_the_specs_property_tables_show_the_headers_marks() -> None:
    shown = property_marks()
    assert shown == REGS.prop_when, f"{spec_path()}'s 'When' column against {REGS.source}"
    assert set(shown.values()) >= {AT_START, AT_RUN}


TABLE = """\
=========  ======  ========  =======
Property   Type    When      Meaning
=========  ======  ========  =======
a          uint32  AT_RUN    one,
                             two
b-c        bool    AT_START  three
=========  ======  ========  =======

========  =====
Register  Acc.
========  =====
a         RW
========  =====
"""


def test_the_when_column_is_read_from_every_property_table() -> None:
    assert property_marks(TABLE) == {"a": AT_RUN, "b-c": AT_START}
    second = TABLE.split("\n\n")[0].replace("a    ", "d    ").replace("b-c", "e  ")
    assert property_marks(f"{TABLE}\n{second}\n") == {
        "a": AT_RUN, "b-c": AT_START, "d": AT_RUN, "e": AT_START
    }  # fmt: skip
    with pytest.raises(SpecError, match="property a is listed twice"):
        property_marks(TABLE + "\n" + TABLE)
    with pytest.raises(SpecError, match="no closing border"):
        property_marks(TABLE.split("b-c")[0])


def test_the_type_column_is_read_too() -> None:
    assert property_types(TABLE) == {"a": "uint32", "b-c": "bool"}
    with pytest.raises(SpecError, match="has no 'Access' column"):
        property_column("Access", TABLE)


def test_the_specs_start_time_properties_have_a_type() -> None:
    types = property_types()
    assert set(types) == set(REGS.prop_when)
    assert all(types[p] for p in props_when(AT_START)), types
