"""Attribution figures: the faithfulness curves and AUC table of one model, and the maps of every
method and model over one image."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..escape import mathtext_literal
from .style import OVERLAY_CMAP, _bare, _chars, _check_crops, _overlay, _require_columns, _save, _styled, _title, _wrap

AUC_COLUMNS = ("positive_auc", "negative_auc", "positive_score_auc", "negative_score_auc", "deletion_auc", "insertion_auc")
# (column, heading, whether higher is better)
_AUC_HEADINGS = (
    ("positive_auc", "positive\n(top-1, lower better)", False),
    ("negative_auc", "negative\n(top-1, higher better)", True),
    ("positive_score_auc", "positive\n(score, lower better)", False),
    ("negative_score_auc", "negative\n(score, higher better)", True),
    ("deletion_auc", "deletion\n(lower better)", False),
    ("insertion_auc", "insertion\n(higher better)", True),
)
_PANELS = (
    ("positive", "Positive perturbation: most relevant pixels removed first", "fraction of pixels set to 0"),
    ("negative", "Negative perturbation: least relevant pixels removed first", "fraction of pixels set to 0"),
    ("deletion", "Deletion (RISE): most relevant pixels to black", "fraction of pixels moved"),
    ("insertion", "Insertion (RISE): most relevant pixels from a blurred copy", "fraction of pixels moved"),
)


def _method_style(method: str) -> dict:
    return dict(color="0.45", linestyle="--") if method == "random" else {}


@_styled
def plot_attribution_curves(curves: pd.DataFrame, label: str, path: str | Path, *, classifier: bool) -> Path:
    """Four panels of mean curves over the images, one line per method (``random`` dashed: the
    chance level): the perturbation test's top-1 hits (a model without a classifier: its target
    score), deletion and insertion of the target's probability (or score).

    Args:
        curves: one model's rows of ``attribution_curves.parquet``.
        label: the model's label (the exact checkpoint) for the title.
        path: the figure file.
        classifier: whether the model has a classifier head (hits and probabilities) or an embedding target.
    """
    _require_columns(curves, ("method", "curve", "point", "x", "value"), "attribution curves")
    fig = Figure(figsize=(9.5, 7.2), layout="constrained")
    axes = fig.subplots(2, 2).ravel()
    measure = "top-1 hit rate" if classifier else "target score (cosine)"
    score = "target probability" if classifier else "target score (cosine)"
    for ax, (panel, heading, xlabel) in zip(axes, _PANELS):
        name = (f"{panel}_hits" if classifier else f"{panel}_scores") if panel in ("positive", "negative") else panel
        rows = curves[curves["curve"] == name]
        for method, group in rows.groupby("method", sort=False):
            mean = group.groupby("point").agg(x=("x", "first"), value=("value", "mean"))
            ax.plot(mean["x"], mean["value"], marker="o", markersize=2.5, label=str(method), **_method_style(method))
        ax.set_title(_wrap(heading, 52), fontsize=8.5)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(measure if panel in ("positive", "negative") else score)
    axes[0].legend(loc="best", fontsize=7)
    images = curves["image_id"].nunique()
    _title(fig, "Faithfulness of the attribution maps", label, f"mean over {images} images; random map dashed (chance)")
    return _save(fig, path)


@_styled
def plot_attribution_auc(table: pd.DataFrame, label: str, path: str | Path) -> Path:
    """A table of mean AUC +- standard error per method, the random map's row (the chance level)
    last, the best method per column in bold.

    Args:
        table: one model's rows of ``attribution.parquet``.
        label: the model's label for the title.
        path: the figure file.
    """
    _require_columns(table, ("method", *AUC_COLUMNS), "attribution table")
    columns = [(c, h, up) for c, h, up in _AUC_HEADINGS if table[c].notna().any()]
    methods = [m for m in dict.fromkeys(table["method"]) if m != "random"] + ["random"]
    grouped = table.groupby("method")
    mean, sem = grouped[[c for c, _, _ in columns]].mean(), grouped[[c for c, _, _ in columns]].sem()
    cells = [
        [f"{mean.at[m, c]:.3f} ± {0 if np.isnan(sem.at[m, c]) else sem.at[m, c]:.3f}" for c, _, _ in columns] for m in methods
    ]
    fig = Figure(figsize=(1.55 * len(columns) + 1.4, 0.36 * len(methods) + 1.9), layout="constrained")
    ax = fig.subplots()
    ax.axis("off")
    rows = [f"{m} (chance)" if m == "random" else m for m in methods]
    drawn = ax.table(cellText=cells, rowLabels=rows, colLabels=[h for _, h, _ in columns], loc="center", cellLoc="center")
    drawn.auto_set_font_size(False)
    drawn.set_fontsize(7.5)
    drawn.scale(1, 1.5)
    for j, (column, _, higher) in enumerate(columns):
        candidates = mean.loc[[m for m in methods if m != "random"], column]
        if candidates.notna().any():
            best = methods.index(candidates.idxmax() if higher else candidates.idxmin())
            drawn[best + 1, j].get_text().set_fontweight("bold")
    for j in range(len(columns)):
        drawn[0, j].set_height(drawn[0, j].get_height() * 1.8)
    images = table["image_id"].nunique()
    _title(fig, "Attribution faithfulness: AUC per method", label, f"mean ± standard error over {images} images")
    return _save(fig, path)


@_styled
def plot_attribution_maps(
    crops: Mapping[str, np.ndarray],
    maps: Mapping[str, Mapping[str, np.ndarray]],
    labels: Mapping[str, str],
    targets: Mapping[str, str],
    image_id: str,
    path: str | Path,
    *,
    alpha: float = 0.55,
    cmap: str = OVERLAY_CMAP,
) -> Path:
    """A grid of maps over one image: rows = methods, columns = models, each map over the crop its
    model saw, min-max scaled.

    Args:
        crops: model -> (H, W, 3) uint8 crop.
        maps: model -> method -> (grid_h, grid_w) map.
        labels: model -> column heading.
        targets: model -> what its maps explain (e.g. "class 281", "embedding").
        image_id: the image, for the title.
        path: the figure file.
    """
    models = list(maps)
    if not models:
        raise ValueError("plot_attribution_maps needs at least one model")
    methods: Sequence[str] = list(dict.fromkeys(m for model in models for m in maps[model]))
    cell = 1.45
    fig = Figure(figsize=(cell * len(models) + 1.0, cell * (len(methods) + 1) + 1.0), layout="constrained")
    axes = fig.subplots(len(methods) + 1, len(models), squeeze=False)
    header = _chars(cell, 7)
    for c, model in enumerate(models):
        crop = _check_crops(np.asarray(crops[model])[None], f"crops[{model!r}]")[0]
        axes[0, c].imshow(crop, interpolation="antialiased")
        axes[0, c].set_title(_wrap(mathtext_literal(f"{labels[model]}\n{targets[model]}"), header), fontsize=6.5)
        for r, method in enumerate(methods, start=1):
            if method in maps[model]:
                _overlay(axes[r, c], crop, maps[model][method], alpha, cmap)
            if c == 0:
                axes[r, 0].set_ylabel(method, fontsize=7.5)
    axes[0, 0].set_ylabel("crop", fontsize=7.5)
    for ax in axes.ravel():
        _bare(ax)
    fig.suptitle(_wrap(mathtext_literal(f"Attribution maps of {image_id}"), _chars(cell * len(models) + 1, 10)), fontsize=9)
    return _save(fig, path, palette=True)
