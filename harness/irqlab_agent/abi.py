"""The driver's userspace ABI (event record layout, ioctls, flag bits) as data.

Nothing here knows the uapi header: an :class:`Abi` is built from ``abi.json``, the
ABI artifact the image build writes next to this module with the host's header
parser (``python -m irqlab.contract.uapi``).  Each struct comes with each field's
offset, size and :mod:`struct` code; this module computes no layout.  Shape::

    {"schema": 3, "byteorder": "<",
     "record": {"size": 48, "fields": [{"name": "seq", "offset": 0, "size": 4,
                                        "code": "I"}, ...]},
     "flags": {"OVERFLOW": 2, ...},               # event record flag bits
     "ioctls": {"ACK": {"request": ..., "direction": 3, "arg": {<struct>}},
                "FLUSH": {"request": ..., "direction": 0, "arg": null}, ...},
     "structs": {...}, "constants": {...},        # every struct, every other #define
     "ioc": {"dirshift": 30, "sizeshift": 16, ...}}   # the ioctl request encoding
"""

from __future__ import annotations

import fcntl
import json
import os
import struct
from collections.abc import Mapping

TYPE_CHECKING = False  # typing is not imported at run time: it costs start-up time
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

ARTIFACT = "abi.json"
SCHEMA = 3


class StructSpec:
    """A struct laid out as the artifact says: (name, offset, code) per value."""

    __slots__ = ("_layout", "fields", "st")

    def __init__(self, items: Sequence[tuple[str, int, str]], size: int, order: str = "<") -> None:
        fmt, pos = order, 0
        for name, off, code in items:
            if off < pos:
                raise ValueError(f"field {name} at {off} overlaps the one before (ends at {pos})")
            fmt += f"{off - pos}x{code}" if off > pos else code
            pos = off + struct.calcsize(order + code)
        if size < pos:
            raise ValueError(f"struct size {size} is less than its fields' end {pos}")
        if size > pos:
            fmt += f"{size - pos}x"
        self.st = struct.Struct(fmt)
        self.fields: tuple[str, ...] = tuple(name for name, _, _ in items)
        self._layout = {name: (off, code) for name, off, code in items}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], order: str = "<") -> StructSpec:
        items = [(str(f["name"]), int(f["offset"]), str(f["code"])) for f in obj["fields"]]
        spec = cls(items, int(obj["size"]), order)
        for f in obj["fields"]:
            if struct.calcsize(order + str(f["code"])) != int(f["size"]):
                raise ValueError(f"field {f['name']}: code {f['code']!r} is not {f['size']} bytes")
        return spec

    @property
    def size(self) -> int:
        return self.st.size

    def unpack(self, data: bytes, offset: int = 0) -> dict[str, int]:
        return dict(zip(self.fields, self.st.unpack_from(data, offset), strict=True))

    def pack(self, values: Mapping[str, int]) -> bytes:
        return self.st.pack(*(int(values.get(f, 0)) for f in self.fields))

    def layout(self) -> dict[str, tuple[int, str]]:
        """Each field's (byte offset, struct code such as ``"I"``), from the artifact."""
        return dict(self._layout)

    def field_struct(self, name: str) -> tuple[int, struct.Struct]:
        """(offset, a one-item struct) to read or write field *name* in place."""
        off, code = self._layout[name]
        return off, struct.Struct(self.st.format[0] + code)

    def picker(self, names: Sequence[str]) -> struct.Struct:
        """A struct the size of a whole record that unpacks only *names*, in that order
        (for ``struct.iter_unpack`` over a read buffer: no dict, no unused fields).
        *names* must be in the record's own order."""
        lay = self._layout
        missing = [n for n in names if n not in lay]
        if missing:
            raise KeyError(f"the record has no field(s) {', '.join(missing)}")
        offs = [lay[n][0] for n in names]
        if offs != sorted(offs):
            raise ValueError(f"picker fields {list(names)} are not in record order")
        return StructSpec([(n, *lay[n]) for n in names], self.size, self.st.format[0]).st


class Ioctl:
    __slots__ = ("arg", "name", "request")

    def __init__(self, name: str, request: int, arg: StructSpec | None) -> None:
        self.name = name
        self.request = request
        self.arg = arg  # None: the argument is passed by value

    def call(self, fd: int, values: Mapping[str, int] | int = 0) -> dict[str, int]:
        """Issue the ioctl; return the (possibly updated) argument struct fields."""
        if self.arg is None:
            if not isinstance(values, int):
                raise TypeError(f"{self.name} takes a plain integer argument")
            ret = fcntl.ioctl(fd, self.request, values)
            return {"ret": int(ret)}
        if isinstance(values, int):
            values = {self.arg.fields[0]: values}
        buf = bytearray(self.arg.pack(values))
        fcntl.ioctl(fd, self.request, buf, True)
        return self.arg.unpack(bytes(buf))


class Abi:
    def __init__(self, spec: Mapping[str, Any]) -> None:
        if spec.get("schema") != SCHEMA:
            raise ValueError(
                f"ABI artifact schema {spec.get('schema')!r}, this agent reads {SCHEMA}"
            )
        self.spec = spec
        order = str(spec["byteorder"])
        self.record = StructSpec.from_json(spec["record"], order)
        self.ioc_layout: dict[str, int] = {str(k): int(v) for k, v in spec["ioc"].items()}
        self.flags: dict[str, int] = {str(k): int(v) for k, v in spec.get("flags", {}).items()}
        self.constants: dict[str, int] = {
            str(k): int(v) for k, v in spec.get("constants", {}).items()
        }
        self.ioctls: dict[str, Ioctl] = {}
        for name, io in spec.get("ioctls", {}).items():
            arg = StructSpec.from_json(io["arg"], order) if io.get("arg") else None
            self.ioctls[str(name)] = Ioctl(str(name), int(io["request"]), arg)

    @property
    def record_size(self) -> int:
        return self.record.size

    def ioctl(self, name: str) -> Ioctl:
        try:
            return self.ioctls[name]
        except KeyError:
            raise KeyError(f"the uapi header defines no {name} ioctl") from None

    def ioc(self, direction: str, type_: int, nr: int, size: int = 0) -> int:
        """The kernel's ``_IOC``: *direction* is ``none``, ``read``, ``write`` or ``read|write``."""
        lay = self.ioc_layout
        bits = 0
        for d in direction.split("|"):
            bits |= lay[d]
        return (
            bits << lay["dirshift"]
            | size << lay["sizeshift"]
            | type_ << lay["typeshift"]
            | nr << lay["nrshift"]
        )

    def ioc_field(self, request: int, name: str) -> int:
        """Field *name* (``dir``, ``size``, ``type`` or ``nr``) of an ioctl *request*."""
        lay = self.ioc_layout
        return (request >> lay[name + "shift"]) & ((1 << lay[name + "bits"]) - 1)

    def flag_names(self, flags: int) -> list[str]:
        return [n for n, bit in sorted(self.flags.items(), key=lambda kv: kv[1]) if flags & bit]

    def decode(self, data: bytes) -> list[dict[str, Any]]:
        """Split a read() buffer into event dicts (the header's field names, except that
        the record's ``wake_ns``, when the driver issued the wakeup, is ``drv_wake_ns``:
        in the protocol ``wake_ns`` is when the agent woke up)."""
        size = self.record.size
        if len(data) % size:
            raise ValueError(f"read returned {len(data)} bytes, not a multiple of {size}")
        out: list[dict[str, Any]] = []
        for off in range(0, len(data), size):
            raw = self.record.unpack(data, off)
            ev: dict[str, Any] = dict(raw)
            if "wake_ns" in ev:
                ev["drv_wake_ns"] = ev.pop("wake_ns")
            if "flags" in ev:
                ev["flag_names"] = self.flag_names(int(ev["flags"]))
            out.append(ev)
        return out

    def summary(self) -> dict[str, Any]:
        return {
            "record_size": self.record.size,
            "record_fields": list(self.record.fields),
            "ioctls": sorted(self.ioctls),
            "flags": self.flags,
        }


def load_abi(path: str | os.PathLike[str] | None = None) -> Abi:
    """The ABI from the artifact at *path* (default: ``abi.json`` beside this module)."""
    if path is None:
        path = os.path.join(os.path.dirname(__file__), ARTIFACT)
    try:
        with open(path, encoding="utf-8") as f:
            spec = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path}: the ABI artifact is missing (the image build writes it with "
            "'python -m irqlab.contract.uapi <uapi header>')"
        ) from None
    return Abi(spec)
