"""Build steps: a progress line per step for the user, full output in one log file.

A failing step raises :class:`BuildError`, whose message names the step, the
log file and the first compiler errors of the failing command's output
(:func:`compiler_errors`), else its last lines.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from irqlab import cancel
from irqlab.errors import IrqlabError, hide_frame

__tracebackhide__ = hide_frame  # pytest: an IrqlabError's traceback leaves these frames out

__all__ = [
    "BuildError",
    "Log",
    "StepLog",
    "compiler_errors",
    "failure_detail",
    "stderr_log",
]

Log = Callable[[str], None]


def stderr_log(msg: str) -> None:
    """The default progress sink: one line on stderr."""
    print(f"[irqlab] {msg}", file=sys.stderr, flush=True)


class BuildError(IrqlabError, RuntimeError):
    def __init__(self, step: str, log_path: Path, detail: str = "") -> None:
        self.step = step
        self.log_path = log_path
        self.detail = detail
        msg = f"build step '{step}' failed"
        if detail:
            msg += f": {detail}"
        msg += f" (log: {log_path})"
        super().__init__(msg)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _tail(text: str, lines: int = 15) -> str:
    return _ANSI.sub("", "\n".join(text.rstrip().splitlines()[-lines:]))


# gcc's "file:line:col: error: ..." (and "fatal error:"); another diagnostic or a line of
# make's or ninja's ends the lines after one (gcc's source line and caret)
_ERROR = re.compile(r"^\S+:\d+(?::\d+)?: (?:fatal )?error: ")
_NOT_CONTEXT = re.compile(
    r"^(?:\S+:\d+(?::\d+)?: |\S+: In |In file included|\s+from |FAILED: |ninja: |make|\[\d+/\d+\] )"
)


def compiler_errors(
    output: str, where: Callable[[str], str] = str, count: int = 3, context: int = 2
) -> str:
    """The first *count* compiler errors in *output* (``file:line:col: error: ...``),
    each with up to *context* lines after it (gcc's source line and caret), every line
    passed through *where* (which names a scratch copy's file as the checkout's); ''
    when there is none."""
    lines = _ANSI.sub("", output).splitlines()
    picked: list[str] = []
    found = 0
    for i, line in enumerate(lines):
        if found == count:
            break
        if not _ERROR.match(line):
            continue
        found += 1
        picked.append(where(line))
        for after in lines[i + 1 : i + 1 + context]:
            if _NOT_CONTEXT.match(after):
                break
            picked.append(where(after))
    return "\n".join(picked)


def failure_detail(program: str, rc: int, output: str, where: Callable[[str], str] = str) -> str:
    """What a :class:`BuildError` says of a command that failed: its exit status, then its
    first compiler errors (:func:`compiler_errors`) or else its last lines."""
    return f"{program} exited {rc}\n{compiler_errors(output, where) or _tail(output)}"


class StepLog:
    """One build's log file plus the progress callback."""

    def __init__(self, path: Path, log: Log | None = None) -> None:
        self.path = path
        self.log: Log = log if log is not None else stderr_log
        path.parent.mkdir(parents=True, exist_ok=True)
        # surrogateescape: a path's OS bytes (a non-ASCII cache path under LC_ALL=C)
        self._fh = path.open("a", encoding="utf-8", errors="surrogateescape")
        self.write(f"==== {time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()}")

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> StepLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write(self, text: str) -> None:
        self._fh.write(text.rstrip("\n") + "\n")
        self._fh.flush()

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Announce *name*; on failure re-raise as :class:`BuildError` naming it and the log."""
        cancel.check(f"build step '{name}'")  # its scope cancelled: no step begins
        self.log(f"{name} ...")
        self.write(f"---- step: {name}")
        t0 = time.monotonic()
        try:
            yield
        except (BuildError, cancel.Cancelled):  # a cancel is no failure of the step
            raise
        except Exception as e:
            self.write(f"step '{name}' failed: {type(e).__name__}: {e}")
            raise BuildError(name, self.path, f"{type(e).__name__}: {e}") from e
        dt = time.monotonic() - t0
        self.write(f"---- done: {name} ({dt:.1f} s)")
        if dt >= 1.0:
            self.log(f"{name}: done in {dt:.1f} s")

    def run(
        self,
        step: str,
        argv: Sequence[str | Path],
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        capture: bool = False,
        executable: Path | None = None,
        where: Callable[[str], str] = str,
        cancellable: bool = True,
    ) -> str:
        """Run a command; its output goes to the log (and is returned if *capture*).  A
        failure's :class:`BuildError` says its first compiler errors, their lines passed
        through *where* (:func:`compiler_errors`), else the output's last lines.  It
        runs in its own process group, which a cancel of the thread's scope (a guest
        closed while its start prepared: :mod:`irqlab.cancel`) terminates, raising
        :class:`~irqlab.cancel.Cancelled`; not *cancellable* (apt-get install: dpkg's
        state), it runs to its end first."""
        args = [str(a) for a in argv]
        self.write("$ " + " ".join(args) + (f"   (cwd {cwd})" if cwd else ""))
        full_env = None
        if env is not None:
            full_env = dict(os.environ)
            full_env.update(env)
        try:
            r = cancel.run(
                args,
                doing=f"build step '{step}' ({' '.join(args[:4])})",
                cwd=cwd,
                env=full_env,
                executable=executable,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE if capture else subprocess.STDOUT,
                cancellable=cancellable,
            )
        except cancel.Cancelled as e:
            self.write(f"{e}: its process group was terminated")
            raise
        except OSError as e:
            self.write(f"cannot run {args[0]}: {e}")
            raise BuildError(step, self.path, f"cannot run {args[0]}: {e}") from e
        out = r.stdout.decode(errors="replace")
        err = r.stderr.decode(errors="replace") if capture and r.stderr else ""
        if not capture or r.returncode != 0:
            self.write(out)
        if err:
            self.write(err)
        if r.returncode != 0:
            raise BuildError(
                step, self.path, failure_detail(args[0], r.returncode, out + err, where)
            )
        return out

    def stream(
        self,
        argv: Sequence[str | Path],
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        echo: Callable[[str], bool] = lambda _line: False,
        check: bool = True,
        step: str | None = None,
    ) -> tuple[int, str]:
        """Run a long command, its output going into the log line by line as it comes;
        lines for which *echo* is true also go to the progress sink (ANSI colours
        stripped).  Returns (exit status, output); with *check*, a failure raises
        :class:`BuildError` naming *step* (default: the command) and the log."""
        args = [str(a) for a in argv]
        self.write("$ " + " ".join(args) + (f"   (cwd {cwd})" if cwd else ""))
        name = step or " ".join(args[:4])
        try:
            proc = subprocess.Popen(
                args,
                cwd=cwd,
                env={**os.environ, **env} if env else None,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                bufsize=1,
            )
        except OSError as e:
            self.write(f"cannot run {args[0]}: {e}")
            raise BuildError(name, self.path, f"cannot run {args[0]}: {e}") from e
        assert proc.stdout is not None
        lines: list[str] = []
        for line in proc.stdout:
            lines.append(line)
            self._fh.write(line)
            if echo(line):
                self.log(_ANSI.sub("", line.rstrip("\n")))
        rc = proc.wait()
        self._fh.flush()
        out = "".join(lines)
        if check and rc != 0:
            raise BuildError(name, self.path, f"{args[0]} exited {rc}\n{_tail(out, 40)}")
        return rc, out
