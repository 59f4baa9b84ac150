"""Guest-side files of the guest images.

``irqlab-boot.sh`` is the boot sequence both images run (network, modules, dropbear,
the readiness marker), installed as :data:`BOOT_SCRIPT_PATH` in each: sourced by the
Debian image's ``/init`` and by the Buildroot image's ``S99irqlab``.
``init.sh.in`` is the Debian initramfs's ``/init`` (busybox ash), rendered by
:func:`irqlab.build.image.render_init`; placeholders look like ``@NAME@``.
"""

from __future__ import annotations

from pathlib import Path

GUEST_DIR = Path(__file__).resolve().parent
INIT_TEMPLATE = GUEST_DIR / "init.sh.in"
BOOT_SCRIPT = GUEST_DIR / "irqlab-boot.sh"
BOOT_SCRIPT_PATH = "usr/lib/irqlab/boot.sh"  # in the guest, relative to /
