"""Liveness limits stretch with the host's load (irqlab.vm.loadscale)."""

from __future__ import annotations

import pytest

from irqlab.vm.loadscale import MAX_SCALE, scaled, timeout_scale


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IRQLAB_TIMEOUT_SCALE", raising=False)
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)


def test_an_idle_machine_keeps_the_nominal_limits() -> None:
    assert timeout_scale(load=0.3, cpus=2) == 1.0
    assert scaled(10.0, load=1.9, cpus=2) == 10.0


def test_the_run_queue_per_core_stretches_them() -> None:
    assert timeout_scale(load=8.0, cpus=2) == 4.0
    assert scaled(3.0, load=6.0, cpus=2) == pytest.approx(9.0)


def test_workers_per_core_count_before_the_load_average_moved(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "4")
    assert timeout_scale(load=0.5, cpus=2) == 2.0
    assert timeout_scale(load=0.5, cpus=4) == 1.0


def test_the_environment_sets_a_floor_and_the_scale_is_capped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IRQLAB_TIMEOUT_SCALE", "3")
    assert timeout_scale(load=0.0, cpus=2) == 3.0
    assert timeout_scale(load=100.0, cpus=2) == MAX_SCALE
    monkeypatch.setenv("IRQLAB_TIMEOUT_SCALE", "not a number")
    assert timeout_scale(load=0.0, cpus=2) == 1.0
