"""The baselines trained by the same pipeline: mtl (no TaskTransferNets), stl_seg and stl_depth."""
import pytest
import torch

from tiny import prepare_tiny, tiny_config, train_tiny
from xtask.core.batches import Batch
from xtask.core.model import build_model
from xtask.core.protocol import protocol_of
from xtask.training.losses import Objective
from xtask.common.errors import XTaskError
from xtask.evaluation.evaluate import evaluate
from xtask.common.methods import METHODS

CFG = tiny_config(epochs=1)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("methods")
    prepare_tiny(root)
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
    model = build_model(CFG.model, CFG.data.num_classes, method)
    assert {k.split(".")[0] for k in model.state_dict()} == modules
    out = model(torch.randn(2, 3, 32, 64))
    assert (out.seg is not None, out.depth is not None) == ("seg" in method.tasks, "depth" in method.tasks)
    assert (out.seg_transferred is not None) == method.transfer
    seg = torch.randint(0, 7, (2, 32, 64))
    depth = torch.rand(2, 1, 32, 64)
    batch = Batch(None, seg, depth, depth > 0.1, None)
    objective = Objective.of(CFG.loss, CFG.data, protocol_of(CFG.protocol), method)
    terms = objective.terms(out, batch)
    assert tuple(terms) == method.terms
    label, image = objective.combine(terms)
    if name == "stl_seg":
        assert image.item() == 0 and label.item() == terms["seg"].item()
    if name == "stl_depth":
        assert label.item() == 0 and image.item() == terms["depth"].item()
    if name == "mtl":
        assert (label.item(), image.item()) == (terms["seg"].item(), terms["depth"].item())


def test_xtask_and_mtl_start_from_the_same_weights():
    # same seed, same initial encoder and decoders: the comparison isolates the TaskTransferNets
    torch.manual_seed(3)
    x = build_model(CFG.model, CFG.data.num_classes, METHODS["xtask"]).state_dict()
    torch.manual_seed(3)
    m = build_model(CFG.model, CFG.data.num_classes, METHODS["mtl"]).state_dict()
    assert all(torch.equal(x[k], v) for k, v in m.items())


@pytest.mark.parametrize("name", ["mtl", "stl_seg", "stl_depth"])
def test_baselines_train_and_score_their_own_tasks(root, name):
    method = METHODS[name]
    summary = train_tiny(CFG, 0, prepare_tiny(root), root / name, method=method)
    assert {k for k in summary["last_val"] if k.startswith("loss_")} == {f"loss_{t}" for t in method.terms}
    state = torch.load(root / name / "best.pt", weights_only=True)
    assert state["method"] == name
    m = evaluate(CFG, root / name / "best.pt", prepare_tiny(root), progress=False, method=method)
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
        evaluate(CFG, root / name / "best.pt", prepare_tiny(root), progress=False)
