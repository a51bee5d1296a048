"""The CI half of the metrics: committed against reproduced numbers, the PR diff and the workflow."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from xtask.common.errors import XTaskError
from xtask.tools.check_metrics import MISSING, committed_metrics, compare, flatten, load_tolerances, same_value, workspace_metrics

ROOT = Path(__file__).resolve().parents[1]
M = {"dataset": "synthetic", "seed": 0, "paper": {"miou": 55.29, "abs_err": 0.01689}, "per_class": [1.0, 0.0]}
GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]


def test_flatten_names_every_leaf():
    assert flatten(M) == {"dataset": "synthetic", "seed": 0, "paper.miou": 55.29, "paper.abs_err": 0.01689,
                          "per_class.0": 1.0, "per_class.1": 0.0}
    assert flatten({"a": {}, "b": []}) == {"a": {}, "b": []}


def test_numbers_compare_within_their_tolerance_and_the_rest_exactly():
    assert same_value(55.29, 55.6, tolerance=0.5) and not same_value(55.29, 55.9, tolerance=0.5)
    assert same_value(55.29, 55.29) and not same_value(55.29, 55.29 + 1e-12)  # no tolerance: equal
    assert same_value(float("nan"), float("nan")) and not same_value(float("nan"), 1.0, tolerance=9)
    assert same_value(12, 12.0) and not same_value(True, 1) and not same_value("off", "bf16")


TOL = {"a.json": {"paper.miou": 0.5, "paper.abs_err": 0.001}}


def test_equal_metrics_have_no_difference():
    assert compare({"a.json": M}, {"a.json": json.loads(json.dumps(M))}, TOL) == []


def test_a_number_beyond_its_tolerance_is_a_difference_with_both_values():
    moved = json.loads(json.dumps(M))
    moved["paper"]["miou"] = 55.6  # within 0.5: not a difference
    moved["paper"]["abs_err"] = 0.0200
    moved["per_class"][1] = 1e-9   # no measured tolerance: must be equal
    diffs = compare({"a.json": M}, {"a.json": moved}, TOL)
    assert [(d.key, d.committed, d.reproduced, d.tolerance) for d in diffs] == [
        ("paper.abs_err", 0.01689, 0.02, 0.001), ("per_class.1", 0.0, 1e-9, None)]
    assert diffs[0].line() == "a.json: paper.abs_err: committed 0.01689, reproduced 0.02 (|difference| 0.00311; " \
        "tolerance 0.001)"
    assert diffs[1].line().endswith("(|difference| 1e-09; no measured tolerance: must be equal)")


def test_the_code_version_in_a_runs_identity_is_not_compared_its_params_are():
    ident = {**M, "config_id": "0123456789abcdef",
             "config": {"alpha": 0.01, "epochs": 12, "code": "aaaa", "evaluation_code": "bbbb"}}
    other_code = {**ident, "config_id": "fedcba9876543210", "config": {**ident["config"], "code": "cccc",
                                                                       "evaluation_code": "dddd"}}
    assert compare({"a.json": ident}, {"a.json": other_code}, TOL) == []
    other_alpha = {**ident, "config": {**ident["config"], "alpha": 0.02}}
    assert [(d.key, d.committed, d.reproduced) for d in compare({"a.json": ident}, {"a.json": other_alpha}, TOL)] \
        == [("config.alpha", 0.01, 0.02)]


def test_a_seed_files_tolerance_is_found_under_seedK():
    tol = {"metrics/s/x/seedK.json": {"paper.miou": 0.5}}
    moved = {**M, "paper": {**M["paper"], "miou": 55.6}}
    assert compare({"metrics/s/x/seed3.json": M}, {"metrics/s/x/seed3.json": moved}, tol) == []


def test_files_and_keys_on_one_side_only_are_differences():
    extra = {**M, "new_metric": 1.0}
    diffs = compare({"a.json": M, "gone.json": M}, {"a.json": extra, "new.json": M}, TOL)
    assert [(d.file, d.key, d.committed, d.reproduced) for d in diffs] == [
        ("a.json", "new_metric", MISSING, 1.0), ("gone.json", "", "present", MISSING),
        ("new.json", "", MISSING, "present")]


@pytest.fixture
def repo(tmp_path):
    (tmp_path / "metrics/synthetic/xtask").mkdir(parents=True)
    (tmp_path / "metrics/synthetic/xtask/seed0.json").write_text(json.dumps(M))
    (tmp_path / "metrics/synthetic/README.md").write_text("not a metric")
    (tmp_path / "metrics/synthetic/xtask/inference.json").write_text(json.dumps({"images_per_s": 10.0}))
    (tmp_path / "metrics/summary.json").write_text(json.dumps({"derived": 1.0}))
    (tmp_path / "tolerance.json").write_text(json.dumps({"files": {
        "metrics/synthetic/xtask/seedK.json": {"paper.miou": 0.5, "paper.abs_err": 0.001}}}))
    for cmd in (["git", "init", "-q"], GIT + ["add", "-A"], GIT + ["commit", "-qm", "m"]):
        subprocess.run(cmd, cwd=tmp_path, check=True, capture_output=True)
    return tmp_path


def _check(repo, *args):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "xtask.tools.check_metrics", "--root", "metrics", "--tolerances",
                           "tolerance.json", *args], cwd=repo,
                          env=env, capture_output=True, text=True, timeout=120)


def test_committed_and_workspace_metrics_are_read_from_git_and_disk(repo):
    # the train and evaluate stages' files only: timings and the report's derived summary are not compared
    assert committed_metrics(repo, ["metrics"]) == {"metrics/synthetic/xtask/seed0.json": M}
    assert workspace_metrics(repo, ["metrics"]) == {"metrics/synthetic/xtask/seed0.json": M}
    with pytest.raises(XTaskError, match="nosuchrev"):
        committed_metrics(repo, ["metrics"], rev="nosuchrev")


def test_check_metrics_passes_within_tolerance_and_fails_with_one_line_per_difference(repo):
    seed0 = repo / "metrics/synthetic/xtask/seed0.json"
    seed0.write_text(json.dumps({**M, "paper": {"miou": 55.5, "abs_err": 0.01689}}))  # 0.21 < 0.5
    r = _check(repo)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == ("metrics: 1 files, 5 numbers reproduce HEAD's within their tolerances; 4 bitwise "
                                "equal, the closest at 0.42 of its tolerance (metrics/synthetic/xtask/seed0.json: "
                                "paper.miou)")
    seed0.write_text(json.dumps({**M, "seed": 1, "paper": {"miou": 50.0, "abs_err": 0.01689}}))
    (repo / "metrics/synthetic/xtask/seed1.json").write_text(json.dumps(M))
    # timings are measured, not reproduced, and the summary is derived: neither is compared
    (repo / "metrics/synthetic/xtask/inference.json").write_text(json.dumps({"images_per_s": 99.0}))
    (repo / "metrics/summary.json").write_text(json.dumps({"derived": 2.0}))
    r = _check(repo)
    assert r.returncode == 1
    assert r.stdout.splitlines() == [
        "metrics/synthetic/xtask/seed0.json: paper.miou: committed 55.29, reproduced 50.0 (|difference| 5.29; "
        "tolerance 0.5)",
        "metrics/synthetic/xtask/seed0.json: seed: committed 0, reproduced 1 (|difference| 1; no measured "
        "tolerance: must be equal)",
        "metrics/synthetic/xtask/seed1.json: committed '(missing)', reproduced 'present'"]
    assert r.stderr.startswith("error: 3 metrics differ from HEAD's beyond their tolerances (tolerance.json)")
    assert _check(repo, "--tolerances", "missing.json").stderr.startswith("error: missing.json: missing or not")


def test_the_committed_metrics_files_parse():
    committed = committed_metrics(ROOT)
    assert "metrics/synthetic/xtask/seed0.json" in committed
    assert not any(f.startswith("dvclive/") for f in committed)  # a cached DVC output, not in git


def test_the_local_metrics_diff_runs_against_head():
    r = subprocess.run([sys.executable, "-m", "xtask.tools.metrics_diff", "--base", "HEAD"], cwd=ROOT,
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
    for needed in ("make repro", "xtask.tools.metrics_diff --base main", "gh pr comment \"$PR\" --body-file body.md"):
        assert needed in run, needed
    assert wf["jobs"]["metrics"]["env"]["OMP_NUM_THREADS"] == "2"  # as the committed metrics were made


def test_ci_runs_the_tests_then_both_checks():
    lines = [ln for ln in (ROOT / ".ci/run").read_text().splitlines() if ln and not ln.startswith("#")]
    assert lines[-4:] == ["make test", "make check-trace", "make check-determinism", "make check-metrics"]
    make = (ROOT / "Makefile").read_text()
    recipe = make.split("\ncheck-determinism:")[1].split("\n\n")[0]
    assert "OMP_NUM_THREADS=$(CHECK_THREADS)" in recipe and "-m xtask.tools.check_determinism" in recipe
    make = (ROOT / "Makefile").read_text()
    recipe = make.split("\ncheck-metrics:")[1].split("\n\n")[0]
    assert "OMP_NUM_THREADS=$(CHECK_THREADS)" in recipe and "dvc repro" in recipe
    assert recipe.rstrip().endswith("$(PY) -m xtask.tools.check_metrics")
    assert "\nCHECK_THREADS ?= 2\n" in make
    assert "metrics-diff: repro\n\t$(PY) -m xtask.tools.metrics_diff --base $(BASE)" in make


def test_the_shipped_tolerances_cover_every_committed_number():
    tolerances = load_tolerances(ROOT / "benchmarks/tolerance.json")
    from xtask.tools.check_metrics import tolerance_name
    for file, data in committed_metrics(ROOT).items():
        measured = tolerances[tolerance_name(file)]
        numbers = [k for k, v in flatten(data).items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        # the seed names the run; the run's config and the number of random batchings are settings, which
        # must come back equal, not measurements
        settings = {k for k in numbers if k == "seed" or k.startswith("config.") or k.endswith(".draws")}
        assert set(numbers) - set(measured) <= settings, file
        assert all(measured[k] >= 0 for k in measured)
