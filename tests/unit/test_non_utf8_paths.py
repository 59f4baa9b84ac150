"""A non-ASCII cache or log path under a locale that is not UTF-8 (``LC_ALL=C``, no
locale coercion, no UTF-8 mode): Python decodes the path's bytes to surrogates, which
``str.encode()`` and a UTF-8 text file refuse.  ``irqlab run`` ended in a
UnicodeEncodeError traceback (the accelerator verdict's key, then the QEMU command line
written into the log directory)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from irqlab.build.cache import InputHash
from irqlab.vm import accel

FAKE = Path(__file__).with_name("fake_qemu.py")

CHILD = """
import sys
from pathlib import Path
from irqlab.build.cache import InputHash
from irqlab.build.steps import StepLog
from irqlab.vm import accel
from irqlab.vm.machine import Machine, MachineConfig

assert sys.getfilesystemencoding() == "ascii", sys.getfilesystemencoding()
d, qemu = Path(sys.argv[1]), Path(sys.argv[2])
h = InputHash("t")
h.add_str("qemu", str(qemu))
print(accel.verdict_key(qemu, d), h.hexdigest())
with StepLog(d / "build.log", log=lambda m: None) as steps:
    steps.write(f"cd {d}")
cfg = MachineConfig(binary=qemu, log_root=d / "logs", name="fake", start_timeout=10.0)
with Machine(cfg) as m:
    print(m.qmp("query-status")["status"])
"""


def test_a_non_ascii_path_under_the_c_locale_is_its_bytes(tmp_path: Path) -> None:
    d = tmp_path / "wéird ☃"
    d.mkdir()
    qemu = d / "qemu-system-fake"
    qemu.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" "$@"\n')
    qemu.chmod(0o755)
    env = {**os.environ, "LC_ALL": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0"}
    r = subprocess.run(
        [sys.executable, "-c", CHILD, str(d), str(qemu)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    h = InputHash("t")
    h.add_str("qemu", str(qemu))
    # the same keys as under a UTF-8 locale: the path's bytes, whatever the locale
    assert r.stdout.split() == [accel.verdict_key(qemu, d), h.hexdigest(), "running"]
    assert (d / "build.log").read_text().endswith(f"cd {d}\n")
    (run,) = (d / "logs").iterdir()
    assert str(qemu) in (run / "cmdline.sh").read_text()
