"""Measuring peer tools: irqlab against labgrid on the same QEMU, image and device.

``irqlab bench-peers`` times the whole process "start a guest, run one command
(:data:`~irqlab.bench.host.WHOLE_COMMAND`) over SSH, stop" in interleaved rounds:

* ``labgrid``: labgrid (:data:`LABGRID_VERSION`, QEMUDriver + SSHDriver) booting
  *our* QEMU build with our vmlinux, initramfs, command line, machine arguments and
  device, waiting for the image's ready marker on the console, then running the
  command through its SSHDriver.  labgrid lives in a throwaway venv
  (``build/peer-venv``, never a dependency of irqlab) and runs as a subprocess
  there (:data:`LABGRID_SCRIPT`).
* ``restore``: ``Guest(GuestConfig(name=...))`` from the ready-state snapshot
  (made once before the rounds, not timed, and held through them: other guests'
  pruning of the snapshot cache leaves it alone, :func:`held_snapshot`).
* ``cold``: ``Guest(GuestConfig(snapshot=False))``, a full boot with the module
  loaded and the agent started.

Each is a process of its own (irqlab's in this interpreter's venv,
:data:`IRQLAB_SCRIPT`), timed here from spawning the interpreter to its exit, so
every row pays an interpreter start and its imports alike; each script's own time
after its imports is the ``inner`` row beside it.

If labgrid cannot be installed or does not boot the image, the result says which
step failed with its output's tail, and the comparison is restore against our
own cold boot only.

The pure parts (:func:`labgrid_env`, :func:`summarize`, :func:`render_table`)
are unit-tested; the rest needs QEMU, the image and (for labgrid) PyPI.
"""

from __future__ import annotations

import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from irqlab.bench import env, stats
from irqlab.bench.host import WHOLE_COMMAND, held_snapshot
from irqlab.errors import IrqlabError
from irqlab.paths import results_dir

SCHEMA = "irqlab-bench-peers/2"
DEFAULT_ROUNDS = 7
LABGRID_VERSION = "26.0.1"
# labgrid and everything it pulls in, pinned (the set pip resolved for 26.0.1 on
# 2026-12-06): the throwaway venv is reproducible.
LABGRID_REQUIREMENTS: tuple[str, ...] = (
    f"labgrid=={LABGRID_VERSION}",
    "attrs==26.1.0",
    "certifi==2026.10.19.post1",
    "charset-normalizer==3.5.3",
    "exceptiongroup==1.3.2",
    "grpcio==1.85.3",
    "grpcio-reflection==1.85.1",
    "idna==3.21",
    "iniconfig==2.3.1",
    "Jinja2==3.1.6",
    "MarkupSafe==3.0.4",
    "packaging==26.4",
    "pexpect==4.9.0",
    "pluggy==1.7.0",
    "protobuf==7.36.2",
    "ptyprocess==0.7.0",
    "Pygments==2.21.0",
    "pyserial-labgrid==3.5.0.2",
    "pytest==9.2.0",
    "pyudev==0.24.5",
    "pyusb==1.3.1",
    "PyYAML==6.0.4",
    "requests==2.34.2",
    "typing_extensions==4.16.0",
    "urllib3==2.8.0",
    "xmodem==0.5.0",
)
KINDS = ("labgrid", "restore", "cold")
INNER = "_inner"  # a kind's row without its interpreter start and imports
LABELS = {
    "labgrid": f"labgrid {LABGRID_VERSION} QEMUDriver + SSHDriver, our image",
    "restore": "irqlab Guest(), restored from the snapshot",
    "cold": "irqlab Guest(snapshot=False), cold boot",
}
INNER_LABEL = "  the same, without interpreter start and imports"
# the like-for-like ratios: whole processes, then the scripts' own times
RATIOS = ("labgrid", "labgrid" + INNER, "cold")
RESULT_PREFIX = "IRQLAB-PEER-RESULT "
TAIL_LINES = 25

# Runs in the peer venv: argv = env.yaml, ready marker, command, timeout (s).
# Phases go to stderr as they happen (a failure's tail shows how far it got); the
# result is one JSON line on stdout.  time.monotonic() is CLOCK_MONOTONIC, the
# same clock in every process, so the host can place "t0" on its own time line.
LABGRID_SCRIPT = f'''\
import time

T0 = time.monotonic()
import json
import sys

import labgrid
from labgrid import Environment

T_IMPORT = time.monotonic()


def main():
    env_file, marker, command, timeout = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    phases = {{}}

    def mark(name):
        phases[name] = round(time.monotonic() - T_IMPORT, 3)
        print(f"phase {{name}} {{phases[name]}}", file=sys.stderr, flush=True)

    target = Environment(env_file).get_target("main")
    qemu = target.get_driver("QEMUDriver")
    mark("activated")
    try:
        qemu.on()
        mark("qemu_on")
        qemu.expect(marker, timeout=timeout)
        mark("console_ready")
        ssh = target.get_driver("SSHDriver")
        mark("ssh")
        out, err, rc = ssh.run(command, timeout=timeout)
        mark("command")
    finally:
        target.deactivate_all_drivers()
        mark("stopped")
    if rc != 0:
        raise SystemExit(f"command exit status {{rc}}: {{out}} {{err}}")
    print("{RESULT_PREFIX}" + json.dumps({{
        "t0_monotonic": T0,
        "import_s": round(T_IMPORT - T0, 3),
        "phases": phases,
        "stdout": out,
        "labgrid": getattr(labgrid, "__version__", None),
    }}), flush=True)


main()
'''

# Runs in irqlab's venv: argv = guest name, "1" to restore from the snapshot or "0"
# to boot cold, command.  The same shape as LABGRID_SCRIPT: what a user's script
# imports, then start, the command, close.
IRQLAB_SCRIPT = f'''\
import time

T0 = time.monotonic()
import json
import sys

from irqlab.vm.guest import Guest, GuestConfig

T_IMPORT = time.monotonic()


def main():
    name, snapshot, command = sys.argv[1], sys.argv[2] == "1", sys.argv[3]
    g = Guest(GuestConfig(name=name, snapshot=snapshot))
    try:
        g.start()
        started = time.monotonic()
        out = g.sh(command)
        done = time.monotonic()
    finally:
        g.close()
    closed = time.monotonic()
    print("{RESULT_PREFIX}" + json.dumps({{
        "t0_monotonic": T0,
        "import_s": round(T_IMPORT - T0, 3),
        "times": {{
            "started": started - T_IMPORT,
            "done": done - T_IMPORT,
            "closed": closed - T_IMPORT,
        }},
        "phases": g.phases,
        "restored": g.restored,
        "stdout": out,
    }}), flush=True)


main()
'''


# ---------------------------------------------------------------------------
# pure parts


def labgrid_env(
    argv: Sequence[str],
    *,
    qemu_binary: Path,
    datadir: Path | None,
    ssh_port: int,
    ssh_user: str,
    client_key: Path,
) -> dict[str, Any]:
    """A labgrid environment (as a dict: :func:`env_yaml` writes it) whose QEMUDriver
    starts *qemu_binary* with *argv*, the arguments irqlab's ``Machine`` gives QEMU
    after its own plumbing (QMP, console): machine, memory, CPU, display, ``-bios``,
    ``-kernel`` and ``-append`` become the driver's options, every other argument
    goes to ``extra_args`` unchanged.  A relative ``-bios`` is found in *datadir*
    (QEMU's ``-L``), as QEMU would.  The SSHDriver reaches the guest's port 22,
    forwarded by *argv*'s ``hostfwd`` to 127.0.0.1:*ssh_port*."""
    options = {"-machine": "machine", "-m": "memory", "-cpu": "cpu", "-append": "boot_args"}
    images = {"-kernel": "kernel", "-bios": "bios"}
    driver: dict[str, Any] = {"qemu_bin": "qemu", "display": "fb-headless"}
    image_paths: dict[str, str] = {}
    extra: list[str] = []
    if datadir is not None:
        extra += ["-L", str(datadir)]
    it = iter(argv)
    for arg in it:
        if arg in options or arg in images or arg == "-display":
            try:
                value = next(it)
            except StopIteration:
                raise ValueError(f"QEMU option {arg} without a value") from None
            if arg == "-display":
                if value != "none":
                    raise ValueError(f"-display {value}: only 'none' maps to labgrid")
            elif arg in options:
                if options[arg] in driver:
                    raise ValueError(f"QEMU option {arg} given twice")
                driver[options[arg]] = value
            else:
                path = Path(value)
                if not path.is_absolute() and datadir is not None:
                    path = datadir / path
                image_paths[images[arg]] = str(path)
                driver[images[arg]] = images[arg]
        else:
            extra.append(arg)
    missing = [k for k in ("machine", "memory", "cpu") if k not in driver]
    if missing:
        raise ValueError(f"QEMU arguments lack {', '.join(missing)} (labgrid needs them)")
    if f"hostfwd=tcp:127.0.0.1:{ssh_port}-:22" not in " ".join(extra):
        raise ValueError(f"no hostfwd of 127.0.0.1:{ssh_port} to the guest's port 22")
    driver["extra_args"] = shlex.join(extra)
    return {
        "targets": {
            "main": {
                "resources": {
                    "NetworkService": {
                        "address": "127.0.0.1",
                        "port": ssh_port,
                        "username": ssh_user,
                    }
                },
                "drivers": {
                    "QEMUDriver": driver,
                    "SSHDriver": {"keyfile": str(client_key)},
                },
            }
        },
        "tools": {"qemu": str(qemu_binary)},
        "images": image_paths,
    }


def env_yaml(environment: Mapping[str, Any]) -> str:
    """The environment as YAML text (JSON is YAML: no YAML library needed here)."""
    return json.dumps(environment, indent=2) + "\n"


def machine_argv(image: Any, *, accel: str, ssh_port: int, device: str) -> list[str]:
    """What :class:`irqlab.vm.guest.Guest` passes QEMU besides its QMP and console
    plumbing: ``-no-user-config``, ``-accel``, :data:`MACHINE_ARGS`, the CPU,
    one vCPU, the image's boot and network arguments and *device* (``-device``)."""
    from irqlab.build.boot import MACHINE_ARGS, cpu_args

    return [
        "-no-user-config",
        "-accel",
        accel,
        *MACHINE_ARGS,
        *cpu_args(accel),
        "-smp",
        "1",
        *image.qemu_args(ssh_port),
        "-device",
        device,
    ]


def tail(text: str, lines: int = TAIL_LINES) -> list[str]:
    return text.rstrip().splitlines()[-lines:]


def summarize(samples: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, Any]:
    """Per kind the spread of ``whole`` (s), of ``inner`` (its time after interpreter
    start and imports, row ``<kind>_inner``) and the median of each of the ``parts``.
    Ratios of medians against the restore, like for like (``labgrid/restore``,
    ``labgrid_inner/restore_inner``, ``cold/restore``) and, since the rounds are
    interleaved, the range of the same ratio within each round."""
    rows: dict[str, Any] = {}
    for kind, ss in samples.items():
        if ss:
            rows[kind] = stats.spread(s["whole"] for s in ss)
            inner = [s["inner"] for s in ss if s.get("inner") is not None]
            if inner:
                rows[kind + INNER] = stats.spread(inner)
    parts: dict[str, dict[str, float]] = {}
    for kind, ss in samples.items():
        names = list(dict.fromkeys(k for s in ss for k in s.get("parts", {})))
        parts[kind] = {
            n: statistics.median(s["parts"][n] for s in ss if n in s.get("parts", {}))
            for n in names
        }
    ratios: dict[str, Any] = {}
    for kind in RATIOS:
        base_kind = "restore" + INNER if kind.endswith(INNER) else "restore"
        base = rows.get(base_kind)
        if kind in rows and base is not None:
            per_round = _paired_ratios(samples, kind)
            ratios[f"{kind}/{base_kind}"] = {
                "of_medians": stats.ratio(rows[kind]["median"], base["median"]),
                "per_round_min": min(per_round) if per_round else None,
                "per_round_max": max(per_round) if per_round else None,
                "per_round_median": statistics.median(per_round) if per_round else None,
            }
    return {"rows": rows, "ratios": ratios, "parts": {k: v for k, v in parts.items() if v}}


def _paired_ratios(samples: Mapping[str, Sequence[Mapping[str, Any]]], kind: str) -> list[float]:
    """*kind*'s time over the restore's, like for like, in each round."""
    field_ = "inner" if kind.endswith(INNER) else "whole"
    source = kind.removesuffix(INNER)
    base = {s["round"]: s.get(field_) for s in samples.get("restore", ()) if "round" in s}
    out = []
    for s in samples.get(source, ()):
        r = s.get("round")
        v = s.get(field_)
        if r in base and v is not None and base[r]:
            out.append(v / base[r])
    return out


def _secs(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f} s"


def _times(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}x"


def render_table(result: Mapping[str, Any]) -> str:
    """The human table of a result (see :func:`run_peers`)."""
    summary = result["summary"]
    rows, ratios = summary["rows"], summary["ratios"]
    host = result["host"]
    rounds = result["rounds"]
    lines = [
        f"whole process: start a guest, run `{result['command']}` over SSH, stop "
        f"({rounds} interleaved rounds, {result['accel'].upper()})",
        "",
        f"{'':58} {'median':>9} {'range':>19}",
    ]
    for kind in KINDS:
        for row, label in ((kind, LABELS[kind]), (kind + INNER, INNER_LABEL)):
            r = rows.get(row)
            if r is not None:
                rng = f"{r['min']:.2f}-{r['max']:.2f} s"
                lines.append(f"{label:58} {_secs(r['median']):>9} {rng:>19}")
    lines.append("")
    for key, r in ratios.items():
        lines.append(
            f"{key:28} {_times(r['of_medians']):>7} (ratio of medians; per round "
            f"{_times(r['per_round_min'])}-{_times(r['per_round_max'])})"
        )
    if summary.get("parts"):
        lines += ["", "medians of the parts (s):"]
        for kind, ps in summary["parts"].items():
            lines.append(f"  {kind:8} " + ", ".join(f"{k} {v:.2f}" for k, v in ps.items()))
    peer = result["labgrid"]
    if peer["status"] != "ok":
        lines += [
            "",
            f"labgrid: FAILED at step '{peer['failed_step']}': {peer.get('error', '')}".rstrip(),
            "  no comparison with labgrid: restore is compared with our own cold boot only",
        ]
        lines += [f"  | {line}" for line in peer.get("tail", [])]
    restored = [s.get("restored") for s in result["samples"].get("restore", [])]
    if restored and not all(restored):
        lines.append(f"note: {restored.count(False)} restore(s) fell back to a cold boot")
    load = result["load"]
    lines += [
        "",
        f"host: {host['cpu_model']}, {host['cores']} cores, accel {result['accel']}",
        f"load average (1/5/15 min): before {_load(load['before'])}, after "
        f"{_load(load['after'])}; 1-min per round {load['per_round_1min']}",
    ]
    if loaded := load_warning(result):
        lines += ["", loaded]
    return "\n".join(lines) + "\n"


def load_warning(result: Mapping[str, Any]) -> str | None:
    """The bench's ``WARNING: a loaded machine`` line (:func:`irqlab.bench.report.
    readings_warning`: a 1-min load average above 0.5 per core) of the readings before,
    after each round and after, else None."""
    from irqlab.bench.report import readings_warning

    load, cores = result["load"], result["host"].get("cores")
    readings = [("before", load["before"]["1min"], load["before"].get("cores") or cores)]
    readings += [
        (f"round {i}", one, cores) for i, one in enumerate(load["per_round_1min"], start=1)
    ]
    readings.append(("after", load["after"]["1min"], load["after"].get("cores") or cores))
    return readings_warning(readings)


def _load(la: Mapping[str, float]) -> str:
    return f"{la['1min']}/{la['5min']}/{la['15min']}"


# ---------------------------------------------------------------------------
# the peer venv and the runs


def _free_port() -> int:
    """A free port for labgrid's fixed hostfwd (labgrid cannot read QEMU's choice back;
    irqlab's own guests let QEMU bind port 0 instead)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class StepFailure(IrqlabError, RuntimeError):
    step: str
    error: str
    output: str = ""

    def __str__(self) -> str:
        return f"{self.step}: {self.error}"


def peer_venv_dir() -> Path:
    return results_dir() / "peer-venv"


def ensure_peer_venv(venv: Path | None = None, *, timeout: float = 900.0) -> Path:
    """The Python of a venv with :data:`LABGRID_REQUIREMENTS` (created, or reused when
    it already has labgrid :data:`LABGRID_VERSION`); :class:`StepFailure` naming the
    step (venv, pip install, import) with the output."""
    venv = venv or peer_venv_dir()
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import importlib.metadata as m; print(m.version('labgrid'))"]

    def run(step: str, argv: list[str]) -> str:
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise StepFailure(step, str(e)) from e
        if r.returncode != 0:
            raise StepFailure(step, f"exit status {r.returncode}", r.stdout + r.stderr)
        return r.stdout

    if python.exists():
        with_version = subprocess.run(probe, capture_output=True, text=True, timeout=60)
        if with_version.returncode == 0 and with_version.stdout.strip() == LABGRID_VERSION:
            return python
    run("create the peer venv", [sys.executable, "-m", "venv", "--clear", str(venv)])
    run(
        f"pip install labgrid=={LABGRID_VERSION}",
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         *LABGRID_REQUIREMENTS],
    )  # fmt: skip
    version = run("import labgrid in the peer venv", probe).strip()
    if version != LABGRID_VERSION:
        raise StepFailure("check labgrid's version", f"{version} != {LABGRID_VERSION}")
    return python


def write_script(work: Path, name: str, text: str) -> Path:
    """*text* as the script *name* in *work* (made if missing)."""
    work.mkdir(parents=True, exist_ok=True)
    path = work / name
    path.write_text(text)
    return path


@dataclass
class LabgridRunner:
    """One labgrid whole-process run per :meth:`__call__`, in the peer venv."""

    python: Path
    work: Path
    image: Any
    qemu: Any
    accel: str
    device: str
    timeout: float = 180.0
    script: Path = field(init=False)

    def __post_init__(self) -> None:
        self.script = write_script(self.work, "labgrid_whole.py", LABGRID_SCRIPT)

    def write_env(self, index: int) -> Path:
        port = _free_port()
        argv = machine_argv(self.image, accel=self.accel, ssh_port=port, device=self.device)
        environment = labgrid_env(
            argv,
            qemu_binary=self.qemu.binary,
            datadir=self.qemu.datadir,
            ssh_port=port,
            ssh_user=self.image.ssh_user,
            client_key=self.image.client_key,
        )
        path = self.work / f"labgrid-env-{index}.yaml"
        path.write_text(env_yaml(environment))
        return path

    def __call__(self, index: int) -> dict[str, Any]:
        env_file = self.write_env(index)  # before the clock: configuration, not work
        step = f"labgrid run {index}: boot, ready marker, SSH command, stop"
        run = run_script(
            [self.python, self.script, env_file, self.image.ready_marker, WHOLE_COMMAND,
             str(self.timeout)],
            self.timeout + 30,
            step,
        )  # fmt: skip
        result = run.result
        if [line.strip() for line in result["stdout"]] != ["1"]:
            raise StepFailure(f"labgrid run {index}", f"command printed {result['stdout']!r}")
        phases = result["phases"]
        return {
            "whole": round(run.whole, 3),
            "inner": phases["stopped"],
            "phases": phases,
            "parts": _rounded(
                {
                    "python_and_imports": run.python_and_imports,
                    "to_console_ready": phases["console_ready"],
                    "ssh_connect": phases["ssh"] - phases["console_ready"],
                    "command": phases["command"] - phases["ssh"],
                    "stop": phases["stopped"] - phases["command"],
                    "exit": run.whole - run.python_and_imports - phases["stopped"],
                }
            ),
        }


@dataclass(frozen=True)
class ScriptRun:
    """A peer script's run: its wall time from spawn to exit (s), the time from the
    spawn to the end of its imports (s), and its result line's JSON."""

    whole: float
    python_and_imports: float
    result: dict[str, Any]


def script_env() -> dict[str, str]:
    """The environment of every timed script: ours without ``PYTHONDONTWRITEBYTECODE``.
    pip compiled labgrid's modules when it installed them, while irqlab is installed
    editable: with that variable set, its modules would be compiled from source in every
    run (about 50 ms), a cost no user with the usual bytecode cache pays."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def run_script(argv: Sequence[object], timeout: float, step: str) -> ScriptRun:
    """Run one whole-process script (:data:`LABGRID_SCRIPT`, :data:`IRQLAB_SCRIPT`)
    in :func:`script_env`, timed from the spawn to its exit; :class:`StepFailure`
    (*step*, with its output) when it fails, does not stop within *timeout* s or
    prints no result line."""
    from irqlab.vm import proc

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.monotonic()
        child = proc.spawn([str(a) for a in argv], stdout=out, stderr=err, env=script_env())
        rc = proc.wait_or_stop(child, timeout)
        whole = time.monotonic() - t0
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    result = next(
        (json.loads(line[len(RESULT_PREFIX) :]) for line in stdout.splitlines()
         if line.startswith(RESULT_PREFIX)),
        None,
    )  # fmt: skip
    if rc != 0 or result is None:
        why = (
            "did not stop" if rc is None
            else f"exit status {rc}" if rc != 0
            else f"printed no {RESULT_PREFIX.strip()} line"
        )  # fmt: skip
        raise StepFailure(step, why, stdout + stderr)
    # CLOCK_MONOTONIC is one clock for every process: the script's start on ours
    spawn = result["t0_monotonic"] - t0
    return ScriptRun(whole, spawn + result["import_s"], result)


def _rounded(d: Mapping[str, float]) -> dict[str, float]:
    return {k: round(v, 3) for k, v in d.items()}


@dataclass
class IrqlabRunner:
    """One irqlab whole-process run per :meth:`__call__`: :data:`IRQLAB_SCRIPT` in a
    process of its own, with this interpreter (irqlab's venv)."""

    work: Path
    timeout: float = 180.0
    script: Path = field(init=False)

    def __post_init__(self) -> None:
        self.script = write_script(self.work, "irqlab_whole.py", IRQLAB_SCRIPT)

    def __call__(self, name: str, *, snapshot: bool) -> dict[str, Any]:
        kind = "restore" if snapshot else "cold boot"
        run = run_script(
            [sys.executable, self.script, name, "1" if snapshot else "0", WHOLE_COMMAND],
            self.timeout,
            f"irqlab {kind} {name}: start, SSH command, stop",
        )
        result = run.result
        if result["stdout"].strip() != "1":
            raise StepFailure(f"irqlab {kind} {name}", f"command printed {result['stdout']!r}")
        times, phases = result["times"], result["phases"]
        ready = phases["agent_ready"]
        return {
            "whole": round(run.whole, 3),
            "inner": round(times["closed"], 3),
            "restored": result["restored"],
            "phases": _rounded(phases),
            "parts": _rounded(
                {
                    "python_and_imports": run.python_and_imports,
                    # finding QEMU and the image, the accelerator, Guest's set-up
                    "before_qemu": times["started"] - ready,
                    "to_agent_ready": ready,
                    "command": times["done"] - times["started"],
                    "stop": times["closed"] - times["done"],
                    "exit": run.whole - run.python_and_imports - times["closed"],
                }
            ),
        }


def run_peers(
    rounds: int = DEFAULT_ROUNDS,
    out_dir: Path | None = None,
    *,
    progress: Callable[[str], None] = print,
) -> Path:
    """Interleaved rounds of labgrid, restore and cold boot; writes ``result.json``
    and ``table.txt`` to *out_dir* (default ``build/bench-peers/<stamp>``) and
    returns the JSON's path.  Refused (:class:`~irqlab.build.cache.LockHeld`) while a
    bench runs on this machine, as :meth:`irqlab.bench.runner.Bench.run` is: it holds
    the same lock."""
    from irqlab.bench.runner import LOCK_WHAT, lock_path
    from irqlab.build import cache

    with cache.exclusive_lock(lock_path(), LOCK_WHAT, wait=False):
        return _run_peers(rounds, out_dir, progress)


def _run_peers(rounds: int, out_dir: Path | None, progress: Callable[[str], None]) -> Path:
    from irqlab.vm.guest import Guest, GuestConfig, device_arg, ensure_snapshot

    if rounds < 1:
        raise ValueError("rounds must be >= 1")
    out_dir = out_dir or results_dir() / "bench-peers" / env.stamp()
    out_dir.mkdir(parents=True, exist_ok=True)
    load_before = env.load()
    prepared = Guest(GuestConfig(name="peer-prepare")).prepare()
    assert prepared.accel and prepared.qemu and prepared.image  # prepare() found them
    accel = prepared.accel.accel
    peer: dict[str, Any] = {"tool": "labgrid", "version": LABGRID_VERSION, "status": "ok"}
    runner: LabgridRunner | None = None
    try:
        progress(f"peer venv: {peer_venv_dir()} (labgrid=={LABGRID_VERSION})")
        python = ensure_peer_venv()
        cfg = GuestConfig()
        runner = LabgridRunner(
            python=python,
            work=out_dir / "labgrid",
            image=prepared.image,
            qemu=prepared.qemu,
            accel=accel,
            device=device_arg(cfg.device_id, cfg.device_props),
        )
    except StepFailure as e:
        _record_failure(peer, e, progress)
    irqlab_run = IrqlabRunner(out_dir / "irqlab")
    makers: dict[str, Callable[[int], dict[str, Any]]] = {
        "restore": lambda i: irqlab_run(f"peer-restore-{i}", snapshot=True),
        "cold": lambda i: irqlab_run(f"peer-cold-{i}", snapshot=False),
    }
    samples: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    per_round_load: list[float] = []
    progress("snapshot: making sure the ready-state snapshot exists (not timed)")
    snapshot_dir, held = held_snapshot(lambda: ensure_snapshot(GuestConfig(name="peer-snapshot")))
    with held:  # the restore rows restore, whatever other guests save meanwhile
        for i in range(1, rounds + 1):
            for kind in KINDS:
                if kind == "labgrid":
                    if runner is None:
                        continue
                    try:
                        s = runner(i)
                    except StepFailure as e:
                        _record_failure(peer, e, progress)
                        runner = None
                        continue
                else:
                    s = makers[kind](i)
                s["round"] = i
                samples[kind].append(s)
                progress(f"round {i}/{rounds} {kind:8} {s['whole']:.2f} s")
            per_round_load.append(env.load()["1min"])
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "command": WHOLE_COMMAND,
        "rounds": rounds,
        "accel": accel,
        "host": env.machine(),
        "git": env.git_commit(),
        "load": {"before": load_before, "after": env.load(), "per_round_1min": per_round_load},
        "labgrid": peer,
        "qemu": str(prepared.qemu.binary),
        "image": prepared.image.version,
        "snapshot": str(snapshot_dir),
        "samples": samples,
        "summary": summarize({k: v for k, v in samples.items() if v}),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    path = out_dir / "result.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / "table.txt").write_text(render_table(result))
    return path


def _record_failure(peer: dict[str, Any], e: StepFailure, progress: Callable[[str], None]) -> None:
    peer.update(status="failed", failed_step=e.step, error=e.error, tail=tail(e.output))
    progress(f"labgrid FAILED at step '{e.step}': {e.error}")
    for line in peer["tail"]:
        progress(f"  | {line}")
    progress("continuing without labgrid: restore is compared with our own cold boot only")
