"""The native responder: ``irqlab-respond`` (guest-kmod/responder/) run by the agent.

For latency figures that measure the kernel's notification paths rather than
Python, the agent starts the C responder on one path and reports what it
recorded (issue 15).  The responder arms the path as the agent's own path
class does, ACKs each event right after the wake-up, keeps per-event
timestamps in memory and prints them as one JSON object when it ends.

Ops (registered by :func:`ops`):

``native_start``  ``{"path", "name"?, "count", "dev"?, "batch"?, "interval_us"?,
    "sig"?, "ack_dev"?, "ack_first_seq"?, "uio_name"?, "map"?, "reenable"?, "line"?,
    "buffer"?}``: start the responder and wait until it prints ``ready`` (the path
    is armed), so the host may start the interrupts.  Answers ``pid`` and ``argv``.
``native_wait``  ``{"name", "wait_s"}``: wait until the responder has handled
    ``count`` events and exited; after *wait_s* seconds (at most :data:`MAX_WAIT_S`,
    an hour: the session answers nothing else meanwhile) stop it (SIGTERM: it
    still reports what it has).  Answers ``result`` (the responder's JSON: per-run
    counters, ``fields`` and ``rows``, one row per event), ``rc``, ``stderr`` and
    ``timed_out``.
``native_stop``  ``{"name"?}``: stop responders (all without a name), discarding results.

The binary is looked up in ``$IRQLAB_RESPONDER``, beside this package (the Debian
image puts it there), then ``/usr/bin`` (the Buildroot package installs it there).
"""

from __future__ import annotations

import os
import select
import signal

from irqlab_agent.gpio_cdev import GpioCdevPath
from irqlab_agent.paths import PATH_KINDS
from irqlab_agent.protocol import JsonObj, ProtocolError, Request, ok
from irqlab_agent.uio import UioPath

TYPE_CHECKING = False  # typing is not imported at run time: it costs start-up time
if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable
    from typing import Any

BINARY = "irqlab-respond"
# Every path the agent has (the responder implements each; a unit test checks its source).
PATHS = (*PATH_KINDS, GpioCdevPath.kind, UioPath.kind)
READY_TIMEOUT_S = 10.0
# native_wait's longest wait_s: the session answers nothing else meanwhile
MAX_WAIT_S = 3600.0
# request key -> (responder option, kind)
_OPTIONS: dict[str, tuple[str, str]] = {
    "dev": ("-d", "str"),
    "batch": ("-b", "int"),
    "interval_us": ("-i", "int"),
    "sig": ("-s", "int"),
    "ack_dev": ("-A", "str"),
    "ack_first_seq": ("-F", "int"),
    "uio_name": ("-u", "str"),
    "map": ("-m", "str"),
    "reenable": ("-r", "str"),
    "line": ("-l", "int"),
    "buffer": ("-B", "int"),
}


def find_binary() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    for cand in (
        os.environ.get("IRQLAB_RESPONDER", ""),
        os.path.join(here, BINARY),
        os.path.join("/usr/bin", BINARY),
    ):
        if cand and os.access(cand, os.X_OK):
            return cand
    raise FileNotFoundError(2, f"{BINARY} is not installed (beside the agent or in /usr/bin)")


def build_argv(binary: str, req: Request) -> list[str]:
    """The responder's command line for a ``native_start`` request."""
    path = req.get_str("path")
    if path not in PATHS:
        raise ProtocolError(f"native: unknown path {path!r}; known: {list(PATHS)}", req.id)
    argv = [binary, "-n", str(req.get_int("count", 0, lo=0))]
    for key, (flag, kind) in _OPTIONS.items():
        if key not in req.args or req.args[key] is None:
            continue
        value = str(req.get_int(key, lo=0)) if kind == "int" else req.get_str(key)
        argv += [flag, value]
    argv.append(path)
    return argv


def _read_line(fd: int, timeout: float) -> bytes:
    """One line from *fd*, a byte at a time (nothing beyond it is consumed: the rest
    is read later by ``communicate``); what came before EOF or *timeout* otherwise."""
    import time

    deadline = time.monotonic() + timeout
    out = bytearray()
    while not out.endswith(b"\n"):
        left = deadline - time.monotonic()
        r, _, _ = select.select([fd], [], [], max(0.0, left))
        if not r:
            break
        b = os.read(fd, 1)
        if not b:
            break
        out += b
    return bytes(out)


class NativeRuns:
    """The responders this agent started, by name."""

    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, req: Request) -> JsonObj:
        import subprocess  # only when used: the agent's start-up stays small

        name = req.get_str("name", req.get_str("path"))
        if name in self.procs:
            raise ProtocolError(f"native: {name!r} is running; wait for it or stop it", req.id)
        argv = build_argv(find_binary(), req)
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            close_fds=True,
        )
        assert proc.stdout is not None
        # Wait for "ready" without a timer guess: the responder prints it once armed.
        line = _read_line(proc.stdout.fileno(), READY_TIMEOUT_S)
        if line.strip() != b"ready":
            proc.kill()
            _, err = proc.communicate()
            msg = err.decode(errors="replace").strip() or f"no 'ready' ({line!r})"
            raise OSError(0, f"native {name}: {msg}")
        self.procs[name] = proc
        return ok(req.id, name=name, pid=proc.pid, argv=argv)

    def wait(self, req: Request) -> JsonObj:
        import json
        import subprocess

        name = req.get_str("name")
        timeout = req.get_float("wait_s", 60.0, hi=MAX_WAIT_S)
        proc = self.procs.pop(name, None)
        if proc is None:
            raise ProtocolError(f"native: no responder named {name!r}", req.id)
        timed_out = False
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate()
        result: Any = None
        text = out.decode(errors="replace").strip()
        if text:
            try:
                result = json.loads(text.splitlines()[-1])
            except ValueError:
                result = None
        return ok(
            req.id,
            name=name,
            rc=proc.returncode,
            timed_out=timed_out,
            result=result,
            stderr=err.decode(errors="replace")[-2000:],
        )

    def stop(self, req: Request) -> JsonObj:
        name = req.get_opt_str("name")
        names = [name] if name is not None else list(self.procs)
        stopped = []
        for n in names:
            proc = self.procs.pop(n, None)
            if proc is None:
                continue
            proc.send_signal(signal.SIGTERM)
            proc.communicate()
            stopped.append(n)
        return ok(req.id, stopped=stopped)

    def close(self) -> None:
        for proc in self.procs.values():
            proc.kill()
            proc.communicate()
        self.procs.clear()


def ops(runs: NativeRuns) -> dict[str, Callable[[Request], JsonObj]]:
    return {"native_start": runs.start, "native_wait": runs.wait, "native_stop": runs.stop}
