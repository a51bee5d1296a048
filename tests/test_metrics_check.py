"""The CI half of the metrics: committed against reproduced numbers, the PR diff and the workflow."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from xtask.common.errors import XTaskError
from xtask.tools.metrics_check import MISSING, committed_metrics, compare, flatten, same_value, workspace_metrics

ROOT = Path(__file__).resolve().parents[1]
M = {"dataset": "synthetic", "seed": 0, "paper": {"miou": 55.29, "abs_err": 0.01689}, "per_class": [1.0, 0.0]}
GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]


def test_flatten_names_every_leaf():
    assert flatten(M) == {"dataset": "synthetic", "seed": 0, "paper.miou": 55.29, "paper.abs_err": 0.01689,
                          "per_class.0": 1.0, "per_class.1": 0.0}
    assert flatten({"a": {}, "b": []}) == {"a": {}, "b": []}


def test_numbers_compare_within_the_relative_tolerance_and_the_rest_exactly():
    assert same_value(55.29, 55.29 * (1 + 5e-4)) and not same_value(55.29, 55.29 * (1 + 2e-3))
    assert same_value(55.29, 55.29 * (1 + 2e-3), rtol=1e-2)
    assert same_value(0.0, 1e-17) and not same_value(0.0, 1e-6)
    assert same_value(float("nan"), float("nan")) and not same_value(float("nan"), 1.0)
    assert same_value(12, 12.0) and not same_value(True, 1) and not same_value("off", "bf16")


def test_equal_metrics_have_no_difference():
    assert compare({"a.json": M}, {"a.json": json.loads(json.dumps(M))}) == []


def test_a_moved_number_is_a_difference_with_both_values():
    moved = json.loads(json.dumps(M))
    moved["paper"]["miou"] = 56.0
    (d,) = compare({"a.json": M}, {"a.json": moved})
    assert (d.file, d.key, d.committed, d.reproduced) == ("a.json", "paper.miou", 55.29, 56.0)
    assert d.line() == "a.json: paper.miou: committed 55.29, reproduced 56.0"


def test_files_and_keys_on_one_side_only_are_differences():
    extra = {**M, "new_metric": 1.0}
    diffs = compare({"a.json": M, "gone.json": M}, {"a.json": extra, "new.json": M})
    assert [(d.file, d.key, d.committed, d.reproduced) for d in diffs] == [
        ("a.json", "new_metric", MISSING, 1.0), ("gone.json", "", "present", MISSING),
        ("new.json", "", MISSING, "present")]


@pytest.fixture
def repo(tmp_path):
    (tmp_path / "metrics/synthetic").mkdir(parents=True)
    (tmp_path / "metrics/synthetic/seed0.json").write_text(json.dumps(M))
    (tmp_path / "metrics/synthetic/README.md").write_text("not a metric")
    (tmp_path / "metrics/synthetic/inference.json").write_text(json.dumps({"images_per_s": 10.0}))
    for cmd in (["git", "init", "-q"], GIT + ["add", "-A"], GIT + ["commit", "-qm", "m"]):
        subprocess.run(cmd, cwd=tmp_path, check=True, capture_output=True)
    return tmp_path


def _check(repo, *args):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "pipeline.check_metrics", "--root", "metrics", *args], cwd=repo,
                          env=env, capture_output=True, text=True, timeout=120)


def test_committed_and_workspace_metrics_are_read_from_git_and_disk(repo):
    assert committed_metrics(repo, ["metrics"]) == {"metrics/synthetic/seed0.json": M}
    assert workspace_metrics(repo, ["metrics"]) == {"metrics/synthetic/seed0.json": M}
    with pytest.raises(XTaskError, match="nosuchrev"):
        committed_metrics(repo, ["metrics"], rev="nosuchrev")


def test_check_metrics_passes_when_reproduced_and_fails_with_one_line_per_difference(repo):
    r = _check(repo)
    assert r.returncode == 0 and "reproduce HEAD's within a relative 0.001" in r.stdout, r.stderr
    moved = {**M, "seed": 1, "paper": {"miou": 50.0, "abs_err": 0.01689}}
    (repo / "metrics/synthetic/seed0.json").write_text(json.dumps(moved))
    (repo / "metrics/synthetic/seed1.json").write_text(json.dumps(M))
    # timings are measured, not reproduced: inference.json is never compared
    (repo / "metrics/synthetic/inference.json").write_text(json.dumps({"images_per_s": 99.0}))
    r = _check(repo)
    assert r.returncode == 1
    assert r.stdout.splitlines() == ["metrics/synthetic/seed0.json: paper.miou: committed 55.29, reproduced 50.0",
                                     "metrics/synthetic/seed0.json: seed: committed 0, reproduced 1",
                                     "metrics/synthetic/seed1.json: committed '(missing)', reproduced 'present'"]
    assert r.stderr.startswith("error: 3 metrics differ from HEAD's beyond a relative 0.001")
    assert _check(repo, "--rtol", "0.2").returncode == 1  # the seed and the extra file still differ


def test_the_committed_metrics_files_parse():
    committed = committed_metrics(ROOT)
    assert "metrics/synthetic/xtask/seed0.json" in committed
    assert "dvclive/synthetic/xtask/seed0/metrics.json" in committed


def test_the_local_metrics_diff_runs_against_head():
    r = subprocess.run([sys.executable, "-m", "pipeline.metrics_diff", "--base", "HEAD"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "### Metrics: `HEAD` -> this workspace" in r.stdout and "### Params: `HEAD`" in r.stdout


def test_the_workflow_reruns_the_pipeline_and_posts_the_diff_on_pull_requests():
    wf = yaml.safe_load((ROOT / ".github/workflows/metrics.yml").read_text())
    assert "pull_request" in wf[True]  # YAML 1.1 reads the key `on` as True
    assert wf["permissions"]["pull-requests"] == "write"
    steps = wf["jobs"]["metrics"]["steps"]
    assert steps[0]["uses"].startswith("actions/checkout@") and steps[0]["with"]["fetch-depth"] == 0
    run = "\n".join(s.get("run", "") for s in steps)
    for needed in ("make repro", "pipeline.metrics_diff --base main", "gh pr comment \"$PR\" --body-file body.md"):
        assert needed in run, needed
    assert wf["jobs"]["metrics"]["env"]["OMP_NUM_THREADS"] == "2"  # as the committed metrics were made


def test_ci_runs_the_tests_then_the_metrics_check():
    lines = [ln for ln in (ROOT / ".ci/run").read_text().splitlines() if ln and not ln.startswith("#")]
    assert lines[-2:] == ["make test", "make check-metrics"]
    make = (ROOT / "Makefile").read_text()
    recipe = make.split("\ncheck-metrics:")[1].split("\n\n")[0]
    assert "OMP_NUM_THREADS=$(CHECK_THREADS)" in recipe and "dvc repro" in recipe
    assert recipe.rstrip().endswith("$(PY) -m pipeline.check_metrics")
    assert "\nCHECK_THREADS ?= 2\n" in make
    assert "metrics-diff: repro\n\t$(PY) -m pipeline.metrics_diff --base $(BASE)" in make
