"""The guest script that kills an agent daemon the health watch gave up
(irqlab.vm.guest._KILL_AND_WAIT), run with the host's sh against real processes: it is
plain POSIX sh, tr, grep and kill, as the guest's busybox has them."""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys

from irqlab.vm.guest import _KILL_AND_WAIT, AGENT_PORT, agent_command

QUICK = 10.0  # seconds a step that must not block gets before the test fails


def _kill_and_wait(pid: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sh", "-c", _KILL_AND_WAIT.format(pid=pid, port=AGENT_PORT)])


def test_the_stuck_agent_is_killed() -> None:
    """A stand-in with the daemon's own command line (agent_command's arguments)."""
    words = shlex.split(agent_command("irqlab_agent"))
    args = words[words.index("-m") + 2 :]  # after "python3 -m irqlab_agent"
    agent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", *args])
    try:
        script = _kill_and_wait(agent.pid)
        assert agent.wait(QUICK) == -signal.SIGKILL
        assert script.wait(QUICK) == 0  # its wait ended once the agent was reaped
    finally:
        agent.kill()
        agent.wait()


def test_a_process_that_took_the_agents_pid_is_left_alone() -> None:
    """The agent died and its pid is another process's: that was killed (and the
    script waited its 5 s for it)."""
    other = subprocess.Popen(["sleep", "60"])
    try:
        assert _kill_and_wait(other.pid).wait(QUICK) == 0
        assert other.poll() is None, "an unrelated process was killed"
    finally:
        other.kill()
        other.wait()


def test_an_agent_that_outlives_the_kill_fails_the_script_naming_its_state() -> None:
    """A daemon still there 5 s after SIGKILL (stuck in the kernel, state D; here a
    zombie its parent does not reap) holds the port the next agent needs: the script
    exits non-zero naming it and its state, not 0 as if the port were free."""
    words = shlex.split(agent_command("irqlab_agent"))
    args = words[words.index("-m") + 2 :]
    agent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", *args])
    try:
        script = subprocess.Popen(
            ["sh", "-c", _KILL_AND_WAIT.format(pid=agent.pid, port=AGENT_PORT)],
            stderr=subprocess.PIPE,
        )
        _, err = script.communicate(timeout=QUICK)  # the agent is killed, never reaped
        assert script.returncode == 1
        assert f"the agent daemon (pid {agent.pid}) is still there" in err.decode()
        assert "in state Z" in err.decode()
    finally:
        agent.kill()
        agent.wait()
