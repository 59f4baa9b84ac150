"""A session guest whose reset fails in a new guest too (what the reset cannot do is in
the guest's configuration, or a restore brings it back): it was replaced at every
test's setup, each test paying a restore and a terminal line ``starting a new one`` to
fail all the same.  It is replaced once; a replacement that cannot be reset either is
not, and each later test's setup fails as it did, saying why.  With a stand-in guest
(tests/unit/fake_session_guest.py)."""

from __future__ import annotations

import re

import pytest
from fake_session_guest import CONFTEST  # same directory (rootdir-relative import)

pytest_plugins = ["pytester"]

# the stand-in's reset fails from the moment a test broke it, in every guest after it
# (a replacement brings it back); BROKEN_FROM_START: in the first guest already
STUBBORN_RESET = """

from irqlab.vm.guest import GuestTimeout

import conftest_state


class StubbornGuest(FakeGuest):
    def reset(self):
        self.commands.append("reset")
        if conftest_state.broken:
            raise GuestTimeout("the driver did not bind the irqlab device")


plugin.start_guest = StubbornGuest
"""

TESTS = """
import conftest_state


def test_1_breaks_it_for_good(irqlab_guest):
    conftest_state.broken = True


def test_2(irqlab_guest):
    pass


def test_3(irqlab_guest):
    pass


def test_4(irqlab_guest):
    pass
"""


def _errors(out: str) -> dict[str, str]:
    parts = re.split(r"\n_{3,} ERROR at setup of (test_\w+) _{3,}\n", out)
    return {
        name: " ".join(text.split("\n---", 1)[0].split())
        for name, text in zip(parts[1::2], parts[2::2], strict=False)
    }


TERMINAL_LINE = "irqlab: the session guest could not be reset ("  # a replacement's
NOT_AGAIN = "(not replaced again: the new session guest could not be reset either)"
REPLACED = "the session guest was replaced by a new one for the tests after this one"


@pytest.mark.parametrize(
    ("broken", "replaced_at"),
    [
        # test_2's setup replaces the guest test_1 left so; the new one cannot be reset
        (False, "test_2"),
        # the first guest already cannot be reset: replaced once, at the first test
        (True, "test_1_breaks_it_for_good"),
    ],
)
def test_a_guest_that_a_replacement_cannot_fix_is_replaced_once(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, broken: bool, replaced_at: str
) -> None:
    monkeypatch.setenv("IRQLAB_LOG_DIR", str(pytester.path / "logs"))
    pytester.makeconftest(CONFTEST + STUBBORN_RESET)
    pytester.makepyfile(conftest_state=f"broken = {broken}\n", test_k=TESTS)
    r = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:xdist")
    out = r.stdout.str() + r.stderr.str()
    r.assert_outcomes(passed=0 if broken else 1, errors=4 if broken else 3)
    assert out.count(TERMINAL_LINE) == 1, out  # it was one at each test's setup
    first, *later = _errors(out).items()
    assert first[0] == replaced_at and first[1].endswith(REPLACED), out
    assert len(later) == r.parseoutcomes()["errors"] - 1, out
    for name, text in later:  # not replaced again: each setup fails saying why
        assert "GuestTimeout: the driver did not bind the irqlab device" in text, name
        assert "no test ran in it before (it is new)" in text, name
        assert text.endswith(NOT_AGAIN), (name, out)
