"""Per-image reductions of ViT attention: mean attention distance, prefix mass, entropy,
attention rollout and CLS maps.

Written in `keras.ops` only, so one implementation runs inside the compiled forward pass
(on the GPU with jax, without moving 21 MiB of attention per image off the device) and over
stored attention shards. Attention tensors are (B, heads, N, N) softmax rows (query = row,
key = column); the tokens are ``num_prefix`` prefix tokens (CLS, distillation, registers)
followed by the patches in row-major order. Every function also takes numpy arrays.

Models without a class token (SigLIP: ``num_prefix`` 0, attention-pooling head) follow the
same definitions: distance, prefix mass (then 0) and entropy average over all patch queries.
Their pooling query's attention, (B, heads, 1, N), comes as one extra entry after the blocks
(see `split_pool_query`); it plays the class token's part: its per-head rows are the CLS
maps, and its head-fused row (no identity added: the pooled vector has no residual path to
the query) is the final row of the rollout, carried down through every block. It has no
position, so it has no attention distance, and it is not a block of the per-block tables;
``row_error`` checks it as one more column.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from keras import ops

from .grid import Grid, grid_hw, patch_distance_matrix

HEAD_FUSIONS = ("mean", "max", "min")


def _check_tokens(attn, num_prefix: int, grid: Grid, queries: str = "N") -> tuple[int, int]:
    """``queries``: "N" for a block's square attention, "any" also for a pooling query's (B, heads, 1, N)."""
    gh, gw = grid_hw(grid)
    shape = tuple(attn.shape)
    if len(shape) != 4 or (queries == "N" and shape[-1] != shape[-2]):
        raise ValueError(f"expected attention of shape (B, heads, {queries}, N), got {shape}")
    if shape[-1] != num_prefix + gh * gw:
        raise ValueError(f"N={shape[-1]} != num_prefix {num_prefix} + grid {gh}x{gw}")
    return gh, gw


@lru_cache(maxsize=32)
def _token_distance_matrix(grid_h: int, grid_w: int, patch_size: int, num_prefix: int) -> np.ndarray:
    """(N, N) float32 pixel distances between tokens, zero in the prefix rows and columns."""
    n = num_prefix + grid_h * grid_w
    dist = np.zeros((n, n), np.float32)
    dist[num_prefix:, num_prefix:] = patch_distance_matrix(grid_h, grid_w, patch_size)
    dist.setflags(write=False)
    return dist


def mean_attention_distance(attn, num_prefix: int, grid: Grid, patch_size: int, renormalize: bool = False):
    """(mean attention distance in px, prefix mass), each (B, heads), averaged over patch queries.

    Prefix keys are dropped without renormalising (unless ``renormalize``); the mass they
    took is the prefix mass."""
    gh, gw = _check_tokens(attn, num_prefix, grid)
    attn = ops.convert_to_tensor(attn)  # a numpy array times a torch tensor fails on the torch backend
    dist = ops.convert_to_tensor(_token_distance_matrix(gh, gw, patch_size, num_prefix), dtype=attn.dtype)
    # Per query first, then over queries: float32 sums of a few hundred terms stay exact to ~1e-5.
    per_query = ops.sum(attn * dist, axis=-1)[:, :, num_prefix:]
    prefix = ops.sum(attn[:, :, num_prefix:, :num_prefix], axis=-1)
    if renormalize:
        total = ops.sum(attn[:, :, num_prefix:, :], axis=-1) - prefix
        per_query = ops.where(total > 0, per_query / ops.where(total > 0, total, 1), 0)
    return ops.mean(per_query, axis=-1), ops.mean(prefix, axis=-1)


def attention_entropy(attn, num_prefix: int, logits=None):
    """(B, heads) mean over patch queries of the row entropy in nats (over all keys).

    The entropy of p = softmax(s) is the log-sum-exp of the logits less the expected logit:
    H = log sum_j e^(s_j) - sum_j p_j s_j. With the row maximum m taken out of both (so that
    large logits lose no float32 digits), H = log l + sum_j p_j (m - s_j), where
    l = sum_j e^(s_j - m) = 1 / max_j p_j: one logarithm per row instead of one per weight.

    Args:
        attn: (B, heads, N, N) softmax rows.
        num_prefix: tokens before the patches; their query rows are left out.
        logits: the (B, heads, N, N) logits ``attn`` is the softmax of, finite (a masked key
            as a large negative number such as float32's min, not -inf). None (stored attention
            holds only the probabilities): log p stands in for them, one logarithm per weight.
    """
    if logits is None:
        # p log p -> 0 as p -> 0: zeros clamped to the smallest normal number give exactly 0 there.
        logits = ops.log(ops.maximum(attn, np.finfo(np.float32).tiny))
    gap = ops.max(logits, axis=-1, keepdims=True) - logits  # m - s_j >= 0
    entropy = ops.sum(attn * gap, axis=-1) - ops.log(ops.max(attn, axis=-1))
    return ops.mean(entropy[:, :, num_prefix:], axis=-1)


def row_sum_error(attn):
    """(B,) the largest |row sum - 1| over heads and rows; +inf where a row is not finite."""
    error = ops.abs(ops.sum(attn, axis=-1) - 1)  # NaN or inf anywhere in a row reaches its sum
    return ops.max(ops.where(ops.isfinite(error), error, np.inf), axis=(1, 2))


def discard_lowest(fused, discard_ratio: float, num_prefix: int):
    """Zero the lowest ``discard_ratio`` fraction of the patch-to-patch entries of each (N, N)
    map (ties: the first in row-major order); prefix rows and columns are never discarded."""
    n = fused.shape[-1]
    patches = n - num_prefix
    k = int(discard_ratio * patches * patches)
    if k == 0:
        return fused
    block = ops.reshape(fused[:, num_prefix:, num_prefix:], (-1, patches * patches))
    lowest = ops.cast(ops.top_k(-block, k)[1], "int32")  # (B, k), lower index first among equal values
    batch = ops.shape(block)[0]
    rows = ops.broadcast_to(ops.expand_dims(ops.arange(batch, dtype="int32"), 1), ops.shape(lowest))
    coords = ops.reshape(ops.stack([rows, lowest], axis=-1), (-1, 2))
    dropped = ops.scatter(coords, ops.ones((ops.shape(coords)[0],), block.dtype), (batch, patches * patches))
    block = ops.reshape(block * (1 - dropped), (-1, patches, patches))
    lower = ops.concatenate([fused[:, num_prefix:, :num_prefix], block], axis=2)
    return ops.concatenate([fused[:, :num_prefix, :], lower], axis=1)


def check_rollout_settings(head_fusion: str, discard_ratio: float) -> None:
    """Raise ValueError for a head fusion or discard ratio the rollout does not offer."""
    if head_fusion not in HEAD_FUSIONS:
        raise ValueError(f"head_fusion must be one of {', '.join(HEAD_FUSIONS)}, got {head_fusion!r}")
    if not 0.0 <= discard_ratio < 1.0:
        raise ValueError(f"discard_ratio must be in [0, 1), got {discard_ratio}")


def split_pool_query(attentions: Sequence) -> tuple[list, object | None]:
    """(the blocks' attention, the pooling query's or None): an attention-pooling model's last
    entry is its one query's (B, heads, 1, N) attention (see the module docstring)."""
    if len(attentions) > 1 and attentions[-1].shape[-2] == 1:
        return list(attentions[:-1]), attentions[-1]
    return list(attentions), None


def rollout_cls_row(attentions: Sequence, head_fusion: str = "mean", discard_ratio: float = 0.0, num_prefix: int = 1):
    """(B, N): the CLS row of the rollout A_L @ ... @ A_1 of Abnar & Zuidema (2020), where
    A_i is block i's fused heads plus the identity, rows renormalised. With a pooling query
    (`split_pool_query`) the row is instead P @ A_L @ ... @ A_1, P its fused heads renormalised
    (no identity, nothing discarded).

    Only the row is needed, so it is carried from the last block to the first as a vector:
    O(N^2) per block instead of a full (N, N) product."""
    check_rollout_settings(head_fusion, discard_ratio)
    attentions, pool = split_pool_query(attentions)
    if not attentions:
        raise ValueError("attention rollout needs at least one block")
    fuse = {"mean": ops.mean, "max": ops.max, "min": ops.min}[head_fusion]
    n = attentions[0].shape[-1]
    eye = ops.eye(n, dtype=attentions[0].dtype)
    row = None
    if pool is not None:
        row = fuse(pool, axis=1)[:, 0, :]
        row = row / ops.sum(row, axis=-1, keepdims=True)
    for attn in reversed(attentions):
        joint = discard_lowest(fuse(attn, axis=1), discard_ratio, num_prefix) + eye
        joint = joint / ops.sum(joint, axis=-1, keepdims=True)
        row = joint[:, 0, :] if row is None else ops.squeeze(ops.matmul(ops.expand_dims(row, 1), joint), 1)
    return row


def rollout_cls_map(attentions: Sequence, num_prefix: int, grid: Grid, head_fusion: str = "mean", discard_ratio: float = 0.0):
    """(B, grid_h, grid_w): the rollout's CLS row over the patch columns."""
    gh, gw = _check_tokens(attentions[0], num_prefix, grid)
    row = rollout_cls_row(attentions, head_fusion, discard_ratio, num_prefix)
    return ops.reshape(row[:, num_prefix:], (-1, gh, gw))


def cls_attention_maps(attn_last_block, num_prefix: int, grid: Grid):
    """(B, heads, grid_h, grid_w): the CLS query's attention over the patch keys (of a pooling
    query's attention: that query's)."""
    gh, gw = _check_tokens(attn_last_block, num_prefix, grid, queries="any")
    return ops.reshape(attn_last_block[:, :, 0, num_prefix:], (-1, attn_last_block.shape[1], gh, gw))


class AttentionReducer:
    """Every per-image reduction of one forward pass, from the list of its blocks' attention.

    Returns a dict of tensors: ``distance``, ``prefix_mass``, ``entropy`` (B, blocks, heads),
    ``row_error`` (B, entries; see `row_sum_error`), ``rollout`` (B, gh, gw) and ``cls``
    (B, heads, gh, gw; last block). A pooling query's entry (see the module docstring) adds a
    column to ``row_error`` and gives ``rollout`` and ``cls``; the per-block tables cover the blocks.

    Args:
        num_prefix: tokens before the patches (CLS, distillation token, registers).
        grid: the patch grid, ``g`` for g x g or ``(gh, gw)``.
        patch_size: patch side in pixels (distances are in pixels).
        renormalize: renormalise each query's attention over the patch keys before the
            distance (default: drop the prefix keys' mass, as the ViT authors' code does).
        head_fusion: how the rollout fuses a block's heads: ``mean``, ``max`` or ``min``.
        discard_ratio: fraction of the lowest patch-to-patch entries the rollout zeroes per
            block, in [0, 1).
    """

    def __init__(
        self,
        num_prefix: int,
        grid: Grid,
        patch_size: int,
        *,
        renormalize: bool = False,
        head_fusion: str = "mean",
        discard_ratio: float = 0.0,
    ):
        check_rollout_settings(head_fusion, discard_ratio)
        self.num_prefix, self.grid, self.patch_size = num_prefix, grid_hw(grid), patch_size
        self.renormalize, self.head_fusion, self.discard_ratio = renormalize, head_fusion, discard_ratio

    def __call__(self, attentions: Sequence, logits: Sequence | None = None) -> dict:
        """The reductions of one batch (see the class).

        Args:
            attentions: each block's (B, heads, N, N) attention, first block first.
            logits: each block's (B, heads, N, N) attention logits (the pooling query's need not
                follow), from which the entropy comes (`attention_entropy`); None: from the
                probabilities.
        """
        p = self.num_prefix
        blocks, _ = split_pool_query(attentions)
        logits = [None] * len(blocks) if logits is None else logits
        distance, mass, entropy = [], [], []
        for attn, block_logits in zip(blocks, logits):
            d, m = mean_attention_distance(attn, p, self.grid, self.patch_size, self.renormalize)
            distance.append(d)
            mass.append(m)
            entropy.append(attention_entropy(attn, p, block_logits))
        return {
            "distance": ops.stack(distance, axis=1),
            "prefix_mass": ops.stack(mass, axis=1),
            "entropy": ops.stack(entropy, axis=1),
            "row_error": ops.stack([row_sum_error(attn) for attn in attentions], axis=1),
            "rollout": rollout_cls_map(attentions, p, self.grid, self.head_fusion, self.discard_ratio),
            "cls": cls_attention_maps(attentions[-1], p, self.grid),
        }
