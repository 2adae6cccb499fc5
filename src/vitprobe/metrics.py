"""Numpy metrics over a model's parameters (position embeddings, patch-embedding filters) and
map helpers. The attention metrics run in the compiled graph: see `attention_metrics`.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from .grid import Grid, grid_hw

FloatArray = NDArray[np.floating]


def upsample_map(map2d: np.ndarray, size: int) -> np.ndarray:
    """Return the nearest-neighbour (size, size) upsampling of a (grid_h, grid_w) map."""
    gh, gw = map2d.shape
    if size % gh or size % gw:
        raise ValueError(f"size {size} is not a multiple of the grid {gh}x{gw}")
    return np.repeat(np.repeat(map2d, size // gh, axis=0), size // gw, axis=1)


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


def _minmax(stack: np.ndarray) -> FloatArray:
    """Min-max scale each item of a (count, ...) stack to [0, 1] independently (constant items -> 0)."""
    flat = stack.reshape(stack.shape[0], -1).astype(np.float64)
    lo = flat.min(1, keepdims=True)
    span = flat.max(1, keepdims=True) - lo
    scaled = np.divide(flat - lo, span, out=np.zeros_like(flat), where=span > 0)
    return scaled.reshape(stack.shape)


def patch_embedding_filters(kernel: np.ndarray, count: int = 128) -> FloatArray:
    """Return the first `count` (p, p, 3) filters of a (p, p, 3, D) kernel, each min-max scaled."""
    if count > kernel.shape[-1]:
        raise ValueError(f"count {count} exceeds the {kernel.shape[-1]} filters")
    return _minmax(np.moveaxis(kernel[..., :count], -1, 0))


def patch_embedding_components(kernel: np.ndarray, count: int = 28) -> FloatArray:
    """Return the top `count` principal components of the D filters as (count, p, p, 3), each min-max scaled."""
    filters = kernel.reshape(-1, kernel.shape[-1]).T.astype(np.float64)
    if count > min(filters.shape):
        raise ValueError(f"count {count} exceeds the rank bound {min(filters.shape)}")
    _, _, vt = np.linalg.svd(filters - filters.mean(0), full_matrices=False)
    comps = vt[:count]
    signs = np.sign(comps[np.arange(count), np.abs(comps).argmax(1)])
    return _minmax((comps * signs[:, None]).reshape(count, *kernel.shape[:-1]))
