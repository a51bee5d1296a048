import pytest
import torch

from xtask.common.metrics import PaperMetrics, StandardMetrics

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
