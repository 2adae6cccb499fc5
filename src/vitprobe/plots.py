"""Every vitprobe figure, as functions of tables and arrays (no model code, no keras).

Each ``plot_*`` function takes its data and an output path, writes one PNG (or, by the suffix, an
SVG or PDF), and returns the path.
Figures are built with :class:`matplotlib.figure.Figure` on the Agg canvas, never through pyplot, so
nothing is registered globally, no figure is left open, and the module is safe to import anywhere
(no backend switching). Titles carry the exact checkpoint through the ``label`` strings the caller
passes in (for example ``"deit_b16_distilled (deit_base_distilled_patch16_224.fb_in1k)"``).

Figures are RGB PNGs at 110 dpi. Figures of photographs that would exceed PALETTE_ABOVE bytes are
written as dithered 256-colour palette PNGs instead, to stay small enough to commit as README
thumbnails.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from .metrics import upsample_map

DPI = 110
OVERLAY_CMAP = "inferno"
CORRECT_COLOUR, WRONG_COLOUR = "#12801f", "#c81e1e"
PALETTE_ABOVE = 250_000  # bytes of an RGB PNG above which photo figures switch to a palette PNG
STYLE = {
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
    "font.size": 9,
    "axes.titlesize": 9.5,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "figure.titlesize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": False,
    "image.origin": "upper",
}
DISTANCE_COLUMNS = ("model", "block", "head", "distance_px", "std_px", "n_images")
PREDICTION_COLUMNS = ("model", "image_id", "top1", "top1_name", "top1_prob", "correct")
VIDEO_SUFFIXES = (".gif", ".mp4")


# ----------------------------------------------------------------------------------------------
# helpers


def _styled(func):
    """Run a plotting function inside the vitprobe rc style (fonts, dpi, spines)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(STYLE):
            return func(*args, **kwargs)

    return wrapper


def _save(fig: Figure, path: str | Path, palette: bool = False) -> Path:
    """Render `fig` with Agg to `path`, free it, and return the path.

    PNG is the default; .svg and .pdf are written by matplotlib as vector files. With `palette`
    (figures of photographs), a PNG larger than PALETTE_ABOVE bytes as RGB is written instead as a
    256-colour palette PNG (median cut, Floyd-Steinberg dithered), about a third of the size.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".png", ".svg", ".pdf"):
        raise ValueError(f"figures are written as .png, .svg or .pdf; got {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas = FigureCanvasAgg(fig)
    try:
        if suffix != ".png":
            fig.savefig(path, dpi=DPI, facecolor="white")
            return path
        canvas.draw()
        image = Image.fromarray(np.ascontiguousarray(np.asarray(canvas.buffer_rgba())[..., :3]))
    finally:
        fig.clear()
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True, dpi=(DPI, DPI))
    if palette and buffer.tell() > PALETTE_ABOVE:
        colours = image.quantize(colors=256, method=Image.Quantize.MEDIANCUT)
        image.quantize(palette=colours, dither=Image.Dither.FLOYDSTEINBERG).save(path, optimize=True, dpi=(DPI, DPI))
    else:
        path.write_bytes(buffer.getvalue())
    return path


def _wrap(text: str, width: int) -> str:
    """Greedy-wrap `text` to lines of about `width` characters, breaking after spaces, _ . - / or before (.

    Unlike textwrap this can split a long checkpoint name such as
    ``deit_base_distilled_patch16_224.fb_in1k`` at its separators instead of overflowing.
    """
    out = []
    for paragraph in text.split("\n"):
        tokens = re.split(r"(?<=[ _.\-/])|(?=\()", paragraph)
        line = ""
        for i, token in enumerate(tokens):
            if not token:
                continue
            # a parenthesised tail that will not fit on this line starts a new one
            tail_breaks = token.startswith("(") and len(line) + len("".join(tokens[i:]).rstrip()) > width
            if line.strip() and (tail_breaks or len(line.rstrip()) + len(token.rstrip()) > width):
                out.append(line.rstrip())
                line = token.lstrip()
            else:
                line += token
        out.append(line.rstrip())
    return "\n".join(out)


def _chars(width_in: float, fontsize: float) -> int:
    """Roughly how many characters of `fontsize` points fit in `width_in` inches."""
    return max(12, int(width_in * 72 / (0.56 * fontsize)))


def _title(fig: Figure, what: str, label: str, subtitle: str | None = None) -> None:
    """Set the figure title: what it shows, the exact checkpoint, and an optional note (wrapped to the width)."""
    width = fig.get_figwidth()
    lines = [_wrap(what, _chars(width, 10)), _wrap(label, _chars(width, 10))]
    if subtitle:
        lines.append(_wrap(subtitle, _chars(width, 9)))
    fig.suptitle("\n".join(line for line in lines if line), fontsize=10)


def _require_columns(table: pd.DataFrame, columns: Sequence[str], name: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{name} is missing columns {missing}; has {list(table.columns)}")


def _model_rows(table: pd.DataFrame, model: str) -> pd.DataFrame:
    _require_columns(table, DISTANCE_COLUMNS, "mean attention distance table")
    rows = table[table["model"] == model]
    if rows.empty:
        raise ValueError(f"no rows for model {model!r}; the table has {sorted(table['model'].unique())}")
    return rows.sort_values(["block", "head"])


def _label(labels: Mapping[str, str], model: str) -> str:
    try:
        return labels[model]
    except KeyError:
        raise KeyError(f"no label (exact checkpoint name) for model {model!r}; labels has {sorted(labels)}") from None


def _check_crops(crops: np.ndarray, name: str = "crops") -> np.ndarray:
    crops = np.asarray(crops)
    if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[-1] != 3:
        raise ValueError(f"{name} must be uint8 (n, H, W, 3), got {crops.dtype} {crops.shape}")
    return crops


def _unit(map2d: np.ndarray) -> np.ndarray:
    """Min-max scale a map to [0, 1] (a constant map becomes 0)."""
    m = np.asarray(map2d, dtype=np.float64)
    lo, hi = np.nanmin(m), np.nanmax(m)
    return (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)


def _overlay(ax, crop: np.ndarray, map2d: np.ndarray, alpha: float, cmap: str) -> None:
    """Show `crop` with `map2d` (any grid) stretched over it, bilinear, min-max scaled, with alpha."""
    h, w = crop.shape[:2]
    ax.imshow(crop, interpolation="antialiased")
    ax.imshow(
        _unit(map2d),
        cmap=cmap,
        vmin=0,
        vmax=1,
        alpha=alpha,
        interpolation="bilinear",
        extent=(-0.5, w - 0.5, h - 0.5, -0.5),
    )
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)


def _bare(ax) -> None:
    """No ticks, no spines (but, unlike axis('off'), axis labels still show)."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _mosaic(tiles: np.ndarray, ncols: int, gap: int, fill: float) -> np.ndarray:
    """Tile (n, h, w[, c]) into a (rows*(h+gap)-gap, ncols*(w+gap)-gap[, c]) array filled with `fill`."""
    n, h, w = tiles.shape[:3]
    nrows = math.ceil(n / ncols)
    shape = (nrows * (h + gap) - gap, ncols * (w + gap) - gap, *tiles.shape[3:])
    out = np.full(shape, fill, dtype=np.float64)
    for i in range(n):
        r, c = divmod(i, ncols)
        out[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = tiles[i]
    return out


def _default_ncols(n: int) -> int:
    """A near-4:7 grid width: a divisor of n in [sqrt n, 2 sqrt n] closest to sqrt(1.75 n) if any."""
    target = math.sqrt(1.75 * n)
    divisors = [d for d in range(1, n + 1) if n % d == 0 and math.sqrt(n) <= d <= 2 * math.sqrt(n)]
    if divisors:
        return min(divisors, key=lambda d: abs(d - target))
    return max(1, math.ceil(target))


# ----------------------------------------------------------------------------------------------
# 1-2. mean attention distance


@_styled
def plot_distance_by_block(table: pd.DataFrame, model: str, label: str, path: str | Path) -> Path:
    """Scatter the mean attention distance of every head against its block (ViT paper Fig. 7 right).

    x is the block numbered from 1 (the first block) to L; the contract table's `block` is 0-based.
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
            r["block"].to_numpy() + 1 + offset,
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
    ax.set_xticks(np.arange(1, n_blocks + 1))
    ax.set_xlim(0.4, n_blocks + 0.6)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("block (1 = first)")
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
        x = stats.index.to_numpy() + 1
        max_blocks = max(max_blocks, int(x.max()))
        colour = colours(i % 10)
        ax.fill_between(x, stats["min"], stats["max"], color=colour, alpha=0.16, lw=0)
        ax.plot(x, stats["mean"], marker="o", ms=3.2, lw=1.6, color=colour, label=_wrap(_label(labels, model), 80))
    ax.set_xticks(np.arange(1, max_blocks + 1, 1 if max_blocks <= 16 else 2))
    ax.set_xlim(0.6, max_blocks + 0.4)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("block (1 = first)")
    ax.set_ylabel("mean attention distance (px)")
    ax.grid(axis="y", lw=0.4, alpha=0.5)
    fig.legend(loc="outside lower center", ncols=1, frameon=False)
    fig.suptitle(
        _wrap(title, _chars(6.4, 10)) + "\n" + "line: mean over heads; band: min-max over heads",
        fontsize=10,
    )
    return _save(fig, path)


# ----------------------------------------------------------------------------------------------
# 3-4. attention maps over the crops


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
            axes[r, 0].set_ylabel(_wrap(str(image_ids[r]), 18), fontsize=7)
        for c, model in enumerate(models, start=1):
            seen = per_model[model][r] if per_model else crops[r]
            _overlay(axes[r, c], seen, np.asarray(maps[model])[r], alpha, cmap)
        for ax in axes[r]:
            _bare(ax)
    axes[0, 0].set_title("image", fontsize=7.5)
    for c, model in enumerate(models, start=1):
        axes[0, c].set_title(_wrap(_label(labels, model), header), fontsize=7)
    fig.suptitle(_wrap(title, _chars(cell * ncols, 10)) + "\nmaps min-max scaled per image", fontsize=9)
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


# ----------------------------------------------------------------------------------------------
# 5. patch-embedding filters


@_styled
def plot_patch_filters(
    filters: np.ndarray, label: str, path: str | Path, title: str, *, ncols: int | None = None
) -> Path:
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


# ----------------------------------------------------------------------------------------------
# 6. position-embedding similarity


@_styled
def plot_position_cosine_grid(cosine: np.ndarray, label: str, path: str | Path) -> Path:
    """ViT paper Fig. 7 centre: a grid_h x grid_w grid of small heatmaps, tile (i, j) being the cosine
    similarity of patch (i, j)'s position embedding with every patch; one colour scale -1..1."""
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
    _title(fig, "Position embedding similarity", label)
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


def plot_position_similarity(
    cosine: np.ndarray, dot: np.ndarray, label: str, cosine_path: str | Path, dot_path: str | Path
) -> tuple[Path, Path]:
    """Write both position-embedding figures; returns (cosine grid path, dot-product path)."""
    return plot_position_cosine_grid(cosine, label, cosine_path), plot_position_dot(dot, label, dot_path)


# ----------------------------------------------------------------------------------------------
# 7. predictions


def _accuracy_table(predictions: pd.DataFrame) -> pd.DataFrame:
    """Per model with labelled images: n, correct, accuracy % and a Wilson 95% interval (in order of appearance)."""
    _require_columns(predictions, PREDICTION_COLUMNS, "predictions table")
    correct = predictions["correct"].astype("boolean")
    rows = []
    for model in pd.unique(predictions["model"]):
        c = correct[predictions["model"] == model].dropna()
        n = len(c)
        if n == 0:
            continue
        k = int(c.sum())
        p, z = k / n, 1.959964
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        low, high = 100 * (centre - half), 100 * (centre + half)
        rows.append(dict(model=model, n=n, correct=k, accuracy=100 * p, low=low, high=high))
    return pd.DataFrame(rows, columns=["model", "n", "correct", "accuracy", "low", "high"])


def _draw_accuracy(
    ax, predictions: pd.DataFrame, published: Mapping[str, float], labels: Mapping[str, str], wrap: int
) -> None:
    """Horizontal bars: measured accuracy (Wilson 95% interval) and, below each, the published figure."""
    acc = _accuracy_table(predictions)
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
    ax.barh(y - height / 2, measured, height, xerr=err, color="C0", error_kw=dict(lw=0.8, capsize=2),
            label="measured (95% Wilson interval)")
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
    text = _wrap(f"{row['top1_name']} ({float(row['top1_prob']):.2f})", width)
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
def plot_accuracy(
    predictions: pd.DataFrame, published: Mapping[str, float], labels: Mapping[str, str], path: str | Path
) -> Path:
    """Measured top-1 accuracy per model (only models with labelled images) next to the published figure."""
    n_models = max(1, len(_accuracy_table(predictions)))
    fig = Figure(figsize=(6.8, 1.2 + 0.62 * n_models), layout="constrained")
    _draw_accuracy(fig.add_subplot(), predictions, published, labels, wrap=34)
    fig.suptitle("Top-1 accuracy: measured on the sampled images vs published", fontsize=10)
    return _save(fig, path)


@_styled
def plot_predictions(
    predictions: pd.DataFrame,
    crops: np.ndarray | None,
    published: Mapping[str, float],
    labels: Mapping[str, str],
    path: str | Path,
    *,
    image_ids: Sequence[str] | None = None,
    max_images: int = 6,
) -> Path:
    """Accuracy per model next to the published figure; with `crops`, also the first `max_images`
    crops and every model's "top1_name (prob)" under each (green correct, red wrong, black no label).

    `image_ids` name the crops (default: the image ids in order of first appearance in `predictions`).
    """
    if crops is None:
        return plot_accuracy(predictions, published, labels, path)
    acc_rows = max(1, len(_accuracy_table(predictions)))
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
    _draw_accuracy(top.add_subplot(), predictions, published, labels, wrap=34)
    grid = bottom.add_gridspec(2, k, height_ratios=[cell, text_h], hspace=0.0, wspace=0.03)
    lookups = {m: _lookup(predictions, m) for m in models}
    for j in range(k):
        ax = bottom.add_subplot(grid[0, j])
        ax.imshow(crops[j], interpolation="antialiased")
        ax.set_title(_wrap(str(image_ids[j]), 22), fontsize=6.5)
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


# ----------------------------------------------------------------------------------------------
# 8. attention videos (pure numpy frames, Pillow GIF / optional ffmpeg MP4)


def _lut(cmap: str) -> np.ndarray:
    """(256, 3) float colour table of a matplotlib colormap (data only, no figure)."""
    return matplotlib.colormaps[cmap](np.linspace(0.0, 1.0, 256))[:, :3]


def _resize_map(map2d: np.ndarray, height: int, width: int, interpolation: str) -> np.ndarray:
    """Resize a (gh, gw) map to (height, width): "nearest" (equal to `upsample_map` when the sizes
    divide) or "bilinear" (pixel-centre aligned, edge-clamped, like matplotlib's bilinear overlay)."""
    gh, gw = map2d.shape
    if interpolation == "nearest":
        if height == width and height % gh == 0 and width % gw == 0:
            return upsample_map(map2d, height)
        return map2d[(np.arange(height) * gh) // height][:, (np.arange(width) * gw) // width]
    if interpolation != "bilinear":
        raise ValueError(f"interpolation must be 'bilinear' or 'nearest', got {interpolation!r}")

    def axis(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(pos).astype(np.intp)
        return lo, np.minimum(lo + 1, n_in - 1), pos - lo

    r0, r1, wr = axis(height, gh)
    c0, c1, wc = axis(width, gw)
    rows = map2d[r0] * (1 - wr)[:, None] + map2d[r1] * wr[:, None]
    return rows[:, c0] * (1 - wc) + rows[:, c1] * wc


def attention_video_frames(
    frames: np.ndarray,
    maps: np.ndarray,
    *,
    alpha: float = 0.65,
    cmap: str = OVERLAY_CMAP,
    normalize: Literal["frame", "video"] = "frame",
    interpolation: Literal["bilinear", "nearest"] = "bilinear",
) -> np.ndarray:
    """Blend each (T, H, W, 3) uint8 frame with its (T, gh, gw) attention map; returns uint8 (T, H, W, 3).

    The map is min-max scaled (per frame by default, or over the whole video), upsampled to the
    frame (bilinear by default, as in the static overlays; or nearest, showing the patches),
    coloured with `cmap`, and blended with weight alpha * map, so
    low-attention regions keep the original pixels and high-attention regions take the colour.
    """
    frames = np.asarray(frames)
    maps = np.asarray(maps, dtype=np.float64)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    if maps.ndim != 3 or maps.shape[0] != frames.shape[0]:
        raise ValueError(f"maps must be (T={frames.shape[0]}, grid_h, grid_w), got {maps.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if normalize == "video":
        lo, hi = maps.min(), maps.max()
        scaled = (maps - lo) / (hi - lo) if hi > lo else np.zeros_like(maps)
    elif normalize == "frame":
        scaled = np.stack([_unit(m) for m in maps]) if len(maps) else maps
    else:
        raise ValueError(f"normalize must be 'frame' or 'video', got {normalize!r}")
    lut = _lut(cmap) * 255.0
    _, height, width, _ = frames.shape
    out = np.empty_like(frames)
    for t in range(frames.shape[0]):
        m = _resize_map(scaled[t], height, width, interpolation)
        colour = lut[np.clip(np.rint(m * 255), 0, 255).astype(np.intp)]
        weight = (alpha * m)[..., None]
        blended = frames[t] * (1.0 - weight) + colour * weight
        out[t] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out


def write_video(frames: np.ndarray, path: str | Path, fps: float = 8.0) -> Path:
    """Write uint8 (T, H, W, 3) frames as an animated GIF (Pillow, looping) or, with imageio-ffmpeg
    installed, an MP4 (H.264); the suffix of `path` decides. Returns the path.

    GIF frame times are whole hundredths of a second, and Pillow merges identical consecutive
    frames into one longer frame.
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise ValueError(f"frames must be non-empty uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise ValueError(f"unsupported video suffix {path.suffix!r} for {path}; use one of {VIDEO_SUFFIXES}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".gif":
        images = [Image.fromarray(np.ascontiguousarray(f)) for f in frames]
        duration = max(10, int(round(1000.0 / fps / 10.0)) * 10)
        images[0].save(path, save_all=True, append_images=images[1:], duration=duration, loop=0)
        return path
    if importlib.util.find_spec("imageio_ffmpeg") is None:
        raise RuntimeError(f"writing {path} needs the imageio-ffmpeg package; install it or write a .gif instead")
    import imageio_ffmpeg

    height, width = frames.shape[1:3]
    writer = imageio_ffmpeg.write_frames(
        str(path), (width, height), fps=fps, codec="libx264", pix_fmt_in="rgb24", pix_fmt_out="yuv420p", quality=7
    )
    writer.send(None)
    try:
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
    finally:
        writer.close()
    return path
