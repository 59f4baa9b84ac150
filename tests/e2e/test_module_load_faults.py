"""A module that fails to load is said in the kernel's words, and one that oopses while
loading is named as the oops, within seconds: a driver developer sees their bug, not
``insmod ... (exit -1)`` or an agent that did not start."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from faultwait import raises_within  # same directory (rootdir-relative import)
from kmods import build_test_kmod

from irqlab.paths import cache_dir
from irqlab.vm.guest import Guest, GuestConfig, ModuleLoadError, ensure_snapshot
from irqlab.vm.health import GuestFault
from irqlab.vm.ssh import CommandError

pytest_plugins = ["pytester"]
CACHE = cache_dir()  # at import: the pytester fixture moves $HOME
NAMED_WITHIN_S = 30.0  # a cold boot (the extra module changes the snapshot key) + the verdict


def test_an_extra_module_that_oopses_while_loading_is_named_as_the_oops() -> None:
    ko = build_test_kmod("oops_on_load")

    def start() -> None:
        Guest(GuestConfig(name="oops-on-load", extra_modules=[ko])).start().close()

    e = raises_within(start, NAMED_WITHIN_S, GuestFault)  # close(): not reached
    first, _, rest = str(e).partition("\n")
    assert first.startswith("guest kernel oops: "), first
    assert "insmod" in first and "oops_on_load" in first, first
    # the console from just before the oops: its BUG line and where it happened, which
    # the last 40 lines of an oops this long do not show
    assert rest.startswith("--- guest console (from 10 lines before the fault)"), rest
    assert "BUG: kernel NULL pointer dereference" in rest and "oops_on_load_init" in rest, rest
    # where to look next: the guest's logs, named on the error (pytest and the irqlab
    # command show an exception's notes)
    (note,) = [n for n in getattr(e, "__notes__", ()) if n.startswith("logs: ")]
    assert "BUG: kernel NULL pointer dereference" in (
        Path(note.removeprefix("logs: ")) / "console.log"
    ).read_text(errors="replace")


def test_an_extra_module_that_panics_while_loading_is_named_with_its_insmod() -> None:
    """The panic ends the SSH channel under insmod: the error named the harness's own
    step script (`m="irqlab-step-$$-..."; echo ... > /dev/kmsg; insmod ...`)."""
    ko = build_test_kmod("splat_on_load")
    params = {"splat_on_load": {"how": "panic"}}

    def start() -> None:
        config = GuestConfig(name="panic-on-load", extra_modules=[ko], extra_module_params=params)
        Guest(config).start().close()

    e = raises_within(start, NAMED_WITHIN_S, GuestFault)
    first = str(e).partition("\n")[0]
    assert first.startswith("guest kernel panic: Kernel panic - not syncing: splat_on_load"), first
    assert first.endswith(f"(running 'insmod {ko} how=panic')"), first


def test_a_load_whose_messages_overran_the_kernel_log_still_says_its_last_ones() -> None:
    """A module that logs more than the kernel log's ring holds as it fails (a driver
    dumping its registers): the step's own mark was overwritten, and the error said
    "kernel messages meanwhile: (none)", its cause (the last lines) lost."""
    ko = build_test_kmod("splat_on_load")
    params = {"splat_on_load": {"how": "bogus", "lines": 2000}}  # ~190 KB, twice: > 128 KB
    config = GuestConfig(
        name="chatty-load", extra_modules=[ko], extra_module_params=params, load_irqlab=False
    )
    with pytest.raises(ModuleLoadError) as info:
        Guest(config).start().close()  # close(): not reached
    msg = str(info.value)
    assert msg.startswith(f"insmod {ko} how=bogus lines=2000 failed in the guest"), msg
    assert "kernel messages meanwhile (the last 40: more came since it began than the " in msg
    kmsg = msg.partition("its first ones are lost):\n")[2].splitlines()
    assert len(kmsg) == 40 and kmsg[-1].endswith("splat_on_load: how=bogus: not panic or warn")
    assert "irqlab: the kernel log wrapped" not in msg, msg


def test_a_bad_parameter_value_is_refused_in_the_kernels_words(
    irqlab_fresh_guest: Guest,
) -> None:
    g = irqlab_fresh_guest
    # a kernel log ring full already (a long session): the step's start is marked in it
    g.sh('i=0; while [ $i -lt 1500 ]; do echo "<7>filler $i" > /dev/kmsg; i=$((i+1)); done')
    # a value only the kernel refuses (wakeup=sometimes is refused before the guest's
    # command now: not one of the choices its description lists)
    with pytest.raises(ModuleLoadError) as info:
        g.reload_module(ring_size=3)  # the driver takes powers of two only
    msg = str(info.value)
    assert msg.startswith("modprobe irqlab ring_size=3 failed in the guest"), msg
    assert "kernel messages meanwhile:" in msg and "filler" not in msg, msg
    assert "`3' invalid for parameter `ring_size'" in msg, msg
    assert isinstance(info.value, CommandError)  # what a failed modprobe raised before
    g.reload_module(**g.config.module_params)  # nothing lost: the module loads again
    assert g.sh(f"test -c {g.dev} && echo ok").strip() == "ok"


def test_an_unload_that_fails_is_said_as_the_unload(irqlab_fresh_guest: Guest) -> None:
    """A reload while a file of the module is open: rmmod refuses, and the error names
    rmmod (not the modprobe after it) in its own words."""
    g = irqlab_fresh_guest
    g.agent.request("open", name="held", dev=g.dev)
    with pytest.raises(ModuleLoadError) as info:
        g.reload_module(**g.config.module_params)
    msg = str(info.value)
    assert msg.startswith("rmmod irqlab failed in the guest"), msg
    assert "can't unload module 'irqlab'" in msg, msg  # busybox rmmod: EAGAIN (in use)
    g.agent.request("close", name="held")
    g.reload_module(**g.config.module_params)  # and it goes once the file is closed


def test_a_users_module_that_fails_to_load_fails_the_test_with_the_cause_alone(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a user's pytest, the marker's module that fails to load printed about 50
    lines of the harness's own frames before insmod's words."""
    monkeypatch.setenv("IRQLAB_CACHE_DIR", str(CACHE))  # before the build: not pytester's $HOME
    monkeypatch.setenv("IRQLAB_LOG_DIR", str(pytester.path / "logs"))
    ko = build_test_kmod("splat_on_load")
    pytester.makepyfile(
        f"""
        import pytest

        @pytest.mark.irqlab(modules=["{ko} how=bogus"], load_irqlab=False)
        def test_mine(irqlab_fresh_guest):
            pass
        """
    )
    r = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    r.assert_outcomes(errors=1)
    out = r.stdout.str()
    assert f"the guest 'fresh' did not start: insmod {ko} how=bogus failed" in out, out
    assert "splat_on_load: how=bogus: not panic or warn" in out, out  # the kernel's words
    assert "logs: " in out, out
    assert "irqlab/vm/guest.py" not in out, "the harness's frames are shown"


def test_a_users_module_that_warns_fails_its_test_unless_the_test_expects_it(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A WARN() in the module under test passed silently: the health watch names only
    the faults that kill or freeze the guest."""
    monkeypatch.setenv("IRQLAB_CACHE_DIR", str(CACHE))  # before the build: not pytester's $HOME
    monkeypatch.setenv("IRQLAB_LOG_DIR", str(pytester.path / "logs"))
    ko = build_test_kmod("splat_on_load")
    pytester.makepyfile(
        f"""
        import pytest

        MODULE = ["{ko} how=warn"]

        @pytest.mark.irqlab(modules=MODULE, load_irqlab=False)
        def test_loads(irqlab_fresh_guest):
            assert "splat_on_load" in irqlab_fresh_guest.sh("cat /proc/modules")

        @pytest.mark.irqlab(modules=MODULE, load_irqlab=False, check_kernel_log=False)
        def test_expects_the_warning(irqlab_fresh_guest):
            assert "splat_on_load: WARN" in irqlab_fresh_guest.sh("dmesg")

        @pytest.mark.irqlab(load_irqlab=False)
        def test_clean(irqlab_fresh_guest):
            irqlab_fresh_guest.sh("true")

        @pytest.mark.irqlab(modules=MODULE, load_irqlab=False)
        def test_fails_on_its_own(irqlab_fresh_guest):
            assert False, "its own failure: no second error from the log check"
        """
    )
    r = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    r.assert_outcomes(passed=3, errors=1, failed=1)
    out = r.stdout.str()
    assert "ERROR at teardown of test_loads" in out, out
    assert "the guest kernel reported problems during the test" in out, out
    warning = r"WARNING: CPU: \d+ PID: \d+ at \S+/splat_on_load\.c:\d+ splat_on_load_init"
    assert re.search(warning, out), out
    assert "kernel tainted: W (warning issued, bit 9)" in out, out
    assert "irqlab/testing/plugin.py" not in out, "the harness's frames are shown"


def test_a_boot_whose_kernel_reported_a_problem_is_not_saved_as_a_snapshot() -> None:
    """A WARN() of a module loading (or a soft lockup of a loaded host) saved into a
    snapshot would be in every guest restored from it and fail each of their tests."""
    from irqlab.vm import snapshot

    ko = build_test_kmod("splat_on_load")
    config = GuestConfig(
        name="warn-boot",
        extra_modules=[ko],
        extra_module_params={"splat_on_load": {"how": "warn"}},
        load_irqlab=False,
    )
    snapshot.discard(Guest(config).prepare().snapshot_key())  # one saved by an older irqlab
    ensure_snapshot(GuestConfig(name="warn-base", load_irqlab=False))  # without the module
    with Guest(config) as g:  # restored without the module, which then loaded
        assert "extras" in g.phases and "snapshot_saved" not in g.phases, g.phases
        assert g.snapshot_dir is None  # not the base's: ensure_snapshot returned that
        assert (g.snapshot_error or "").startswith("not saved as the snapshot "), g.snapshot_error
        assert "WARNING: CPU:" in (g.snapshot_error or "")
        assert snapshot.lookup(g.snapshot_key()) is None
        assert g.sh("echo still usable").strip() == "still usable"


def test_module_parameters_that_do_not_fit_the_device_are_named_by_the_kernels_words() -> None:
    """irq_mode=msi on the default device (irq-mode=msix): the driver loads but cannot
    bind; the error quotes the driver's own line, not the hint that it may not be ours."""
    from irqlab.vm.guest import GuestError

    g = Guest(GuestConfig(name="msi-on-msix", module_params={"irq_mode": "msi"}))
    with pytest.raises(GuestError) as e:
        g.start()
    first = str(e.value).partition("\n")[0]
    assert "the kernel said 'irqlab " in first and "no interrupt of type msi" in first, first
    assert "is it a build of our driver" not in first, first
    assert g.machine is None or not g.machine.is_running()  # the failed start stopped it


def test_a_value_of_the_wrong_type_for_ring_size_is_refused_before_booting() -> None:
    """ring_size has its own ops: its type came into .modinfo only with
    __MODULE_PARM_TYPE, so ring_size=abc cost a boot before the kernel refused it."""
    from irqlab.vm.guest import GuestConfigError

    g = Guest(GuestConfig(name="ring-abc", module_params={"ring_size": "abc"}))
    with pytest.raises(GuestConfigError, match=r"ring_size of irqlab\.ko \(uint\): 'abc' is not"):
        g.prepare()  # nothing boots
    assert g.machine is None


@pytest.mark.parametrize(
    ("device", "param", "refused"),
    [("intx", "msi", True), ("msi", "msix", True), ("msix", "msi", True),
     ("intx", "intx", False), ("msi", "auto", False), ("msi", "msi", False)],
)  # fmt: skip
def test_an_irq_mode_the_given_device_cannot_offer_is_refused_before_booting(
    device: str, param: str, refused: bool
) -> None:
    """irq_mode=msi on a device in INTx mode: a boot, then "no interrupt of type msi";
    with both given, the mismatch is a configuration error before anything starts."""
    from irqlab.contract.regs import QOM
    from irqlab.vm.guest import GuestConfigError

    mode = QOM.PROP_IRQ_MODE
    g = Guest(GuestConfig(name="mode-mismatch", device_props={mode: device},
                          module_params={"irq_mode": param}))  # fmt: skip
    if refused:
        with pytest.raises(GuestConfigError, match=rf"irq_mode={param}: the device's {mode} "
                           rf"is {device}, which offers INTx and {device} only"):  # fmt: skip
            g.prepare()
    else:
        g.prepare()
    assert g.machine is None  # nothing booted


@pytest.mark.parametrize(
    ("how", "said"),
    [
        ("sleep", "the guest still answers: the kernel has not returned from the module's init"),
        ("spin", "the guest no longer answers over SSH (frozen"),
    ],
)
def test_an_extra_module_whose_init_never_returns_is_named(
    monkeypatch: pytest.MonkeyPatch, how: str, said: str
) -> None:
    """A module_init that sleeps or spins forever: after 60 s the error was an SSH
    timeout quoting the harness's own step script (`m="irqlab-step-$$-..."; ...`),
    with no kernel log and no console.  Now the insmod is named, the guest's state is
    said, with the kernel's or the console's last lines, after the configured limit
    (60 s, fixed, before module_load_timeout).  A sleeping init is shown where it
    waits (the insmod's kernel stack: msleep in the module's init; the error had
    only 30 lines of kernel log, all but the last the boot's), with the kernel's
    messages since the load began."""
    from irqlab.vm.guest import GuestTimeout

    ko = build_test_kmod("hang_on_load")
    config = GuestConfig(
        name=f"hang-on-load-{how}",
        extra_modules=[ko],
        extra_module_params={"hang_on_load": {"how": how}},
        module_load_timeout=3.0,
    )

    def start() -> None:
        Guest(config).start().close()

    # a cold boot, the 3 s, the kill of the command (5 s) and (frozen) the probe whose
    # channel opens no more (5 s): the probe's reconnect made it 53 s.  Restored without
    # the module (the standard snapshot), the guest's agent beats: a frozen one may be
    # named by the health watch's verdict first, with the insmod that ran.
    e = raises_within(start, NAMED_WITHIN_S, (GuestTimeout, GuestFault))
    first, _, rest = str(e).partition("\n")
    if isinstance(e, GuestFault):
        assert how == "spin" and first.startswith("guest stopped responding: "), first
        assert first.endswith(f"(running 'insmod {ko} how={how}': no return within 3 s)")
    else:
        assert first.startswith(f"insmod {ko} how={how} did not return within 3 s"), first
        assert said in first, first
    assert "irqlab-step" not in str(e), str(e)
    assert f"hang_on_load: how={how}, never returning" in rest, rest
    if how == "sleep":
        where, _, kmsg = rest.partition("\nkernel messages since it began:\n")
        assert first.endswith("; where it waits in the kernel:"), first
        assert where.startswith("  pid "), where
        assert f"`insmod {ko} how=sleep`, in msleep; its kernel stack:\n" in where, where
        assert re.search(r"\bmsleep\+0x", where), where
        assert re.search(r"\bhang_on_load_init\+0x\w+/0x\w+ \[hang_on_load\]", where), where
        # the load's own lines, not the boot's
        assert kmsg.splitlines()[0].endswith("hang_on_load: how=sleep, never returning"), kmsg


def test_a_module_that_freezes_a_starting_guest_is_named_within_the_freeze_limit() -> None:
    """The same spinning init with the step's own limit (60 s): no agent heartbeat
    watches a guest that starts, and it was named after the 60 s, the kill's 5 s and
    the probe's 5 s (81 s under load).  The step looks at the SSH server's greeting
    meanwhile: silent for freeze_timeout, the guest is named frozen, with the insmod.
    A cold boot (no snapshot): restored without the module, the agent's heartbeat
    names it (test_an_extra_module_whose_init_never_returns_is_named)."""
    ko = build_test_kmod("hang_on_load")
    config = GuestConfig(
        name="freeze-on-load",
        extra_modules=[ko],
        extra_module_params={"hang_on_load": {"how": "spin"}},
        snapshot=False,
    )

    def start() -> None:
        Guest(config).start().close()

    # a cold boot, then freeze_timeout (10 s) and a greeting's 3 s
    e = raises_within(start, NAMED_WITHIN_S, GuestFault)
    first, _, rest = str(e).partition("\n")
    assert first.startswith("guest stopped responding: its SSH server did not greet for "), first
    assert "no agent heartbeat yet)" in first, first
    assert first.endswith(f"(running 'insmod {ko} how=spin')"), first
    assert rest.startswith("--- guest console (last 40 lines)"), rest
    assert "hang_on_load: how=spin, never returning" in rest, rest


def test_a_guest_a_module_keeps_from_running_is_named_by_the_soft_lockup(
    irqlab_fresh_guest: Guest,
) -> None:
    """A module spinning with preemption off on the one vCPU: no process runs again,
    the agent's heartbeat stops.  The verdict said only that the agent was silent; the
    kernel's soft lockup report on the console names the stuck CPU and task."""
    g = irqlab_fresh_guest
    assert g.ssh is not None and g.config.smp == 1
    g.ssh.put(build_test_kmod("hang_on_load"), "/tmp/hang_on_load.ko")
    g.sh("echo 1 > /proc/sys/kernel/watchdog_thresh")  # a report after 2 s, not 20 s
    with pytest.raises(GuestFault) as info:
        g.sh("insmod /tmp/hang_on_load.ko how=busy", timeout=300)
    first = str(info.value).partition("\n")[0]
    assert first.startswith("guest stopped responding: no agent heartbeat for "), first
    assert "; the kernel said: BUG: soft lockup - CPU#0 stuck for " in first, first
    assert "[insmod:" in first, first
