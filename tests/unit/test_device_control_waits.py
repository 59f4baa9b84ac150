"""DeviceControl's burst wait, called as a script calls it: ``d.wait_burst_done()``
was a TypeError (its *what*, the name the timeout's error gives the wait, was
required), although the README's other waits need no name."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from irqlab.testing.helpers import DeviceControl, WaitTimeout


class _Injector:
    def __init__(self, left: list[int]) -> None:
        self.left = left  # what burst_remaining says, one reading after another

    def burst_remaining(self) -> int:
        return self.left.pop(0) if len(self.left) > 1 else self.left[0]


def _device(left: list[int]) -> DeviceControl:
    guest: Any = SimpleNamespace(injector=_Injector(left))
    return DeviceControl(guest)


def test_the_burst_wait_needs_no_name() -> None:
    _device([3, 1, 0]).wait_burst_done()
    with pytest.raises(WaitTimeout, match=r"^the burst generator's steps left never .*: 2$"):
        _device([2]).wait_burst_done(timeout=0.05)
    with pytest.raises(WaitTimeout, match=r"^my storm never satisfied the condition"):
        _device([2]).wait_burst_done("my storm", timeout=0.05)
