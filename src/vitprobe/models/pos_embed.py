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


def rotary_sin_cos(grid: int, ref_grid: int, head_dim: int, temperature: float = 10000.0) -> tuple[np.ndarray, np.ndarray]:
    """(sin, cos), each (grid*grid, head_dim) float32: EVA-02's axial rotary embedding.

    A patch at row r, column c (row-major) rotates the pairs (x[2i], x[2i+1]) of its query and
    key by an angle: the first half of the pairs by r * f_j, the second half by c * f_j, with
    f_j = temperature ** (-j / B) for the B = head_dim / 4 bands. Positions are scaled to the
    grid the model was trained at (``ref_grid``), EVA's rule for other input sizes. Computed in
    float32, as the reference computes it, so the angles agree to the last bit."""
    bands = head_dim // 4
    freqs = np.float32(1.0) / (np.float32(temperature) ** (np.arange(bands, dtype=np.float32) / np.float32(bands)))
    t = np.arange(grid, dtype=np.float32) / np.float32(grid) * np.float32(ref_grid)
    rows, cols = np.meshgrid(t, t, indexing="ij")
    # (g, g, 2 axes, bands) -> (g*g, 2*bands), each angle repeated for the two members of its pair.
    angles = (np.stack([rows, cols], axis=-1)[..., None] * freqs).reshape(grid * grid, 2 * bands)
    angles = np.repeat(angles, 2, axis=-1)
    return np.sin(angles).astype(np.float32), np.cos(angles).astype(np.float32)


def relative_position_index(grid: int) -> np.ndarray:
    """(N, N) int32 index into BEiT's relative-position bias table, N = 1 + grid*grid (class token first).

    Patch pairs index the (2g-1) x (2g-1) table of (row offset, column offset); the last three
    entries hold the class token's query-to-patch, patch-to-class-token and class-to-class bias."""
    span = 2 * grid - 1
    rows, cols = np.divmod(np.arange(grid * grid), grid)
    index = np.empty((grid * grid + 1,) * 2, np.int32)
    index[1:, 1:] = (rows[:, None] - rows[None, :] + grid - 1) * span + (cols[:, None] - cols[None, :] + grid - 1)
    index[0, :] = span * span
    index[:, 0] = span * span + 1
    index[0, 0] = span * span + 2
    return index


def relative_position_table_size(grid: int) -> int:
    return (2 * grid - 1) ** 2 + 3
