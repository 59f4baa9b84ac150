"""Where the bench commands write when irqlab runs from an installed wheel: the build
cache, as the logs (an installed wheel wrote into its own venv,
``<venv>/lib/python3.11/build/bench/<stamp>``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from irqlab import paths
from irqlab.bench import env, host, peers, runner


@pytest.fixture
def wheel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """irqlab as an installed wheel (no checkout) with the cache in *tmp_path*."""
    monkeypatch.setattr(paths, "checkout_root", lambda: None)
    monkeypatch.setenv("IRQLAB_CACHE_DIR", str(tmp_path / "cache"))
    return (tmp_path / "cache").resolve()


def test_an_installed_wheel_writes_into_the_cache_dir(wheel: Path) -> None:
    assert runner.default_out_dir("s") == wheel / "bench" / "s"
    assert peers.peer_venv_dir() == wheel / "peer-venv"


def test_an_installed_wheel_names_no_commit_and_runs_no_test_all(
    wheel: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def run(*args: object, **kw: object) -> None:
        raise AssertionError(f"ran {args}")

    monkeypatch.setattr(host.subprocess, "run", run)
    assert env.git_commit() == {"commit": None, "dirty": None}
    assert host.test_all()["tail"] == [host.NO_CHECKOUT]


def test_a_checkout_writes_into_its_build_dir() -> None:
    root = paths.checkout_root()
    assert root is not None
    assert runner.default_out_dir("s") == root / "build" / "bench" / "s"
    assert peers.peer_venv_dir() == root / "build" / "peer-venv"


def test_bench_test_all_outside_a_checkout_is_a_usage_error(
    wheel: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from irqlab.cli.main import main

    assert main(["bench", "--test-all"]) == 2
    assert "--test-all: invoke test-all runs in irqlab's source checkout" in capsys.readouterr().err
