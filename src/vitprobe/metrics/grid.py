"""The patch grid: shared by the attention metrics (keras.ops) and the parameter metrics (numpy),
kept free of both so that editing either never reruns the other's stages."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

Grid = int | tuple[int, int]


def grid_hw(grid: Grid) -> tuple[int, int]:
    """(grid_h, grid_w) from an int or a pair."""
    gh, gw = (grid, grid) if isinstance(grid, (int, np.integer)) else grid
    return int(gh), int(gw)


@lru_cache(maxsize=32)
def patch_distance_matrix(grid_h: int, grid_w: int, patch_size: int) -> np.ndarray:
    """The read-only (P, P) pixel distances between patch centres of a row-major grid."""
    rows, cols = np.divmod(np.arange(grid_h * grid_w), grid_w)
    dist = patch_size * np.hypot(rows[:, None] - rows[None, :], cols[:, None] - cols[None, :])
    dist.setflags(write=False)
    return dist
