"""The qualitative figure: one row per example image, one column per map (as the original's results plot).

Columns are image, seg target, seg, seg transferred (depth->seg), depth target, depth, depth
transferred (seg->depth); a map that is None (a model without TTNets, a single-task model) drops
its column. Depth maps of one row share the target's colour range, so they can be compared.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from xtask.common.errors import XTaskError
from xtask.common.io import atomic_path
from xtask.reporting.colours import colourise_depth, colourise_seg, depth_range


class Examples(NamedTuple):
    """K examples at the model's resolution; seg maps hold class indices (ignore = out of range)."""
    image: np.ndarray                        # (K, H, W, 3) uint8 RGB
    seg_target: Optional[np.ndarray]         # (K, H, W) int
    seg: Optional[np.ndarray]                # (K, H, W) int
    seg_transferred: Optional[np.ndarray]    # (K, H, W) int
    depth_target: Optional[np.ndarray]       # (K, H, W) float, 0 = invalid
    depth: Optional[np.ndarray]              # (K, H, W) float
    depth_transferred: Optional[np.ndarray]  # (K, H, W) float


def read_examples(path: str | Path) -> tuple[Examples, str, str]:
    """(examples, depth kind, title) from the evaluate stage's ``--examples`` file."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
        maps = {name: (data[name].numpy() if name in data else None) for name in Examples._fields}
        return Examples(**maps), str(data["depth_kind"]), str(data["title"])
    except (OSError, RuntimeError, KeyError, TypeError, AttributeError, ValueError, pickle.UnpicklingError) as err:
        raise XTaskError(f"{path}: not an examples file of the evaluate stage ({type(err).__name__}); "
                         "run `dvc repro` to rebuild it") from None


TITLES = {"image": "image", "seg_target": "seg target", "seg": "seg", "seg_transferred": "seg (from depth)",
          "depth_target": "depth target", "depth": "depth", "depth_transferred": "depth (from seg)"}


def panels(ex: Examples, i: int, palette: np.ndarray, depth_kind: str) -> list[tuple[str, np.ndarray]]:
    """(title, RGB uint8) of row ``i``, in column order, without the columns that are None."""
    depth_maps = [m for m in (ex.depth_target, ex.depth, ex.depth_transferred) if m is not None]
    if ex.depth_target is not None:
        shared = depth_range(ex.depth_target[i], ex.depth_target[i] > 0)
    elif depth_maps:
        shared = depth_range(depth_maps[0][i])
    out = []
    for name in Examples._fields:
        m = getattr(ex, name)
        if m is None:
            continue
        if name == "image":
            rgb = m[i]
        elif name.startswith("seg"):
            rgb = colourise_seg(m[i], palette)
        else:
            valid = m[i] > 0 if name == "depth_target" else None
            rgb = colourise_depth(m[i], depth_kind, valid=valid, value_range=shared)
        out.append((TITLES[name], rgb))
    return out


def write_examples_figure(ex: Examples, path: str | Path, *, palette: np.ndarray, depth_kind: str,
                          title: Optional[str] = None) -> None:
    """Write the figure as a PNG at ``path`` (atomically); matplotlib's Agg canvas, no pyplot state."""
    rows = [panels(ex, i, palette, depth_kind) for i in range(len(ex.image))]
    n_rows, n_cols = len(rows), len(rows[0])
    h, w = ex.image.shape[1:3]
    panel_w = 2.4
    fig = Figure(figsize=(n_cols * panel_w, n_rows * panel_w * h / w + 0.6), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for r, row in enumerate(rows):
        for c, (name, rgb) in enumerate(row):
            ax = axes[r][c]
            ax.imshow(rgb, interpolation="nearest")
            ax.set_axis_off()
            if r == 0:
                ax.set_title(name, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
