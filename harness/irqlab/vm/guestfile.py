"""Writing a file in the guest: the checks and the one shell command that both
:meth:`irqlab.vm.ssh.SshClient.put_bytes` and :meth:`irqlab.vm.guest.Guest.put_bytes`
run (through an exec channel, the data on its stdin), and what a failure says.

A regular file, or none yet, is written beside the target and renamed over it once
whole (:func:`put_command`); a file of /proc, /sys or /dev, a symbolic link or a FIFO
is written in place."""

from __future__ import annotations

import posixpath
import shlex
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from irqlab.vm.ssh import RunResult

__all__ = ["PUT_TEMP_MARK", "check_put", "put_command", "put_failure"]

# Beside a file being replaced while its new contents arrive: .irqlab-put.<pid> (not
# after the file's name: a name near NAME_MAX would make it too long)
PUT_TEMP_MARK = ".irqlab-put."


def check_put(data: object, remote: object) -> None:
    """Refuse, before anything reaches the guest, *data* that is no bytes (a str was
    written encoded by nobody knows what) and a guest path *remote* that is not
    absolute (a relative one said "mkdir: can't create directory ''") or names a
    directory (ends in /)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"put_bytes: data must be bytes, not {type(data).__name__}")
    if not isinstance(remote, str) or not posixpath.isabs(remote):
        raise ValueError(f"a guest path must be absolute, not {remote!r}")
    if remote.endswith("/"):  # a directory's: no file to write
        raise ValueError(f"a guest path to write must name a file, not a directory: {remote!r}")


def put_command(remote: str, mode: int) -> str:
    """The guest command that writes its stdin to *remote* with *mode* (parents made).
    A regular file, or none yet, is written beside it and renamed over it once whole:
    an interrupted copy (a timeout, Ctrl-C: its ``cat`` killed) leaves the old file
    (and the partial one beside it, :data:`PUT_TEMP_MARK` and the shell's pid), never
    a cut one, and a running program can be replaced (``cat >`` on it: "Text file
    busy").  A symbolic link or a FIFO is written to in place; a file of /proc, /sys
    or /dev too, and keeps its mode (an attribute or a device node is not re-moded)."""
    q = shlex.quote(remote)
    d = posixpath.dirname(remote)
    tmp = shlex.quote(posixpath.join(d, PUT_TEMP_MARK)) + "$$"
    in_place = f"cat > {q} && chmod {mode:o} {q}"
    whole = f"cat > {tmp} && chmod {mode:o} {tmp} && mv -f {tmp} {q}"
    return (
        f"mkdir -p {shlex.quote(d)} && case {q} in /proc/*|/sys/*|/dev/*) cat > {q};; "
        f"*) if [ -L {q} ] || {{ [ -e {q} ] && [ ! -f {q} ]; }}; then {in_place}; "
        f"else {whole}; fi;; esac"
    )


def put_failure(remote: str, result: RunResult) -> str:
    """What a failed :func:`put_command` for *remote* says: the path and the guest's own
    words (the first line of its stderr), not our command and its streams."""
    lines = result.err.strip().splitlines()
    said = lines[0] if lines else f"exit status {result.rc}"
    return f"cannot write {remote} in the guest: {said}"
