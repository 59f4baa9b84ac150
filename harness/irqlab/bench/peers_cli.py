"""The ``bench-peers`` subcommand: ``add_bench_peers_parser(subparsers)`` + ``cmd_bench_peers``.

``irqlab bench-peers [--rounds N] [--out DIR]`` times "start a guest, run one command
over SSH, stop" with labgrid (in a throwaway venv, ``build/peer-venv``), an irqlab
restore and an irqlab cold boot in interleaved rounds (:mod:`irqlab.bench.peers`),
writes ``result.json`` and ``table.txt`` (default ``build/bench-peers/<stamp>``, for an
installed wheel ``<cache>/bench-peers/<stamp>``) and
prints the table.  Exit status 0, or 1 when the irqlab guests cannot run; a labgrid
failure is reported in the table (which step, its output's tail) and does not fail it.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from irqlab.cli.argtypes import count
from irqlab.cli.bench import check_out_dir, out_path

DESCRIPTION = """\
Times the whole of "start a guest, run one command in it over SSH, stop it" three
ways, in interleaved rounds: labgrid {labgrid} (installed into a throwaway virtual
environment, build/peer-venv; <cache>/peer-venv for an installed wheel), an irqlab
guest restored from its snapshot, and an irqlab cold boot.  Each run is a process of
its own, timed from its interpreter's start to its exit (the rows "without interpreter
start and imports" beside them are each script's own time after its imports).  Writes
result.json and table.txt into --out (default build/bench-peers/<stamp> in a checkout,
else <cache>/bench-peers/<stamp>, the build cache's) and prints the table, with a
WARNING when the machine was loaded (a 1-min load average above 0.5 per core before,
after a round or after: the figures are then mostly queueing).

Exit status: 0; 1 when the irqlab guests cannot run, or while a bench runs on this
machine (either would disturb the other's figures; refused before anything starts,
naming its pid); 2 for a usage error, among them an --out that holds a result.json
already.  A labgrid failure is shown in the table (the step and the end of its output)
and does not change the status.
"""


def add_bench_peers_parser(subparsers: Any) -> argparse.ArgumentParser:
    from irqlab.bench.peers import DEFAULT_ROUNDS, LABGRID_VERSION

    s: argparse.ArgumentParser = subparsers.add_parser(
        "bench-peers",
        help=f"whole process start/command/stop: labgrid {LABGRID_VERSION} vs restore vs cold boot",
        description=DESCRIPTION.format(labgrid=LABGRID_VERSION),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("--rounds", type=count(1), default=DEFAULT_ROUNDS,
                   help=f"interleaved rounds (default {DEFAULT_ROUNDS})")  # fmt: skip
    s.add_argument(
        "--out",
        type=out_path,
        help="output directory (default build/bench-peers/<stamp> in a checkout, else "
        "<cache>/bench-peers/<stamp>); refused if it holds a "
        "result.json",
    )
    s.set_defaults(func=cmd_bench_peers)
    return s


def cmd_bench_peers(args: argparse.Namespace) -> int:
    from irqlab.bench.peers import StepFailure, render_table, run_peers, tail
    from irqlab.vm.guest import PrerequisiteMissing

    check_out_dir(args.out)
    try:
        path = run_peers(args.rounds, args.out)
    except PrerequisiteMissing as e:
        print(f"irqlab bench-peers: {e}", file=sys.stderr)
        return 1
    except StepFailure as e:  # an irqlab run (labgrid's are in the table)
        print(f"irqlab bench-peers: {e}", file=sys.stderr)
        for line in tail(e.output):
            print(f"  | {line}", file=sys.stderr)
        return 1
    print()
    sys.stdout.write(render_table(json.loads(path.read_text())))
    print(f"\nresult: {path}")
    return 0
