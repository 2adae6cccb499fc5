"""Statistics of the blocks' output tokens: linear CKA between blocks and models, token norms.

Linear CKA (Kornblith et al. 2019) with the minibatch estimator of Nguyen, Raghu & Kornblith (2021),
as Raghu et al. (2021) use it: the images are cut into groups of ``n``; for each group and block the
linear Gram matrix K = X X^T of the block's features (one row per image); the unbiased HSIC (Song
et al. 2012) of every pair of Gram matrices, averaged over groups; then

    CKA(K, L) = mean HSIC(K, L) / sqrt(mean HSIC(K, K) * mean HSIC(L, L)).

The activations are never stored: the Gram matrices (n x n per group and block) are computed inside
the compiled forward pass (`RepresentationReducer`, keras.ops) and combined later, for any two
models that saw the same groups of images, in float64 numpy (`hsic_matrix`, `cka_matrix`).

Three feature sets per block output (B, N, dim), tokens being the prefix tokens then the patches:
``tokens`` (every token, flattened: N * dim features), ``cls`` (token 0) and ``patch_mean`` (the
mean of the patch tokens).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from keras import ops

FEATURES = ("tokens", "cls", "patch_mean")


def block_features(x, num_prefix: int, features: str):
    """(B, F) features of a block output ``x`` (B, N, dim): see the module docstring."""
    if features == "tokens":
        return ops.reshape(x, (ops.shape(x)[0], -1))
    if features == "cls":
        return x[:, 0, :]
    if features == "patch_mean":
        return ops.mean(x[:, num_prefix:, :], axis=1)
    raise ValueError(f"features must be one of {', '.join(FEATURES)}, got {features!r}")


def group_grams(features, group_size: int):
    """(B / n, n, n) linear Gram matrices of consecutive groups of ``n = group_size`` rows of
    ``features`` (B, F).

    The features are centred over each group first. The unbiased HSIC is unchanged by adding
    a_i + a_j to K_ij (its U-statistic cancels such terms), and centring changes K by exactly such
    terms, so the estimate is the same; but the Gram entries lose the large common part of ViT
    features (the same for every image), which keeps float32 sums exact where the estimator
    subtracts them."""
    f = ops.reshape(features, (-1, group_size, ops.shape(features)[-1]))
    f = f - ops.mean(f, axis=1, keepdims=True)
    return ops.matmul(f, ops.transpose(f, (0, 2, 1)))


def token_norms(x):
    """(B, N) the L2 norm of every output token of a block output ``x`` (B, N, dim)."""
    return ops.sqrt(ops.sum(ops.square(x), axis=-1))


class RepresentationReducer:
    """Per-batch statistics of the block outputs, for the compiled forward pass.

    Returns a dict of tensors: ``token_norms`` (B, blocks, N) and, with a ``group_size``,
    ``gram_<features>`` (B / n, blocks, n, n) for each of `FEATURES` (the batch must then be a whole
    number of groups of ``group_size`` images). Without one (a run smaller than one CKA group) only
    the token norms: they need no group."""

    def __init__(self, num_prefix: int, group_size: int | None = None):
        if group_size is not None and group_size < 4:
            raise ValueError(f"the unbiased HSIC needs groups of at least 4 images, got group_size {group_size}")
        self.num_prefix, self.group_size = num_prefix, group_size

    def __call__(self, block_outputs: Sequence) -> dict:
        out = {"token_norms": ops.stack([token_norms(x) for x in block_outputs], axis=1)}
        if self.group_size is None:
            return out
        batch = block_outputs[0].shape[0]
        if batch is not None and batch % self.group_size:
            raise ValueError(f"batch of {batch} images is not a whole number of groups of {self.group_size}")
        for features in FEATURES:
            grams = [group_grams(block_features(x, self.num_prefix, features), self.group_size) for x in block_outputs]
            out[f"gram_{features}"] = ops.stack(grams, axis=1)
        return out


def hsic_matrix(grams_a: np.ndarray, grams_b: np.ndarray) -> np.ndarray:
    """(groups, blocks_a, blocks_b) unbiased HSIC of every pair of Gram matrices, in float64.

    ``grams_a`` (groups, blocks_a, n, n) and ``grams_b`` (groups, blocks_b, n, n) hold the same
    groups of images. Per pair, with K~ and L~ the Gram matrices with their diagonals set to zero:

        HSIC_1 = [tr(K~ L~) + 1'K~1 1'L~1 / ((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n (n-3))."""
    k, l = (_zero_diagonal(np.asarray(g, np.float64)) for g in (grams_a, grams_b))
    if k.shape[0] != l.shape[0] or k.shape[2:] != l.shape[2:]:
        raise ValueError(f"Gram matrices of different groups: {k.shape} vs {l.shape}")
    n = k.shape[-1]
    if n < 4:
        raise ValueError(f"the unbiased HSIC needs groups of at least 4 images, got {n}")
    trace = np.einsum("gaij,gbij->gab", k, l)
    rows_k, rows_l = k.sum(-1), l.sum(-1)  # (groups, blocks, n)
    total_k, total_l = rows_k.sum(-1), rows_l.sum(-1)
    cross = np.einsum("gai,gbi->gab", rows_k, rows_l)  # 1'K~L~1 (both symmetric)
    both = total_k[:, :, None] * total_l[:, None, :] / ((n - 1) * (n - 2))
    return (trace + both - 2 / (n - 2) * cross) / (n * (n - 3))


def _zero_diagonal(grams: np.ndarray) -> np.ndarray:
    grams = grams.copy()
    n = grams.shape[-1]
    grams[..., np.arange(n), np.arange(n)] = 0
    return grams


def cka_matrix(grams_a: np.ndarray, grams_b: np.ndarray) -> np.ndarray:
    """(blocks_a, blocks_b) minibatch linear CKA between every block of model a and of model b:
    HSIC averaged over the groups first, then normalised (see the module docstring). NaN where a
    block's mean self-HSIC is not positive (features constant over the images)."""
    cross = hsic_matrix(grams_a, grams_b).mean(0)
    self_a = np.einsum("gaa->ga", hsic_matrix(grams_a, grams_a)).mean(0)
    self_b = np.einsum("gbb->gb", hsic_matrix(grams_b, grams_b)).mean(0)
    denominator = np.sqrt(np.outer(self_a, self_b), where=np.outer(self_a, self_b) > 0, out=np.zeros((len(self_a), len(self_b))))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, cross / denominator, np.nan)
