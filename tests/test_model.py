import pytest
import torch

import fixtures
from xtask.common.errors import XTaskError
from xtask.core.model import XTaskNet, convert_original_state_dict, default_pretrained_path
from xtask.core.model.convert import original_key

@pytest.mark.parametrize("enc_layers,num_classes,batch_norm,wider", [(34, 7, False, False), (34, 13, True, False),
                                                                      (50, 19, False, True)])
def test_state_dict_covers_every_original_key(enc_layers, num_classes, batch_norm, wider):
    keys = fixtures.original_keys(enc_layers, num_classes, batch_norm, wider)
    converted = convert_original_state_dict({k: torch.zeros(s) for k, s, _ in keys})
    mine = XTaskNet(enc_layers, num_classes, batch_norm, wider).state_dict()
    assert set(converted) == set(mine)
    assert all(tuple(mine[k].shape) == tuple(v.shape) for k, v in converted.items())


@pytest.mark.parametrize("stl_task", [None, "seg", "depth"])
def test_original_key_names_round_trip(stl_task):
    # the parity tool names this project's weights as the original's: every configuration of the listing
    for cfg in ((18, 7, False, False), (18, 19, True, True), (34, 7, False, False), (34, 13, True, False),
                (50, 19, False, True)):
        tasks = ("seg", "depth") if stl_task is None else (stl_task,)
        mine = XTaskNet(*cfg, tasks=tasks, transfer=stl_task is None).state_dict()
        names = {original_key(k, stl_task) for k in mine}
        if stl_task is None:
            assert names == {k for k, _, _ in fixtures.original_keys(*cfg)}
        else:  # BaseSTLNet: the encoder and one decoder named ``decoder``
            assert {n.split(".")[0] for n in names} == {"pretrained_encoder", "decoder"}
        state = {original_key(k, stl_task): v for k, v in mine.items()}
        assert convert_original_state_dict(state, stl_task).keys() == mine.keys()


def test_dataparallel_prefix_and_unknown_keys():
    keys = fixtures.original_keys(18, 7, False, False)
    state = {"module." + k: torch.zeros(s) for k, s, _ in keys}
    assert len(convert_original_state_dict(state)) == len(keys)
    with pytest.raises(XTaskError, match="not a key of the original"):
        convert_original_state_dict({"decoder_segmt.conv9.weight": torch.zeros(1)})


def test_direct_only_inference_matches_full_forward():
    torch.manual_seed(0)
    net = XTaskNet(18, 7, decoder_width=16, ttnet_width=8).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        full, direct = net(x), net(x, with_transfer=False)
    assert direct.seg_transferred is None and direct.depth_transferred is None
    assert torch.equal(full.seg, direct.seg) and torch.equal(full.depth, direct.depth)
    assert full.seg.shape == (2, 7, 64, 64) and full.depth_transferred.shape == (2, 1, 64, 64)


def test_seg_to_depth_reads_log_probabilities():
    # shifting all logits of a pixel by a constant leaves the transferred depth unchanged
    torch.manual_seed(0)
    net = XTaskNet(18, 5, decoder_width=8, ttnet_width=8).eval()
    logits = torch.randn(1, 5, 32, 32)
    with torch.no_grad():
        a = net.seg_to_depth(logits)
        b = net.seg_to_depth(logits + 3.0)
    assert torch.allclose(a, b, atol=1e-5)


def test_missing_pretrained_weights_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(XTaskError, match=r"ImageNet weights for ResNet34 not found at .*resnet34"):
        XTaskNet(34, 7, use_pretrain=True)
    assert str(default_pretrained_path(34)).startswith(str(tmp_path))


def test_pretrained_weights_load_from_a_file(tmp_path):
    from torchvision.models import resnet18
    torch.manual_seed(1)
    ref = resnet18()
    torch.save(ref.state_dict(), tmp_path / "r18.pth")
    net = XTaskNet(18, 7, use_pretrain=True, pretrained_path=tmp_path / "r18.pth")
    assert torch.equal(net.encoder.conv1.weight, ref.conv1.weight)
    assert torch.equal(net.encoder.layer4[1].conv2.weight, ref.layer4[1].conv2.weight)
    torch.save({"fc.weight": torch.zeros(2)}, tmp_path / "bad.pth")
    with pytest.raises(XTaskError, match="bad.pth"):
        XTaskNet(18, 7, use_pretrain=True, pretrained_path=tmp_path / "bad.pth")


def test_bad_enc_layers():
    with pytest.raises(XTaskError, match="enc_layers"):
        XTaskNet(20, 7)
