"""Which guest image to boot: ``$IRQLAB_IMAGE``, read here only.

Standard library imports only: ``irqlab kdir`` reads it, and ``make -C $(irqlab kdir)``
must not wait for paramiko's import (nor fail on a bad value).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from irqlab.errors import ConfigError, hide_frame

__tracebackhide__ = hide_frame  # pytest: an IrqlabError's traceback leaves these frames out

__all__ = ["IMAGE_ENV", "IMAGE_KINDS", "UnknownImageKind", "image_kind", "image_setting"]

IMAGE_ENV = "IRQLAB_IMAGE"
IMAGE_KINDS = ("debian", "buildroot")  # what $IRQLAB_IMAGE may say; the first is the default


class UnknownImageKind(ConfigError):
    """$IRQLAB_IMAGE names no image kind."""


def image_setting(env: Mapping[str, str] | None = None) -> str:
    """What $IRQLAB_IMAGE says (in *env*, default the process's environment), the
    default kind when it is unset; not checked (:func:`image_kind` checks)."""
    return (os.environ if env is None else env).get(IMAGE_ENV, IMAGE_KINDS[0])


def image_kind(env: Mapping[str, str] | None = None) -> str:
    """Which guest image to boot: ``debian`` (default) or ``buildroot``;
    :class:`UnknownImageKind` for anything else."""
    kind = image_setting(env)
    if kind not in IMAGE_KINDS:
        kinds = " or ".join(map(repr, IMAGE_KINDS))
        raise UnknownImageKind(f"{IMAGE_ENV}={kind!r}: use {kinds}")
    return kind
