"""Attention maps over the crops the models saw: rollout and per-head CLS maps (figures 3-4)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ..escape import mathtext_literal
from .style import OVERLAY_CMAP, _bare, _chars, _check_crops, _label, _overlay, _save, _styled, _title, _wrap


@_styled
def plot_rollout(
    crops: np.ndarray | Mapping[str, np.ndarray],
    maps: Mapping[str, np.ndarray],
    labels: Mapping[str, str],
    path: str | Path,
    *,
    image_ids: Sequence[str] | None = None,
    title: str = "Attention rollout (CLS row over the patches)",
    alpha: float = 0.55,
    cmap: str = OVERLAY_CMAP,
) -> Path:
    """Grid of rows = images, columns = the crop, then each model's rollout map overlaid on it.

    `maps[model]` is (n, grid_h, grid_w) for the n crops; each map is min-max scaled per image and
    stretched bilinearly over the crop (any grid fits any crop size). `crops` is one array shared by
    every model, or a mapping model -> that model's crops when their preprocessing differs: each map
    is overlaid on the crop its model saw, and the first model's crops fill the "image" column.
    """
    per_model = {m: _check_crops(crops[m]) for m in maps} if isinstance(crops, Mapping) else None
    crops = next(iter(per_model.values())) if per_model else _check_crops(crops)
    n = crops.shape[0]
    if not maps:
        raise ValueError("plot_rollout needs at least one model's maps")
    for model, m in maps.items():
        if np.ndim(m) != 3 or np.shape(m)[0] != n:
            raise ValueError(f"maps[{model!r}] must be (n={n}, grid_h, grid_w), got {np.shape(m)}")
    if image_ids is not None and len(image_ids) != n:
        raise ValueError(f"{len(image_ids)} image ids for {n} crops")
    models = list(maps)
    cell = 1.35
    ncols = 1 + len(models)
    fig = Figure(figsize=(cell * ncols + 0.2, cell * n + 1.1), layout="constrained")
    fig.get_layout_engine().set(w_pad=0.01, h_pad=0.01, wspace=0.01, hspace=0.01)
    axes = fig.subplots(n, ncols, squeeze=False)
    header = _chars(cell, 7)
    for r in range(n):
        axes[r, 0].imshow(crops[r], interpolation="antialiased")
        if image_ids is not None:
            axes[r, 0].set_ylabel(_wrap(mathtext_literal(image_ids[r]), 18), fontsize=7)
        for c, model in enumerate(models, start=1):
            seen = per_model[model][r] if per_model else crops[r]
            _overlay(axes[r, c], seen, np.asarray(maps[model])[r], alpha, cmap)
        for ax in axes[r]:
            _bare(ax)
    axes[0, 0].set_title("image", fontsize=7.5)
    for c, model in enumerate(models, start=1):
        axes[0, c].set_title(_wrap(_label(labels, model), header), fontsize=7)
    fig.suptitle(_wrap(mathtext_literal(title), _chars(cell * ncols, 10)) + "\nmaps min-max scaled per image", fontsize=9)
    return _save(fig, path, palette=True)


@_styled
def plot_cls_heads(
    crop: np.ndarray,
    maps: np.ndarray,
    label: str,
    path: str | Path,
    *,
    title: str = "Last-block CLS attention per head",
    alpha: float = 0.6,
    cmap: str = OVERLAY_CMAP,
) -> Path:
    """The crop, then one panel per head with its CLS-query map (heads, grid_h, grid_w) overlaid (DINO style)."""
    crop = _check_crops(np.asarray(crop)[None], "crop")[0]
    maps = np.asarray(maps)
    if maps.ndim != 3:
        raise ValueError(f"maps must be (heads, grid_h, grid_w), got {maps.shape}")
    panels = maps.shape[0] + 1
    ncols = min(panels, 7)
    nrows = math.ceil(panels / ncols)
    cell = 1.15
    fig = Figure(figsize=(cell * ncols + 0.2, cell * nrows + 0.9), layout="constrained")
    fig.get_layout_engine().set(w_pad=0.01, h_pad=0.01, wspace=0.01, hspace=0.02)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    axes[0].imshow(crop, interpolation="antialiased")
    axes[0].set_title("crop", fontsize=7.5)
    for h in range(maps.shape[0]):
        _overlay(axes[h + 1], crop, maps[h], alpha, cmap)
        axes[h + 1].set_title(f"head {h}", fontsize=7.5)
    for ax in axes[:panels]:
        _bare(ax)
    for ax in axes[panels:]:
        ax.set_axis_off()
    _title(fig, title, label, "each head's map min-max scaled")
    return _save(fig, path, palette=True)
