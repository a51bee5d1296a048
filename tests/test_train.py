"""Training and evaluation on a tiny synthetic dataset: checkpoints, determinism, evaluation output."""
import dataclasses
import math
import shutil

import numpy as np
import pytest
import torch

from xtask import checkpoint
from xtask.config import load_params
from xtask.data.prepare import prepare
from xtask.data.synthetic import generate
from xtask.errors import XTaskError
from xtask.evaluate import evaluate
from xtask.train import train


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("root")
    cfg = dataclasses.replace(load_params("params.yaml").dataset("synthetic"), height=32, width=64, epochs=2,
                              batch_size=4, decoder_width=8, ttnet_width=4, device="cpu")
    generate(root / "raw", seed=5, n_train=8, n_val=4, height=64, width=128)
    prepare("cityscapes", root / "raw", cfg.prepared_dir(root), num_classes=7, height=32, width=64,
            expect_full_size=False, progress=False)
    return root, cfg


def test_checkpoints_are_plain_data(tiny):
    root, cfg = tiny
    summary = train(cfg, 0, root / "run", progress=False, root=root)
    assert 1 <= summary["best_epoch"] <= cfg.epochs and math.isfinite(summary["best_val_loss"])
    for name in ("best.pt", "last.pt"):
        state = torch.load(root / "run" / name, weights_only=True)  # refuses anything but data
        assert state["config"]["enc_layers"] == cfg.enc_layers and state["seed"] == 0
    assert torch.load(root / "run" / "last.pt", weights_only=True)["epoch"] == cfg.epochs
    assert "log_vars" in torch.load(root / "run" / "last.pt", weights_only=True)["balancer"]


def test_same_seed_same_result_on_cpu(tiny):
    root, cfg = tiny
    a = train(cfg, 1, root / "a", progress=False, root=root)
    b = train(cfg, 1, root / "b", progress=False, root=root)
    assert a == b
    wa = torch.load(root / "a" / "last.pt", weights_only=True)["model"]
    wb = torch.load(root / "b" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    c = train(cfg, 2, root / "c", progress=False, root=root)
    assert c["best_val_loss"] != a["best_val_loss"]


def test_evaluate_reports_both_families_and_the_baseline(tiny):
    root, cfg = tiny
    train(cfg, 0, root / "ev", progress=False, root=root)
    m = evaluate(cfg, root / "ev" / "best.pt", progress=False, root=root)
    assert set(m["paper"]) == {"miou", "pix_acc", "abs_err", "rel_err"}
    assert {"miou", "pix_acc", "abs_err", "rel_err", "rmse", "delta1", "delta2", "delta3"} <= set(m["standard"])
    assert list(m["standard_iou_per_class"]) == ["flat", "construction", "object", "nature", "sky", "human",
                                                 "vehicle"]
    assert m["val_images"] == 4 and m["depth_unit"] == "inverse_depth"
    assert m["baseline_mean_depth"]["paper_abs_err"] > 0


def test_evaluate_refuses_a_checkpoint_of_another_architecture(tiny):
    root, cfg = tiny
    train(cfg, 0, root / "arch", progress=False, root=root)
    other = dataclasses.replace(cfg, decoder_width=16)
    with pytest.raises(XTaskError, match=r"trained with decoder_width = 8, but params say synthetic.decoder_width = 16"):
        evaluate(other, root / "arch" / "best.pt", progress=False, root=root)


class Payload:
    """Stands for arbitrary code a pickled checkpoint could smuggle in."""


def test_a_checkpoint_that_is_not_data_is_refused(tmp_path):
    torch.save({"x": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(XTaskError, match="evil.pt: not a loadable checkpoint"):
        checkpoint.load(tmp_path / "evil.pt")
    with pytest.raises(XTaskError, match="checkpoint not found"):
        checkpoint.load(tmp_path / "missing.pt")


def test_missing_prepared_data_says_to_run_prepare(tmp_path):
    cfg = load_params("params.yaml").dataset("synthetic")
    with pytest.raises(XTaskError, match="run the prepare stage"):
        train(cfg, 0, tmp_path / "run", progress=False, root=tmp_path)


@pytest.mark.parametrize("options", [
    {"gradnorm": True, "uncertainty_weights": False},
    {"uncertainty_weights": False, "lp": "MSE", "tdep_loss": "SSIM", "tseg_loss": "kl", "label_smoothing": 0.1},
    {"batch_norm": True, "wider_ttnet": True, "lp": "smoothL1", "num_classes": 19},
])
def test_every_option_trains(tiny, tmp_path, options):
    root, cfg = tiny
    cfg = dataclasses.replace(cfg, epochs=1, **options)
    if cfg.num_classes != 7:
        prepare("cityscapes", root / "raw", cfg.prepared_dir(tmp_path), num_classes=cfg.num_classes, height=32,
                width=64, expect_full_size=False, progress=False)
        root = tmp_path
    summary = train(cfg, 0, tmp_path / "run", progress=False, root=root)
    assert math.isfinite(summary["best_val_loss"])
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    if cfg.gradnorm:
        assert state["balancer"]["task_weights"].sum().item() == pytest.approx(2.0)


def test_raw_and_prepared_data_paths_train_identically(tiny):
    # the original decodes the raw PNGs per sample; the prepared copy must give the very same run
    root, cfg = tiny
    prepared = train(cfg, 3, root / "prepared_path", progress=False, root=root)
    raw = train(dataclasses.replace(cfg, data_source="raw", input_path="raw"), 3, root / "raw_path",
                progress=False, root=root)
    assert prepared == raw
    wa = torch.load(root / "prepared_path" / "last.pt", weights_only=True)["model"]
    wb = torch.load(root / "raw_path" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_trains_on_cpu(tiny, tmp_path, amp):
    root, cfg = tiny
    summary = train(dataclasses.replace(cfg, epochs=1, amp=amp), 0, tmp_path, progress=False, root=root)
    assert summary["amp"] == amp and math.isfinite(summary["best_val_loss"])
    m = evaluate(dataclasses.replace(cfg, amp=amp), tmp_path / "best.pt", progress=False, root=root)
    assert m["amp"] == amp and 0 <= m["paper"]["miou"] <= 100


def test_channels_last_gives_the_same_function(tiny):
    root, cfg = tiny
    base = train(cfg, 4, root / "cl_off", progress=False, root=root)
    cl = train(dataclasses.replace(cfg, channels_last="on"), 4, root / "cl_on", progress=False, root=root)
    assert cl["best_val_loss"] == pytest.approx(base["best_val_loss"], rel=1e-3)


@pytest.mark.slow
def test_compiled_model_trains_and_saves_plain_weights(tiny, tmp_path):
    root, cfg = tiny
    summary = train(dataclasses.replace(cfg, epochs=1, compile=True), 0, tmp_path, progress=False, root=root)
    assert math.isfinite(summary["best_val_loss"])
    state = torch.load(tmp_path / "last.pt", weights_only=True)["model"]
    assert not any(k.startswith("_orig_mod.") for k in state)  # the uncompiled module's names


def test_a_non_finite_loss_stops_training_naming_epoch_step_and_term(tiny, tmp_path):
    root, cfg = tiny
    bad_root = tmp_path / "root"
    shutil.copytree(root / "data", bad_root / "data")
    depth = np.load(cfg.prepared_dir(bad_root) / "train" / "depth.npy", mmap_mode="r+")
    depth[:] = np.nan  # every batch's depth loss becomes NaN
    depth.flush()
    with pytest.raises(XTaskError, match=r"non-finite loss \(depth.*\) at epoch 1 step 1; the last good checkpoint"):
        train(cfg, 0, tmp_path / "run", progress=False, root=bad_root)
    assert not (tmp_path / "run" / "last.pt").exists()  # nothing from the diverged epoch was saved


def test_deterministic_switch_trains_and_repeats(tiny, tmp_path):
    root, cfg = tiny
    cfg = dataclasses.replace(cfg, epochs=1, deterministic=True)
    try:
        a = train(cfg, 0, tmp_path / "a", progress=False, root=root)
        assert torch.are_deterministic_algorithms_enabled()
        b = train(cfg, 0, tmp_path / "b", progress=False, root=root)
    finally:
        torch.use_deterministic_algorithms(False)
    assert a == b


def test_a_checkpoint_that_is_not_a_training_state_is_not_resumed(tiny, tmp_path, capsys):
    root, cfg = tiny
    (tmp_path / "run").mkdir()
    torch.save({"model": {}, "epoch": 3}, tmp_path / "run" / "last.pt")  # e.g. an older checkpoint format
    summary = train(dataclasses.replace(cfg, epochs=1), 0, tmp_path / "run", progress=False, root=root)
    assert summary["best_epoch"] == 1
    assert "last.pt: not resumed" in capsys.readouterr().err


def test_a_finished_run_is_reused_only_by_the_same_code(tiny, monkeypatch, capsys):
    # DVC reruns the train stage when xtask/ changed; the finished last.pt of the old code must not
    # stand in for the new code's run (persist: true keeps it in place)
    root, cfg = tiny
    train(cfg, 3, root / "code", progress=False, root=root)
    before = (root / "code" / "last.pt").stat().st_mtime_ns
    train(cfg, 3, root / "code", progress=False, root=root)  # same params and code: nothing to do
    assert (root / "code" / "last.pt").stat().st_mtime_ns == before
    import xtask.resume
    monkeypatch.setattr(xtask.resume, "code_hash", lambda: "changed")
    capsys.readouterr()
    train(cfg, 3, root / "code", progress=False, root=root)
    assert "not resumed" in capsys.readouterr().err
    state = torch.load(root / "code" / "last.pt", weights_only=True)
    assert state["hashed_config"]["code"] == "changed" and state["finished"]


def test_an_unfinished_run_of_other_code_is_refused_naming_it(tmp_path):
    from xtask.resume import check_resumable, config_hash
    old = {"lr": 0.001, "code": "aaaa"}
    new = {"lr": 0.001, "code": "bbbb"}
    state = {"config_hash": config_hash(old), "hashed_config": old, "finished": False}
    with pytest.raises(XTaskError, match="code 'aaaa' -> 'bbbb'"):
        check_resumable(state, tmp_path / "last.pt", new)
    assert check_resumable({**state, "finished": True}, tmp_path / "last.pt", new) is None
    assert check_resumable(state, tmp_path / "last.pt", old) is state
