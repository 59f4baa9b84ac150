"""A long ACK-by-sequence write(2) to /dev/irqlabN gives way to signals.

Each u32 written is one ACK (three register accesses), so a write of a large buffer
runs for minutes.  SIGKILL must end it within a second or two, not when the loop is
done; a caught signal ends it with a short count (the ACKs done so far).  The buffer is
an untouched read-only anonymous mapping: every page is the zero page, so a GiB costs
the guest no memory, and sequence 0 is never valid (each ACK is counted invalid).
"""

from __future__ import annotations

import json

from irqlab.vm.guest import Guest

SIZE = 1 << 30  # about two minutes of ACKs before the fix, under TCG
LIMIT_S = 10.0

SCRIPT = """
import json, mmap, os, signal, sys, time
how = sys.argv[1]  # kill | usr1
fd = os.open("/dev/irqlab0", os.O_WRONLY)
buf = mmap.mmap(-1, int(sys.argv[2]), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                prot=mmap.PROT_READ)
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(r)
    signal.signal(signal.SIGUSR1, lambda *_: None)  # no SA_RESTART
    os.write(w, b"x")
    try:
        n = os.write(fd, buf)
    except OSError as e:
        n = -e.errno
    os.write(w, str(n).encode())
    os._exit(0)
os.close(w)
os.read(r, 1)
# well inside the write: the child has spent half a second in the kernel (its stime,
# /proc/PID/stat field 15, in clock ticks), a wait on that rather than a fixed sleep
hz = os.sysconf("SC_CLK_TCK")
end = time.monotonic() + 60
while int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[12]) < hz // 2:
    assert time.monotonic() < end, "the child spent no time in its write(2)"
    time.sleep(0.01)
t0 = time.monotonic()
os.kill(pid, signal.SIGKILL if how == "kill" else signal.SIGUSR1)
_, status = os.waitpid(pid, 0)
took = time.monotonic() - t0
out = os.read(r, 64).decode()
print(json.dumps({"took": took, "signaled": os.WIFSIGNALED(status),
                  "written": int(out) if out else None}))
"""


def _run(g: Guest, how: str) -> dict:
    g.put_bytes(SCRIPT.encode(), "/tmp/write_ack_signals.py")
    out = g.sh(f"python3 /tmp/write_ack_signals.py {how} {SIZE}", timeout=300.0)
    return json.loads(out.strip().splitlines()[-1])


def test_sigkill_ends_a_long_ack_write_at_once(irqlab_guest: Guest) -> None:
    r = _run(irqlab_guest, "kill")
    assert r["signaled"], r
    assert r["took"] < LIMIT_S, (
        f"a writer killed in a {SIZE >> 20} MiB ACK write was reaped after "
        f"{r['took']:.1f} s (the write loop must stop on a fatal signal)"
    )


def test_a_caught_signal_ends_a_long_ack_write_with_a_short_count(
    irqlab_guest: Guest,
) -> None:
    r = _run(irqlab_guest, "usr1")
    assert r["took"] < LIMIT_S, (
        f"a writer signalled in a {SIZE >> 20} MiB ACK write returned after "
        f"{r['took']:.1f} s (the write loop must stop on a pending signal)"
    )
    written = r["written"]
    assert written is not None and 0 < written < SIZE and written % 4 == 0, r
