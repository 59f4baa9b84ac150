"""The whole suite: the session header names the guest architectures the end-to-end
tests run on (here, not in tests/e2e/conftest.py: pytest prints the header before it
loads the conftest files below the directories it was given), and the soak tier.

Soak: a test that loops what users repeat (copy then run, restore, unbind/bind,
unplug/replug, long storms) asks for the ``soak`` fixture and is marked ``soak`` by that.
``invoke test-all`` runs it short (a few rounds: the loop and its checks still run);
``invoke soak`` (``pytest -m soak --soak``) runs it at full length (hundreds of rounds),
and ``.ci/run`` runs both."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--soak",
        action="store_true",
        default=False,
        help="run the soak tests' loops at full length (hundreds of rounds, long storms); "
        "`invoke soak` selects them with -m soak",
    )


# This suite restores about 30 guest configurations.  The cache's default (32
# snapshots, least recently used evicted) leaves no room for a user's own: with more
# configurations in use than kept, every run evicted what the next test needed (LRU
# in a cycle) and cold-booted about 20 of them again (README, Ready-state snapshots).
SUITE_SNAPSHOT_KEEP = "64"


# The device tests' random walk (tests/device/test_random_sequence.py): the variables
# that replay a seed and set the steps per seed, and the least value each takes (None:
# any integer).  A value they cannot take is a usage error here, at startup: it was a
# traceback while collecting (a seed 'x') or a misleading assertion (steps -5).
RANDOM_WALK_ENV = {"IRQLAB_RANDOM_SEED": None, "IRQLAB_RANDOM_STEPS": 1}


def check_environment() -> None:
    """pytest's usage error for a variable set to a value it cannot take: the random
    walk's, and the QEMU source's (read while collecting: tests/e2e/conftest.py looks
    for an aarch64 QEMU, and a bad value was a traceback there)."""
    from irqlab.build.qemu import env_source
    from irqlab.errors import ConfigError

    try:
        env_source(os.environ)
    except ConfigError as e:
        raise pytest.UsageError(str(e)) from None
    for name, least in RANDOM_WALK_ENV.items():
        raw = os.environ.get(name)
        if raw is None or (raw == "" and least is not None):  # steps: '' is the default
            continue
        try:
            value: int | None = int(raw)
        except ValueError:
            value = None
        if value is None or (least is not None and value < least):
            want = "an integer" if least is None else f"a whole number >= {least}"
            raise pytest.UsageError(f"${name}={raw!r}: expected {want}")


def pytest_configure(config: pytest.Config) -> None:
    check_environment()
    os.environ.setdefault("IRQLAB_SNAPSHOT_KEEP", SUITE_SNAPSHOT_KEEP)  # xdist workers too
    config.addinivalue_line(
        "markers",
        "soak: loops what users repeat; short by default, full length with --soak (set "
        "for every test that uses the soak fixture)",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "soak" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.soak)


@pytest.fixture(autouse=True)
def _inner_runs_log_apart(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A test that runs pytest inside (pytester) gives it a log directory of its own:
    the inner sessions inherited $IRQLAB_LOG_DIR, left empty run directories there and
    pruned the developer's real runs (an e2e run's directory while it ran, once)."""
    if "pytester" in request.fixturenames:
        monkeypatch = request.getfixturevalue("monkeypatch")
        monkeypatch.setenv("IRQLAB_LOG_DIR", str(tmp_path_factory.mktemp("inner-logs")))


@pytest.fixture
def soak(request: pytest.FixtureRequest) -> Callable[[float, float], float]:
    """How long a soak test loops: ``soak(quick, full)`` is *full* under ``--soak``
    (``invoke soak``), *quick* otherwise."""
    full = bool(request.config.getoption("--soak"))
    return lambda quick, long: long if full else quick


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Which guest architectures test_arch_paths.py runs on, and why any is left out
    (not collected, so never counted as a pass or a skip)."""
    from irqlab.build.arch import ARCHES_ENV
    from irqlab.build.archguest import absent_arches, present_arches

    lines = ["irqlab guest architectures: " + ", ".join(a.name for a in present_arches())]
    for a in absent_arches():
        lines.append(
            f"irqlab: {a.name} NOT TESTED: {a.qemu_binary} is not built "
            f"(build it with {ARCHES_ENV}=x86_64,{a.name} invoke build-qemu)"
        )
    return lines
