"""Figures of a model's parameters: patch-embedding filters and position-embedding similarity (figures 5-6),
or a relative position bias where a model has no position embedding."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from .style import _bare, _default_ncols, _mosaic, _save, _styled, _title


@_styled
def plot_patch_filters(filters: np.ndarray, label: str, path: str | Path, title: str, *, ncols: int | None = None) -> Path:
    """Grid of (n, p, p, 3) filters in [0, 1] (the first filters, or principal components)."""
    filters = np.asarray(filters, dtype=np.float64)
    if filters.ndim != 4 or filters.shape[-1] != 3 or filters.shape[0] == 0:
        raise ValueError(f"filters must be (n, p, p, 3), got {filters.shape}")
    if filters.min() < -1e-6 or filters.max() > 1 + 1e-6:
        raise ValueError(f"filters must lie in [0, 1]; got [{filters.min():.3g}, {filters.max():.3g}]")
    n = filters.shape[0]
    ncols = ncols or _default_ncols(n)
    nrows = math.ceil(n / ncols)
    mosaic = _mosaic(np.clip(filters, 0, 1), ncols, gap=max(1, filters.shape[1] // 8), fill=1.0)
    tile = min(0.55, 6.4 / ncols)
    width = max(ncols * tile, 3.6) + 0.3
    fig = Figure(figsize=(width, nrows * tile + 0.9), layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(mosaic, interpolation="nearest")
    _bare(ax)
    _title(fig, title, label)
    return _save(fig, path)


@_styled
def plot_position_cosine_grid(
    cosine: np.ndarray, label: str, path: str | Path, *, title: str = "Position embedding similarity"
) -> Path:
    """ViT paper Fig. 7 centre: a grid_h x grid_w grid of small heatmaps, tile (i, j) being the cosine
    similarity of patch (i, j)'s position embedding (or other per-patch vector) with every patch; one
    colour scale -1..1."""
    cosine = np.asarray(cosine, dtype=np.float64)
    if cosine.ndim != 4 or cosine.shape[:2] != cosine.shape[2:]:
        raise ValueError(f"cosine must be (grid_h, grid_w, grid_h, grid_w), got {cosine.shape}")
    gh, gw = cosine.shape[:2]
    gap = 1 if max(gh, gw) <= 24 else 2
    mosaic = _mosaic(cosine.reshape(gh * gw, gh, gw), gw, gap=gap, fill=np.nan)
    fig = Figure(figsize=(5.4, 5.0), layout="constrained")
    ax = fig.add_subplot()
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="white")
    image = ax.imshow(mosaic, cmap=cmap, vmin=-1, vmax=1, interpolation="nearest")
    step = 1 if max(gh, gw) <= 16 else 2
    ax.set_xticks([j * (gw + gap) + (gw - 1) / 2 for j in range(0, gw, step)], [str(j + 1) for j in range(0, gw, step)])
    ax.set_yticks([i * (gh + gap) + (gh - 1) / 2 for i in range(0, gh, step)], [str(i + 1) for i in range(0, gh, step)])
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_xlabel("input patch column")
    ax.set_ylabel("input patch row")
    fig.colorbar(image, ax=ax, shrink=0.8, label="cosine similarity")
    _title(fig, title, label)
    return _save(fig, path)


@_styled
def plot_position_dot(dot: np.ndarray, label: str, path: str | Path) -> Path:
    """The raw (P, P) dot products between patch position embeddings (what the keras.io example shows)."""
    dot = np.asarray(dot, dtype=np.float64)
    if dot.ndim != 2 or dot.shape[0] != dot.shape[1]:
        raise ValueError(f"dot must be (P, P), got {dot.shape}")
    fig = Figure(figsize=(5.2, 4.6), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(dot, cmap="viridis", interpolation="nearest")
    ax.set_xlabel("patch index (row-major)")
    ax.set_ylabel("patch index (row-major)")
    fig.colorbar(image, ax=ax, shrink=0.85, label="dot product")
    _title(fig, "Position embedding dot products", label)
    return _save(fig, path)


@_styled
def plot_relative_bias_maps(maps: np.ndarray, blocks: list[int], label: str, path: str | Path) -> Path:
    """Each head's relative position bias over the patch offset, one row per block shown.

    Args:
        maps: (len(blocks), heads, 2g-1, 2g-1); entry (a, b) is the bias for a query patch a - g + 1 rows
            below and b - g + 1 columns right of its key (`vitprobe.metrics.parameters.relative_position_bias_maps`).
        blocks: the block of each row, 0-based as in the tables.
        label: the model's label for the title.
        path: the figure file.
    """
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 4 or maps.shape[0] != len(blocks) or maps.shape[-1] != maps.shape[-2]:
        raise ValueError(f"maps must be (blocks={len(blocks)}, heads, 2g-1, 2g-1), got {maps.shape}")
    rows, heads, span = maps.shape[0], maps.shape[1], maps.shape[-1]
    ncols = min(heads, 6)
    per_block = math.ceil(heads / ncols)
    cell = 1.0
    fig = Figure(figsize=(cell * ncols + 1.0, cell * rows * per_block + 1.2), layout="constrained")
    axes = fig.subplots(rows * per_block, ncols, squeeze=False)
    limit = max(float(np.abs(maps).max()), 1e-12)  # one symmetric scale: zero bias is the middle colour
    reach = (span - 1) // 2
    extent = (-reach - 0.5, reach + 0.5, reach + 0.5, -reach - 0.5)
    for r, block in enumerate(blocks):
        for h in range(per_block * ncols):
            ax = axes[r * per_block + h // ncols, h % ncols]
            if h >= heads:
                ax.set_axis_off()
                continue
            image = ax.imshow(maps[r, h], cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest", extent=extent)
            ax.set_title(f"block {block}, head {h}", fontsize=7)
            ax.set_xticks([-reach, 0, reach])
            ax.set_yticks([-reach, 0, reach])
            ax.tick_params(labelsize=6, length=2)
    fig.supxlabel("column offset (query - key), patches", fontsize=8)
    fig.supylabel("row offset (query - key), patches", fontsize=8)
    fig.colorbar(image, ax=axes, shrink=0.6, label="bias added to the attention logit")
    _title(fig, "Relative position bias per head over the patch offset (no absolute position embedding)", label)
    return _save(fig, path)


def plot_position_similarity(
    cosine: np.ndarray, dot: np.ndarray, label: str, cosine_path: str | Path, dot_path: str | Path
) -> tuple[Path, Path]:
    """Write both position-embedding figures; returns (cosine grid path, dot-product path)."""
    return plot_position_cosine_grid(cosine, label, cosine_path), plot_position_dot(dot, label, dot_path)
