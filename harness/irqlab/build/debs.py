"""Debian packages as build inputs: query apt, resolve dependencies, download, extract.

Nothing is installed: ``apt-get download`` fetches exact versions into a pool
in the cache dir and ``dpkg-deb -x`` unpacks them into per-package trees
(cached too).  Dependency resolution is deliberately simple (first available
alternative, version constraints ignored: apt's candidates of one release are
consistent) and the packages a recipe does not want are named explicitly.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from pathlib import Path

from irqlab import cancel, notice
from irqlab.build import hostfacts
from irqlab.build.arch import host_deb_arch
from irqlab.build.cache import exclusive_lock, lock_file
from irqlab.build.steps import BuildError, StepLog
from irqlab.errors import IrqlabError
from irqlab.paths import cache_dir, log_dir

__all__ = [
    "APT_ENV",
    "APT_LISTS",
    "APT_STATE_FILES",
    "AptAnswer",
    "AptError",
    "AptUnanswered",
    "Lookup",
    "Package",
    "Relations",
    "apt_answer",
    "apt_answers_only",
    "apt_lists_dir",
    "apt_show",
    "apt_state_files",
    "apt_state_key",
    "closure",
    "download",
    "ensure_apt_packages",
    "ensure_host_packages",
    "extract_into",
    "extracted",
    "foreign_lookup",
    "install_refusal",
    "missing_packages",
    "output_of",
    "packages_from_show",
    "parse_relations",
    "parse_stanzas",
    "pool_dir",
]

Relations = tuple[tuple[str, ...], ...]
"""A Depends field: a conjunction of alternative groups ("a | b, c" -> (("a","b"),("c",)))."""


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    arch: str
    depends: Relations = ()
    provides: tuple[str, ...] = field(default=())
    size: int = 0  # the .deb's bytes (apt's Size:), 0 if unknown

    @property
    def deb_name(self) -> str:
        """The file name ``apt-get download`` gives this package."""
        return f"{self.name}_{self.version.replace(':', '%3a')}_{self.arch}.deb"

    @property
    def spec(self) -> str:
        return f"{self.name}={self.version}"


class AptError(IrqlabError, RuntimeError):
    pass


class AptUnanswered(AptError):
    """apt could not be asked: it has no package lists, or apt-cache is missing or fails
    (not: apt answered that it has no such package)."""


def _relation_name(atom: str) -> str:
    name = atom.strip().split("(")[0].split("[")[0].split("<")[0].strip()
    return name.split(":")[0]  # drop :any / :amd64 qualifiers


def parse_relations(text: str) -> Relations:
    """Parse a Depends/Pre-Depends field, keeping names only."""
    groups: list[tuple[str, ...]] = []
    for group in text.split(","):
        alts = tuple(n for n in (_relation_name(a) for a in group.split("|")) if n)
        if alts:
            groups.append(alts)
    return tuple(groups)


def parse_stanzas(text: str) -> list[dict[str, str]]:
    """Split deb822 text (``apt-cache show`` output) into field dicts."""
    stanzas: list[dict[str, str]] = []
    cur: dict[str, str] = {}
    key = ""
    for line in text.splitlines():
        if not line.strip():
            if cur:
                stanzas.append(cur)
            cur, key = {}, ""
        elif line[0] in " \t":
            if key:
                cur[key] += "\n" + line.strip()
        else:
            k, _, v = line.partition(":")
            key = k.strip()
            cur[key] = v.strip()
    if cur:
        stanzas.append(cur)
    return stanzas


def packages_from_show(text: str) -> dict[str, Package]:
    out: dict[str, Package] = {}
    for st in parse_stanzas(text):
        if "Package" not in st or "Version" not in st:
            continue
        deps = parse_relations(st.get("Pre-Depends", "")) + parse_relations(st.get("Depends", ""))
        provides = tuple(n for (n, *_rest) in parse_relations(st.get("Provides", "")))
        size = int(st["Size"]) if st.get("Size", "").isdigit() else 0
        pkg = Package(
            st["Package"], st["Version"], st.get("Architecture", "all"), deps, provides, size
        )
        out.setdefault(pkg.name, pkg)  # first stanza = candidate with --no-all-versions
    return out


Lookup = Callable[[Sequence[str]], Mapping[str, Package]]
"""Package names -> candidate packages; names apt does not know are simply absent."""


APT_STATE_FILES = (
    Path("/var/lib/apt/lists"),
    Path("/etc/apt/preferences"),
    Path("/etc/apt/preferences.d"),
    Path("/var/lib/dpkg/status"),
)


# apt's own names of the places APT_STATE_FILES are, asked when APT_CONFIG moves them
_APT_CONFIG_KEYS = (
    "Dir::State::lists/d",
    "Dir::Etc::preferences/f",
    "Dir::Etc::preferencesparts/d",
    "Dir::State::status/f",
)


def apt_state_files() -> tuple[Path, ...]:
    """What :func:`apt_state_key` looks at: :data:`APT_STATE_FILES`, or where
    ``APT_CONFIG`` (a configuration file of the caller's: another lists directory, another
    status file) has apt look instead, and that file itself.  Without ``APT_CONFIG`` no
    process is started; ``apt-config`` failing falls back to :data:`APT_STATE_FILES`."""
    config = os.environ.get("APT_CONFIG")
    if not config:
        return APT_STATE_FILES
    names = [f"V{i}" for i in range(len(_APT_CONFIG_KEYS))]
    pairs = zip(names, _APT_CONFIG_KEYS, strict=True)
    argv = ["apt-config", "shell", *(x for pair in pairs for x in pair)]
    said = dict.fromkeys(names, "")
    for line in output_of(argv).splitlines():
        name, eq, value = line.partition("=")
        if eq and name in said:
            said[name] = value.strip().strip("'")
    found = tuple(Path(said[n].rstrip("/")) for n in names if said[n])
    return (Path(config), *(found if len(found) == len(names) else APT_STATE_FILES))


def apt_lists_dir() -> Path:
    """Where apt keeps its package lists: :data:`APT_LISTS`, or where ``APT_CONFIG``
    moves them."""
    return apt_state_files()[1] if os.environ.get("APT_CONFIG") else APT_LISTS


def output_of(argv: Sequence[str]) -> str:
    """*argv*'s stdout in the C locale, whatever its status ('' if it cannot run)."""
    try:
        r = cancel.run_text(
            argv, doing=f"running {' '.join(argv[:3])}", env={**os.environ, "LC_ALL": "C"}
        )
    except OSError:
        return ""
    return r.stdout


def apt_state_key(roots: Sequence[Path] | None = None) -> str:
    """Changes whenever apt's candidates may change (apt-get update, pinning, installs,
    another ``APT_CONFIG``)."""
    h = hashlib.sha256()
    for root in apt_state_files() if roots is None else roots:
        files = sorted(root.rglob("*")) if root.is_dir() else [root]
        for f in files:
            try:
                st = f.stat()
            except OSError:
                continue
            if f.is_file() and "partial" not in f.parts and f.name != "lock":
                h.update(f"{f}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _query_apt(names: Sequence[str]) -> dict[str, Package]:
    plain = [n for n in names if ":" not in n]
    qualified = [n for n in names if ":" in n]
    out = _show(plain) if plain else {}
    if qualified:
        out.update(_show(qualified, qualified=True))
    return out


# What apt-cache says of names it has no package for: it ran and answered, none of
# them is offered (apt 2.6 skips an unknown name beside known ones without a word, and
# fails with "E: No packages found" when it knows none; others say "Unable to locate
# package NAME" first).  Any other error is apt failing, not an answer.
_NONE_FOUND = re.compile(r"No packages found|Unable to locate package")


def _none_found(stderr: str) -> bool:
    """Whether apt-cache's *stderr* (a failed ``show``) says only that it has none of
    the names: every error line one of :data:`_NONE_FOUND`'s."""
    errors = [ln for ln in stderr.splitlines() if ln.startswith("E:")]
    return bool(errors) and all(_NONE_FOUND.search(ln) for ln in errors)


def _show(names: Sequence[str], *, qualified: bool = False) -> dict[str, Package]:
    """apt-cache's candidates of *names* (none for a name apt does not offer); raises
    :class:`AptError` when apt-cache is missing or fails otherwise than finding none."""
    try:
        r = cancel.run_text(
            ["apt-cache", "show", "--no-all-versions", *names],
            doing=f"asking apt for {_few(names)} (apt-cache show)",
            env={**os.environ, "LC_ALL": "C"},
        )
    except FileNotFoundError as e:
        raise AptUnanswered("apt-cache not found: the guest image recipe needs Debian's apt") from e
    pkgs = packages_from_show(r.stdout)
    if not pkgs and r.returncode != 0 and not _none_found(r.stderr):
        raise AptUnanswered(f"apt-cache show {' '.join(names)} failed: {r.stderr.strip()}")
    if qualified:  # answered as "name:arch" (apt knows none for an Architecture: all one)
        return {f"{p.name}:{p.arch}": p for p in pkgs.values()}
    return pkgs


def _few(names: Sequence[str], most: int = 3) -> str:
    """*names* for a message: the first *most*, and how many more."""
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more


def _to_json(p: Package | None) -> object:
    if p is None:
        return None
    deps = [list(g) for g in p.depends]
    return {"v": p.version, "a": p.arch, "d": deps, "p": list(p.provides), "s": p.size}


def _from_json(name: str, obj: object) -> Package | None:
    if not isinstance(obj, dict):
        return None
    deps = tuple(tuple(str(a) for a in g) for g in obj["d"])
    provides = tuple(str(x) for x in obj["p"])
    return Package(name, str(obj["v"]), str(obj["a"]), deps, provides, int(obj.get("s", 0)))


# the memo files of apt_show's answers, one per apt state (the version names their format)
_MEMO_PREFIX = "apt-show-2-"


@dataclass(frozen=True)
class AptAnswer:
    """What :func:`apt_answer` found: *packages* (the names apt offers), and, when apt
    could not be asked and they are its last answer from the cache, why not."""

    packages: dict[str, Package]
    unanswered: str = ""  # why apt could not be asked ('' when it answered)


# False within apt_answers_only()
_LAST_ANSWER_OK: ContextVar[bool] = ContextVar("irqlab_apt_last_answer_ok", default=True)


@contextlib.contextmanager
def apt_answers_only() -> Iterator[None]:
    """Within it, :func:`apt_answer` raises :class:`AptUnanswered` when apt cannot be
    asked rather than take apt's last answer: what a prune keeps must be apt's present
    candidates, not ones that may have changed since."""
    token = _LAST_ANSWER_OK.set(False)
    try:
        yield
    finally:
        _LAST_ANSWER_OK.reset(token)


def apt_show(names: Sequence[str]) -> dict[str, Package]:
    """Candidate versions of *names* from the local apt lists (no network): the packages
    of :func:`apt_answer`."""
    return apt_answer(names).packages


def apt_answer(names: Sequence[str]) -> AptAnswer:
    """apt's candidates of *names* (a name apt offers no package of is absent).

    ``apt-cache`` takes ~0.7 s per call where apt's binary cache is disabled
    (Docker images), so answers are memoised in the cache dir, keyed by
    :func:`apt_state_key`: a warm image build asks apt nothing.

    When apt cannot be asked (:class:`AptUnanswered`: no package lists, as in a fresh
    container or a CI runner whose ``apt-get update`` could not reach the mirror;
    apt-cache missing or failing), the answer is apt's last one for all of *names* in
    the cache's memos (the newest), said once per process as possibly out of date: what
    the cached outputs were built from, so a complete cache goes on without apt.
    Without one (or within :func:`apt_answers_only`) :class:`AptUnanswered` names the
    packages and why apt could not be asked.
    """
    if not names:
        return AptAnswer({})
    files = apt_state_files()
    lists = files[1] if os.environ.get("APT_CONFIG") else files[0]
    memo_dir = cache_dir() / "debs"
    try:
        if not any(lists.glob("*_Packages*")):  # apt-cache would say "No packages found"
            raise AptUnanswered(f"no package lists in {lists}")
        return AptAnswer(_asked(names, memo_dir / f"{_MEMO_PREFIX}{apt_state_key(files)}.json"))
    except AptUnanswered as e:
        if not _LAST_ANSWER_OK.get():
            raise
        return _last_answer(names, memo_dir, e)


def _asked(names: Sequence[str], memo_file: Path) -> dict[str, Package]:
    """apt's answer for *names*, from *memo_file* (the memo of apt's present state) or
    asked (and added to it)."""
    memo: dict[str, object] = {}
    with contextlib.suppress(OSError, ValueError):
        memo = json.loads(memo_file.read_text())
    missing = sorted({n for n in names if n not in memo})
    if missing:
        got = _query_apt(missing)
        for n in missing:
            memo[n] = _to_json(got.get(n))
        memo_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo_file.with_name(f"{memo_file.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(memo, sort_keys=True))
        tmp.replace(memo_file)
    return _packages(names, memo)


def _packages(names: Sequence[str], memo: Mapping[str, object]) -> dict[str, Package]:
    out: dict[str, Package] = {}
    for n in names:
        p = _from_json(n, memo.get(n))
        if p is not None:
            out[n] = p
    return out


# whether _last_answer said it went on with apt's last answers (once per process: the
# lookups of one start took them from two memos when apt's state had changed between
# them, and it said so twice)
_SAID_LAST: list[Path] = []
_SAID_LOCK = threading.Lock()


def _memos_newest_first(memo_dir: Path) -> list[tuple[float, Path]]:
    """(mtime, path) of the memos of apt's answers in *memo_dir*, newest first."""
    found: list[tuple[float, Path]] = []
    for f in memo_dir.glob(f"{_MEMO_PREFIX}*.json"):
        with contextlib.suppress(OSError):  # gone meanwhile
            found.append((f.stat().st_mtime, f))
    return sorted(found, reverse=True)


def _last_answer(names: Sequence[str], memo_dir: Path, why: AptUnanswered) -> AptAnswer:
    """apt's last answer for all of *names* (the newest memo holding them), said once per
    process; :class:`AptUnanswered` naming them when the cache holds none."""
    for mtime, f in _memos_newest_first(memo_dir):
        try:
            memo = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(memo, dict) or not all(n in memo for n in names):
            continue
        if all(v is None for v in memo.values()):  # asked without lists (irqlab < this)
            continue
        with _SAID_LOCK:
            first = not _SAID_LAST
            _SAID_LAST.append(f)
        if first:
            stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(mtime))
            notice.say(
                f"irqlab: apt cannot be asked ({why}): going on with its last answer, "
                f"of {stamp} ({f}), which may be out of date"
            )
        return AptAnswer(_packages(names, memo), str(why))
    raise AptUnanswered(
        f"apt cannot be asked ({why}), and the cache holds no earlier answer of apt's about "
        f"{', '.join(names)}: run apt-get update (it needs the Debian mirror)"
    ) from why


def foreign_lookup(deb_arch: str, lookup: Lookup = apt_show) -> Lookup:
    """A :data:`Lookup` for another Debian architecture (``dpkg --add-architecture``).

    Asks apt for ``name:<deb_arch>`` and answers under the plain name; a name with no
    such package falls back to the plain name if that is ``Architecture: all``.
    """

    def look(names: Sequence[str]) -> dict[str, Package]:
        qualified = {f"{n}:{deb_arch}": n for n in names}
        got = lookup(list(qualified))
        out = {qualified[q]: replace(p, name=qualified[q]) for q, p in got.items()}
        rest = [n for n in names if n not in out]
        try:
            plain = lookup(rest) if rest else {}
        except AptError:  # none of them exists under its plain name either
            plain = {}
        out.update({n: p for n, p in plain.items() if p.arch == "all"})
        return out

    return look


def closure(roots: Sequence[str], lookup: Lookup, exclude: Iterable[str] = ()) -> list[Package]:
    """*roots* and everything they depend on, minus *exclude* (which counts as satisfied).

    Each alternative group is satisfied by a package already chosen (or
    provided by one), else by its first alternative apt knows.  Returns the
    packages sorted by name; raises :class:`AptError` naming an unresolvable
    dependency.
    """
    excluded = set(exclude)
    known: dict[str, Package | None] = {}

    def fetch(names: Iterable[str]) -> None:
        want = sorted({n for n in names if n not in known and n not in excluded})
        if want:
            got = lookup(want)
            for n in want:
                known[n] = got.get(n)

    chosen: dict[str, Package] = {}
    provided: set[str] = set()

    def choose(pkg: Package) -> None:
        chosen[pkg.name] = pkg
        provided.update(pkg.provides)

    fetch(roots)
    for r in roots:
        if r in excluded:
            continue
        pkg = known.get(r)
        if pkg is None:
            raise AptError(f"package {r} not found in the apt lists (run apt-get update?)")
        choose(pkg)

    def satisfied(group: tuple[str, ...]) -> bool:
        return any(a in chosen or a in provided or a in excluded for a in group)

    # groups naming only virtual packages may be provided by a package chosen later
    deferred: list[tuple[Package, tuple[str, ...]]] = []
    todo = [chosen[r] for r in roots if r in chosen]
    while todo:
        fetch(a for p in todo for g in p.depends for a in g)
        nxt: list[Package] = []
        for p in todo:
            for group in p.depends:
                if satisfied(group):
                    continue
                pick = next((known[a] for a in group if known.get(a) is not None), None)
                if pick is None:
                    deferred.append((p, group))
                    continue
                choose(pick)
                nxt.append(pick)
        todo = nxt
    for p, group in deferred:
        if not satisfied(group):
            raise AptError(
                f"{p.name}: cannot satisfy dependency {' | '.join(group)} "
                "(not in the apt lists or only virtual; exclude it if the image does not need it)"
            )
    return sorted(chosen.values(), key=lambda p: p.name)


def pool_dir() -> Path:
    return cache_dir() / "debs" / "pool"


def _download_spec(p: Package) -> str:
    """``name=version``, with ``:arch`` for a foreign architecture's package."""
    if p.arch in ("all", host_deb_arch()):
        return p.spec
    return f"{p.name}:{p.arch}={p.version}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: alive
        return True
    return True


def _sweep_partials(pool: Path) -> None:
    """Remove the partial download directories of processes that are gone (killed
    mid-download: what they fetched was never moved into the pool)."""
    for d in pool.glob("partial-*"):
        pid = d.name.removeprefix("partial-")
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            shutil.rmtree(d, ignore_errors=True)


def _in_pool(deb: Path, p: Package, steps: StepLog) -> bool:
    """Whether *deb* is in the pool whole: one of another size than apt's lists say (cut
    by a download killed before downloads went through a partial directory) is
    removed, to be downloaded again."""
    try:
        size = deb.stat().st_size
    except FileNotFoundError:
        return False
    if p.size and size != p.size:
        steps.log(f"{deb.name} in the pool has {size} bytes, not {p.size}: downloading it again")
        deb.unlink()
        return False
    return True


def download(pkgs: Sequence[Package], steps: StepLog, pool: Path | None = None) -> dict[str, Path]:
    """Fetch the exact versions into the pool (once); returns name -> .deb path.

    ``apt-get download`` writes into ``partial-<pid>/`` under the pool; its files are
    moved into the pool only once it exits 0: a download cut short (Ctrl-C, SIGKILL, a
    CI timeout) left a truncated ``.deb`` under its final name, which every later build
    trusted and failed on in ``dpkg-deb``.

    Each .deb is marked used under the pool's lock (:func:`irqlab.build.shared.mark_used`):
    the caller unpacks it after the lock is let go, and a prune keeps what a build used
    within the hour."""
    from irqlab.build.shared import mark_used

    pool = pool or pool_dir()
    pool.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(pool_lock(pool), POOL_LOCK_WHAT):
        _sweep_partials(pool)
        missing = [p for p in pkgs if not _in_pool(pool / p.deb_name, p, steps)]
        if missing:
            steps.log(f"downloading {len(missing)} Debian package(s) into {pool}")
            opts = ["-o", "APT::Sandbox::User=root"] if os.geteuid() == 0 else []
            partial = pool / f"partial-{os.getpid()}"
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir()
            specs = [_download_spec(p) for p in missing]
            try:
                try:
                    steps.run(
                        "apt-get download",
                        ["apt-get", "download", "-q", *opts, *specs],
                        cwd=partial,
                        env={"LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"},
                    )
                except BuildError as e:  # apt's words, and what it had to fetch
                    raise BuildError(e.step, e.log_path, _download_failure(specs, pool, e)) from e
                for f in partial.iterdir():
                    if f.name.endswith(".deb"):
                        f.replace(pool / f.name)
            finally:
                shutil.rmtree(partial, ignore_errors=True)
        mark_used(*(pool / p.deb_name for p in pkgs))
    out: dict[str, Path] = {}
    for p in pkgs:
        deb = pool / p.deb_name
        if not deb.is_file():
            raise AptError(f"apt-get download did not produce {deb}")
        if p.size and deb.stat().st_size != p.size:
            raise AptError(
                f"apt-get download produced {deb} of {deb.stat().st_size} bytes, "
                f"apt's lists say {p.size}"
            )
        out[p.name] = deb
    return out


def _download_failure(specs: Sequence[str], pool: Path, e: BuildError) -> str:
    """What a failed ``apt-get download`` of *specs* says: that they are not in the
    cache and must be downloaded, apt's own words (in *e*), and, where apt has no
    package lists to find them in, that."""
    lists = apt_lists_dir()
    why = "" if any(lists.glob("*_Packages*")) else f"; apt has no package lists in {lists}"
    return (
        f"{len(specs)} Debian package(s) are not in the cache ({pool}) and must be "
        f"downloaded: {' '.join(specs)}{why}; {e.detail}"
    )


def extract_into(deb: Path, dest: Path, steps: StepLog) -> None:
    """``dpkg-deb -x`` *deb* into *dest* (which may hold other packages)."""
    dest.mkdir(parents=True, exist_ok=True)
    steps.run(f"extract {deb.name}", ["dpkg-deb", "-x", deb, dest])


POOL_LOCK_WHAT = "downloading Debian packages"
UNPACK_TMP = ".tmp"  # suffix of an unpacking in progress (a leftover if interrupted)


def pool_lock(pool: Path) -> Path:
    """The lock file :func:`download` holds while it fills *pool*; a prune of the pool
    takes it too (:mod:`irqlab.build.shared`)."""
    return pool / ".lock"


def unpack_lock_what(deb_name: str) -> str:
    """What the holder of an unpacked package's lock (``lock_file`` of its tree) does."""
    return f"unpacking {deb_name}"


def extracted(deb: Path, steps: StepLog) -> Path:
    """A cached, read-only-by-convention tree holding just *deb*'s files, marked used
    under its lock (:func:`irqlab.build.shared.mark_used`: the caller reads it after the
    lock is let go, and a prune keeps what a build used within the hour)."""
    from irqlab.build.shared import mark_used

    root = cache_dir() / "debs" / "x" / deb.name.removesuffix(".deb")
    with exclusive_lock(lock_file(root), unpack_lock_what(deb.name)):
        if not (root / ".complete").is_file():
            tmp = root.with_name(root.name + UNPACK_TMP)
            shutil.rmtree(tmp, ignore_errors=True)
            extract_into(deb, tmp, steps)
            cancel.check(f"unpacking {deb.name}")  # not complete: see cache.cached_build
            (tmp / ".complete").touch()
            shutil.rmtree(root, ignore_errors=True)
            tmp.rename(root)
        mark_used(root)
    return root


# --- installing host packages ------------------------------------------------------

APT_ENV = {"LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"}
APT_LISTS = Path("/var/lib/apt/lists")


def missing_packages(names: Sequence[str]) -> list[str]:
    """The packages among *names* that dpkg does not have installed (when it has all,
    ``dpkg-query`` is not asked again while dpkg's database is unchanged:
    :mod:`irqlab.build.hostfacts`)."""
    installed = set(
        hostfacts.remembered(
            "dpkg-installed",
            hostfacts.DPKG_DATABASE,
            lambda: _installed(names),
            args=names,
            keep=lambda found: set(names) <= set(found),  # none missing: nothing to install
        )
    )
    return [n for n in names if n not in installed]


def _installed(names: Sequence[str]) -> list[str]:
    """The packages among *names* that ``dpkg-query`` says are installed."""
    r = cancel.run_text(
        ["dpkg-query", "-W", "-f", "${Package} ${db:Status-Abbrev}\n", *names],
        doing=f"asking dpkg whether {_few(names)} are installed (dpkg-query)",
    )
    return sorted(
        {ln.split()[0].split(":")[0] for ln in r.stdout.splitlines() if ln.split()[1:2] == ["ii"]}
    )


def install_refusal(packages: Sequence[str], what: str = "it") -> str:
    """What a build that cannot install *packages* (not root), which *what* needs, says:
    the packages and the command that installs them.  Every such refusal says it so."""
    pkgs = " ".join(packages)
    return f"{what} needs {pkgs}, not installed: apt-get install {pkgs} (as root)"


# apt-get's lines of progress, not of what went wrong
_APT_PROGRESS = ("Hit:", "Get:", "Ign:", "Reading ", "Fetched ")


def ensure_apt_packages(steps: StepLog, names: Sequence[str], step: str = "apt-deps") -> None:
    """Install the missing ones of *names* with apt-get (as root), logging to *steps*."""
    missing = missing_packages(names)
    if not missing:
        return
    if os.geteuid() != 0:
        raise BuildError(step, steps.path, install_refusal(missing))
    steps.log(f"installing {' '.join(missing)}")
    lists = apt_lists_dir()
    if not any(lists.glob("*_Packages*")):
        # not cancellable: apt's lists half-fetched
        said = steps.run(step, ["apt-get", "update", "-q"], env=APT_ENV, cancellable=False)
        if not any(lists.glob("*_Packages*")):  # it exits 0 when no mirror answers
            words = "\n".join(ln for ln in said.splitlines() if not ln.startswith(_APT_PROGRESS))
            raise BuildError(
                step,
                steps.path,
                f"{' '.join(missing)} must be installed, but apt has no package lists in "
                f"{lists}: apt-get update fetched none\n{words or said.strip()}",
            )
    steps.run(
        step,
        # another process installing meanwhile (pytest-xdist workers on a restored
        # cache): wait for dpkg's lock rather than fail on it
        ["apt-get", "install", "-y", "-q", "-o", "DPkg::Lock::Timeout=600",
         "--no-install-recommends", *missing],
        env=APT_ENV,
        cancellable=False,  # dpkg's state: a half-installed package needs dpkg --configure -a
    )  # fmt: skip


def ensure_host_packages(
    names: Sequence[str], what: str, log: Callable[[str], None] | None = None
) -> None:
    """Make sure the Debian packages *names* that *what* (a build's need: "building a
    kernel module") runs are installed: the missing ones (dpkg-query says) are installed
    with apt-get when run as root (logged to ``<logs>/build/<what>.log``); otherwise an
    :class:`AptError` names them and the command that installs them.  Nothing runs when
    all are there (one dpkg-query)."""
    missing = missing_packages(names)
    if not missing:
        return
    if os.geteuid() != 0:
        raise AptError(install_refusal(missing, what))
    slug = re.sub(r"[^a-z0-9]+", "-", what.lower()).strip("-")
    with StepLog(log_dir() / "build" / f"{slug}.log", log) as steps, steps.step(what):
        ensure_apt_packages(steps, missing, step=what)
