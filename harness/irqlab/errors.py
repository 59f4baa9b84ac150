"""The base class of every error the irqlab host package raises on purpose.

``except IrqlabError`` catches what irqlab reports (a build step that failed, a
guest that did not come up, a malformed header, a rejected injection) and lets
real bugs (``TypeError``, ``AttributeError``, ...) through.  Each subclass also
keeps its standard base (``ValueError``, ``RuntimeError``, ``TimeoutError``) so
that callers catching those still work.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ConfigError", "IrqlabError", "hide_frame"]


class IrqlabError(Exception):
    """Something irqlab detected and reports; subclasses say what."""


class ConfigError(IrqlabError, ValueError):
    """A value the user chose (a command-line option, an environment variable such as
    ``IRQLAB_ACCEL``, a guest's configuration) that cannot work, found before anything
    starts; the message names the value.  The ``irqlab`` command exits with status 2
    for it, as for argparse's usage errors."""


def hide_frame(excinfo: Any) -> bool:
    """``__tracebackhide__ = hide_frame`` in a function a pytest test calls (or one
    between it and the ``raise``): pytest leaves that function's frame out of a failed
    test's traceback when the error is an :class:`IrqlabError` (its message says the
    cause; the harness's source around it only buried it), and shows it for any other
    error, a bug's.  *excinfo*: pytest's ``ExceptionInfo`` (pytest itself is not
    imported); ``--full-trace`` shows every frame."""
    return excinfo is not None and bool(excinfo.errisinstance(IrqlabError))
