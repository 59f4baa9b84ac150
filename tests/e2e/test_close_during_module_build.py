"""close() from another thread while start() prepares: builds the driver module (the
real make against the guest kernel's headers) or asks apt (its answers not memoised):
the start ends within seconds with GuestError naming the step, the command's process
group is gone, and the cache holds no module output (nor its .tmp).  The start waited
for the whole prepare (apt's lookups, the module's and the image's builds: 37-58 s
here), and only then said it was closed.

The build cache is a copy of the session's (hard links) without its driver modules,
images and snapshots: the start must build the module, and the session's cache is left
as it was."""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from irqlab.build import kmod
from irqlab.build.kernel import ensure_kernel
from irqlab.paths import cache_dir
from irqlab.testing.helpers import host_processes, process_exited, start_closed_meanwhile
from irqlab.vm import proc
from irqlab.vm.guest import Guest, GuestConfig, GuestError
from irqlab.vm.loadscale import scaled

ENDED_S = 5.0  # from close() to the start's end: SIGTERM, at most 1 s, SIGKILL; load
# what a start needs before the module's build, besides what it builds
NOT_COPIED = ("kmod-", "image-", "snapshot-", "test-kmod-", "qemu/", "ccache/", "logs/")


@pytest.fixture
def module_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """$IRQLAB_CACHE_DIR: the session's cache hard-linked, without what is built from
    the driver's sources (builds write new files and rename them into place: nothing
    shared is modified), nor its lock files (a lock of the copy's would be the same file
    as the session cache's: another run's lock)."""
    source = cache_dir()
    copy = tmp_path / "cache"
    copy.mkdir()
    for entry in sorted(source.iterdir()):
        name = entry.name + ("/" if entry.is_dir() else "")
        if not name.startswith(NOT_COPIED) and not name.endswith(".lock"):
            subprocess.run(["cp", "-al", str(entry), str(copy)], check=True)
    for lock in [*copy.glob("*/.lock"), *copy.glob("*/*/.lock"), *copy.glob("debs/x/*.lock")]:
        lock.unlink()
    monkeypatch.setenv("IRQLAB_CACHE_DIR", str(copy))
    return copy


@pytest.mark.parametrize(
    ("program", "step"),
    [
        ("make", "build step 'make modules' (make "),
        # apt's answers not memoised (apt's lists changed: it took ~45 s there)
        ("apt-cache", "asking apt for "),
    ],
)
def test_a_close_during_a_prepare_command_ends_the_start(
    module_cache: Path, monkeypatch: pytest.MonkeyPatch, program: str, step: str
) -> None:
    digest = kmod.current_digest(ensure_kernel())
    output = module_cache / f"kmod-{digest}"
    assert not output.exists()
    if program == "apt-cache":
        for memo in module_cache.glob("debs/apt-show-*.json"):
            memo.unlink()  # the copy's link: the session cache keeps its memos
    make_started = threading.Event()
    makes: list[int] = []
    real_spawn = proc.spawn

    def spawn(argv: Sequence[str | Path], **kw: Any) -> Any:
        p = real_spawn(argv, **kw)
        if str(argv[0]) == program and not make_started.is_set():
            makes.append(p.pid)
            make_started.set()
        return p

    monkeypatch.setattr(proc, "spawn", spawn)

    def building() -> None:
        assert make_started.wait(scaled(120)), f"the start ran no {program}"

    g = Guest(GuestConfig(name="close-in-build"))
    e, took = start_closed_meanwhile(g, building, scaled(120))
    assert isinstance(e, GuestError), repr(e)
    assert str(e).startswith(
        "the guest 'close-in-build' was closed (or restarted) by another thread while it "
        f"started (preparing: {step}"
    ), e
    print(f"the start ended {took:.2f} s after the close began")
    assert took < scaled(ENDED_S), took
    assert g.machine is None
    (pgid,) = makes
    assert process_exited(pgid, scaled(2))
    for p in host_processes():  # make's compilers: exiting at most
        if p.pgrp == pgid and not p.exited:
            assert process_exited(p.pid, scaled(2)), p
    assert not output.exists(), sorted(os.listdir(output))
    assert not output.with_name(output.name + ".tmp").exists()
    assert not [p for p in module_cache.iterdir() if p.name.startswith("image-")]
