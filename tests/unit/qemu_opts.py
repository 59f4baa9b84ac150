"""QEMU's option syntax as QEMU reads it, for tests of the option strings we build."""

from __future__ import annotations


def qemu_options(arg: str) -> list[tuple[str, str]]:
    """*arg* (``name,key=value,...``) split as QEMU's option parser splits it: (key,
    value) per option, the first (the driver or machine) as ("", name); ``,,`` is a
    comma of the value."""
    out = []
    for i, part in enumerate(arg.replace(",,", "\0").split(",")):
        part = part.replace("\0", ",")
        key, _, value = part.partition("=") if i else ("", "", part)
        out.append((key, value))
    return out
