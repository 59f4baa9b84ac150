"""A failure's traceback shows the user's frames, not the plugin's: an error in any
conftest fixture (one that has nothing to do with irqlab too) passed through the
plugin's fixture-setup hook, whose 20 lines came first; an ``irqlab_wait_stats``
timeout showed the fixture's own ``return wait_file_stats(...)``; an error in a
fixture's teardown (``irqlab_agent``'s unread path errors, or a conftest's) showed the
plugin's teardown hook, its docstring and ``yield``."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

CONFTEST = """
import pytest


@pytest.fixture
def conftest_broken():
    raise ValueError("a plain conftest fixture broke")


@pytest.fixture
def teardown_broken():
    yield
    raise ValueError("a fixture's teardown broke")


@pytest.fixture(scope="module")
def module_broken():
    raise ValueError("a module's fixture broke")


class Agent:  # GET_STATS answers, the condition never holds
    def request(self, op, **kw):
        return {"errno": None, "result": {"queued": 0}}


@pytest.fixture
def irqlab_agent():
    return Agent()
"""

TESTS = """
def test_plain_fixture(conftest_broken):
    pass


def test_module_fixture(module_broken):
    pass


def test_teardown_fixture(teardown_broken):
    pass


def test_wait_stats_times_out(irqlab_wait_stats):
    irqlab_wait_stats("h", lambda st: st["queued"] >= 1, timeout=0.2)
"""


def test_the_plugins_frames_stay_out_of_a_failures_traceback(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IRQLAB_CACHE_DIR", "/proc/no-cache-here")  # nothing starts
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_frames=TESTS)
    r = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:xdist")
    r.assert_outcomes(passed=1, failed=1, errors=3)
    out = r.stdout.str()
    assert 'raise ValueError("a plain conftest fixture broke")' in out, out
    assert 'raise ValueError("a module\'s fixture broke")' in out, out
    assert 'raise ValueError("a fixture\'s teardown broke")' in out, out
    assert "the file stats of 'h' never satisfied the condition within 0.2 s" in out, out
    assert "plugin.py" not in out, out
    assert "pytest_fixture_setup" not in out and "return (yield)" not in out, out
    assert "pytest_runtest_teardown" not in out, out
    assert "return wait_file_stats(" not in out, out
