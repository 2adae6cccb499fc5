"""Numpy metrics over a model's parameters: position-embedding similarity and the patch-embedding
filters with their principal components. The attention metrics run in the compiled graph: see
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
