"""Resampling of a position-embedding grid to a new patch grid, in numpy, at load time.

Two conventions exist and checkpoints depend on which one their authors used:

- ``antialias=False``: plain bicubic (a = -0.75), half-pixel centres, edge-clamped taps.
  This is PyTorch ``F.interpolate(mode="bicubic", antialias=False)`` and ONNX ``Resize``
  (cubic, half_pixel, exclude_outside=0), as the Hugging Face DINOv2 graph uses.
- ``antialias=True``: the PIL-style filter (a = -0.5) widened by the scale when shrinking,
  taps cut at the border and renormalised; PyTorch's ``antialias=True``, timm's default.

Each is a separable linear map, built once as a (new, old) matrix per axis.
"""

from __future__ import annotations

import numpy as np


def _cubic(x: np.ndarray, a: float) -> np.ndarray:
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def bicubic_matrix(old: int, new: int, antialias: bool) -> np.ndarray:
    """(new, old) float64 matrix M with resized = M @ original along one axis."""
    scale = old / new
    out = np.zeros((new, old))
    for i in range(new):
        if antialias:
            support = 2.0 * max(scale, 1.0)
            inv = 1.0 / max(scale, 1.0)
            centre = scale * (i + 0.5)
            lo = max(int(centre - support + 0.5), 0)
            hi = min(int(centre + support + 0.5), old)
            taps = np.arange(lo, hi)
            w = _cubic((taps - centre + 0.5) * inv, a=-0.5)
            out[i, taps] = w / w.sum()
        else:
            src = (i + 0.5) * scale - 0.5
            base = int(np.floor(src))
            for k in range(-1, 3):
                out[i, min(max(base + k, 0), old - 1)] += _cubic(np.array(src - (base + k)), a=-0.75)
    return out


def resample_grid(grid: np.ndarray, new_hw: tuple[int, int], antialias: bool) -> np.ndarray:
    """Resample a (H, W, D) grid of embeddings to (new_h, new_w, D) with bicubic interpolation."""
    h, w, _ = grid.shape
    if (h, w) == tuple(new_hw):
        return grid
    rows = bicubic_matrix(h, new_hw[0], antialias)
    cols = bicubic_matrix(w, new_hw[1], antialias)
    out = np.einsum("ih,hwd,jw->ijd", rows, grid.astype(np.float64), cols)
    return out.astype(grid.dtype)
