"""The driver's userspace ABI (guest-kmod/include/uapi/linux/irqlab.h) and the ABI
artifact the guest agent loads.

The header is parsed by :mod:`irqlab.contract.cheader` (the project's one C-header
parser).  :func:`abi_spec` turns the result into ``abi.json``, the only thing the
guest agent (:mod:`irqlab_agent.abi`) reads: every struct with each field's offset,
size and :mod:`struct` code, the ioctls with their request numbers, the event flag
bits, the other constants, and the ioctl encoding.  Both guest images ship it
(``python -m irqlab.contract.uapi HEADER`` prints it).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

from irqlab.contract.cheader import (
    SCALAR_CODES,
    CStruct,
    Header,
    HeaderParseError,
    Ioctl,
    ioc_layout,
)
from irqlab.contract.cheader import parse as parse_header

__all__ = [
    "ABI_SCHEMA",
    "GENERATOR_SOURCES",
    "HEADER_REL",
    "HeaderParseError",
    "Uapi",
    "abi_json",
    "abi_spec",
    "header_path",
    "load",
    "parse",
]

PREFIX = "IRQLAB_"
IOCTL_PREFIX = "IRQLAB_IOC_"
EVENT_FLAG_PREFIX = "IRQLAB_EVF_"
RECORD_STRUCT = "irqlab_event"
HEADER_REL = "guest-kmod/include/uapi/linux/irqlab.h"
ABI_SCHEMA = 3  # version of the abi.json layout below
BYTE_ORDER = "<"  # the guests are little endian (x86_64, aarch64)

# What ``python -m irqlab.contract.uapi`` needs besides the standard library (repository
# paths): the Buildroot package copies exactly these to generate abi.json, and the Debian
# image keys its cached abi.json on them.
GENERATOR_SOURCES = (
    "harness/irqlab/__init__.py",
    "harness/irqlab/errors.py",
    "harness/irqlab/contract/__init__.py",
    "harness/irqlab/contract/cheader.py",
    "harness/irqlab/contract/uapi.py",
)


@dataclass(frozen=True)
class Uapi(Header):
    """The uapi header: :class:`~irqlab.contract.cheader.Header` plus its conventions."""

    def with_prefix(self, prefix: str) -> dict[str, int]:
        """Constants whose name starts with ``IRQLAB_<prefix>``, the prefix stripped."""
        full = prefix if prefix.startswith(PREFIX) else PREFIX + prefix
        return super().with_prefix(full)

    @property
    def record(self) -> CStruct:
        return self.struct(RECORD_STRUCT)

    def ioctl(self, short: str) -> Ioctl:
        """``uapi.ioctl("ACK")`` is ``IRQLAB_IOC_ACK``."""
        name = short if short.startswith(IOCTL_PREFIX) else IOCTL_PREFIX + short
        try:
            return self.ioctls[name]
        except KeyError:
            raise KeyError(f"{name} is not defined in {self.source}") from None


def parse(text: str, source: str = "<uapi header>") -> Uapi:
    """Parse a uapi header; raise :class:`HeaderParseError` on anything unexpected."""
    h = parse_header(text, source)
    return Uapi(**{f.name: getattr(h, f.name) for f in fields(h)})


def load(path: Path) -> Uapi:
    return parse(path.read_text(), str(path))


def header_path() -> Path:
    """The header of the checkout, or the copy packaged as irqlab/data/irqlab-uapi.h (host only)."""
    # Imported here so that generating abi.json needs only GENERATOR_SOURCES.
    from irqlab.paths import packaged_file

    return packaged_file("irqlab-uapi.h", HEADER_REL)


def _struct_spec(s: CStruct) -> dict[str, object]:
    """A struct as the agent reads it: size and one entry per value (array items apart)."""
    items: list[dict[str, object]] = []
    for f in s.fields:
        for i, name in enumerate(f.item_names):
            items.append(
                {
                    "name": name,
                    "offset": f.offset + i * f.elem_size,
                    "size": f.elem_size,
                    "code": f.code,
                }
            )
    return {"size": s.size, "fields": items}


def abi_spec(u: Uapi) -> dict[str, object]:
    """The ABI artifact (``abi.json``) the guest agent builds its ``Abi`` from.

    ``record``: the event record; ``structs``: every struct; each struct is ``{"size",
    "fields": [{"name", "offset", "size", "code"}, ...]}`` (an array member is one entry
    per item, ``name[i]``); ``flags``: IRQLAB_EVF_* bits by short name; ``ioctls``: by
    short name (IRQLAB_IOC_ stripped), each with its ``request``, ``direction`` and
    ``arg`` (a struct, a scalar as one field named ``value``, or None for ``_IO``);
    ``constants``: every other #define; ``ioc``: the request encoding.
    """
    ioctls: dict[str, object] = {}
    for name, io in u.ioctls.items():
        arg: dict[str, object] | None = None
        if io.arg_struct is not None:
            arg = _struct_spec(u.struct(io.arg_struct))
        elif io.arg_type is not None:
            code = SCALAR_CODES[io.arg_type]
            arg = {
                "size": io.size,
                "fields": [{"name": "value", "offset": 0, "size": io.size, "code": code}],
            }
        ioctls[name.removeprefix(IOCTL_PREFIX)] = {
            "request": io.request,
            "direction": io.direction,
            "arg": arg,
        }
    return {
        "schema": ABI_SCHEMA,
        "byteorder": BYTE_ORDER,
        "ioc": ioc_layout(),
        "record": _struct_spec(u.record),
        "structs": {name: _struct_spec(s) for name, s in u.structs.items()},
        "flags": u.with_prefix(EVENT_FLAG_PREFIX),
        "ioctls": ioctls,
        "constants": dict(u.constants),
    }


def abi_json(path: Path) -> str:
    """``abi.json`` of the header at *path* (sorted keys: the same header, the same bytes)."""
    return json.dumps(abi_spec(load(path)), indent=1, sort_keys=True) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m irqlab.contract.uapi [HEADER]``: print the ABI artifact (abi.json)."""
    args = list(sys.argv[1:] if argv is None else argv)
    path = Path(args[0]) if args else header_path()
    sys.stdout.write(abi_json(path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
