"""The guest agent's start-up stays cheap: heavy stdlib modules are not imported.

Under TCG in the guest every imported module costs milliseconds (typing ~40 ms,
dataclasses with inspect ~130 ms, argparse ~100 ms): the boot -> agent ready
figure of the bench is mostly the agent's imports.  Modules listed here are
imported only where needed (argparse for a command line the agent's own parser leaves
to it) or only for type checking.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys

import pytest

from irqlab.paths import agent_package_dir, repo_root
from irqlab.vm.guest import agent_command
from irqlab_agent.agent import parse_args, quick_args

HEAVY = ("typing", "dataclasses", "inspect", "pathlib", "argparse", "hashlib", "platform", "ast")


# argparse's own imports: with the daemon's command line none of them is loaded
ARGPARSE = ("argparse", "gettext", "locale", "shutil")
# after `exec python3 -m irqlab_agent`
DAEMON_ARGV = shlex.split(agent_command(agent_package_dir().name))[4:]


def _heavy_after(statement: str) -> list[str]:
    """The modules of HEAVY and ARGPARSE imported by the agent plus *statement*, in a
    fresh interpreter without site (the host's .pth files import pathlib/typing; the
    guest has none)."""
    code = (
        "import sys, json; sys.path.insert(0, sys.argv[1]); import irqlab_agent.agent; "
        f"{statement}; "
        f"print(json.dumps([m for m in {(*HEAVY, *ARGPARSE)!r} if m in sys.modules]))"
    )
    r = subprocess.run(
        [sys.executable, "-S", "-c", code, str(repo_root() / "harness")],
        capture_output=True,
        text=True,
        check=True,
    )
    loaded: list[str] = json.loads(r.stdout)
    return loaded


def test_agent_imports_no_heavy_module() -> None:
    loaded = _heavy_after("pass")
    assert loaded == [], f"the agent imports {loaded} at start-up"


def test_daemon_command_line_is_parsed_without_argparse() -> None:
    """The command line the host starts the daemon with is parsed by quick_args: argparse
    and what it imports (gettext, locale, shutil with bz2 and lzma) stay out."""
    assert DAEMON_ARGV[:1] == ["--listen"], DAEMON_ARGV
    loaded = _heavy_after(f"assert irqlab_agent.agent.quick_args({DAEMON_ARGV!r}) is not None")
    assert loaded == [], f"parsing the daemon's command line imports {loaded}"


@pytest.mark.parametrize(
    "argv",
    [
        DAEMON_ARGV,
        ["--spec", "/x/abi.json"],
        ["--listen=7707", "--daemon=/run/log", "--spec=abi.json"],
        ["--daemon", "log", "--reseed", "0.0.0.0:2", "--listen", "1"],
        ["--listen="],  # empty: the listen step refuses it, as after argparse
    ],
)
def test_quick_args_parses_as_argparse_does(argv: list[str]) -> None:
    assert vars(quick_args(argv)) == vars(parse_args(argv))


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["-h"],
        ["--listen"],  # no value
        ["--listen", "--daemon", "log"],  # an option where the value should be
        ["--daemon", "log"],  # needs --listen
        ["--reseed", "1"],  # needs --listen
        ["--listen", "1", "--listen", "2"],
        ["--lis", "1"],  # argparse's abbreviations are argparse's business
        ["--bogus", "1"],
        ["listen", "1"],
    ],
)
def test_quick_args_leaves_the_rest_to_argparse(argv: list[str]) -> None:
    assert quick_args(argv) is None


def test_an_agent_launch_that_does_not_detach_is_named_without_reading_its_output() -> None:
    """exit_status timed out (the daemon did not detach): reading its stdout would wait
    for an EOF that never comes; the start fails naming agent_timeout instead."""
    from irqlab.vm.guest import Guest, GuestConfig, GuestError

    class Stuck:
        closed = False

        class _Never:
            def read(self, n: int) -> bytes:
                raise AssertionError("read the output of a command still running")

        stdout = stderr = _Never()

        def exit_status(self, timeout: float | None = None) -> int | None:
            return None

        def abandon(self) -> None:  # the failed start stops the guest: no kill first
            Stuck.closed = True

    g = Guest(GuestConfig(agent_timeout=0.01))
    with pytest.raises(GuestError, match=r"did not detach within agent_timeout=0\.01 s"):
        g._await_launch(Stuck())  # type: ignore[arg-type]
    assert Stuck.closed
