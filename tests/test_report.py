"""The results table: aggregation over seeds, delta_m, rendering, the reported rows."""
import hashlib
import json
import math

import pytest

from xtask.common.errors import XTaskError
from xtask.common.io import write_json
from xtask.reporting.report import (REPORTED, collect, delta_m, results_table, summary, summary_json, to_markdown,
                                    where_it_falls)

SEG_KEYS = ("miou", "pix_acc")


def configured(m, **changes):
    """``m`` with its run config changed (protocol too, when given) and its config id to match, as the
    evaluate stage writes them (xtask/evaluation/identity.py)."""
    config = {**m["config"], **changes}
    m["protocol"] = config["protocol"]
    m["config"] = config
    m["config_id"] = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
    return m


def _metrics(dataset, method, seed, miou=55.0, pix=90.0, abs_err=0.012, rel=0.2):
    """A metrics JSON as the evaluate stage writes it; stl methods carry only their own task."""
    m = {"dataset": dataset, "method": method, "seed": seed, "best_epoch": 10, "val_images": 500,
         "depth_unit": "inverse_depth", "amp": "off", "protocol": "original",
         "config": {"dataset": dataset, "method": method, "protocol": "original", "alpha": 0.01, "code": "c0de"},
         "paper": {"miou": miou, "pix_acc": pix, "abs_err": abs_err, "rel_err": rel},
         "standard": {"miou": miou + 5, "pix_acc": pix + 0.5, "abs_err": abs_err * 1.1, "rel_err": rel * 1.1,
                      "rmse": abs_err * 2, "delta1": 0.8, "delta2": 0.9, "delta3": 0.95},
         "standard_iou_per_class": {"flat": 90.0},
         "baseline_mean_depth": {"train_depth_mean": 0.1, "paper_abs_err": 0.08, "paper_rel_err": 1.2,
                                 "standard_abs_err": 0.081, "standard_rmse": 0.09}}
    if method == "stl_seg":
        for family in ("paper", "standard"):
            m[family] = {k: v for k, v in m[family].items() if k in SEG_KEYS}
        del m["baseline_mean_depth"]
    elif method == "stl_depth":
        for family in ("paper", "standard"):
            m[family] = {k: v for k, v in m[family].items() if k not in SEG_KEYS}
        del m["standard_iou_per_class"]
    return configured(m)


# cityscapes: 3 xtask seeds, 2 of mtl and of each single-task method; nyu: one xtask seed;
# synthetic: xtask and stl_seg only (no depth baseline, so no delta_m).
RUNS = {
    ("cityscapes", "xtask"): [dict(miou=55.0, pix=90.0, abs_err=0.012, rel=0.18),
                              dict(miou=56.0, pix=91.0, abs_err=0.013, rel=0.20),
                              dict(miou=57.0, pix=92.0, abs_err=0.014, rel=0.22)],
    ("cityscapes", "mtl"): [dict(miou=50.0, pix=91.0, abs_err=0.013, rel=0.25),
                            dict(miou=52.0, pix=91.0, abs_err=0.013, rel=0.25)],
    ("cityscapes", "stl_seg"): [dict(miou=49.0, pix=90.0), dict(miou=51.0, pix=92.0)],
    ("cityscapes", "stl_depth"): [dict(abs_err=0.0125, rel=0.25), dict(abs_err=0.0135, rel=0.25)],
    ("nyu", "xtask"): [dict(miou=30.0, pix=64.0, abs_err=0.6, rel=0.22)],
    ("synthetic", "xtask"): [dict(miou=55.0)],
    ("synthetic", "stl_seg"): [dict(miou=54.0)],
}


@pytest.fixture
def metrics_dir(tmp_path):
    for (dataset, method), seeds in RUNS.items():
        folder = tmp_path / dataset / method
        for seed, values in enumerate(seeds):
            write_json(folder / f"seed{seed}.json", _metrics(dataset, method, seed, **values))
        # files the evaluate stage may leave beside the seed metrics: never read as runs
        (folder / "seed0_examples.png").write_bytes(b"\x89PNG")
        write_json(folder / "inference.json", {"ms_per_image": 3.0})
    return tmp_path


def _row(table, dataset, method, source="reproduced"):
    rows = table[(table["dataset"] == dataset) & (table["method"] == method) & (table["source"] == source)]
    assert len(rows) == 1
    return rows.iloc[0]


def _md_rows(md, dataset):
    """The table lines of one dataset's section."""
    section = md.split(f"## {dataset}\n", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| ") and "---" not in line][1:]


def test_collect_reads_only_seed_files_and_leaves_the_missing_task_empty(metrics_dir):
    runs = collect(metrics_dir)
    assert len(runs) == sum(len(v) for v in RUNS.values())
    seg = runs[runs["method"] == "stl_seg"]
    assert seg["paper_miou"].notna().all() and seg["paper_abs_err"].isna().all()
    assert seg["standard_rmse"].isna().all() and seg["baseline_paper_abs_err"].isna().all()
    dep = runs[runs["method"] == "stl_depth"]
    assert dep["paper_miou"].isna().all() and dep["standard_delta3"].notna().all()


def test_mean_and_sample_std_over_seeds(metrics_dir):
    table = results_table(collect(metrics_dir))
    x = _row(table, "cityscapes", "xtask")
    assert x["n_seeds"] == 3 and x["seeds"] == "0 1 2"
    assert x["paper_miou_mean"] == pytest.approx(56.0) and x["paper_miou_std"] == pytest.approx(1.0)
    assert x["paper_abs_err_mean"] == pytest.approx(0.013) and x["paper_abs_err_std"] == pytest.approx(0.001)
    # AbsRel x100 on Cityscapes: 18, 20, 22 -> 20 ± 2 (sample std, ddof=1; population std would be 1.63)
    assert x["paper_rel_err_mean"] == pytest.approx(20.0) and x["paper_rel_err_std"] == pytest.approx(2.0)
    assert x["standard_miou_mean"] == pytest.approx(61.0) and x["standard_delta1_std"] == pytest.approx(0.0)
    assert x["baseline_paper_abs_err"] == pytest.approx(0.08)
    nyu = _row(table, "nyu", "xtask")
    assert nyu["n_seeds"] == 1 and nyu["paper_rel_err_mean"] == pytest.approx(0.22)  # a fraction on NYUv2
    assert math.isnan(nyu["paper_miou_std"])


def test_delta_m_by_hand():
    base = {"miou": 50.0, "pix_acc": 90.0, "abs_err": 0.02, "rel_err": 0.25}
    # mIoU 50 -> 55 is +10 % (better, so -10); PixAcc unchanged; Abs 0.02 -> 0.03 is +50 % (worse);
    # AbsRel 0.25 -> 0.20 is -20 % (better): (-10 + 0 + 50 - 20) / 4 = +5 %
    assert delta_m({"miou": 55.0, "pix_acc": 90.0, "abs_err": 0.03, "rel_err": 0.20}, base) == pytest.approx(5.0)
    assert delta_m(base, base) == 0.0
    assert delta_m({**base, "miou": 55.0}, base) == pytest.approx(-2.5)


def test_delta_m_against_the_single_task_means(metrics_dir):
    table = results_table(collect(metrics_dir))
    # baseline: stl_seg mIoU 50, PixAcc 91; stl_depth Abs 0.013, AbsRel 0.25.
    # xtask means 56, 91, 0.013, 0.20: (-12 + 0 + 0 - 20) / 4 = -8 %.
    # per seed: -11.148, -8.000, -4.852 -> sample std 3.148.
    x = _row(table, "cityscapes", "xtask")
    assert x["delta_m"] == pytest.approx(-8.0)
    per_seed = [(-(55 - 50) / 50 - (90 - 91) / 91 + (0.012 - 0.013) / 0.013 + (0.18 - 0.25) / 0.25) * 25,
                -8.0,
                (-(57 - 50) / 50 - (92 - 91) / 91 + (0.014 - 0.013) / 0.013 + (0.22 - 0.25) / 0.25) * 25]
    mean = sum(per_seed) / 3
    std = math.sqrt(sum((v - mean) ** 2 for v in per_seed) / 2)
    assert x["delta_m_std"] == pytest.approx(std) and std == pytest.approx(3.148, abs=1e-3)
    # mtl means 51, 91, 0.013, 0.25: (-2 + 0 + 0 + 0) / 4 = -0.5 %; seeds -1 % and 0 % -> std 0.707
    m = _row(table, "cityscapes", "mtl")
    assert m["delta_m"] == pytest.approx(-0.5) and m["delta_m_std"] == pytest.approx(math.sqrt(0.5))
    for method in ("stl_seg", "stl_depth"):  # the baseline itself: blank, shown as "baseline"
        assert math.isnan(_row(table, "cityscapes", method)["delta_m"])
    # nyu has no single-task rows, synthetic only stl_seg: no delta_m there
    assert math.isnan(_row(table, "nyu", "xtask")["delta_m"])
    assert math.isnan(_row(table, "synthetic", "xtask")["delta_m"])
    md = to_markdown(table)
    assert "Δm is blank: it needs both `stl_seg` and `stl_depth` runs for synthetic (found: stl_seg)." in md
    assert "Δm is blank: it needs both `stl_seg` and `stl_depth` runs for nyu (found: neither)." in md
    assert "Δm is blank" not in md.split("## cityscapes")[1].split("## nyu")[0]


def test_markdown_rows_mean_std_blank_cells_and_n1(metrics_dir):
    md = to_markdown(results_table(collect(metrics_dir)))
    rows = _md_rows(md, "cityscapes")
    assert ("| xtask | reproduced, protocol original | paper (per-image) | 3 (0, 1, 2) | 56.00 ± 1.00 | 91.00 ± 1.00 | "
            "0.0130 ± 0.0010 | 20.00 ± 2.00 |  |  | −8.00 ± 3.15 | 0.0800 |") in rows
    assert ("| xtask | reproduced, protocol original | standard (dataset-level) | 3 (0, 1, 2) | 61.00 ± 1.00 | 91.50 ± 1.00 | "
            "0.0143 ± 0.0011 | 22.00 ± 2.20 | 0.0260 ± 0.0020 | 0.8000 ± 0.0000 |  | 0.0810 |") in rows
    # single-task rows: the other task's cells stay empty, delta_m says it is the baseline
    assert ("| stl_seg | reproduced, protocol original | paper (per-image) | 2 (0, 1) | 50.00 ± 1.41 | 91.00 ± 1.41 "
            "|  |  |  |  | baseline |  |") in rows
    assert ("| stl_depth | reproduced, protocol original | paper (per-image) | 2 (0, 1) |  |  | 0.0130 ± 0.0007 | 25.00 ± 0.00 "
            "|  |  | baseline | 0.0800 |") in rows
    # one seed: the mean alone, no "± nan"
    assert ("| xtask | reproduced, protocol original | paper (per-image) | 1 (0) | 30.00 | 64.00 | 0.6000 | 0.2200 |  |  |  "
            "| 0.0800 |") in _md_rows(md, "nyu")
    assert "nan" not in md.lower()


def test_reported_rows_are_kept_unchanged_and_come_first(metrics_dir):
    table = results_table(collect(metrics_dir))
    for dataset, rows in REPORTED.items():
        got = table[(table["dataset"] == dataset) & (table["source"] == "reported")]
        assert [tuple(r) for r in got[["method", "paper_miou_mean", "paper_pix_acc_mean", "paper_abs_err_mean",
                                       "paper_rel_err_mean"]].itertuples(index=False)] == rows
        sources = list(table[table["dataset"] == dataset]["source"])
        assert sources == sorted(sources)  # "reported" before "reproduced"
    md = to_markdown(table)
    assert "| XTask (Ours) | reported | paper (per-image) | 1 (paper) | 66.51 | 93.56 | 0.0122 | 19.40 |" in md
    assert "| XTask (Ours)† | reported | paper (per-image) | 1 (paper) | 30.31 | 63.02 | 0.5954 | 0.2235 |" in md
    assert "| PCGrad† | reported | paper (per-image) | 1 (paper) | 21.29 | 54.07 | 0.6705 | 0.3000 |" in md
    assert md.index("## cityscapes") < md.index("## nyu") < md.index("## synthetic")
    assert _md_rows(md, "cityscapes")[0].startswith("| MTAN | reported |")


def test_where_the_reproduction_falls(metrics_dir):
    table = results_table(collect(metrics_dir))
    line = where_it_falls(table, "cityscapes")
    assert line.startswith("**Where the reproduction falls:** xtask (paper family) against the reported "
                           "XTask (Ours): ")
    assert "mIoU 56.00 ± 1.00 (n=3) vs reported 66.51: −10.51 points (worse), outside ±2 std" in line
    assert "PixAcc 91.00 ± 1.00 (n=3) vs reported 93.56: −2.56 points (worse), outside ±2 std" in line
    # 0.013 vs 0.0122 is +6.6 % (relative), within 2 x 0.001 of it
    assert "Abs 0.0130 ± 0.0010 (n=3) vs reported 0.0122: +6.6 % (worse), within ±2 std" in line
    assert "AbsRel 20.00 ± 2.00 (n=3) vs reported 19.40: +3.1 % (worse), within ±2 std" in line
    nyu = where_it_falls(table, "nyu")
    assert "mIoU 30.00 (n=1) vs reported 30.31: −0.31 points (worse), n=1, no std" in nyu
    assert "PixAcc 64.00 (n=1) vs reported 63.02: +0.98 points (better), n=1, no std" in nyu
    assert "AbsRel 0.2200 (n=1) vs reported 0.2235: −1.6 % (better)" in nyu
    assert where_it_falls(table, "synthetic") == ("**Where the reproduction falls:** no reported numbers for "
                                                  "synthetic (the embedded dataset).")
    assert where_it_falls(table, "synthetic") in to_markdown(table)


def test_no_runs_gives_the_reported_rows_only(tmp_path):
    (tmp_path / "cityscapes").mkdir()
    (tmp_path / "cityscapes" / "README.md").write_text("placeholder")
    table = results_table(collect(tmp_path))
    assert set(table["source"]) == {"reported"}
    assert len(table) == sum(len(rows) for rows in REPORTED.values())
    md = to_markdown(table)
    assert "No runs yet: no `metrics/<dataset>/<method>/seed<k>.json` found" in md
    assert "**Where the reproduction falls:** no reproduced runs for cityscapes yet." in md
    assert "## synthetic\n\nNo reproduced runs for synthetic yet." in md
    assert "66.51" in md and "30.31" in md


@pytest.mark.parametrize("method, drop, message", [
    ("xtask", ("paper", "rel_err"), "missing paper.rel_err, which xtask must report"),
    ("stl_seg", ("standard", "miou"), "missing standard.miou, which stl_seg must report"),
    ("stl_depth", ("standard", "rmse"), "missing standard.rmse, which stl_depth must report"),
])
def test_a_run_without_its_metrics_is_refused(tmp_path, method, drop, message):
    m = _metrics("cityscapes", method, 0)
    del m[drop[0]][drop[1]]
    write_json(tmp_path / "cityscapes" / method / "seed0.json", m)
    with pytest.raises(XTaskError, match=f"seed0.json: not a metrics JSON .*{message}"):
        collect(tmp_path)


def test_a_non_number_and_a_misplaced_file_are_refused(tmp_path):
    m = _metrics("nyu", "xtask", 0)
    m["paper"]["miou"] = "55"
    write_json(tmp_path / "nyu" / "xtask" / "seed0.json", m)
    with pytest.raises(XTaskError, match=r"paper.miou should be a finite number, got '55'"):
        collect(tmp_path)
    write_json(tmp_path / "nyu" / "xtask" / "seed0.json", _metrics("nyu", "xtask", 1))
    with pytest.raises(XTaskError, match=r"seed0.json: says dataset 'nyu', method 'xtask', seed 1, but its path "
                                         r"says 'nyu', 'xtask', 0; move it to metrics/nyu/xtask/seed1.json"):
        collect(tmp_path)


def test_stl_seg_ignores_depth_numbers_it_cannot_have(tmp_path):
    m = _metrics("cityscapes", "xtask", 0)
    m["method"] = "stl_seg"  # a full schema: the single-task net's depth numbers are not scores
    write_json(tmp_path / "cityscapes" / "stl_seg" / "seed0.json", m)
    row = collect(tmp_path).iloc[0]
    assert row["paper_miou"] == 55.0 and math.isnan(row["paper_abs_err"])
    assert math.isnan(row["baseline_paper_abs_err"])


def test_within_two_std_is_two_std(tmp_path):
    for seed, miou in enumerate((64.0, 65.0, 66.0)):  # 65 ± 1: 66.51 is 1.51 away, inside 2 std, outside 1
        write_json(tmp_path / "cityscapes" / "xtask" / f"seed{seed}.json",
                   _metrics("cityscapes", "xtask", seed, miou=miou, pix=90.0 + 2 * seed))
    line = where_it_falls(results_table(collect(tmp_path)), "cityscapes")
    assert "mIoU 65.00 ± 1.00 (n=3) vs reported 66.51: −1.51 points (worse), within ±2 std" in line
    # PixAcc 92 ± 2 vs 93.56: within; the depth errors are identical over seeds (std 0): outside
    assert "PixAcc 92.00 ± 2.00 (n=3) vs reported 93.56: −1.56 points (worse), within ±2 std" in line
    assert "Abs 0.0120 ± 0.0000 (n=3) vs reported 0.0122: −1.6 % (better), outside ±2 std" in line


def test_runs_of_each_protocol_are_rows_of_their_own(tmp_path):
    for seed, protocol, miou in ((0, "original", 50.0), (1, "original", 52.0), (2, "corrected", 60.0)):
        m = configured(_metrics("synthetic", "xtask", seed, miou=miou), protocol=protocol)
        write_json(tmp_path / "synthetic" / "xtask" / f"seed{seed}.json", m)
    table = results_table(collect(tmp_path))
    ours = table[table["source"] == "reproduced"].set_index("protocol")
    assert ours.loc["original", "paper_miou_mean"] == 51.0 and ours.loc["original", "n_seeds"] == 2
    assert ours.loc["corrected", "paper_miou_mean"] == 60.0 and ours.loc["corrected", "seeds"] == "2"
    assert "| xtask | reproduced, protocol corrected | paper (per-image) | 1 (2) | 60.00 |" in to_markdown(table)


def _strict_json(text):
    def refuse(name):
        raise ValueError(f"not JSON: {name}")
    return json.loads(text, parse_constant=refuse)


def test_the_summary_holds_the_tables_numbers_under_seed_free_keys(metrics_dir):
    table = results_table(collect(metrics_dir))
    s = _strict_json(summary_json(summary(table)))
    assert list(s) == ["cityscapes", "nyu", "synthetic"]  # reproduced rows only, in the table's order
    assert list(s["cityscapes"]) == ["xtask", "mtl", "stl_seg", "stl_depth"]
    x = s["cityscapes"]["xtask"]["original"]
    assert list(x) == ["paper", "standard", "delta_m"]
    assert x["paper"]["miou"] == {"mean": pytest.approx(56.0), "std": pytest.approx(1.0), "n": 3}
    assert x["paper"]["rel_err"]["mean"] == pytest.approx(20.0)  # scaled as results.csv (x100 on Cityscapes)
    assert set(x["standard"]) == {"miou", "pix_acc", "abs_err", "rel_err", "rmse", "delta1", "delta2", "delta3"}
    row = _row(table, "cityscapes", "xtask")
    assert x["delta_m"] == {"mean": row["delta_m"], "std": row["delta_m_std"], "n": 3}  # the table's own numbers
    # a single-task net: its task's metrics only, and no delta_m (it is the baseline)
    seg = s["cityscapes"]["stl_seg"]["original"]
    assert set(seg) == {"paper", "standard"} and set(seg["paper"]) == {"miou", "pix_acc"}
    # one seed: the std is undefined, null in JSON; no baselines: no delta_m
    nyu = s["nyu"]["xtask"]["original"]
    assert nyu["paper"]["miou"] == {"mean": 30.0, "std": None, "n": 1} and "delta_m" not in nyu
    assert "NaN" not in summary_json(summary(table))


def test_the_summary_keeps_protocols_apart_and_refuses_nan(tmp_path):
    for seed, protocol in ((0, "original"), (1, "corrected")):
        m = configured(_metrics("synthetic", "xtask", seed), protocol=protocol)
        write_json(tmp_path / "synthetic" / "xtask" / f"seed{seed}.json", m)
    s = summary(results_table(collect(tmp_path)))
    assert set(s["synthetic"]["xtask"]) == {"original", "corrected"}
    assert summary(results_table(collect(tmp_path / "none"))) == {}
    with pytest.raises(ValueError):
        summary_json({"x": float("nan")})


def test_seeds_of_two_configs_are_two_rows_never_one_average(tmp_path):
    # the scenario: seed 0 trained with alpha 0.01, seed 1 with alpha 0.02
    for seed, alpha, miou in ((0, 0.01, 50.0), (1, 0.02, 60.0)):
        write_json(tmp_path / "synthetic" / "xtask" / f"seed{seed}.json",
                   configured(_metrics("synthetic", "xtask", seed, miou=miou), alpha=alpha))
    table = results_table(collect(tmp_path, seeds=[0, 1]))
    ours = table[table["source"] == "reproduced"]
    assert list(ours["n_seeds"]) == [1, 1] and list(ours["seeds"]) == ["0", "1"]
    assert list(ours["paper_miou_mean"]) == [50.0, 60.0]
    assert list(ours["config_differs"]) == ["alpha 0.01", "alpha 0.02"]
    md = to_markdown(table)
    ids = list(ours["config_id"])
    assert f"| xtask | reproduced, protocol original, config {ids[0][:8]}: alpha 0.01 | paper (per-image) | 1 (0) " \
           "| 50.00 |" in md
    assert f"config {ids[1][:8]}: alpha 0.02 | paper (per-image) | 1 (1) | 60.00 |" in md
    s = summary(table)["synthetic"]["xtask"]
    assert sorted(s) == sorted(f"original@{i[:8]}" for i in ids)
    assert {v["paper"]["miou"]["n"] for v in s.values()} == {1}
    # one config again: the plain protocol key, one row of n=2
    write_json(tmp_path / "synthetic" / "xtask" / "seed1.json",
               configured(_metrics("synthetic", "xtask", 1, miou=60.0), alpha=0.01))
    s = summary(results_table(collect(tmp_path, seeds=[0, 1])))["synthetic"]["xtask"]
    assert list(s) == ["original"] and s["original"]["paper"]["miou"]["n"] == 2


def test_files_of_other_seeds_or_without_a_config_id_are_named_and_not_counted(tmp_path):
    folder = tmp_path / "cityscapes" / "xtask"
    for seed in (0, 1, 2):
        write_json(folder / f"seed{seed}.json", _metrics("cityscapes", "xtask", seed, miou=50.0 + seed))
    old = _metrics("cityscapes", "xtask", 3, miou=99.0)
    del old["config_id"], old["config"]  # evaluated before metrics named their config
    write_json(folder / "seed3.json", old)
    runs = collect(tmp_path, seeds=[0, 1, 3])
    assert sorted(runs["seed"]) == [0, 1]
    assert [(p.split("/")[-1], why.split(" (")[0]) for p, why in runs.attrs["ignored"]] == [
        ("seed2.json", "seed 2 is not in params.yaml seeds [0, 1, 3]"), ("seed3.json", "no config_id")]
    table = results_table(runs)
    assert _row(table, "cityscapes", "xtask")["n_seeds"] == 2
    md = to_markdown(table)
    ignored = md.split("## Ignored files\n", 1)[1]
    assert f"`{folder / 'seed2.json'}`: seed 2 is not in params.yaml seeds [0, 1, 3]" in ignored
    assert f"`{folder / 'seed3.json'}`: no config_id" in ignored
    # a config id without its config is no file of the evaluate stage
    bad = _metrics("cityscapes", "xtask", 0)
    del bad["config"]
    write_json(folder / "seed0.json", bad)
    with pytest.raises(XTaskError, match="seed0.json: not a metrics JSON .*'config_id' string and a 'config' object"):
        collect(tmp_path)
