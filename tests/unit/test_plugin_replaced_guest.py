"""A session guest replaced after it died: what its console reported before its death
is checked at the session's end with the last guest's kernel log (it was lost: only
the last guest was checked), naming which guest; module-scoped fixtures that took the
replaced guest are set up again in the new one (they kept what the dead one had).
With a stand-in guest; tests/e2e/test_replaced_session_guest.py kills a real one."""

from __future__ import annotations

import pytest
from fake_session_guest import CONFTEST  # same directory (rootdir-relative import)

from irqlab.testing.parallel import WORKER_ENV
from irqlab.vm.kernlog import CONSOLE_LOGLEVEL, console_problems

pytest_plugins = ["pytester"]


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


def test_a_console_without_its_printk_stamp_is_no_kernel_report() -> None:
    """init, the agent and a shell write on the console too: their WARNING: is none of
    the kernel's; a kernel line that userspace's output ran on into is the kernel's."""
    console = "\n".join(
        [
            "[    1.0] probed",
            "WARNING: the agent's own words, on its stderr",
            "irqlab:/# \x1b[6n[    2.0] WARNING: CPU: 0 PID: 7 at drivers/x.c:1 f+0x1/0x2",
        ]
    )
    found = console_problems(console)
    assert found is not None, console
    assert found.splats == ["[    2.0] WARNING: CPU: 0 PID: 7 at drivers/x.c:1 f+0x1/0x2"], found
    assert console_problems("[    1.0] probed\nWARNING: userspace only") is None


@pytest.fixture(autouse=True)
def _not_an_xdist_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """The inner runs are a plain user's, not a worker's (run from one, they inherited
    its id and named their guest 'e2e-gwN')."""
    for name in WORKER_ENV:
        monkeypatch.delenv(name, raising=False)


def _run(pytester: pytest.Pytester, extra: str, tests: str) -> pytest.RunResult:
    pytester.makeconftest(CONFTEST + extra)
    pytester.makepyfile(test_k=tests)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA")


# the new guest does not answer the loglevel's echo once (SSH timing out under load)
ECHO_FAILS = """
_sh = FakeGuest.sh
def sh(self, cmd, **kw):
    if "/proc/sys/kernel/printk" in cmd and self.generation in FAIL_IN:
        FAIL_IN.discard(self.generation)
        raise TimeoutError("the echo timed out")
    return _sh(self, cmd, **kw)
FakeGuest.sh = sh
FAIL_IN = {%d}
"""
MODULE_FIXTURE = """
import pytest

@pytest.fixture(scope="module")
def prepared(irqlab_guest):
    return irqlab_guest.generation
"""
# the guest dies in a test; the next ones meet the module's fixture set up again
DIES_THEN_RENEWED = (
    MODULE_FIXTURE
    + "def test_01_dies(irqlab_guest, prepared):\n"
    + '    irqlab_guest.die("[    3.0] Kernel panic - not syncing: x\\n")\n'
    + "def test_02(irqlab_guest, prepared):\n"
    + "    assert prepared == irqlab_guest.generation == 1\n"
    + "def test_03(irqlab_guest, prepared):\n"
    + "    assert prepared == irqlab_guest.generation == 1\n"
)


@pytest.mark.parametrize("generation", [0, 1], ids=["session-start", "after-replacement"])
def test_a_console_that_cannot_be_made_to_show_warnings_is_said_not_an_error(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, generation: int
) -> None:
    """The session guest's loglevel echo failing (its first guest's, or a replacement's)
    fails no test, and a replacement's still renews the fixtures that took the guest it
    replaced (its echo raised out of the replacement: they stayed the dead guest's)."""
    monkeypatch.setenv("IRQLAB_LOG_DIR", str(pytester.path / "logs"))
    r = _run(pytester, ECHO_FAILS % generation, DIES_THEN_RENEWED)
    r.assert_outcomes(passed=3)
    out = " ".join(r.stdout.str().split())
    assert (
        "irqlab: the console of the guest 'e2e' could not be made to print the kernel's "
        "warnings (TimeoutError: the echo timed out)"
    ) in out, out


KILLS_AT_SETUP = """
import pytest

KILLED = []
SET_UP = []

@pytest.fixture(scope="module")
def prepared(irqlab_guest):
    return irqlab_guest.generation

@pytest.fixture(scope="module")
def kills_once(irqlab_guest):  # the guest dies while the test's fixtures are set up
    if not KILLED:
        KILLED.append(1)
        irqlab_guest.die("[    3.0] Kernel panic - not syncing: x\\n")

@pytest.fixture(scope="module")
def later(irqlab_guest):  # set up after kills_once: replaces the guest at its setup
    SET_UP.append(irqlab_guest.generation)
    return irqlab_guest.generation

def test_01(irqlab_guest, prepared):
    assert prepared == 0

def test_02(irqlab_guest, prepared, kills_once%s):
    pass

def test_03_in_the_new_guest(irqlab_guest, prepared%s):
    assert irqlab_guest.generation == 1
    assert prepared == 1, "prepared in the replaced guest"
    assert SET_UP in ([], [1]), SET_UP
"""


@pytest.mark.parametrize("replacer", ["fixture-setup", "guest-alive"])
def test_fixtures_of_a_guest_replaced_while_a_test_is_set_up_are_renewed_after_it(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, replacer: str
) -> None:
    """The guest replaced by a wider-scoped fixture's setup (pytest_fixture_setup) or by
    irqlab_guest_alive, not before the test's fixtures: the fixtures that took the
    replaced guest are set up again before the next test that takes it (they were
    never: the guest was alive then); one set up in the new guest is kept."""
    monkeypatch.setenv("IRQLAB_LOG_DIR", str(pytester.path / "logs"))
    extra = ", later" if replacer == "fixture-setup" else ""
    r = _run(pytester, "", KILLS_AT_SETUP % (extra, extra))
    r.assert_outcomes(passed=3)
    assert r.stdout.str().count("starting a new one") == 1, r.stdout.str()


def test_a_fixture_teardown_that_calls_pytest_fail_is_said_and_the_others_torn_down(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pytest.fail() (a BaseException) in the teardown of a fixture that took the
    replaced guest fails no test, and the other fixtures are torn down too."""
    monkeypatch.setenv("IRQLAB_LOG_DIR", str(pytester.path / "logs"))
    tests = """
import pytest

@pytest.fixture(scope="module")
def loaded(irqlab_guest):
    gen = irqlab_guest.generation
    yield gen
    if irqlab_guest.generation != gen:
        pytest.fail("the module is not loaded any more")

@pytest.fixture(scope="module")
def other(irqlab_guest):
    return irqlab_guest.generation

def test_01_dies(irqlab_guest, loaded, other):
    irqlab_guest.die("[    3.0] Kernel panic - not syncing: x\\n")

def test_02(irqlab_guest, loaded, other):
    assert loaded == other == 1
"""
    r = _run(pytester, "", tests)
    r.assert_outcomes(passed=2)
    assert (
        "irqlab: tearing down the fixture 'loaded' set up in the replaced session guest "
        "failed (it is set up again): Failed: the module is not loaded any more"
    ) in " ".join(r.stdout.str().split()), r.stdout.str()


def test_a_failed_replacement_reads_the_dead_guests_console_once(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replacement whose restart raised, then one that worked: the dead guest's
    console (its run directory, still the guest's after the failed one) is reported
    once at the session's end."""
    monkeypatch.setenv("IRQLAB_LOG_DIR", str(pytester.path / "logs"))
    extra = """
_restart = FakeGuest.restart
def restart(self):
    if not getattr(self, "failed_once", False):
        self.failed_once = True
        raise OSError("qemu: could not start")
    return _restart(self)
FakeGuest.restart = restart
"""
    tests = (
        "def test_01_dies(irqlab_guest):\n"
        '    irqlab_guest.die("[    2.0] WARNING: CPU: 0 PID: 7 at x.c:1 f\\n'
        '[    3.0] Kernel panic - not syncing: x\\n")\n'
        "def test_02(irqlab_guest):\n    pass\n"
        "def test_03(irqlab_guest):\n    pass\n"
    )
    r = _run(pytester, extra, tests)
    r.assert_outcomes(passed=2, errors=2)  # test_02's setup (the restart), the end
    out = " ".join(r.stdout.str().split())
    # counted in the reports, not the short summary: its lines are as wide as the
    # terminal (CI's repeat the whole message)
    reports = out.split("short test summary info", 1)[0]
    assert reports.count("its console before it died") == 1, out
    assert "the replaced session guest #1 (" in reports, out


OWN_SESSION_GUEST = """
import pytest

@pytest.fixture(scope="session")
def irqlab_guest(irqlab_log_dir):  # the project's own: a guest of its configuration
    g = FakeGuest(SimpleNamespace(name="msi", log_dir=irqlab_log_dir))
    yield g
    g.close()
"""


def test_the_fixtures_of_a_conftests_own_session_guest_are_renewed_after_its_replacement(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A conftest's irqlab_guest (overriding ours) replaced after a test killed it: the
    module's fixtures that took it are set up again in the new one before the next
    test, as with ours (they were not: the next test met what the dead guest had)."""
    monkeypatch.setenv("IRQLAB_LOG_DIR", str(pytester.path / "logs"))
    r = _run(pytester, OWN_SESSION_GUEST, DIES_THEN_RENEWED)
    r.assert_outcomes(passed=3)
    assert r.stdout.str().count("starting a new one") == 1, r.stdout.str()


def test_under_xdist_the_replacement_names_the_worker(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under ``-n N`` each worker has its session guest and the lines of all come on the
    controller's stderr: the replacement's names its worker (it did not: whose guest
    died was anyone's guess).  A real xdist run of one worker."""
    monkeypatch.setenv("IRQLAB_LOG_DIR", str(pytester.path / "logs"))
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_k=DIES_THEN_RENEWED)
    r = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "1")
    r.assert_outcomes(passed=3)
    said = " ".join((r.stdout.str() + r.stderr.str()).split())
    assert (
        "irqlab: xdist worker gw0: the session guest died (guest kernel panic: Kernel panic "
        "- not syncing); starting a new one (the last test to use it: test_k.py::test_01_dies)"
    ) in said, said
