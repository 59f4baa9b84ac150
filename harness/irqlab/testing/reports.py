"""One report for a sharded CI run: JUnit files merged, a Markdown summary.

``python -m irqlab.testing.reports --out merged.xml --summary summary.md
[--bench result.json] SHARD.xml ...`` merges the JUnit XML files of the shards
(each shard's suites keep their tests, renamed ``<shard>: <suite>``) into one
``<testsuites>`` file and writes a Markdown summary: passed / failed / errors /
skipped per report (a CI job's or shard's: lint and unit tests, end-to-end or soak
shards, the aarch64 guest, a driver's tests) and in total, the failed tests by name
(the first :data:`FAILED_LISTED`), then the bench run's tables when given.  A
report's name is its file's stem (``junit-debian-1of2.xml`` -> ``debian-1of2``); a
file that is missing or unreadable is a row that says so, never a silent gap.
The exit status is 1 when any test failed or any shard's report is unreadable.
"""

from __future__ import annotations

import argparse
import json
import sys
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "FAILED_LISTED",
    "ShardCounts",
    "main",
    "markdown_table",
    "merge",
    "read_shard",
    "summary_markdown",
]

FAILED_LISTED = 20  # failed tests the summary names; the merged report has them all


@dataclass
class ShardCounts:
    name: str
    tests: int = 0
    failures: int = 0
    errors: int = 0
    skipped: int = 0
    seconds: float = 0.0
    problem: str = ""  # why the report could not be read
    failed: list[str] = field(default_factory=list)  # ids of the failed and errored tests
    suites: list[ET.Element] = field(default_factory=list, repr=False)

    @property
    def passed(self) -> int:
        return self.tests - self.failures - self.errors - self.skipped

    @property
    def ok(self) -> bool:
        return not self.problem and self.failures == 0 and self.errors == 0


def shard_name(path: Path) -> str:
    stem = path.stem
    return stem[len("junit-") :] if stem.startswith("junit-") else stem


def read_shard(path: Path, name: str | None = None) -> ShardCounts:
    """Counts of one JUnit file (pytest's ``--junitxml``: a ``<testsuites>`` root or a
    single ``<testsuite>``); counted from the test cases themselves."""
    counts = ShardCounts(name or shard_name(path))
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        counts.problem = f"no readable report ({e.__class__.__name__}: {e})"
        return counts
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    for suite in suites:
        counts.suites.append(suite)
        counts.seconds += float(suite.get("time") or 0.0)
        for case in suite.iter("testcase"):
            counts.tests += 1
            if case.find("failure") is not None:
                counts.failures += 1
                counts.failed.append(_case_id(case))
            elif case.find("error") is not None:
                counts.errors += 1
                counts.failed.append(_case_id(case) + " (error)")
            elif case.find("skipped") is not None:
                counts.skipped += 1
    return counts


def _case_id(case: ET.Element) -> str:
    """``<classname>::<name>`` of a JUnit test case (pytest's classname is the dotted
    module path, with the class)."""
    classname, name = case.get("classname") or "", case.get("name") or "?"
    return f"{classname}::{name}" if classname else name


def merge(shards: Sequence[ShardCounts]) -> ET.ElementTree[ET.Element]:
    """One ``<testsuites>`` with every shard's suites, each named after its shard."""
    root = ET.Element("testsuites")
    total = ShardCounts("total")
    for s in shards:
        for suite in s.suites:
            suite.set("name", f"{s.name}: {suite.get('name', 'pytest')}")
            root.append(suite)
        total.tests += s.tests
        total.failures += s.failures
        total.errors += s.errors
        total.skipped += s.skipped
        total.seconds += s.seconds
    root.set("name", "irqlab")
    root.set("tests", str(total.tests))
    root.set("failures", str(total.failures))
    root.set("errors", str(total.errors))
    root.set("skipped", str(total.skipped))
    root.set("time", f"{total.seconds:.3f}")
    return ET.ElementTree(root)


def markdown_table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in head) + " |"]
    lines.append("|" + "|".join(" --- " for _ in head) + "|")
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _bench_markdown(result: dict[str, Any]) -> str:
    from irqlab.bench.report import header_lines, sections

    parts = ["## Bench (`invoke bench --quick`)", "", "```", *header_lines(result), "```", ""]
    for title, table in sections(result):
        if table is not None and table[1]:
            parts += [f"### {title}", "", markdown_table(*table), ""]
    for e in result.get("errors") or []:
        parts.append(f"**Error in {e.get('stage')}:** {e.get('error')}")
    return "\n".join(parts)


def summary_markdown(shards: Sequence[ShardCounts], bench: dict[str, Any] | None = None) -> str:
    rows = []
    for s in shards:
        verdict = s.problem or ("passed" if s.ok else "FAILED")
        rows.append(
            [s.name, s.passed, s.failures, s.errors, s.skipped, f"{s.seconds:.0f} s", verdict]
        )
    total = [
        "**total**",
        sum(s.passed for s in shards),
        sum(s.failures for s in shards),
        sum(s.errors for s in shards),
        sum(s.skipped for s in shards),
        "",
        "passed" if all(s.ok for s in shards) and shards else "FAILED",
    ]
    # one row per JUnit file: a CI job's or a shard's, whatever its tests are
    head = ["report", "passed", "failed", "errors", "skipped", "time", "verdict"]
    text = "## Tests per report\n\n" + markdown_table(head, [*rows, total]) + "\n"
    failed = [(s.name, test) for s in shards for test in s.failed]
    if failed:
        text += f"\n### Failed tests ({len(failed)})\n\n"
        text += "".join(f"- {name}: `{test}`\n" for name, test in failed[:FAILED_LISTED])
        if len(failed) > FAILED_LISTED:
            text += f"- and {len(failed) - FAILED_LISTED} more (the merged JUnit report)\n"
    if bench is not None:
        text += "\n" + _bench_markdown(bench) + "\n"
    return text


DESCRIPTION = f"""\
One report for a sharded CI run: merges the JUnit XML files of the shards into one
file (each shard's suites keep their tests, renamed '<shard>: <suite>') and writes a
Markdown summary: passed, failed, errors and skipped per report and in total, the
failed tests by name (the first {FAILED_LISTED}), then a bench run's tables when given.
A report's name is its file's stem (junit-debian-1of2.xml -> debian-1of2); a file
that is missing or unreadable is a row that says so.

exit status: 0 when every report was read and no test failed or erred; 1 when a
test failed or erred, or a report is missing or unreadable; 2 for a usage error.
"""


def main(argv: Sequence[str] | None = None) -> int:
    # the module's docstring is for developers (reST): --help gets plain text
    p = argparse.ArgumentParser(
        prog="python -m irqlab.testing.reports",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("reports", nargs="+", type=Path, help="JUnit XML files, one per shard")
    p.add_argument("--out", type=Path, required=True, help="the merged JUnit XML file")
    p.add_argument("--summary", type=Path, help="write the Markdown summary here")
    p.add_argument("--bench", type=Path, help="a bench result.json to add its tables")
    a = p.parse_args(argv)
    shards = [read_shard(r) for r in a.reports]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    merge(shards).write(a.out, encoding="utf-8", xml_declaration=True)
    bench: dict[str, Any] | None = None
    if a.bench is not None:
        try:
            bench = json.loads(a.bench.read_text())
        except (OSError, ValueError) as e:
            print(f"bench result {a.bench} unreadable: {e}", file=sys.stderr)
    text = summary_markdown(shards, bench)
    if a.summary is not None:
        with a.summary.open("a", encoding="utf-8") as f:  # $GITHUB_STEP_SUMMARY appends
            f.write(text)
    else:
        print(text)
    return 0 if shards and all(s.ok for s in shards) else 1


if __name__ == "__main__":
    raise SystemExit(main())
