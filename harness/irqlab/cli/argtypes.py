"""argparse types for numbers whose range the option defines: a value outside it is a
usage error that says the rule (``--events -5`` started a bench that ran for minutes);
and :class:`UsageError`, for what a command finds wrong with its options after argparse
took them."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from irqlab.errors import ConfigError

__all__ = ["UsageError", "count", "finite", "guest_arch", "integer", "non_negative", "positive"]


class UsageError(ConfigError):
    """A bad command-line value; the message says which and what is expected.  The
    command exits with status 2, as for argparse's own usage errors."""


def integer(text: str) -> int:
    """An integer, decimal or with a ``0x``/``0o``/``0b`` prefix."""
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def count(minimum: int) -> Callable[[str], int]:
    """An :func:`integer` of at least *minimum*."""

    def parse(text: str) -> int:
        n = integer(text)
        if n < minimum:
            raise argparse.ArgumentTypeError(f"{text!r}: must be {minimum} or more")
        return n

    return parse


def finite(text: str) -> float:
    """A number, not NaN nor an infinity (they have no count of nanoseconds)."""
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(x):
        raise argparse.ArgumentTypeError(f"{text!r}: not a finite number")
    return x


def positive(text: str) -> float:
    """A finite number > 0 (a period, a duration)."""
    x = finite(text)
    if x <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be more than 0")
    return x


def guest_arch(text: str) -> str:
    """``--arch``: a guest architecture's name (``amd64``/``arm64`` taken too), as the
    library names it; argparse's usage error for another."""
    from irqlab.build import arch

    try:
        return arch.by_name(text).name
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def non_negative(text: str) -> float:
    """A finite number >= 0."""
    x = finite(text)
    if x < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be 0 or more")
    return x
