"""A test that reaches the session guest only through a fixture of its own (``def
wraps(irqlab_guest)``, the test takes ``wraps``) uses it as one that takes it
itself: a failure's report names its part of the guest's logs and the guest's
diagnostics, and the marker or a guest of its own beside it is refused.  A conftest's
autouse session fixture that holds the guest gives a test none of that.  With a
stand-in guest (fake_session_guest).

The session guest is reset before every test that takes it, however it takes it
(``irqlab_guest`` itself, ``irqlab_agent``, ``irqlab_device``, a fixture of the
test's own), once per test, after the test's wider-scoped fixtures are set up (as
``irqlab_agent``'s reset was); not for a test that has it only through such an autouse
fixture, nor for one without it.  It was ``irqlab_agent``'s alone: a test that took
``irqlab_guest`` met what the test before it left armed or unloaded
(tests/e2e/test_between_tests.py has the real guest)."""

from __future__ import annotations

import re

import pytest
from fake_session_guest import CONFTEST  # same directory (rootdir-relative import)

from irqlab.testing.parallel import WORKER_ENV

pytest_plugins = ["pytester"]

HOLDS_THE_GUEST = """
import pytest

@pytest.fixture(scope="session", autouse=True)
def hold(irqlab_guest):  # e.g. a kernel-log check after the suite
    yield irqlab_guest
"""

TESTS = """
import pytest


@pytest.fixture
def wraps_guest(irqlab_guest):
    return irqlab_guest


@pytest.fixture
def deeper(wraps_guest):
    return wraps_guest


@pytest.fixture
def raises_in_guest(irqlab_guest):
    raise RuntimeError("the fixture broke")


def test_fails_via_own_fixture(wraps_guest):
    assert wraps_guest.sh("echo 1") == "2"


def test_fails_two_fixtures_deep(deeper):
    assert False


@pytest.mark.usefixtures("wraps_guest")
def test_fails_with_usefixtures():
    assert False


def test_fixture_raises(raises_in_guest):
    pass


def test_fails_without_a_guest():
    assert False


@pytest.mark.irqlab(smp=2)
def test_marker_beside_own_fixture(wraps_guest):
    pass


def test_two_guests(wraps_guest, irqlab_fresh_guest):
    pass
"""

LOGS = "irqlab guest logs (this test's part)"
DIAGNOSTICS = "irqlab diagnostics of the session guest ('e2e')"


def _reports(out: str) -> dict[str, str]:
    """Each failure's or error's report in *out*, by the test's name."""
    parts = re.split(r"\n_{3,} (?:ERROR at setup of )?(\w+) _{3,}\n", out)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def _run(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tests: str, held: bool = True
) -> pytest.RunResult:
    """*tests* run as a plain user's (not an xdist worker's) on the stand-in guest,
    which a conftest's autouse session fixture holds (if *held*)."""
    for name in WORKER_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IRQLAB_LOG_DIR", str(pytester.path / "logs"))
    pytester.makeconftest(CONFTEST + (HOLDS_THE_GUEST if held else ""))
    pytester.makepyfile(test_via=tests)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:xdist")


def test_a_guest_reached_through_the_tests_own_fixture_is_the_tests(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = _run(pytester, monkeypatch, TESTS)
    r.assert_outcomes(failed=4, errors=3)
    out = r.stdout.str()
    reports = _reports(out.split("short test summary info", 1)[0])
    for test in (
        "test_fails_via_own_fixture",
        "test_fails_two_fixtures_deep",
        "test_fails_with_usefixtures",
        "test_fixture_raises",
    ):
        assert LOGS in reports[test] and DIAGNOSTICS in reports[test], (test, reports[test])
    none = reports["test_fails_without_a_guest"]
    assert LOGS not in none and DIAGNOSTICS not in none, none
    said = " ".join(out.split())
    assert (
        "test_marker_beside_own_fixture uses the shared guest (irqlab_guest), which keeps "
        "its defaults"
    ) in said, out
    assert (
        "test_two_guests uses the shared guest's irqlab_guest and a guest of its own "
        "(irqlab_fresh_guest): that is two guests"
    ) in said, out


RESETS = """
import pytest


def since_last(guest, name):
    # the resets and fixture setups since the last test's mark, then this test's mark
    i = max((n for n, c in enumerate(guest.commands) if c.startswith("test ")), default=-1)
    seen = [c for c in guest.commands[i + 1 :] if c in ("reset", "module arms", "own fixture")]
    guest.commands.append(f"test {name}")
    return seen


@pytest.fixture(scope="module")
def armed_for_module(irqlab_guest):
    irqlab_guest.commands.append("module arms")
    return irqlab_guest


@pytest.fixture
def own(irqlab_guest):
    irqlab_guest.commands.append("own fixture")
    return irqlab_guest


def test_1_agent(irqlab_agent, hold):
    assert since_last(hold, "1") == ["reset"]


def test_2_guest_only(irqlab_guest):
    assert since_last(irqlab_guest, "2") == ["reset"]


def test_3_device_and_agent_and_guest(irqlab_device, irqlab_agent, irqlab_guest):
    assert since_last(irqlab_guest, "3") == ["reset"]  # once


def test_4_own_fixture(own):
    assert since_last(own, "4") == ["reset", "own fixture"]


def test_5_module_fixture(armed_for_module):
    assert since_last(armed_for_module, "5") == ["module arms", "reset"]


def test_6_module_fixture_again(armed_for_module, irqlab_agent):
    assert since_last(armed_for_module, "6") == ["reset"]


def test_7_no_guest_of_its_own(request):
    assert since_last(request.getfixturevalue("hold"), "7") == []
"""


def test_every_test_that_takes_the_session_guest_gets_it_reset_once(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    _run(pytester, monkeypatch, RESETS).assert_outcomes(passed=7)


TAKEN_AT_RUN_TIME = """
import pytest


def since_last(guest, name):
    # the resets since the last test's mark, then this test's mark
    i = max((n for n, c in enumerate(guest.commands) if c.startswith("test ")), default=-1)
    seen = [c for c in guest.commands[i + 1 :] if c == "reset"]
    guest.commands.append(f"test {name}")
    return seen


@pytest.fixture
def picks(request):  # a helper that picks its guest as it runs
    return request.getfixturevalue("irqlab_guest")


def test_1_named(irqlab_guest):
    assert since_last(irqlab_guest, "1") == ["reset"]


def test_2_taken_in_the_test(request):
    g = request.getfixturevalue("irqlab_guest")
    assert since_last(g, "2") == ["reset"]
    assert request.getfixturevalue("irqlab_guest") is g  # once per test


def test_3_taken_by_its_fixture(picks):
    assert since_last(picks, "3") == ["reset"]


def test_4_kills_it(irqlab_guest):
    since_last(irqlab_guest, "4")
    irqlab_guest.die("[    3.0] Kernel panic - not syncing: x\\n")


def test_5_taken_in_the_test_after_its_death(request):
    g = request.getfixturevalue("irqlab_guest")
    assert g.generation == 1 and g.fault is None, "not replaced"
    assert since_last(g, "5") == ["reset"]


def test_6_no_guest():
    pass


@pytest.fixture(scope="module")
def module_picks(request):  # a wider-scoped fixture's take: replaced if dead, no reset
    return request.getfixturevalue("irqlab_guest").generation


def test_7_kills_it_again(irqlab_guest):
    since_last(irqlab_guest, "7")
    irqlab_guest.die("[    3.0] Kernel panic - not syncing: x\\n")


def test_8_module_fixture_takes_it(module_picks):
    assert module_picks == 2, "the module's fixture met the dead guest"
"""


def test_a_session_guest_taken_through_getfixturevalue_is_replaced_and_reset(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A test (or a function-scoped fixture of its) that takes the session guest only
    through ``request.getfixturevalue("irqlab_guest")`` gets it as one that names it:
    replaced when an earlier test killed it (said, naming that test), then reset, once.
    A module-scoped fixture that takes it so meets a live one.  They got neither: the
    session fixture, set up already, is no setup of the test's."""
    r = _run(pytester, monkeypatch, TAKEN_AT_RUN_TIME, held=False)
    r.assert_outcomes(passed=8)
    said = "starting a new one (the last test to use it: test_via.py::test_4_kills_it)"
    assert said in " ".join(r.stdout.str().split()), r.stdout.str()
