"""Numpy metrics over a model's parameters: position-embedding similarity (or, for a model with a
relative position bias instead, the bias over the patch offsets and its similarity between patches)
and the patch-embedding filters with their principal components. The attention metrics run in the compiled graph: see
`vitprobe.metrics.attention`.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from .arrays import minmax_scale
from .grid import Grid, grid_hw

FloatArray = NDArray[np.floating]


def position_embedding_similarity(pos_embed_patches: np.ndarray, grid: Grid) -> tuple[FloatArray, FloatArray]:
    """Return (cosine (gh, gw, gh, gw), dot (P, P)) similarities between patch position embeddings."""
    gh, gw = grid_hw(grid)
    pos = np.asarray(pos_embed_patches, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[0] != gh * gw:
        raise ValueError(f"expected ({gh * gw}, D) patch position embeddings, got {pos.shape}")
    dot = pos @ pos.T
    norms = np.linalg.norm(pos, axis=1)
    denom = np.maximum(norms[:, None] * norms[None, :], 1e-12)
    return (dot / denom).reshape(gh, gw, gh, gw), dot


def relative_position_bias_maps(table: np.ndarray, grid: int) -> FloatArray:
    """A BEiT block's relative position bias table as (heads, 2g-1, 2g-1) maps over the patch offset.

    Entry (a, b) of a map is the bias the block adds to the attention logit of a query patch
    (a - g + 1) rows below and (b - g + 1) columns right of its key patch (query minus key, BEiT's
    and timm's order). The table's last three rows (the class token's biases) have no offset and are
    left out.

    Args:
        table: ((2g-1)^2 + 3, heads), as the checkpoint stores ``relative_position_bias_table``.
        grid: the patch grid side g.
    """
    span = 2 * grid - 1
    table = np.asarray(table, dtype=np.float64)
    if table.ndim != 2 or table.shape[0] != span * span + 3:
        raise ValueError(
            f"expected a ({span * span + 3}, heads) relative position bias table for a {grid}x{grid} grid, got {table.shape}"
        )
    return table[: span * span].reshape(span, span, -1).transpose(2, 0, 1)


def relative_bias_rows(maps: np.ndarray) -> FloatArray:
    """Each query patch's bias over every key patch, gathered from (..., heads, 2g-1, 2g-1) offset maps:
    (..., heads, P, P), P = g*g, patches row-major (what the blocks add to the patch-to-patch logits)."""
    maps = np.asarray(maps, dtype=np.float64)
    grid = (maps.shape[-1] + 1) // 2
    rows, cols = np.divmod(np.arange(grid * grid), grid)
    return maps[..., rows[:, None] - rows[None, :] + grid - 1, cols[:, None] - cols[None, :] + grid - 1]


def relative_bias_similarity(maps: np.ndarray) -> tuple[FloatArray, FloatArray]:
    """The position-embedding similarity's counterpart for a model whose only position information
    is a relative bias: each patch is described by its bias row over all key patches, for every
    block and head given (all concatenated), and compared with every other patch.

    Args:
        maps: (blocks, heads, 2g-1, 2g-1) offset maps (`relative_position_bias_maps` per block).

    Returns (cosine (g, g, g, g), dot (P, P)), as `position_embedding_similarity`.
    """
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 4 or maps.shape[-1] != maps.shape[-2] or maps.shape[-1] % 2 == 0:
        raise ValueError(f"expected (blocks, heads, 2g-1, 2g-1) relative bias maps, got {maps.shape}")
    rows = relative_bias_rows(maps)  # (blocks, heads, P, P): query patch on axis 2
    grid = (maps.shape[-1] + 1) // 2
    return position_embedding_similarity(np.moveaxis(rows, 2, 0).reshape(grid * grid, -1), grid)


def patch_embedding_filters(kernel: np.ndarray, count: int = 128) -> FloatArray:
    """Return the first `count` (p, p, 3) filters of a (p, p, 3, D) kernel, each min-max scaled."""
    if count > kernel.shape[-1]:
        raise ValueError(f"count {count} exceeds the {kernel.shape[-1]} filters")
    return minmax_scale(np.moveaxis(kernel[..., :count], -1, 0))


def patch_embedding_components(kernel: np.ndarray, count: int = 28) -> FloatArray:
    """Return the top `count` principal components of the D filters as (count, p, p, 3), each min-max scaled."""
    filters = kernel.reshape(-1, kernel.shape[-1]).T.astype(np.float64)
    if count > min(filters.shape):
        raise ValueError(f"count {count} exceeds the rank bound {min(filters.shape)}")
    _, _, vt = np.linalg.svd(filters - filters.mean(0), full_matrices=False)
    comps = vt[:count]
    signs = np.sign(comps[np.arange(count), np.abs(comps).argmax(1)])
    return minmax_scale((comps * signs[:, None]).reshape(count, *kernel.shape[:-1]))
