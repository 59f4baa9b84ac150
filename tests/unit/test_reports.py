"""The sharded CI run's one report (irqlab.testing.reports): JUnit files of real inner
pytest runs merged, counts per shard, the Markdown summary and its exit status."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from irqlab.testing.reports import FAILED_LISTED, main, read_shard, summary_markdown

pytest_plugins = ["pytester"]

MIXED = """
import pytest

def test_ok(): pass
def test_ok2(): pass
def test_bad(): assert False
@pytest.mark.skip(reason="not here")
def test_skipped(): pass
@pytest.fixture
def broken(): raise RuntimeError("setup")
def test_error(broken): pass
"""
GREEN = """
def test_a(): pass
def test_b(): pass
def test_c(): pass
"""


def _junit(pytester: pytest.Pytester, source: str, name: str) -> Path:
    pytester.makepyfile(**{f"test_{name.replace('-', '_')}": source})
    out = pytester.path / f"junit-{name}.xml"
    pytester.runpytest_subprocess(
        f"--junitxml={out}", "-p", "no:cacheprovider", f"test_{name.replace('-', '_')}.py"
    )
    return out


def test_counts_per_shard_come_from_the_test_cases(pytester: pytest.Pytester) -> None:
    s = read_shard(_junit(pytester, MIXED, "debian-1of2"))
    assert s.name == "debian-1of2"
    assert (s.tests, s.passed, s.failures, s.errors, s.skipped) == (5, 2, 1, 1, 1)
    assert not s.ok


def test_merged_report_and_summary(pytester: pytest.Pytester, tmp_path: Path) -> None:
    a = _junit(pytester, GREEN, "debian-1of2")
    b = _junit(pytester, MIXED, "buildroot-2of2")
    missing = tmp_path / "junit-debian-2of2.xml"
    out, summary = tmp_path / "merged.xml", tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    rc = main([str(a), str(b), str(missing), "--out", str(out), "--summary", str(summary)])
    assert rc == 1  # a failure and a missing shard
    root = ET.parse(out).getroot()
    assert root.tag == "testsuites" and root.get("tests") == "8" and root.get("failures") == "1"
    names = [s.get("name") for s in root.iter("testsuite")]
    assert names == ["debian-1of2: pytest", "buildroot-2of2: pytest"]
    assert len(list(root.iter("testcase"))) == 8
    text = summary.read_text()
    assert text.startswith("earlier step\n")  # appended, as $GITHUB_STEP_SUMMARY wants
    assert "| debian-1of2 | 3 | 0 | 0 | 0 |" in text
    assert "| buildroot-2of2 | 2 | 1 | 1 | 1 |" in text
    assert "| debian-2of2 | 0 | 0 | 0 | 0 |" in text and "no readable report" in text
    assert "| **total** | 5 | 1 | 1 | 1 |  | FAILED |" in text


def test_all_green_exits_zero_and_adds_the_bench_tables(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    a = _junit(pytester, GREEN, "debian-1of1")
    bench = tmp_path / "result.json"
    bench.write_text('{"metrics": {}, "errors": [{"stage": "storm", "error": "boom"}]}')
    rc = main([str(a), "--out", str(tmp_path / "m.xml"), "--bench", str(bench)])
    assert rc == 0
    text = summary_markdown([read_shard(a)], {"errors": [{"stage": "storm", "error": "x|y"}]})
    assert "## Bench" in text and "**Error in storm:** x|y" in text
    assert "| **total** | 3 | 0 | 0 | 0 |  | passed |" in text


def test_the_summary_is_titled_by_its_rows_and_names_the_failed_tests(
    pytester: pytest.Pytester,
) -> None:
    """Its rows are JUnit reports of any kind (the build job's lint and unit tests, soak
    shards, the aarch64 guest, a driver's tests), not only end-to-end shards as its
    title said; and the failed tests are named (a short list, capped), not only
    counted."""
    bad = read_shard(_junit(pytester, MIXED, "soak-debian-1of2"))
    text = summary_markdown([read_shard(_junit(pytester, GREEN, "build")), bad])
    assert "## Tests per report\n" in text and "End-to-end" not in text
    assert "| report | passed |" in text
    assert "### Failed tests (2)\n" in text
    assert "- soak-debian-1of2: `test_soak_debian_1of2::test_bad`\n" in text
    assert "- soak-debian-1of2: `test_soak_debian_1of2::test_error (error)`\n" in text
    assert "more (the merged JUnit report)" not in text
    bad.failed = [f"t::test_{i}" for i in range(FAILED_LISTED + 5)]
    text = summary_markdown([bad])
    assert f"### Failed tests ({FAILED_LISTED + 5})\n" in text
    assert text.count("- soak-debian-1of2: `t::test_") == FAILED_LISTED
    assert "- and 5 more (the merged JUnit report)\n" in text
    green = summary_markdown([read_shard(_junit(pytester, GREEN, "debian-1of2"))])
    assert "Failed tests" not in green
    readme = " ".join((Path(__file__).parents[2] / "README.md").read_text().split())
    assert f"the failed tests by name (the first {FAILED_LISTED})" in readme
