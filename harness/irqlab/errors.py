"""The base class of every error the irqlab host package raises on purpose.

``except IrqlabError`` catches what irqlab reports (a build step that failed, a
guest that did not come up, a malformed header, a rejected injection) and lets
real bugs (``TypeError``, ``AttributeError``, ...) through.  Each subclass also
keeps its standard base (``ValueError``, ``RuntimeError``, ``TimeoutError``) so
that callers catching those still work.
"""

from __future__ import annotations

__all__ = ["IrqlabError"]


class IrqlabError(Exception):
    """Something irqlab detected and reports; subclasses say what."""
