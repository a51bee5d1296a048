"""The routes a user takes to the paper's datasets without the raw data beside the pipeline: a clone that
pulled from a remote, or a queue workspace (which holds what git holds). The raw folder `data/<dataset>`
is then absent; DVC must call prepare's dependency *missing*, so that `--allow-missing` skips prepare and
the prepared arrays come from the cache. Anything git tracks inside `data/<dataset>` (a placeholder README)
makes the folder *modified* instead, and prepare reruns and stops for want of data.

Stand-in data: the synthetic generator's scenes, in the Cityscapes layout, at a tiny size.
"""
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from test_pipeline import set_keys
from xtask.data.synthetic import generate
from xtask.tools.check_determinism import COPIED, copy_code, run_in

ROOT = Path(__file__).resolve().parents[1]
GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
DVC = [sys.executable, "-m", "dvc"]
# the cityscapes section at a size that prepares in a second; the generated scenes are not full size
TINY_CITYSCAPES = {"height": 32, "width": 64, "expect_full_size": False}


def _tracked(root: Path, under: str) -> list[str]:
    r = subprocess.run(["git", "ls-files", under], cwd=root, capture_output=True, text=True, check=True)
    return r.stdout.split()


def _copy_repo(dst: Path) -> None:
    """The code, params and what git tracks under data/ (the layout a clone gets), at tiny cityscapes."""
    copy_code(ROOT, dst, (*COPIED, ".gitignore"))
    for name in _tracked(ROOT, "data"):
        (dst / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, dst / name)
    params = yaml.safe_load((dst / "params.yaml").read_text())
    params["run"] = ["cityscapes"]
    set_keys(params["cityscapes"], TINY_CITYSCAPES)
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_a_clone_without_raw_data_skips_prepare_with_allow_missing(tmp_path):
    origin, remote, clone = tmp_path / "origin", tmp_path / "remote", tmp_path / "clone"
    # the raw data first, as a user unzips it beside what the clone already holds in data/
    generate(origin / "data/cityscapes", seed=1, n_train=4, n_val=2, height=64, width=128)
    _copy_repo(origin)
    run_in(GIT + ["init", "-q"], origin)
    run_in(DVC + ["init", "-q"], origin)
    run_in(DVC + ["repro", "prepare@cityscapes"], origin)
    run_in(DVC + ["remote", "add", "-d", "store", str(remote)], origin)
    run_in(GIT + ["add", "-A"], origin)
    run_in(GIT + ["commit", "-qm", "prepared cityscapes"], origin)
    # git tracks nothing of the raw data: the clone (and a queue workspace) has no data/cityscapes
    assert not [p for p in _tracked(origin, "data") if p.startswith("data/cityscapes/")]
    run_in(DVC + ["push"], origin)

    subprocess.run(["git", "clone", "-q", str(origin), str(clone)], check=True, capture_output=True)
    run_in(DVC + ["pull", "prepare@cityscapes"], clone)
    status = run_in(DVC + ["status", "prepare@cityscapes"], clone)
    assert "deleted:            data/cityscapes" in status and "modified" not in status, status
    repro = run_in(DVC + ["repro", "--allow-missing", "prepare@cityscapes"], clone)
    assert "Running stage" not in repro, repro
    assert (clone / "data/prepared/cityscapes/meta.json").is_file()
