"""Array helpers shared by the parameter metrics and the figures."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def upsample_map(map2d: np.ndarray, size: int) -> np.ndarray:
    """Return the nearest-neighbour (size, size) upsampling of a (grid_h, grid_w) map."""
    gh, gw = map2d.shape
    if size % gh or size % gw:
        raise ValueError(f"size {size} is not a multiple of the grid {gh}x{gw}")
    return np.repeat(np.repeat(map2d, size // gh, axis=0), size // gw, axis=1)


def minmax_scale(stack: np.ndarray) -> NDArray[np.float64]:
    """Min-max scale each item of a (count, ...) stack to [0, 1] independently, ignoring NaN
    (a constant item becomes 0)."""
    flat = np.asarray(stack, dtype=np.float64).reshape(len(stack), -1)
    lo = np.nanmin(flat, axis=1, keepdims=True)
    span = np.nanmax(flat, axis=1, keepdims=True) - lo
    scaled = np.divide(flat - lo, span, out=np.zeros_like(flat), where=span > 0)
    return scaled.reshape(np.shape(stack))
