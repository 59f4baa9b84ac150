"""Storm ("summary") mode of a record path: count records instead of reporting each one.

Armed with ``summarize=[source, ...]``, a path counts the records of those
sources and reports them in ``{"type": "summary"}`` messages, each covering
the records since the previous one.  A read buffer is walked with
``struct.iter_unpack`` over a picker struct that unpacks only ``seq``,
``source``, ``flags`` and ``lost`` (no dict per record).  Records of other
sources are still reported one by one as ``{"type": "event"}``, *after* the
pending summary, so the stream keeps the order of the records.  A summary is
also sent every ``interval_s`` while there are counts (a flusher thread) and at
disarm.

Every record is ACKed (in the path's ACK mode, :mod:`irqlab_agent.acks`)
before a message covering it is written: a host that sees a summary or an
event knows the device has had those ACKs.

Per source, a summary carries ``records``, ``first`` and ``last`` (seqs in
arrival order), ``in_order`` (records whose seq is above every seq of that
source the path had seen since it was armed: unique and in order) and
``out_of_order`` (the others: duplicates or reordering; the driver delivers in
order, so non-zero is a bug), ``lost`` (sum of the records' ``lost`` fields:
ring losses the driver reported) and ``flags`` (records per flag name).  Only
sources of device events should be summarized: driver-made records (seq 0)
cannot be ordered.

The gpio-cdev path counts its line events' ``seqno``s the same way
(:class:`SeqnoCounts`); both build their messages with :func:`summary_message`.
"""

from __future__ import annotations

import threading

TYPE_CHECKING = False  # typing is not imported at run time: it costs start-up time
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from typing import Any, Protocol

    from irqlab_agent.abi import Abi
    from irqlab_agent.acks import SeqAcks

    Emit = Callable[[dict[str, Any]], None]
    # (one record's bytes, wake_ns, extra fields, its ACK latency): report it as an event
    EmitRecord = Callable[[bytes, int, Mapping[str, Any] | None, int | None], None]

    class Stats(Protocol):  # what the summarizer updates of the path's stats
        events: int
        reads: int
        wakeups: int
        acks: int
        ack_errors: int
        summaries: int
        last_seq: int | None
        flags: dict[str, int]


FIELDS = ("seq", "source", "flags", "lost")  # what a summary needs of a record

# Per-source counters, indices into a list (cheaper than attributes in the loop).
N, FIRST, LAST, IN_ORDER, OUT_OF_ORDER, LOST, FLAGS, HIGHEST = range(8)


def _fresh(highest: int) -> list[Any]:
    return [0, None, None, 0, 0, 0, {}, highest]


def summary_message(
    *,
    path: str,
    stats: Stats,
    records: int,
    counts: Mapping[str, Any],
    ack_mode: str,
    acks: int,
    ack_errors: int,
    ack_latency_max_ns: int | None,
    since: tuple[int, int],
    wakes: tuple[int | None, int | None],
    wake_ns: int,
) -> dict[str, Any]:
    """A ``{"type": "summary"}`` message (and one more in ``stats.summaries``): *records*
    counted, their *counts*, the ACKs, the reads and wake-ups since *since* (the stats'
    reads and wakeups at the previous summary) and the first and last wake-up times."""
    stats.summaries += 1
    return {
        "type": "summary",
        "path": path,
        "summary": stats.summaries,
        "records": records,
        **counts,
        "ack": ack_mode,
        "acks": acks,
        "ack_errors": ack_errors,
        "ack_latency_max_ns": ack_latency_max_ns,
        "reads": stats.reads - since[0],
        "wakeups": stats.wakeups - since[1],
        "first_wake_ns": wakes[0],
        "last_wake_ns": wakes[1],
        "wake_ns": wake_ns,
    }


class SeqnoCounts:
    """Storm-mode counts over one stream of sequence numbers (gpio-cdev: the line
    events' request-wide ``seqno``): ``in_order`` counts those above every one seen
    since arm, ``out_of_order`` the others."""

    def __init__(self) -> None:
        self.highest = 0
        self.reset()

    def reset(self) -> None:
        """Start the next summary (``highest`` stays: order is since arm)."""
        self.pending = self.in_order = self.out_of_order = 0
        self.first: int | None = None
        self.last: int | None = None
        self.first_wake: int | None = None
        self.last_wake: int | None = None

    def add(self, seqnos: list[int], wake_ns: int) -> None:
        hi, ordered = self.highest, 0
        for s in seqnos:
            if s > hi:
                hi = s
                ordered += 1
        self.highest = hi
        self.in_order += ordered
        self.out_of_order += len(seqnos) - ordered
        if self.first is None:
            self.first = seqnos[0]
            self.first_wake = wake_ns
        self.last = seqnos[-1]
        self.last_wake = wake_ns
        self.pending += len(seqnos)

    def fields(self) -> dict[str, Any]:
        return {
            "first": self.first,
            "last": self.last,
            "in_order": self.in_order,
            "out_of_order": self.out_of_order,
        }


class Summarizer:
    def __init__(
        self,
        *,
        name: str,
        abi: Abi,
        sources: Iterable[int],
        acks: SeqAcks,
        emit: Emit,
        emit_record: EmitRecord,
        stats: Stats,
        interval_s: float,
        clock: Callable[[], int],
    ) -> None:
        self.name = name
        self.abi = abi
        self.picker = abi.record.picker(FIELDS)
        self.size = abi.record_size
        self.acks = acks
        self.emit = emit
        self.emit_record = emit_record
        self.stats = stats
        self.interval_s = interval_s
        self.clock = clock
        self.per: dict[int, list[Any]] = {int(s): _fresh(-1) for s in sources}
        self.lock = threading.Lock()
        self.pending = 0  # records counted since the last summary
        self._acked = self._ack_errors = 0  # of the summarized records since the last summary
        self._reads0 = self._wakeups0 = 0
        self._lat_max: int | None = None
        self._first_wake: int | None = None
        self._last_wake: int | None = None
        self._stop = threading.Event()
        self._flusher = threading.Thread(target=self._flush_loop, name=f"summary-{name}")
        self._flusher.daemon = True

    def start(self) -> None:
        self._flusher.start()

    def close(self) -> None:
        """Stop the flusher and send what is pending (the path thread has stopped)."""
        self._stop.set()
        if self._flusher.is_alive():
            self._flusher.join(5.0)
        with self.lock:
            self._flush_locked()

    def _flush_loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            with self.lock:
                self._flush_locked()

    # -- counting -------------------------------------------------------------------
    def add(self, data: bytes, wake_ns: int, extra: Mapping[str, Any] | None = None) -> int:
        """Count (or report) the records of one read buffer; return how many there were."""
        size = self.size
        if len(data) % size:
            raise ValueError(f"read returned {len(data)} bytes, not a multiple of {size}")
        per = self.per
        seqs: list[int] = []  # summarized seqs to ACK
        counted = 0
        last_seq: int | None = None
        with self.lock:
            for i, (seq, src, fl, lost) in enumerate(self.picker.iter_unpack(data)):
                st = per.get(src)
                if st is None:  # not summarized: ACK and flush what precedes it, report it
                    self._commit(seqs, counted, last_seq, wake_ns)
                    seqs, counted = [], 0
                    self._flush_locked()
                    lat = self._ack_single(seq) if seq else None
                    self.emit_record(
                        data[i * size : (i + 1) * size], wake_ns, extra if i == 0 else None, lat
                    )
                    continue
                if not st[N]:
                    st[FIRST] = seq
                st[N] += 1
                st[LAST] = seq
                if seq > st[HIGHEST]:
                    st[IN_ORDER] += 1
                    st[HIGHEST] = seq
                else:
                    st[OUT_OF_ORDER] += 1
                if lost:
                    st[LOST] += lost
                if fl:
                    f = st[FLAGS]
                    f[fl] = f.get(fl, 0) + 1
                if seq:
                    seqs.append(seq)
                counted += 1
                last_seq = seq
            self._commit(seqs, counted, last_seq, wake_ns)
        return len(data) // size

    def _commit(self, seqs: list[int], counted: int, last_seq: int | None, wake_ns: int) -> None:
        """ACK the records just counted and add them to the pending summary."""
        self._ack_counted(seqs)
        if not counted:
            return
        self.stats.events += counted
        self.pending += counted
        if self._first_wake is None:
            self._first_wake = wake_ns
        self._last_wake = wake_ns
        self.stats.last_seq = last_seq

    def _ack_single(self, seq: int) -> int | None:
        a = self.acks
        before_a, before_e = a.acks, a.errors
        lat = a.ack_one(seq)
        self.stats.acks += a.acks - before_a
        self.stats.ack_errors += a.errors - before_e
        return lat

    def _ack_counted(self, seqs: list[int]) -> None:
        if not seqs:
            return
        a = self.acks
        before_a, before_e = a.acks, a.errors
        if a.mode == "ioctl":
            ack_one = a.ack_one
            lat_max = self._lat_max
            for seq in seqs:
                lat = ack_one(seq)
                if lat is not None and (lat_max is None or lat > lat_max):
                    lat_max = lat
            self._lat_max = lat_max
        else:
            a.ack(seqs)
        acked, errors = a.acks - before_a, a.errors - before_e
        self._acked += acked
        self._ack_errors += errors
        self.stats.acks += acked
        self.stats.ack_errors += errors

    # -- reporting ------------------------------------------------------------------
    def _flush_locked(self) -> None:
        if not self.pending:
            return
        sources: dict[str, Any] = {}
        lost = 0
        flags: dict[str, int] = {}
        for src, st in self.per.items():
            if not st[N]:
                continue
            names: dict[str, int] = {}
            for raw, n in st[FLAGS].items():
                for fname in self.abi.flag_names(raw):
                    names[fname] = names.get(fname, 0) + n
                    flags[fname] = flags.get(fname, 0) + n
                    self.stats.flags[fname] = self.stats.flags.get(fname, 0) + n
            sources[str(src)] = {
                "records": st[N],
                "first": st[FIRST],
                "last": st[LAST],
                "in_order": st[IN_ORDER],
                "out_of_order": st[OUT_OF_ORDER],
                "lost": st[LOST],
                "flags": names,
            }
            lost += st[LOST]
            self.per[src] = _fresh(st[HIGHEST])
        stats = self.stats
        msg = summary_message(
            path=self.name,
            stats=stats,
            records=self.pending,
            counts={"sources": sources, "lost": lost, "flags": flags},
            ack_mode=self.acks.mode,
            acks=self._acked,
            ack_errors=self._ack_errors,
            ack_latency_max_ns=self._lat_max,
            since=(self._reads0, self._wakeups0),
            wakes=(self._first_wake, self._last_wake),
            wake_ns=self.clock(),
        )
        self.pending = 0
        self._acked = self._ack_errors = 0
        self._reads0, self._wakeups0 = stats.reads, stats.wakeups
        self._lat_max = self._first_wake = self._last_wake = None
        self.emit(msg)
