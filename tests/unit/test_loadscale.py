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


@pytest.mark.parametrize("value", ["not a number", "-1", "inf", "nan"])
def test_a_bad_floor_is_refused_before_a_guest_starts(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    from irqlab.vm.guest import Guest, GuestConfig, GuestConfigError
    from irqlab.vm.loadscale import check_environment

    monkeypatch.setenv("IRQLAB_TIMEOUT_SCALE", value)
    with pytest.raises(ValueError, match=r"IRQLAB_TIMEOUT_SCALE=.* is not a number >= 0"):
        check_environment()
    g = Guest(GuestConfig(name="bad-scale"))
    # refused before the prerequisites are looked for (nothing built, nothing started)
    monkeypatch.setattr(g, "find_prerequisites", lambda: pytest.fail("looked further"))
    with pytest.raises(GuestConfigError, match="IRQLAB_TIMEOUT_SCALE"):
        g.prepare()


@pytest.mark.parametrize("value", ["", "0", "2.5"])
def test_a_good_floor_passes(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    from irqlab.vm.loadscale import check_environment

    monkeypatch.setenv("IRQLAB_TIMEOUT_SCALE", value)
    check_environment()
