"""A battery of bad inputs (params and data), each run as a stage subprocess the way DVC runs it.

Every case must exit non-zero with exactly one line on stderr, ``error: ...``, naming the file or
the dotted params key at fault, with no Python traceback and no partial output (no
``data/prepared/<dataset>``, no models/ or dvclive/, no leftover ``.``-temporaries).

A stage process spends ~3.5 s of CPU importing torch and torchvision, too much for ~25 cases on
2 cores. So most cases run in a child forked from one helper process that has imported only the
third-party libraries (torch, torchvision, cv2, dvclive, ...): the child changes to the case's
directory and runs ``python -m pipeline.<stage>`` there with ``runpy`` (alter_sys, as ``-m`` does),
with the interpreter's own exit handling (SystemExit code; an uncaught exception prints its
traceback and exits 1), so the project code (xtask/, pipeline/) is imported fresh from the case's
copy. Cases marked ``real`` (and the keep-the-previous-copy case) run as plain
``python -m pipeline.<stage>`` subprocesses, which also catches anything printed at import time.
All cases run once, concurrently, in a module fixture; each parametrized test checks its result.
"""
from __future__ import annotations

import concurrent.futures
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import cv2
import numpy as np
import pytest
import yaml

from test_pipeline import ROOT, _env
from xtask.common.config import OWNER
from xtask.data.synthetic import generate

CS_H, CS_W = 64, 128  # raw synthetic size (the prepared size is the params' height/width)
NYU_H, NYU_W = 32, 64
STEM = "syntha_000000_000000"  # the first train sample of the synthetic set (city syntha)


# The paths dvc.yaml hands each stage.
STAGE_ARGS = {"prepare": "--out data/prepared/{0}",
              "train": "--data data/prepared/{0} --out models/{0}/xtask/seed0 --live dvclive/{0}/xtask/seed0"}


def _args(stage: str, dataset: str) -> list[str]:
    return [dataset, "--no-progress", *STAGE_ARGS[stage].format(dataset).split()]


# ---- the base repository copy and raw datasets ----------------------------------------------------

def _put(section: dict, **kv) -> None:
    """Set keys of a dataset section, each in its sub-section (``generate`` replaces that sub-section)."""
    for key, value in kv.items():
        if key == "generate":
            section[key] = value
        else:
            section[OWNER[key]][key] = value


def _params() -> dict:
    """params.yaml with a tiny synthetic section and an nyu section for a subset."""
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    _put(p["synthetic"], input_path="raw", height=32, width=64, epochs=1, batch_size=2,
         decoder_width=8, ttnet_width=4, workers=0, device="cpu",
         generate={"seed": 3, "n_train": 3, "n_val": 2, "height": CS_H, "width": CS_W})
    _put(p["nyu"], input_path="raw", expect_full_size=False, height=32, width=64, epochs=1, batch_size=2,
         enc_layers=18, decoder_width=8, ttnet_width=4, workers=0, device="cpu")
    return p


def _make_nyu(root: Path) -> None:
    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("val", 2)):
        for kind in ("image", "label", "depth"):
            (root / split / kind).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            np.save(root / split / "image" / f"{i}.npy", rng.random((NYU_H, NYU_W, 3)).astype(np.float32))
            np.save(root / split / "label" / f"{i}.npy",
                    rng.integers(-1, 13, (NYU_H, NYU_W)).astype(np.float32))
            np.save(root / split / "depth" / f"{i}.npy",
                    rng.uniform(0.5, 10, (NYU_H, NYU_W, 1)).astype(np.float32))


@dataclass
class Base:
    repo: Path  # xtask/, pipeline/, params.yaml
    cityscapes: Path  # raw synthetic data in the Cityscapes format
    nyu: Path  # raw NYUv2 layout


def _make_base(root: Path) -> Base:
    repo = root / "repo"
    repo.mkdir(parents=True)
    for name in ("xtask", "pipeline"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "params.yaml").write_text(yaml.safe_dump(_params(), sort_keys=False))
    cs = root / "cityscapes"
    generate(cs, seed=3, n_train=3, n_val=2, height=CS_H, width=CS_W)
    nyu = root / "nyu"
    _make_nyu(nyu)
    return Base(repo, cs, nyu)


# ---- the cases ----------------------------------------------------------------------------------------

@dataclass
class Case:
    stage: str  # prepare | train
    dataset: str
    expect: str  # must appear in the error line (a file name or a dotted key)
    params: Optional[Callable[[dict], Optional[str]]] = None  # edits the params; may return raw YAML text
    data: Optional[Callable[[Path], None]] = None  # corrupts the raw copy at <case>/raw
    raw: str = "cityscapes"  # which raw dataset the case copies: cityscapes | nyu | none
    real: bool = False  # a plain subprocess rather than a child of the fork server


def _set(where: str, **kv):
    """Edit the params: ``where`` a dataset section (each key in its sub-section) or a sub-section
    (``synthetic.loss``: the keys go there as they are, unknown ones included)."""
    def edit(p: dict) -> None:
        dataset, _, sub = where.partition(".")
        if sub:
            p[dataset][sub].update(kv)
        else:
            _put(p[dataset], **kv)
    return edit


def _cs(sub: str, split: str, stem: str, suffix: str) -> str:
    return f"{sub}/{split}/{stem.split('_')[0]}/{stem}{suffix}"


LABEL = _cs("gtFine", "train", STEM, "_gtFine_labelIds.png")
IMAGE = _cs("leftImg8bit", "train", STEM, "_leftImg8bit.png")
DISP = _cs("disparity", "train", STEM, "_disparity.png")


def _unlink(rel: str):
    return lambda raw: (raw / rel).unlink()


def _extra_disparity(raw: Path) -> None:
    shutil.copy(raw / DISP, raw / _cs("disparity", "train", "syntha_000000_000042", "_disparity.png"))


def _truncate(rel: str):
    def corrupt(raw: Path) -> None:
        data = (raw / rel).read_bytes()
        (raw / rel).write_bytes(data[: len(data) // 2])
    return corrupt


def _png(path: Path, arr: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", arr)
    assert ok
    path.write_bytes(buf.tobytes())


def _disp_8bit(raw: Path) -> None:
    disp = cv2.imread(str(raw / DISP), cv2.IMREAD_UNCHANGED)
    _png(raw / DISP, (disp // 256).astype(np.uint8))


def _label_200(raw: Path) -> None:
    label = cv2.imread(str(raw / LABEL), cv2.IMREAD_UNCHANGED)
    label[5, 7] = 200
    _png(raw / LABEL, label)


def _image_wrong_size(raw: Path) -> None:
    image = cv2.imread(str(raw / IMAGE), cv2.IMREAD_UNCHANGED)
    _png(raw / IMAGE, cv2.resize(image, (CS_W // 2, CS_H // 2)))


def _empty_val(raw: Path) -> None:
    for p in (raw / "leftImg8bit" / "val").rglob("*.png"):
        p.unlink()


def _npy_garbage(rel: str):
    def corrupt(raw: Path) -> None:
        data = (raw / rel).read_bytes()
        (raw / rel).write_bytes(data[: len(data) // 3])  # valid header, truncated body
    return corrupt


def _npy_save(rel: str, arr: np.ndarray):
    return lambda raw: np.save(raw / rel, arr)


CASES: dict[str, Case] = {
    # params: validated before any work (train would otherwise start training)
    "params-unknown-key": Case("train", "synthetic", "params.yaml: synthetic.loss.lpp:",
                               params=_set("synthetic.loss", lpp="L1")),
    "params-wrong-type": Case("train", "synthetic",
                              "params.yaml: synthetic.optim.batch_size:", params=_set("synthetic", batch_size="8")),
    "params-enc-layers-choice": Case("prepare", "synthetic", "params.yaml: synthetic.model.enc_layers:",
                                     params=_set("synthetic", enc_layers=20)),
    "params-lp-choice": Case("train", "synthetic",
                             "params.yaml: synthetic.loss.lp:", params=_set("synthetic", lp="L3"), real=True),
    "params-negative-lr": Case("prepare", "synthetic",
                               "params.yaml: synthetic.optim.lr:", params=_set("synthetic", lr=-0.001)),
    "params-height-not-32x": Case("prepare", "synthetic",
                                  "params.yaml: synthetic.data.height:", params=_set("synthetic", height=48)),
    "params-batch-size-zero": Case("prepare", "synthetic", "params.yaml: synthetic.optim.batch_size:",
                                   params=_set("synthetic", batch_size=0)),
    "params-nested-generate-key": Case("prepare", "synthetic", "params.yaml: synthetic.generate.n_val:",
                                       params=_set("synthetic", generate={"n_val": -1})),
    "params-run-missing-section": Case("prepare", "synthetic", "params.yaml: run:",
                                       params=lambda p: p.update(run=["synthetc"])),
    "params-invalid-yaml": Case("prepare", "synthetic", "params.yaml: not valid YAML",
                                params=lambda p: "run: [synthetic]\nseeds: [0\nsynthetic: {format: cityscapes\n"),
    "params-missing-dataset-path": Case("prepare", "synthetic", "error: nowhere/at/all:",
                                        params=_set("synthetic", input_path="nowhere/at/all"), raw="none"),
    # Cityscapes-format data (the synthetic set), prepared by the synthetic section
    "cs-missing-label": Case("prepare", "synthetic", LABEL, data=_unlink(LABEL)),
    "cs-extra-disparity": Case("prepare", "synthetic", "syntha_000000_000042_disparity.png", data=_extra_disparity),
    "cs-truncated-png": Case("prepare", "synthetic", IMAGE, data=_truncate(IMAGE), real=True),
    "cs-disparity-8bit": Case("prepare", "synthetic", DISP, data=_disp_8bit),
    "cs-label-id-200": Case("prepare", "synthetic", LABEL, data=_label_200),
    "cs-image-wrong-size": Case("prepare", "synthetic", IMAGE, data=_image_wrong_size),
    "cs-empty-val": Case("prepare", "synthetic", "leftImg8bit/val", data=_empty_val),
    # NYUv2 layout
    "nyu-corrupt-npy": Case("prepare", "nyu", "train/depth/1.npy", data=_npy_garbage("train/depth/1.npy"),
                            raw="nyu"),
    "nyu-wrong-shape": Case("prepare", "nyu", "val/image/1.npy",
                            data=_npy_save("val/image/1.npy", np.zeros((3, NYU_H, NYU_W), np.float32)), raw="nyu"),
    "nyu-label-15": Case("prepare", "nyu", "train/label/2.npy",
                         data=_npy_save("train/label/2.npy", np.full((NYU_H, NYU_W), 15.0, np.float32)), raw="nyu",
                         real=True),
    "nyu-missing-depth": Case("prepare", "nyu", "val/depth/0.npy", data=_unlink("val/depth/0.npy"), raw="nyu"),
}


# ---- running ------------------------------------------------------------------------------------------

# The fork server: reads one JSON list of jobs per line on stdin, runs them all at once (one forked
# child each) and answers one JSON list of exit statuses. Only third-party modules are preloaded.
SERVER = r'''
import json, os, runpy, sys, traceback
import cv2, dvclive, numpy, torch, torchvision, tqdm, yaml  # noqa: F401  the expensive imports, once
import cityscapesscripts.helpers.labels  # noqa: F401

def child(job):
    os.chdir(job["cwd"])
    sys.path[0] = job["cwd"]  # what `python -m` puts first on sys.path
    for fd, name in ((1, "stdout"), (2, "stderr")):
        f = os.open(job[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(f, fd)
        os.close(f)
    sys.argv = ["-m"] + job["args"]
    code = 0
    try:
        runpy.run_module(job["module"], run_name="__main__", alter_sys=True)
    except SystemExit as e:  # the interpreter's handling of SystemExit
        if e.code is None:
            code = 0
        elif isinstance(e.code, int):
            code = e.code
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except BaseException:  # an uncaught exception: traceback on stderr, status 1
        traceback.print_exc()
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(code)

for line in sys.stdin:
    jobs = json.loads(line)
    pids = []
    for job in jobs:
        pid = os.fork()
        if pid == 0:
            child(job)
        pids.append(pid)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
    print(json.dumps(codes), flush=True)
'''


class ForkServer:
    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env=_env(), text=True)
        self.n = 0  # batches sent

    def run(self, jobs: list[tuple[str, str, Path]]) -> list[subprocess.CompletedProcess]:
        """(stage, dataset, cwd) per job, run concurrently; like subprocess.run with capture_output."""
        self.n += 1
        specs = [{"module": f"pipeline.{stage}", "args": _args(stage, dataset), "cwd": str(cwd),
                  **{out: str(cwd.parent / f".{cwd.name}.{self.n}.{i}.{out}") for out in ("stdout", "stderr")}}
                 for i, (stage, dataset, cwd) in enumerate(jobs)]
        self.proc.stdin.write(json.dumps(specs) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "the fork server died"
        return [subprocess.CompletedProcess([spec["module"]] + spec["args"], code, Path(spec["stdout"]).read_text(),
                                            Path(spec["stderr"]).read_text())
                for spec, code in zip(specs, json.loads(line))]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


@dataclass
class Result:
    dir: Path
    proc: subprocess.CompletedProcess
    before: Optional[dict[str, bytes]] = None  # the good prepared copy, for the keep-previous case


def _setup(base: Base, case_dir: Path, case: Case) -> None:
    shutil.copytree(base.repo, case_dir)
    params = _params()
    text = case.params(params) if case.params else None
    (case_dir / "params.yaml").write_text(text if text is not None else yaml.safe_dump(params, sort_keys=False))
    if case.raw != "none":
        shutil.copytree(base.cityscapes if case.raw == "cityscapes" else base.nyu, case_dir / "raw")
    if case.data:
        case.data(case_dir / "raw")


def _stage(stage: str, dataset: str, cwd: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", f"pipeline.{stage}", *_args(stage, dataset)]
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=300)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _run_keep_previous(base: Base, root: Path) -> Result:
    """Prepare good data, corrupt one file, prepare again: the first copy must survive untouched."""
    case_dir = root / "keep-previous"
    _setup(base, case_dir, Case("prepare", "synthetic", ""))
    good = _stage("prepare", "synthetic", case_dir)
    assert good.returncode == 0, good.stderr
    before = _tree(case_dir / "data/prepared/synthetic")
    _truncate(_cs("disparity", "val", "synthb_000000_000001", "_disparity.png"))(case_dir / "raw")
    return Result(case_dir, _stage("prepare", "synthetic", case_dir), before)


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, Result]:
    root = tmp_path_factory.mktemp("bad_inputs")
    server = ForkServer()  # imports torch while the cases are set up
    try:
        base = _make_base(root / "base")
        for name, case in CASES.items():
            _setup(base, root / name, case)
        out: dict[str, Result] = {}
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            keep = pool.submit(_run_keep_previous, base, root)
            real = {name: pool.submit(_stage, c.stage, c.dataset, root / name) for name, c in CASES.items() if c.real}
            forked = [name for name, c in CASES.items() if not c.real]
            for name, proc in zip(forked, server.run([(CASES[n].stage, CASES[n].dataset, root / n) for n in forked])):
                out[name] = Result(root / name, proc)
            out.update({name: Result(root / name, f.result()) for name, f in real.items()})
            out["keep-previous"] = keep.result()
    finally:
        server.close()
    return out


def _check_one_line_error(r: Result, expect: str) -> str:
    stderr = r.proc.stderr
    assert r.proc.returncode != 0, (r.proc.returncode, stderr)
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    assert expect in lines[0], (expect, lines[0])
    return lines[0]


def _no_stray_temporaries(case_dir: Path) -> None:
    for d in (case_dir / "data" / "prepared", case_dir / "data", case_dir / "models", case_dir / "dvclive"):
        if d.is_dir():
            stray = [p.name for p in d.iterdir() if p.name.startswith(".")]
            assert not stray, (d, stray)


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_fails_with_one_line_and_no_output(results, name):
    case, r = CASES[name], results[name]
    _check_one_line_error(r, case.expect)
    assert not (r.dir / "data" / "prepared" / case.dataset).exists()
    assert not (r.dir / "models").exists() and not (r.dir / "dvclive").exists()
    _no_stray_temporaries(r.dir)


def test_failed_prepare_keeps_the_previous_good_copy(results):
    r = results["keep-previous"]
    _check_one_line_error(r, "synthb_000000_000001_disparity.png")
    prepared = r.dir / "data" / "prepared" / "synthetic"
    assert r.before and "meta.json" in r.before and "train/image.npy" in r.before
    assert _tree(prepared) == r.before  # byte-identical, nothing added or removed
    _no_stray_temporaries(r.dir)
