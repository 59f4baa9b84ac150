"""A booted guest ready for end-to-end tests: QEMU + console + SSH + module + agent.

:class:`Guest` composes the pieces other modules provide:

* the QEMU build (:func:`irqlab.build.qemu.find_qemu`) and the guest image
  (:func:`irqlab.build.image.ensure_image`, which bakes the agent package, its
  uapi parser and the header into the initramfs),
* :class:`irqlab.vm.machine.Machine` (QEMU with QMP and the serial console),
* :class:`irqlab.vm.ssh.SshClient` (through the forwarded port),
* the kernel module (``modprobe`` of the image's module),
* :class:`irqlab.vm.agent_client.AgentClient` running ``python3 -m irqlab_agent``,
* :class:`irqlab.vm.qmp.injector.Injector` on the device's QOM path.

One guest serves a whole test session; :meth:`Guest.reset` puts it back to a
clean state between tests (no armed paths or open files, device counters zero).

Every missing prerequisite raises :class:`PrerequisiteMissing` naming it and
the command that builds it: the e2e tests fail with that message, never skip.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from irqlab.contract.regs import REGS
from irqlab.errors import IrqlabError
from irqlab.paths import log_dir
from irqlab.vm.agent_client import AgentClient, AgentError
from irqlab.vm.ssh import RunResult, SshClient

DEVICE_TYPE = "irqlab"


class PrerequisiteMissing(IrqlabError, RuntimeError):
    """Something the guest needs was not built; the message says what and how."""


class GuestError(IrqlabError, RuntimeError):
    pass


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (for QEMU's hostfwd)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def device_arg(device_id: str, props: Mapping[str, Any]) -> str:
    """``irqlab,id=<id>,k=v,...`` for ``-device`` (booleans as on/off)."""
    parts = [DEVICE_TYPE, f"id={device_id}"]
    for k, v in props.items():
        if isinstance(v, bool):
            v = "on" if v else "off"
        parts.append(f"{k}={v}")
    return ",".join(parts)


# Debian packages the default guest ships besides the base set: libgpiod's tools, so a
# test can show that standard userspace tools (not only our agent) see the GPIO lines.
IMAGE_EXTRA_PACKAGES = ("gpiod",)


def image_kind() -> str:
    """Which guest image to boot: $IRQLAB_IMAGE, ``debian`` (default) or ``buildroot``."""
    kind = os.environ.get("IRQLAB_IMAGE", "debian")
    if kind not in ("debian", "buildroot"):
        raise PrerequisiteMissing(f"IRQLAB_IMAGE={kind!r}: use 'debian' or 'buildroot'")
    return kind


def find_kmod() -> Path:
    """The driver .ko: $IRQLAB_KMOD, else the module recipe (irqlab.build.kmod)."""
    env = os.environ.get("IRQLAB_KMOD")
    if env:
        if not Path(env).is_file():
            raise PrerequisiteMissing(f"$IRQLAB_KMOD={env} does not exist")
        return Path(env)
    try:
        from irqlab.build import kmod  # type: ignore[attr-defined,unused-ignore]
    except ImportError as e:
        raise PrerequisiteMissing(
            f"no kernel module: set $IRQLAB_KMOD or add the module recipe ({e})"
        ) from e
    try:
        return Path(kmod.ensure_kmod())
    except Exception as e:
        raise PrerequisiteMissing(f"the irqlab kernel module cannot be built: {e}") from e


@dataclass
class GuestConfig:
    device_id: str = "irqlab0"
    device_props: dict[str, Any] = field(default_factory=dict)
    module_params: dict[str, Any] = field(default_factory=dict)
    smp: int = 1
    boot_timeout: float = 180.0
    ssh_timeout: float = 60.0
    agent_timeout: float = 60.0
    name: str = "guest"
    # Debian packages added to the image besides IMAGE_EXTRA_PACKAGES (e.g. rt-tests).
    extra_packages: tuple[str, ...] = ()


class Guest:
    """Boot with :meth:`start` (or ``with Guest(...) as g``); stop with :meth:`close`.

    :attr:`phases` has the boot's milestones, in seconds from QEMU's start (host
    monotonic clock): ``console_ready`` (the image's readiness marker on the serial
    console: dropbear listens), ``ssh`` (authenticated session), ``module``
    (modprobe done, /dev/irqlab0 present) and ``agent_ready`` (the agent's hello
    arrived and the module is loaded: the agent starts while the module loads).
    Finding or building the image and the accelerator probe are not included.
    """

    def __init__(self, config: GuestConfig | None = None) -> None:
        self.config = config or GuestConfig()
        self.machine: Any = None
        self.image: Any = None
        self.qemu: Any = None  # the QemuInstall booted
        self.ssh: SshClient | None = None
        self._agent: AgentClient | None = None
        self._agent_proc: Any = None
        self.injector: Any = None
        self.accel: Any = None
        self.ssh_port = 0
        self.module: str | None = None
        self.boot_seconds: float | None = None
        self.phases: dict[str, float] = {}

    # -- prerequisites ----------------------------------------------------------
    def find_prerequisites(self) -> tuple[Any, Any, Path]:
        """(QemuInstall, GuestImage, module .ko) or :class:`PrerequisiteMissing`."""
        from irqlab.build.qemu import find_qemu

        qemu = find_qemu()
        if qemu is None:
            raise PrerequisiteMissing(
                "QEMU with the irqlab device is not built: "
                "run `invoke build-qemu` (or `invoke build`)"
            )
        if image_kind() == "buildroot":
            from irqlab.build.buildroot import BuildrootError
            from irqlab.build.buildroot import ensure_image as ensure_buildroot_image

            try:
                br = ensure_buildroot_image(build=False)
            except BuildrootError as e:
                raise PrerequisiteMissing(str(e)) from e
            return qemu, br, br.kernel_artifacts.modules_dir / "updates" / "irqlab.ko"
        ko = find_kmod()
        from irqlab.build.image import ensure_image

        extra = tuple(dict.fromkeys((*IMAGE_EXTRA_PACKAGES, *self.config.extra_packages)))
        try:
            image = ensure_image(kmod=Path(ko), extra_packages=extra)
        except Exception as e:
            raise PrerequisiteMissing(
                f"the guest image (extra packages: {', '.join(extra)}) cannot be built: {e}; "
                "run `invoke build-image`"
            ) from e
        return qemu, image, Path(ko)

    # -- life cycle -----------------------------------------------------------------
    def start(self) -> Guest:
        from irqlab.vm.accel import choose

        qemu, image, _ko = self.find_prerequisites()
        self.qemu, self.image = qemu, image
        # The KVM probe (cached on disk) is not part of booting.
        self.accel = choose(qemu.binary, datadir=qemu.datadir)
        t0 = time.monotonic()
        self.phases = {}

        def reached(phase: str) -> None:
            self.phases[phase] = time.monotonic() - t0

        self._boot(qemu, image)
        reached("console_ready")
        self.boot_seconds = self.phases["console_ready"]
        self._connect_ssh(image)
        reached("ssh")
        pending = self._spawn_agent()  # Python starts up while the module loads
        try:
            self.load_module()
            reached("module")
            self._await_agent(pending)
        except BaseException:
            with contextlib.suppress(Exception):
                pending.close(timeout=2)
            raise
        reached("agent_ready")
        return self

    def _boot(self, qemu: Any, image: Any) -> None:
        from irqlab.build.boot import MACHINE_ARGS, cpu_args
        from irqlab.vm.accel import choose
        from irqlab.vm.machine import Machine, MachineConfig
        from irqlab.vm.qmp.injector import Injector

        c = self.config
        if self.accel is None:
            self.accel = choose(qemu.binary, datadir=qemu.datadir)
        self.ssh_port = free_port()
        args = [
            *MACHINE_ARGS,
            *cpu_args(self.accel.accel),
            "-smp",
            str(c.smp),
            *image.qemu_args(self.ssh_port),
            "-device",
            device_arg(c.device_id, c.device_props),
        ]
        self.machine = Machine(
            MachineConfig(
                binary=qemu.binary,
                args=args,
                datadir=qemu.datadir,
                accel=self.accel.accel,
                name=c.name,
            )
        )
        self.machine.start()
        self.machine.wait_console(image.ready_marker, timeout=c.boot_timeout)
        self.injector = Injector(self.machine, c.device_id)

    def _connect_ssh(self, image: Any) -> None:
        self.ssh = SshClient(
            "127.0.0.1", self.ssh_port, user=image.ssh_user, key_path=image.client_key
        ).connect(timeout=self.config.ssh_timeout)

    def close(self) -> None:
        if self._agent is not None:
            with contextlib.suppress(Exception):
                self._agent.close(timeout=10)
            self._agent = None
        if self.ssh is not None:
            with contextlib.suppress(Exception):
                self.ssh.run("sync; poweroff -f >/dev/null 2>&1 &", timeout=5)
            self.ssh.close()
            self.ssh = None
        if self.machine is not None:
            self.machine.close()
            self.machine = None

    def __enter__(self) -> Guest:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- guest commands ---------------------------------------------------------------
    def sh(self, cmd: str, *, timeout: float = 60.0, check: bool = True) -> str:
        """Run a shell command in the guest; return stdout (raise on rc != 0 if *check*)."""
        if self.ssh is None:
            raise GuestError("the guest is not connected")
        return self.ssh.run(cmd, timeout=timeout, check=check).out

    @property
    def dev(self) -> str:
        return "/dev/irqlab0"

    @property
    def count_dev(self) -> str:
        return f"{self.dev}-count"

    def module_name(self) -> str:
        name = getattr(self.image, "kmod", None) or "irqlab"
        return str(name)

    def load_module(self, **params: Any) -> None:
        """modprobe the driver (with the config's params, overridden by *params*)."""
        self.module = self.module_name()
        opts = {**self.config.module_params, **params}
        args = " ".join(f"{k}={shlex.quote(str(v))}" for k, v in opts.items())
        self.sh(f"modprobe {self.module} {args}".strip())
        self.wait_for_node(self.dev)

    def unload_module(self) -> None:
        self.sh(f"rmmod {self.module_name()}")

    def reload_module(self, **params: Any) -> None:
        """rmmod (if loaded), then modprobe with *params* (the config's params are not
        used); with ``uio=1`` the driver offers /dev/uio0 instead of /dev/irqlab0."""
        name = self.module_name()
        self.sh(f"if grep -q '^{name} ' /proc/modules; then rmmod {name}; fi")
        if str(params.get("uio", 0)) in ("1", "y", "Y", "True"):
            self.module = name
            args = " ".join(f"{k}={shlex.quote(str(v))}" for k, v in params.items())
            self.sh(f"modprobe {name} {args}")
            self.wait_for_node("/dev/uio0")
        else:
            self.load_module(**params)

    def wait_for_node(self, path: str, timeout: float = 30.0) -> None:
        # devtmpfs creates the node synchronously with device_add; a short bounded wait
        # covers the uevent-less case without a fixed sleep.
        q = shlex.quote(path)
        self.sh(
            f"i=0; while [ ! -c {q} ]; do i=$((i+1)); [ $i -gt {int(timeout * 100)} ] && exit 1; "
            f"usleep 10000 2>/dev/null || sleep 0.01; done",
            timeout=timeout + 10,
        )

    def pci_address(self) -> str:
        """The PCI address (e.g. ``0000:00:04.0``) of our device, found by vendor/device id."""
        vid, did = f"{REGS.PCI_VENDOR_ID:#06x}", f"{REGS.PCI_DEVICE_ID:#06x}"
        out = self.sh(
            "for d in /sys/bus/pci/devices/*; do "
            f'[ "$(cat $d/vendor)" = {vid} ] && [ "$(cat $d/device)" = {did} ] && basename $d; '
            "done; true"
        ).split()
        if not out:
            raise GuestError(f"no PCI device {vid}:{did} in the guest")
        return out[0]

    def unbind(self) -> str:
        addr = self.pci_address()
        self.sh(f"echo {addr} > /sys/bus/pci/drivers/{self.module_name()}/unbind")
        return addr

    def bind(self, addr: str | None = None) -> None:
        addr = addr or self.pci_address()
        self.sh(f"echo {addr} > /sys/bus/pci/drivers/{self.module_name()}/bind")
        self.wait_for_node(self.dev)

    def bind_uio_pci_generic(self) -> tuple[str, RunResult]:
        """Move the device from our driver to the kernel's uio_pci_generic (through
        ``driver_override``); (PCI address, the bind command's result: rc != 0 when
        uio_pci_generic refuses the device, e.g. with broken INTx disable)."""
        if self.ssh is None:
            raise GuestError("the guest is not connected")
        addr = self.unbind()
        dev = f"/sys/bus/pci/devices/{addr}"
        self.sh(f"modprobe uio_pci_generic && echo uio_pci_generic > {dev}/driver_override")
        r = self.ssh.run(f"echo {addr} > /sys/bus/pci/drivers/uio_pci_generic/bind")
        if r.rc == 0:
            self.wait_for_node("/dev/uio0")
        return addr, r

    # -- the agent ----------------------------------------------------------------------
    def start_agent(self) -> AgentClient:
        """Start the guest agent over SSH and wait for its hello."""
        return self._await_agent(self._spawn_agent())

    def _spawn_agent(self) -> AgentClient:
        if self.ssh is None:
            raise GuestError("the guest is not connected")
        pkg = getattr(self.image, "agent_package", "irqlab_agent")
        proc = self.ssh.open_process(f"exec python3 -u -m {pkg}")
        self._agent_proc = proc
        return AgentClient(
            proc.stdin,
            proc.stdout,
            proc.stderr,
            name=f"{self.config.name}-agent",
            logs=log_dir(),
            on_close=proc.close,
        )

    def _await_agent(self, client: AgentClient) -> AgentClient:
        client.wait_hello(self.config.agent_timeout)
        self._agent = client
        return client

    @property
    def agent(self) -> AgentClient:
        """The agent, restarted if it died (a test may have killed it)."""
        if self._agent is None or self._agent.eof:
            if self._agent is not None:
                with contextlib.suppress(Exception):
                    self._agent.close(timeout=2)
            self._agent = None
            self.start_agent()
        assert self._agent is not None
        return self._agent

    def reset(self) -> None:
        """Between tests: disarm every path, close every handle, zero device counters."""
        agent = self.agent
        try:
            agent.reset()
        except AgentError:
            agent.close(timeout=2)
            self._agent = None
            agent = self.agent
        agent.drain_events()
        if not self.sh(f"test -c {self.dev} && echo yes", check=False).strip():
            self.reload_module(**self.config.module_params)
        if self.injector is not None:
            self.injector.reset_counters()
