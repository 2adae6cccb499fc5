"""Mean attention distance: by block for one model, and models compared (figures 1-2)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..escape import mathtext_literal
from .style import _chars, _label, _model_rows, _save, _styled, _title, _wrap


@_styled
def plot_distance_by_block(table: pd.DataFrame, model: str, label: str, path: str | Path) -> Path:
    """Scatter the mean attention distance of every head against its block (ViT paper Fig. 7 right).

    x is the block as the contract table numbers it, from 0.
    One point per head, offset slightly sideways and coloured by head; error bars are ±1 std over
    images (`std_px`).
    """
    rows = _model_rows(table, model)
    heads = np.sort(rows["head"].unique())
    blocks = np.sort(rows["block"].unique())
    n_heads, n_blocks = len(heads), int(blocks.max()) + 1
    cmap = matplotlib.colormaps["tab20" if n_heads <= 20 else "viridis"]
    spread = min(0.5, 0.04 * n_heads)
    fig = Figure(figsize=(max(6.4, 0.26 * n_blocks + 3.0), 4.2), layout="constrained")
    ax = fig.add_subplot()
    for i, head in enumerate(heads):
        r = rows[rows["head"] == head]
        offset = (i / max(n_heads - 1, 1) - 0.5) * spread
        colour = cmap(i / 19 if n_heads <= 20 else i / max(n_heads - 1, 1))
        ax.errorbar(
            r["block"].to_numpy() + offset,
            r["distance_px"].to_numpy(),
            yerr=r["std_px"].fillna(0).to_numpy(),
            fmt="o",
            ms=3.6,
            color=colour,
            elinewidth=0.6,
            capsize=0,
            alpha=0.9,
            label=str(head),
        )
    ax.set_xticks(np.arange(n_blocks))
    ax.set_xlim(-0.6, n_blocks - 0.4)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("block (0 = first)")
    ax.set_ylabel("mean attention distance (px)")
    ax.grid(axis="y", lw=0.4, alpha=0.5)
    fig.legend(
        title="head",
        loc="outside right upper",
        ncols=1 if n_heads <= 16 else 2,
        fontsize=7,
        title_fontsize=8,
        handletextpad=0.1,
        frameon=False,
    )
    n_img = rows["n_images"]
    n_text = f"{int(n_img.min())}" if n_img.min() == n_img.max() else f"{int(n_img.min())}-{int(n_img.max())}"
    _title(fig, "Mean attention distance per head", label, f"{n_text} images; error bars: ±1 s.d. over images")
    return _save(fig, path)


@_styled
def plot_distance_comparison(
    table: pd.DataFrame, models: Sequence[str], labels: Mapping[str, str], path: str | Path, title: str
) -> Path:
    """Compare models: per block the mean over heads (line) and the min-max range over heads (band)."""
    if not models:
        raise ValueError("plot_distance_comparison needs at least one model")
    colours = matplotlib.colormaps["tab10"]
    fig = Figure(figsize=(6.4, 4.0 + 0.28 * len(models)), layout="constrained")
    ax = fig.add_subplot()
    max_blocks = 0
    for i, model in enumerate(models):
        rows = _model_rows(table, model)
        stats = rows.groupby("block")["distance_px"].agg(["mean", "min", "max"]).sort_index()
        x = stats.index.to_numpy()
        max_blocks = max(max_blocks, int(x.max()) + 1)
        colour = colours(i % 10)
        ax.fill_between(x, stats["min"], stats["max"], color=colour, alpha=0.16, lw=0)
        ax.plot(x, stats["mean"], marker="o", ms=3.2, lw=1.6, color=colour, label=_wrap(_label(labels, model), 80))
    ax.set_xticks(np.arange(0, max_blocks, 1 if max_blocks <= 16 else 2))
    ax.set_xlim(-0.4, max_blocks - 0.6)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("block (0 = first)")
    ax.set_ylabel("mean attention distance (px)")
    ax.grid(axis="y", lw=0.4, alpha=0.5)
    fig.legend(loc="outside lower center", ncols=1, frameon=False)
    fig.suptitle(
        _wrap(mathtext_literal(title), _chars(6.4, 10)) + "\n" + "line: mean over heads; band: min-max over heads",
        fontsize=10,
    )
    return _save(fig, path)
