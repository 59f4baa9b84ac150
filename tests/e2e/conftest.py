"""End-to-end tests: one booted guest per session, a clean agent per test.

The fixtures come from the irqlab pytest plugin (irqlab.testing.plugin) under their own
names (``irqlab_guest``, ``irqlab_agent``, ``irqlab_device``, ...).  A missing
prerequisite (QEMU build, image, module) makes every test fail with a message naming
it; nothing is skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from irqlab.vm.guest import Guest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="module")
def blocking_read_guest() -> Iterator[Guest]:
    """A guest of the module's own with tests/e2e/kmods/blocking_read loaded: its
    /dev/blocking_read's read() has no .poll handler and waits for a write, in state D
    with the module's ``uninterruptible`` parameter set."""
    from kmods import build_test_kmod  # same directory (rootdir-relative import)

    from irqlab.testing.plugin import start_guest
    from irqlab.vm.guest import GuestConfig

    g = start_guest(
        GuestConfig(name="blocking-read", extra_modules=[build_test_kmod("blocking_read")])
    )
    try:
        yield g
    finally:
        g.close()


@pytest.fixture
def ring_size(irqlab_guest: Guest) -> Iterator[Callable[[int], int]]:
    """``ring_size(n)``: files of /dev/irqlabN opened from then on get a driver ring of
    at least *n* records (the next power of two, returned); the module's value comes
    back after the test."""
    param = f"/sys/module/{irqlab_guest.module_name()}/parameters/ring_size"
    old = irqlab_guest.sh(f"cat {param}").strip()

    def set_size(n: int) -> int:
        size = 1 << (n - 1).bit_length()
        irqlab_guest.sh(f"echo {size} > {param}")
        return size

    yield set_size
    irqlab_guest.sh(f"echo {old} > {param}")


def _aarch64_built() -> bool:
    from irqlab.build.arch import AARCH64
    from irqlab.build.archguest import present_arches
    from irqlab.errors import IrqlabError

    try:
        return AARCH64 in present_arches()
    except IrqlabError:  # a bad $IRQLAB_QEMU_SOURCE: tests/conftest.py's usage error; a
        return False  # cache that cannot be written: the tests' setup names it


# aarch64-only tests are not collected without the aarch64 QEMU (never skipped): the
# session header names what is left out.
collect_ignore = (
    []
    if _aarch64_built()
    else ["test_dt_key.py", "test_own_module_aarch64.py", "test_arch_option.py"]
)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    from arch_times import ARCH_TIMES, summary_lines  # same directory

    times = config.stash.get(ARCH_TIMES, None)
    if times:
        terminalreporter.write_sep("-", "guest boot (QEMU start -> agent ready) by architecture")
        for line in summary_lines(times):
            terminalreporter.write_line(line)
