"""Guest-side files of the default (Debian packages) guest image.

``init.sh.in`` is the initramfs ``/init`` (busybox ash), rendered by
:func:`irqlab.build.image.render_init`; placeholders look like ``@NAME@``.
"""

from __future__ import annotations

from pathlib import Path

GUEST_DIR = Path(__file__).resolve().parent
INIT_TEMPLATE = GUEST_DIR / "init.sh.in"
