"""A forked child's exit leaves what its parent made: a script that started a guest,
forked, and whose child exited normally (``sys.exit(0)``) lost its QEMU's socket
directory (console.sock, qmp.sock) to the child's atexit hook.  Run in a fresh
interpreter, with a real fork and the real atexit hooks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import json, os, sys, threading
    from irqlab.vm import machine, proc

    parents = machine.make_sock_dir("parent")
    started = []  # from a thread: through the spawner thread, which the child has not
    t = threading.Thread(target=lambda: started.append(proc.spawn(["sleep", "60"])))
    t.start()
    t.join(10)
    sleeper = started[0]
    pid = os.fork()
    if pid == 0:  # the child: its own things work, then a normal exit
        mine = machine.make_sock_dir("child")
        spawned = []
        t = threading.Thread(  # a daemon: one left waiting does not hold the exit
            target=lambda: spawned.append(proc.spawn(["true"])), daemon=True
        )
        t.start()
        t.join(10)
        if spawned:
            proc.wait(spawned[0], 10)
        proc.kill_all()  # the child's own (none left): the parent's sleeper is not its own
        with open(sys.argv[1], "w") as f:
            json.dump({"mine": str(mine), "spawned": bool(spawned)}, f)
        sys.exit(0)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({
        "status": status,
        "parents_left": (parents / machine.OWNER_LOCK).exists(),
        "sleeper_runs": sleeper.poll() is None,
    }))
    proc.stop(sleeper)
    machine.remove_sock_dir(parents)
    """
)


def test_a_forked_childs_exit_leaves_the_parents_sock_dir_and_children(tmp_path: Path) -> None:
    child = tmp_path / "child.json"
    r = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(child)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    assert r.returncode == 0, r.stderr
    parent = json.loads(r.stdout)
    assert parent == {"status": 0, "parents_left": True, "sleeper_runs": True}, parent
    said = json.loads(child.read_text())
    # the child's own socket directory was removed at its exit, as a parent's is
    assert not Path(said["mine"]).exists(), said
    # a spawn from a thread of the child: the parent's spawner thread was not copied
    # (the child's kill_all() and exit left the parent's sleeper running: above)
    assert said["spawned"], said
    assert not list(tmp_path.glob("irqlab-*")), "the parent removed its own"
