import pytest
import torch

from xtask.common.metrics import PaperMetrics, ShuffledBatchDepth, StandardMetrics

def _one_hot_logits(pred):
    return torch.nn.functional.one_hot(pred, 3).permute(0, 3, 1, 2).float()


def test_standard_metrics_on_a_hand_computed_case():
    target = torch.tensor([[[0, 0, 1, 250]], [[2, 2, 2, 1]]])
    pred = torch.tensor([[[0, 1, 1, 2]], [[2, 2, 0, 1]]])
    depth_t = torch.tensor([[[[1.0, 2.0, 0.0, 4.0]]], [[[1.0, 1.0, 1.0, 1.0]]]])
    depth_p = torch.tensor([[[[1.0, 1.0, 9.0, 4.0]]], [[[2.0, 1.0, 1.0, 1.0]]]])
    m = StandardMetrics(num_classes=3, ignore_index=250)
    m.update(_one_hot_logits(pred), depth_p, target, depth_t)
    r = m.compute()
    # counted pixels: 7; correct: 0,1(class1),2,2,1 -> 5
    assert r["pix_acc"] == pytest.approx(5 / 7)
    # class0: inter 1, union 3 (0,0 target + pred 0 at a class-2 pixel); class1: inter 2, union 3; class2: 2 / 3
    assert r["miou"] == pytest.approx((1 / 3 + 2 / 3 + 2 / 3) / 3)
    # 7 valid depth pixels (target > 0): errors 0,1,0 and 1,0,0,0; ratios 1,2,1 and 2,1,1,1
    assert r["abs_err"] == pytest.approx(2 / 7)
    assert r["rel_err"] == pytest.approx((0.5 + 1.0) / 7)
    assert r["rmse"] == pytest.approx((2 / 7) ** 0.5)
    assert r["delta1"] == pytest.approx(5 / 7)


def test_paper_and_standard_miou_differ_as_documented():
    # per-image averaging weighs a small image-level class as much as a large one
    target = torch.tensor([[[0, 0, 0, 1]], [[0, 0, 0, 0]]])
    pred = torch.tensor([[[0, 0, 0, 0]], [[0, 0, 0, 0]]])
    depth = torch.ones(2, 1, 1, 4)
    paper, std = PaperMetrics(3, 250), StandardMetrics(3, 250)
    for m in (paper, std):
        m.update(_one_hot_logits(pred), depth, target, depth)
    assert paper.compute()["miou"] == pytest.approx((0.75 / 2 + 1.0) / 2)
    assert std.compute()["miou"] == pytest.approx((7 / 8 + 0) / 2)


def test_compute_before_update_is_an_error():
    with pytest.raises(ValueError):
        PaperMetrics(3, 250).compute()


def test_shuffled_batchings_score_the_stored_order_as_paper_metrics_and_spread_over_others():
    g = torch.Generator().manual_seed(0)
    target = torch.rand(10, 1, 4, 6, generator=g) * (torch.rand(10, 1, 4, 6, generator=g) > 0.3)
    target[3] = 0.5 * (torch.rand(1, 4, 6, generator=g) > 0.9)  # an image with few valid pixels
    pred = target + 0.1 * torch.randn(10, 1, 4, 6, generator=g)
    seg = torch.zeros(10, 4, 6, dtype=torch.long)
    paper, shuffled = PaperMetrics(3, 250), ShuffledBatchDepth()
    for i in range(0, 10, 4):  # batches of 4, 4 and 2, in the stored order
        paper.update(None, pred[i:i + 4], seg[i:i + 4], target[i:i + 4])
        shuffled.update(pred[i:i + 4], target[i:i + 4])
    p = paper.compute()
    s = shuffled.spread(4, draws=200)
    assert s["abs_err"]["stored_order"] == pytest.approx(p["abs_err"], rel=1e-6)  # PaperMetrics sums in float32
    assert s["rel_err"]["stored_order"] == pytest.approx(p["rel_err"], rel=1e-6)
    assert s["abs_err"]["std"] > 0 and s["abs_err"]["min"] < s["abs_err"]["max"]
    # one image a batch, or one batch of all: the order cannot matter
    for batch in (1, 10):
        one = shuffled.spread(batch, draws=20)["abs_err"]
        assert one["std"] == pytest.approx(0, abs=1e-15) and one["min"] == pytest.approx(one["max"], rel=1e-12)
