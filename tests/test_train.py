"""Training and evaluation on a tiny synthetic dataset: checkpoints, determinism, evaluation output,
the resumable state's scratch folder."""
import math
import shutil

import numpy as np
import pytest
import torch

from tiny import prepare_tiny, tiny_config, train_tiny
from xtask.common.config import replace
from xtask.common.errors import XTaskError
from xtask.data.prepare import RawSplit
from xtask.evaluation.evaluate import evaluate
from xtask.core import checkpoint
from xtask.core.batches import batch_spec, iterate, make_loader
from xtask.core.protocol import protocol_of


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("root")
    return root, prepare_tiny(root), tiny_config()


def _model(path):
    return torch.load(path, weights_only=True)["model"]


def test_checkpoints_are_plain_data_and_the_scratch_folder_goes(tiny):
    root, data, cfg = tiny
    summary = train_tiny(cfg, 0, data, root / "run")
    assert 1 <= summary["best_epoch"] <= cfg.optim.epochs and math.isfinite(summary["best_val_loss"])
    state = torch.load(root / "run" / "best.pt", weights_only=True)  # refuses anything but data
    assert state["config"]["model"]["enc_layers"] == cfg.model.enc_layers and state["seed"] == 0
    assert state["epoch"] == summary["best_epoch"] and "log_vars" in state["balancer"]
    assert sorted(p.name for p in (root / "run").iterdir()) == ["best.pt"]
    assert not (root / "scratch").exists() or not any((root / "scratch").iterdir())


def test_same_seed_same_result_on_cpu(tiny):
    root, data, cfg = tiny
    a = train_tiny(cfg, 1, data, root / "a")
    b = train_tiny(cfg, 1, data, root / "b")
    assert a == b
    wa, wb = _model(root / "a" / "best.pt"), _model(root / "b" / "best.pt")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    c = train_tiny(cfg, 2, data, root / "c")
    assert c["best_val_loss"] != a["best_val_loss"]


def test_evaluate_reports_both_families_and_the_baseline(tiny):
    root, data, cfg = tiny
    train_tiny(cfg, 0, data, root / "ev")
    m = evaluate(cfg, root / "ev" / "best.pt", data, progress=False)
    assert set(m["paper"]) == {"miou", "pix_acc", "abs_err", "rel_err"}
    assert {"miou", "pix_acc", "abs_err", "rel_err", "rmse", "delta1", "delta2", "delta3"} <= set(m["standard"])
    assert list(m["standard_iou_per_class"]) == ["flat", "construction", "object", "nature", "sky", "human",
                                                 "vehicle"]
    assert m["val_images"] == 4 and m["depth_unit"] == "inverse_depth"
    assert m["baseline_mean_depth"]["paper_abs_err"] > 0


def test_evaluate_refuses_a_checkpoint_of_another_architecture(tiny):
    root, data, cfg = tiny
    train_tiny(cfg, 0, data, root / "arch")
    other = replace(cfg, decoder_width=16)
    with pytest.raises(XTaskError, match=r"trained with model.decoder_width = 8, but params say "
                                         r"synthetic.model.decoder_width = 16"):
        evaluate(other, root / "arch" / "best.pt", data, progress=False)


class Payload:
    """Stands for arbitrary code a pickled checkpoint could smuggle in."""


def test_a_checkpoint_that_is_not_data_is_refused(tmp_path):
    torch.save({"x": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(XTaskError, match="evil.pt: not a loadable checkpoint"):
        checkpoint.load(tmp_path / "evil.pt")
    with pytest.raises(XTaskError, match="checkpoint not found"):
        checkpoint.load(tmp_path / "missing.pt")


def test_missing_prepared_data_says_to_run_prepare(tmp_path):
    with pytest.raises(XTaskError, match="run the prepare stage"):
        train_tiny(tiny_config(), 0, tmp_path / "nothing", tmp_path / "run")


@pytest.mark.parametrize("options", [
    {"weighting": "gradnorm", "protocol.name": "corrected"},
    {"weighting": "gradnorm", "tseg_loss": "kl"},  # the original's GradNorm and KL
    {"weighting": "none", "lp": "MSE", "tdep_loss": "SSIM", "tseg_loss": "kl", "label_smoothing": 0.1},
    {"batch_norm": True, "wider_ttnet": True, "lp": "smoothL1", "num_classes": 19},
])
def test_every_option_trains(tiny, tmp_path, options):
    root, _, cfg = tiny
    cfg = replace(cfg, epochs=1, **options)
    data = prepare_tiny(root, num_classes=cfg.data.num_classes)
    summary = train_tiny(cfg, 0, data, tmp_path / "run")
    assert math.isfinite(summary["best_val_loss"])
    state = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    gradnorm = cfg.balancing.weighting == "gradnorm"
    if gradnorm and cfg.protocol.name == "corrected":
        assert state["balancer"]["task_weights"].sum().item() == pytest.approx(2.0)
    elif gradnorm:  # the original's raw weights, its own Adam's state and its initial losses
        assert set(state["balancer"]) == {"raw", "_extra_state"}
        assert state["balancer"]["_extra_state"]["renormalised"] is True


def test_raw_and_prepared_data_paths_give_the_same_batches(tiny):
    # the original decodes the raw PNGs per sample; the prepared copy must give the very same batches
    root, data, cfg = tiny
    raw = RawSplit("cityscapes", root / "raw", "train", num_classes=7, height=32, width=64)
    from xtask.common.prepared import PreparedSplit
    spec = batch_spec(cfg.data, protocol_of(cfg.protocol))

    def batches(split):
        loader = make_loader(split, 4, shuffle=True, generator=torch.Generator().manual_seed(3))
        return list(iterate(loader, torch.device("cpu"), spec, augment_generator=torch.Generator().manual_seed(4)))
    for a, b in zip(batches(PreparedSplit(data, "train")), batches(raw), strict=True):
        for x, y in zip(a, b):
            assert (x is None and y is None) or (torch.equal(x, y) if torch.is_tensor(x) else x == y)


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_trains_on_cpu(tiny, tmp_path, amp):
    root, data, cfg = tiny
    summary = train_tiny(replace(cfg, epochs=1, amp=amp), 0, data, tmp_path / "run")
    assert summary["amp"] == amp and math.isfinite(summary["best_val_loss"])
    m = evaluate(replace(cfg, amp=amp), tmp_path / "run" / "best.pt", data, progress=False)
    assert m["amp"] == amp and 0 <= m["paper"]["miou"] <= 100


def test_channels_last_gives_the_same_function(tiny):
    root, data, cfg = tiny
    base = train_tiny(cfg, 4, data, root / "cl_off")
    cl = train_tiny(replace(cfg, channels_last="on"), 4, data, root / "cl_on")
    assert cl["best_val_loss"] == pytest.approx(base["best_val_loss"], rel=1e-3)


@pytest.mark.slow
def test_compiled_model_trains_and_saves_plain_weights(tiny, tmp_path):
    root, data, cfg = tiny
    summary = train_tiny(replace(cfg, epochs=1, compile=True), 0, data, tmp_path / "run")
    assert math.isfinite(summary["best_val_loss"])
    assert not any(k.startswith("_orig_mod.") for k in _model(tmp_path / "run" / "best.pt"))  # the module's names


def test_a_non_finite_loss_stops_training_naming_epoch_step_and_term(tiny, tmp_path):
    root, data, cfg = tiny
    cfg = replace(cfg, **{"protocol.name": "corrected"})  # the float depth as stored
    bad = tmp_path / "bad"
    shutil.copytree(data, bad)
    depth = np.load(bad / "train" / "depth.npy", mmap_mode="r+")
    depth[:] = np.inf  # every batch's depth loss becomes infinite (NaN would be "not measured")
    depth.flush()
    with pytest.raises(XTaskError, match=r"non-finite loss \(depth.*\) at epoch 1 step 1; the last good state"):
        train_tiny(cfg, 0, bad, tmp_path / "run", save_every_s=3600)
    assert not (tmp_path / "run").exists()  # nothing from the diverged epoch was saved


def test_deterministic_switch_trains_and_repeats(tiny, tmp_path):
    root, data, cfg = tiny
    cfg = replace(cfg, epochs=1, deterministic=True)
    try:
        a = train_tiny(cfg, 0, data, tmp_path / "a")
        assert torch.are_deterministic_algorithms_enabled()
        b = train_tiny(cfg, 0, data, tmp_path / "b")
    finally:
        torch.use_deterministic_algorithms(False)
    assert a == b


def test_a_state_of_other_params_or_code_is_kept_and_never_resumed(tiny, tmp_path, monkeypatch, capsys):
    # the resumable state is keyed by everything the result depends on: a run with other params or code
    # starts afresh beside it, says so, and going back to the old params resumes the old state
    root, data, cfg = tiny
    import xtask.training.resume as resume
    calls = []
    real_save = resume.Scratch.save

    def save_then_stop(self, state):
        real_save(self, state)
        calls.append(self.state_path)
        raise KeyboardInterrupt  # as a kill right after the first save
    monkeypatch.setattr(resume.Scratch, "save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train_tiny(cfg, 5, data, tmp_path / "run", save_every_s=0)
    monkeypatch.setattr(resume.Scratch, "save", real_save)
    old_state = calls[0]
    assert old_state.is_file() and old_state.parent.parent.name == "synthetic-xtask-seed5"
    capsys.readouterr()
    monkeypatch.setattr(resume, "code_hash", lambda units: "changed")
    train_tiny(cfg, 5, data, tmp_path / "run")
    err = capsys.readouterr().err
    assert "other params or code is kept" in err and "code '" in err and "'changed'" in err
    assert old_state.is_file()  # kept for a return to the old code
    monkeypatch.undo()
    train_tiny(cfg, 5, data, tmp_path / "run2")
    assert "resuming synthetic xtask seed 5" in capsys.readouterr().err
    assert not old_state.exists()  # finished: its scratch folder is gone


@pytest.mark.parametrize("tf32, precision", [(False, "ieee"), (True, "tf32")])
def test_fp32_means_fp32_unless_tf32_is_asked_for(tiny, tf32, precision):
    """PyTorch's default lets cuDNN convolutions run in TF32 on Ampere and newer GPUs; the published runs
    were fp32, so every run sets the precision of convolutions and matmuls from ``tf32`` (false unless
    asked). The flags are process-wide and settable without a GPU, so this holds on the CPU too."""
    from xtask.core.hardware import resolve
    _, _, cfg = tiny
    before = torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision
    torch.backends.cudnn.conv.fp32_precision = "tf32"  # PyTorch's default for convolutions
    torch.backends.cuda.matmul.fp32_precision = "tf32" if not tf32 else "ieee"
    try:
        cfg = replace(cfg, tf32=tf32)
        resolve(cfg.runtime, cfg.protocol, "cpu")
        assert torch.backends.cudnn.conv.fp32_precision == precision
        assert torch.backends.cuda.matmul.fp32_precision == precision
    finally:
        torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision = before


def test_an_epoch_line_reads_at_a_glance():
    from xtask.training.train import epoch_line
    assert epoch_line("cityscapes xtask seed 0", 3, 250, 0.41234, 0.39811, {"miou": 0.4121, "abs_err": 0.01534},
                      12.34, 3000) == ("cityscapes xtask seed 0 epoch 3/250 train 0.4123 val 0.3981 miou 0.412 "
                                       "abs_err 0.0153 12.3s ETA 50m")
    # a single-task net has one task's scores; hours and minutes past the hour
    assert epoch_line("nyu stl_depth seed 1", 1, 100, 1.0, 2.0, {"abs_err": 0.6}, 65.0, 3 * 3600 + 5 * 60) == \
        "nyu stl_depth seed 1 epoch 1/100 train 1.0000 val 2.0000 abs_err 0.6000 65.0s ETA 3h05m"
