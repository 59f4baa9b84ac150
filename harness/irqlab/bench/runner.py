"""The whole bench: what is measured, in which order, into one JSON result.

Per *run* (a fresh boot of the bench guest; ``--runs N`` gives N of them, the
spread between runs is the noise of each figure):

1. boot phases of that guest, cyclictest (if rt-tests is in the image),
2. QMP injection round trip and sustained rate,
3. latency of every notification path, for each wakeup placement
   (the module is reloaded with ``wakeup=hardirq|thread|workqueue``),
4. (last run only) storms per path at each rate, default placement.

Then ``boots`` extra boots of the *standard* test image (no rt-tests) give the
boot -> agent ready median/spread, and optionally ``invoke test-all`` is timed.
The result is written after every stage, so an interrupted bench leaves what it had;
its ``complete`` is true only once every stage ran (an interrupted one also has
``interrupted``, and says where the partial result is).
"""

from __future__ import annotations

import contextlib
import json
import shlex
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from irqlab.bench import SCHEMA, cyclic, env, host, latency, metrics, native, storm
from irqlab.bench.guest import BenchGuest, agent_paths
from irqlab.bench.host import held_snapshot
from irqlab.build import cache
from irqlab.contract.regs import QOM
from irqlab.paths import cache_dir, results_dir
from irqlab.vm.guest import GuestConfig, ensure_snapshot

__all__ = [
    "BASELINE_PATH",
    "DEFAULT_PLACEMENT",
    "LOCK_WHAT",
    "MODULE_MODES",
    "NOT_IN_PATHS",
    "NO_STORM",
    "OTHER_DRIVER",
    "PLACEMENTS",
    "STAGES",
    "STORM_RING_SIZE",
    "WANTED_PATHS",
    "Bench",
    "BenchConfig",
    "Log",
    "available_paths",
    "default_out_dir",
    "lock_path",
    "run_bench",
]

PLACEMENTS = ("hardirq", "thread", "workqueue")
DEFAULT_PLACEMENT = "hardirq"
# What the issue asks for, by the agent's path names; names the agent lacks are
# reported as missing (not silently dropped).
WANTED_PATHS = (
    "read", "nonblock", "poll", "select", "epoll-lt", "epoll-et", "sigio", "setsig",
    "count", "eventfd", "gpio-cdev", "uio", "uio-generic",
)  # fmt: skip
BASELINE_PATH = "read"
# Paths that need the driver reloaded in another mode; measured once per run at the
# default placement (the wakeup parameter does not apply to them).
MODULE_MODES: dict[str, dict[str, Any]] = {"uio": {"uio": 1}}
# Paths measured on a second guest (per run) whose device our module does not drive:
# its device properties, and the kernel driver the device is bound to instead.
OTHER_DRIVER: dict[str, dict[str, Any]] = {
    "uio-generic": {"device_props": {QOM.PROP_IRQ_MODE: "intx"}, "driver": "uio_pci_generic"},
}
# Paths the storms cannot measure, with why (none left: gpio-cdev storms run the
# generator on a GPIO line).
NO_STORM: dict[str, str] = {}
# Why a --storm-paths entry of MODULE_MODES or OTHER_DRIVER not in --paths is not stormed.
NOT_IN_PATHS = (
    "not in --paths: stormed only in the set-up of its latency series (module reloaded, or "
    "a second guest booted); add it to --paths"
)

STORM_RING_SIZE = 4096
# What BenchConfig.skip names: the stages of a run and the extra boots.
STAGES = ("latency", "native", "wakeup", "storm", "injection", "boot", "cyclictest")

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class BenchConfig:
    quick: bool = False
    events: int = 10_000  # per path and placement
    period_ns: int = 3_000_000  # between events of a latency series
    paths: tuple[str, ...] = ()  # () = every path the agent implements
    placements: tuple[str, ...] = PLACEMENTS
    wakeup_runs: int = 0  # placements other than the default only in the first N runs (0: all)
    storm_rates: tuple[int, ...] = storm.RATES
    storm_seconds: float = 10.0
    storm_paths: tuple[str, ...] = ()  # () = same as paths
    storm_ack: str = storm.STORM_ACK  # record paths' ACK mode in storms: ioctl|write|none
    # Driver ring_size (records per open file) for the storms, None: the module's (256).
    # 256 records are 25.6 ms at 10k/s: a TCG guest on a loaded host stalls the agent that
    # long now and then (tens to thousands of events lost in 10 s); 4096 rides it out.
    storm_ring_size: int | None = STORM_RING_SIZE
    injections: int = 5_000
    injection_seconds: float = 5.0
    boots: int = 5
    runs: int = 1
    # the native series of the driver's default-mode paths in this many interleaved
    # rounds (1: one path after another); see irqlab.bench.native.measure_rounds
    native_rounds: int = 5
    cyclictest_loops: int = 10_000
    rt_tests: bool = True
    test_all: bool = False
    out_dir: Path | None = None
    skip: tuple[str, ...] = ()  # of STAGES

    @classmethod
    def quick_config(cls, **kw: Any) -> BenchConfig:
        base: dict[str, Any] = {
            "quick": True,
            "events": 300,
            "period_ns": 3_000_000,
            "storm_seconds": 0.2,
            "injections": 500,
            "injection_seconds": 0.0,
            "boots": 2,
            "cyclictest_loops": 1_000,
            "native_rounds": 2,
        }
        base.update(kw)
        return cls(**base)

    def as_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["out_dir"] = str(self.out_dir) if self.out_dir else None
        return d


def available_paths(
    agent_paths: Mapping[str, object], wanted: tuple[str, ...] = WANTED_PATHS
) -> tuple[list[str], dict[str, str]]:
    """(paths the agent implements, in bench order; {missing: why}); *agent_paths*: the
    paths the agent's hello lists (:func:`irqlab.bench.guest.agent_paths`), less those
    that see no device events (``device_events`` false: an input device's paths)."""
    kinds = {
        p: k
        for p, k in agent_paths.items()
        if not (isinstance(k, Mapping) and k.get("device_events") is False)
    }
    for name in latency.UIO_PATHS:  # the agent's uio path, run the bench's ways
        if "uio" in kinds:
            kinds[name] = kinds["uio"]
    have = [p for p in wanted if p in kinds] + [p for p in kinds if p not in wanted]
    missing = {p: "the guest agent has no such path yet" for p in wanted if p not in kinds}
    return have, missing


LOCK_WHAT = "running a bench (two at once would disturb each other's figures)"


def lock_path() -> Path:
    """The lock file a running bench holds (in the build cache: every checkout on the
    machine shares it)."""
    return cache_dir() / "bench.lock"


def default_out_dir(stamp: str) -> Path:
    """build/bench/<stamp> in a checkout, <cache>/bench/<stamp> for an installed wheel
    (:func:`irqlab.paths.results_dir`)."""
    return results_dir() / "bench" / stamp


@dataclass
class Bench:
    config: BenchConfig
    log: Log = _stderr
    result: dict[str, Any] = field(default_factory=dict)
    out_dir: Path = Path()
    # the host's load average and cores, read at the start and end of the bench and of
    # each run (the report warns of a loaded machine); a test gives its own
    read_load: Callable[[], dict[str, Any]] = env.load

    def save(self) -> Path:
        self.result["metrics"] = metrics.extract(self.result)
        self.result["targets"] = metrics.targets(self.result)
        path = self.out_dir / "result.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.result, indent=1, sort_keys=False) + "\n")
        tmp.replace(path)
        return path

    def record_error(self, stage: str, e: BaseException) -> None:
        """Log *stage*'s failure and keep it in the result's ``errors`` (exit status 1);
        called in the ``except`` that caught *e* (its traceback is the current one)."""
        self.log(f"{stage}: FAILED {e!r}")
        self.result.setdefault("errors", []).append(
            {"stage": stage, "error": repr(e), "traceback": traceback.format_exc()[-4000:]}
        )

    def stage(self, name: str, fn: Callable[[], Any]) -> Any:
        """Run one stage; an exception is recorded (with traceback) and the bench goes on."""
        t0 = time.monotonic()
        self.log(f"{name} ...")
        try:
            out = fn()
        except Exception as e:
            self.record_error(name, e)
            out = None
        self.log(f"{name}: {time.monotonic() - t0:.1f} s")
        return out

    def run(self) -> Path:
        """The whole bench; refused (:class:`~irqlab.build.cache.LockHeld`, naming the
        holder's pid) while another bench runs on this machine: each would disturb the
        other's figures."""
        with cache.exclusive_lock(lock_path(), LOCK_WHAT, wait=False):
            try:
                return self._run()
            except BaseException as e:  # Ctrl-C, SIGTERM: say where the partial result is
                if self.result and not self.result.get("complete"):
                    self.result["interrupted"] = repr(e)
                    with contextlib.suppress(Exception):
                        path = self.save()
                        self.log(
                            f"stopped ({e!r}): the partial result is {path} "
                            f"(irqlab bench --report {path})"
                        )
                raise

    def _run(self) -> Path:
        c = self.config
        stamp = env.stamp()
        self.out_dir = c.out_dir or default_out_dir(stamp)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.result = {
            "schema": SCHEMA,
            "stamp": stamp,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "config": c.as_json(),
            "machine": env.machine(),
            "load": {"start": self.read_load()},
            "git": env.git_commit(),
            "paths": [],  # known once the first guest's agent says hello
            "missing_paths": {},
            "runs": [],
            "errors": [],  # a failed stage each (the bench goes on; exit status 1)
            "test_all": None,  # with --test-all: its wall time and exit status
            "complete": False,  # true once every stage ran (not interrupted)
        }
        self.save()
        t0 = time.monotonic()
        for i in range(c.runs):
            self.one_run(i, last=i == c.runs - 1)
        if "boot" not in c.skip and c.boots > 0:
            # held for the rounds: other guests' saves prune the snapshot cache, and a
            # "restore" after an eviction was a cold boot
            made = self.stage(
                "snapshot of the standard image", lambda: held_snapshot(ensure_snapshot)
            )
            with made[1] if made is not None else contextlib.nullcontext():
                starts = self.stage(
                    f"cold boot and restore x{c.boots}, interleaved (standard image)",
                    lambda: host.start_samples(
                        {
                            "boot": lambda: BenchGuest(
                                GuestConfig(name="bench-boot", snapshot=False)
                            ),
                            "restore": lambda: BenchGuest(GuestConfig(name="bench-restore")),
                        },
                        c.boots,
                    ),
                )
            self.result["boot"], self.result["restore"] = starts["boot"], starts["restore"]
            self.save()
        if c.test_all:
            self.result["test_all"] = self.stage("invoke test-all", host.test_all)
        self.result["load"]["end"] = self.read_load()
        self.result["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.result["duration_s"] = round(time.monotonic() - t0, 1)
        self.result["complete"] = True
        return self.save()

    def choose_paths(self, agent: Mapping[str, object]) -> tuple[list[str], list[str]]:
        """(paths, storm paths) of the bench: the configured ones the agent implements, or
        all it implements; recorded in the result with the missing ones."""
        c = self.config
        paths, missing = available_paths(agent)
        if c.paths:
            paths = [p for p in c.paths if p not in missing]
        self.result["paths"], self.result["missing_paths"] = paths, missing
        return paths, list(c.storm_paths) or paths

    def one_run(self, index: int, last: bool) -> None:
        c = self.config
        run: dict[str, Any] = {"run": index, "load_start": self.read_load()}
        self.result["runs"].append(run)
        extra = ("rt-tests",) if c.rt_tests else ()
        # cold boots: the run's boot phases are a figure of their own
        g = BenchGuest(GuestConfig(name=f"bench-{index}", extra_packages=extra, snapshot=False))
        try:
            self.log(f"run {index + 1}/{c.runs}: boot")
            g.start()
            run["boot"] = {k: round(v, 3) for k, v in g.phases.items()}
            paths, storm_paths = self.choose_paths(agent_paths(g))
            self._versions(g)
            self.save()
            if c.rt_tests and "cyclictest" not in c.skip:
                run["cyclictest"] = self.stage(
                    "cyclictest", lambda: cyclic.run(g, c.cyclictest_loops)
                )
            if "injection" not in c.skip:
                run["injection"] = self.stage(
                    "QMP injection",
                    lambda: host.qmp_injection(
                        g, count=c.injections, min_seconds=c.injection_seconds
                    ),
                )
                self.save()
            run["latency"] = {}
            placements = [DEFAULT_PLACEMENT] if "wakeup" in c.skip else list(c.placements)
            if c.wakeup_runs and index >= c.wakeup_runs:
                placements = [p for p in placements if p == DEFAULT_PLACEMENT]
            if "latency" in c.skip:
                placements = []
            driver_paths = [p for p in paths if p not in MODULE_MODES and p not in OTHER_DRIVER]
            run["native"] = {}
            for pl in placements:
                self.stage(f"wakeup={pl}: reload module", partial(g.switch_module, wakeup=pl))
                per: dict[str, Any] = {}
                run["latency"][pl] = per
                for p in driver_paths:
                    per[p] = self.stage(
                        f"latency {pl} {p} ({c.events} events)",
                        partial(latency.measure, g, p, events=c.events, period_ns=c.period_ns),
                    )
                    self.save()
                if pl == DEFAULT_PLACEMENT:
                    self.native_group(g, run, driver_paths)
            if DEFAULT_PLACEMENT not in placements and "native" not in c.skip:
                # native is a stage of its own: without agent series at the default
                # placement (--skip latency, --placements thread) it runs alone, on the
                # module as booted (wakeup=hardirq) unless a placement changed it
                if placements:
                    self.back_to_default(g)
                self.native_group(g, run, driver_paths)
            if last and "storm" not in c.skip:
                ring_param = {"ring_size": c.storm_ring_size} if c.storm_ring_size else {}
                self.back_to_default(g, **ring_param)
                ring_file = f"/sys/module/{g.module_name()}/parameters/ring_size"
                said = g.sh(f"cat {shlex.quote(ring_file)}").strip()
                ring: int | str = int(said) if said.isdigit() else said  # a number in JSON
                storms: dict[str, Any] = {"placement": DEFAULT_PLACEMENT, "ring_size": ring}
                storms["ring_size_default"] = not ring_param
                storms["ack"] = c.storm_ack
                storms["seconds"] = c.storm_seconds
                storms["paths"] = {}
                self.result["storm"] = storms
                storms["skipped"] = {p: NO_STORM[p] for p in storm_paths if p in NO_STORM}
                storms["skipped"].update(
                    (p, NOT_IN_PATHS)
                    for p in storm_paths
                    if (p in MODULE_MODES or p in OTHER_DRIVER) and p not in paths
                )
                for p in storm_paths:
                    if p not in NO_STORM and p not in MODULE_MODES and p not in OTHER_DRIVER:
                        self.storm_series(g, p)
            stormed = storm_paths if last and "storm" not in c.skip else []
            # a path in another set-up is measured (module reloaded, second guest booted)
            # only when a stage has something to measure on it
            series = "latency" not in c.skip or "native" not in c.skip
            for p in MODULE_MODES:
                if p in paths and (series or p in stormed):
                    self.module_mode(g, run, p, storm_paths if last else [])
            for p in OTHER_DRIVER:
                if p in paths and (series or p in stormed):
                    # nothing after needs the run's guest: stop it before the second
                    # boots (its vCPU would take time from the one measured)
                    self.log(f"run {index + 1}: stop the bench guest before {p}'s")
                    with contextlib.suppress(Exception):
                        g.close()
                    other = partial(self.other_driver, index, run, p, storm_paths if last else [])
                    self.stage(f"{p}: second guest", other)
            if self.result.get("storm"):
                st = self.result["storm"]
                st["highest_lossless"] = {
                    p: storm.highest_lossless(rs) for p, rs in st["paths"].items()
                }
        except Exception as e:
            self.record_error(f"run {index}", e)
        finally:
            run["load_end"] = self.read_load()
            with contextlib.suppress(Exception):
                g.close()
            self.save()

    def storm_series(self, g: BenchGuest, path: str, params: dict[str, Any] | None = None) -> None:
        """One path at every storm rate, into ``result["storm"]["paths"][path]``."""
        c = self.config
        rs: list[dict[str, Any]] = []
        self.result["storm"]["paths"][path] = rs
        mode = f" ({','.join(f'{k}={v}' for k, v in params.items())})" if params else ""
        for rate in c.storm_rates:
            r = self.stage(
                f"storm {path}{mode} {rate}/s x {c.storm_seconds:g} s",
                partial(
                    storm.measure, g, path, rate=rate, duration_s=c.storm_seconds, ack=c.storm_ack
                ),
            )
            if r is not None:
                if params:
                    r["module_params"] = params
                rs.append(r)
            self.save()

    def other_driver(
        self, index: int, run: dict[str, Any], path: str, storm_paths: list[str]
    ) -> None:
        """A path on a second guest whose device a kernel driver other than ours drives
        (uio_pci_generic on an INTx device): boot, bind, latency, storms, close."""
        spec = OTHER_DRIVER[path]
        g = BenchGuest(GuestConfig(name=f"bench-{index}-{path}", device_props=spec["device_props"]))
        params = {"driver": spec["driver"], **spec["device_props"]}
        try:
            self.log(f"{path}: boot a second guest ({params})")
            g.start()
            _addr, r = g.bind_uio_pci_generic()
            if r.rc != 0:
                raise RuntimeError(f"binding {spec['driver']} failed: {r.err.strip()}")
            self.set_up_path(g, run, path, params, storm_paths)
        finally:
            with contextlib.suppress(Exception):
                g.close()

    def set_up_path(
        self,
        g: BenchGuest,
        run: dict[str, Any],
        path: str,
        params: dict[str, Any],
        storm_paths: list[str],
    ) -> None:
        """Latency and (if asked) storms of a path in a special set-up described by *params*
        (recorded with the results as ``module_params``)."""
        c = self.config
        mode = ",".join(f"{k}={v}" for k, v in params.items())
        if "latency" not in c.skip:
            per = run["latency"].setdefault(DEFAULT_PLACEMENT, {})
            per[path] = self.stage(
                f"latency {path} ({mode}, {c.events} events)",
                partial(latency.measure, g, path, events=c.events, period_ns=c.period_ns),
            )
            if per[path] is not None:
                per[path]["module_params"] = params
        self.native_series(g, run, path, params)
        self.save()
        if path in storm_paths and self.result.get("storm") is not None:
            self.storm_series(g, path, params)

    def native_group(self, g: BenchGuest, run: dict[str, Any], paths: list[str]) -> None:
        """The native responder on *paths* (the driver's default mode), in
        ``native_rounds`` interleaved rounds (:func:`irqlab.bench.native.measure_rounds`),
        into ``run["native"]``; one series after another with ``native_rounds`` 1."""
        c = self.config
        if "native" in c.skip or not paths:
            return
        if c.native_rounds <= 1:
            for p in paths:
                self.native_series(g, run, p)
                self.save()
            return
        got = self.stage(
            f"native {len(paths)} paths ({c.events} events each, {c.native_rounds} "
            "interleaved rounds)",
            partial(
                native.measure_rounds,
                g,
                paths,
                events=c.events,
                period_ns=c.period_ns,
                rounds=c.native_rounds,
                on_error=self.record_error,  # a failed round: an error, exit 1
            ),
        )
        for p in paths:
            r = (got or {}).get(p)
            if r is not None:
                r["placement"] = DEFAULT_PLACEMENT
            run.setdefault("native", {})[p] = r
        self.save()

    def native_series(
        self, g: BenchGuest, run: dict[str, Any], path: str, params: dict[str, Any] | None = None
    ) -> None:
        """The native responder on *path* in one series (same boot and module mode as
        its agent series), into ``run["native"][path]``."""
        c = self.config
        if "native" in c.skip:
            return
        r = self.stage(
            f"native {path} ({c.events} events)",
            partial(native.measure, g, path, events=c.events, period_ns=c.period_ns),
        )
        if r is not None:
            r["placement"] = DEFAULT_PLACEMENT
            if params:
                r["module_params"] = params
        run.setdefault("native", {})[path] = r

    def module_mode(self, g: BenchGuest, run: dict[str, Any], path: str, storms: list[str]) -> None:
        """A path that needs the driver in another mode (UIO, ``MODULE_MODES``): latency,
        storms (if *path* is in *storms*), then back to the default mode."""
        params = MODULE_MODES[path]
        mode = ",".join(f"{k}={v}" for k, v in params.items())
        errors = len(self.result.get("errors", []))
        self.stage(f"{mode}: reload module", partial(g.switch_module, **params))
        if len(self.result.get("errors", [])) > errors:
            return
        self.set_up_path(g, run, path, params, storms)
        self.back_to_default(g)

    def back_to_default(self, g: BenchGuest, **params: Any) -> None:
        """A stage: the driver reloaded at the default placement (with *params*)."""
        self.stage(
            f"wakeup={DEFAULT_PLACEMENT}: reload module {params or ''}".rstrip(),
            partial(g.switch_module, wakeup=DEFAULT_PLACEMENT, **params),
        )

    def _versions(self, g: BenchGuest) -> None:
        if "versions" in self.result:
            return
        acc = g.accel
        assert acc is not None  # the guest started
        self.result["accel"] = {"accel": acc.accel, "reason": acc.reason, "probed": acc.probed}
        self.result["versions"] = {
            "qemu": getattr(g.qemu, "version", None),
            "qemu_binary": str(getattr(g.qemu, "binary", "")),
            "guest_kernel": g.sh("uname -r").strip(),
            "guest_kernel_build": g.sh("uname -v").strip(),
            "guest_cmdline": g.sh("cat /proc/cmdline").strip(),
            "clocksource": g.sh(
                "cat /sys/devices/system/clocksource/clocksource0/current_clocksource"
            ).strip(),
            "image": getattr(g.image, "version", None),
            "agent": g.agent.hello.get("version"),
            "smp": g.config.smp,
        }


def run_bench(config: BenchConfig, log: Log = _stderr) -> Path:
    """Run the bench; return the path of result.json (plots and HTML: :mod:`.report`)."""
    return Bench(config, log).run()
