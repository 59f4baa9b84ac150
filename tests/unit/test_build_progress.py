"""A guest start's image build says so past pytest's capture (one line per build); its
steps stay on stderr, where every build writes them."""

from __future__ import annotations

import pytest

from irqlab import notice
from irqlab.vm.guest import _build_progress


def test_a_build_s_first_line_is_a_notice_and_its_steps_are_not(
    capsys: pytest.CaptureFixture[str],
) -> None:
    said: list[str] = []
    old = notice.set_sink(said.append)
    try:
        _build_progress("guest image 40b8b818c7fcbb98: building /cache/image-40b8b818c7fcbb98")
        _build_progress("fetch Debian packages ...")
    finally:
        notice.set_sink(old)
    assert said == ["[irqlab] guest image 40b8b818c7fcbb98: building /cache/image-40b8b818c7fcbb98"]
    assert capsys.readouterr().err == "[irqlab] fetch Debian packages ...\n"
