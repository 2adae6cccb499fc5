"""Attention videos: pure numpy frames, written as an animated GIF with Pillow."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import matplotlib
import numpy as np
from PIL import Image

from ..atomic import atomic_path
from ..metrics.arrays import minmax_scale, upsample_map
from .style import OVERLAY_CMAP


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
        scaled = minmax_scale(maps) if len(maps) else maps
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
    """Write uint8 (T, H, W, 3) frames as a looping animated GIF (Pillow), atomically. Returns the path.

    GIF frame times are whole hundredths of a second, and Pillow merges identical consecutive
    frames into one longer frame.
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise ValueError(f"frames must be non-empty uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    path = Path(path)
    if path.suffix.lower() != ".gif":
        raise ValueError(f"videos are written as animated GIFs; got {path}")
    images = [Image.fromarray(np.ascontiguousarray(f)) for f in frames]
    duration = max(10, int(round(1000.0 / fps / 10.0)) * 10)
    with atomic_path(path) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=0)
    return path
