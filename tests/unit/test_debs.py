"""Debian packages: the pool and each unpacked tree are filled under a lock of their own."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from irqlab.build import debs
from irqlab.build.steps import StepLog


@pytest.fixture
def locks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[tuple[Path, str]]:
    """The cache in *tmp_path*, unpacking replaced (it must run under a lock); every
    lock debs takes, as (file, what the holder is doing)."""
    monkeypatch.setenv("IRQLAB_CACHE_DIR", str(tmp_path / "cache"))
    taken: list[tuple[Path, str]] = []
    held = [False]

    @contextlib.contextmanager
    def lock(path: Path, what: str) -> Iterator[None]:
        taken.append((path, what))
        held[0] = True
        try:
            yield
        finally:
            held[0] = False

    def extract(deb: Path, dest: Path, steps: StepLog) -> None:
        assert held[0], "unpacked outside the lock"
        dest.mkdir(parents=True)
        (dest / "file").write_text(deb.name)

    monkeypatch.setattr(debs, "exclusive_lock", lock)
    monkeypatch.setattr(debs, "extract_into", extract)
    return taken


def test_a_package_is_unpacked_once_under_its_own_lock(
    tmp_path: Path, locks: list[tuple[Path, str]]
) -> None:
    deb = tmp_path / "gpiod_1.6_amd64.deb"
    with StepLog(tmp_path / "build.log", lambda _m: None) as steps:
        root = debs.extracted(deb, steps)
        assert debs.extracted(deb, steps) == root  # unpacked: no lock, no second unpack
    assert (root / "file").read_text() == deb.name
    assert locks == [(root.with_name("gpiod_1.6_amd64.lock"), f"unpacking {deb.name}")]


def test_the_pool_is_filled_under_its_lock(tmp_path: Path, locks: list[tuple[Path, str]]) -> None:
    pool = tmp_path / "pool"
    pkg = debs.Package("gpiod", "1.6", "all")
    pool.mkdir()
    (pool / pkg.deb_name).write_bytes(b"")  # there already: nothing to download
    with StepLog(tmp_path / "build.log", lambda _m: None) as steps:
        assert debs.download([pkg], steps, pool) == {"gpiod": pool / pkg.deb_name}
    assert locks == [(pool / ".lock", "downloading Debian packages")]


def test_not_root_every_install_is_refused_in_one_wording(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A build step's apt install said "missing packages P: install them (needs root)",
    a tool's "W needs P, not installed: apt-get install P (as root)", QEMU's runtime
    "install their packages as root: apt-get install P": one helper says it now."""
    from irqlab.build.steps import BuildError

    monkeypatch.setattr(debs, "missing_packages", lambda names: list(names))
    monkeypatch.setattr(debs.os, "geteuid", lambda: 1000)
    said = debs.install_refusal(["gcc", "make"], "building x")
    assert said == "building x needs gcc make, not installed: apt-get install gcc make (as root)"
    with pytest.raises(debs.AptError) as tool:
        debs.ensure_host_packages(["gcc", "make"], "building x")
    assert str(tool.value) == said
    with StepLog(tmp_path / "build.log") as steps, pytest.raises(BuildError) as step:
        debs.ensure_apt_packages(steps, ["gcc", "make"], step="cc")
    assert f"'cc' failed: {debs.install_refusal(['gcc', 'make'])} (log: " in str(step.value)
