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

from irqlab.errors import hide_frame

if TYPE_CHECKING:
    from irqlab.vm.ssh import RunResult

__tracebackhide__ = hide_frame  # pytest: an IrqlabError's traceback leaves these frames out

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


def put_command(remote: str, mode: int, size: int) -> str:
    """The guest command that writes its stdin, *size* bytes, to *remote* with *mode*
    (parents made).  A regular file, or none yet, is written beside it and renamed over
    it once whole: an interrupted copy (a timeout, Ctrl-C) leaves the old file, never a
    cut one, and a running program can be replaced (``cat >`` on it: "Text file busy").
    Whole means *size* bytes: a timeout or Ctrl-C closes the channel, and its EOF ended
    ``cat`` as if the copy were complete.  The partial copy (:data:`PUT_TEMP_MARK` and
    the shell's pid) is removed when the command fails or a signal it can catch ends
    it; one a SIGKILL left (how a timed-out command is killed) is removed by the next
    put into that directory, once its writer is gone.  A symbolic link or a FIFO is
    written to in place; a file of /proc, /sys or /dev too, and keeps its mode (an
    attribute or a device node is not re-moded)."""
    q = shlex.quote(remote)
    d = shlex.quote(posixpath.dirname(remote))
    mark = shlex.quote(PUT_TEMP_MARK)
    in_place = f"cat > {q} && chmod {mode:o} {q}"
    # partial copies whose writer (the pid after the mark) is gone
    sweep = (
        f'for o in {d}/{mark}*; do p="${{o##*.}}"; case "$p" in ""|*[!0-9]*) continue;; '
        'esac; [ -d "/proc/$p" ] || rm -f "$o"; done'
    )
    cut = f'echo "irqlab put: the copy was cut short: $n of {size} bytes came" >&2; false'
    whole = (
        f"{sweep}; t={d}/{mark}$$; trap 'rm -f \"$t\"' EXIT; "
        "trap 'exit 129' HUP; trap 'exit 130' INT; trap 'exit 143' TERM; "
        f'cat > "$t" && n=$(wc -c < "$t") && {{ [ "$n" -eq {size} ] || {{ {cut}; }}; }} && '
        f'chmod {mode:o} "$t" && mv -f "$t" {q}'
    )
    return (
        f"mkdir -p {d} && case {q} in /proc/*|/sys/*|/dev/*) cat > {q};; "
        f"*) if [ -L {q} ] || {{ [ -e {q} ] && [ ! -f {q} ]; }}; then {in_place}; "
        f"else {whole}; fi;; esac"
    )


def put_failure(remote: str, result: RunResult) -> str:
    """What a failed :func:`put_command` for *remote* says: the path and the guest's own
    words (the first line of its stderr), not our command and its streams."""
    lines = result.err.strip().splitlines()
    said = lines[0] if lines else f"exit status {result.rc}"
    return f"cannot write {remote} in the guest: {said}"
