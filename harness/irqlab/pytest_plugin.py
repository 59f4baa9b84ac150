"""pytest fixtures for irqlab (loaded through the ``pytest11`` entry point).

The fixtures only wire the library together; all behaviour lives in it:

- ``qemu_install`` (session): :func:`irqlab.build.qemu.ensure_qemu`; a failed build
  fails the tests with the build log's path (never a skip).
- ``accel_choice`` (session): :func:`irqlab.accel.choose` for that QEMU.
- ``irqlab_log_dir`` (session): this run's log directory below :func:`irqlab.paths.log_dir`.
- ``qtest_machine_factory``: starts device-level QEMUs (``-accel qtest``, no guest)
  and always stops them at teardown; ``qtest_machine`` is one with ``-device irqlab,id=irq0``.
- ``injector``: :class:`irqlab.qmp.injector.Injector` on ``qtest_machine``'s ``irq0``.

When a test that started machines fails, the report gets a section naming their logs.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import pytest

from irqlab import accel, paths
from irqlab.machine import Machine, MachineConfig
from irqlab.qmp.injector import Injector

if TYPE_CHECKING:
    from irqlab.build.qemu import QemuInstall

_MACHINES = pytest.StashKey[list[Machine]]()


class QtestMachineFactory(Protocol):
    def __call__(
        self,
        device: str = "irqlab,id=irq0",
        *,
        extra_args: Sequence[str] = (),
        machine: str = "q35",
        memory: str = "128M",
    ) -> Machine: ...


@pytest.fixture(scope="session")
def irqlab_log_dir() -> Path:
    d = paths.log_dir() / f"pytest-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="session")
def qemu_install() -> QemuInstall:
    from irqlab.build.qemu import BuildError, ensure_qemu

    try:
        return ensure_qemu(log=lambda msg: print(f"[irqlab build] {msg}"))
    except BuildError as e:
        pytest.fail(f"building QEMU failed: {e}", pytrace=False)


@pytest.fixture(scope="session")
def accel_choice(qemu_install: QemuInstall) -> accel.AccelChoice:
    return accel.choose(qemu_install.binary, datadir=qemu_install.datadir)


def _test_log_root(request: pytest.FixtureRequest, base: Path) -> Path:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid)[-120:]
    return base / name


@pytest.fixture
def qtest_machine_factory(
    request: pytest.FixtureRequest, qemu_install: QemuInstall, irqlab_log_dir: Path
) -> Generator[QtestMachineFactory, None, None]:
    started: list[Machine] = []
    request.node.stash[_MACHINES] = started
    log_root = _test_log_root(request, irqlab_log_dir)

    def start(
        device: str = "irqlab,id=irq0",
        *,
        extra_args: Sequence[str] = (),
        machine: str = "q35",
        memory: str = "128M",
    ) -> Machine:
        args = ["-machine", machine, "-m", memory]
        if device:
            args += ["-device", device]
        cfg = MachineConfig(
            binary=qemu_install.binary,
            datadir=qemu_install.datadir,
            args=[*args, *extra_args],
            qtest=True,
            console=False,
            name=f"qtest{len(started)}",
            log_root=log_root,
        )
        m = Machine(cfg)
        started.append(m)
        return m.start()

    try:
        yield start
    finally:
        errors = []
        for m in reversed(started):
            try:
                m.close()
            except Exception as e:  # close them all, then report
                errors.append(e)
        if errors:
            raise errors[0]


@pytest.fixture
def qtest_machine(qtest_machine_factory: QtestMachineFactory) -> Machine:
    return qtest_machine_factory()


@pytest.fixture
def injector(qtest_machine: Machine) -> Injector:
    return Injector(qtest_machine, "irq0")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    machines = item.stash.get(_MACHINES, [])
    if report.failed and machines:
        report.sections.append(
            ("irqlab logs", "\n".join(f"{m.config.name}: {m.describe_logs()}" for m in machines))
        )
    return report
