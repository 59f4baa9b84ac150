"""The base class of every error the irqlab host package raises on purpose.

``except IrqlabError`` catches what irqlab reports (a build step that failed, a
guest that did not come up, a malformed header, a rejected injection) and lets
real bugs (``TypeError``, ``AttributeError``, ...) through.  Each subclass also
keeps its standard base (``ValueError``, ``RuntimeError``, ``TimeoutError``) so
that callers catching those still work.
"""

from __future__ import annotations

__all__ = ["ConfigError", "IrqlabError"]


class IrqlabError(Exception):
    """Something irqlab detected and reports; subclasses say what."""


class ConfigError(IrqlabError, ValueError):
    """A value the user chose (a command-line option, an environment variable such as
    ``IRQLAB_ACCEL``, a guest's configuration) that cannot work, found before anything
    starts; the message names the value.  The ``irqlab`` command exits with status 2
    for it, as for argparse's usage errors."""
