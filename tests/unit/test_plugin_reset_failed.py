"""The session guest's reset between tests fails (an earlier test left it so: a driver
it bound to uio_pci_generic, a process holding the node of a driver it unbound): each
later test's setup said it with ``Guest.reset``'s source (35 lines, docstring and all)
and named no earlier test; now the reset's failure in a few lines, naming the last test
the guest was reset for, and the guest is replaced: the tests after it run (each later
test of the session errored at its setup).  With a stand-in guest; the real guest's
case is tests/e2e/test_between_tests.py's (bind_uio_pci_generic() left)."""

from __future__ import annotations

import re

import pytest
from fake_session_guest import CONFTEST  # same directory (rootdir-relative import)

pytest_plugins = ["pytester"]

# the stand-in's reset fails once a test left it odd, as Guest.reset's reload of our
# driver does after bind_uio_pci_generic()
ODD_RESET = """

from irqlab.vm.guest import GuestTimeout


class OddGuest(FakeGuest):
    odd = False

    def restart(self):
        self.odd = False  # a new guest: nothing a test left in it
        return super().restart()

    def reset(self):
        self.commands.append("reset")
        if self.odd:
            raise GuestTimeout(
                "irqlab loaded but /dev/irqlab0 did not appear within 3 s: the driver did "
                "not bind the irqlab device"
            )


plugin.start_guest = OddGuest
"""

TESTS = """
def test_1_fine(irqlab_guest):
    pass


def test_2_leaves_it_odd(irqlab_guest):
    irqlab_guest.odd = True


def test_3_innocent(irqlab_guest):
    pass


def test_4_innocent_too(irqlab_guest):
    pass
"""


def test_a_reset_that_fails_is_said_briefly_naming_the_test_that_left_the_guest(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IRQLAB_LOG_DIR", str(pytester.path / "logs"))
    pytester.makeconftest(CONFTEST + ODD_RESET)
    pytester.makepyfile(test_k=TESTS)
    r = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:xdist")
    r.assert_outcomes(passed=3, errors=1)  # test_4 ran in the guest that replaced it
    out = r.stdout.str()
    parts = re.split(r"\n_{3,} ERROR at setup of (test_\w+) _{3,}\n", out)
    by_name = dict(zip(parts[1::2], parts[2::2], strict=False))
    assert list(by_name) == ["test_3_innocent"], out
    text = by_name["test_3_innocent"].split("\n---", 1)[0]  # before the report's sections
    said = " ".join(text.split())
    assert said.startswith(
        "the session guest could not be reset for this test; the last test it was "
        "reset for: test_k.py::test_2_leaves_it_odd ("
    ), text
    assert "GuestTimeout: irqlab loaded but /dev/irqlab0 did not appear" in said, text
    assert said.endswith("the session guest was replaced by a new one for the tests after this one")
    for noise in ("def reset", "During handling", "Traceback", "plugin.py"):
        assert noise not in text, text
    assert len(text.strip().splitlines()) <= 4, text
    # said on the terminal as a replacement is, naming why
    assert (
        "the session guest could not be reset (GuestTimeout: irqlab loaded but "
        "/dev/irqlab0 did not appear" in out
    ), out


# the replacement itself does not start (its restore and its cold boot fail)
NO_REPLACEMENT = """

from irqlab.vm.guest import GuestError


class UnreplaceableGuest(OddGuest):
    def restart(self):
        raise GuestError("the guest 'e2e' did not start: stand-in restore refused")


plugin.start_guest = UnreplaceableGuest
"""


def test_a_replacement_that_does_not_start_is_said_with_the_reset_failure(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one setup fails with the reset's error and why no replacement came; nothing
    is said as replaced."""
    monkeypatch.setenv("IRQLAB_LOG_DIR", str(pytester.path / "logs"))
    pytester.makeconftest(CONFTEST + ODD_RESET + NO_REPLACEMENT)
    pytester.makepyfile(test_k=TESTS)
    r = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:xdist")
    out = r.stdout.str()
    parts = re.split(r"\n_{3,} ERROR at setup of (test_\w+) _{3,}\n", out)
    said = " ".join(parts[2].split("\n---", 1)[0].split()) if len(parts) > 2 else out
    assert parts[1:2] == ["test_3_innocent"], out
    assert "GuestTimeout: irqlab loaded but /dev/irqlab0 did not appear" in said, said
    assert said.endswith(
        "(replacing the session guest failed too: GuestError: the guest 'e2e' did not "
        "start: stand-in restore refused)"
    ), said
    assert "was replaced by a new one" not in out, out
