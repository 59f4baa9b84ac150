"""Debian packages: the pool and each unpacked tree are filled under a lock of their own."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from irqlab.build import debs
from irqlab.build.steps import BuildError, StepLog


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
        assert debs.extracted(deb, steps) == root  # unpacked: no second unpack
    assert (root / "file").read_text() == deb.name
    # the second use takes the lock too: it marks the tree used where a prune looks
    assert locks == [(root.with_name("gpiod_1.6_amd64.lock"), f"unpacking {deb.name}")] * 2


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


_FAKE_APT = """#!/bin/sh
# a fake `apt-get download`: writes each package's .deb in the working directory;
# with $FAKE_APT_DIE it writes half of the first one and dies (a killed download)
for spec in "$@"; do
    case "$spec" in -*|download|APT::*) continue ;; esac
    name=${spec%%=*}; version=${spec#*=}
    if [ -n "$FAKE_APT_DIE" ]; then
        printf half > "${name}_${version}_all.deb"
        kill -KILL $$
    fi
    printf whole > "${name}_${version}_all.deb"
done
"""


@pytest.fixture
def fake_apt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache in *tmp_path*; ``apt-get`` on PATH is :data:`_FAKE_APT`."""
    monkeypatch.setenv("IRQLAB_CACHE_DIR", str(tmp_path / "cache"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "apt-get").write_text(_FAKE_APT)
    (bin_dir / "apt-get").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")


@pytest.mark.usefixtures("fake_apt")
def test_a_killed_download_leaves_nothing_the_next_build_trusts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``apt-get download`` killed mid-file (Ctrl-C, SIGKILL, a CI timeout) left a cut
    .deb in the pool under its final name, which every later build took as downloaded
    (and failed on in dpkg-deb): apt now writes into a partial directory whose files
    reach the pool only when it exits 0."""
    pool = tmp_path / "pool"
    pkg = debs.Package("gpiod", "1.6", "all")
    with StepLog(tmp_path / "build.log", lambda _m: None) as steps:
        monkeypatch.setenv("FAKE_APT_DIE", "1")
        with pytest.raises(BuildError):
            debs.download([pkg], steps, pool)
        assert not (pool / pkg.deb_name).exists()
        assert [p.name for p in pool.iterdir()] == [".lock"]  # no partial dir left
        monkeypatch.delenv("FAKE_APT_DIE")
        assert debs.download([pkg], steps, pool) == {"gpiod": pool / pkg.deb_name}
    assert (pool / pkg.deb_name).read_text() == "whole"


def test_a_dead_processs_partial_download_is_swept(tmp_path: Path) -> None:
    """A process killed while apt-get ran (SIGKILL: no cleanup) left its partial
    directory; the next download under the pool's lock removes it, not a live one's."""
    pool = tmp_path / "pool"
    dead = subprocess.Popen(["true"])
    dead.wait()
    (pool / f"partial-{dead.pid}").mkdir(parents=True)
    (pool / f"partial-{dead.pid}" / "x_1_all.deb").write_text("half")
    (pool / f"partial-{os.getppid()}").mkdir()
    pkg = debs.Package("gpiod", "1.6", "all")
    (pool / pkg.deb_name).write_text("whole")
    with StepLog(tmp_path / "build.log", lambda _m: None) as steps:
        debs.download([pkg], steps, pool)
    assert not (pool / f"partial-{dead.pid}").exists()
    assert (pool / f"partial-{os.getppid()}").is_dir()


@pytest.mark.usefixtures("fake_apt")
def test_a_cut_deb_already_in_the_pool_is_downloaded_again(tmp_path: Path) -> None:
    """A cache that already holds a .deb cut by a killed download (before downloads went
    through a partial directory) heals: a pool file whose size is not apt's ``Size:`` is
    removed and fetched again; one of the right size is trusted."""
    pool = tmp_path / "pool"
    pool.mkdir()
    cut = debs.Package("gpiod", "1.6", "all", size=len("whole"))
    whole = debs.Package("kmod", "30", "all", size=len("whole"))
    (pool / cut.deb_name).write_text("half")
    (pool / whole.deb_name).write_text("kept!")  # the right size: not fetched again
    with StepLog(tmp_path / "build.log", lambda _m: None) as steps:
        debs.download([cut, whole], steps, pool)
    assert (pool / cut.deb_name).read_text() == "whole"
    assert (pool / whole.deb_name).read_text() == "kept!"


def test_apt_sizes_are_read_and_memoised() -> None:
    text = "Package: gpiod\nVersion: 1.6\nArchitecture: amd64\nSize: 12345\n"
    pkg = debs.packages_from_show(text)["gpiod"]
    assert pkg.size == 12345
    assert debs._from_json("gpiod", debs._to_json(pkg)) == pkg
