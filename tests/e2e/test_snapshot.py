"""Ready-state snapshots in booted guests: restores are independent, fresh per test,
keyed by their inputs, and a bad snapshot file ends in a cold boot, never a hang."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from irqlab.build import cache
from irqlab.build.arch import Arch, selected
from irqlab.contract.regs import QOM
from irqlab.testing.helpers import DeviceControl
from irqlab.testing.plugin import start_guest
from irqlab.vm import snapshot
from irqlab.vm.guest import Guest, GuestConfig, ensure_snapshot, find_kmod

PANIC_TIMEOUT = 60.0


def _session_arch() -> Arch:
    """The architecture this session's guests are (``--irqlab-arch``, which the plugin
    puts in $IRQLAB_ARCH): our driver is found for it, not always for x86_64 (under
    ``--irqlab-arch aarch64`` the x86_64 build was refused as another architecture's)."""
    return selected(os.environ)


def _param(g: Guest, name: str) -> str:
    return g.sh(f"cat /sys/module/{g.module_name()}/parameters/{name}").strip()


@pytest.fixture
def two_restored() -> Iterator[tuple[Guest, Guest]]:
    ensure_snapshot()  # run alone after an image change, the first start booted cold
    a = start_guest(GuestConfig(name="snap-a"))
    try:
        b = start_guest(GuestConfig(name="snap-b"))
        try:
            yield a, b
        finally:
            b.close()
    finally:
        a.close()


def test_two_restores_from_one_snapshot_are_independent(
    two_restored: tuple[Guest, Guest],
) -> None:
    a, b = two_restored
    assert a.restored and b.restored, (a.phases, b.phases, a.snapshot_error, b.snapshot_error)
    assert a.snapshot_dir == b.snapshot_dir and a.machine.pid != b.machine.pid
    ring = _param(b, "ring_size")

    a.sh("echo only-in-a > /root/mark")
    a.sh(f"echo {int(ring) * 2} > /sys/module/{a.module_name()}/parameters/ring_size")
    DeviceControl(a).push(1, 2, 3)
    DeviceControl(a).wait_counters(lambda c: c.raised == 3, timeout=30)

    assert b.sh("cat /root/mark 2>/dev/null || echo absent").strip() == "absent"
    assert _param(b, "ring_size") == ring and _param(a, "ring_size") == str(int(ring) * 2)
    assert DeviceControl(b).counters().raised == 0
    assert a.agent.ping()["pid"] == b.agent.ping()["pid"]  # the same daemon, saved once...
    # ...but not the same random numbers: each restore reseeds the guest's CRNG.
    rand = "cat /proc/sys/kernel/random/boot_id; head -c 32 /dev/urandom | od -An -tx1"
    assert a.sh(rand) != b.sh(rand)


def test_a_guest_that_panics_ends_with_its_test(irqlab_fresh_guest: Guest) -> None:
    g = irqlab_fresh_guest
    assert g.restored
    g.ssh.run("echo c > /proc/sysrq-trigger", timeout=10)  # type: ignore[union-attr]
    status = g.machine.wait_exit(PANIC_TIMEOUT)  # panic=-1 + -no-reboot: QEMU exits
    console = g.machine.paths.console_log.read_text(errors="replace")
    assert "sysrq: Trigger a crash" in console or "Kernel panic" in console, console[-2000:]
    assert status == 0


def test_the_next_test_gets_a_healthy_guest(
    irqlab_fresh_guest: Guest, irqlab_fresh_device: DeviceControl
) -> None:
    g = irqlab_fresh_guest
    assert g.restored and g.machine.is_running()
    assert g.sh("test -c /dev/irqlab0 && echo ok").strip() == "ok"
    g.agent.arm("read")
    irqlab_fresh_device.push(0x42)
    assert g.agent.expect(path="read", timeout=30)["value"] == 0x42


def test_a_restored_guest_is_reseeded_before_its_first_ssh_connection() -> None:
    """The host's first words to a restored guest are a seed, on the agent's reseed
    port (no SSH): the dropbear process serving the first SSH connection starts after
    the reseed, so it draws its keys from the reseeded RNG, not the saver's."""
    g = start_guest(GuestConfig(name="reseed-first"))
    try:
        assert g.restored and g.reseeded_at_ns is not None, g.phases
        assert 0 < g.phases["reseeded"] <= g.phases["ssh"], g.phases
        # /proc/<dropbear serving this connection>/stat: start time in clock ticks of
        # CLOCK_BOOTTIME, the clock the reseed time is in
        ticks, hz = g.sh(
            "cut -d' ' -f22 /proc/$PPID/stat; "
            "python3 -c 'import os; print(os.sysconf(\"SC_CLK_TCK\"))'"
        ).split()
        tick_ns = 1_000_000_000 // int(hz)
        started_ns = int(ticks) * tick_ns
        assert started_ns + tick_ns >= g.reseeded_at_ns, (started_ns, g.reseeded_at_ns)
    finally:
        g.close()


def test_a_restored_guest_has_no_ipv6(irqlab_fresh_guest: Guest) -> None:
    """QEMU's user network answered each restored guest's router solicitation 1-2 s
    after the restore; routing it in patched kernel text with an IPI to every CPU (a
    test holding one CPU stalled the other).  The boot turns IPv6 off before the link
    is up: no address, nothing received."""
    g = irqlab_fresh_guest
    assert g.restored
    assert g.sh("cat /proc/sys/net/ipv6/conf/eth0/disable_ipv6").strip() == "1"
    assert g.sh("ip -6 addr show dev eth0").strip() == ""
    snmp = dict(line.split() for line in g.sh("cat /proc/net/snmp6").splitlines() if line)
    assert snmp["Ip6InReceives"] == "0", snmp["Ip6InReceives"]


@pytest.mark.irqlab(module={"ring_size": 64}, device={QOM.PROP_GPIO_LINES: 16})
def test_marker_configures_the_fresh_guest(irqlab_fresh_guest: Guest) -> None:
    g = irqlab_fresh_guest
    assert _param(g, "ring_size") == "64"
    assert g.injector.get(QOM.PROP_GPIO_LINES) == 16


def test_a_module_or_image_change_gives_another_snapshot(tmp_path: Path) -> None:
    base = Guest(GuestConfig(name="key")).prepare()
    other_params = Guest(GuestConfig(name="key", module_params={"ring_size": 64})).prepare()
    assert base.snapshot_key() != other_params.snapshot_key()
    # Another module binary is another image, so another key: a snapshot saved with
    # the old module is never restored with the new one.
    assert base.qemu is not None and base.image is not None
    ko = tmp_path / "irqlab.ko"
    shutil.copy(find_kmod(_session_arch()), ko)
    with ko.open("ab") as f:
        f.write(b"\0")  # a different file: the module recipe's output changed
    os.environ["IRQLAB_KMOD"] = str(ko)
    try:
        changed = Guest(GuestConfig(name="key")).prepare()
    finally:
        del os.environ["IRQLAB_KMOD"]
    assert changed.image.version != base.image.version
    assert changed.snapshot_key() != base.snapshot_key()
    assert snapshot.lookup(changed.snapshot_key()) is None


def test_files_without_a_module_of_the_users_are_put_after_a_restore(tmp_path: Path) -> None:
    """`irqlab run --put script.sh` with a script edited between runs: each new content
    was a new snapshot key, so a cold boot (~4 s) and a snapshot saved (143 MB) per
    edit.  Without a module of the user's (which may read them as it loads) the files
    go in once the guest is ready: the standard snapshot restores, and holds none."""
    ensure_snapshot()
    data = tmp_path / "data.txt"
    for content in ("first\n", "second\n"):
        data.write_text(content)
        g = start_guest(GuestConfig(name="files-after", extra_files={"/root/sub/data.txt": data}))
        try:
            assert g.restored, (g.snapshot_error, g.phases)
            assert g.snapshot_key() == Guest(GuestConfig()).prepare().snapshot_key()
            assert g.sh("cat /root/sub/data.txt") == content
        finally:
            g.close()
    plain = start_guest(GuestConfig(name="files-none"))
    try:  # the snapshot holds no file of a guest that had some
        assert plain.restored and plain.sh("ls /root/sub 2>&1; true").strip().endswith(
            "No such file or directory"
        )
    finally:
        plain.close()
    # with a module of the user's, the files come first and are in its snapshot's key
    ko = str(find_kmod(_session_arch()))
    with_module = GuestConfig(
        name="files-mod",
        load_irqlab=False,
        extra_modules=[ko],
        extra_files={"/root/sub/data.txt": data},
    )
    before = Guest(with_module).prepare().snapshot_key()
    data.write_text("third\n")
    assert Guest(with_module).prepare().snapshot_key() != before


def _bad_snapshot(config: GuestConfig, damage: str) -> Path:
    """The snapshot of *config* made bad by *damage* (truncated, garbage, other-qemu,
    missing); its state file's path."""
    # A good snapshot under this test's own key: a copy of the standard guest's (the
    # tag changes the key, not the guest), not a cold boot of its own.
    good = snapshot.lookup(Guest(GuestConfig()).prepare().snapshot_key()) or ensure_snapshot()
    key = Guest(config).prepare().snapshot_key()
    snapshot.discard(key)
    directory = cache.cached_build(
        snapshot.RECIPE,
        key,
        lambda tmp: [
            shutil.copy(good / f, tmp / f) for f in (snapshot.STATE_FILE, snapshot.META_FILE)
        ],
    )
    state = directory / snapshot.STATE_FILE
    size = state.stat().st_size
    if damage in ("truncated", "byte-short"):
        with state.open("r+b") as f:
            f.truncate(size // 2 if damage == "truncated" else size - 1)
    elif damage == "garbage":  # the size the save wrote, the start not a stream
        with state.open("r+b") as f:
            f.write(os.urandom(4096))
    elif damage == "missing":  # it cold-booted silently on every start, saved nothing
        state.unlink()
    else:
        meta = snapshot.read_meta(directory)
        meta["qemu"] = "/elsewhere/qemu-0000000000000000/bin/qemu-system-x86_64"
        (directory / snapshot.META_FILE).write_text(json.dumps(meta))
    return state


@pytest.mark.parametrize("damage", ["truncated", "byte-short", "garbage", "other-qemu", "missing"])
def test_a_bad_snapshot_is_named_then_replaced_by_a_cold_boot(damage: str) -> None:
    config = GuestConfig(name=f"bad-{damage}", snapshot_tag=f"test-bad-{damage}")
    state = _bad_snapshot(config, damage)
    g = start_guest(config)
    try:
        assert not g.restored and g.snapshot_error is not None
        assert str(state) in g.snapshot_error, g.snapshot_error
        if damage == "other-qemu":
            assert "another QEMU build" in g.snapshot_error
        elif damage == "missing":
            assert f"{state} is missing" in g.snapshot_error
        elif damage in ("truncated", "byte-short"):
            # by the size meta.json recorded, before QEMU runs (one byte short restored
            # without a word)
            assert "bytes, meta.json says the save wrote" in g.snapshot_error, g.snapshot_error
        else:
            # QEMU refused the stream (or died on it) and its own words are quoted
            assert "migration failed" in g.snapshot_error or "QEMU exited" in g.snapshot_error
            assert "QEMU said:" in g.snapshot_error, g.snapshot_error
        assert g.sh("test -c /dev/irqlab0 && echo ok").strip() == "ok"
        # the bad file was replaced by a good one, which the next guest restores
        assert state.stat().st_size > 0
    finally:
        g.close()
    again = start_guest(config)
    try:
        assert again.restored and again.snapshot_error is None
    finally:
        again.close()
        snapshot.discard(again.snapshot_key())


def test_a_bad_snapshot_that_cannot_be_removed_is_tried_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One that another process holds stays: the start tried it again under the boot
    lock (a second QEMU refusing it, ~0.25 s), then booted cold."""
    config = GuestConfig(name="bad-held", snapshot_tag="test-bad-held")
    state = _bad_snapshot(config, "garbage")
    tried: list[Path] = []
    restore = Guest._restore

    def counted(self: Guest, directory: Path) -> None:
        tried.append(directory)
        restore(self, directory)

    monkeypatch.setattr(Guest, "_restore", counted)
    held = cache.hold([state.parent])  # as another guest's start would
    try:
        g = start_guest(config)
        try:
            assert not g.restored and tried == [state.parent], tried
            assert g.snapshot_error is not None
            assert "could not be replaced" in g.snapshot_error, g.snapshot_error
            assert g.sh("test -c /dev/irqlab0 && echo ok").strip() == "ok"
        finally:
            g.close()
    finally:
        held.release()
        snapshot.discard(state.parent.name.removeprefix(f"{snapshot.RECIPE}-"))


def test_a_guest_a_test_starts_logs_into_that_tests_directory(
    irqlab_log_dir: Path, request: pytest.FixtureRequest
) -> None:
    g = start_guest(GuestConfig(name="logs-here"))
    try:
        assert g.machine is not None and g.machine.paths is not None
        where = g.machine.paths.log_dir
        assert where.parent.parent == irqlab_log_dir, where
        assert where.parent.name.endswith(request.node.name), where
        assert (where / "console.log").is_file(), sorted(where.iterdir())
    finally:
        g.close()
