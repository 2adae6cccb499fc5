"""Linear CKA between blocks and models from stored Gram matrices, in float64 numpy (no Keras: the
jobs that combine them load no model).

Linear CKA (Kornblith et al. 2019) with the minibatch estimator of Nguyen, Raghu & Kornblith (2021),
as Raghu et al. (2021) use it: the images are cut into groups of ``n``; for each group and block the
linear Gram matrix K = X X^T of the block's features (one row per image; computed inside the
forward pass by `vitprobe.metrics.representations.RepresentationReducer`); the unbiased HSIC (Song
et al. 2012) of every pair of Gram matrices, averaged over groups; then

    CKA(K, L) = mean HSIC(K, L) / sqrt(mean HSIC(K, K) * mean HSIC(L, L)),

for any two models that saw the same groups of images.
"""

from __future__ import annotations

import numpy as np

# The feature sets of a block output whose Gram matrices are kept (see `vitprobe.metrics.representations`).
FEATURES = ("tokens", "cls", "patch_mean")


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


def _group_hsic(grams_a: np.ndarray, grams_b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per group: HSIC(K, L) (groups, blocks_a, blocks_b), HSIC(K, K) (groups, blocks_a), HSIC(L, L) (groups, blocks_b)."""
    cross = hsic_matrix(grams_a, grams_b)
    self_a = np.einsum("gaa->ga", hsic_matrix(grams_a, grams_a))
    self_b = np.einsum("gbb->gb", hsic_matrix(grams_b, grams_b))
    return cross, self_a, self_b


def _normalised(cross: np.ndarray, self_a: np.ndarray, self_b: np.ndarray) -> np.ndarray:
    """CKA from (mean) HSIC values: cross (..., a, b) / sqrt(self_a (..., a) self_b (..., b)); NaN where not positive."""
    product = self_a[..., :, None] * self_b[..., None, :]
    denominator = np.sqrt(product, where=product > 0, out=np.zeros(product.shape))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, cross / denominator, np.nan)


def cka_matrix(grams_a: np.ndarray, grams_b: np.ndarray) -> np.ndarray:
    """(blocks_a, blocks_b) minibatch linear CKA between every block of model a and of model b:
    HSIC averaged over the groups first, then normalised (see the module docstring). NaN where a
    block's mean self-HSIC is not positive (features constant over the images)."""
    cross, self_a, self_b = _group_hsic(grams_a, grams_b)
    return _normalised(cross.mean(0), self_a.mean(0), self_b.mean(0))


def cka_standard_error(grams_a: np.ndarray, grams_b: np.ndarray) -> np.ndarray:
    """(blocks_a, blocks_b) jackknife standard error of `cka_matrix`: how much the CKA would move
    with other images of the same kind. With two or more groups, each group is left out in turn
    (its HSIC dropped from the means); with one group, each image is left out of it (the group's
    Gram matrices without its row and column; NaN below 5 images, since the unbiased HSIC needs 4).
    For the m leave-one-out estimates t_i: sqrt((m - 1) / m * sum (t_i - mean t)^2)."""
    cross, self_a, self_b = _group_hsic(grams_a, grams_b)
    groups = cross.shape[0]
    if groups >= 2:

        def left_out(values: np.ndarray) -> np.ndarray:
            return (values.sum(0, keepdims=True) - values) / (groups - 1)

        estimates = _normalised(left_out(cross), left_out(self_a), left_out(self_b))
    else:
        n = np.shape(grams_a)[-1]
        if n < 5:
            return np.full(cross.shape[1:], np.nan)
        kept = [np.delete(np.arange(n), i) for i in range(n)]
        estimates = np.stack(
            [cka_matrix(np.asarray(grams_a)[..., k, :][..., k], np.asarray(grams_b)[..., k, :][..., k]) for k in kept]
        )
    m = estimates.shape[0]
    return np.sqrt((m - 1) / m * ((estimates - estimates.mean(0)) ** 2).sum(0))
