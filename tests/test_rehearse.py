"""`make rehearse` (xtask/tools/rehearse.py): the whole rehearsal is slow; its cheap slice here checks the
NYUv2 stand-in generator through the real nyu section, changed by DVC's own -S writer only."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from xtask.common.config import load_params
from xtask.common.methods import METHODS
from xtask.data.nyu import list_samples, read_sample
from xtask.data.prepare import prepare
from xtask.data.synthetic import generate_nyu
from xtask.tools import rehearse

ROOT = Path(__file__).resolve().parents[1]


def test_the_nyu_stand_in_is_mtans_layout_and_prepares_through_the_nyu_section(tmp_path):
    raw = tmp_path / "nyu"
    generate_nyu(raw, seed=3, n_train=3, n_val=2, height=48, width=64)
    assert sorted(p.relative_to(raw).as_posix() for p in raw.rglob("*.npy"))[:3] == [
        "train/depth/0.npy", "train/depth/1.npy", "train/depth/2.npy"]
    assert list_samples(raw, "train") == [0, 1, 2] and list_samples(raw, "val") == [0, 1]
    image, label, depth = (np.load(raw / "val" / kind / "1.npy") for kind in ("image", "label", "depth"))
    assert image.dtype == np.float32 and image.shape == (48, 64, 3) and 0 <= image.min() and image.max() <= 1
    assert label.dtype == np.float32 and set(np.unique(label)) <= set(range(-1, 13)) and len(np.unique(label)) > 3
    assert depth.shape == (48, 64, 1) and depth.max() > 0 and depth.min() >= 0
    # the real nyu section, changed only as the rehearsal's -S overrides change it (DVC's writer)
    from dvc.utils.hydra import apply_overrides
    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text())
    apply_overrides(params, [o for o in rehearse.overrides() if not o.startswith("cityscapes.")])
    p = load_params(params)
    cfg = p.dataset("nyu")
    assert (p.run, p.methods, p.seeds) == (("cityscapes", "nyu"), tuple(METHODS), (0, 1))
    data = cfg.data
    assert (data.format, data.num_classes, cfg.runtime.device, cfg.optim.epochs, data.expect_full_size) == (
        "nyu", 13, "cpu", 2, False)
    out = tmp_path / "prepared"
    prepare(data.format, raw, out, num_classes=data.num_classes, height=data.height, width=data.width,
            expect_full_size=data.expect_full_size, progress=False)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["counts"] == {"train": 3, "val": 2} and meta["depth_kind"] == "metres"
    assert read_sample(raw, "val", 0, height=32, width=64)[2].shape == (32, 64)


def test_every_dataset_method_and_seed_is_its_own_queued_experiment():
    names = [name for name, _ in rehearse.experiments()]
    assert len(names) == len(set(names)) == 2 * len(METHODS) * 2
    assert ("nyu-stl_depth-1", ["run=[nyu]", "methods=[stl_depth]", "seeds=[1]"]) in rehearse.experiments()


def test_the_report_check_can_fail():
    assert rehearse.check_report("## cityscapes\n\nnothing\n") == "cityscapes: no xtask row of 2 seeds"


@pytest.mark.slow  # 16 queued tiny runs, the table, a remote and a clone: minutes on 2 cores
def test_make_rehearse(tmp_path):
    r = subprocess.run([sys.executable, "-m", "xtask.tools.rehearse", "--keep", str(tmp_path / "work")], cwd=ROOT,
                       capture_output=True, text=True, timeout=3600,
                       env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"})
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert "rehearse: every route worked" in r.stdout
    assert r.stdout.count("Success") == 16
