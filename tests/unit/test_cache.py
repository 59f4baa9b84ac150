"""The build cache: complete outputs, concurrent builders, pruning by recent use."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from irqlab.build import cache


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("IRQLAB_CACHE_DIR", str(tmp_path))
    return tmp_path


def _build(content: str) -> Callable[[Path], None]:
    def build(out: Path) -> None:
        (out / "f").write_text(content)

    return build


def test_build_once_then_hit() -> None:
    calls: list[Path] = []

    def build(out: Path) -> None:
        calls.append(out)
        (out / "f").write_text("x")

    a = cache.cached_build("thing", "0" * 16, build)
    b = cache.cached_build("thing", "0" * 16, build)
    assert a == b and len(calls) == 1 and (a / "f").read_text() == "x"


def test_failed_build_leaves_nothing_complete(tmp_path: Path) -> None:
    def build(out: Path) -> None:
        (out / "half").write_text("x")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        cache.cached_build("thing", "1" * 16, build)
    assert [e for e in cache.entries() if e.complete] == []


def test_prune_keeps_most_recently_used(tmp_path: Path) -> None:
    paths = [cache.cached_build("image", f"{i:016x}", _build(str(i))) for i in range(4)]
    for i, p in enumerate(paths):
        os.utime(p, (1000 + i, 1000 + i))
    cache.cached_build("image", f"{0:016x}", _build("0"))  # a hit marks it as used now
    (tmp_path / f"kmod-{9:016x}.tmp").mkdir()  # an interrupted build
    plan = cache.prune_plan(cache.entries(), keep=2)
    assert sorted(e.path.name for e in plan) == sorted(
        [paths[1].name, paths[2].name, f"kmod-{9:016x}.tmp"]
    )
    for e in plan:
        assert cache.remove_entry(e)
    left = {e.path.name for e in cache.entries()}
    assert left == {paths[0].name, paths[3].name}
