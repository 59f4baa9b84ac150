"""Fixtures shared by the unit tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from irqlab.contract import uapi


@pytest.fixture
def abi_json(tmp_path: Path) -> Path:
    """The real ABI artifact (abi.json of the uapi header, made by the host's header parser
    as the image build makes it), for running the agent on the host."""
    path = tmp_path / "abi.json"
    path.write_text(uapi.abi_json(uapi.header_path()))
    return path
