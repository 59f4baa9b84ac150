import subprocess
import sys

from irqlab import notice
from irqlab.build import cache

HOLD = (
    "import sys\n"
    "from pathlib import Path\n"
    "from irqlab.build import cache\n"
    "with cache.exclusive_lock(Path(sys.argv[1]), 'holding it'):\n"
    "    print('held', flush=True)\n"
    "    sys.stdin.read()  # until the waiter said that it waits\n"
)


def test_waits(tmp_path):
    lock = tmp_path / "x.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(lock)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline() == "held\n"
    plugins = notice.set_sink(None)

    def said(line):
        plugins(line)
        holder.stdin.close()  # the holder lets go once the wait was said

    notice.set_sink(said)
    try:
        with cache.exclusive_lock(lock, "cold-booting a guest for a test"):
            pass
    finally:
        notice.set_sink(plugins)
    assert holder.wait(10) == 0
