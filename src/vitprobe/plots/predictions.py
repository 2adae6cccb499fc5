"""Top-1 predictions: accuracy next to the published figure and galleries of the map images (figure 7)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..escape import mathtext_literal
from ..tables import ACCURACY_COLUMNS, PREDICTION_COLUMNS
from .style import (
    CORRECT_COLOUR,
    WRONG_COLOUR,
    _bare,
    _chars,
    _check_crops,
    _label,
    _require_columns,
    _save,
    _styled,
    _title,
    _wrap,
)


def _draw_accuracy(ax, acc: pd.DataFrame, published: Mapping[str, float], labels: Mapping[str, str], wrap: int) -> None:
    """Horizontal bars: measured accuracy (Wilson 95% interval) and, below each, the published figure."""
    _require_columns(acc, ACCURACY_COLUMNS, "accuracy table")
    ax.set_xlim(0, 118)  # room for the value labels right of 100 %
    ax.set_xticks(np.arange(0, 101, 20))
    ax.set_xlabel("top-1 accuracy (%)")
    if acc.empty:
        note = "no labelled images: accuracy not measured"
        ax.text(50, 0.5, note, ha="center", va="center", transform=ax.get_xaxis_transform())
        ax.set_yticks([])
        return
    y = np.arange(len(acc))
    has_pub = acc["model"].map(lambda m: published.get(m) is not None)
    height = 0.38
    measured = acc["accuracy"].to_numpy()
    err = np.vstack([measured - acc["low"], acc["high"] - measured])
    ax.barh(
        y - height / 2,
        measured,
        height,
        xerr=err,
        color="C0",
        error_kw=dict(lw=0.8, capsize=2),
        label="measured (95% Wilson interval)",
    )
    for yi, (m, hi, n) in enumerate(zip(measured, acc["high"], acc["n"])):
        ax.text(hi + 1.5, yi - height / 2, f"{m:.1f}% (n={n})", va="center", fontsize=7)
    pub_y = [yi + height / 2 for yi, ok in zip(y, has_pub) if ok]
    pub_v = [float(published[m]) for m, ok in zip(acc["model"], has_pub) if ok]
    if pub_v:
        ax.barh(pub_y, pub_v, height, color="0.7", label="published")
        for yi, v in zip(pub_y, pub_v):
            ax.text(v + 1.5, yi, f"{v:.1f}%", va="center", fontsize=7, color="0.3")
    ax.set_yticks(y, [_wrap(_label(labels, m), wrap) for m in acc["model"]], fontsize=7.5)
    ax.tick_params(axis="y", length=0)
    ax.invert_yaxis()
    ax.grid(axis="x", lw=0.4, alpha=0.5)
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncols=2, fontsize=7, frameon=False, borderaxespad=0.2)


def _caption(row: pd.Series | None, width: int) -> tuple[str, str]:
    """("top1_name (prob)", colour): green correct, red wrong, black without label."""
    if row is None:
        return "no prediction", "0.4"
    text = _wrap(mathtext_literal(f"{row['top1_name']} ({float(row['top1_prob']):.2f})"), width)
    lines = text.split("\n")
    if len(lines) > 2:
        text = lines[0] + "\n" + lines[1][: max(1, width - 1)] + "…"
    correct = row["correct"]
    colour = "black" if correct is None or pd.isna(correct) else (CORRECT_COLOUR if bool(correct) else WRONG_COLOUR)
    return text, colour


def _lookup(predictions: pd.DataFrame, model: str) -> dict[str, pd.Series]:
    rows = predictions[predictions["model"] == model]
    return {str(r["image_id"]): r for _, r in rows.iterrows()}


@_styled
def plot_accuracy(accuracy: pd.DataFrame, published: Mapping[str, float], labels: Mapping[str, str], path: str | Path) -> Path:
    """Measured top-1 accuracy per model (the accuracy table: only models with labelled images) next
    to the published figure."""
    n_models = max(1, len(accuracy))
    fig = Figure(figsize=(6.8, 1.2 + 0.62 * n_models), layout="constrained")
    _draw_accuracy(fig.add_subplot(), accuracy, published, labels, wrap=34)
    fig.suptitle("Top-1 accuracy: measured on the sampled images vs published", fontsize=10)
    return _save(fig, path)


@_styled
def plot_predictions(
    accuracy: pd.DataFrame,
    predictions: pd.DataFrame,
    crops: np.ndarray | None,
    published: Mapping[str, float],
    labels: Mapping[str, str],
    path: str | Path,
    *,
    image_ids: Sequence[str] | None = None,
    max_images: int = 6,
) -> Path:
    """Accuracy per model (the accuracy table) next to the published figure; with `crops`, also the first `max_images`
    crops and every model's "top1_name (prob)" under each (green correct, red wrong, black no label).

    `image_ids` name the crops (default: the image ids in order of first appearance in `predictions`).
    """
    if crops is None:
        return plot_accuracy(accuracy, published, labels, path)
    acc_rows = max(1, len(accuracy))
    crops = _check_crops(crops)
    if image_ids is None:
        image_ids = [str(i) for i in pd.unique(predictions["image_id"])]
    if len(image_ids) != len(crops):
        raise ValueError(f"{len(image_ids)} image ids for {len(crops)} crops")
    k = min(max_images, len(crops))
    models = list(pd.unique(predictions["model"]))
    cell = 1.15
    width = max(6.8, cell * k + 1.6)
    text_h = 0.34 * len(models) + 0.1
    acc_h = 0.6 + 0.62 * acc_rows
    fig = Figure(figsize=(width, acc_h + cell + text_h + 0.6), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[acc_h, cell + text_h])
    _draw_accuracy(top.add_subplot(), accuracy, published, labels, wrap=34)
    grid = bottom.add_gridspec(2, k, height_ratios=[cell, text_h], hspace=0.0, wspace=0.03)
    lookups = {m: _lookup(predictions, m) for m in models}
    for j in range(k):
        ax = bottom.add_subplot(grid[0, j])
        ax.imshow(crops[j], interpolation="antialiased")
        ax.set_title(_wrap(mathtext_literal(image_ids[j]), 22), fontsize=6.5)
        _bare(ax)
    table = bottom.add_subplot(grid[1, :])
    table.set_xlim(0, k)
    table.set_ylim(len(models), 0)
    _bare(table)
    for i, model in enumerate(models):
        table.text(-0.03, i + 0.5, model, ha="right", va="center", fontsize=7, transform=table.transData)
        for j in range(k):
            text, colour = _caption(lookups[model].get(str(image_ids[j])), _chars(cell, 6.5))
            table.text(j + 0.5, i + 0.5, text, ha="center", va="center", fontsize=6.5, color=colour, linespacing=0.95)
    fig.suptitle("Top-1 accuracy: measured on the sampled images vs published; top-1 per image", fontsize=10)
    return _save(fig, path, palette=True)


@_styled
def plot_top1_gallery(
    crops: np.ndarray,
    image_ids: Sequence[str],
    predictions: pd.DataFrame,
    model: str,
    label: str,
    path: str | Path,
    *,
    ncols: int = 4,
    max_images: int = 12,
) -> Path:
    """Image grid of the first `max_images` crops captioned "top1_name (prob)" for one model
    (green correct, red wrong, black without a label)."""
    crops = _check_crops(crops)
    if len(image_ids) != len(crops):
        raise ValueError(f"{len(image_ids)} image ids for {len(crops)} crops")
    _require_columns(predictions, PREDICTION_COLUMNS, "predictions table")
    lookup = _lookup(predictions, model)
    k = min(max_images, len(crops))
    ncols = min(ncols, k)
    nrows = math.ceil(k / ncols)
    cell = 1.45
    fig = Figure(figsize=(max(cell * ncols, 4.2) + 0.2, (cell + 0.32) * nrows + 0.8), layout="constrained")
    fig.get_layout_engine().set(w_pad=0.02, h_pad=0.02, wspace=0.02, hspace=0.02)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for j in range(k):
        text, colour = _caption(lookup.get(str(image_ids[j])), _chars(cell, 7))
        axes[j].imshow(crops[j], interpolation="antialiased")
        axes[j].set_xlabel(text, fontsize=7, color=colour, labelpad=2, linespacing=0.95)
        _bare(axes[j])
    for ax in axes[k:]:
        ax.set_axis_off()
    _title(fig, "Top-1 predictions", label, "green: correct, red: wrong, black: no label")
    return _save(fig, path, palette=True)
