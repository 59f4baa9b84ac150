"""invoke task ``bench``; tasks.py imports it (``from irqlab.tasks_bench import bench``).

``invoke bench``                      full run (10,000 events per path and placement, 10 s storms)
``invoke bench --quick``              minutes: small counts, 0.2 s storms
``invoke bench --compare OLD.json``   also print what got slower beyond noise (exit 1 if any)
``invoke bench --runs 3``             three fresh boots: the spread of every figure
``invoke bench --test-all``           also time a warm ``invoke test-all`` (long)
"""

from __future__ import annotations

from invoke.context import Context
from invoke.tasks import task


@task(
    auto_shortflags=False,
    help={
        "quick": "small counts (a few minutes) instead of the full run",
        "compare": "an older result.json: print figures worse beyond noise, exit 1 if any",
        "runs": "fresh boots that each measure everything (spread across runs); default 1",
        "wakeup_runs": "thread/workqueue placements in the first N runs only (default: all)",
        "events": "latency events per path and wakeup placement (full: 10000)",
        "paths": "comma list of agent paths (default: every path the agent implements)",
        "placements": "comma list of wakeup placements (default hardirq,thread,workqueue)",
        "storm_rates": "comma list of events/s (default 1000,10000,50000,100000)",
        "storm_seconds": "storm length per rate (full: 10)",
        "boots": "boots of the standard image for boot -> agent ready (full: 5)",
        "skip": "comma list of stages to skip: latency,wakeup,storm,injection,boot,cyclictest",
        "test_all": "also time `invoke test-all` (run it once before so the caches are warm)",
        "out": "output directory (default build/bench/<stamp>)",
        "report": "only re-render this result.json (no measurement)",
        "noise_floor": "compare: minimum relative threshold (default 0.10)",
    },
)
def bench(
    c: Context,
    quick: bool = False,
    compare: str = "",
    runs: int = 0,
    wakeup_runs: int = 0,
    events: int = 0,
    paths: str = "",
    placements: str = "",
    storm_rates: str = "",
    storm_seconds: str = "",
    boots: int = -1,
    skip: str = "",
    test_all: bool = False,
    out: str = "",
    report: str = "",
    noise_floor: str = "0.10",
) -> None:
    """Measure latency per path, storms, QMP and boot speed; JSON + text/HTML/PNG report."""
    from irqlab.bench.cli import main

    argv = ["bench", "--noise-floor", noise_floor]
    flags = {"--quick": quick, "--test-all": test_all}
    argv += [f for f, on in flags.items() if on]
    opts: dict[str, object] = {
        "--compare": compare,
        "--runs": runs,
        "--wakeup-runs": wakeup_runs,
        "--events": events,
        "--paths": paths,
        "--placements": placements,
        "--storm-rates": storm_rates,
        "--storm-seconds": storm_seconds,
        "--skip": skip,
        "--out": out,
        "--report": report,
    }
    for k, v in opts.items():
        if v:
            argv += [k, str(v)]
    if boots >= 0:
        argv += ["--boots", str(boots)]
    rc = main(argv)
    if rc:
        raise SystemExit(rc)
