"""The results table: the original README's reported rows beside this pipeline's rows.

Three pure steps: ``collect`` reads every ``metrics/<dataset>/<method>/seed<k>.json`` into one row
per run, ``results_table`` aggregates the runs over seeds (mean, sample std, delta_m) and puts the
reported rows before them (this frame is results.csv), ``to_markdown`` renders it (results.md).

Only seeds of one run config are averaged: each file names its config (``config_id``, ``config``:
xtask/evaluation/identity.py), and runs of another config are a row of their own that says what differs.
A file of a seed not in params' ``seeds``, or without a config id, is ignored and named (``ignored``).
``summary`` takes the same frame's reproduced rows into the seed-independent summary.json (DVC's metric).
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Iterable, Optional

import pandas as pd

from xtask.common.config import by_key
from xtask.common.errors import XTaskError
from xtask.common.methods import METHODS

# The original README's tables (mIoU and PixAcc in %, Abs and AbsRel as printed there).
# Cityscapes prints AbsRel x100; NYUv2 prints it as a fraction.
REPORTED = {
    "cityscapes": [
        ("MTAN", 53.04, 91.11, 0.0144, 33.63), ("KD4MTL", 52.71, 91.54, 0.0139, 27.33),
        ("PCGrad", 53.59, 91.45, 0.0171, 31.34), ("AdaMT-Net", 62.53, 94.16, 0.0125, 22.23),
        ("XTask (Ours)", 66.51, 93.56, 0.0122, 19.40),
    ],
    "nyu": [
        ("MTAN* (3 tasks)", 21.07, 55.70, 0.6035, 0.2472), ("MTAN†", 20.10, 53.73, 0.6417, 0.2758),
        ("KD4MTL* (3 tasks)", 20.75, 57.90, 0.5816, 0.2445), ("KD4MTL†", 22.44, 57.32, 0.6003, 0.2601),
        ("PCGrad* (3 tasks)", 20.17, 56.65, 0.5904, 0.2467), ("PCGrad†", 21.29, 54.07, 0.6705, 0.3000),
        ("AdaMT-Net* (3 tasks)", 21.86, 60.35, 0.5933, 0.2456), ("AdaMT-Net†", 20.61, 58.91, 0.6136, 0.2547),
        ("XTask (Ours)†", 30.31, 63.02, 0.5954, 0.2235),
    ],
}
# The reported row a reproduced `xtask` is held against in "Where the reproduction falls".
REPORTED_XTASK = {"cityscapes": "XTask (Ours)", "nyu": "XTask (Ours)†"}
REL_SCALE = {"cityscapes": 100.0, "nyu": 1.0, "synthetic": 100.0}
DATASET_ORDER = ("cityscapes", "nyu", "synthetic")
METHOD_ORDER = tuple(METHODS)
STL = tuple(name for name, m in METHODS.items() if not m.multi_task)  # the baselines of delta_m

SEG = ("miou", "pix_acc")
FAMILIES = {"paper": SEG + ("abs_err", "rel_err"),
            "standard": SEG + ("abs_err", "rel_err", "rmse", "delta1", "delta2", "delta3")}
HIGHER_IS_BETTER = {"miou", "pix_acc", "delta1", "delta2", "delta3"}
LABELS = {"miou": "mIoU", "pix_acc": "PixAcc", "abs_err": "Abs", "rel_err": "AbsRel"}
# delta_m is taken over the paper family's four metrics, the ones the original tables report.
DELTA_M = FAMILIES["paper"]
BASELINES = ("paper_abs_err", "standard_abs_err")  # keys of baseline_mean_depth the table shows

METRICS = [f"{family}_{m}" for family, names in FAMILIES.items() for m in names]
COLUMNS = (["dataset", "method", "source", "protocol", "n_seeds", "seeds", "rel_err_scale"]
           + [f"{c}_{stat}" for c in METRICS for stat in ("mean", "std")]
           + ["delta_m", "delta_m_std", "baseline_paper_abs_err", "baseline_standard_abs_err",
              "config_id", "config_differs"])
SHORT_ID = 8  # of a config id, where a table or a summary key names it
DIFFERS_SHOWN = 4  # differing keys named in a row; the CSV's config_id leads to the rest
SEED_FILE = re.compile(r"seed(\d+)\.json")
MINUS = "\u2212"


def _tasks(method: str) -> tuple[str, ...]:
    return METHODS[method].tasks if method in METHODS else ("seg", "depth")


def _required(method: str, family: str) -> tuple[str, ...]:
    tasks = _tasks(method)
    return tuple(m for m in FAMILIES[family] if ("seg" if m in SEG else "depth") in tasks)


def _number(path: Path, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise XTaskError(f"{path}: not a metrics JSON written by the evaluate stage "
                         f"({key} should be a finite number, got {value!r})")
    return float(value)


def _read_run(path: Path, dataset: str, method: str, seed: int) -> dict[str, Any]:
    """One run's row: the path says which run it is; the JSON must agree with it."""
    try:
        m = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise XTaskError(f"{path}: not a metrics JSON written by the evaluate stage ({err})") from None
    if not isinstance(m, dict):
        raise XTaskError(f"{path}: not a metrics JSON written by the evaluate stage (not a JSON object)")
    said = (m.get("dataset"), m.get("method"), m.get("seed"))
    if said != (dataset, method, seed):
        # a file copied into the wrong folder would silently count twice for one run and never for another
        raise XTaskError(f"{path}: says dataset {said[0]!r}, method {said[1]!r}, seed {said[2]!r}, but its path "
                         f"says {dataset!r}, {method!r}, {seed}; move it to "
                         f"metrics/{said[0]}/{said[1]}/seed{said[2]}.json")
    protocol = m.get("protocol")
    if not isinstance(protocol, str) or not protocol:
        raise XTaskError(f"{path}: not a metrics JSON written by the evaluate stage (no 'protocol' it was trained "
                         "under); rerun the evaluate stage")
    config_id, config = m.get("config_id"), m.get("config")
    if not isinstance(config_id, str) or not config_id or not isinstance(config, dict):
        raise XTaskError(f"{path}: not a metrics JSON written by the evaluate stage (a 'config_id' string and a "
                         "'config' object expected)")
    row: dict[str, Any] = {"dataset": dataset, "method": method, "seed": seed, "path": str(path),
                           "protocol": protocol, "config_id": config_id, "config": config}
    for family in FAMILIES:
        scores = m.get(family)
        if not isinstance(scores, dict):
            raise XTaskError(f"{path}: not a metrics JSON written by the evaluate stage (no {family!r} object)")
        # a single-task net has no head for the other task: anything written for it is not a score
        for key in _required(method, family):
            if key not in scores:
                raise XTaskError(f"{path}: not a metrics JSON written by the evaluate stage "
                                 f"(missing {family}.{key}, which {method} must report)")
            row[f"{family}_{key}"] = _number(path, f"{family}.{key}", scores[key])
    base = m.get("baseline_mean_depth")
    if "depth" in _tasks(method) and isinstance(base, dict):
        for key in BASELINES:
            if key in base:
                row[f"baseline_{key}"] = _number(path, f"baseline_mean_depth.{key}", base[key])
    return row


def _unidentified(path: Path) -> bool:
    """A metrics file from before files named their run config: nothing says which seeds it may join."""
    try:
        m = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False  # _read_run names what is wrong with it
    return isinstance(m, dict) and "config_id" not in m and "config" not in m


def collect(metrics_dir: Path, seeds: Optional[Iterable[int]] = None) -> pd.DataFrame:
    """One row per ``<dataset>/<method>/seed<k>.json`` (other files there, e.g. images, are skipped) of a
    seed in ``seeds`` (None: every seed). The files left out, each with why, are ``.attrs["ignored"]``:
    [(path, reason)]."""
    rows, seen, ignored = [], {}, []
    wanted = None if seeds is None else sorted(set(seeds))
    for path in sorted(Path(metrics_dir).glob("*/*/seed*.json")):
        match = SEED_FILE.fullmatch(path.name)
        if match is None or not path.is_file():
            continue
        dataset, method, seed = path.parent.parent.name, path.parent.name, int(match.group(1))
        if (dataset, method, seed) in seen:  # seed7.json and seed07.json
            raise XTaskError(f"{path}: seed {seed} of {dataset}/{method} is also in {seen[dataset, method, seed]}; "
                             "keep one")
        seen[dataset, method, seed] = path
        if wanted is not None and seed not in wanted:
            # left by an earlier, longer `seeds` list (or another experiment): not part of this table
            ignored.append((str(path), f"seed {seed} is not in params.yaml seeds {wanted}"))
            continue
        if _unidentified(path):
            ignored.append((str(path), "no config_id (evaluated before metrics named their run config); "
                                       "rerun its evaluate stage"))
            continue
        rows.append(_read_run(path, dataset, method, seed))
    columns = (["dataset", "method", "seed", "path", "protocol", "config_id", "config"] + METRICS
               + [f"baseline_{k}" for k in BASELINES])
    runs = pd.DataFrame(rows, columns=columns)
    runs.attrs["ignored"] = ignored
    return runs


def delta_m(scores: dict[str, float], baseline: dict[str, float]) -> float:
    """Δm in % (Liu et al. 2021, CAGrad; Navon et al. 2022, Nash-MTL): the mean over the metrics of the
    signed relative change against the single-task baseline, signed so that lower is better."""
    total = 0.0
    for k in DELTA_M:
        sign = -1.0 if k in HIGHER_IS_BETTER else 1.0
        total += sign * (scores[k] - baseline[k]) / baseline[k]
    return 100.0 * total / len(DELTA_M)


def _baseline(runs: pd.DataFrame) -> Optional[dict[str, float]]:
    """The single-task rows' mean paper metrics of one dataset, or None without both (or with a zero), or
    where a single-task method has runs of several configs (which one is the baseline is then unsaid)."""
    base = {}
    for method in STL:
        part = runs[runs["method"] == method]
        if part.empty or part["config_id"].nunique() > 1:
            return None
        for k in _required(method, "paper"):
            base[k] = float(part[f"paper_{k}"].mean())
    return base if all(v != 0 for v in base.values()) else None


def _method_key(method: str) -> tuple[int, str]:
    return (METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), method)


def _dataset_key(dataset: str) -> tuple[int, str]:
    return (DATASET_ORDER.index(dataset) if dataset in DATASET_ORDER else len(DATASET_ORDER), dataset)


def _value(v: Any) -> str:
    return json.dumps(v, default=str)


def config_differences(configs: dict[str, dict[str, Any]]) -> dict[str, str]:
    """{config id: 'loss.alpha 0.02, code "1a2b..."'}: each config's values of the keys on which the configs
    differ (up to DIFFERS_SHOWN keys; a section's keys as ``section.key``); '' for a lone config."""
    if len(configs) < 2:
        return {cid: "" for cid in configs}
    configs = {cid: by_key(c) for cid, c in configs.items()}
    keys = sorted({k for c in configs.values() for k in c})
    differ = [k for k in keys if len({_value(c.get(k)) for c in configs.values()}) > 1]
    more = f" (+{len(differ) - DIFFERS_SHOWN} more keys)" if len(differ) > DIFFERS_SHOWN else ""
    return {cid: ", ".join(f"{k} {_value(c.get(k))}" for k in differ[:DIFFERS_SHOWN]) + more
            for cid, c in configs.items()}


def aggregate(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, method, protocol, config id): the seeds, mean and sample std (ddof=1; NaN for one seed) of
    every metric, and for multi-task methods delta_m against the same dataset's single-task means. Runs of
    several configs of one method and protocol are rows of their own, each saying what differs.

    AbsRel is scaled as the dataset's table prints it. delta_m is the mean over seeds of each seed's
    delta_m against the fixed baseline means, which equals the delta_m of the mean metrics (it is linear
    in them); delta_m_std is its sample std over seeds.
    """
    rows = []
    for dataset in sorted(runs["dataset"].unique(), key=_dataset_key):
        part = runs[runs["dataset"] == dataset]
        base = _baseline(part)
        scale = REL_SCALE.get(dataset, 1.0)
        groups = part.groupby(["method", "protocol", "config_id"], sort=False)
        differs = {}
        for (method, protocol), same in part.groupby(["method", "protocol"], sort=False):
            configs = {cid: g["config"].iloc[0] for cid, g in same.groupby("config_id", sort=False)}
            differs.update({(method, protocol, cid): text for cid, text in config_differences(configs).items()})
        order = lambda k: (_method_key(k[0]), k[1], int(groups.get_group(k)["seed"].min()), k[2])  # noqa: E731
        for method, protocol, config_id in sorted(groups.groups, key=order):
            g = groups.get_group((method, protocol, config_id)).sort_values("seed")
            row: dict[str, Any] = {"dataset": dataset, "method": method, "source": "reproduced",
                                   "protocol": protocol, "n_seeds": len(g), "seeds": " ".join(str(s) for s in g["seed"]),
                                   "rel_err_scale": scale, "config_id": config_id,
                                   "config_differs": differs[method, protocol, config_id]}
            for col in METRICS:
                values = g[col] * (scale if col.endswith("rel_err") else 1.0)
                row[f"{col}_mean"] = values.mean()
                row[f"{col}_std"] = values.std(ddof=1)
            for key in BASELINES:
                row[f"baseline_{key}"] = g[f"baseline_{key}"].mean()
            if base is not None and method not in STL:
                per_seed = pd.Series([delta_m({k: r[f"paper_{k}"] for k in DELTA_M}, base)
                                      for _, r in g.iterrows()])
                row["delta_m"], row["delta_m_std"] = per_seed.mean(), per_seed.std(ddof=1)
            rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


def reported_rows() -> pd.DataFrame:
    """The original README's rows, numbers unchanged: one run each, paper family only."""
    rows = []
    for dataset, table in REPORTED.items():
        for method, *values in table:
            row = {"dataset": dataset, "method": method, "source": "reported", "protocol": "", "n_seeds": 1,
                   "seeds": "",
                   "rel_err_scale": REL_SCALE[dataset]}
            row.update({f"paper_{k}_mean": v for k, v in zip(FAMILIES["paper"], values)})
            rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


def results_table(runs: pd.DataFrame) -> pd.DataFrame:
    """results.csv: per dataset the reported rows, then the reproduced ones. ``.attrs["ignored"]``: the
    files ``collect`` left out."""
    parts = [reported_rows(), aggregate(runs)]
    table = pd.concat([p for p in parts if not p.empty], ignore_index=True)
    order = table["dataset"].map(lambda d: _dataset_key(d)[0])
    # a stable sort keeps reported-before-reproduced and each part's own order within a dataset
    table = table.assign(_o=order).sort_values(["_o", "dataset"], kind="stable").drop(columns="_o") \
        .reset_index(drop=True)[COLUMNS]
    table.attrs["ignored"] = list(runs.attrs.get("ignored", []))
    return table


# ---------------------------------------------------------------- the summary (DVC's metric)


def _stat(mean: Any, std: Any, n: Any) -> dict[str, Any]:
    """One number over seeds. The std of one seed is undefined (NaN): null, since JSON has no NaN."""
    return {"mean": float(mean), "std": None if _missing(std) else float(std), "n": int(n)}


def summary(table: pd.DataFrame) -> dict[str, Any]:
    """summary.json from ``results_table``'s reproduced rows: {dataset: {method: {protocol: {family:
    {metric: {mean, std, n}}, "delta_m": {mean, std, n}}}}}, the same numbers (and AbsRel scale) as
    results.csv. The keys name no seed, so runs of other seeds of one dataset, method and protocol fill the
    same keys (`dvc exp show` columns). Where runs of several configs share a method and protocol, each
    config's key is ``<protocol>@<config id's first 8 characters>`` instead, so that none is averaged with
    another. A metric the method has no head for, and a delta_m without both single-task baselines (or of
    a baseline itself), is left out rather than written as null."""
    out: dict[str, Any] = {}
    reproduced = table[table["source"] == "reproduced"]
    several = reproduced.groupby(["dataset", "method", "protocol"])["config_id"].transform("nunique") > 1
    for (_, r), split in zip(reproduced.iterrows(), several):
        entry: dict[str, Any] = {}
        for family, names in FAMILIES.items():
            stats = {m: _stat(r[f"{family}_{m}_mean"], r[f"{family}_{m}_std"], r["n_seeds"])
                     for m in names if not _missing(r[f"{family}_{m}_mean"])}
            if stats:
                entry[family] = stats
        if not _missing(r["delta_m"]):
            entry["delta_m"] = _stat(r["delta_m"], r["delta_m_std"], r["n_seeds"])
        key = f"{r['protocol']}@{r['config_id'][:SHORT_ID]}" if split else r["protocol"]
        out.setdefault(r["dataset"], {}).setdefault(r["method"], {})[key] = entry
    return out


def summary_json(data: dict[str, Any]) -> str:
    # allow_nan=False: a NaN that slipped past _stat fails here instead of writing invalid JSON
    return json.dumps(data, indent=2, allow_nan=False) + "\n"


# ---------------------------------------------------------------- rendering


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _decimals(v: float) -> int:
    return 4 if abs(v) < 1 else 2


def _signed(v: float, decimals: int) -> str:
    text = f"{abs(v):.{decimals}f}"
    return (MINUS if v < 0 and float(text) != 0 else "+") + text


def _cell(mean: Any, std: Any = None) -> str:
    """'mean ± std' with the std at the mean's precision; no ± part where the std is undefined (n = 1)."""
    if _missing(mean):
        return ""
    d = _decimals(mean)
    return f"{mean:.{d}f}" if _missing(std) else f"{mean:.{d}f} ± {std:.{d}f}"


def _seeds_cell(r: pd.Series) -> str:
    if r["source"] == "reported":
        return "1 (paper)"
    return f"{r['n_seeds']} ({', '.join(str(r['seeds']).split())})"


def _delta_cell(r: pd.Series) -> str:
    if r["method"] in STL and r["source"] == "reproduced":
        return "baseline"
    if _missing(r["delta_m"]):
        return ""
    text = _signed(r["delta_m"], 2)
    return text if _missing(r["delta_m_std"]) else f"{text} ± {r['delta_m_std']:.2f}"


HEADER = ["| method | source | family | seeds | mIoU | PixAcc | Abs | AbsRel | RMSE | δ<1.25 | Δm (%) "
          "| mean-depth Abs |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|"]


def _family_row(r: pd.Series, family: str) -> str:
    name = "paper (per-image)" if family == "paper" else "standard (dataset-level)"
    cells = [_cell(r.get(f"{family}_{m}_mean"), r.get(f"{family}_{m}_std"))
             for m in ("miou", "pix_acc", "abs_err", "rel_err", "rmse", "delta1")]
    delta = _delta_cell(r) if family == "paper" else ""
    base = _cell(r[f"baseline_{family}_abs_err"])
    source = r["source"] if r["source"] == "reported" else f"{r['source']}, protocol {r['protocol']}"
    if r["source"] == "reproduced" and not _missing(r["config_differs"]) and r["config_differs"]:
        source += f", config {r['config_id'][:SHORT_ID]}: {r['config_differs']}"
    return f"| {r['method']} | {source} | {name} | {_seeds_cell(r)} | " + " | ".join(cells) + \
        f" | {delta} | {base} |"


def _falls_part(metric: str, mean: float, std: float, n: int, reported: float) -> str:
    d = _decimals(reported)
    diff = mean - reported
    if metric in SEG:  # percentages: a difference in points
        change = f"{_signed(diff, 2)} points"
    else:  # errors in the dataset's unit: a relative difference
        change = f"{_signed(100 * diff / reported, 1)} %"
    better = diff > 0 if metric in HIGHER_IS_BETTER else diff < 0
    verdict = "equal" if diff == 0 else ("better" if better else "worse")
    if n < 2 or _missing(std):
        spread = "n=1, no std"
    else:
        spread = "within ±2 std" if abs(diff) <= 2 * std else "outside ±2 std"
    return (f"{LABELS[metric]} {_cell(mean, std)} (n={n}) vs reported {reported:.{d}f}: "
            f"{change} ({verdict}), {spread}")


def where_it_falls(table: pd.DataFrame, dataset: str) -> str:
    """One line: the reproduced xtask row's paper metrics against the reported XTask row."""
    head = "**Where the reproduction falls:** "
    if dataset not in REPORTED_XTASK:
        what = " (the embedded dataset)" if dataset == "synthetic" else ""
        return head + f"no reported numbers for {dataset}{what}."
    reproduced = table[(table["dataset"] == dataset) & (table["source"] == "reproduced")]
    ours = reproduced[reproduced["method"] == "xtask"]
    if ours.empty:
        return head + f"no reproduced {'xtask ' if len(reproduced) else ''}runs for {dataset} yet."
    ref = table[(table["dataset"] == dataset) & (table["source"] == "reported")
                & (table["method"] == REPORTED_XTASK[dataset])].iloc[0]
    r = ours.iloc[0]
    if len(ours) > 1:
        head += f"(the first of {len(ours)} xtask rows, config {r['config_id'][:SHORT_ID]}) "
    parts = [_falls_part(m, r[f"paper_{m}_mean"], r[f"paper_{m}_std"], int(r["n_seeds"]), ref[f"paper_{m}_mean"])
             for m in FAMILIES["paper"]]
    return head + f"xtask (paper family) against the reported {REPORTED_XTASK[dataset]}: " + "; ".join(parts) + "."


INTRO = [
    "# Results", "",
    "Generated by `dvc repro` (stage `report`) from `metrics/<dataset>/<method>/seed<k>.json`; the same "
    "numbers, unrounded, are in `metrics/results.csv`.", "",
    "- **Rows.** `reported` rows are the original README's tables, copied unchanged: one run each, paper "
    "family. `reproduced` rows are this pipeline's runs: `xtask` (the paper), `mtl` (the same encoder, "
    "decoders and loss balancing without the TaskTransferNets), `stl_seg` and `stl_depth` (single-task "
    "networks, as the original's `main_stl.py`); each has one row per metric family and names the protocol "
    "it was trained under (`original`: as the original code trained; `corrected`: this project's corrections; "
    "`original+<correction>`: the original with some of them; docs/protocol.md).",
    "- **Metric families.** `paper (per-image)` uses the published tables' definitions (per-image mIoU and "
    "PixAcc, batch-weighted Abs/AbsRel); `standard (dataset-level)` uses a dataset-level confusion matrix "
    "and pixel-weighted errors, plus RMSE and δ<1.25. mIoU and PixAcc in %; AbsRel x100 for Cityscapes "
    "and synthetic (as the original README prints it), a fraction for NYUv2. Cityscapes depth is inverse "
    "depth; NYUv2 depth is in metres.",
    "- **Seeds.** `seeds` is the number of seeds (the seeds in brackets); a cell is the mean ± the sample "
    "standard deviation (ddof = 1) over those seeds. With one seed the std is undefined and only the mean "
    "is shown.",
    "- **Δm** (Liu et al. 2021, CAGrad; Navon et al. 2022, Nash-MTL): Δm = (1/K) Σ_k (−1)^δ_k "
    "(M_m,k − M_b,k) / M_b,k × 100 %, over the K = 4 paper-family metrics (mIoU, PixAcc, Abs, AbsRel), "
    "δ_k = 1 where higher is better (mIoU, PixAcc), 0 where lower is better (Abs, AbsRel). The baseline "
    "M_b is the mean over seeds of the same dataset's `stl_seg` row (mIoU, PixAcc) and `stl_depth` row "
    "(Abs, AbsRel). **Lower is better; Δm < 0 beats single-task learning.** The ± part is the sample std "
    "over the method's seeds of each seed's Δm against those baseline means. The single-task rows are the "
    "baseline (`baseline`, blank in the CSV); Δm is blank when a dataset lacks either single-task row.",
    "- **Configs.** Only seeds of one run config are averaged: every metrics file names the config that "
    "decided its run (`config_id`: a hash of the train stage's params, the method, the prepared data and "
    "the code). Runs of another config of the same method and protocol are a row of their own, which names "
    "its config id and the values that differ. Files of seeds not in params.yaml `seeds`, or without a "
    "config id, are not counted; they are listed under \"Ignored files\".",
    "- **mean-depth Abs** is the Abs error (of that family) of predicting the training set's mean depth "
    "everywhere: a model that learned depth must beat it.",
    "",
]


def to_markdown(table: pd.DataFrame) -> str:
    lines = list(INTRO)
    reproduced = table[table["source"] == "reproduced"]
    if reproduced.empty:
        lines += ["No runs yet: no `metrics/<dataset>/<method>/seed<k>.json` found, so the tables hold only "
                  "the reported rows.", ""]
    datasets = sorted(set(table["dataset"]) | set(DATASET_ORDER), key=_dataset_key)
    for dataset in datasets:
        part = table[table["dataset"] == dataset]
        ours = part[part["source"] == "reproduced"]
        lines += [f"## {dataset}", ""]
        if part.empty:
            lines += [f"No reproduced runs for {dataset} yet.", ""]
        else:
            lines += HEADER
            for _, r in part.iterrows():
                families: Iterable[str] = ("paper",) if r["source"] == "reported" else FAMILIES
                lines += [_family_row(r, f) for f in families]
            lines.append("")
        multi = ours[~ours["method"].isin(list(STL))]
        if len(multi) and multi["delta_m"].isna().all():
            have = sorted(set(ours["method"]) & set(STL))
            split = sorted(m for m in STL if (ours["method"] == m).sum() > 1)
            why = (f"it needs both `stl_seg` and `stl_depth` runs for {dataset} "
                   f"(found: {', '.join(have) if have else 'neither'})" if len(have) < len(STL)
                   else f"{', '.join(split)} has runs of several configs, so which is the baseline is unsaid"
                   if split else "a single-task baseline metric is 0, so the relative change is undefined")
            lines += [f"Δm is blank: {why}.", ""]
        lines += [where_it_falls(table, dataset), ""]
    ignored = table.attrs.get("ignored", [])
    if ignored:
        lines += ["## Ignored files", "", "Not counted in any row above:", ""]
        lines += [f"- `{path}`: {reason}" for path, reason in ignored]
        lines.append("")
    return "\n".join(lines)
