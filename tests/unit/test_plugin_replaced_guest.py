"""A session guest replaced after it died: what its console reported before its death
is checked at the session's end with the last guest's kernel log (it was lost: only
the last guest was checked), naming which guest; module-scoped fixtures that took the
replaced guest are set up again in the new one (they kept what the dead one had).
With a stand-in guest; tests/e2e/test_replaced_session_guest.py kills a real one."""

from __future__ import annotations

import pytest

from irqlab.vm.kernlog import CONSOLE_LOGLEVEL, console_problems

pytest_plugins = ["pytester"]

CONFTEST = """
from pathlib import Path
from types import SimpleNamespace

from irqlab.testing import plugin


class FakeGuest:
    def __init__(self, config):
        self.config = config
        self.generation = 0  # restarts so far
        self.commands = []
        self._agent = None
        self.ssh = object()
        self.machine = SimpleNamespace(is_running=lambda: True, paths=None)
        self._new_run()

    def _new_run(self):
        self.fault = None
        self.log_dir = Path(self.config.log_dir) / f"e2e-run-{self.generation}"
        self.log_dir.mkdir(parents=True)
        (self.log_dir / "console.log").write_text("[    1.000000] irqlab: probed\\n")

    def die(self, console):
        with (self.log_dir / "console.log").open("a") as f:
            f.write(console)
        self.fault = SimpleNamespace(cause="guest kernel panic: Kernel panic - not syncing")

    def connection_lost(self):
        return None

    def restart(self):
        self.generation += 1
        self._new_run()
        return self

    def sh(self, cmd, **_):
        self.commands.append(cmd)
        return "[    1.000000] irqlab: probed\\n\\n4096"  # a clean log, taint O

    def close(self):
        pass


plugin.start_guest = FakeGuest
"""

TESTS = """
import pytest


@pytest.fixture(scope="module")
def prepared(irqlab_guest):
    return irqlab_guest.generation


@pytest.fixture(scope="class")
def derived(prepared):  # takes the session guest through another fixture only
    return prepared


def test_01_warns_and_dies(irqlab_guest, prepared, derived):
    assert prepared == 0 and derived == 0
    irqlab_guest.die(
        "[    2.000000] WARNING: CPU: 0 PID: 7 at drivers/x.c:1 f+0x1/0x2\\n"
        "[    2.000001] ---[ end trace 0000000000000000 ]---\\n"
        "[    3.000000] BUG: kernel NULL pointer dereference, address: 0\\n"
        "[    3.000001] Oops: 0002 [#1] PREEMPT SMP NOPTI\\n"
        "[    3.000002] Kernel panic - not syncing: Fatal exception\\n"
    )


def test_02_meets_its_module_fixture_set_up_again(irqlab_guest, prepared, derived):
    assert irqlab_guest.generation == 1
    assert prepared == 1 and derived == 1


def test_03_each_guest_prints_warnings_on_its_console(irqlab_guest):
    assert irqlab_guest.commands.count("echo %d > /proc/sys/kernel/printk") == 2
"""


def test_a_replaced_session_guests_console_is_checked_and_its_fixtures_set_up_again(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IRQLAB_LOG_DIR", str(pytester.path / "logs"))
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_k=TESTS % CONSOLE_LOGLEVEL)
    r = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    r.assert_outcomes(passed=3, errors=1)  # the error: the session's end
    out = r.stdout.str()
    (console,) = (pytester.path / "logs").glob("pytest-*/e2e-run-0/console.log")
    assert (
        "the session guest's kernel reported problems during this session's tests (not "
        "checked with the ini option irqlab_check_kernel_log = false): the replaced session "
        "guest #1 (replaced after: guest kernel panic: Kernel panic - not syncing, the last "
        f"test to use it: test_k.py::test_01_warns_and_dies; its console before it died: "
        f"{console}):"
    ) in " ".join(out.split()), out
    assert "WARNING: CPU: 0 PID: 7 at drivers/x.c:1" in out, out
    assert "NULL pointer dereference" not in out, "the death's own report was told at once"
    assert "the session guest at the end" not in out, "its kernel log is clean"


def test_a_consoles_problems_end_where_its_death_is_reported() -> None:
    warn = "[    2.0] WARNING: CPU: 0 PID: 7 at drivers/x.c:1 f+0x1/0x2"
    oops = [
        "[    3.0] BUG: kernel NULL pointer dereference, address: 0",
        "[    3.1] #PF: supervisor write access in kernel mode",
        "[    3.2] Oops: 0002 [#1] PREEMPT SMP NOPTI",
        "[    3.3] Kernel panic - not syncing: Fatal exception",
    ]
    found = console_problems("\n".join(["[    1.0] probed", warn, *oops]))
    assert found is not None and found.splats == [warn], found
    assert console_problems("\n".join(["[    1.0] probed", *oops])) is None
    # a panic with no oops (sysrq c): a BUG: line just before it is no part of it
    bug = "[    2.5] BUG: scheduling while atomic: x/1/0x00000002"
    found = console_problems("\n".join([bug, oops[-1]]))
    assert found is not None and found.splats == [bug], found
    # no death on it (killed, frozen): every line counts, a BUG: near its end too
    alive = console_problems(f"[    1.0] probed\n{oops[0]}")
    assert alive is not None and alive.splats == [oops[0]], alive
