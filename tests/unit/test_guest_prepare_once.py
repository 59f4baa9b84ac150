"""``Guest.prepare()`` then ``start()`` (what ``irqlab run`` and ``shell`` do, to say a
cold boot before it begins) looks for the prerequisites once; a restart looks again."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from irqlab.vm import accel
from irqlab.vm.guest import Guest, GuestConfig


def _counted_guest(monkeypatch: pytest.MonkeyPatch) -> tuple[Guest, list[str]]:
    calls: list[str] = []
    g = Guest(GuestConfig(name="prepare-once", snapshot=False))

    def find() -> tuple[Any, Any, Path]:
        calls.append("find")
        return (
            SimpleNamespace(binary=Path("/nonexistent/qemu"), datadir=None),
            SimpleNamespace(arch="x86_64"),
            Path("/nonexistent/irqlab.ko"),
        )

    monkeypatch.setattr(g, "find_prerequisites", find)
    monkeypatch.setattr(accel, "choose", lambda *a, **k: SimpleNamespace(accel="tcg"))
    monkeypatch.setattr(g, "_cold_start", lambda: calls.append("boot"))
    return g, calls


def test_start_after_prepare_does_not_look_again(monkeypatch: pytest.MonkeyPatch) -> None:
    g, calls = _counted_guest(monkeypatch)
    g.prepare()
    g.start()
    assert calls == ["find", "boot"]


def test_start_alone_and_each_restart_look(monkeypatch: pytest.MonkeyPatch) -> None:
    g, calls = _counted_guest(monkeypatch)
    g.start()
    g.restart()
    assert calls == ["find", "boot", "find", "boot"]
