"""``irqlab cache``: the build cache's outputs by recipe, architecture and variant, which
of them this checkout resolves to (*current*) and which a running QEMU holds (*in use*),
and the shared build parts (:mod:`irqlab.build.shared`), *unused* when nothing kept needs
them; ``--prune N`` keeps the N most recently used of each group and never those two,
then removes the shared parts the outputs left need no more, and the leftovers (lock files
of what is no longer cached, temporary files of killed writers) the listing counts
(:func:`irqlab.build.cache.orphan_locks`, :func:`irqlab.build.cache.stale_temporaries`);
``--keys`` prints the input
digests a CI cache is keyed by (:mod:`irqlab.build.cachekeys`)."""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from irqlab.build import cache, shared
from irqlab.cli.argtypes import count

__all__ = ["add_cache_parser", "cmd_cache", "cmd_cache_keys", "format_listing"]

DESCRIPTION = (
    "Each recipe (qemu, kernel, kmod, image, ...) writes one output per input hash; outputs "
    "of one recipe built for one architecture and variant (an image's extra packages, its "
    "compression, with or without our module) form a group.  'current': what this checkout "
    "resolves to (found without building); 'in use': held by a running QEMU (a guest's "
    "QEMU, kernel, image).  Neither is ever pruned.  A new output evicts the least recently "
    f"used of its group beyond ${cache.KEEP_ENV} (default {cache.DEFAULT_KEEP}; 0: never).  "
    "Shared parts (QEMU source and build trees of a QEMU version, downloaded and unpacked "
    ".debs) are listed too: 'unused' when no output left and not apt's current candidate "
    "needs them and no build used them within the hour; --prune removes those (ccache is "
    "never pruned: it bounds itself).  Leftovers: the lock files of outputs and unpacked "
    "packages no longer cached (--prune removes those nobody holds or waits for) and the "
    "temporary files of writers killed before their rename (--prune removes them)."
)


def add_cache_parser(sub: Any) -> None:
    s = sub.add_parser(
        "cache",
        help="list the build cache's outputs (current, in use); --prune N keeps the N most "
        "recently used of each recipe, architecture and variant",
        description=DESCRIPTION,
    )
    s.add_argument(
        "--prune",
        type=count(0),
        metavar="N",
        help="remove incomplete leftovers and all but the N most recently used outputs of "
        "each group (recipe, architecture, variant); current and in-use outputs always "
        "stay, so 0 removes all but those; then the shared parts (QEMU trees, .debs) that "
        "no output left nor apt's current candidates need",
    )
    s.add_argument(
        "--dry-run", action="store_true", help="with --prune: only show what would be removed"
    )
    s.add_argument(
        "--keys",
        action="store_true",
        help="print, without building, the input digests of what the build commands make "
        "here (each QEMU target, the guest kernel, our module, the image's inputs) and, last, "
        "'key irqlab-<hash>': one key for a CI cache of them all (it changes when a Debian "
        "update or a new irqlab changes an output; apt-get update first)",
    )
    s.set_defaults(func=cmd_cache)


def cmd_cache_keys() -> int:
    """``irqlab cache --keys``: ``<recipe> <arch> <digest>`` lines, then ``key <key>``."""
    from irqlab.build import cachekeys

    keys = cachekeys.cache_keys()
    for name, digest in keys.items():
        print(f"{name} {digest}")
    print(f"key {cachekeys.combined(keys)}")
    return 0


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _order(e: cache.CacheEntry) -> tuple[str, str, str, bool, float]:
    return (e.name, e.arch, e.variant, not e.complete, -e.mtime)


def format_listing(
    found: Sequence[cache.CacheEntry],
    sizes: dict[Path, int],
    current: Collection[Path],
    busy: Collection[Path],
    doomed: Collection[Path],
) -> list[str]:
    """One header line per group (recipe, arch, variant: its outputs and size), then its
    outputs, most recently used first: size, last use, current / in use / (remove)."""
    lines: list[str] = []
    for _, members in itertools.groupby(sorted(found, key=_order), key=lambda e: e.group):
        group = list(members)
        e = group[0]
        what = " ".join(w for w in (e.name, e.arch or "(no arch)", e.detail) if w)
        size = sum(sizes[g.path] for g in group)
        lines.append(f"{what}: {len(group)} output{'s' * (len(group) != 1)}, {_mib(size)}")
        lines += [_line(g, sizes[g.path], current, busy, doomed) for g in group]
    return lines


def _line(
    e: cache.CacheEntry,
    size: int,
    current: Collection[Path],
    busy: Collection[Path],
    doomed: Collection[Path],
) -> str:
    marks = [
        m
        for m, on in (
            ("incomplete", not e.complete),
            ("damaged", bool(e.damage)),
            ("current", e.path in current),
            ("in use", e.path in busy),
            ("(remove)", e.path in doomed),
        )
        if on
    ]
    used = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.mtime))
    return f"  {e.path.name:34} {_mib(size):>12}  used {used}  {', '.join(marks)}".rstrip()


def _shared_lines(found: shared.Survey, root: Path, pruning: bool) -> list[str]:
    """The shared parts: each QEMU tree or tarball, the .debs and unpacked packages as
    two sums; the unused marked ``unused`` (``(remove)`` when *pruning*)."""
    if not found.parts:
        return []
    mark = "(remove)" if pruning else "unused"
    lines = ["shared build parts:"]
    debs = [p for p in found.parts if p.path.parent.parent.name == shared.DEBS_DIR]
    for p in found.parts:
        if p not in debs:
            tail = "" if p.used else f"  {mark}"
            lines.append(f"  {p.relative(root):40} {_mib(p.size):>12}  {p.what}{tail}")
    for where, what in (("pool", ".debs"), ("x", "unpacked packages")):
        these = [p for p in debs if p.path.parent.name == where]
        if not these:
            continue
        unused = [p for p in these if not p.used]
        line = f"  {shared.DEBS_DIR}/{where}: {len(these)} {what}, {_mib(_total(these))}"
        if unused:
            line += f"; {len(unused)} {mark}, {_mib(_total(unused))}"
        lines.append(line)
    return lines


def _total(parts: Sequence[shared.Part]) -> int:
    return sum(p.size for p in parts)


def _prune_shared(root: Path, sizes: dict[Path, int]) -> tuple[int, str]:
    """Remove the shared parts the outputs now left do not need; prints each and a sum;
    (how many the OS refused, what was said)."""
    left = [e for e in cache.entries() if e.complete]
    found = shared.survey(root, left, sizes=sizes)
    done = shared.remove(found.unused, root)
    for p in done.removed:
        print(f"removed {p.relative(root)} ({p.what}, {_mib(p.size)}): nothing kept needs it")
    for error in done.errors:
        print(f"irqlab cache: {error}", file=sys.stderr)
    held = {why for _, why in done.held}
    for why in sorted(held):
        print(f"kept what its lock guards: {why}")
    locks = shared.remove_stale_locks(root)
    summary = (
        f"removed {len(done.removed)} shared parts, {_mib(_total(done.removed))}"
        + (f"; {len(done.held)} held by a build, kept" if done.held else "")
        + (f"; {len(done.used)} a build used since the survey, kept" if done.used else "")
        + (f"; {len(done.errors)} could not be removed (said above)" if done.errors else "")
        + (f"; {len(locks)} lock files of unpacked packages no longer there" if locks else "")
    )
    return len(done.errors), summary


def _leftovers_line(root: Path) -> str:
    """How many lock files of what is no longer cached, and temporary files of killed
    writers, the cache holds; "" when none."""
    locks = cache.orphan_locks(root) + shared.orphan_locks(root)
    temps = cache.stale_temporaries(root)
    said = []
    if locks:
        said.append(
            f"{len(locks)} lock file{'s' * (len(locks) != 1)} of outputs or unpacked packages "
            "no longer cached"
        )
    if temps:
        said.append(
            f"{len(temps)} temporary file{'s' * (len(temps) != 1)} of writers killed before "
            f"their rename ({', '.join(str(t.relative_to(root)) for t in temps[:3])}"
            f"{', ...' if len(temps) > 3 else ''})"
        )
    return f"leftovers: {'; '.join(said)}" if said else ""


def cmd_cache(args: argparse.Namespace) -> int:
    from irqlab.build import inventory
    from irqlab.paths import cache_dir

    if args.keys:
        if args.prune is not None or args.dry_run:
            print("irqlab cache: --keys takes no --prune or --dry-run", file=sys.stderr)
            return 2
        return cmd_cache_keys()
    if args.dry_run and args.prune is None:
        print(
            "irqlab cache: --dry-run needs --prune N (it shows what --prune N would remove)",
            file=sys.stderr,
        )
        return 2
    root = cache_dir()
    found = cache.entries()
    now = inventory.current(found)
    busy = {e.path for e in found if e.complete and cache.in_use(e.path)}
    current = now.protected(found)
    plan = cache.prune_plan(found, args.prune, current | busy) if args.prune is not None else []
    doomed = {e.path for e in plan}
    sizes = {e.path: cache.dir_size(e.path) for e in found}
    for line in format_listing(found, sizes, current, busy, doomed):
        print(line)
    print(f"{len(found)} outputs, {_mib(sum(sizes.values()))} in {root}")
    part_sizes: dict[Path, int] = {}
    parts = shared.survey(
        root, [e for e in found if e.complete and e.path not in doomed], sizes=part_sizes
    )
    for line in _shared_lines(parts, root, args.prune is not None):
        print(line)
    for e in found:
        if e.damage:
            print(f"damaged: {e.damage}; --prune removes it, and its next use makes it again")
    others = cache.foreign()
    if others:
        print(f"not irqlab's, left alone: {', '.join(p.name for p in others)}")
    leftovers = _leftovers_line(root)
    if leftovers:
        print(leftovers)
    for (recipe, arch), why in sorted(now.unknown.items()):
        print(
            f"the current {recipe} ({arch or 'no arch'}) is not known ({why}): the most "
            "recently used of each of its groups counts as current",
            file=sys.stderr,
        )
    for why in parts.unknown:
        print(f"irqlab cache: {why}", file=sys.stderr)
    if args.prune is None:
        return 0
    if args.dry_run:
        freed = _mib(sum(sizes[p] for p in doomed))
        unused = parts.unused
        print(
            f"--prune {args.prune} would remove {len(plan)} outputs, {freed}, and "
            f"{len(unused)} shared parts, {_mib(_total(unused))} (dry run)"
        )
        return 0
    done = cache.remove_all(plan)
    for error in done.errors:
        print(f"irqlab cache: {error}", file=sys.stderr)
    locks = cache.remove_stale_locks(root)
    temps = cache.remove_stale_temporaries(root)
    held, failed = len(done.held), len(done.errors)
    print(
        f"removed {len(done.removed)} outputs, {_mib(sum(sizes[e.path] for e in done.removed))}"
        + (f"; {held} in use or being built meanwhile, kept" if held else "")
        + (f"; {failed} could not be removed (said above)" if failed else "")
        + (f"; {len(locks)} lock files of outputs no longer cached" if locks else "")
        + (f"; {len(temps)} temporary files of killed writers" if temps else "")
    )
    shared_failed, summary = _prune_shared(root, part_sizes)
    print(summary)
    return 1 if failed or shared_failed else 0
