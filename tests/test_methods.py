"""The baselines trained by the same pipeline: mtl (no TaskTransferNets), stl_seg and stl_depth."""
import dataclasses

import pytest
import torch

from xtask.config import load_params
from xtask.data.prepare import prepare
from xtask.data.synthetic import generate
from xtask.engine import build_model, combine, compute_terms
from xtask.errors import XTaskError
from xtask.evaluate import evaluate
from xtask.methods import METHODS
from xtask.train import train

CFG = dataclasses.replace(load_params("params.yaml").dataset("synthetic"), height=32, width=64, epochs=1,
                          batch_size=4, decoder_width=8, ttnet_width=4, device="cpu")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("methods")
    generate(root / "raw", seed=5, n_train=8, n_val=4, height=64, width=128)
    prepare("cityscapes", root / "raw", CFG.prepared_dir(root), num_classes=7, height=32, width=64,
            expect_full_size=False, progress=False)
    return root


@pytest.mark.parametrize("name,modules", [
    ("xtask", {"encoder", "seg_decoder", "depth_decoder", "seg_to_depth", "depth_to_seg"}),
    ("mtl", {"encoder", "seg_decoder", "depth_decoder"}),
    ("stl_seg", {"encoder", "seg_decoder"}),
    ("stl_depth", {"encoder", "depth_decoder"}),
])
def test_each_method_has_its_networks_and_loss_terms(name, modules):
    method = METHODS[name]
    torch.manual_seed(0)
    model = build_model(CFG, method, pretrained=False)
    assert {k.split(".")[0] for k in model.state_dict()} == modules
    out = model(torch.randn(2, 3, 32, 64))
    assert (out.seg is not None, out.depth is not None) == ("seg" in method.tasks, "depth" in method.tasks)
    assert (out.seg_transferred is not None) == method.transfer
    seg = torch.randint(0, 7, (2, 32, 64))
    depth = torch.rand(2, 1, 32, 64)
    batch_like = type("B", (), {"seg": seg, "depth": depth, "depth_mask": depth > 0.1, "seg_mask": None})
    terms = compute_terms(CFG, out, batch_like)
    assert tuple(terms) == method.terms
    label, image = combine(CFG, terms, method)
    if name == "stl_seg":
        assert image.item() == 0 and label.item() == terms["seg"].item()
    if name == "stl_depth":
        assert label.item() == 0 and image.item() == terms["depth"].item()
    if name == "mtl":
        assert (label.item(), image.item()) == (terms["seg"].item(), terms["depth"].item())


def test_xtask_and_mtl_start_from_the_same_weights():
    # same seed, same initial encoder and decoders: the comparison isolates the TaskTransferNets
    torch.manual_seed(3)
    x = build_model(CFG, METHODS["xtask"], pretrained=False).state_dict()
    torch.manual_seed(3)
    m = build_model(CFG, METHODS["mtl"], pretrained=False).state_dict()
    assert all(torch.equal(x[k], v) for k, v in m.items())


@pytest.mark.parametrize("name", ["mtl", "stl_seg", "stl_depth"])
def test_baselines_train_and_score_their_own_tasks(root, name):
    method = METHODS[name]
    summary = train(CFG, 0, root / name, progress=False, root=root, method=method)
    assert {k for k in summary["last_val"] if k.startswith("loss_")} == {f"loss_{t}" for t in method.terms}
    state = torch.load(root / name / "best.pt", weights_only=True)
    assert state["method"] == name
    m = evaluate(CFG, root / name / "best.pt", progress=False, root=root, method=method)
    assert m["method"] == name
    seg_keys = {"miou", "pix_acc"}
    depth_keys = {"abs_err", "rel_err"}
    expected = (seg_keys if "seg" in method.tasks else set()) | (depth_keys if "depth" in method.tasks else set())
    assert set(m["paper"]) == expected
    assert ("baseline_mean_depth" in m) == ("depth" in method.tasks)
    assert ("standard_iou_per_class" in m) == ("seg" in method.tasks)
    if name == "stl_depth":
        assert {"rmse", "delta1"} <= set(m["standard"]) and "miou" not in m["standard"]
    with pytest.raises(XTaskError, match=f"a {name} checkpoint, but xtask was asked"):
        evaluate(CFG, root / name / "best.pt", progress=False, root=root)
