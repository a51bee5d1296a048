"""predict, evaluate and the checkpoint formats: a model.pth with the original xtask_mt's key names and
shapes (tests/reference/original-xtask_mt-state-dict.txt), this project's checkpoints, the figure."""
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

import fixtures
from xtask.reporting.colours import colourise_seg, seg_palette
from xtask.common.config import OWNER, load_params, replace
from xtask.data.prepare import prepare
from xtask.data.synthetic import generate
from xtask.core.model import build_model
from xtask.common.errors import XTaskError
from xtask.evaluation.evaluate import evaluate
from xtask.reporting.figures import Examples, panels, write_examples_figure
from xtask.core.model.convert import convert_key
from xtask.core.transforms import to_model_input
from xtask.tools.predict import predict_files
from xtask.core.weights import load_weights, trained_model

ROOT = Path(__file__).resolve().parents[1]
# The listing's first configuration: the parity fixtures' c0, at the original's widths (decoder 128, TTNet 64).
ORIGINAL = {"enc_layers": 18, "num_classes": 7, "batch_norm": False, "wider_ttnet": False}
FULL = {**ORIGINAL, "decoder_width": 128, "ttnet_width": 64, "height": 64, "width": 128, "batch_size": 2,
        "device": "cpu"}
TINY = {**FULL, "decoder_width": 8, "ttnet_width": 4}


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env


def _run(args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=300)


def _params(path: Path, **synthetic) -> Path:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for key, value in synthetic.items():  # each key in its section
        params["synthetic"][OWNER[key]][key] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def _one_line_error(r) -> str:
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.stderr, r.stderr
    return lines[0]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """model.pth as the original saves it, params whose synthetic section is its architecture, a tiny
    prepared synthetic dataset at 64x128 and a few input images of other sizes."""
    root = tmp_path_factory.mktemp("predict")
    keys = fixtures.original_keys(*ORIGINAL.values())
    torch.save({k: fixtures.seeded_weight(k, shape, 7) for k, shape, _ in keys}, root / "model.pth")
    params = _params(root / "params.yaml", **FULL)
    cfg = load_params(params).dataset("synthetic")
    generate(root / "raw", seed=5, n_train=2, n_val=3, height=64, width=128)
    prepare("cityscapes", root / "raw", root / "prepared", num_classes=7, height=64, width=128,
            expect_full_size=False, progress=False)
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    cv2.imwrite(str(images / "a.png"), rng.integers(0, 256, (50, 90, 3), dtype=np.uint8))
    cv2.imwrite(str(images / "b.jpg"), rng.integers(0, 256, (128, 256, 3), dtype=np.uint8))
    cv2.imwrite(str(images / "grey.png"), rng.integers(0, 256, (64, 128), dtype=np.uint8))
    (images / "notes.txt").write_text("not an image: folders expand to .png .jpg .jpeg only\n")
    return root, params, cfg


def test_predict_cli_reads_an_original_checkpoint(work, tmp_path):
    root, params, cfg = work
    out = tmp_path / "out"
    r = _run(["xtask.tools.predict", "--checkpoint", str(root / "model.pth"), "--dataset", "synthetic", "--params",
              str(params), "--out", str(out), "--raw", "--device", "cpu", "--no-progress", str(root / "images")])
    assert r.returncode == 0, r.stderr
    stems = ("a", "b", "grey")
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{s}_{t}.{e}" for s in stems
                                                           for t in ("seg", "depth") for e in ("png", "npy"))
    palette = {tuple(c) for c in seg_palette("cityscapes", 7)}
    for s in stems:
        seg, depth = np.load(out / f"{s}_seg.npy"), np.load(out / f"{s}_depth.npy")
        assert seg.shape == depth.shape == (64, 128)
        assert seg.dtype == np.int64 and depth.dtype == np.float32
        assert 0 <= seg.min() and seg.max() < 7 and np.isfinite(depth).all()
        seg_png = cv2.imread(str(out / f"{s}_seg.png"), cv2.IMREAD_UNCHANGED)
        depth_png = cv2.imread(str(out / f"{s}_depth.png"), cv2.IMREAD_UNCHANGED)
        assert seg_png.shape == depth_png.shape == (64, 128, 3) and seg_png.dtype == np.uint8
        assert {tuple(c) for c in seg_png[..., ::-1].reshape(-1, 3)} <= palette
        assert np.array_equal(seg_png[..., ::-1], colourise_seg(seg, seg_palette("cityscapes", 7)))


def test_evaluate_reads_an_original_checkpoint_and_draws_the_figure(work, tmp_path):
    root, params, cfg = work
    # the stage's command line, with the original's model.pth for a checkpoint
    r = _run(["pipeline.evaluate", "synthetic", "--params", str(params), "--device", "cpu", "--no-progress",
              "--data", str(root / "prepared"), "--checkpoint", str(root / "model.pth"),
              "--out", str(tmp_path / "m" / "orig.json"), "--examples", str(tmp_path / "e" / "orig_examples.pt")],
             cwd=root)
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "m" / "orig.json").read_text())
    assert m["seed"] == -1 and m["best_epoch"] == -1 and m["val_images"] == 3
    assert set(m["paper"]) == {"miou", "pix_acc", "abs_err", "rel_err"}
    # the figure stage draws what evaluate saved (tensors and strings only: weights_only loads it)
    saved = torch.load(tmp_path / "e" / "orig_examples.pt", weights_only=True)
    assert saved["image"].shape[0] == 3 and "original xtask_mt" in saved["title"]
    r = _run(["pipeline.figure", "synthetic", "--params", str(params), "--examples",
              str(tmp_path / "e" / "orig_examples.pt"), "--out", str(tmp_path / "m" / "orig_examples.png")], cwd=root)
    assert r.returncode == 0, r.stderr
    fig = cv2.imread(str(tmp_path / "m" / "orig_examples.png"))
    assert fig is not None and fig.shape[1] > fig.shape[0] > 100
    r = _run(["pipeline.figure", "synthetic", "--params", str(params), "--examples", str(tmp_path / "m" / "orig.json"),
              "--out", str(tmp_path / "m" / "x.png")], cwd=root)
    assert r.returncode == 1 and r.stderr.startswith(f"error: {tmp_path / 'm' / 'orig.json'}: not an examples file")
    assert not (tmp_path / "m" / "x.png").exists()
    r = _run(["pipeline.evaluate", "synthetic", "--params", str(params), "--checkpoint", str(root / "model.pth")],
             cwd=root)
    assert r.returncode == 2 and "the following arguments are required: --data, --out" in r.stderr


def test_an_original_checkpoint_of_another_architecture_is_one_line(work, tmp_path):
    root, _, cfg = work
    r = _run(["xtask.tools.predict", "--checkpoint", str(root / "model.pth"), "--dataset", "synthetic", "--params",
              str(_params(tmp_path / "p.yaml", **{**FULL, "num_classes": 19})), "--out", str(tmp_path / "out"),
              str(root / "images" / "a.png")])
    line = _one_line_error(r)
    assert str(root / "model.pth") in line and "data.num_classes = 7" in line and "synthetic.data.num_classes = 19" in line
    assert not (tmp_path / "out").exists()
    for change, key in (({"enc_layers": 34}, "synthetic.model.enc_layers = 34"),
                        ({"decoder_width": 32}, "synthetic.model.decoder_width = 32"),
                        ({"batch_norm": True}, "synthetic.model.batch_norm = True"),
                        ({"wider_ttnet": True}, "synthetic.model.wider_ttnet = True"),
                        ({"ttnet_width": 16}, "synthetic.model.ttnet_width = 16")):
        with pytest.raises(XTaskError, match=rf"model.pth: an original xtask_mt checkpoint .*{key}"):
            load_weights(root / "model.pth", replace(cfg, **change))


def test_a_file_that_is_no_checkpoint_is_one_line(work, tmp_path):
    root, params, cfg = work
    torch.save({"weights": [1, 2, 3]}, tmp_path / "other.pt")
    with pytest.raises(XTaskError, match="other.pt: not a model checkpoint: expected an xtask checkpoint"):
        load_weights(tmp_path / "other.pt", cfg)
    with pytest.raises(XTaskError, match="a.png: not a loadable checkpoint"):
        load_weights(root / "images" / "a.png", cfg)
    r = _run(["xtask.tools.predict", "--checkpoint", str(tmp_path / "other.pt"), "--dataset", "synthetic", "--params",
              str(params), "--out", str(tmp_path / "out"), str(root / "images" / "a.png")])
    assert "other.pt: not a model checkpoint" in _one_line_error(r)


def test_an_unreadable_image_is_one_line_and_leaves_no_output_of_its_own(work, tmp_path):
    root, _, cfg = work
    inputs = tmp_path / "in"
    inputs.mkdir()
    cv2.imwrite(str(inputs / "a.png"), np.zeros((64, 128, 3), np.uint8))
    (inputs / "z.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    params = _params(tmp_path / "p.yaml", **TINY)
    torch.manual_seed(0)
    tiny = replace(cfg, **TINY)
    torch.save({"model": build_model(tiny.model, tiny.data.num_classes).state_dict(),
                "config": dataclasses.asdict(tiny), "seed": 0, "epoch": 1}, tmp_path / "best.pt")
    r = _run(["xtask.tools.predict", "--checkpoint", str(tmp_path / "best.pt"), "--dataset", "synthetic", "--params",
              str(params), "--out", str(tmp_path / "out"), "--device", "cpu", str(inputs)])
    assert _one_line_error(r) == f"error: {inputs / 'z.png'}: cannot be read as an image (expected PNG or JPEG)"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_depth.png", "a_seg.png"]
    with pytest.raises(XTaskError, match="same name stem 'a'"):
        predict_files(cfg, tmp_path / "best.pt", [inputs / "a.png", inputs], tmp_path / "o2")
    with pytest.raises(XTaskError, match="missing.png: no such file or folder"):
        predict_files(cfg, tmp_path / "best.pt", [inputs / "missing.png"], tmp_path / "o2")


def _as_original(state: dict, cfg) -> dict:
    """This project's state dict under the original's key names (the converter, run backwards)."""
    # key names do not depend on the number of classes; the listing has 7 classes for ResNet18
    keys = fixtures.original_keys(cfg.model.enc_layers, 7, cfg.model.batch_norm, cfg.model.wider_ttnet)
    names = {convert_key(k): k for k, _, _ in keys}
    assert set(names) == set(state)
    # DataParallel's prefix, as older versions of the original saved it
    return {"module." + names[k]: v for k, v in state.items()}


def test_our_checkpoint_and_its_original_key_names_predict_identically(work, tmp_path):
    root, _, cfg = work
    tiny = replace(cfg, **TINY)
    torch.manual_seed(1)
    state = build_model(tiny.model, tiny.data.num_classes).state_dict()
    torch.save({"model": state, "config": dataclasses.asdict(tiny), "seed": 4, "epoch": 2}, tmp_path / "ours.pt")
    torch.save(_as_original(state, tiny), tmp_path / "orig.pth")
    torch.manual_seed(2)
    torch.save({"model": build_model(tiny.model, tiny.data.num_classes).state_dict(), "config": dataclasses.asdict(tiny)},
               tmp_path / "other.pt")
    images = [root / "images"]
    outs = {}
    for name in ("ours.pt", "orig.pth", "other.pt"):
        predict_files(tiny, tmp_path / name, images, tmp_path / name.split(".")[0], raw=True, progress=False)
        outs[name] = {f.name: np.load(f) for f in sorted((tmp_path / name.split(".")[0]).glob("*.npy"))}
    assert len(outs["ours.pt"]) == 6
    for f, arr in outs["ours.pt"].items():
        assert np.array_equal(arr, outs["orig.pth"][f]), f
    # the comparison can tell weights apart: another initialisation predicts another depth
    assert not np.array_equal(outs["ours.pt"]["a_depth.npy"], outs["other.pt"]["a_depth.npy"])
    a = evaluate(tiny, tmp_path / "ours.pt", root / "prepared", progress=False)
    b = evaluate(tiny, tmp_path / "orig.pth", root / "prepared", progress=False)
    assert (a.pop("seed"), a.pop("best_epoch"), b.pop("seed"), b.pop("best_epoch")) == (4, 2, -1, -1)
    assert a == b


@pytest.mark.parametrize("params_protocol", ["original", "corrected"])
def test_a_network_sees_images_in_the_convention_it_was_trained_with(tmp_path, params_protocol):
    # NYUv2: the original (and protocol original) feed MTAN's [0, 1] images, protocol corrected normalises
    # them; whatever the params feed, each network gets the input it was trained on
    cfg = replace(load_params(ROOT / "params.yaml").dataset("nyu"),
                  **{**TINY, "num_classes": 13, "protocol.name": params_protocol})
    torch.manual_seed(3)
    net = build_model(cfg.model, cfg.data.num_classes).eval()
    torch.save(_as_original(net.state_dict(), cfg), tmp_path / "model.pth")
    for trained in ("original", "corrected"):
        saved = {**dataclasses.asdict(cfg), "protocol": {**dataclasses.asdict(cfg.protocol), "name": trained}}
        torch.save({"model": net.state_dict(), "config": saved}, tmp_path / f"{trained}.pt")
    image = torch.randint(0, 256, (1, 64, 128, 3), dtype=torch.uint8)
    fed = to_model_input(image, normalise=params_protocol == "corrected")  # what evaluate and predict feed
    with torch.no_grad():
        on_unit = net(image.permute(0, 3, 1, 2).float() / 255)   # a network trained on [0, 1] images
        on_normalised = net(to_model_input(image))               # one trained on normalised images
        for file, want in (("model.pth", on_unit), ("original.pt", on_unit), ("corrected.pt", on_normalised)):
            model, _ = trained_model(cfg, tmp_path / file)
            got = model(fed)
            for name in ("seg", "depth", "seg_transferred", "depth_transferred"):
                assert torch.allclose(getattr(got, name), getattr(want, name), rtol=1e-4, atol=1e-5), (file, name)
    assert not torch.allclose(on_unit.depth, on_normalised.depth, rtol=1e-4, atol=1e-5)


def test_palettes_follow_the_datasets():
    cs7, cs19, nyu = seg_palette("cityscapes", 7), seg_palette("cityscapes", 19), seg_palette("nyu", 13)
    assert tuple(cs7[0]) == (128, 64, 128) and tuple(cs7[4]) == (70, 130, 180)  # road for flat, sky
    assert tuple(cs19[13]) == (0, 0, 142)  # car
    for p, n in ((cs7, 7), (cs19, 19), (nyu, 13)):
        assert p.shape == (n, 3) and len({tuple(c) for c in p}) == n
    seg = np.array([[0, 6, 250]])
    assert colourise_seg(seg, cs7).tolist() == [[[128, 64, 128], [0, 0, 142], [0, 0, 0]]]
    with pytest.raises(XTaskError, match="num_classes"):
        seg_palette("cityscapes", 13)


def test_the_figure_drops_the_columns_a_model_does_not_predict(tmp_path):
    rng = np.random.default_rng(0)
    k, h, w = 2, 32, 64
    seg = rng.integers(0, 7, (k, h, w))
    depth = rng.random((k, h, w), dtype=np.float32)
    full = Examples(rng.integers(0, 256, (k, h, w, 3), dtype=np.uint8), seg, seg, seg, depth, depth, depth)
    no_ttnets = full._replace(seg_transferred=None, depth_transferred=None)
    depth_only = no_ttnets._replace(seg_target=None, seg=None)
    palette = seg_palette("cityscapes", 7)
    assert [t for t, _ in panels(full, 0, palette, "inverse_depth")] == [
        "image", "seg target", "seg", "seg (from depth)", "depth target", "depth", "depth (from seg)"]
    assert [t for t, _ in panels(no_ttnets, 0, palette, "metres")] == [
        "image", "seg target", "seg", "depth target", "depth"]
    assert [t for t, _ in panels(depth_only, 1, palette, "metres")] == ["image", "depth target", "depth"]
    for i, ex in enumerate((full, no_ttnets, depth_only)):
        write_examples_figure(ex, tmp_path / f"{i}.png", palette=palette, depth_kind="metres")
        assert cv2.imread(str(tmp_path / f"{i}.png")) is not None
    widths = [cv2.imread(str(tmp_path / f"{i}.png")).shape[1] for i in range(3)]
    assert widths[0] > widths[1] > widths[2]
