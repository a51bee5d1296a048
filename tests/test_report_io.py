import json

import pytest

from xtask.errors import XTaskError
from xtask.io import atomic_path, write_json
from xtask.report import collect, to_markdown


def _metrics(seed, miou):
    return {"dataset": "synthetic", "method": "xtask", "seed": seed,
            "paper": {"miou": miou, "pix_acc": 90.0, "abs_err": 0.02, "rel_err": 0.25},
            "standard": {"miou": miou - 1, "pix_acc": 91.0, "abs_err": 0.021, "rel_err": 0.26, "rmse": 0.03,
                         "delta1": 0.8, "delta2": 0.9, "delta3": 0.95},
            "baseline_mean_depth": {"paper_abs_err": 0.08}}


def test_report_rows_reported_and_pipeline(tmp_path):
    for seed, miou in ((0, 55.0), (1, 57.0)):
        write_json(tmp_path / "synthetic" / "xtask" / f"seed{seed}.json", _metrics(seed, miou))
    df = collect(tmp_path)
    ours = df[df["source"] == "this pipeline"]
    assert list(ours["seeds"]) == ["0", "1"] and list(ours["miou"]) == [55.0, 57.0]
    assert list(ours["rel_err"]) == [25.0, 25.0]  # AbsRel x100, as the Cityscapes-style table prints it
    reported = df[(df["source"] == "reported") & (df["dataset"] == "cityscapes")]
    assert reported.set_index("method").loc["XTask (Ours)", "miou"] == 66.51
    md = to_markdown(df)
    assert md.index("## cityscapes") < md.index("## nyu") < md.index("## synthetic")
    assert "| xtask | this pipeline | 1 | 57.00 | 90.00 | 0.0200 | 25.00 |" in md


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
