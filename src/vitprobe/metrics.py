"""Numpy metrics over ViT attention maps, position embeddings and patch-embedding filters.

Attention arrays are (B, heads, N, N) softmax rows (query = row, key = column); tokens are
``num_prefix`` prefix tokens (CLS, distillation, registers) followed by the patches in row-major order.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Literal

import numpy as np
from numpy.typing import NDArray

Grid = int | tuple[int, int]
FloatArray = NDArray[np.floating]


def _grid_hw(grid: Grid) -> tuple[int, int]:
    """Return (grid_h, grid_w) from an int or a pair."""
    gh, gw = (grid, grid) if isinstance(grid, (int, np.integer)) else grid
    return int(gh), int(gw)


def _check_tokens(attn: np.ndarray, num_prefix: int, grid: Grid) -> tuple[int, int]:
    """Validate a (B, heads, N, N) array against num_prefix + grid tokens and return (grid_h, grid_w)."""
    gh, gw = _grid_hw(grid)
    if attn.ndim != 4 or attn.shape[-1] != attn.shape[-2]:
        raise ValueError(f"expected attention of shape (B, heads, N, N), got {attn.shape}")
    if attn.shape[-1] != num_prefix + gh * gw:
        raise ValueError(f"N={attn.shape[-1]} != num_prefix {num_prefix} + grid {gh}x{gw}")
    return gh, gw


@lru_cache(maxsize=32)
def patch_distance_matrix(grid_h: int, grid_w: int, patch_size: int) -> FloatArray:
    """Return the read-only (P, P) pixel distances between patch centres of a row-major grid."""
    rows, cols = np.divmod(np.arange(grid_h * grid_w), grid_w)
    coords = np.stack([rows, cols], axis=1).astype(np.float64)
    dist = patch_size * np.sqrt(((coords[:, None, :] - coords[None, :, :]) ** 2).sum(-1))
    dist.setflags(write=False)
    return dist


def mean_attention_distance(
    attn: np.ndarray, num_prefix: int, grid: Grid, patch_size: int, renormalize: bool = False
) -> tuple[FloatArray, FloatArray]:
    """Return (mean attention distance in px, prefix mass), each (B, heads), over patch queries."""
    gh, gw = _check_tokens(attn, num_prefix, grid)
    patch_rows = attn[:, :, num_prefix:, :]
    prefix_mass = patch_rows[..., :num_prefix].sum(-1).mean(-1)
    weights = patch_rows[..., num_prefix:]
    dist = patch_distance_matrix(gh, gw, patch_size).astype(weights.dtype, copy=False)
    per_query = np.einsum("bhqk,qk->bhq", weights, dist)
    if renormalize:
        total = weights.sum(-1)
        per_query = np.divide(per_query, total, out=np.zeros_like(per_query), where=total > 0)
    return per_query.mean(-1), prefix_mass


def attention_entropy(attn: np.ndarray, num_prefix: int) -> FloatArray:
    """Return (B, heads) mean over patch queries of the row entropy in nats (over all keys)."""
    rows = attn[:, :, num_prefix:, :]
    # x log x -> 0 as x -> 0: clamping zeros to the smallest normal number gives exactly 0 there.
    logs = np.log(np.maximum(rows, np.finfo(rows.dtype).tiny))
    return -np.einsum("bhqk,bhqk->bhq", rows, logs).mean(-1)


def _discard_lowest(fused: np.ndarray, discard_ratio: float, num_prefix: int) -> np.ndarray:
    """Zero the lowest discard_ratio fraction of non-prefix entries of each (N, N) map; prefix rows/columns stay."""
    out = fused.copy()
    n = fused.shape[-1]
    keep = np.zeros((n, n), dtype=bool)
    keep[:num_prefix, :] = True
    keep[:, :num_prefix] = True
    candidates = np.flatnonzero(~keep)
    k = int(discard_ratio * candidates.size)
    if k == 0:
        return out
    flat = out.reshape(out.shape[0], -1)
    for b in range(flat.shape[0]):
        lowest = candidates[np.argsort(flat[b, candidates], kind="stable")[:k]]
        flat[b, lowest] = 0
    return out


def attention_rollout(
    attentions: Sequence[np.ndarray],
    head_fusion: Literal["mean", "max", "min"] = "mean",
    discard_ratio: float = 0.0,
    num_prefix: int = 1,
) -> FloatArray:
    """Return the (B, N, N) joint attention A_L @ ... @ A_1 of Abnar & Zuidema (2020)."""
    fuse = {"mean": np.mean, "max": np.max, "min": np.min}.get(head_fusion)
    if fuse is None:
        raise ValueError(f"head_fusion must be mean, max or min, got {head_fusion!r}")
    if not 0.0 <= discard_ratio < 1.0:
        raise ValueError(f"discard_ratio must be in [0, 1), got {discard_ratio}")
    if not attentions:
        raise ValueError("attention_rollout needs at least one block")
    n = attentions[0].shape[-1]
    eye = np.eye(n, dtype=attentions[0].dtype)
    result = np.broadcast_to(eye, (attentions[0].shape[0], n, n)).copy()
    for attn in attentions:
        fused = fuse(attn, axis=1)
        if discard_ratio > 0:
            fused = _discard_lowest(fused, discard_ratio, num_prefix)
        joint = fused + eye
        joint = joint / joint.sum(-1, keepdims=True)
        result = joint @ result
    return result


def rollout_cls_map(rollout: np.ndarray, num_prefix: int, grid: Grid) -> FloatArray:
    """Return the (B, grid_h, grid_w) CLS row of a rollout over the patch columns."""
    gh, gw = _grid_hw(grid)
    return rollout[:, 0, num_prefix:].reshape(rollout.shape[0], gh, gw)


def cls_attention_maps(attn_last_block: np.ndarray, num_prefix: int, grid: Grid) -> FloatArray:
    """Return the (B, heads, grid_h, grid_w) CLS-query attention over the patch keys."""
    gh, gw = _check_tokens(attn_last_block, num_prefix, grid)
    b, h = attn_last_block.shape[:2]
    return attn_last_block[:, :, 0, num_prefix:].reshape(b, h, gh, gw)


def upsample_map(map2d: np.ndarray, size: int) -> np.ndarray:
    """Return the nearest-neighbour (size, size) upsampling of a (grid_h, grid_w) map."""
    gh, gw = map2d.shape
    if size % gh or size % gw:
        raise ValueError(f"size {size} is not a multiple of the grid {gh}x{gw}")
    return np.repeat(np.repeat(map2d, size // gh, axis=0), size // gw, axis=1)


def position_embedding_similarity(pos_embed_patches: np.ndarray, grid: Grid) -> tuple[FloatArray, FloatArray]:
    """Return (cosine (gh, gw, gh, gw), dot (P, P)) similarities between patch position embeddings."""
    gh, gw = _grid_hw(grid)
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


def check_attention(
    attn: np.ndarray, *, model: str, block: int, image_ids: Sequence[object], atol: float = 1e-3
) -> None:
    """Raise ValueError naming model, block and images whose rows are non-finite or do not sum to 1."""
    if len(image_ids) != attn.shape[0]:
        raise ValueError(f"{model} block {block}: {len(image_ids)} image ids for batch {attn.shape[0]}")
    finite = np.isfinite(attn).all(axis=(1, 2, 3))
    sums_ok = (np.abs(attn.sum(-1, dtype=np.float64) - 1.0) <= atol).all(axis=(1, 2))
    bad = [image_ids[i] for i in np.flatnonzero(~(finite & sums_ok))]
    if bad:
        raise ValueError(
            f"{model} block {block}: attention rows not finite or not summing to 1 (atol={atol}) for images {bad}"
        )
