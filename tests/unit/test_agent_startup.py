"""The guest agent's start-up stays cheap: heavy stdlib modules are not imported.

Under TCG in the guest every imported module costs milliseconds (typing ~40 ms,
dataclasses with inspect ~130 ms, argparse ~100 ms): the boot -> agent ready
figure of the bench is mostly the agent's imports.  Modules listed here are
imported only where needed (argparse with arguments) or only for type checking.
"""

from __future__ import annotations

import json
import subprocess
import sys

from irqlab.paths import repo_root

HEAVY = ("typing", "dataclasses", "inspect", "pathlib", "argparse", "hashlib", "platform", "ast")


def test_agent_imports_no_heavy_module() -> None:
    code = (
        "import sys, json; sys.path.insert(0, sys.argv[1]); import irqlab_agent.agent; "
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    # -S: no site (the host's .pth files import pathlib/typing; the guest has none)
    r = subprocess.run(
        [sys.executable, "-S", "-c", code, str(repo_root() / "harness")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(r.stdout) == [], f"the agent imports {r.stdout.strip()} at start-up"
