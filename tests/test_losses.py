
import pytest
import torch
import torch.nn.functional as F

import fixtures
from xtask.training.balancing import GradNorm, UncertaintyWeights
from xtask.training.losses import loss_terms, task_losses, transferred_seg_loss
from xtask.training.model import XTaskOutput

CASES = sorted(fixtures.manifest()["loss_parity"].items())


def _inputs(prefix, cfg):
    d = fixtures.load("loss_parity")
    t = lambda k: torch.from_numpy(d[prefix + k])  # noqa: E731
    out = XTaskOutput(t("seg"), t("depth"), t("seg_transferred"), t("depth_transferred"))
    seg_target = t("seg_target")
    seg_mask = (seg_target != cfg["ignore_index"]).unsqueeze(1) if cfg["with_seg_mask"] else None
    return d, out, seg_target, t("depth_target"), t("depth_mask"), seg_mask


@pytest.mark.parametrize("prefix,cfg", CASES)
def test_terms_and_combination_match_the_original(prefix, cfg):
    d, out, seg_target, depth_target, depth_mask, seg_mask = _inputs(prefix, cfg)
    terms = loss_terms(out, seg_target, depth_target, depth_mask, seg_mask, num_classes=cfg["num_classes"],
                       ignore_index=cfg["ignore_index"], label_smoothing=cfg["label_smoothing"], lp=cfg["lp"],
                       tseg_loss=cfg["tseg_loss"], tdep_loss=cfg["tdep_loss"])
    for name in ("seg", "depth", "seg_transferred", "depth_transferred"):
        assert terms[name].item() == pytest.approx(d[prefix + "term_" + name].item(), rel=1e-5), name
    label, image = task_losses(terms, alpha=cfg["alpha"], gamma=cfg["gamma"])
    if cfg["balance"] == "uncert":
        bal = UncertaintyWeights()
        with torch.no_grad():
            bal.log_vars.copy_(torch.from_numpy(d[prefix + "log_vars"]))
        lv = bal.log_vars
        label = 0.5 * torch.exp(-lv[1]) * label + lv[1]
        image = 0.5 * torch.exp(-lv[0]) * image + lv[0]
        assert bal.combine(*task_losses(terms, alpha=cfg["alpha"], gamma=cfg["gamma"])).item() == \
            pytest.approx((label + image).item(), rel=1e-6)
    assert label.item() == pytest.approx(d[prefix + "label_loss"].item(), rel=1e-5)
    assert image.item() == pytest.approx(d[prefix + "image_loss"].item(), rel=1e-5)


def test_transferred_targets_are_detached():
    torch.manual_seed(0)
    seg = torch.randn(2, 4, 8, 8, requires_grad=True)
    depth = torch.rand(2, 1, 8, 8, requires_grad=True)
    out = XTaskOutput(seg, depth, torch.randn(2, 4, 8, 8, requires_grad=True), torch.rand(2, 1, 8, 8, requires_grad=True))
    terms = loss_terms(out, torch.randint(0, 4, (2, 8, 8)), torch.rand(2, 1, 8, 8), torch.ones(2, 1, 8, 8),
                       num_classes=4, ignore_index=250)
    (terms["seg_transferred"] + terms["depth_transferred"]).backward()
    assert seg.grad is None and depth.grad is None
    assert out.seg_transferred.grad is not None and out.depth_transferred.grad is not None


def test_kl_is_a_per_pixel_kl_divergence():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 4, 6)
    target = torch.randint(0, 5, (2, 4, 6))
    e = 0.1
    q = torch.full((2, 5, 4, 6), e / 4).scatter(1, target.unsqueeze(1), 1 - e)
    expected = F.kl_div(F.log_softmax(logits, 1), q, reduction="none").sum(1).mean()
    got = transferred_seg_loss(logits, target, None, num_classes=5, smoothing=e, kind="kl")
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    # a prediction equal to the target distribution has zero divergence
    perfect = transferred_seg_loss(q.log(), target, None, num_classes=5, smoothing=e, kind="kl")
    assert perfect.item() == pytest.approx(0.0, abs=1e-6)


def test_empty_depth_mask_gives_zero_not_nan():
    out = XTaskOutput(torch.randn(1, 3, 4, 4), torch.rand(1, 1, 4, 4), torch.randn(1, 3, 4, 4), torch.rand(1, 1, 4, 4))
    terms = loss_terms(out, torch.zeros(1, 4, 4, dtype=torch.long), torch.zeros(1, 1, 4, 4),
                       torch.zeros(1, 1, 4, 4, dtype=torch.bool), num_classes=3, ignore_index=250, tdep_loss="SSIM")
    assert terms["depth"].item() == 0 and terms["depth_transferred"].item() == 0


def test_gradnorm_shrinks_the_weight_of_the_task_with_the_larger_gradient():
    # at the first step both tasks sit at their initial loss, so GradNorm equalises gradient norms:
    # the task whose gradient on the shared layer is larger loses weight
    torch.manual_seed(0)
    shared = torch.nn.Parameter(torch.randn(4, 4))
    bal = GradNorm(shared, alpha=1.5)
    opt = torch.optim.SGD([bal.task_weights], lr=0.05)
    y = torch.randn(8, 4) @ shared
    label_loss, image_loss = (y[:, 0] ** 2).mean(), 0.1 * (y[:, 1] ** 2).mean()
    total = bal.backward(label_loss, image_loss)
    assert total.item() == pytest.approx((label_loss + image_loss).item(), rel=1e-6)
    assert shared.grad is not None
    opt.step()
    bal.after_step()
    w = bal.task_weights.detach()
    assert w[0] < 1.0 < w[1]
    assert w.sum().item() == pytest.approx(2.0)
