"""Attention with its per-row statistics, flash-attention style, in Pallas (jax backend).

The unfused path materialises every block's (B, heads, N, N) probabilities so that the reducer
can read them; on a GPU that costs more than the attention itself. This kernel walks the keys
in tiles with an online softmax (running row maximum ``m``, running sum ``l``) and accumulates,
next to ``P @ V``, the three row sums the reductions need, each rescaled like the output:

- ``distance``: sum_j p_ij d_ij, with d the pixel distance between query and key patch
  (zero for prefix tokens), computed from the token indices inside the kernel;
- ``prefix``: sum over the prefix keys (CLS, distillation, registers) of p_ij;
- ``entropy``: -sum_j p_ij log p_ij, the log-sum-exp less the expected logit, with the running
  maximum taken out of both (no float32 digits lost to large logits): log l + c / l, where
  c = sum_j e^(s_ij - m) (m - s_ij) is rescaled like the others and shifted when m grows.

The probabilities never reach memory. Extra value columns pass through unchanged, which is how
the rollout runs without them: ``P @ R`` for the rollout so far ``R`` (see `fused_reductions`).
On a CPU, ``interpret=True`` runs the same kernel for tests.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl


def _token_distance(rows, cols, num_prefix: int, grid_w: int, patch_size: int):
    """Pixel distance between tokens ``rows`` (T, 1) and ``cols`` (1, S); zero for prefix tokens."""
    qi, kj = rows - num_prefix, cols - num_prefix
    qr, qc = qi // grid_w, qi % grid_w
    kr, kc = kj // grid_w, kj % grid_w
    d = patch_size * jnp.sqrt(((qr - kr) ** 2 + (qc - kc) ** 2).astype(jnp.float32))
    return jnp.where((qi >= 0) & (kj >= 0), d, 0.0)


def _kernel(q_ref, k_ref, v_ref, out_ref, stats_ref, *, n, num_prefix, grid_w, patch_size, block_q, block_k):
    q = q_ref[...].astype(jnp.float32)  # (block_q, D), already scaled
    query = pl.program_id(2) * block_q + jax.lax.broadcasted_iota(jnp.int32, (block_q, 1), 0)
    width = v_ref.shape[-1]

    def step(t, carry):
        m, l, acc, dist, prefix, gap = carry
        k = k_ref[pl.ds(t * block_k, block_k), :].astype(jnp.float32)
        v = v_ref[pl.ds(t * block_k, block_k), :].astype(jnp.float32)
        key = t * block_k + jax.lax.broadcasted_iota(jnp.int32, (1, block_k), 1)
        s = jnp.dot(q, k.T, preferred_element_type=jnp.float32)
        valid = key < n
        s = jnp.where(valid, s, -jnp.inf)
        m_new = jnp.maximum(m, s.max(axis=1, keepdims=True))
        alpha = jnp.exp(m - m_new)
        p = jnp.where(valid, jnp.exp(s - m_new), 0.0)
        d = _token_distance(query, key, num_prefix, grid_w, patch_size)
        # The old terms' gaps m - s grow by m_new - m (nothing to shift before the first tile: l = 0).
        shift = jnp.where(l > 0, (m_new - m) * l, 0.0)
        return (
            m_new,
            alpha * l + p.sum(axis=1, keepdims=True),
            alpha * acc + jnp.dot(p, v, preferred_element_type=jnp.float32),
            alpha * dist + (p * d).sum(axis=1, keepdims=True),
            alpha * prefix + jnp.where(key < num_prefix, p, 0.0).sum(axis=1, keepdims=True),
            alpha * (gap + shift) + jnp.where(valid, p * (m_new - s), 0.0).sum(axis=1, keepdims=True),
        )

    column = jnp.zeros((block_q, 1), jnp.float32)
    init = (column - jnp.inf, column, jnp.zeros((block_q, width), jnp.float32), column, column, column)
    m, l, acc, dist, prefix, gap = jax.lax.fori_loop(0, k_ref.shape[0] // block_k, step, init)
    out_ref[...] = (acc / l).astype(out_ref.dtype)
    entropy = jnp.log(l) + gap / l
    stats_ref[...] = jnp.concatenate([dist / l, prefix / l, entropy], axis=1)


def _pad(x, size: int):
    return jnp.pad(x, [(0, 0)] * (x.ndim - 2) + [(0, size - x.shape[-2]), (0, 0)])


@functools.partial(jax.jit, static_argnames=("num_prefix", "grid_w", "patch_size", "block", "interpret"))
def attention_with_statistics(
    q, k, v, *, num_prefix: int, grid_w: int, patch_size: int, block: int = 64, interpret: bool = False
):
    """``softmax(q k^T) v`` and per-row statistics, without the probabilities in memory.

    Args:
        q: (B, heads, N, D) queries, already multiplied by the attention scale.
        k: (B, heads, N, D) keys.
        v: (B, heads, N, W) values (any width W: extra columns are carried through the same weights).
        num_prefix: prefix tokens before the row-major patches.
        grid_w: patches per grid row.
        patch_size: pixels per patch side.
        block: query and key tile size (padding to a multiple is masked).
        interpret: run the kernel in Pallas' interpreter (CPU tests).

    Returns:
        ``(out, stats)``: out (B, heads, N, W); stats (B, heads, N, 3) per query row: the
        distance sum over patch keys (px), the prefix mass, and the entropy in nats.
    """
    b, h, n, d = q.shape
    width = v.shape[-1]
    padded = block * math.ceil(n / block)
    q, k, v = (_pad(x, padded) for x in (q, k, v))
    kernel = functools.partial(
        _kernel, n=n, num_prefix=num_prefix, grid_w=grid_w, patch_size=patch_size, block_q=block, block_k=block
    )
    squeeze = pl.Squeezed()
    out, stats = pl.pallas_call(
        kernel,
        grid=(b, h, padded // block),
        in_specs=[
            pl.BlockSpec((squeeze, squeeze, block, d), lambda i, j, t: (i, j, t, 0)),
            pl.BlockSpec((squeeze, squeeze, padded, d), lambda i, j, t: (i, j, 0, 0)),
            pl.BlockSpec((squeeze, squeeze, padded, width), lambda i, j, t: (i, j, 0, 0)),
        ],
        out_specs=[
            pl.BlockSpec((squeeze, squeeze, block, width), lambda i, j, t: (i, j, t, 0)),
            pl.BlockSpec((squeeze, squeeze, block, 3), lambda i, j, t: (i, j, t, 0)),
        ],
        out_shape=[jax.ShapeDtypeStruct((b, h, padded, width), v.dtype), jax.ShapeDtypeStruct((b, h, padded, 3), jnp.float32)],
        interpret=interpret,
    )(q, k, v)
    return out[:, :, :n], stats[:, :, :n]


class FusedReductions:
    """The blocks' attention for one forward pass, through `attention_with_statistics`: passed to
    `VisionTransformer.call(images, attend=...)`, it collects what `AttentionReducer` returns with
    ``head_fusion="mean"``, ``discard_ratio=0``, without the probabilities in memory.

    The rollout A_L ... A_1 (A = (mean over heads of P + I) / 2, rows summing to 1) is carried in
    forward order as the matrix R = A_b ... A_1: each block's kernel takes R as extra value
    columns, so ``P_h @ R`` comes out with the attention output. The CLS maps are the last
    block's CLS row, recomputed from its query (one row per head). With ``map_images`` k > 0, every
    block's full probabilities of the first k images are recomputed from their q and k too
    (``map_attention``: one (k, heads, N, N) per block), for the map-image stages."""

    def __init__(
        self,
        num_prefix: int,
        grid: tuple[int, int],
        patch_size: int,
        renormalize: bool = False,
        interpret: bool = False,
        map_images: int = 0,
    ):
        self.num_prefix, self.grid, self.patch_size = num_prefix, grid, patch_size
        self.renormalize, self.interpret, self.map_images = renormalize, interpret, map_images
        self.stats, self.rollout, self.last_qk, self.map_attention = [], None, None, []

    def __call__(self, q, k, v):
        b, h, n, d = q.shape
        if self.rollout is None:
            self.rollout = jnp.broadcast_to(jnp.eye(n, dtype=jnp.float32), (b, n, n))
        values = jnp.concatenate([v, jnp.broadcast_to(self.rollout[:, None], (b, h, n, n)).astype(v.dtype)], axis=-1)
        out, stats = attention_with_statistics(
            q, k, values, num_prefix=self.num_prefix, grid_w=self.grid[1], patch_size=self.patch_size, interpret=self.interpret
        )
        self.rollout = (out[..., d:].astype(jnp.float32).mean(axis=1) + self.rollout) / 2
        self.stats.append(stats)
        self.last_qk = (q, k)
        if self.map_images:
            first = slice(0, self.map_images)
            logits = jnp.einsum("bhqd,bhkd->bhqk", q[first].astype(jnp.float32), k[first].astype(jnp.float32))
            self.map_attention.append(jax.nn.softmax(logits, axis=-1))
        return out[..., :d], None

    def reductions(self) -> dict:
        """The `AttentionReducer` outputs: distance, prefix_mass, entropy (B, blocks, heads),
        row_error (B, blocks), rollout (B, gh, gw), cls (B, heads, gh, gw)."""
        p, (gh, gw) = self.num_prefix, self.grid
        stats = jnp.stack(self.stats, axis=1)[:, :, :, p:]  # (B, blocks, heads, patch queries, 3)
        distance, prefix = stats[..., 0], stats[..., 1]
        if self.renormalize:
            kept = 1 - prefix
            distance = jnp.where(kept > 0, distance / jnp.where(kept > 0, kept, 1), 0)
        finite = jnp.isfinite(stats).all(axis=(2, 3, 4))
        q, k = self.last_qk
        cls = jax.nn.softmax(jnp.einsum("bhd,bhnd->bhn", q[:, :, 0].astype(jnp.float32), k.astype(jnp.float32)), axis=-1)
        return {
            "distance": distance.mean(axis=-1),
            "prefix_mass": prefix.mean(axis=-1),
            "entropy": stats[..., 2].mean(axis=-1),
            # Rows sum to 1 by construction (each is divided by its own sum); only non-finite ones fail.
            "row_error": jnp.where(finite, 0.0, jnp.inf),
            "rollout": self.rollout[:, 0, p:].reshape(-1, gh, gw),
            "cls": cls[:, :, p:].reshape(-1, cls.shape[1], gh, gw),
        }
