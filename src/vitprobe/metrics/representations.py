"""Statistics of the blocks' output tokens inside the compiled forward pass (keras.ops): the Gram
matrices that linear CKA combines later (`vitprobe.metrics.cka`, which describes the estimator) and
token norms. The activations are never stored: only the Gram matrices (n x n per group and block)
and the norms leave the program.

Three feature sets per block output (B, N, dim), tokens being the prefix tokens then the patches:
``tokens`` (every token, flattened: N * dim features), ``cls`` (token 0) and ``patch_mean`` (the
mean of the patch tokens).
"""

from __future__ import annotations

from collections.abc import Sequence

from keras import ops

from .cka import FEATURES


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
