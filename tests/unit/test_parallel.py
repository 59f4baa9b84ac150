"""pytest-xdist workers and CI shards (irqlab.testing.parallel), in inner pytest
sessions (pytester): no QEMU, no guest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from irqlab.testing.parallel import default_workers, parse_shard

pytest_plugins = ["pytester"]

TEN_TESTS = """
import pytest

@pytest.mark.parametrize("i", range(10))
def test_n(i):
    pass
"""


def test_one_worker_per_core_and_none_on_one_core() -> None:
    assert default_workers(1) == 1
    assert default_workers(2) == 2
    assert default_workers(4) == 4
    assert default_workers() >= 1


@pytest.mark.parametrize("text", ["", "1", "0/2", "3/2", "a/b", "1/0", "-1/2"])
def test_a_bad_shard_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="--shard"):
        parse_shard(text)


def test_parse_shard() -> None:
    assert parse_shard("1/1") == (1, 1)
    assert parse_shard("2/4") == (2, 4)


def _selected(pytester: pytest.Pytester, *args: str) -> list[str]:
    result = pytester.runpytest("--collect-only", "-q", *args)
    return [ln for ln in result.outlines if "::" in ln]


def test_shards_split_the_tests_exactly_once_and_evenly(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_ten=TEN_TESTS)
    everything = _selected(pytester)
    assert len(everything) == 10
    shards = [_selected(pytester, "--shard", f"{k}/3") for k in (1, 2, 3)]
    assert sorted(len(s) for s in shards) == [3, 3, 4]
    assert sorted(t for s in shards for t in s) == sorted(everything)


def test_shards_apply_after_k(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_ten=TEN_TESTS)
    shards = [_selected(pytester, "-k", "not 9", "--shard", f"{k}/3") for k in (1, 2, 3)]
    assert sorted(len(s) for s in shards) == [3, 3, 3]


def test_a_bad_shard_option_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_ten=TEN_TESTS)
    result = pytester.runpytest("--shard", "4/3")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--shard 4/3: K must be between 1 and N*"])


TWO_TESTS = TEN_TESTS.replace("range(10)", "range(2)")


@pytest.mark.parametrize("xdist", [(), ("-n", "2")], ids=["alone", "xdist"])
def test_a_shard_that_gets_no_test_passes_and_says_so(
    pytester: pytest.Pytester, xdist: tuple[str, ...]
) -> None:
    """More shards than tests: the empty one exited 5 (pytest's "no tests collected"),
    failing its CI job with nothing wrong.  Under xdist the controller collects
    nothing itself: its workers' counts decide."""
    pytester.makepyfile(test_two=TWO_TESTS)
    args = ("-p", "no:cacheprovider", *(xdist or ("-p", "no:xdist")))
    result = pytester.runpytest_subprocess("--shard", "3/3", *args)
    assert result.ret == pytest.ExitCode.OK, result.outlines
    result.stdout.fnmatch_lines(
        ["irqlab: shard 3/3 got no tests: the 2 selected all went to the other shards *"]
    )
    pytester.runpytest_subprocess("--shard", "1/3", *args).assert_outcomes(passed=1)
    # nothing selected at all (a -k or -m that matches nothing) is no shard's doing
    nothing = pytester.runpytest_subprocess("--shard", "1/3", "-k", "nosuch", *args)
    assert nothing.ret == pytest.ExitCode.NO_TESTS_COLLECTED, nothing.outlines
    assert "got no tests" not in nothing.stdout.str()


LOG_DIRS = """
import json, os

def test_where(irqlab_log_dir, worker_id, request):
    out = os.environ["WHERE_OUT"]
    with open(os.path.join(out, worker_id + ".json"), "w") as f:
        json.dump({"log_dir": str(irqlab_log_dir), "pid": os.getpid()}, f)
"""


def _where(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    test: str,
    *args: str,
    passed: int,
) -> tuple[Path, Path]:
    """Run *test* (writing to $WHERE_OUT) with the log dir set: (log dir, out dir)."""
    logs = tmp_path / "logs"
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setenv("IRQLAB_LOG_DIR", str(logs))
    monkeypatch.setenv("WHERE_OUT", str(out))
    pytester.makepyfile(test_where=test)
    result = pytester.runpytest_subprocess(*args, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=passed)
    return logs, out


def test_xdist_workers_log_below_one_run_directory_each_in_its_own(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    args = ("-n", "2", "--dist", "each")
    logs, out = _where(pytester, monkeypatch, tmp_path, LOG_DIRS, *args, passed=2)
    seen = {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}
    assert sorted(seen) == ["gw0", "gw1"]
    dirs = {w: Path(s["log_dir"]) for w, s in seen.items()}
    assert dirs["gw0"].parent == dirs["gw1"].parent  # one run directory for the run
    assert dirs["gw0"].parent.parent == logs and dirs["gw0"].parent.name.startswith("pytest-")
    assert {d.name for d in dirs.values()} == {"gw0", "gw1"}
    assert seen["gw0"]["pid"] != seen["gw1"]["pid"]
    # one run's directory (and the link to the newest run)
    assert sorted(p.name for p in logs.iterdir()) == ["latest", dirs["gw0"].parent.name]


def test_without_xdist_the_run_directory_is_the_log_directory(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    test = LOG_DIRS.replace("worker_id, request", "request").replace("worker_id", '"main"')
    logs, out = _where(pytester, monkeypatch, tmp_path, test, "-p", "no:xdist", passed=1)
    where = Path(json.loads((out / "main.json").read_text())["log_dir"])
    assert where.parent == logs and where.name.startswith("pytest-")


SHARED_SETUP = """
import os
import pytest

@pytest.fixture(scope="module")
def expensive():
    with open(os.path.join(os.environ["WHERE_OUT"], "setups"), "a") as f:
        f.write("x")
    return 1

@pytest.mark.parametrize("i", range(6))
def test_shares(expensive, i):
    pass

@pytest.mark.parametrize("i", range(6))
def test_alone(i):
    pass
"""


def test_tests_sharing_a_module_fixture_run_on_one_worker_which_sets_it_up_once(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("WHERE_OUT", str(tmp_path))
    pytester.makepyfile(test_shared=SHARED_SETUP)
    result = pytester.runpytest_subprocess(
        "-n", "2", "--dist", "loadgroup", "-p", "no:cacheprovider", "-v"
    )
    result.assert_outcomes(passed=12)
    assert (tmp_path / "setups").read_text() == "x"  # one worker set it up, once
    shares = [ln for ln in result.outlines if "test_shares[" in ln and "PASSED" in ln]
    # reported under their own ids (the group suffix is the scheduler's), one worker
    assert len(shares) == 6 and not any("@" in ln for ln in shares), shares
    assert len({ln.split("]")[0].split()[0] for ln in shares}) == 1  # one worker: [gwN]


def test_a_shard_keeps_a_group_together(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_shared=SHARED_SETUP)
    shards = [_selected(pytester, "-p", "no:xdist", "--shard", f"{k}/2") for k in (1, 2)]
    with_shares = [s for s in shards if any("test_shares" in t for t in s)]
    assert len(with_shares) == 1 and sum("test_shares" in t for t in with_shares[0]) == 6
    assert sorted(len(s) for s in shards) == [6, 6]  # the group, plus alone tests dealt


def test_the_default_log_directory_is_kept_out_of_git(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As pytest's .pytest_cache: `git status` listed every run's logs."""
    monkeypatch.delenv("IRQLAB_LOG_DIR", raising=False)
    pytester.makepyfile("def test_logs(irqlab_log_dir):\n    assert irqlab_log_dir.is_dir()\n")
    pytester.runpytest_subprocess().assert_outcomes(passed=1)
    ignore = pytester.path / ".irqlab" / ".gitignore"
    assert ignore.read_text().splitlines()[-1] == "*"
    # logs elsewhere: a .irqlab of the user's own is left as it is
    ignore.unlink()
    monkeypatch.setenv("IRQLAB_LOG_DIR", str(pytester.path / "elsewhere"))
    pytester.runpytest_subprocess().assert_outcomes(passed=1)
    assert not ignore.exists()


GROUPED_FAILURES = """
import pytest

@pytest.fixture(scope="module")
def shared():
    return 1

@pytest.mark.xdist_group("g")
def test_grouped_fails():
    assert False

def test_module_fixture_fails(shared):  # grouped by its module-scoped fixture
    assert False

def test_plain_fails():
    assert False

def test_passes():
    pass
"""


def test_grouped_failures_keep_their_ids_for_lf_and_junit(pytester: pytest.Pytester) -> None:
    """Under --dist loadgroup a grouped test's id is ``<id>@<group>`` on the worker (the
    scheduler groups by it): the cache recorded that, and --lf missed those failures
    in the next run; JUnit names differed from a run without xdist."""
    import json
    import xml.etree.ElementTree as ET

    pytester.makepyfile(test_groups=GROUPED_FAILURES)
    junit = pytester.path / "junit.xml"
    r = pytester.runpytest_subprocess("-n", "2", "--dist", "loadgroup", f"--junitxml={junit}")
    r.assert_outcomes(failed=3, passed=1)
    lastfailed = json.loads(
        (pytester.path / ".pytest_cache" / "v" / "cache" / "lastfailed").read_text()
    )
    assert sorted(lastfailed) == [
        "test_groups.py::test_grouped_fails",
        "test_groups.py::test_module_fixture_fails",
        "test_groups.py::test_plain_fails",
    ]
    names = {c.get("name") for c in ET.parse(junit).iter("testcase")}
    assert names == {"test_grouped_fails", "test_module_fixture_fails", "test_plain_fails",
                     "test_passes"}  # fmt: skip
    for args in ((), ("-n", "2", "--dist", "loadgroup")):  # --lf reruns all three
        pytester.runpytest_subprocess("--lf", *args).assert_outcomes(failed=3)
