"""The agent's precomputed ABI (abi.json from the image recipe) equals parsing the header,
and is ignored when it was made from another header."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from irqlab.build.image import precomputed_abi
from irqlab.paths import packaged_file
from irqlab_agent import abi


@pytest.fixture
def shipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The agent's directory as the image lays it out: irqlab.h and abi.json side by side."""
    monkeypatch.setenv("IRQLAB_CACHE_DIR", str(tmp_path / "cache"))
    header = packaged_file("irqlab.h", "guest-kmod/include/uapi/linux/irqlab.h")
    d = tmp_path / "irqlab_agent"
    d.mkdir()
    shutil.copy(header, d / "irqlab.h")
    shutil.copy(precomputed_abi(header), d / abi.PRECOMPUTED)
    return d


def test_precomputed_equals_parsed(shipped: Path) -> None:
    header = shipped / "irqlab.h"
    pre = abi._precomputed(header)
    assert pre is not None
    assert pre == json.loads(json.dumps(abi.load_spec(header)))
    assert abi.load_abi(header).summary() == abi.Abi(abi.load_spec(header)).summary()


def test_stale_precomputed_is_ignored(shipped: Path) -> None:
    header = shipped / "irqlab.h"
    header.write_text(header.read_text() + "\n/* changed */\n")
    assert abi._precomputed(header) is None
    assert abi.load_abi(header).record.size > 0  # parsed from the header instead
