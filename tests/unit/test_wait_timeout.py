"""The helpers' waits (wait_until, DeviceControl.wait_counters, ...) ran out with a plain
AssertionError: a script's ``except TimeoutError`` (what catches every other wait of
the library) missed it.  It is both now, and an IrqlabError."""

from __future__ import annotations

import pytest

from irqlab.errors import IrqlabError
from irqlab.testing.helpers import WaitTimeout, wait_until


def test_a_wait_that_runs_out_is_an_assertion_a_timeout_and_ours() -> None:
    with pytest.raises(WaitTimeout) as info:
        wait_until(lambda: 7, lambda v: v > 7, 0.05, "the counter")
    e = info.value
    assert isinstance(e, AssertionError) and isinstance(e, TimeoutError)
    assert isinstance(e, IrqlabError)
    assert str(e) == "the counter never satisfied the condition within 0.05 s: 7"
