"""``pytest --setup-plan`` shows the fixtures a run would set up and runs none: with
fixtures of a module's or a class's that take the session guest too (the plugin's
fixture-setup hook asked pytest's stand-in value None whether it had died: an
AttributeError, then pytest's own assertion on a class fixture's finalizers)."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

TESTS = """
import pytest


@pytest.fixture(scope="module")
def prepared(irqlab_guest):
    irqlab_guest.sh("echo prep > /tmp/prep")
    return "/tmp/prep"


@pytest.fixture(scope="class")
def class_handle(irqlab_guest):
    yield irqlab_guest.agent


@pytest.fixture(scope="session")
def session_wide(irqlab_guest):
    return irqlab_guest


def test_module(prepared, irqlab_guest):
    pass


class TestClass:
    def test_1(self, class_handle, irqlab_device):
        pass

    def test_2(self, class_handle, session_wide):
        pass
"""


def test_setup_plan_with_wider_fixtures_of_the_session_guest_runs_nothing(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # were a guest started, it would fail at once on this cache directory, saying so
    monkeypatch.setenv("IRQLAB_CACHE_DIR", "/proc/no-cache-here")
    monkeypatch.setenv("IRQLAB_ACCEL", "tcg")  # the header probes nothing either
    pytester.makepyfile(test_plan=TESTS)
    r = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:xdist", "--setup-plan")
    out = r.stdout.str()
    assert r.ret == pytest.ExitCode.OK, out
    r.assert_outcomes()  # none ran, none failed or errored
    for fixture in ("M prepared", "C class_handle", "S session_wide", "S irqlab_guest"):
        assert f"SETUP    {fixture}" in out, out
    assert "Error" not in out and "prerequisite" not in out, out
