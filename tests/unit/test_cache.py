"""The build cache: complete outputs, concurrent builders, pruning by recent use."""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import fake_cache  # same directory (rootdir-relative import)
import pytest

from irqlab.build import cache, outputs
from irqlab.testing.helpers import wait_until


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

    a = cache.cached_build("kmod", "0" * 16, build)
    b = cache.cached_build("kmod", "0" * 16, build)
    assert a == b and len(calls) == 1 and (a / "f").read_text() == "x"


def test_only_irqlabs_recipes_build_into_the_cache() -> None:
    """The cache lists and prunes only the recipes it knows: one it does not would be
    left alone, so building one is a mistake said at once."""
    with pytest.raises(ValueError, match="'project' is no recipe"):
        cache.cached_build("project", "0" * 16, _build("x"))
    assert outputs.is_recipe("test-kmod-read_window") and not outputs.is_recipe("test-kmod-")


@pytest.mark.parametrize("digest", ["second-save-0123456789ab", "0" * 15, "0" * 17, "A" * 16])
def test_only_digests_name_outputs(tmp_path: Path, digest: str) -> None:
    """snapshot.save(m, "second-save-...") stored a 140 MB snapshot that no lookup,
    listing, discard or prune ever found again (their pattern: 16 hex digits)."""
    with pytest.raises(ValueError, match="is no digest of an output"):
        cache.cached_build("snapshot", digest, _build("x"))
    assert not list(tmp_path.parent.glob(f"*{digest}*"))


def test_failed_build_leaves_nothing_complete(tmp_path: Path) -> None:
    def build(out: Path) -> None:
        (out / "half").write_text("x")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        cache.cached_build("kmod", "1" * 16, build)
    assert [e for e in cache.entries() if e.complete] == []


def test_prune_keeps_most_recently_used(tmp_path: Path) -> None:
    paths = [cache.cached_build("kmod", f"{i:016x}", _build(str(i))) for i in range(4)]
    for i, p in enumerate(paths):
        os.utime(p, (1000 + i, 1000 + i))
    cache.cached_build("kmod", f"{0:016x}", _build("0"))  # a hit marks it as used now
    (tmp_path / f"image-{9:016x}.tmp").mkdir()  # an interrupted build
    plan = cache.prune_plan(cache.entries(), keep=2)
    assert sorted(e.path.name for e in plan) == sorted(
        [paths[1].name, paths[2].name, f"image-{9:016x}.tmp"]
    )
    for e in plan:
        assert cache.remove_entry(e)
    left = {e.path.name for e in cache.entries()}
    assert left == {paths[0].name, paths[3].name}


# --- what an output is for: groups ------------------------------------------------------


def test_entries_name_arch_and_variant_from_the_outputs_own_files(tmp_path: Path) -> None:
    fake_cache.qemu(tmp_path, 1, "x86_64", 100)
    fake_cache.qemu(tmp_path, 2, "aarch64", 100)
    fake_cache.kernel(tmp_path, 3, "6.1.0-57-arm64", 100)
    fake_cache.kmod(tmp_path, 4, fake_cache.EM_AARCH64, 100)
    fake_cache.image(tmp_path, 5, 100, extra=("gpiod", "rt-tests"))
    fake_cache.image(tmp_path, 6, 100, abi="6.1.0-57-arm64", extra=(), module=None)
    fake_cache.output(tmp_path, "test-kmod-read_window", 7, {"read_window.ko": fake_cache.elf(62)})
    fake_cache.output(tmp_path, "dtb", 8, {"key.dtb": "x"})
    got = {e.path.name: (e.arch, e.detail) for e in cache.entries()}
    assert got == {
        f"qemu-{fake_cache.digest(1)}": ("x86_64", ""),
        f"qemu-{fake_cache.digest(2)}": ("aarch64", ""),
        f"kernel-{fake_cache.digest(3)}": ("aarch64", ""),
        f"kmod-{fake_cache.digest(4)}": ("aarch64", ""),
        f"image-{fake_cache.digest(5)}": ("x86_64", "+gpiod,rt-tests"),
        f"image-{fake_cache.digest(6)}": ("aarch64", "no extra packages, no module"),
        f"test-kmod-read_window-{fake_cache.digest(7)}": ("x86_64", ""),
        f"dtb-{fake_cache.digest(8)}": ("", ""),
    }
    assert [e.name for e in cache.entries(recipe="qemu")] == ["qemu", "qemu"]


def test_an_image_variant_is_its_package_set_recorded_or_not(tmp_path: Path) -> None:
    """Images from before the variant was recorded group with the recorded ones that ship
    the same packages; other extra packages, no module or another arch: other groups."""
    old = fake_cache.image(tmp_path, 1, 100, recorded=False)
    new = fake_cache.image(tmp_path, 2, 200)
    rt = fake_cache.image(tmp_path, 3, 300, extra=("gpiod", "rt-tests"))
    bare = fake_cache.image(tmp_path, 4, 400, module=None)
    arm = fake_cache.image(tmp_path, 5, 500, abi="6.1.0-57-arm64")
    by_path = {e.path: e for e in cache.entries()}
    assert by_path[old].group == by_path[new].group
    assert "extras not recorded" in by_path[old].detail and by_path[new].detail == "+gpiod"
    groups = {by_path[p].group for p in (new, rt, bare, arm)}
    assert len(groups) == 4
    more = fake_cache.image(tmp_path, 6, 600, kernel_modules=("crc_itu_t",))
    entry = next(e for e in cache.entries() if e.path == more)
    assert entry.group != by_path[new].group and "kernel modules crc_itu_t" in entry.detail


def test_prune_keeps_the_newest_of_each_architecture(tmp_path: Path) -> None:
    """The review's case: a newer aarch64 QEMU does not push out the x86_64 one."""
    x86 = fake_cache.qemu(tmp_path, 1, "x86_64", 100)
    x86_old = fake_cache.qemu(tmp_path, 2, "x86_64", 50)
    arm = fake_cache.qemu(tmp_path, 3, "aarch64", 200)
    k_amd = fake_cache.kernel(tmp_path, 4, "6.1.0-57-amd64", 10)
    k_arm = fake_cache.kernel(tmp_path, 5, "6.1.0-57-arm64", 300)
    plan = cache.prune_plan(cache.entries(), keep=1)
    assert [e.path for e in plan] == [x86_old]
    assert {x86, arm, k_amd, k_arm}.isdisjoint(e.path for e in plan)


def test_prune_never_plans_protected_outputs_and_zero_keeps_only_those(tmp_path: Path) -> None:
    paths = [fake_cache.kmod(tmp_path, i, fake_cache.EM_X86_64, 100 + i) for i in range(5)]
    protected = {paths[0]}  # the oldest: say, what this checkout resolves to
    plan = {e.path for e in cache.prune_plan(cache.entries(), keep=2, protected=protected)}
    assert plan == {paths[1], paths[2]}
    plan = {e.path for e in cache.prune_plan(cache.entries(), keep=0, protected=protected)}
    assert plan == set(paths[1:])
    with pytest.raises(ValueError, match="0 or more"):
        cache.prune_plan(cache.entries(), keep=-1)


# --- in use: a running QEMU's outputs ------------------------------------------------------


def test_a_held_output_is_in_use_and_not_removed(tmp_path: Path) -> None:
    out = fake_cache.qemu(tmp_path, 1, "x86_64", 100)
    (entry,) = cache.entries()
    with cache.hold([out]) as held:
        assert held.paths == (out,)
        assert cache.in_use(out)
        assert not cache.remove_entry(entry)
        # another process (another terminal's `irqlab cache --prune`) sees it too
        code = (
            "import sys; from irqlab.build import cache; "
            "e = cache.entries()[0]; sys.exit(0 if cache.remove_entry(e) else 3)"
        )
        r = subprocess.run([sys.executable, "-c", code], check=False)
        assert r.returncode == 3 and cache.is_complete(out)
    assert not cache.in_use(out)
    assert cache.remove_entry(entry) and not out.exists()


def test_holding_waits_for_a_removal_but_not_forever(tmp_path: Path) -> None:
    """A remover that holds its lock (stopped with Ctrl-Z mid-rmtree) makes a guest
    start fail after the timeout, naming the output, instead of hanging it."""
    out = fake_cache.qemu(tmp_path, 1, "x86_64", 100)
    fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # what remove_entry holds while it removes
        t0 = time.monotonic()
        with pytest.raises(cache.CacheBusy, match=re.escape(str(out))):
            cache.hold([out], timeout=0.3)
        assert 0.3 <= time.monotonic() - t0 < 5
        fcntl.flock(fd, fcntl.LOCK_UN)  # the removal gave up: the hold goes through
        with cache.hold([out], timeout=0.3):
            assert cache.in_use(out)
    finally:
        os.close(fd)


def test_an_output_that_cannot_be_opened_is_left_not_raised(tmp_path: Path) -> None:
    """`irqlab cache --prune` goes on past an entry it cannot open (here a file where
    an output directory should be): not removed, no exception, its lock file kept."""
    odd = tmp_path / f"kmod-{fake_cache.digest(1)}"
    odd.write_text("not a directory")
    entry = cache.CacheEntry("kmod", fake_cache.digest(1), odd, True, 0.0)
    assert cache.remove_entry(entry) is False
    assert odd.is_file() and (tmp_path / f"kmod-{fake_cache.digest(1)}.lock").exists()


def test_a_refused_removal_says_so_and_is_not_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """rmtree(ignore_errors=True) said "removed" of an immutable output still there."""
    out = fake_cache.qemu(tmp_path, 1, "x86_64", 100)
    (entry,) = cache.entries()

    def refused(path: object, *a: object, **kw: object) -> None:
        raise PermissionError(13, "Permission denied", f"{path}/bin")

    monkeypatch.setattr(shutil, "rmtree", refused)
    with pytest.raises(
        cache.RemoveError, match=f"^cannot remove {out}.trash/bin: Permission denied$"
    ):
        cache.remove_entry(entry)
    done = cache.remove_all([entry])
    assert done.removed == [] and len(done.errors) == 1


def test_an_interrupted_removal_leaves_nothing_that_looks_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """rmtree deletes the big files first and .complete last: a prune killed midway left
    an output marked complete without its files (and newest, so kept by --prune N)."""
    out = fake_cache.output(tmp_path, "kernel", 1, {"kernel.json": "{}", "vmlinux": b"x" * 9})
    (entry,) = cache.entries()
    real = shutil.rmtree

    def interrupted(path: str | Path, *a: object, **kw: object) -> None:
        (Path(path) / "vmlinux").unlink()
        raise KeyboardInterrupt

    monkeypatch.setattr(shutil, "rmtree", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cache.remove_entry(entry)
    monkeypatch.setattr(shutil, "rmtree", real)
    assert [e.complete for e in cache.entries()] == [False]  # a leftover, pruned as such
    assert not out.exists() and cache.remove_all(cache.entries()).errors == []
    assert list(tmp_path.iterdir()) == [cache.lock_file(out)]


def test_a_build_sweeps_the_leftovers_of_writers_that_are_gone(tmp_path: Path) -> None:
    """A first start SIGKILLed while it saved its snapshot left snapshot-<key>.tmp/
    state.mig (tens of MB) until a prune; a build still writing (its lock held) stays."""
    dead = fake_cache.output(tmp_path, "snapshot", 1, {"state.mig": b"x" * 99}, complete=False)
    removing = tmp_path / f"kmod-{fake_cache.digest(2)}.trash"  # a prune killed midway
    removing.mkdir()
    writing = fake_cache.output(tmp_path, "image", 3, {"initramfs.cpio": "x"}, complete=False)
    with cache.exclusive_lock(cache.lock_file(tmp_path / f"image-{fake_cache.digest(3)}"), "b"):
        cache.cached_build("kmod", fake_cache.digest(4), _build("x"))
    assert not dead.exists() and not removing.exists() and writing.is_dir()
    assert cache.sweep_leftovers(tmp_path) == [writing]  # its writer is gone now


def _vmlinux(length: int) -> bytes:
    """A 64-bit ELF of 1192 bytes by its headers (two section headers at 64, a section
    at 192 of 1000 bytes), cut to *length*."""
    import struct

    head = (
        b"\x7fELF\x02\x01\x01"
        + bytes(9)
        + struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, 0, 0, 64, 0, 64, 0, 0, 64, 2, 0)
    )
    sections = bytes(64) + struct.pack("<IIQQQQIIQQ", 0, 1, 0, 0, 192, 1000, 0, 0, 1, 0)
    return (head + sections + bytes(1000))[:length]


def test_a_truncated_initramfs_or_vmlinux_is_damaged_built_again_and_pruned(
    tmp_path: Path,
) -> None:
    """A cut initramfs.cpio or vmlinux was served as it was: the guest then failed to
    boot with a confusing error far from the cause."""
    from irqlab import notice

    meta = '{"initramfs": "initramfs.cpio", "initramfs_size": 100}'
    image = fake_cache.output(tmp_path, "image", 1, {"image.json": meta, "initramfs.cpio": "x"})
    kernel = fake_cache.output(tmp_path, "kernel", 2, {"vmlinux": _vmlinux(600)})
    whole = fake_cache.output(tmp_path, "kernel", 3, {"vmlinux": _vmlinux(1192)})
    damaged = {e.path: e.damage for e in cache.entries()}
    assert damaged == {
        image: f"{image}/initramfs.cpio is 1 bytes, image.json says 100",
        kernel: f"{kernel}/vmlinux is 600 bytes, its ELF headers need at least 1192",
        whole: "",
    }
    assert {e.path for e in cache.prune_plan(cache.entries(), keep=8)} == {image, kernel}
    said: list[str] = []
    old = notice.set_sink(said.append)
    try:
        again = cache.cached_build("image", fake_cache.digest(1), _build("x"), evict=False)
    finally:
        notice.set_sink(old)
    assert again == image and (image / "f").exists() and not (image / "image.json").exists()
    assert said == [f"irqlab: {image} is damaged ({damaged[image]}): building it again"]


def _vmlinux_with_segments(length: int) -> bytes:
    """A 64-bit ELF of 6096 bytes by its program headers (at 64: a PT_LOAD of 2000 bytes
    at 4096, a PT_NOTE inside it), whose section header table (at 176, the null
    section's only) ends at 240 and names no section: cut to *length*."""
    import struct

    head = (
        b"\x7fELF\x02\x01\x01"
        + bytes(9)
        + struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, 0, 64, 176, 0, 64, 56, 2, 64, 1, 0)
    )
    load = struct.pack("<IIQQQQQQ", 1, 5, 4096, 0, 0, 2000, 2000, 4096)
    note = struct.pack("<IIQQQQQQ", 4, 4, 4100, 0, 0, 24, 24, 4)
    whole = head + load + note + bytes(64)
    return (whole + bytes(6096 - len(whole)))[:length]


@pytest.mark.parametrize(
    ("length", "need"), [(6096, 0), (6095, 6096), (5000, 6096), (150, 240), (100, 240)]
)
def test_a_vmlinux_cut_inside_a_loadable_segment_is_damaged(
    tmp_path: Path, length: int, need: int
) -> None:
    """The check read the section headers only: a vmlinux whose loadable segments'
    bytes lie past the sections they name (or with no sections named) was served cut
    short, and QEMU loaded a kernel missing its tail."""
    kernel = fake_cache.output(tmp_path, "kernel", 1, {"vmlinux": _vmlinux_with_segments(length)})
    (entry,) = cache.entries()
    want = f"{kernel}/vmlinux is {length} bytes, its ELF headers need at least {need}"
    assert entry.damage == (want if need else "")


def test_holding_a_removed_output_says_so(tmp_path: Path) -> None:
    out = fake_cache.qemu(tmp_path, 1, "x86_64", 100)
    (entry,) = cache.entries()
    assert cache.remove_entry(entry)
    with pytest.raises(cache.OutputGone, match="no longer in the cache"):
        cache.hold([out])
    out.mkdir()  # an incomplete directory of that name
    with pytest.raises(cache.OutputGone, match="removed from the cache"):
        cache.hold([out])
    assert not cache.in_use(out)  # the failed hold released what it had taken


def test_a_build_in_progress_is_not_removed_and_the_removal_does_not_wait(
    tmp_path: Path,
) -> None:
    fake_cache.output(tmp_path, "kmod", 1, complete=False)
    (entry,) = cache.entries()
    with open(tmp_path / f"kmod-{fake_cache.digest(1)}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        assert not cache.remove_entry(entry)
    assert cache.remove_entry(entry) and cache.entries() == []


def test_outputs_named_in_a_command_line(tmp_path: Path) -> None:
    q, k, i = (tmp_path / f"{n}-{fake_cache.digest(1)}" for n in ("qemu", "kernel", "image"))
    argv = [
        f"{q}/bin/qemu-system-x86_64",
        "-L",
        f"{q}/share/qemu",
        "-kernel",
        f"{k}/vmlinux",
        "-initrd",
        f"{i}/initramfs.cpio",
        "-device",
        f"loader,file={tmp_path}/dtb-{fake_cache.digest(2)}.tmp/x",  # not an output
        "/elsewhere/qemu-0000000000000003/bin/qemu",  # not in this cache
    ]
    assert cache.outputs_named(argv, tmp_path) == [q, k, i]


# --- automatic eviction after a build ----------------------------------------------------


def _kmod_build(machine: int) -> Callable[[Path], None]:
    def build(out: Path) -> None:
        (out / "irqlab.ko").write_bytes(fake_cache.elf(machine))

    return build


@pytest.fixture
def no_current(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The inventory stubbed: nothing is current; records the recipes asked about."""
    asked: list[str] = []

    def current(recipe: str, group: object) -> set[Path]:
        asked.append(recipe)
        return set()

    monkeypatch.setattr(cache, "_current_outputs", current)
    return asked


def test_keep_count_from_the_environment() -> None:
    assert cache.keep_count({}) == cache.DEFAULT_KEEP == 8
    assert cache.keep_count({"IRQLAB_CACHE_KEEP": "3"}) == 3
    assert cache.keep_count({"IRQLAB_CACHE_KEEP": "0"}) is None  # no automatic eviction
    for bad in ("-1", "many"):
        with pytest.raises(cache.CacheKeepError, match="IRQLAB_CACHE_KEEP"):
            cache.keep_count({"IRQLAB_CACHE_KEEP": bad})


def test_a_new_output_evicts_the_least_recently_used_of_its_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_current: list[str]
) -> None:
    monkeypatch.setenv("IRQLAB_CACHE_KEEP", "3")
    arm = [fake_cache.kmod(tmp_path, 100 + i, fake_cache.EM_AARCH64, 10 + i) for i in range(5)]
    made = []
    for i in range(6):
        made.append(cache.cached_build("kmod", fake_cache.digest(i), _kmod_build(62)))
        os.utime(made[-1], (1000 + i, 1000 + i))
    assert sorted(e.path for e in cache.entries() if e.arch == "x86_64") == made[3:]
    assert all(p.is_dir() for p in arm)  # another architecture: another group
    assert set(no_current) == {"kmod"}


def test_eviction_spares_current_held_and_locked_outputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IRQLAB_CACHE_KEEP", "1")
    old = [fake_cache.kmod(tmp_path, i, fake_cache.EM_X86_64, 100 + i) for i in range(4)]
    monkeypatch.setattr(cache, "_current_outputs", lambda recipe, group: {old[0]})
    with (
        cache.hold([old[1]]),
        open(tmp_path / f"kmod-{fake_cache.digest(2)}.lock", "w") as lock,
    ):
        fcntl.flock(lock, fcntl.LOCK_EX)  # a build holds it: skipped, not waited for
        new = cache.cached_build("kmod", fake_cache.digest(9), _kmod_build(62))
    left = {e.path for e in cache.entries()}
    assert left == {old[0], old[1], old[2], new}  # old[3] was the only one free to go


def test_no_eviction_when_off_or_asked_not_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_current: list[str]
) -> None:
    for i in range(3):
        fake_cache.kmod(tmp_path, i, fake_cache.EM_X86_64, 100 + i)
    monkeypatch.setenv("IRQLAB_CACHE_KEEP", "0")
    cache.cached_build("kmod", fake_cache.digest(7), _kmod_build(62))
    monkeypatch.setenv("IRQLAB_CACHE_KEEP", "1")
    cache.cached_build("kmod", fake_cache.digest(8), _kmod_build(62), evict=False)
    assert len(cache.entries()) == 5 and no_current == []


def test_snapshots_keep_their_own_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_current: list[str]
) -> None:
    """A snapshot stored through cached_build (as a test that plants a damaged one
    does) evicts no other snapshot: they keep $IRQLAB_SNAPSHOT_KEEP (32) among all
    configurations, not IRQLAB_CACHE_KEEP per group (it removed all but 8 of the
    suite's snapshots, and their configurations booted cold in the next run)."""
    monkeypatch.setenv("IRQLAB_CACHE_KEEP", "1")
    for i in range(4):
        cache.cached_build("snapshot", fake_cache.digest(i), lambda t: (t / "s").write_bytes(b"x"))
    assert len(cache.entries(recipe="snapshot")) == 4 and no_current == []


def test_a_bad_keep_count_fails_before_building(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IRQLAB_CACHE_KEEP", "lots")
    built: list[Path] = []
    with pytest.raises(cache.CacheKeepError):
        cache.cached_build("kmod", fake_cache.digest(1), built.append)
    assert built == [] and cache.entries() == []


def test_a_bad_keep_count_is_a_usage_error_on_a_cache_hit_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """It was read only when a build ran: a cache hit said nothing of it, and the error
    was no ConfigError (irqlab exited 1, not 2)."""
    from irqlab.errors import ConfigError

    built = cache.cached_build("kmod", fake_cache.digest(1), lambda t: (t / "m").write_text(""))
    monkeypatch.setenv("IRQLAB_CACHE_KEEP", "-3")
    with pytest.raises(ConfigError, match=r"IRQLAB_CACHE_KEEP='-3': expected how many"):
        cache.cached_build("kmod", fake_cache.digest(1), lambda t: None)
    assert issubclass(cache.CacheKeepError, ConfigError) and built.is_dir()
    monkeypatch.setenv("IRQLAB_CACHE_KEEP", "2")
    monkeypatch.setenv("IRQLAB_SNAPSHOT_KEEP", "some")
    with pytest.raises(ConfigError, match=r"IRQLAB_SNAPSHOT_KEEP='some': expected how many"):
        cache.check_keep_env()
    monkeypatch.setenv("IRQLAB_SNAPSHOT_KEEP", "0")
    cache.check_keep_env()


def test_a_lock_held_elsewhere_is_waited_for_out_loud(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A second run waiting on the first one's QEMU build or cold boot said nothing for
    minutes: it names the holder's pid and what it does, once, then waits."""
    import threading

    lock = tmp_path / "x.lock"
    entered, done = threading.Event(), threading.Event()

    def second() -> None:
        with cache.exclusive_lock(lock, "building x"):
            entered.set()
            done.wait(5)

    # flock locks belong to an open file: this process's second open waits as another
    # process's would
    with cache.exclusive_lock(lock, "building x"):
        assert lock.read_text() == f"{os.getpid()}\n"  # the holder's pid, for waiters
        assert capfd.readouterr().err == ""  # nobody else held it: nothing said
        waiter = threading.Thread(target=second)
        waiter.start()
        assert not entered.wait(0.5), "it waits while the lock is held"
    assert entered.wait(5), "it gets the lock once it is free"
    done.set()
    waiter.join(5)
    err = capfd.readouterr().err
    assert err == f"irqlab: waiting for process {os.getpid()}, which is building x (lock {lock})\n"


def test_a_lock_whose_pid_cannot_be_written_is_still_taken(tmp_path: Path) -> None:
    """A full cache disk: writing the holder's pid into the boot lock raised ENOSPC,
    and the cold start failed at once ("irqlab: No space left on device"), the lock
    file left open.  (/dev/full: every write fails with ENOSPC.)"""
    lock = tmp_path / "x.lock"
    lock.symlink_to("/dev/full")
    held = pytest.raises(cache.LockHeld, match="another process is building x")
    with cache.exclusive_lock(lock, "building x"), held:
        cache.take_lock(lock, "building x", wait=False)
    cache.take_lock(lock, "building x", wait=False).close()  # let go


def test_a_lock_file_that_cannot_be_opened_names_it(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    lock.mkdir()
    with pytest.raises(cache.LockError, match=f"^cannot take the lock {lock}: Is a directory$"):
        cache.take_lock(lock, "building x")


def test_a_stopped_holder_is_said_and_waited_for_a_bounded_time(tmp_path: Path) -> None:
    """A first start stopped (Ctrl-Z) while it cold-booted: the second waited forever."""
    import signal

    from irqlab import notice

    lock = tmp_path / "x.lock"
    code = (
        "import sys, time; from pathlib import Path; from irqlab.build import cache; "
        "f = cache.take_lock(Path(sys.argv[1]), 'x'); print('held', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(lock)], stdout=subprocess.PIPE)
    said: list[str] = []
    old = notice.set_sink(said.append)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        os.kill(holder.pid, signal.SIGSTOP)
        t0 = time.monotonic()
        stayed = f"process {holder.pid}, which is cold-booting, stayed stopped for 0.3 s"
        with pytest.raises(cache.LockHeld, match=f"^{stayed} \\(lock {lock}\\)$"):
            cache.take_lock(lock, "cold-booting", stopped_limit=0.3)
        assert 0.3 <= time.monotonic() - t0 < 5
        assert said == [
            f"irqlab: waiting for process {holder.pid}, which is cold-booting (lock {lock})",
            f"irqlab: process {holder.pid} is stopped (Ctrl-Z, SIGSTOP or a debugger); "
            "waiting at most 0.3 s",
        ]
    finally:
        notice.set_sink(old)
        holder.kill()
        holder.wait()


def test_stale_lock_files_go_and_held_or_needed_ones_stay(tmp_path: Path) -> None:
    """Every build and every snapshot configuration left an empty lock file behind (a
    cache held over a thousand); the prune removes those of outputs no longer there,
    used lately or not (a CI run's, minutes old, stayed: all of them, for an hour)."""
    import fcntl

    kept = fake_cache.output(tmp_path, "kmod", 1, {"x.ko": "x"})
    names = [
        f"kmod-{fake_cache.digest(1)}.lock",  # its output is there: stays
        f"kmod-{fake_cache.digest(2)}.lock",  # stale
        f"snapshot-{fake_cache.digest(3)}.boot.lock",  # stale (a configuration never saved)
        f"image-{fake_cache.digest(4)}.lock",  # stale, but a build holds it: stays
        "not-ours.lock",  # not an output's name: stays
    ]
    for n in names:
        (tmp_path / n).write_text("")
    with open(tmp_path / names[3]) as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        removed = cache.remove_stale_locks(tmp_path)
    assert sorted(p.name for p in removed) == sorted([names[1], names[2]])
    assert sorted(p.name for p in tmp_path.glob("*.lock")) == sorted([names[0], *names[3:]])
    assert kept.exists()


def test_every_lock_file_leads_back_to_its_output(tmp_path: Path) -> None:
    """One spelling of the lock files: a build's, a snapshot's cold boot's (snapshot.
    boot_lock), a .tmp build's (remove_entry), and the stale-lock sweep's reading back."""
    from irqlab.vm import snapshot

    out = tmp_path / f"snapshot-{fake_cache.digest(3)}"
    build, boot = cache.lock_file(out), cache.lock_file(out, "boot")
    assert (build.name, boot.name) == (f"{out.name}.lock", f"{out.name}.boot.lock")
    for purpose in ("", *cache.LOCK_PURPOSES):
        assert cache._lock_output(cache.lock_file(out, purpose)) == out
    with pytest.raises(ValueError, match="one of"):
        cache.lock_file(out, "bogus")  # the sweep could not read it back
    with snapshot.boot_lock(fake_cache.digest(3)):
        assert boot.read_text() == f"{os.getpid()}\n"
    tmp = tmp_path / f"kmod-{fake_cache.digest(4)}.tmp"  # a build writing into it
    tmp.mkdir()
    (entry,) = cache.entries(recipe="kmod")
    with cache.exclusive_lock(cache.lock_file(tmp.with_suffix("")), "building"):
        assert cache.remove_entry(entry) is False and tmp.exists()


def test_a_waiter_on_a_lock_file_removed_meanwhile_locks_the_new_one(tmp_path: Path) -> None:
    """The prune unlinks a stale lock file while a builder waits on it: the builder
    must not hold a lock on the unlinked file while a third process locks a new one
    of that name (both would build into the same directory)."""
    import threading

    lock = tmp_path / "kmod-0000000000000009.lock"
    holder = cache._locked_file(lock, wait=True)
    assert holder is not None
    old = os.fstat(holder.fileno()).st_ino
    got: list[int] = []

    def wait() -> None:
        f = cache._locked_file(lock, wait=True)
        assert f is not None
        with f:
            got.append(os.fstat(f.fileno()).st_ino)

    waiter = threading.Thread(target=wait)
    waiter.start()
    # the waiter blocks on the old file: /proc/locks lists a blocked request ("->")
    wait_until(
        lambda: Path("/proc/locks").read_text().splitlines(),
        lambda lines: any(
            line.split()[1] == "->" and line.split()[-3].endswith(f":{old}")
            for line in lines
            if len(line.split()) > 6
        ),
        5,
        "the waiter to wait on the lock",
    )
    keep = os.open(lock, os.O_RDONLY)  # the old file lives on: its inode is not reused
    try:
        lock.unlink()  # as remove_stale_locks does, holding it
        holder.close()
        waiter.join(5)
        assert not waiter.is_alive()
        assert lock.exists() and got == [os.stat(lock).st_ino] and got[0] != old
    finally:
        os.close(keep)


def test_a_lock_file_that_cannot_be_opened_is_left_not_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another user's (a sudo run's) lock file: the PermissionError escaped the snapshot
    prune after a save, and irqlab cache --prune after the outputs went."""
    lock = tmp_path / f"kmod-{fake_cache.digest(7)}.lock"
    lock.write_text("")

    def refused(path: Path, *, wait: bool) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(cache, "_locked_file", refused)
    assert cache.remove_stale_locks(tmp_path) == []
    assert lock.exists()


def test_dir_size_skips_what_another_process_removes_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`irqlab cache` failed with "No such file or directory" while another user's
    image build removed its .tmp directory during the size walk."""
    import os

    from irqlab.build import cache

    (tmp_path / "a").write_bytes(b"x" * 10)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "gone").write_bytes(b"y" * 100)
    (tmp_path / "sub" / "kept").write_bytes(b"z" * 1000)
    real = os.lstat

    def lstat(path: str | os.PathLike[str], *a: object, **kw: object) -> os.stat_result:
        if str(path).endswith("gone"):
            raise FileNotFoundError(2, "No such file or directory", str(path))
        return real(path)

    monkeypatch.setattr(cache.os, "lstat", lstat)
    assert cache.dir_size(tmp_path) == 1010


@pytest.mark.parametrize(
    ("shape", "said"),
    [
        ("whole", ""),
        ("short", "state.mig is 1000 bytes, meta.json says the save wrote 4096"),
        ("empty", "state.mig is 0 bytes, meta.json says the save wrote 4096"),
        ("longer", "state.mig is 5000 bytes, meta.json says the save wrote 4096"),
        ("missing", "state.mig is missing"),
        ("directory", "state.mig is a directory, not the file the save wrote"),
        ("fifo", "state.mig is a FIFO, not the file the save wrote"),
        ("link", "state.mig is a symbolic link, not the file the save wrote"),
        ("no-record", ""),  # a snapshot saved before the size was recorded: unknown
    ],
)
def test_a_snapshot_state_file_not_as_saved_is_damaged(
    tmp_path: Path, shape: str, said: str
) -> None:
    """A state.mig cut short (to 1000 bytes, to 0) was listed by `irqlab cache` as an
    ordinary entry of 0.0 MiB, and one a byte short restored without a word; a FIFO, a
    directory and a link to /dev/zero were all called "missing"."""
    size = {"short": 1000, "empty": 0, "longer": 5000}.get(shape, 4096)
    meta = "{}" if shape == "no-record" else '{"bytes": 4096}'
    files = {"meta.json": meta}
    if shape in ("whole", "short", "empty", "longer", "no-record"):
        files["state.mig"] = "x" * size
    snap = fake_cache.output(tmp_path, "snapshot", 1, files)
    state = snap / "state.mig"
    if shape == "directory":
        state.mkdir()
    elif shape == "fifo":
        os.mkfifo(state)
    elif shape == "link":
        state.symlink_to("/dev/zero")
    damaged = {e.path: e.damage for e in cache.entries()}
    assert damaged[snap] == (f"{snap}/{said}" if said else "")


@pytest.mark.parametrize("step", ["write_text", "rename"])
def test_a_full_disk_at_the_end_of_a_build_leaves_no_tmp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    """A full disk (no inode left for .complete, or the rename refused) left the whole
    output behind as <output>.tmp (a snapshot's: 149 MB) until a prune."""
    real = getattr(Path, step)

    def full(self: Path, *a: object, **kw: object) -> object:
        if self.name in (".complete", f"snapshot-{fake_cache.digest(5)}.tmp"):
            raise OSError(28, "No space left on device")
        return real(self, *a, **kw)

    monkeypatch.setattr(Path, step, full)
    with pytest.raises(OSError, match="No space left"):
        cache.cached_build("snapshot", fake_cache.digest(5), _build("x"))
    monkeypatch.setattr(Path, step, real)
    assert [p.name for p in tmp_path.iterdir()] == [f"snapshot-{fake_cache.digest(5)}.lock"]


def test_a_leftover_without_its_lock_file_goes_on_a_full_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No inode left for the lock file of a leftover whose lock had gone (its save, an
    hour ago): `irqlab cache --prune` said "cannot lock" and the 149 MB stayed on the
    full disk they filled.  A lock file that is there is still taken."""
    dead = fake_cache.output(tmp_path, "snapshot", 1, {"state.mig": b"x" * 99}, complete=False)
    kept = fake_cache.output(tmp_path, "snapshot", 2, {"state.mig": b"x"}, complete=False)
    cache.lock_file(tmp_path / f"snapshot-{fake_cache.digest(2)}").write_text("")
    real = cache._locked_file

    def full(path: Path, *, wait: bool) -> object:
        if not path.exists():
            raise OSError(28, "No space left on device", str(path))
        return real(path, wait=wait)

    monkeypatch.setattr(cache, "_locked_file", full)
    with cache.exclusive_lock(cache.lock_file(tmp_path / f"snapshot-{fake_cache.digest(2)}"), "b"):
        done = cache.remove_all(cache.entries())
    assert [e.path for e in done.removed] == [dead] and [e.path for e in done.held] == [kept]
    assert done.errors == [] and not dead.exists() and kept.is_dir()
