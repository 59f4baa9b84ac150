"""The driver's userspace ABI (event record layout, ioctls, flag bits) as data.

Nothing here retypes the uapi header: an :class:`Abi` is built from a JSON-able
*spec* that the header parser (``irqlab.contract.uapi``, shipped next to the agent as
``irqlab_agent/_uapi.py`` together with the header ``irqlab_agent/irqlab.h``)
produces from ``guest-kmod/include/uapi/linux/irqlab.h``.  See :func:`load_abi`.

Spec shape (all names as in the header, lower-case struct fields)::

    {"record": {"format": "<IHBB...", "fields": ["seq", ...]},
     "flags": {"DROPPED": 1, ...},                # event record flag bits
     "ioctls": {"ACK": {"request": 3221... , "format": "<IIQ", "fields": [...]},
                "SET_EVENTFD": {"request": ..., "format": "<i", "fields": ["fd"]}, ...},
     "constants": {...}}                          # any other #defines
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

# Header field names -> protocol field names, where they differ.
FIELD_ALIASES: dict[str, str] = {
    # The record's wake_ns is when the *driver* issued the wakeup; the protocol's
    # wake_ns is when userspace (the agent) woke up.
    "wake_ns": "drv_wake_ns",
    "raise_ts_ns": "raise_ns",
    "ts_ns": "raise_ns",
    "timestamp_ns": "raise_ns",
    "raise_ts": "raise_ns",
    "src": "source",
}


class StructSpec:
    __slots__ = ("fields", "st")

    def __init__(self, st: struct.Struct, fields: tuple[str, ...]) -> None:
        self.st = st
        self.fields = fields

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> StructSpec:
        st = struct.Struct(str(obj["format"]))
        fields = tuple(str(f) for f in obj["fields"])
        n = len(st.unpack(bytes(st.size)))
        if n != len(fields):
            raise ValueError(f"format {st.format!r} has {n} items but {len(fields)} fields given")
        return cls(st, fields)

    @property
    def size(self) -> int:
        return self.st.size

    def unpack(self, data: bytes, offset: int = 0) -> dict[str, int]:
        return dict(zip(self.fields, self.st.unpack_from(data, offset), strict=True))

    def pack(self, values: Mapping[str, int]) -> bytes:
        return self.st.pack(*(int(values.get(f, 0)) for f in self.fields))

    def layout(self) -> dict[str, tuple[int, str]]:
        """Each field's (byte offset, struct code such as ``"I"`` or ``"16s"``)."""
        fmt = self.st.format
        order = fmt[0] if fmt[:1] in ("@", "=", "<", ">", "!") else "@"
        body = fmt[1:] if order == fmt[:1] else fmt
        codes: list[str] = []
        prefix = ""  # the format of everything before the current item
        offsets: list[int] = []
        count = ""
        for ch in body:
            if ch.isspace():
                continue
            if ch.isdigit():
                count += ch
                continue
            n, count = int(count or 1), ""
            items = [f"{n}{ch}"] if ch in "sp" else ([] if ch == "x" else [ch] * n)
            for item in items:
                # Native alignment: the item's offset is where it ends minus its size.
                offsets.append(struct.calcsize(order + prefix + item) - struct.calcsize(item))
                codes.append(item)
                prefix += item
            if ch == "x":
                prefix += f"{n}x"
        return dict(zip(self.fields, zip(offsets, codes, strict=True), strict=True))

    def field_struct(self, name: str) -> tuple[int, struct.Struct]:
        """(offset, a one-item struct) to read or write field *name* in place."""
        off, code = self.layout()[name]
        order = self.st.format[0] if self.st.format[:1] in ("=", "<", ">", "!") else "="
        return off, struct.Struct(order + code)

    def picker(self, names: Sequence[str]) -> struct.Struct:
        """A struct the size of a whole record that unpacks only *names*, in that order
        (for ``struct.iter_unpack`` over a read buffer: no dict, no unused fields).
        *names* must be in the record's own order."""
        lay = self.layout()
        missing = [n for n in names if n not in lay]
        if missing:
            raise KeyError(f"the record has no field(s) {', '.join(missing)}")
        offs = [lay[n][0] for n in names]
        if offs != sorted(offs):
            raise ValueError(f"picker fields {list(names)} are not in record order")
        order = self.st.format[0]
        if order not in ("=", "<", ">", "!"):  # native alignment: no 'x' gaps to compute
            raise ValueError(f"record format {self.st.format!r} has no explicit byte order")
        fmt, pos = order, 0
        for n in names:
            off, code = lay[n]
            fmt += f"{off - pos}x{code}" if off > pos else code
            pos = off + struct.calcsize(order + code)
        if self.size > pos:
            fmt += f"{self.size - pos}x"
        return struct.Struct(fmt)


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
        self.spec = spec
        self.record = StructSpec.from_json(spec["record"])
        self.flags: dict[str, int] = {str(k): int(v) for k, v in spec.get("flags", {}).items()}
        self.constants: dict[str, int] = {
            str(k): int(v) for k, v in spec.get("constants", {}).items()
        }
        self.ioctls: dict[str, Ioctl] = {}
        for name, io in spec.get("ioctls", {}).items():
            arg = StructSpec.from_json(io) if io.get("format") else None
            self.ioctls[str(name)] = Ioctl(str(name), int(io["request"]), arg)

    @property
    def record_size(self) -> int:
        return self.record.size

    def ioctl(self, name: str) -> Ioctl:
        try:
            return self.ioctls[name]
        except KeyError:
            raise KeyError(f"the uapi header defines no {name} ioctl") from None

    def flag_names(self, flags: int) -> list[str]:
        return [n for n, bit in sorted(self.flags.items(), key=lambda kv: kv[1]) if flags & bit]

    def decode(self, data: bytes) -> list[dict[str, Any]]:
        """Split a read() buffer into event dicts (protocol field names)."""
        size = self.record.size
        if len(data) % size:
            raise ValueError(f"read returned {len(data)} bytes, not a multiple of {size}")
        out: list[dict[str, Any]] = []
        for off in range(0, len(data), size):
            raw = self.record.unpack(data, off)
            ev: dict[str, Any] = {FIELD_ALIASES.get(k, k): v for k, v in raw.items()}
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


def load_spec(header: str | os.PathLike[str]) -> dict[str, Any]:
    """Build the spec from *header* with the shipped parser (``_uapi`` or
    ``irqlab.contract.uapi``)."""
    import importlib  # only when there is no matching abi.json

    try:
        mod = importlib.import_module("irqlab_agent._uapi")
    except ImportError:
        mod = importlib.import_module("irqlab.contract.uapi")
    fn = getattr(mod, "agent_spec", None)
    if fn is None:
        raise RuntimeError(f"{mod.__name__} has no agent_spec(header_text) function")
    with open(header, encoding="utf-8") as f:
        spec = fn(f.read())
    if not isinstance(spec, dict):
        raise TypeError("agent_spec() must return a dict")
    return spec


PRECOMPUTED = "abi.json"


def _precomputed(header: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The spec the image recipe generated from this very header (``abi.json`` beside it:
    ``{"header": <the header's text>, "spec": {...}}``), or None if absent or made from
    another text.  Saves parsing the header at every start (a few hundred ms in a TCG
    guest); comparing the text needs no hash library (hashlib loads OpenSSL)."""
    try:
        with open(os.path.join(os.path.dirname(header), PRECOMPUTED), encoding="utf-8") as f:
            data = json.load(f)
        with open(header, encoding="utf-8") as f:
            text = f.read()
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("header") != text:
        return None
    spec = data.get("spec")
    return spec if isinstance(spec, dict) else None


def load_abi(
    header: str | os.PathLike[str] | None = None, spec_json: str | os.PathLike[str] | None = None
) -> Abi:
    if spec_json is not None:
        with open(spec_json, encoding="utf-8") as f:
            return Abi(json.load(f))
    if header is None:
        header = os.path.join(os.path.dirname(__file__), "irqlab.h")
    spec = _precomputed(header)
    return Abi(spec if spec is not None else load_spec(header))
