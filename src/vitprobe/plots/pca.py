"""PCA feature maps (Oquab et al. 2023, DINOv2, Fig. 1): the patch features' principal components as colours."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ..escape import mathtext_literal
from ..metrics.pca import to_rgb
from .style import _bare, _chars, _check_crops, _save, _styled, _title, _wrap


def _percent(ratios: np.ndarray) -> str:
    return ", ".join("n/a" if np.isnan(r) else f"{100 * r:.0f}%" for r in ratios)


@_styled
def plot_pca_maps(
    crops: np.ndarray,
    projections: np.ndarray,
    mask: np.ndarray,
    foreground: np.ndarray,
    label: str,
    path: str | Path,
    *,
    image_ids: Sequence[str] | None = None,
    explained: Sequence[float] | None = None,
    foreground_explained: Sequence[float] | None = None,
    threshold: float = 0.0,
    features: str = "last-block patch features",
) -> Path:
    """One row per image: the crop; the first three joint components as RGB; the first component's
    foreground mask; the foreground PCA's first three components as RGB (background black).

    The per-patch arrays are (images, patches[, 3]) over a square row-major grid, as
    `vitprobe.metrics.pca.pca_feature_maps` returns them; colours are min-max scaled per component
    over all images at once (`vitprobe.metrics.pca.to_rgb`), and each patch is one square.
    """
    crops = _check_crops(crops)
    projections, mask, foreground = np.asarray(projections), np.asarray(mask, dtype=bool), np.asarray(foreground)
    n, patches = mask.shape
    grid = int(round(np.sqrt(patches)))
    if grid * grid != patches or projections.shape != (n, patches, 3) or foreground.shape != (n, patches, 3):
        raise ValueError(
            f"projections and foreground must be (images, patches, 3) over a square grid, mask (images, patches); "
            f"got {projections.shape}, {foreground.shape}, {mask.shape}"
        )
    if len(crops) != n or (image_ids is not None and len(image_ids) != n):
        raise ValueError(f"{len(crops)} crops and {n if image_ids is None else len(image_ids)} image ids for {n} images")
    joint = to_rgb(projections).reshape(n, grid, grid, 3)
    inside = to_rgb(foreground, mask).reshape(n, grid, grid, 3)
    masks = mask.reshape(n, grid, grid)
    cell = 1.35
    fig = Figure(figsize=(cell * 4 + 0.2, cell * n + 1.5), layout="constrained")
    fig.get_layout_engine().set(w_pad=0.01, h_pad=0.01, wspace=0.01, hspace=0.01)
    axes = fig.subplots(n, 4, squeeze=False)
    for r in range(n):
        axes[r, 0].imshow(crops[r], interpolation="antialiased")
        axes[r, 1].imshow(joint[r], interpolation="nearest")
        axes[r, 2].imshow(masks[r], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        axes[r, 3].imshow(inside[r], interpolation="nearest")
        if image_ids is not None:
            axes[r, 0].set_ylabel(_wrap(mathtext_literal(image_ids[r]), 18), fontsize=7)
        for ax in axes[r]:
            _bare(ax)
    header = _chars(cell, 7)
    columns = ["crop", "PC 1-3 as RGB", f"PC 1 > {threshold:g} sd (foreground)", "foreground PC 1-3 as RGB"]
    for ax, name in zip(axes[0], columns):
        ax.set_title(_wrap(name, header), fontsize=7)
    notes = [f"{features}; components fitted jointly over the {n} images, colours scaled over all of them"]
    if explained is not None:
        notes.append(f"explained variance {_percent(np.asarray(explained))}")
    if foreground_explained is not None:
        notes.append(f"foreground {_percent(np.asarray(foreground_explained))}")
    _title(fig, "PCA of the patch features (DINOv2 Fig. 1)", label, "; ".join(notes))
    return _save(fig, path, palette=True)
