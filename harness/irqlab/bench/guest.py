"""A :class:`~irqlab.guestvm.Guest` that records its boot phases and can carry rt-tests.

Phases (host monotonic clock, seconds from QEMU's start): ``console_ready`` (the
image's readiness marker on the serial console: dropbear listens), ``ssh``
(authenticated SSH session), ``module`` (modprobe done, /dev/irqlab0 present),
``agent_ready`` (the agent's hello arrived).  ``agent_ready`` is the "boot ->
agent ready" figure.  Building/finding the image and the accelerator probe
(cached per process) are *not* included.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from irqlab.guestvm import Guest, GuestConfig, PrerequisiteMissing, find_kmod


class BenchGuest(Guest):
    def __init__(
        self, config: GuestConfig | None = None, *, extra_packages: tuple[str, ...] = ()
    ) -> None:
        super().__init__(config)
        self.extra_packages = extra_packages
        self.phases: dict[str, float] = {}
        self.qemu: Any = None

    def prerequisites(self) -> tuple[Any, Any, Path]:
        if not self.extra_packages:
            return self.find_prerequisites()
        from irqlab.build.image import ensure_image
        from irqlab.build.qemu import find_qemu

        qemu = find_qemu()
        if qemu is None:
            raise PrerequisiteMissing("QEMU is not built: run `invoke build-qemu`")
        ko = find_kmod()
        try:
            image = ensure_image(kmod=ko, extra_packages=self.extra_packages)
        except Exception as e:
            raise PrerequisiteMissing(
                f"the bench image (with {', '.join(self.extra_packages)}) cannot be built: {e}"
            ) from e
        return qemu, image, ko

    def start(self) -> BenchGuest:
        qemu, image, _ko = self.prerequisites()
        self.qemu, self.image = qemu, image
        from irqlab.accel import choose

        # The KVM probe (up to 5 s, cached per process) is not part of booting.
        choose(qemu.binary, datadir=qemu.datadir)
        t0 = time.monotonic()
        self._boot(qemu, image)
        self.phases["console_ready"] = time.monotonic() - t0
        self.boot_seconds = self.phases["console_ready"]
        self._connect_ssh(image)
        self.phases["ssh"] = time.monotonic() - t0
        self.load_module()
        self.phases["module"] = time.monotonic() - t0
        self.start_agent()
        self.phases["agent_ready"] = time.monotonic() - t0
        return self

    def __enter__(self) -> BenchGuest:
        return self.start()

    def switch_module(self, **params: Any) -> None:
        """Disarm everything, then reload the driver with *params* (``wakeup="thread"``,
        ``uio=1``: see :meth:`Guest.reload_module`)."""
        self.agent.reset()
        self.reload_module(**params)

    def set_param(self, name: str, value: object) -> str:
        """Write a writable module parameter; return its old value."""
        p = f"/sys/module/{self.module_name()}/parameters/{name}"
        old = self.sh(f"cat {p}").strip()
        self.sh(f"echo {value} > {p}")
        return old
