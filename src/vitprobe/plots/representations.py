"""Representation figures: linear CKA between blocks, within a model (Raghu et al. 2021, Fig. 1)
and across models (their Fig. 2)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ..escape import mathtext_literal
from .style import _chars, _save, _styled, _title, _wrap


@_styled
def plot_cka(
    pairs: Sequence[tuple[str, str, dict[str, np.ndarray]]], what: str, label: str, path: str | Path, subtitle: str | None = None
) -> Path:
    """One row of block x block CKA heatmaps per pair of models, one column per feature set.

    Args:
        pairs: (label of model a, label of model b, {features: (blocks_a, blocks_b) CKA}); model a's
            blocks run up the y axis, model b's along x, numbered from 1 (the first block).
        what: the first title line; label: the exact checkpoint(s), the second.
        path: the output file.
        subtitle: an optional third title line (the image count).
    """
    features = list(pairs[0][2])
    rows, cols = len(pairs), len(features)
    fig = Figure(figsize=(2.9 * cols + 0.9, 2.9 * rows + 1.3), layout="constrained")
    axes = np.asarray(fig.subplots(rows, cols, squeeze=False))
    image = None
    for r, (label_a, label_b, matrices) in enumerate(pairs):
        for c, name in enumerate(features):
            ax, matrix = axes[r, c], matrices[name]
            image = ax.imshow(matrix, origin="lower", vmin=0, vmax=1, cmap="magma", interpolation="nearest", aspect="auto")
            ticks_a, ticks_b = _ticks(matrix.shape[0]), _ticks(matrix.shape[1])
            ax.set_yticks(ticks_a)
            ax.set_xticks(ticks_b)
            ax.set_title(f"features: {name}", fontsize=8.5)
            width = _chars(2.9, 7.5)
            ax.set_xlabel(_wrap(mathtext_literal(f"block of {label_b}"), width), fontsize=7.5)
            ax.set_ylabel(_wrap(mathtext_literal(f"block of {label_a}"), width), fontsize=7.5)
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="linear CKA")
    _title(fig, what, label, subtitle)
    return _save(fig, path)


def _ticks(blocks: int) -> np.ndarray:
    step = max(1, int(np.ceil(blocks / 8)))
    return np.arange(0, blocks, step)
