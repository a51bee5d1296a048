"""Tests for the data layer: labels, raw readers, synthetic generator, prepare, transforms."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from xtask.data import cityscapes, nyu
from xtask.common.labels import CS_IGNORE_INDEX, class_names, cityscapes_lut, valid_label_ids
from xtask.common.prepared import PreparedSplit
from xtask.data.prepare import prepare
from xtask.data.synthetic import generate
from xtask.core.batches import batch_spec, to_batch
from xtask.core.transforms import IMAGENET_MEAN, IMAGENET_STD, Draw, draw_augmentations, hflip, to_model_input, zoom
from xtask.common.config import load_params, replace
from xtask.core.protocol import protocol_of
from xtask.common.errors import XTaskError

H, W = 32, 64
ROOT = Path(__file__).resolve().parents[1]


def _png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", arr)
    assert ok
    path.write_bytes(buf.tobytes())


def _raw_cs(root: Path, split: str, stem: str, *, label=None, disp=None, image=None, city="c") -> None:
    image = np.full((H, W, 3), 100, np.uint8) if image is None else image
    label = np.full((H, W), 7, np.uint8) if label is None else label
    disp = np.full((H, W), 1000, np.uint16) if disp is None else disp
    _png(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", image)
    _png(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", label)
    _png(root / "disparity" / split / city / f"{stem}_disparity.png", disp)


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "raw"
    generate(root, seed=3, n_train=6, n_val=3, height=H, width=W)
    return root


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


# ---- labels -------------------------------------------------------------------------------------

def test_lut_known_ids():
    l7, l19 = cityscapes_lut(7), cityscapes_lut(19)
    assert l7.dtype == np.uint8 and l7.shape == (256,)
    for label_id, c7, c19 in ((7, 0, 0), (23, 4, 10), (26, 6, 13), (0, 250, 250), (24, 5, 11), (11, 1, 2)):
        assert (l7[label_id], l19[label_id]) == (c7, c19)
    assert l7[9] == 0 and l19[9] == 250  # parking: flat category, but no train id
    assert l7[200] == 250 and l19[255] == 250
    assert -1 not in valid_label_ids() and valid_label_ids() == set(range(34))
    with pytest.raises(XTaskError):
        cityscapes_lut(8)


def test_class_names():
    assert class_names("cityscapes", 7)[0] == "flat" and class_names("cityscapes", 7)[6] == "vehicle"
    assert class_names("cityscapes", 19)[13] == "car"
    assert class_names("nyu", 13)[0] == "bed" and len(class_names("nyu", 13)) == 13


# ---- synthetic generator ---------------------------------------------------------------------------

def test_generate_deterministic_and_layout(tmp_path, synth):
    generate(tmp_path / "a", seed=3, n_train=6, n_val=3, height=H, width=W)
    generate(tmp_path / "b", seed=4, n_train=6, n_val=3, height=H, width=W)
    generate(tmp_path / "c", seed=3, n_train=2, n_val=3, height=H, width=W)
    same, other = _tree_bytes(synth), _tree_bytes(tmp_path / "a")
    assert same == other
    assert _tree_bytes(tmp_path / "b") != same
    val = {k: v for k, v in same.items() if "/val/" in k}
    assert val == {k: v for k, v in _tree_bytes(tmp_path / "c").items() if "/val/" in k}
    assert len(cityscapes.list_samples(synth, "train")) == 6
    samples = cityscapes.list_samples(synth, "val")
    assert len(samples) == 3 and {s.image.parent.name for s in samples} == {"syntha", "synthb"}
    assert samples[0].stem.startswith("syntha_000000_")


def test_synthetic_content(tmp_path):
    root = tmp_path / "raw"
    generate(root, seed=0, n_train=12, n_val=1, height=64, width=128)
    lut = cityscapes_lut(7)
    seen: set[int] = set()
    for s in cityscapes.list_samples(root, "train"):
        image, label, inv = cityscapes.read_sample(s, lut=lut, height=64, width=128)
        assert image.dtype == np.uint8 and image.shape == (64, 128, 3)
        seen |= set(np.unique(label).tolist())
        assert np.nanmin(inv) >= 0 and np.nanmax(inv) <= 0.4922
        assert np.isnan(inv[label == 4]).all()  # sky has no disparity measurement
        # The bottom rows are (mostly) ground: inverse depth grows downward there.
        ground = label == 0
        rows = [inv[r][ground[r]].mean() for r in range(40, 58) if ground[r].sum() > 20]
        assert len(rows) >= 5 and np.all(np.diff(rows) > 0)
    assert set(range(7)) <= seen


# ---- Cityscapes reader ------------------------------------------------------------------------------

def test_read_sample_disparity_conversion(tmp_path):
    disp = np.zeros((H, W), np.uint16)
    disp[:, 11:20] = 257
    disp[:, 20:30] = 60000
    disp[:, 30:40] = 1  # zero disparity: inverse depth 0, a measurement (the original's mask counts it)
    label = np.full((H, W), 7, np.uint8)
    label[1, :] = 0  # void; output row 0 samples source row 1, the centre of its 2-row block
    image = np.zeros((H, W, 3), np.uint8)
    image[..., 0] = 255  # blue in OpenCV's BGR order
    _raw_cs(tmp_path, "train", "c_000000_000000", label=label, disp=disp, image=image)
    (s,) = cityscapes.list_samples(tmp_path, "train")
    img, lab, inv = cityscapes.read_sample(s, lut=cityscapes_lut(7), height=H // 2, width=W // 2)
    assert img.shape == (H // 2, W // 2, 3) and (img[..., 2] == 255).all() and (img[..., 0] == 0).all()
    assert lab.dtype == np.uint8 and lab[0, 0] == CS_IGNORE_INDEX and lab[-1, -1] == 0
    assert inv.dtype == np.float32
    assert np.isnan(inv[0, 0])  # no measurement
    # (p - 1) / 256**2 in float32, not rounded (the original's); output column x samples source column
    # 2x + 1, the centre of its 2-pixel block (PIL's NEAREST; OpenCV's INTER_NEAREST would read column 10)
    assert inv[0, 5] == np.float32(256 / 65536) and np.isnan(inv[0, 4])
    assert inv[0, 12] == np.float32(0.4922)
    assert inv[0, 16] == 0.0


def _expect_error(fragment: str, fn, *args, **kwargs) -> None:
    with pytest.raises(XTaskError) as err:
        fn(*args, **kwargs)
    msg = str(err.value)
    assert fragment in msg and "\n" not in msg, msg


def test_missing_label_file(tmp_path):
    _raw_cs(tmp_path, "train", "c_000000_000000")
    _raw_cs(tmp_path, "train", "c_000000_000001")
    (tmp_path / "gtFine/train/c/c_000000_000001_gtFine_labelIds.png").unlink()
    _expect_error("c_000000_000001_gtFine_labelIds.png", cityscapes.list_samples, tmp_path, "train")


def test_extra_disparity_file(tmp_path):
    _raw_cs(tmp_path, "train", "c_000000_000000")
    _png(tmp_path / "disparity/train/c/c_000000_000009_disparity.png", np.ones((H, W), np.uint16))
    _expect_error("c_000000_000009_disparity.png", cityscapes.list_samples, tmp_path, "train")


def test_empty_and_missing_split(tmp_path):
    for sub in ("leftImg8bit", "gtFine", "disparity"):
        (tmp_path / sub / "val").mkdir(parents=True)
    _expect_error("val", cityscapes.list_samples, tmp_path, "val")
    _expect_error(str(tmp_path / "leftImg8bit" / "train"), cityscapes.list_samples, tmp_path, "train")


@pytest.mark.parametrize("case", ["truncated", "disp8bit", "label200", "size"])
def test_read_sample_validation(tmp_path, case):
    stem = "c_000000_000000"
    if case == "disp8bit":
        _raw_cs(tmp_path, "train", stem, disp=np.full((H, W), 9, np.uint8))
    elif case == "label200":
        label = np.full((H, W), 7, np.uint8)
        label[3, 3] = 200
        _raw_cs(tmp_path, "train", stem, label=label)
    elif case == "size":
        _raw_cs(tmp_path, "train", stem, disp=np.ones((H, W + 2), np.uint16))
    else:
        _raw_cs(tmp_path, "train", stem)
        path = tmp_path / f"leftImg8bit/train/c/{stem}_leftImg8bit.png"
        path.write_bytes(path.read_bytes()[:-40])
    (s,) = cityscapes.list_samples(tmp_path, "train")
    name = {"truncated": s.image.name, "disp8bit": s.disparity.name, "label200": s.label.name,
            "size": s.disparity.name}[case]
    _expect_error(name, cityscapes.read_sample, s, lut=cityscapes_lut(7), height=H, width=W)
    if case == "disp8bit":
        _expect_error("expected a 16-bit PNG", cityscapes.read_sample, s, lut=cityscapes_lut(7), height=H, width=W)


# ---- NYUv2 reader ----------------------------------------------------------------------------------

def _raw_nyu(root: Path, split: str, n: int, h: int = H, w: int = W) -> None:
    rng = np.random.default_rng(0)
    for kind in ("image", "label", "depth"):
        (root / split / kind).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        np.save(root / split / "image" / f"{i}.npy", rng.random((h, w, 3)))
        np.save(root / split / "label" / f"{i}.npy", rng.integers(-1, 13, (h, w)).astype(np.float64))
        np.save(root / split / "depth" / f"{i}.npy", rng.uniform(0, 10, (h, w, 1)))


def test_nyu_read_and_validation(tmp_path):
    _raw_nyu(tmp_path, "train", 3, h=H * 2, w=W * 2)
    assert nyu.list_samples(tmp_path, "train") == [0, 1, 2]
    image, label, depth = nyu.read_sample(tmp_path, "train", 1, height=H, width=W)
    assert (image.dtype, label.dtype, depth.dtype) == (np.float32, np.int16, np.float32)  # MTAN's float image
    assert image.shape == (H, W, 3) and label.shape == depth.shape == (H, W)
    assert label.min() >= -1 and label.max() <= 12

    np.save(tmp_path / "train/label/2.npy", np.full((H, W), 15.0))
    _expect_error("2.npy", nyu.read_sample, tmp_path, "train", 2, height=H, width=W)
    (tmp_path / "train/depth/1.npy").write_bytes(b"\x93NUMPY garbage")
    _expect_error(str(Path("depth") / "1.npy"), nyu.read_sample, tmp_path, "train", 1, height=H, width=W)
    np.save(tmp_path / "train/depth/7.npy", np.zeros((H, W, 1)))
    _expect_error("7.npy", nyu.list_samples, tmp_path, "train")
    (tmp_path / "train/depth/7.npy").unlink()
    (tmp_path / "train/image/0.npy").unlink()
    _expect_error(str(Path("image") / "0.npy"), nyu.list_samples, tmp_path, "train")


# ---- prepare ------------------------------------------------------------------------------------

def test_prepare_cityscapes(tmp_path, synth):
    out = tmp_path / "prepared"
    meta = prepare("cityscapes", synth, out, num_classes=7, height=H // 2, width=W // 2,
                   expect_full_size=False, progress=False)
    assert meta == json.loads((out / "meta.json").read_text())
    assert meta["counts"] == {"train": 6, "val": 3} and meta["ignore_index"] == 250
    assert meta["depth_kind"] == "inverse_depth" and 0 < meta["train_depth_mean"] < 0.4922
    split = PreparedSplit(out, "val")
    image, label, depth = split.arrays()
    assert len(split) == 3 and split.meta["height"] == H // 2
    assert image.shape == (3, H // 2, W // 2, 3) and image.dtype == np.uint8
    assert label.dtype == np.uint8 and depth.dtype == np.float32
    assert set(np.unique(label).tolist()) <= set(range(7)) | {250}
    assert split.stems == [s.stem for s in cityscapes.list_samples(synth, "val")]
    ref = cityscapes.read_sample(cityscapes.list_samples(synth, "val")[1], lut=cityscapes_lut(7),
                                 height=H // 2, width=W // 2)
    assert np.array_equal(image[1], ref[0]) and np.array_equal(label[1], ref[1])
    _expect_error("found train 6", prepare, "cityscapes", synth, tmp_path / "x", num_classes=7,
                  height=H, width=W, expect_full_size=True, progress=False)
    (out / "val" / "depth.npy").unlink()
    _expect_error("depth.npy", PreparedSplit, out, "val")


def test_prepare_failure_leaves_nothing(tmp_path):
    raw = tmp_path / "raw"
    for i in range(3):
        _raw_cs(raw, "train", f"c_000000_00000{i}")
    _raw_cs(raw, "val", "c_000000_000000")
    bad = raw / "leftImg8bit/train/c/c_000000_000001_leftImg8bit.png"
    bad.write_bytes(bad.read_bytes()[:30])
    out = tmp_path / "prepared"
    _expect_error(bad.name, prepare, "cityscapes", raw, out, num_classes=19, height=H, width=W,
                  expect_full_size=False, progress=False)
    assert not out.exists() and list(tmp_path.iterdir()) == [raw]


def test_prepare_nyu(tmp_path):
    _raw_nyu(tmp_path / "raw", "train", 2)
    _raw_nyu(tmp_path / "raw", "val", 1)
    meta = prepare("nyu", tmp_path / "raw", tmp_path / "out", num_classes=13, height=H, width=W,
                   expect_full_size=False, progress=False)
    assert meta["ignore_index"] == -1 and meta["depth_kind"] == "metres" and meta["counts"]["val"] == 1
    _, label, _ = PreparedSplit(tmp_path / "out", "train").arrays()
    assert label.max() == 255  # NYUv2 ignore (-1) stored as STORED_IGNORE in the uint8 labels


# ---- transforms and batches --------------------------------------------------------------------

def _batch(n: int = 4):
    g = torch.Generator().manual_seed(0)
    image = torch.rand(n, 3, H, W, generator=g)
    label = torch.randint(0, 7, (n, H, W), generator=g)
    depth = torch.rand(n, 1, H, W, generator=g) + 0.5
    return image, label, depth


def test_zoom_shapes_identity_and_window():
    image, label, depth = _batch(1)
    for a, b in zip(zoom(image, label, depth, Draw(False, 1.0, 0, 0)), (image, label, depth)):
        assert torch.equal(a, b)
    img, lab, dep = zoom(image, label, depth, Draw(False, 1.5, 3, 5))
    assert img.shape == image.shape and lab.shape == label.shape and lab.dtype == torch.int64
    # nearest: every value of the zoomed maps comes from the window, none is invented
    window = depth[:, :, 3:3 + int(H / 1.5), 5:5 + int(W / 1.5)]
    assert set(dep.unique().tolist()) <= set(window.unique().tolist())
    assert set(lab.unique().tolist()) <= set(label[:, 3:3 + int(H / 1.5), 5:5 + int(W / 1.5)].unique().tolist())


def test_draws_are_reproducible_uniform_choices_with_windows_inside_the_image():
    draws = [draw_augmentations(64, H, W, torch.Generator().manual_seed(5)) for _ in range(2)]
    assert draws[0] == draws[1]
    assert {d.scale for d in draws[0]} == {1.0, 1.2, 1.5} and {d.flip for d in draws[0]} == {True, False}
    for d in draws[0]:
        assert 0 <= d.top <= H - int(H / d.scale) and 0 <= d.left <= W - int(W / d.scale)


def test_hflip_mirrors_every_map():
    image, label, depth = _batch(2)
    for a, b in zip(hflip(image, label, depth), (image, label, depth)):
        assert torch.equal(a, b.flip(-1))


def _raw_batch(image_u8, label, depth):
    return (torch.from_numpy(image_u8), torch.from_numpy(label), torch.from_numpy(depth), (0, len(label)))


def _cs_batch():
    """One Cityscapes-format image: labels with an ignored band, depth with NaN (no measurement) and 0
    (zero disparity) bands, so that masks before and after a zoom differ."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (1, H, W, 3), dtype=np.uint8)
    label = rng.integers(0, 7, (1, H, W)).astype(np.uint8)
    label[:, :6] = CS_IGNORE_INDEX
    depth = (rng.random((1, H, W)) * 0.3 + 0.01).astype(np.float32)
    depth[:, -5:] = np.nan
    depth[:, :, :4] = 0.0
    return _raw_batch(image, label, depth)


def _spec(fmt: str, protocol: str):
    cfg = replace(load_params(ROOT / "params.yaml").dataset("nyu" if fmt == "nyu" else "cityscapes"),
                  **{"protocol.name": protocol})
    return batch_spec(cfg.data, protocol_of(cfg.protocol))


@pytest.mark.parametrize("protocol", ["original", "corrected"])
def test_cityscapes_masks_and_depth_under_each_protocol(protocol):
    raw = _cs_batch()
    spec = _spec("cityscapes", protocol)
    val = to_batch(raw, torch.device("cpu"), spec)
    # no augmentation: masks of the targets; the original counts zero disparity (depth 0) as measured
    assert torch.equal(val.seg_mask, (val.seg != CS_IGNORE_INDEX).unsqueeze(1))
    measured = ~raw[2].isnan().unsqueeze(1)
    assert torch.equal(val.depth_mask, measured if protocol == "original" else val.depth > 0)
    assert not val.depth.isnan().any() and (val.depth[~measured] == 0).all()
    stored = torch.from_numpy(np.nan_to_num(raw[2].numpy())).unsqueeze(1)
    # float inverse depth under both: the published environment's to_pil_image kept float arrays float
    assert torch.equal(val.depth, stored) and not torch.equal(val.depth, torch.floor(stored * 255) / 255)
    draw = Draw(True, 1.5, 2, 7)
    aug = to_batch(raw, torch.device("cpu"), spec, [draw])
    # Cityscapes flips, then zooms: the targets are the zoomed flipped maps
    flipped = to_batch(raw, torch.device("cpu"), dataclasses.replace(spec, depth_mask="measured"))
    _, seg, depth = zoom(flipped.image.flip(-1), flipped.seg.flip(-1), flipped.depth.flip(-1), draw)
    assert torch.equal(aug.seg, seg)
    if protocol == "original":  # masks of the flipped maps before the crop; depth values not rescaled
        assert torch.equal(aug.seg_mask, val.seg_mask.flip(-1)) and torch.equal(aug.depth_mask, measured.flip(-1))
        assert torch.equal(aug.depth, depth)
    else:  # masks of the augmented targets; inverse depth x s
        assert torch.equal(aug.seg_mask, (aug.seg != CS_IGNORE_INDEX).unsqueeze(1))
        assert torch.equal(aug.depth_mask, aug.depth > 0)
        assert torch.allclose(aug.depth, depth * 1.5)


@pytest.mark.parametrize("protocol", ["original", "corrected"])
def test_nyu_input_masks_and_depth_under_each_protocol(protocol):
    rng = np.random.default_rng(1)
    image = rng.random((1, H, W, 3)).astype(np.float32)
    label = rng.integers(0, 13, (1, H, W)).astype(np.uint8)
    depth = (rng.random((1, H, W)) * 5).astype(np.float32)
    depth[:, :3] = 0  # missing depth
    spec = _spec("nyu", protocol)
    raw = _raw_batch(image, label, depth)
    b = to_batch(raw, torch.device("cpu"), spec)
    x = torch.from_numpy(image).permute(0, 3, 1, 2)
    if protocol == "original":  # MTAN's [0, 1] images as they are, every depth pixel in the losses
        assert torch.equal(b.image, x) and b.depth_mask.all()
    else:
        assert torch.allclose(b.image, to_model_input(torch.from_numpy(image))) and torch.equal(b.depth_mask, b.depth > 0)
    assert b.seg_mask is None  # the original's NYUv2 scripts pass no seg mask
    aug = to_batch(raw, torch.device("cpu"), spec, [Draw(True, 1.2, 1, 2)])
    # NYUv2 zooms, then flips, and divides metric depth by the scale
    _, seg, dep = zoom(b.image, b.seg, b.depth, Draw(False, 1.2, 1, 2))
    assert torch.equal(aug.seg, seg.flip(-1)) and torch.allclose(aug.depth, dep.flip(-1) / 1.2)


def test_to_model_input():
    x = torch.zeros(2, H, W, 3, dtype=torch.uint8)
    x[..., 1] = 255
    y = to_model_input(x)
    assert y.shape == (2, 3, H, W) and y.dtype == torch.float32
    assert torch.allclose(y[:, 0], torch.tensor(-IMAGENET_MEAN[0] / IMAGENET_STD[0]))
    assert torch.allclose(y[:, 1], torch.tensor((1 - IMAGENET_MEAN[1]) / IMAGENET_STD[1]))
    assert torch.equal(to_model_input(x, normalise=False)[:, 1], torch.ones(2, H, W))
    f = torch.rand(2, H, W, 3)
    assert torch.equal(to_model_input(f, normalise=False), f.permute(0, 3, 1, 2))