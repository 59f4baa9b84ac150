"""pytest fixtures for irqlab (loaded through the ``pytest11`` entry point).

The fixtures only wire the library together; all behaviour lives in it:

- ``qemu_install`` (session): :func:`irqlab.build.qemu.ensure_qemu`; a failed build
  fails the tests with the build log's path (never a skip).
- ``accel_choice`` (session): :func:`irqlab.vm.accel.choose` for that QEMU.
- ``irqlab_log_dir`` (session): this run's log directory below :func:`irqlab.paths.log_dir`.
- ``qtest_machine_factory``: starts device-level QEMUs (``-accel qtest``, no guest)
  and always stops them at teardown; ``qtest_machine`` is one with ``-device irqlab,id=irq0``.
- ``injector``: :class:`irqlab.vm.qmp.injector.Injector` on ``qtest_machine``'s ``irq0``.

Booted guest (end to end):

- ``irqlab_guest`` (session): one :class:`irqlab.vm.guest.Guest` (QEMU + Debian kernel +
  our module + agent) for the whole session; a missing prerequisite fails with its name.
- ``irqlab_agent``: the guest's agent, reset for this test (no armed paths, counters zero).
- ``irqlab_device``: :class:`irqlab.testing.helpers.DeviceControl` (inject over QMP, wait on
  counters).
- ``irqlab_wait_stats``: poll the driver's per-file stats through the agent.
- ``irqlab_fresh_guest``: a guest of the test's own, restored from the ready-state
  snapshot in about half a second; configured by ``@pytest.mark.irqlab(device={...},
  module={...}, smp=N)``; ``irqlab_fresh_device`` controls its device.

When a test that started machines fails, the report gets a section naming their logs;
for the shared guest, the test's own part of the console log and of the agent's streams
is copied into the test's log directory and named in the report.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import pytest

from irqlab.testing.logslice import LogSlicer
from irqlab.vm import accel
from irqlab.vm.machine import Machine, MachineConfig
from irqlab.vm.qmp.injector import Injector

if TYPE_CHECKING:
    from irqlab.build.qemu import QemuInstall
    from irqlab.testing.helpers import DeviceControl
    from irqlab.vm.agent_client import AgentClient
    from irqlab.vm.guest import Guest, GuestConfig

_MACHINES = pytest.StashKey[list[Machine]]()
_GUEST_LOGS = pytest.StashKey[tuple[LogSlicer, Path]]()


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
def irqlab_log_dir(request: pytest.FixtureRequest) -> Path:
    """This run's log directory (``<log dir>/pytest-<stamp>-<pid>``, and ``<worker id>/``
    below it in a pytest-xdist worker); older runs beyond the newest ten are removed."""
    from irqlab.testing.parallel import run_log_dir

    return run_log_dir(request.config)


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


def start_guest(config: GuestConfig | None = None) -> Guest:
    """Boot a guest for tests (the caller closes it); a missing prerequisite (QEMU build,
    image, module) fails the test with its name, never a skip."""
    from irqlab.vm.guest import Guest, GuestConfig, PrerequisiteMissing

    g = Guest(config or GuestConfig(name="e2e"))
    try:
        g.start()  # stops whatever it started when it fails
    except PrerequisiteMissing as e:
        pytest.fail(f"end-to-end prerequisite missing: {e}", pytrace=False)
    return g


@pytest.fixture(scope="session")
def irqlab_guest(irqlab_log_dir: Path) -> Generator[Guest, None, None]:
    """One guest for the whole session, restored from the ready-state snapshot (made by
    one cold boot first if missing); tests share it through a soft reset."""
    from irqlab.testing.parallel import worker_id
    from irqlab.vm.guest import GuestConfig, PrerequisiteMissing, ensure_snapshot

    config = GuestConfig(
        name=f"e2e-{worker_id()}" if worker_id() else "e2e", log_dir=irqlab_log_dir
    )
    try:
        ensure_snapshot(config)
    except PrerequisiteMissing as e:
        pytest.fail(f"end-to-end prerequisite missing: {e}", pytrace=False)
    g = start_guest(config)
    try:
        yield g
    finally:
        g.close()


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    # SIGTERM (timeout(1), CI cancellation) tears down like Ctrl-C: every guest and
    # machine fixture stops its QEMU and removes its sockets.
    import signal
    import threading

    if (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    ):
        signal.signal(signal.SIGTERM, _terminate)
    config.addinivalue_line(
        "markers",
        "irqlab(device=None, module=None, smp=1, hotplug=False): configure the test's own "
        "guest (irqlab_fresh_guest): device properties, module parameters, vCPUs, the device "
        "behind a hotplug-capable PCIe root port",
    )


def fresh_guest_config(request: pytest.FixtureRequest, log_dir: Path | None = None) -> GuestConfig:
    """The GuestConfig of a test's own guest, from its ``@pytest.mark.irqlab(...)``."""
    from irqlab.vm.guest import GuestConfig

    marker = request.node.get_closest_marker("irqlab")
    kw = dict(marker.kwargs) if marker is not None else {}
    unknown = set(kw) - {"device", "module", "smp", "hotplug"}
    if unknown or (marker is not None and marker.args):
        pytest.fail(
            f"@pytest.mark.irqlab takes device=, module=, smp=, hotplug= (got {sorted(unknown)} "
            f"{marker.args if marker is not None else ()})",
            pytrace=False,
        )
    return GuestConfig(
        name="fresh",
        device_props=dict(kw.get("device") or {}),
        module_params=dict(kw.get("module") or {}),
        smp=int(kw.get("smp", 1)),
        hotplug=bool(kw.get("hotplug", False)),
        log_dir=log_dir,
    )


@pytest.fixture
def irqlab_fresh_guest(
    request: pytest.FixtureRequest, irqlab_log_dir: Path
) -> Generator[Guest, None, None]:
    """A guest of this test's own, restored from the ready-state snapshot of its
    configuration (``@pytest.mark.irqlab(device={...}, module={...}, smp=N)``; the
    first test of a configuration pays one cold boot that saves it).  Whatever the test
    does to it (panic, unload the module, odd device state) ends with the test."""
    g = start_guest(fresh_guest_config(request, _test_log_root(request, irqlab_log_dir)))
    request.node.stash.setdefault(_MACHINES, []).append(g.machine)
    try:
        yield g
    finally:
        g.close()


@pytest.fixture
def irqlab_fresh_device(irqlab_fresh_guest: Guest) -> DeviceControl:
    """:class:`irqlab.testing.helpers.DeviceControl` of :func:`irqlab_fresh_guest`."""
    from irqlab.testing.helpers import DeviceControl

    return DeviceControl(irqlab_fresh_guest)


def _guest_logs(guest: Guest) -> dict[str, Path]:
    logs: dict[str, Path] = {}
    if guest.machine is not None and guest.machine.paths is not None:
        logs["console.log"] = guest.machine.paths.console_log
        logs["qemu.log"] = guest.machine.paths.stderr_log
    agent = guest.agent
    for suffix in ("rx.jsonl", "tx.jsonl", "stderr.log"):
        logs[f"agent.{suffix}"] = Path(f"{agent.log_base}.{suffix}")
    return logs


def revive(guest: Guest, config: pytest.Config | None = None) -> str | None:
    """Replace a guest that died or froze (the health watch saw it) with a new one
    of the same configuration: a restore from its snapshot, about half a second.
    Says so once on the terminal; returns the cause (None if the guest was fine)."""
    dead = guest.fault is not None or guest.machine is None or not guest.machine.is_running()
    if not dead:
        return None
    cause = guest.fault.cause if guest.fault is not None else "QEMU is not running"
    msg = f"irqlab: the session guest died ({cause}); starting a new one"
    reporter = config.pluginmanager.get_plugin("terminalreporter") if config else None
    capture = config.pluginmanager.get_plugin("capturemanager") if config else None
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():  # past pytest's output capture
            reporter.write_line("")
            reporter.write_line(msg, yellow=True)
    else:
        print(msg, file=sys.stderr)
    guest.restart()
    return cause


@pytest.fixture
def irqlab_agent(
    request: pytest.FixtureRequest, irqlab_guest: Guest, irqlab_log_dir: Path
) -> Generator[AgentClient, None, None]:
    """The session's agent, reset: no armed paths or open files, device counters zero.
    If an earlier test killed the session guest, it is replaced first (a restore)."""
    revive(irqlab_guest, request.config)
    irqlab_guest.reset()
    client = irqlab_guest.agent
    request.node.stash[_GUEST_LOGS] = (
        LogSlicer(_guest_logs(irqlab_guest)),
        _test_log_root(request, irqlab_log_dir),
    )
    yield client
    if irqlab_guest.fault is not None:
        return  # the test's own failure names the cause; the next test gets a new guest
    errors = [e for e in client.pending() if e.get("type") == "path_error"]
    client.drain_events()
    assert not errors, f"unexpected path errors: {errors}"


@pytest.fixture
def irqlab_device(irqlab_guest: Guest, irqlab_agent: AgentClient) -> DeviceControl:
    from irqlab.testing.helpers import DeviceControl

    return DeviceControl(irqlab_guest)


class WaitStats(Protocol):
    def __call__(
        self, handle: str, pred: Callable[[dict[str, int]], bool], timeout: float = 60.0
    ) -> dict[str, int]: ...


@pytest.fixture
def irqlab_wait_stats(irqlab_agent: AgentClient) -> WaitStats:
    from irqlab.testing.helpers import wait_file_stats

    def wait(
        handle: str, pred: Callable[[dict[str, int]], bool], timeout: float = 60.0
    ) -> dict[str, int]:
        return wait_file_stats(irqlab_agent, handle, pred, timeout)

    return wait


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
    guest_logs = item.stash.get(_GUEST_LOGS, None)
    if report.failed and guest_logs is not None:
        slicer, dest = guest_logs
        files = slicer.save(dest)
        report.sections.append(
            ("irqlab guest logs (this test's part)", "\n".join(str(f) for f in files))
        )
    return report
