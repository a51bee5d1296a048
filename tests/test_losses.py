
import pytest
import torch
import torch.nn.functional as F

from xtask.training.balancing import GradNorm
from xtask.core.batches import Batch
from xtask.training.losses import LossSpec, loss_terms, original_kl_loss, transferred_seg_loss
from xtask.core.model import XTaskOutput

def test_transferred_targets_are_detached():
    torch.manual_seed(0)
    seg = torch.randn(2, 4, 8, 8, requires_grad=True)
    depth = torch.rand(2, 1, 8, 8, requires_grad=True)
    out = XTaskOutput(seg, depth, torch.randn(2, 4, 8, 8, requires_grad=True), torch.rand(2, 1, 8, 8, requires_grad=True))
    batch = Batch(None, torch.randint(0, 4, (2, 8, 8)), torch.rand(2, 1, 8, 8), torch.ones(2, 1, 8, 8), None)
    terms = loss_terms(out, batch, LossSpec(num_classes=4, ignore_index=250))
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
    batch = Batch(None, torch.zeros(1, 4, 4, dtype=torch.long), torch.zeros(1, 1, 4, 4),
                  torch.zeros(1, 1, 4, 4, dtype=torch.bool), None)
    terms = loss_terms(out, batch, LossSpec(num_classes=3, ignore_index=250, tdep_loss="SSIM"))
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


def test_the_original_kl_mixes_classes_with_pixels_and_the_corrected_one_does_not():
    # protocol original: MaskedKLLoss as the original computes it, (N, C, H, W) viewed as (N, H*W, C)
    torch.manual_seed(0)
    n, c, h, w = 2, 5, 3, 4
    logits, target = torch.randn(n, c, h, w), torch.randint(0, c, (n, h, w))
    mask = (torch.rand(n, 1, h, w) > 0.3).float()
    e = 0.2
    mixed = logits.reshape(n, h * w, c)  # what view(N, H*W, C) reads from NCHW memory
    prob = torch.full((n, h * w, c), e / (c - 2)).scatter(2, target.reshape(n, h * w, 1), 1 - e)
    m = mask.reshape(n, h * w, 1)
    expected = F.kl_div(F.log_softmax(mixed * m, dim=2), prob * m, reduction="batchmean")
    got = original_kl_loss(logits, target, mask, num_classes=c, smoothing=e)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    # a per-pixel KL is invariant to permuting the pixels; the original's is not
    perm = torch.randperm(h * w)
    shuffle = lambda t: t.flatten(-2)[..., perm].reshape(t.shape)  # noqa: E731
    assert transferred_seg_loss(shuffle(logits), shuffle(target), None, num_classes=c, smoothing=e, kind="kl").item() \
        == pytest.approx(transferred_seg_loss(logits, target, None, num_classes=c, smoothing=e, kind="kl").item(),
                         rel=1e-6)
    assert original_kl_loss(shuffle(logits), shuffle(target), None, num_classes=c, smoothing=e).item() != \
        pytest.approx(original_kl_loss(logits, target, None, num_classes=c, smoothing=e).item(), rel=1e-3)
