"""Token-norm figures: each block's norm histograms by token kind, and the last block's high-norm
patches over the map images next to the rollout and CLS maps (Darcet et al. 2024)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import FixedLocator, FormatStrFormatter, NullFormatter, NullLocator

from ..escape import mathtext_literal
from .style import OVERLAY_CMAP, _bare, _check_crops, _overlay, _save, _styled, _title

KIND_COLOURS = {"patch": "#4c72b0", "cls": "#dd8452", "distillation": "#55a868", "register": "#c44e52"}


@_styled
def plot_norm_histograms(
    norms: Mapping[str, np.ndarray], thresholds: np.ndarray, label: str, path: str | Path, *, bins: int = 60
) -> Path:
    """One panel per block: histograms of the token norms of each kind over every image, on a log
    norm axis shared by the panels of a block (log counts: a few CLS tokens beside many patches),
    with the block's high-norm threshold dashed (or "no upper mode").

    Args:
        norms: token kind -> (images, blocks, tokens of that kind) norms; ``patch`` first. Panels
            number the blocks from 1 (the first), as the other figures do; the tables are 0-based.
        thresholds: (blocks,) each block's patch threshold, NaN where none.
        label: the exact checkpoint, the title's second line.
        path: the output file.
        bins: histogram bins per panel, evenly spaced in log norm.
    """
    blocks = len(thresholds)
    ncols = min(blocks, 4)
    nrows = math.ceil(blocks / ncols)
    fig = Figure(figsize=(2.5 * ncols + 0.3, 1.9 * nrows + 1.2), layout="constrained")
    axes = np.asarray(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    images = next(iter(norms.values())).shape[0]
    for b in range(blocks):
        ax = axes[b]
        values = {kind: np.asarray(n[:, b], dtype=np.float64).ravel() for kind, n in norms.items()}
        low = min(v.min() for v in values.values())
        high = max(v.max() for v in values.values())
        edges = np.geomspace(low, high * (1 + 1e-9), bins + 1) if high > low else np.array([low * 0.9, low * 1.1])
        for kind, v in values.items():
            ax.hist(v, bins=edges, histtype="step", color=KIND_COLOURS.get(kind, "black"), label=kind, linewidth=1.1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        # Three labelled norms per panel: a block's norms often span less than a decade.
        ax.xaxis.set_major_locator(FixedLocator(edges[[0, bins // 2, -1]] if len(edges) > 2 else edges))
        ax.xaxis.set_major_formatter(FormatStrFormatter("%.3g"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_minor_locator(NullLocator())  # unlabelled; laying out their ticks took half the figure's time
        if np.isnan(thresholds[b]):
            ax.set_title(f"block {b}: no upper mode", fontsize=8)
        else:
            ax.axvline(thresholds[b], color="black", linestyle="--", linewidth=0.9)
            above = int((values["patch"] > thresholds[b]).sum())
            ax.set_title(f"block {b}: {above} patches > {thresholds[b]:.3g}", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[blocks:]:
        ax.set_axis_off()
    axes[0].legend(fontsize=7, frameon=False)
    fig.supxlabel("token L2 norm (log scale)", fontsize=8)
    fig.supylabel("tokens (log scale)", fontsize=8)
    _title(
        fig,
        "Token norms per block (block outputs)",
        label,
        f"{images} images; dashed: the block's high-norm threshold (widest gap in the patches' log-norms)",
    )
    return _save(fig, path)


@_styled
def plot_high_norm_maps(
    crops: np.ndarray,
    rollout: np.ndarray,
    cls: np.ndarray,
    patch_norms: np.ndarray,
    threshold: float,
    label: str,
    path: str | Path,
    *,
    image_ids: Sequence[str] | None = None,
    register_norms: np.ndarray | None = None,
    alpha: float = 0.55,
    cmap: str = OVERLAY_CMAP,
) -> Path:
    """Rows = map images; columns = the crop, the rollout map, the mean over heads of the last
    block's CLS maps, and the last block's patch norms. The patches above ``threshold`` are boxed in
    every map column and each map's peak patch is marked with a cross, so a map whose peak sits on a
    high-norm token shows its cross inside a box.

    Args:
        crops: (n, H, W, 3) uint8, the crops the model saw.
        rollout: (n, grid_h, grid_w) rollout maps; cls: (n, heads, grid_h, grid_w) CLS maps.
        patch_norms: (n, grid_h, grid_w) the last block's patch-token norms.
        threshold: the last block's high-norm threshold (NaN: no high-norm patches).
        label: the exact checkpoint, the title's second line.
        path: the output file.
        image_ids: row labels.
        register_norms: (n, registers) the last block's register-token norms, named per row.
    """
    crops = _check_crops(crops)
    n = len(crops)
    maps = {"rollout": np.asarray(rollout), "mean CLS map": np.asarray(cls).mean(axis=1), "patch norm": np.asarray(patch_norms)}
    for name, m in maps.items():
        if m.ndim != 3 or len(m) != n:
            raise ValueError(f"{name} must be (n={n}, grid_h, grid_w), got {m.shape}")
    cell = 1.5
    fig = Figure(figsize=(cell * 4 + 0.2, cell * n + 1.3), layout="constrained")
    fig.get_layout_engine().set(w_pad=0.01, h_pad=0.01, wspace=0.01, hspace=0.01)
    axes = fig.subplots(n, 4, squeeze=False)
    for r in range(n):
        h, w = crops[r].shape[:2]
        axes[r, 0].imshow(crops[r], interpolation="antialiased")
        high = maps["patch norm"][r] > threshold  # NaN: nothing
        for c, (name, m) in enumerate(maps.items(), start=1):
            ax = axes[r, c]
            if name == "patch norm":
                ax.imshow(m[r], cmap="viridis", interpolation="nearest", extent=(-0.5, w - 0.5, h - 0.5, -0.5))
                median = np.median(m[r])
                at_peak = m[r].ravel()[np.argmax(maps["rollout"][r])] / median
                note = f"{int(high.sum())} high-norm; max/median {m[r].max() / median:.3g}\nat rollout peak {at_peak:.3g}"
                if register_norms is not None and len(register_norms[r]):
                    note += f"\nregisters max/median {np.max(register_norms[r]) / median:.3g}"
                ax.set_xlabel(note, fontsize=6.5)
            else:
                _overlay(ax, crops[r], m[r], alpha, cmap)
            _mark_patches(ax, high, (h, w), "cyan")
            peak = np.unravel_index(np.argmax(m[r]), m[r].shape)
            _mark_peak(ax, peak, m[r].shape, (h, w))
        if image_ids is not None:
            axes[r, 0].set_ylabel(mathtext_literal(image_ids[r]), fontsize=7)
        for ax in axes[r]:
            _bare(ax)
    for c, name in enumerate(["crop", *maps]):
        axes[0, c].set_title(name, fontsize=7.5)
    where = "no high-norm patches (no upper mode)" if np.isnan(threshold) else f"boxes: patch norm > {threshold:.3g}"
    _title(fig, "Last block's high-norm patches beside the rollout and CLS maps", label, f"{where}; crosses: each map's peak")
    return _save(fig, path, palette=True)


def _mark_patches(ax, mask: np.ndarray, size: tuple[int, int], colour: str) -> None:
    """Outline the patches where ``mask`` (grid_h, grid_w) is set, over a (H, W) image."""
    (gh, gw), (h, w) = mask.shape, size
    for i, j in zip(*np.nonzero(mask)):
        ax.add_patch(Rectangle((j * w / gw - 0.5, i * h / gh - 0.5), w / gw, h / gh, fill=False, edgecolor=colour, linewidth=0.9))


def _mark_peak(ax, peak: tuple[int, int], grid: tuple[int, int], size: tuple[int, int]) -> None:
    (i, j), (gh, gw), (h, w) = peak, grid, size
    ax.plot([(j + 0.5) * w / gw - 0.5], [(i + 0.5) * h / gh - 0.5], marker="+", color="white", markersize=6, mew=1.2)
