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
import io
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from ..atomic import atomic_path, write_bytes
from ..escape import mathtext_literal
from ..metrics.arrays import minmax_scale
from ..tables import DISTANCE_COLUMNS

DPI = 110
OVERLAY_CMAP = "inferno"
CORRECT_COLOUR, WRONG_COLOUR = "#12801f", "#c81e1e"
PALETTE_ABOVE = 250_000  # bytes of an RGB PNG above which photo figures switch to a palette PNG
PNG_LEVEL = 6  # zlib compression level of the PNGs
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


def _styled(func):
    """Run a plotting function inside the vitprobe rc style (fonts, dpi, spines)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(STYLE):
            return func(*args, **kwargs)

    return wrapper


def _save(fig: Figure, path: str | Path, palette: bool = False) -> Path:
    """Render `fig` with Agg to `path` and return the path (the caller drops the figure: no pyplot
    registry holds it, so it is freed like any object).

    PNG is the default; .svg and .pdf are written by matplotlib as vector files. With `palette`
    (figures of photographs), a PNG larger than PALETTE_ABOVE bytes as RGB is written instead as a
    256-colour palette PNG (median cut, Floyd-Steinberg dithered), about a third of the size.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".png", ".svg", ".pdf"):
        raise ValueError(f"figures are written as .png, .svg or .pdf; got {path}")
    canvas = FigureCanvasAgg(fig)
    if suffix != ".png":
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=suffix[1:], dpi=DPI, facecolor="white")
        return path
    canvas.draw()
    image = Image.fromarray(np.ascontiguousarray(np.asarray(canvas.buffer_rgba())[..., :3]))
    # zlib's default level: PIL's ``optimize`` (level 9) took 4-6x as long for files 1-3% smaller.
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=PNG_LEVEL, dpi=(DPI, DPI))
    if palette and buffer.tell() > PALETTE_ABOVE:
        colours = image.quantize(colors=256, method=Image.Quantize.MEDIANCUT)
        buffer = io.BytesIO()
        image.quantize(palette=colours, dither=Image.Dither.FLOYDSTEINBERG).save(
            buffer, format="PNG", compress_level=PNG_LEVEL, dpi=(DPI, DPI)
        )
    write_bytes(path, buffer.getvalue())
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
    """Set the figure title: what it shows, the exact checkpoint, and an optional note (wrapped to the width).

    Each line may hold user text (a checkpoint label, an image id): drawn literally (`mathtext_literal`)."""
    width = fig.get_figwidth()
    lines = [_wrap(mathtext_literal(what), _chars(width, 10)), _wrap(mathtext_literal(label), _chars(width, 10))]
    if subtitle:
        lines.append(_wrap(mathtext_literal(subtitle), _chars(width, 9)))
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
    """A model's label (user text) as matplotlib will draw it literally."""
    try:
        return mathtext_literal(labels[model])
    except KeyError:
        raise KeyError(f"no label (exact checkpoint name) for model {model!r}; labels has {sorted(labels)}") from None


def _check_crops(crops: np.ndarray, name: str = "crops") -> np.ndarray:
    crops = np.asarray(crops)
    if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[-1] != 3:
        raise ValueError(f"{name} must be uint8 (n, H, W, 3), got {crops.dtype} {crops.shape}")
    return crops


def _overlay(ax, crop: np.ndarray, map2d: np.ndarray, alpha: float, cmap: str) -> None:
    """Show `crop` with `map2d` (any grid) stretched over it, bilinear, min-max scaled, with alpha."""
    h, w = crop.shape[:2]
    ax.imshow(crop, interpolation="antialiased")
    ax.imshow(
        minmax_scale(np.asarray(map2d)[None])[0],
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
