"""Two pytest-xdist workers, two guests: neither sees the other's device counters,
agent state or files.

An inner pytest session runs with ``-n 2 --dist each``: both workers run the same
test, each with its own session guest, at the same time.  They meet twice at
rendezvous points (a FIFO opened for writing by one worker and for reading by the
other: each open returns only once both are there), so each worker checks its guest
while the other's guest has been injected into and written to."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from irqlab import paths

pytest_plugins = ["pytester"]
CACHE = paths.cache_dir()  # read now: pytester points HOME at its temp directory

INNER = r'''
import json
import os
from pathlib import Path

from irqlab.contract.regs import REGS

PLAN = {"gw0": ("read", 3, 0xA0000), "gw1": ("poll", 5, 0xB0000)}  # path, words, tag
SHARED = Path(os.environ["ISOLATION_DIR"])


def rendezvous(point, worker_id):
    """Return once both workers reached *point*."""
    fifo = SHARED / point
    fd = os.open(fifo, os.O_WRONLY if worker_id == "gw0" else os.O_RDONLY)
    os.close(fd)


def test_isolated(irqlab_guest, irqlab_agent, irqlab_device, worker_id):
    guest, agent, device = irqlab_guest, irqlab_agent, irqlab_device
    path, n, tag = PLAN[worker_id]
    guest.sh(f"echo {worker_id} > /tmp/isolation-owner")
    agent.arm(path, dev=guest.dev)
    device.push(*[tag | j for j in range(n)])
    evs = agent.events(n, timeout=120, path=path)
    assert [e["value"] for e in evs] == [tag | j for j in range(n)]
    rendezvous("injected", worker_id)  # both guests now hold the other's kind of state
    c = device.counters()
    assert (c.raised, c.acked) == (n, n), c
    assert guest.sh("cat /tmp/isolation-owner").strip() == worker_id
    stats = agent.stats()
    assert sorted(stats["paths"]) == [path], stats
    assert not agent.pending(), agent.pending()
    m = guest.machine
    (SHARED / f"{worker_id}.json").write_text(json.dumps({
        "pid": os.getpid(), "ssh_port": guest.ssh_port, "qemu_pid": m.pid,
        "run_dir": str(m.paths.log_dir), "sock_dir": str(m.paths.sock_dir),
        "name": guest.config.name,
    }))
    rendezvous("checked", worker_id)  # neither guest goes before both were checked
'''


def test_two_workers_guests_share_no_counters_agent_state_or_files(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    for point in ("injected", "checked"):
        os.mkfifo(shared / point)
    logs = tmp_path / "logs"
    monkeypatch.setenv("ISOLATION_DIR", str(shared))
    monkeypatch.setenv("IRQLAB_LOG_DIR", str(logs))
    monkeypatch.setenv("IRQLAB_CACHE_DIR", str(CACHE))
    pytester.makepyfile(test_inner=INNER)
    result = pytester.run(
        sys.executable, "-m", "pytest", "-n", "2", "--dist", "each", "-p", "no:cacheprovider",
        timeout=900,
    )  # fmt: skip
    assert result.ret == 0, "\n".join(result.outlines[-60:] + result.errlines[-30:])
    result.stdout.fnmatch_lines(["*2 passed*"])
    seen = {w: json.loads((shared / f"{w}.json").read_text()) for w in ("gw0", "gw1")}
    a, b = seen["gw0"], seen["gw1"]
    assert a["pid"] != b["pid"] and a["qemu_pid"] != b["qemu_pid"]
    assert a["ssh_port"] != b["ssh_port"]
    # per-worker logs and sockets: names carry the worker id and the worker's pid
    for w, s in seen.items():
        run_dir, sock_dir = Path(s["run_dir"]), Path(s["sock_dir"])
        assert run_dir.parent.name == w and run_dir.parent.parent.parent == logs, run_dir
        assert run_dir.name.startswith(f"e2e-{w}-") and f"-{s['pid']}-" in run_dir.name
        assert sock_dir.name.startswith(f"irqlab-{s['pid']}-"), sock_dir
        assert s["name"] == f"e2e-{w}"
