"""A stand-in for the session guest in pytester runs of the plugin: a conftest that
makes :func:`irqlab.testing.plugin.start_guest` build a ``FakeGuest`` (no QEMU), which a
test kills with ``die(console)``; a restart makes it a new generation."""

from __future__ import annotations

CONFTEST = """
from pathlib import Path
from types import SimpleNamespace

from irqlab.testing import plugin


class FakeGuest:
    def __init__(self, config):
        self.config = config
        self.generation = 0  # restarts so far
        self.commands = []
        self._agent = None
        self.ssh = object()
        self.machine = SimpleNamespace(is_running=lambda: True, paths=None)
        self._new_run()

    def _new_run(self):
        self.fault = None
        self.log_dir = Path(self.config.log_dir) / f"e2e-run-{self.generation}"
        self.log_dir.mkdir(parents=True)
        (self.log_dir / "console.log").write_text("[    1.000000] irqlab: probed\\n")

    def die(self, console):
        with (self.log_dir / "console.log").open("a") as f:
            f.write(console)
        self.fault = SimpleNamespace(cause="guest kernel panic: Kernel panic - not syncing")

    def connection_lost(self):
        return None

    def restart(self):
        self.generation += 1
        self._new_run()
        return self

    reset_at_ns = None  # where a test's part of the kernel log starts: unknown
    injector = None  # irqlab_device's (DeviceControl)

    def reset(self):  # before each test that takes it (irqlab_guest_alive)
        self.commands.append("reset")

    @property
    def agent(self):
        return SimpleNamespace(pending=lambda: [], drain_events=lambda: None)

    def sh(self, cmd, **_):
        self.commands.append(cmd)
        return "[    1.000000] irqlab: probed\\n\\n4096"  # a clean log, taint O

    def close(self):
        pass


plugin.start_guest = FakeGuest
"""
