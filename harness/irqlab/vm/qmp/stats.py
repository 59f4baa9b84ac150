"""The device's statistics as read over QMP: counters and the log2 latency histogram."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass

from irqlab.contract.regs import QOM
from irqlab.errors import IrqlabError, hide_frame

__tracebackhide__ = hide_frame  # pytest: an IrqlabError's traceback leaves these frames out

__all__ = [
    "Counters",
    "Histogram",
    "StatsFormatError",
]


class StatsFormatError(IrqlabError, ValueError):
    """QEMU's reply does not have the documented shape."""


def _u64(reply: Mapping[str, object], key: str, what: str) -> int:
    if key not in reply:
        raise StatsFormatError(f"{what}: {key!r} missing from {dict(reply)!r}")
    value = reply[key]
    if type(value) is not int or value < 0:
        raise StatsFormatError(f"{what}: {key!r} is {value!r}, not a uint64")
    return value


@dataclass(frozen=True)
class Counters:
    """The device's ``counters``: one field per ``IRQLAB_COUNTER_*`` member of irqlab-regs.h
    (``fifo-overflow`` is ``fifo_overflow``), in the header's order (a unit test checks it)."""

    raised: int
    delivered: int
    acked: int
    coalesced: int
    dropped: int
    fifo_overflow: int
    evq_overflow: int
    ack_invalid: int
    evq_count: int
    next_seq: int

    @classmethod
    def from_qmp(cls, reply: object) -> Counters:
        """The counters of a ``qom-get`` of the device's ``counters`` (its reply's
        object); :class:`StatsFormatError` for anything else."""
        what = QOM.PROP_COUNTERS
        if not isinstance(reply, Mapping):
            raise StatsFormatError(f"{what}: expected an object, got {reply!r}")
        values = {
            key.replace("-", "_"): _u64(reply, key, what)
            for key in QOM.with_prefix("COUNTER_").values()
        }
        return cls(**values)

    def minus(self, before: Counters) -> Counters:
        """Differences since *before* (for the monotonic counters; evq_count/next_seq too)."""
        return Counters(
            **{
                f.name: getattr(self, f.name) - getattr(before, f.name)
                for f in dataclasses.fields(self)
            }
        )


@dataclass(frozen=True)
class Histogram:
    """Latency histogram: bucket i counts latencies in [2**i, 2**(i+1)) ns; bucket 0 also 0 ns."""

    count: int
    sum_ns: int
    min_ns: int
    max_ns: int
    buckets: tuple[int, ...]

    @classmethod
    def from_qmp(cls, reply: object, n_buckets: int | None = None) -> Histogram:
        """The histogram of a ``qom-get`` of the device's ``latency-histogram``
        (*n_buckets*: the count it must have, if given); :class:`StatsFormatError` for
        anything else."""
        what = QOM.PROP_LATENCY_HISTOGRAM
        if not isinstance(reply, Mapping):
            raise StatsFormatError(f"{what}: expected an object, got {reply!r}")
        buckets = reply.get(QOM.HISTOGRAM_BUCKETS)
        if not isinstance(buckets, list) or not all(type(b) is int and b >= 0 for b in buckets):
            raise StatsFormatError(f"{what}: bad buckets {buckets!r}")
        if n_buckets is not None and len(buckets) != n_buckets:
            raise StatsFormatError(f"{what}: {len(buckets)} buckets, expected {n_buckets}")
        return cls(
            count=_u64(reply, QOM.HISTOGRAM_COUNT, what),
            sum_ns=_u64(reply, QOM.HISTOGRAM_SUM_NS, what),
            min_ns=_u64(reply, QOM.HISTOGRAM_MIN_NS, what),
            max_ns=_u64(reply, QOM.HISTOGRAM_MAX_NS, what),
            buckets=tuple(buckets),
        )

    @staticmethod
    def bucket_of(latency_ns: int) -> int:
        """The bucket a latency falls into."""
        return max(latency_ns, 1).bit_length() - 1

    @staticmethod
    def bucket_bounds(index: int) -> tuple[int, int]:
        """[low, high) in ns covered by bucket *index* (bucket 0 starts at 0)."""
        return (0 if index == 0 else 1 << index), 1 << (index + 1)

    def mean_ns(self) -> float | None:
        """The mean raise -> ACK latency, ns; None before any ACK."""
        return self.sum_ns / self.count if self.count else None

    def percentile_bucket(self, p: float) -> int | None:
        """Index of the bucket holding the *p*-th percentile (nearest rank), None if empty."""
        if not 0 < p <= 100:
            raise ValueError(f"percentile must be in (0, 100], not {p}")
        total = sum(self.buckets)
        if total == 0:
            return None
        rank = math.ceil(p / 100 * total)
        seen = 0
        for i, n in enumerate(self.buckets):
            seen += n
            if seen >= rank:
                return i
        raise AssertionError("unreachable: rank <= total")

    def percentile_range(self, p: float) -> tuple[int, int] | None:
        """Inclusive [low, high] ns bounds on the *p*-th percentile, tightened by min/max."""
        i = self.percentile_bucket(p)
        if i is None:
            return None
        lo, hi = self.bucket_bounds(i)
        return max(lo, self.min_ns), min(hi - 1, self.max_ns)

    def percentile_upper_ns(self, p: float) -> int | None:
        """An upper bound on the *p*-th percentile (what a "p99 below X" check wants)."""
        r = self.percentile_range(p)
        return None if r is None else r[1]
