"""The embedded default dataset: procedurally generated street scenes in the raw Cityscapes format.

Geometry is a pinhole camera above a flat ground plane, so depth and semantics are consistent:
every object stands on the ground (its bottom row fixes its depth), a z-buffer makes nearer
surfaces occlude farther ones, and the stored disparity is that of the visible surface.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from xtask.common.errors import XTaskError
from xtask.common.io import atomic_path
from xtask.data.cityscapes import DISP_DIR, DISP_SUFFIX, IMAGE_DIR, IMAGE_SUFFIX, LABEL_DIR, LABEL_SUFFIX

# Cityscapes labelIds used here.
UNLABELED, EGO, STATIC = 0, 1, 4
ROAD, SIDEWALK, PARKING = 7, 8, 9
BUILDING, WALL, FENCE = 11, 12, 13
POLE, LIGHT, SIGN = 17, 19, 20
VEGETATION, TERRAIN, SKY = 21, 22, 23
PERSON, CAR, TRUCK, BUS = 24, 26, 27, 28

FOCAL_PER_WIDTH = 1.1  # Cityscapes: 2262 px focal length for a 2048 px wide image
DISPARITY_CONST = 452.0  # disparity [px] = DISPARITY_CONST / depth [m]
Z_MIN, Z_GROUND_MAX = 3.7, 200.0  # 3.7 m keeps inverse depth below the reader's 0.4922 clip
SPLIT_CODES = {"train": 0, "val": 1}

Colour = np.ndarray


@dataclass(frozen=True)
class _Camera:
    height: int
    width: int
    f: float  # focal length in pixels (square pixels)
    cx: float
    v0: float  # horizon row (fractional)
    cam_h: float  # camera height above the ground [m]


@dataclass
class _Canvas:
    label: np.ndarray  # (H,W) uint8 labelIds
    z: np.ndarray  # (H,W) float64 depth of the visible surface, inf where nothing (sky)
    albedo: np.ndarray  # (H,W,3) float32 RGB before lighting and fog
    fine: np.ndarray  # (H,W) float32 per-pixel noise in [0,1), shared by all textures
    coarse: np.ndarray  # (H,W) float32 smooth noise in [0,1): blotches, stains, foliage clumps


@dataclass(frozen=True)
class _Region:
    rows: slice
    cols: slice
    X: np.ndarray  # lateral metres from the object's centre, per pixel
    Y: np.ndarray  # metres above the ground, per pixel


def _paint(c: _Canvas, reg: _Region, mask: np.ndarray, z: float | np.ndarray, label: int, colour) -> None:
    """Draw where ``mask`` holds and the surface is nearer than what is already there."""
    zz = np.broadcast_to(np.asarray(z, dtype=np.float64), mask.shape)
    win = mask & (zz < c.z[reg.rows, reg.cols])
    if not win.any():
        return
    c.z[reg.rows, reg.cols][win] = zz[win]
    c.label[reg.rows, reg.cols][win] = label
    c.albedo[reg.rows, reg.cols][win] = np.broadcast_to(np.asarray(colour, np.float32), mask.shape + (3,))[win]


def _upright(cam: _Camera, x: float, z: float, half_w: float, h: float) -> _Region | None:
    """Pixels of a fronto-parallel rectangle standing on the ground at lateral x, depth z."""
    s = cam.f / z
    left, right = cam.cx + s * (x - half_w), cam.cx + s * (x + half_w)
    top, bottom = cam.v0 + s * (cam.cam_h - h), cam.v0 + s * cam.cam_h
    r0, r1 = max(int(np.floor(top)), 0), min(int(np.ceil(bottom)) + 1, cam.height)
    c0, c1 = max(int(np.floor(left)), 0), min(int(np.ceil(right)) + 1, cam.width)
    if r0 >= r1 or c0 >= c1:
        return None
    vv, uu = np.mgrid[r0:r1, c0:c1].astype(np.float32)
    return _Region(slice(r0, r1), slice(c0, c1), (uu - cam.cx) / s - x, cam.cam_h - (vv - cam.v0) / s)


def _jitter(rng: np.random.Generator, base, spread: float) -> Colour:
    return np.clip(np.asarray(base, np.float32) + rng.normal(0, spread, 3), 0, 255).astype(np.float32)


def _tex(c: _Canvas, reg: _Region, colour: Colour, fine: float, coarse: float) -> np.ndarray:
    """Colour modulated by the shared noise fields, so texture, not colour alone, tells classes apart."""
    n = 1.0 + fine * (c.fine[reg.rows, reg.cols] - 0.5) + coarse * (c.coarse[reg.rows, reg.cols] - 0.5)
    return colour * n[..., None]


# Palettes overlap on purpose (grey cars vs grey road/buildings, dark clothes vs tyres) so that
# a single pixel's colour is ambiguous and context is needed.
WALL_COLOURS = [(150, 140, 125), (120, 110, 105), (160, 90, 70), (190, 185, 175), (100, 105, 110), (170, 150, 110)]
CAR_COLOURS = [(200, 200, 205), (30, 30, 35), (130, 130, 135), (150, 30, 30), (40, 60, 130), (90, 95, 100), (210, 200, 170)]
CLOTHES = [(30, 30, 40), (60, 60, 70), (120, 30, 40), (40, 70, 120), (180, 170, 150), (90, 110, 60), (200, 200, 200)]
SIGN_COLOURS = [(200, 30, 30), (30, 60, 170), (220, 190, 30), (230, 230, 230)]


@dataclass(frozen=True)
class _Street:
    centre: float  # lateral position of the road centre [m]
    road_half: float  # half the road width [m]
    walk: float  # sidewalk width [m]

    def kerb(self, rng: np.random.Generator, spread: float = 1.0) -> float:
        """A lateral position on one of the sidewalks (or beyond, for spread > 1)."""
        side = rng.choice([-1.0, 1.0])
        return self.centre + side * (self.road_half + rng.uniform(0.3, self.walk * spread))


def _ground(c: _Canvas, cam: _Camera, rng: np.random.Generator, street: _Street) -> None:
    rows = np.arange(cam.height, dtype=np.float64)
    below = rows > cam.v0 + 0.5  # rows near the horizon would be infinitely far
    if not below.any():
        return
    r0 = int(np.flatnonzero(below)[0])
    z_row = np.minimum(cam.f * cam.cam_h / (rows[r0:] - cam.v0), Z_GROUND_MAX)
    u = np.arange(cam.width, dtype=np.float64)
    zz = np.repeat(z_row[:, None], cam.width, axis=1)
    xx = (u[None, :] - cam.cx) * z_row[:, None] / cam.f

    road_c, road_half, walk = street.centre, street.road_half, street.walk
    d = np.abs(xx - road_c)
    side_outer = [rng.random() < 0.5, rng.random() < 0.5]  # per side: terrain or more sidewalk
    outer_is_terrain = np.where(xx < road_c, side_outer[0], side_outer[1])
    label = np.where(d < road_half, ROAD, np.where(d < road_half + walk, SIDEWALK,
                                                   np.where(outer_is_terrain, TERRAIN, SIDEWALK)))
    if rng.random() < 0.3:  # parking lane at one road edge
        edge = road_c + rng.choice([-1, 1]) * (road_half - 1.2)
        label = np.where((np.abs(xx - edge) < 1.2) & (label == ROAD), PARKING, label)

    fine, coarse = c.fine[r0:], c.coarse[r0:]
    road_col = _jitter(rng, (95, 95, 100), 12)
    walk_col = _jitter(rng, (140, 135, 130), 15)
    terrain_col = _jitter(rng, (105, 115, 70), 15)
    tile = (np.mod(xx, 0.6) < 0.07) | (np.mod(zz, 0.6) < 0.07)
    lane = (np.abs(xx - road_c) < 0.08) & (np.mod(zz, 6.0) < 3.0)
    col = np.empty(zz.shape + (3,), np.float32)
    for lab, base, f_amp, c_amp in ((ROAD, road_col, 0.25, 0.2), (PARKING, road_col * 1.1, 0.25, 0.2),
                                    (SIDEWALK, walk_col, 0.15, 0.2), (TERRAIN, terrain_col, 0.5, 0.5)):
        m = label == lab
        n = 1.0 + f_amp * (fine[m] - 0.5) + c_amp * (coarse[m] - 0.5)
        col[m] = base * n[:, None]
    col[(label == SIDEWALK) & tile] *= 0.8
    col[(label == ROAD) & lane] = (215, 215, 205)
    c.z[r0:] = zz
    c.label[r0:] = label
    c.albedo[r0:] = col


def _side_plane(c: _Canvas, cam: _Camera, x: float, z_a: float, z_b: float, h: float, label: int,
                colour: Colour, rng: np.random.Generator) -> None:
    """A vertical plane parallel to the viewing direction (street-side facade, fence or wall)."""
    inv = [cam.f * x / z for z in (z_a, z_b)]
    left, right = cam.cx + min(inv), cam.cx + max(inv)
    ends = [cam.v0 + cam.f * (cam.cam_h - hh) / z for z in (z_a, z_b) for hh in (h, 0.0)]
    r0, r1 = max(int(np.floor(min(ends))), 0), min(int(np.ceil(max(ends))) + 1, cam.height)
    c0, c1 = max(int(np.floor(left)), 0), min(int(np.ceil(right)) + 1, cam.width)
    if r0 >= r1 or c0 >= c1:
        return
    vv, uu = np.mgrid[r0:r1, c0:c1].astype(np.float32)
    du = uu - cam.cx
    with np.errstate(divide="ignore", invalid="ignore"):
        zc = np.where(du * x > 0, cam.f * x / du, np.inf)
    Y = cam.cam_h - (vv - cam.v0) * zc / cam.f
    reg = _Region(slice(r0, r1), slice(c0, c1), zc, Y)
    mask = (zc >= z_a) & (zc <= z_b) & (Y >= 0) & (Y <= h)
    col = _tex(c, reg, colour, 0.15, 0.35)
    if label == BUILDING:
        w_step, f_step = rng.uniform(2.0, 4.0), rng.uniform(2.8, 3.6)
        window = (np.mod(zc, w_step) < 0.5 * w_step) & (np.mod(Y, f_step) > 0.35 * f_step) & (Y > 2.5)
        col[window] = _jitter(rng, (55, 65, 80), 15) * (0.7 + 0.6 * c.fine[reg.rows, reg.cols][window, None])
    elif label == FENCE:
        mask &= (np.mod(zc, 0.4) < 0.12) | (Y > h - 0.12)  # bars and a top rail; gaps show what is behind
    # A facade seen at a grazing angle is darker than one facing the camera.
    _paint(c, reg, mask, zc, label, col * (0.75 if x < 0 else 0.9))


def _street_side(c: _Canvas, cam: _Camera, rng: np.random.Generator, x: float) -> None:
    z = rng.uniform(5.0, 20.0)
    if rng.random() < 0.3:  # low wall or fence in front of the facades
        _side_plane(c, cam, x * rng.uniform(0.7, 0.9), z, z + rng.uniform(5, 30), rng.uniform(0.8, 2.0),
                    FENCE if rng.random() < 0.6 else WALL, _jitter(rng, (110, 105, 95), 20), rng)
    while z < 80.0:
        length = rng.uniform(8.0, 30.0)
        if rng.random() < 0.8:
            _side_plane(c, cam, x, z, z + length, rng.uniform(6.0, 25.0), BUILDING,
                        _jitter(rng, WALL_COLOURS[rng.integers(len(WALL_COLOURS))], 12), rng)
        z += length + (rng.uniform(2.0, 10.0) if rng.random() < 0.3 else 0.0)


def _far_building(c: _Canvas, cam: _Camera, rng: np.random.Generator) -> None:
    z = rng.uniform(35.0, 80.0)
    half_w, h = rng.uniform(5.0, 25.0), rng.uniform(5.0, 35.0)
    reg = _upright(cam, rng.uniform(-40, 40), z, half_w, h)
    if reg is None:
        return
    col = _tex(c, reg, _jitter(rng, WALL_COLOURS[rng.integers(len(WALL_COLOURS))], 12), 0.15, 0.3)
    window = (np.mod(reg.X, 3.0) < 1.4) & (np.mod(reg.Y, 3.2) > 1.2) & (reg.Y > 2.5)
    col[window] *= 0.55
    _paint(c, reg, np.ones(reg.X.shape, bool), z, BUILDING, col)


def _tree(c: _Canvas, cam: _Camera, rng: np.random.Generator, x: float, z: float) -> None:
    trunk_h, r = rng.uniform(1.5, 3.5), rng.uniform(1.2, 3.2)
    reg = _upright(cam, x, z, r * 1.3, trunk_h + 2.2 * r)
    if reg is None:
        return
    cy = trunk_h + r
    ang = np.arctan2(reg.Y - cy, reg.X)
    lobes = 1.0 + 0.18 * np.sin(rng.integers(4, 9) * ang + rng.uniform(0, 2 * np.pi))
    crown = (reg.X / (1.15 * r)) ** 2 + ((reg.Y - cy) / r) ** 2 < lobes
    trunk = (np.abs(reg.X) < 0.15) & (reg.Y < cy)
    col = _tex(c, reg, _jitter(rng, (60, 95, 45), 15), 0.7, 0.5)
    col[trunk & ~crown] = _jitter(rng, (80, 65, 50), 10)
    _paint(c, reg, crown | trunk, z, VEGETATION, col)


def _pole(c: _Canvas, cam: _Camera, rng: np.random.Generator, x: float, z: float) -> None:
    h, half_w = rng.uniform(3.0, 8.0), rng.uniform(0.06, 0.14)
    reg = _upright(cam, x, z, max(half_w, 0.6), h)
    if reg is None:
        return
    min_half = 0.5 * z / cam.f  # at least one pixel wide, as a stereo matcher would still see it
    pole = np.abs(reg.X) < max(half_w, min_half)
    _paint(c, reg, pole, z, POLE, _tex(c, reg, _jitter(rng, (105, 105, 110), 20), 0.2, 0.1))
    kind = rng.random()
    if kind < 0.45:  # traffic sign, slightly in front of its pole
        y_c, half = rng.uniform(2.0, h - 0.3), rng.uniform(0.3, 0.45)
        if rng.random() < 0.5:
            plate = (reg.X ** 2 + (reg.Y - y_c) ** 2) < half ** 2
        else:
            plate = (np.abs(reg.X) < half) & (np.abs(reg.Y - y_c) < half * 0.8)
        col = _tex(c, reg, _jitter(rng, SIGN_COLOURS[rng.integers(len(SIGN_COLOURS))], 15), 0.1, 0.1)
        _paint(c, reg, plate, z - 0.05, SIGN, col)
    elif kind < 0.65:  # traffic light: dark box with one lit lamp
        y_c = rng.uniform(2.5, h)
        box = (np.abs(reg.X) < 0.2) & (np.abs(reg.Y - y_c) < 0.45)
        col = _tex(c, reg, np.array([35, 35, 35], np.float32), 0.2, 0.1)
        lamp_y = y_c + 0.28 * rng.integers(-1, 2)
        lamp = (reg.X ** 2 + (reg.Y - lamp_y) ** 2) < 0.12 ** 2
        col[lamp] = SIGN_COLOURS[rng.integers(3)]
        _paint(c, reg, box, z - 0.05, LIGHT, col)


def _person(c: _Canvas, cam: _Camera, rng: np.random.Generator, x: float, z: float) -> None:
    h = rng.uniform(1.5, 1.95)
    reg = _upright(cam, x, z, 0.35, h)
    if reg is None:
        return
    X, Y = reg.X, reg.Y
    head = (X ** 2 + (Y - 0.93 * h) ** 2) < (0.075 * h) ** 2
    torso = (np.abs(X) < 0.2 * (1.0 - 0.2 * (Y - 0.5 * h))) & (Y > 0.47 * h) & (Y < 0.86 * h)
    stride = rng.uniform(0.0, 0.12)
    legs = (Y <= 0.47 * h) & ((np.abs(X - stride * (1 - Y / (0.47 * h)) - 0.08) < 0.07)
                              | (np.abs(X + stride * (1 - Y / (0.47 * h)) + 0.08) < 0.07))
    col = np.broadcast_to(_jitter(rng, CLOTHES[rng.integers(len(CLOTHES))], 15), X.shape + (3,)).copy()
    col[legs] = _jitter(rng, CLOTHES[rng.integers(len(CLOTHES))], 15)
    col[head] = _jitter(rng, (190, 150, 120), 25)
    col *= (1.0 + 0.2 * (c.fine[reg.rows, reg.cols] - 0.5))[..., None]
    _paint(c, reg, head | torso | legs, z, PERSON, col)


def _vehicle(c: _Canvas, cam: _Camera, rng: np.random.Generator, x: float, z: float) -> None:
    label = CAR if rng.random() < 0.85 else (TRUCK if rng.random() < 0.5 else BUS)
    half_w, h = {CAR: (rng.uniform(0.85, 1.0), rng.uniform(1.35, 1.6)),
                 TRUCK: (1.2, rng.uniform(2.5, 3.2)), BUS: (1.3, rng.uniform(2.9, 3.3))}[label]
    reg = _upright(cam, x, z, half_w, h)
    if reg is None:
        return
    X, Y = reg.X, reg.Y
    if label == CAR:
        body = (np.abs(X) < half_w) & (Y > 0.15) & (Y < 0.6 * h)
        cabin_half = 0.8 * half_w - 0.5 * (Y - 0.6 * h)
        cabin = (np.abs(X) < cabin_half) & (Y >= 0.6 * h) & (Y < h)
        glass = cabin & (np.abs(X) < cabin_half - 0.08) & (Y < h - 0.06)
    else:
        body = (np.abs(X) < half_w) & (Y > 0.3) & (Y < h)
        cabin = np.zeros_like(body)
        glass = body & (np.abs(X) < half_w - 0.1) & (Y > 0.55 * h) & (Y < 0.88 * h)
    wheels = (np.abs(np.abs(X) - 0.7 * half_w) < 0.2) & (Y < 0.4)
    lights = (np.abs(np.abs(X) - 0.8 * half_w) < 0.12) & (np.abs(Y - 0.5 * min(h, 1.6)) < 0.06)
    col = _tex(c, reg, _jitter(rng, CAR_COLOURS[rng.integers(len(CAR_COLOURS))], 10), 0.1, 0.2)
    col[glass] = _jitter(rng, (45, 55, 65), 10) * (0.8 + 0.4 * c.coarse[reg.rows, reg.cols][glass, None])
    col[wheels] = (25, 25, 25)
    col[lights] = (190, 30, 30)
    _paint(c, reg, body | cabin | wheels, z, label, col)


def _static_box(c: _Canvas, cam: _Camera, rng: np.random.Generator, x: float, z: float) -> None:
    """Void-category clutter (bins, boxes): labelled 'static', ignored in training."""
    reg = _upright(cam, x, z, rng.uniform(0.3, 0.6), rng.uniform(0.6, 1.2))
    if reg is not None:
        col = _tex(c, reg, _jitter(rng, (90, 90, 80), 30), 0.3, 0.2)
        _paint(c, reg, np.ones(reg.X.shape, bool), z, STATIC, col)


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cell: int) -> np.ndarray:
    small = rng.random((max(height // cell, 2), max(width // cell, 2)), dtype=np.float32)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def render(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One scene: (image uint8 (H,W,3) RGB, labelIds uint8 (H,W), disparity PNG values uint16 (H,W))."""
    f = FOCAL_PER_WIDTH * width
    cam = _Camera(height, width, f, (width - 1) / 2.0 + rng.normal(0, 0.02 * width),
                  height * rng.uniform(0.40, 0.50), rng.uniform(1.1, 1.6))
    c = _Canvas(
        label=np.full((height, width), SKY, np.uint8),
        z=np.full((height, width), np.inf),
        albedo=np.zeros((height, width, 3), np.float32),
        fine=rng.random((height, width), dtype=np.float32),
        coarse=_smooth_noise(rng, height, width, max(width // 24, 2)),
    )
    # Sky: vertical gradient between two random blue-greys (overcast to clear).
    top, bottom = _jitter(rng, (110, 150, 200), 25), _jitter(rng, (200, 210, 220), 15)
    t = np.clip(np.arange(height, dtype=np.float32) / max(cam.v0, 1.0), 0, 1)[:, None, None]
    c.albedo[:] = top * (1 - t) + bottom * t

    street = _Street(rng.uniform(-2.5, 2.5), rng.uniform(3.0, 7.0), rng.uniform(1.5, 4.0))
    _ground(c, cam, rng, street)
    for side in (-1.0, 1.0):
        if rng.random() < 0.8:
            offset = street.road_half + street.walk + rng.uniform(0.0, 6.0)
            _street_side(c, cam, rng, street.centre + side * offset)
    for _ in range(rng.integers(2, 6)):
        _far_building(c, cam, rng)

    road = (street.centre - street.road_half + 1.0, street.centre + street.road_half - 1.0)
    for _ in range(rng.integers(0, 7)):
        _tree(c, cam, rng, street.kerb(rng, 1.8), rng.uniform(6.0, 60.0))
    for _ in range(rng.integers(1, 7)):
        _pole(c, cam, rng, street.kerb(rng, 0.5), rng.uniform(5.0, 50.0))
    for _ in range(rng.integers(0, 8)):
        on_road = rng.random() < 0.15
        _person(c, cam, rng, rng.uniform(*road) if on_road else street.kerb(rng), rng.uniform(4.5, 40.0))
    for _ in range(rng.integers(0, 9)):
        _vehicle(c, cam, rng, rng.uniform(*road), rng.uniform(5.0, 70.0))
    for _ in range(rng.integers(0, 3)):
        _static_box(c, cam, rng, street.kerb(rng), rng.uniform(5.0, 30.0))

    # Ego-vehicle bonnet: void, no valid disparity (as on real Cityscapes frames).
    if rng.random() < 0.4:
        u = np.arange(width, dtype=np.float32)
        edge = height - height * rng.uniform(0.04, 0.1) * (1.0 - 0.6 * ((u - cam.cx) / (width / 2)) ** 2)
        bonnet = np.arange(height, dtype=np.float32)[:, None] >= edge[None, :]
        c.label[bonnet] = EGO
        c.z[bonnet] = np.inf
        c.albedo[bonnet] = _jitter(rng, (40, 40, 45), 10)

    finite = np.isfinite(c.z)
    # Lighting and aerial perspective: distant surfaces fade toward the horizon haze.
    light = rng.uniform(0.65, 1.2)
    haze = 1.0 - np.exp(-np.where(finite, c.z, 0.0) / rng.uniform(40.0, 150.0))
    fog = bottom * rng.uniform(0.85, 1.05)
    img = c.albedo * light * (1 - haze[..., None]) + fog * haze[..., None]
    img += rng.normal(0.0, rng.uniform(3.0, 9.0), img.shape).astype(np.float32)
    img = cv2.GaussianBlur(img, (3, 3), 0.6)
    image = np.clip(np.round(img), 0, 255).astype(np.uint8)

    z = np.maximum(np.where(finite, c.z, np.inf), Z_MIN)
    disp = np.where(finite, np.round(DISPARITY_CONST / z * 256.0 + 1.0), 0.0)
    return image, c.label, disp.astype(np.uint16)


def _write_png(path: Path, arr: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", arr)
    if not ok:
        raise RuntimeError(f"PNG encoding failed for {path}")
    path.write_bytes(buf.tobytes())


def generate(out_dir: Path, *, seed: int, n_train: int, n_val: int, height: int, width: int,
             cities: tuple[str, ...] = ("syntha", "synthb")) -> None:
    """Write a synthetic dataset in the raw Cityscapes layout to ``out_dir`` (replaced atomically).

    Sample i of a split comes from its own generator seeded with (seed, split, i), so a split is
    reproducible on its own: the val set does not change when n_train does.
    """
    if seed < 0 or n_train < 0 or n_val < 0 or height < 8 or width < 8 or not cities:
        raise XTaskError(
            f"synthetic dataset: expected seed, n_train, n_val >= 0, height and width >= 8 and at least one "
            f"city, got seed={seed}, n_train={n_train}, n_val={n_val}, {height}x{width}, cities={cities}"
        )
    with atomic_path(out_dir) as tmp:
        for split, n in (("train", n_train), ("val", n_val)):
            for i in range(n):
                city = cities[i % len(cities)]
                stem = f"{city}_000000_{i:06d}"
                rng = np.random.default_rng([seed, SPLIT_CODES[split], i])
                image, label, disp = render(rng, height, width)
                for sub, suffix, arr in ((IMAGE_DIR, IMAGE_SUFFIX, image[:, :, ::-1]),
                                         (LABEL_DIR, LABEL_SUFFIX, label), (DISP_DIR, DISP_SUFFIX, disp)):
                    d = tmp / sub / split / city
                    d.mkdir(parents=True, exist_ok=True)
                    _write_png(d / f"{stem}{suffix}", np.ascontiguousarray(arr))
        tmp.mkdir(parents=True, exist_ok=True)  # n_train = n_val = 0 still yields a directory


# The same scenes as NYUv2 stand-in data: each Cityscapes labelId drawn here as one of NYUv2's 13 classes
# (index into xtask.common.labels.NYU_CLASS_NAMES; -1 ignore): only the on-disk format and the value
# ranges are NYUv2's, to rehearse that format's route (MTAN's .npy layout), never its content.
NYU_CLASS_OF = {ROAD: 4, SIDEWALK: 4, PARKING: 4, TERRAIN: 4,        # floor
                BUILDING: 11, WALL: 11, FENCE: 11,                   # wall
                SKY: 2, VEGETATION: 7, POLE: 6, LIGHT: 6, SIGN: 10,  # ceiling, picture, objects, tv
                PERSON: 3, CAR: 5, TRUCK: 8, BUS: 0, STATIC: 9}      # chair, furniture, sofa, bed, table
NYU_DEPTH_SCALE = 0.1  # street metres (3.7-200) to room-sized ones (0.37-20), as NYUv2's 0.5-10 m


def generate_nyu(out_dir: Path, *, seed: int, n_train: int, n_val: int, height: int, width: int) -> None:
    """Write the synthetic scenes in MTAN's NYUv2 layout to ``out_dir`` (replaced atomically):
    ``{train,val}/{image,label,depth}/<i>.npy``, image float32 (H,W,3) RGB in [0, 1], label float32 (H,W)
    in {-1, 0..12}, depth float32 (H,W,1) in metres (0 = invalid). Seeded per sample as ``generate``."""
    if seed < 0 or n_train < 1 or n_val < 1 or height < 8 or width < 8:
        raise XTaskError(f"synthetic NYUv2 dataset: expected seed >= 0, n_train, n_val >= 1, height and width >= 8, "
                         f"got seed={seed}, n_train={n_train}, n_val={n_val}, {height}x{width}")
    lut = np.full(256, -1, np.float32)
    for label_id, cls in NYU_CLASS_OF.items():
        lut[label_id] = cls
    with atomic_path(out_dir) as tmp:
        for split, n in (("train", n_train), ("val", n_val)):
            for kind in ("image", "label", "depth"):
                (tmp / split / kind).mkdir(parents=True)
            for i in range(n):
                image, label, disp = render(np.random.default_rng([seed, SPLIT_CODES[split], i]), height, width)
                valid = disp > 0
                z = np.where(valid, DISPARITY_CONST * 256.0 / np.maximum(disp.astype(np.float32) - 1.0, 1.0), 0.0)
                np.save(tmp / split / "image" / f"{i}.npy", (image / np.float32(255)).astype(np.float32))
                np.save(tmp / split / "label" / f"{i}.npy", lut[label])
                np.save(tmp / split / "depth" / f"{i}.npy", (z * NYU_DEPTH_SCALE).astype(np.float32)[..., None])
