"""A stand-in for qemu-system-x86_64 that speaks just enough QMP, qtest and console.

It parses the plumbing options irqlab.vm.machine.build_argv produces, connects to
the sockets like QEMU does, and behaves according to $FAKE_QEMU_MODE:

  normal       answer QMP and qtest; ``quit`` exits 0
  exit-early   print an error on stderr and exit 3 before connecting
  refuse-device  connect to the QMP socket, then refuse a -device property and exit 1
               (what QEMU does with a bad device property: the QMP handshake ends in EOF)
  stubborn     ignore SIGTERM and never answer ``quit`` (needs SIGKILL)
  hang         never connect to anything
  internal-error  like KVM's internal error: say so on stderr, QMP's run state
               ``internal-error``, the console stops after "booting"
  silent-error    the run state ``internal-error`` without a word on stderr
  boot-script-fails  the console says "booting", then the boot script's failed marker
               with its reason and a shell prompt (the run state stays ``running``)
$FAKE_QEMU_PIDFILE, if set, receives this process's pid.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

REFUSED_DEVICE = "irqlab,id=irqlab0,irq-mode=bogus: irqlab: irq-mode must be intx, msi or msix"


def _opt(argv: list[str], flag: str, prefix: str) -> str | None:
    for i, a in enumerate(argv[:-1]):
        if a == flag and argv[i + 1].startswith(prefix):
            return argv[i + 1]
    return None


def _chardev_path(argv: list[str], chardev_id: str) -> str | None:
    spec = _opt(argv, "-chardev", f"socket,id={chardev_id},")
    if spec is None:
        return None
    return spec.split("path=", 1)[1].replace(",,", ",")


def _connect(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    return s


def serve_qtest(sock: socket.socket) -> None:
    f = sock.makefile("rwb", buffering=0)
    clock = 0
    for raw in f:
        words = raw.decode().split()
        cmd = words[0] if words else ""
        if cmd == "endianness":
            reply = "OK little"
        elif cmd == "readl":
            reply = "OK 0x0000000012345678"
        elif cmd == "clock_step":
            clock += int(words[1], 0) if len(words) > 1 else 1000
            reply = f"OK {clock}"
        elif cmd == "outl":
            reply = "IRQ raise 3\nOK"
        else:
            reply = f"FAIL Unknown command '{cmd}'"
        f.write((reply + "\n").encode())


def _json_messages(sock: socket.socket) -> Iterator[dict[str, Any]]:
    """JSON objects as they arrive (qemu.qmp sends no newline between them)."""
    decoder = json.JSONDecoder()
    buf = ""
    while chunk := sock.recv(65536):
        buf += chunk.decode()
        while buf.strip():
            try:
                msg, end = decoder.raw_decode(buf.lstrip())
            except json.JSONDecodeError:
                break
            buf = buf.lstrip()[end:]
            yield msg


USERNET = "  TCP[HOST_FORWARD]  12  127.0.0.1 40022  10.0.2.15 22\n"


def serve_qmp(sock: socket.socket, stubborn: bool, status: str = "running") -> None:
    f = sock.makefile("rwb", buffering=0)
    greeting = {"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""},
                        "capabilities": []}}  # fmt: skip
    f.write(json.dumps(greeting).encode() + b"\n")
    for msg in _json_messages(sock):
        cmd, mid = msg.get("execute"), msg.get("id")
        if cmd == "quit" and stubborn:
            continue
        if cmd == "fail-me":
            out: dict[str, object] = {"error": {"class": "GenericError", "desc": "fake failure"}}
        elif cmd == "echo":
            out = {"return": msg.get("arguments", {})}
        elif cmd == "human-monitor-command":
            out = {"return": USERNET}
        elif cmd == "query-status":
            out = {"return": {"status": status, "running": status == "running"}}
        else:
            out = {"return": {}}
        if cmd == "emit":  # events named in the arguments, sent before the reply
            for n, name in enumerate(msg["arguments"]["names"]):
                ev = {
                    "event": name,
                    "data": {"n": n},
                    "timestamp": {"seconds": 0, "microseconds": 0},
                }
                f.write(json.dumps(ev).encode() + b"\n")
        if mid is not None:
            out["id"] = mid
        f.write(json.dumps(out).encode() + b"\n")
        if cmd == "quit":
            os._exit(0)


def main() -> None:
    argv = sys.argv[1:]
    mode = os.environ.get("FAKE_QEMU_MODE", "normal")
    pidfile = os.environ.get("FAKE_QEMU_PIDFILE")
    if pidfile:
        with open(pidfile, "w") as fp:
            fp.write(str(os.getpid()))
    if mode == "exit-early":
        print("fake-qemu: -device nope: 'nope' is not a valid device model name", file=sys.stderr)
        sys.exit(3)
    if mode == "hang":
        while True:
            time.sleep(3600)
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    qmp = _connect(_chardev_path(argv, "irqlab-qmp") or "")
    if mode == "refuse-device":
        print(f"fake-qemu: -device {REFUSED_DEVICE}", file=sys.stderr)
        sys.exit(1)
    console_path = _chardev_path(argv, "irqlab-console")
    if console_path:
        con = _connect(console_path)
        if mode in ("internal-error", "silent-error"):
            con.sendall(b"booting\n")
            if mode == "internal-error":
                print("KVM internal error. Suberror: 1\nemulation failure", file=sys.stderr)
                sys.stderr.flush()
        elif mode == "boot-script-fails":  # the boot script's failed marker, then a shell
            con.sendall(b"booting\nFAILED marker: no eth0 (is a NIC attached?)\n/ # ")
        else:
            con.sendall(b"booting\nREADY marker 42\n")
    qtest_spec = _opt(argv, "-qtest", "unix:")
    if qtest_spec:
        qt = _connect(qtest_spec.removeprefix("unix:"))
        threading.Thread(target=serve_qtest, args=(qt,), daemon=True).start()
    status = "internal-error" if mode in ("internal-error", "silent-error") else "running"
    serve_qmp(qmp, stubborn=mode == "stubborn", status=status)
    while True:  # QMP closed: wait to be killed, like QEMU would keep running
        time.sleep(3600)


if __name__ == "__main__":
    main()
