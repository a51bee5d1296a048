import json
import sys
from pathlib import Path

import pytest

from pipeline import report as report_stage
from xtask.common.cli import run
from xtask.common.errors import XTaskError
from xtask.common.io import atomic_path, write_json
from xtask.reporting.report import collect


def _metrics(seed, miou):
    return {"dataset": "synthetic", "method": "xtask", "seed": seed, "protocol": "original",
            "config_id": "0123456789abcdef", "config": {"alpha": 0.01},
            "paper": {"miou": miou, "pix_acc": 90.0, "abs_err": 0.02, "rel_err": 0.25},
            "standard": {"miou": miou - 1, "pix_acc": 91.0, "abs_err": 0.021, "rel_err": 0.26, "rmse": 0.03,
                         "delta1": 0.8, "delta2": 0.9, "delta3": 0.95},
            "baseline_mean_depth": {"paper_abs_err": 0.08, "standard_abs_err": 0.081}}


def test_report_stage_writes_both_files_and_keeps_them_on_a_bad_input(tmp_path, monkeypatch):
    for seed, miou in ((0, 55.0), (1, 57.0)):
        write_json(tmp_path / "synthetic" / "xtask" / f"seed{seed}.json", _metrics(seed, miou))
    params = tmp_path / "params.yaml"
    params.write_text(Path("params.yaml").read_text().replace("\nseeds: [0]\n", "\nseeds: [0, 1, 2]\n"))
    monkeypatch.setattr(sys, "argv", ["report", "--metrics", str(tmp_path), "--md", str(tmp_path / "results.md"),
                                      "--csv", str(tmp_path / "results.csv"), "--summary", str(tmp_path / "summary.json"),
                                      "--params", str(params)])
    with pytest.raises(SystemExit) as done:
        run(report_stage.main)  # as `python -m pipeline.report` runs it
    assert done.value.code == 0
    md, csv = (tmp_path / "results.md").read_text(), (tmp_path / "results.csv").read_text()
    assert "| xtask | reproduced, protocol original | paper (per-image) | 2 (0, 1) | 56.00 ± 1.41 | 90.00 ± 0.00 |" in md
    assert csv.startswith("dataset,method,source,protocol,n_seeds,seeds,rel_err_scale,paper_miou_mean,paper_miou_std,")
    assert "synthetic,xtask,reproduced,original,2,0 1,100.0,56.0,1.414" in csv
    summary = (tmp_path / "summary.json").read_text()
    miou = json.loads(summary)["synthetic"]["xtask"]["original"]["paper"]["miou"]
    assert miou["mean"] == 56.0 and miou["n"] == 2 and abs(miou["std"] - 2 ** 0.5) < 1e-12
    (tmp_path / "synthetic" / "xtask" / "seed2.json").write_text("{not json")
    with pytest.raises(SystemExit) as done:
        run(report_stage.main)
    assert done.value.code == 1
    assert (tmp_path / "results.md").read_text() == md and (tmp_path / "results.csv").read_text() == csv
    assert (tmp_path / "summary.json").read_text() == summary


def test_report_names_a_broken_metrics_file(tmp_path):
    bad = tmp_path / "synthetic" / "xtask" / "seed0.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("{not json")
    with pytest.raises(XTaskError, match="seed0.json: not a metrics JSON"):
        collect(tmp_path)


def test_atomic_path_keeps_the_old_output_on_failure(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text('{"v": 2, "half')
            raise RuntimeError("killed mid-write")
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_atomic_path_replaces_a_directory(tmp_path):
    target = tmp_path / "prepared"
    for value in ("old", "new"):
        with atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / "f").write_text(value)
    assert (target / "f").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["prepared"]


def test_report_stage_names_the_files_it_ignored_on_stderr(tmp_path, monkeypatch, capsys):
    for seed in (0, 4):  # params.yaml: seeds [0]; seed 4 is left from an earlier, longer list
        write_json(tmp_path / "synthetic" / "xtask" / f"seed{seed}.json", _metrics(seed, 55.0))
    monkeypatch.setattr(sys, "argv", ["report", "--metrics", str(tmp_path), "--md", str(tmp_path / "results.md"),
                                      "--csv", str(tmp_path / "results.csv"), "--summary", str(tmp_path / "summary.json")])
    with pytest.raises(SystemExit) as done:
        run(report_stage.main)
    assert done.value.code == 0
    seed4 = tmp_path / "synthetic" / "xtask" / "seed4.json"
    assert capsys.readouterr().err == f"{seed4}: ignored: seed 4 is not in params.yaml seeds [0]\n"
    assert json.loads((tmp_path / "summary.json").read_text())["synthetic"]["xtask"]["original"]["paper"]["miou"][
        "n"] == 1
    assert f"- `{seed4}`: seed 4 is not in params.yaml seeds [0]" in (tmp_path / "results.md").read_text()
