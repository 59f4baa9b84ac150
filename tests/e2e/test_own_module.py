"""Bring your own module: a module of this test's own (tests/e2e/mymod/), built
against the guest kernel with ``make -C $(irqlab kdir) M=...``, loaded into the guest
beside our driver and instead of it, and found by its line in the kernel log; a
restored guest has it too (the snapshot key includes its content)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from cli import IRQLAB  # same directory (rootdir-relative import)
from kmods import build_test_kmod
from userrun import as_a_user  # same directory (rootdir-relative import)

from irqlab import notice
from irqlab.testing.plugin import start_guest
from irqlab.vm import snapshot
from irqlab.vm.guest import (
    BUILD_MODULE,
    Guest,
    GuestConfig,
    GuestError,
    PrerequisiteMissing,
    ensure_snapshot,
)

HERE = Path(__file__).resolve().parent

pytest_plugins = ["pytester"]


def prefix_map(src: Path) -> str:
    """make's KCFLAGS that keep *src*'s path out of the module's debug information."""
    return f"KCFLAGS=-fdebug-prefix-map={src}=mymod"


@pytest.fixture(scope="module")
def mymod(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/e2e/mymod built out of tree (in a temporary copy) as a driver developer
    would: against the directory `irqlab kdir` prints."""
    src = tmp_path_factory.mktemp("mymod")
    shutil.copytree(HERE / "mymod", src, dirs_exist_ok=True)
    kdir = subprocess.run([*IRQLAB, "kdir"], check=True, capture_output=True, text=True)
    # the README's reproducible build: the same source gives the same .ko in any
    # directory, so a warm run restores this configuration's snapshot
    make = ["make", "-C", kdir.stdout.strip(), f"M={src}", prefix_map(src), "modules"]
    r = subprocess.run(make, capture_output=True, text=True, check=False)
    assert r.returncode == 0, f"building mymod failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    return src / "mymod.ko"


def _modules(g: Guest) -> set[str]:
    return {line.split()[0] for line in g.sh("cat /proc/modules").splitlines()}


def test_own_module_and_file_beside_ours_and_in_the_restored_guest(
    mymod: Path, tmp_path: Path
) -> None:
    data = tmp_path / "calibration.txt"
    data.write_text("gain=3\n")
    config = GuestConfig(
        name="own-mod",
        extra_modules=[mymod],
        extra_files={"/etc/mydrv/calibration.txt": data},
        snapshot_tag="test_own_module",  # not shared with other tests' guests
    )
    for attempt in ("first", "second"):
        g = start_guest(config)
        try:
            assert "mymod: hello" in g.sh("dmesg"), f"{attempt} guest"
            assert {"mymod", "irqlab"} <= _modules(g)
            g.sh(f"test -c {g.dev}")  # ours still drives the device
            assert g.sh("cat /etc/mydrv/calibration.txt") == "gain=3\n"
            if attempt == "second":
                assert g.restored, "the second guest of one configuration restores"
        finally:
            g.close()


def test_own_module_instead_of_ours(mymod: Path) -> None:
    g = start_guest(GuestConfig(name="own-only", extra_modules=[mymod], load_irqlab=False))
    try:
        assert "mymod: hello" in g.sh("dmesg")
        mods = _modules(g)
        assert "mymod" in mods and "irqlab" not in mods
        assert g.sh(f"test -e {g.dev} || echo absent").strip() == "absent"
        # the device is there, unbound, for the developer's driver
        driver = f"/sys/bus/pci/devices/{g.pci_address()}/driver"
        assert g.sh(f"test -e {driver} && echo bound || echo unbound").strip() == "unbound"
    finally:
        g.close()


def test_own_driver_of_our_device_beside_ours_is_said_never_to_probe(tmp_path: Path) -> None:
    """A developer's PCI driver of the irqlab device, loaded beside ours (the default):
    ours has bound the device, so theirs never probed, and nothing said why.  Now the
    start says it (once in a process for a file: a copy of this test's own) and how to
    leave ours out; without ours, theirs probes."""
    ko = tmp_path / "probes_irqlab.ko"
    shutil.copy(build_test_kmod("probes_irqlab"), ko)
    for load_irqlab in (True, False):
        said: list[str] = []
        old = notice.set_sink(said.append)
        config = GuestConfig(name="probes", extra_modules=[ko], load_irqlab=load_irqlab)
        try:
            g = start_guest(config)
        finally:
            notice.set_sink(old)
        try:
            probed = "probes_irqlab: probed" in g.sh("dmesg")
        finally:
            g.close()
        taken = [line for line in said if "is a driver of the irqlab PCI device" in line]
        assert probed != load_irqlab, (load_irqlab, said)
        if load_irqlab:
            assert len(taken) == 1 and "load_irqlab=False" in taken[0], said
            assert "pci:v00001234d000011EC" in taken[0], taken
        else:
            assert taken == [], said


def test_snapshot_key_follows_the_modules_content(mymod: Path, tmp_path: Path) -> None:
    changed = tmp_path / "mymod.ko"
    shutil.copy(mymod, changed)
    a = Guest(GuestConfig(extra_modules=[mymod])).prepare()
    b = Guest(GuestConfig(extra_modules=[changed])).prepare()
    assert a.snapshot_key() == b.snapshot_key()  # same content, same key
    with changed.open("ab") as f:
        f.write(b"\0")
    assert a.snapshot_key() != b.snapshot_key()
    assert a.snapshot_key() != Guest(GuestConfig()).prepare().snapshot_key()


def test_a_rebuilt_module_restores_the_guest_without_it_then_loads_it(
    mymod: Path, tmp_path: Path
) -> None:
    """A driver under development, rebuilt between runs: each build was a cold boot
    (~4 s) and a snapshot saved.  Now the snapshot of the same guest without it
    restores, its file and module go in as a cold boot puts them, and that is saved for
    the build's later guests."""
    ensure_snapshot()
    rebuilt = tmp_path / "mymod.ko"
    rebuilt.write_bytes(mymod.read_bytes() + os.urandom(16))  # another build: another key
    data = tmp_path / "calibration.txt"
    data.write_text("gain=5\n")
    config = GuestConfig(
        name="rebuilt", extra_modules=[rebuilt], extra_files={"/etc/mydrv/calibration.txt": data}
    )
    for attempt in ("first", "second"):
        g = start_guest(config)
        try:
            assert g.restored and "console_ready" not in g.phases, (attempt, g.phases)
            # the first restores the guest without it and saves; the second restores that
            assert ("extras" in g.phases) == (attempt == "first"), (attempt, g.phases)
            assert ("snapshot_saved" in g.phases) == (attempt == "first"), g.snapshot_error
            assert "mymod: hello" in g.sh("dmesg") and {"mymod", "irqlab"} <= _modules(g)
            assert g.sh("cat /etc/mydrv/calibration.txt") == "gain=5\n"
        finally:
            g.close()


def test_a_module_on_a_guest_nobody_starts_without_it_saves_that_guest_too(
    mymod: Path, tmp_path: Path
) -> None:
    """A driver of another device (``load_irqlab=False``): the guest without its module
    is one nobody starts, so no snapshot of it existed and every rebuild booted cold
    (~4 s).  Its first boot now saves that guest too, then loads the module; a rebuild
    restores it and loads the new build."""
    config = GuestConfig(
        name="base-first",
        extra_modules=[mymod],
        load_irqlab=False,
        snapshot_tag="test_own_module_base",  # this test's own: both removed first
    )
    prepared = Guest(config).prepare()
    base_key = prepared.base_snapshot_key()
    assert base_key is not None
    for key in (prepared.snapshot_key(), base_key):
        assert snapshot.discard(key) is None, key
    rebuilt = tmp_path / "mymod.ko"
    rebuilt.write_bytes(mymod.read_bytes() + os.urandom(16))  # another build: another key
    for attempt, ko in (("first", mymod), ("rebuilt", rebuilt)):
        g = start_guest(dataclasses.replace(config, extra_modules=[ko]))
        try:
            assert "extras" in g.phases, (attempt, g.phases)
            assert g.restored == (attempt == "rebuilt"), (attempt, g.phases)
            assert g.snapshot_dir is not None, (attempt, g.snapshot_error)
            assert snapshot.lookup(base_key) is not None, attempt
            assert "mymod: hello" in g.sh("dmesg"), attempt
            mods = _modules(g)
            assert "mymod" in mods and "irqlab" not in mods, (attempt, mods)
        finally:
            g.close()


def test_irqlab_kmod_that_does_not_bind_fails_fast_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """IRQLAB_KMOD with a module named irqlab that never binds the device (mymod built
    under our name) ends in seconds with the kernel's last lines, not an SSH timeout."""
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(HERE / "mymod" / "mymod.c", src / "irqlab.c")
    (src / "Kbuild").write_text("obj-m := irqlab.o\n")
    kdir = subprocess.run(
        [*IRQLAB, "kdir"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    subprocess.run(["make", "-C", kdir, f"M={src}", "modules"], check=True, capture_output=True)
    monkeypatch.setenv("IRQLAB_KMOD", str(src / "irqlab.ko"))
    t0 = time.monotonic()
    with pytest.raises(GuestError) as info:
        Guest(GuestConfig(name="no-bind", snapshot=False)).start()
    took = time.monotonic() - t0
    msg = str(info.value)
    assert "/dev/irqlab0 did not appear" in msg and "mymod: hello" in msg, msg
    assert took < 60, f"{took:.1f} s (the image is rebuilt for the module, then 3 s)"


def test_a_module_built_for_another_kernel_is_refused_before_anything_boots(
    mymod: Path, tmp_path: Path
) -> None:
    """It booted, copied and insmod-ed it, and then said only "invalid module format"."""
    release = Guest(GuestConfig()).prepare().image.kernel_version  # type: ignore[union-attr]
    data = mymod.read_bytes()
    mark = f"vermagic={release} ".encode()
    assert mark in data, "the module's vermagic names the guest's kernel"
    other = "9" * len(release)  # the same length: the ELF's sections do not move
    patched = tmp_path / "mymod.ko"
    patched.write_bytes(data.replace(mark, f"vermagic={other} ".encode()))
    g = Guest(GuestConfig(name="other-kernel", extra_modules=[patched], load_irqlab=False))
    with pytest.raises(PrerequisiteMissing) as info:
        g.start()  # refused in its first step: nothing booted
    assert str(info.value) == (
        f"extra module {patched} is built for kernel {other}, but the guest runs {release}: "
        f"build it against the guest's kernel with `{BUILD_MODULE}`"
    )
    assert g.log_dir is None, "no QEMU was started for it"


FAILING_WITH_MYMOD = """
import pytest


@pytest.mark.irqlab(modules=[{ko!r}], load_irqlab=False)
def test_fails_with_my_module(irqlab_fresh_guest):
    irqlab_fresh_guest.sh("echo irqlab-test: during the test > /dev/kmsg")
    assert False, "on purpose"
"""


def test_a_failing_tests_own_guest_reports_its_modules_load(
    mymod: Path, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A test's own guest with a module of the user's: the failure's kernel log and
    fresh/dmesg.log had only the lines since the test began, and the module's load
    (before the snapshot the guest restored) was nowhere, its console log empty.  Now
    dmesg.log has the guest's whole log, and the report the module's load."""
    as_a_user(pytester, monkeypatch)
    pytester.makepyfile(FAILING_WITH_MYMOD.format(ko=str(mymod)))
    for run in ("first", "restored"):  # its snapshot saved, then restored with it
        r = pytester.runpytest_subprocess("-p", "no:cacheprovider")
        r.assert_outcomes(failed=1)
        out = r.stdout.str()
        _, _, rest = out.partition("--- guest kernel log: your modules' load (until the ")
        assert rest, f"{run}: {out}"
        load_lines, _, since_start = rest.partition("--- guest kernel log (since ")
        assert "mymod: hello" in load_lines, f"{run}: {load_lines}"
        assert "irqlab-test: during the test" in since_start, f"{run}: {since_start}"
        assert "mymod: hello" not in since_start, f"{run}: {since_start}"
        (log,) = (pytester.path / "logs").glob("pytest-*/*/fresh/dmesg.log")
        text = log.read_text()
        for line in ("Linux version", "mymod: hello", "irqlab-test: during the test"):
            assert line in text, f"{run}: {line!r} not in {log}"
        assert "irqlab-step" not in text
        shutil.rmtree(pytester.path / "logs")
