"""Class-specific attribution maps of a ViT, from its attention and the gradient of a target.

Written in `keras.ops` only, so they run inside the compiled program that takes the gradients
(`vitprobe.compiled.AttributionProgram`): no (B, heads, N, N) tensor leaves it. Attention and
gradient lists are one (B, heads, N, N) entry per block, first block first; an attention-pooling
model (SigLIP) appends its pooling query's (B, heads, 1, N) and that query's row plays the class
token's part, as in the plain rollout (`vitprobe.metrics.attention`). Every method returns a
(B, N) row over the tokens; `patch_map` keeps the patches.

- ``grad_rollout`` (vit-explain's gradient rollout): per block, the mean over heads of
  attention x gradient, negatives set to 0, the lowest ``discard_ratio`` of the patch-to-patch
  entries dropped (never a prefix row or column, as the plain rollout here does; vit-explain may
  drop them), (A + I) / 2, rows renormalised, multiplied from the first block to the last.
- ``gae`` (Chefer et al. 2021b, "Generic Attention-model Explainability"): R = I; per block
  A_bar = mean over heads of max(0, gradient x attention); R <- R + A_bar R.
- ``gradcam`` (Grad-CAM on tokens, pytorch-grad-cam's ViT recipe): the last block's input tokens
  after its first LayerNorm, weighted per channel by the mean gradient over the patches, summed
  over channels, negatives set to 0.
- Baselines without gradients: ``rollout`` (the plain rollout), ``cls`` (the last block's
  class-token attention, mean over heads: Chefer's "raw attention") and ``random`` (uniform
  noise, the chance level of every faithfulness score).
"""

from __future__ import annotations

from keras import ops

from .attention import discard_lowest, split_pool_query

GRADIENT_METHODS = ("grad_rollout", "gae", "gradcam", "transformer_attribution")
METHODS = (*GRADIENT_METHODS, "rollout", "cls", "random")


def _split(attentions, gradients):
    blocks, pool = split_pool_query(attentions)
    return blocks, gradients[: len(blocks)], pool, (gradients[len(blocks)] if pool is not None else None)


def _row_times(row, matrix):
    """(B, N) row @ (B, N, N) matrix."""
    return ops.squeeze(ops.matmul(ops.expand_dims(row, 1), matrix), 1)


def grad_rollout_row(attentions, gradients, discard_ratio: float, num_prefix: int):
    """(B, N): the class token's row of the gradient rollout (see the module docstring)."""
    blocks, grads, pool, pool_grad = _split(attentions, gradients)
    n = blocks[0].shape[-1]
    eye = ops.eye(n, dtype=blocks[0].dtype)
    row = None
    if pool is not None:  # the query has no residual path: its fused row, renormalised, no identity
        row = ops.relu(ops.mean(pool * pool_grad, axis=1))[:, 0, :]
        row = row / ops.maximum(ops.sum(row, axis=-1, keepdims=True), 1e-30)
    for attn, grad in zip(reversed(blocks), reversed(grads)):
        fused = discard_lowest(ops.relu(ops.mean(attn * grad, axis=1)), discard_ratio, num_prefix)
        joint = (fused + eye) / 2
        joint = joint / ops.sum(joint, axis=-1, keepdims=True)  # the identity keeps every row sum positive
        row = joint[:, 0, :] if row is None else _row_times(row, joint)
    return row


def gae_row(attentions, gradients):
    """(B, N): the class token's row of R = (I + A_bar_L) ... (I + A_bar_1), carried from the last
    block to the first as a vector (see the module docstring)."""
    blocks, grads, pool, pool_grad = _split(attentions, gradients)
    n = blocks[0].shape[-1]
    if pool is not None:
        row = ops.mean(ops.relu(pool_grad * pool), axis=1)[:, 0, :]
    else:
        row = ops.broadcast_to(ops.one_hot(0, n, dtype=blocks[0].dtype), (ops.shape(blocks[0])[0], n))
    for attn, grad in zip(reversed(blocks), reversed(grads)):
        row = row + _row_times(row, ops.mean(ops.relu(grad * attn), axis=1))
    return row


def gradcam_map(tokens, gradient, num_prefix: int, grid: tuple[int, int]):
    """(B, gh, gw): Grad-CAM of (B, N, D) tokens and their gradient over the patch tokens."""
    patches, grad = tokens[:, num_prefix:], gradient[:, num_prefix:]
    weights = ops.mean(grad, axis=1, keepdims=True)  # (B, 1, D): one weight per channel
    return ops.reshape(ops.relu(ops.sum(patches * weights, axis=-1)), (-1, *grid))


def cls_attention_row(attentions):
    """(B, N): the last block's class-token row (or the pooling query's), mean over heads."""
    return ops.mean(attentions[-1][:, :, 0, :], axis=1)


def patch_map(row, num_prefix: int, grid: tuple[int, int]):
    """(B, gh, gw): a (B, N) token row over the patches."""
    return ops.reshape(row[:, num_prefix:], (-1, *grid))


def target_scores(out: dict, targets, concepts, classifier: bool):
    """``(score, target)`` per image of a forward pass ``out`` (`VisionTransformer`'s dict).

    With a classifier head: the logit of ``targets`` (a class index; negative: the predicted
    class), and the class used. Without one (DINO, DINOv2, MAE, SigLIP and CLIP image towers, as
    CDAM, Brocki & Chung 2023, does for self-supervised models): the cosine similarity between
    the pooled embedding and its concept (``concepts``, held constant), and -1. Where an image's
    concept is zero, its concept is its own embedding; the cosine with itself is 1 whatever the
    input, with a zero gradient, so the score is then the length of the embedding along its own
    direction (that direction held constant): the cosine times the embedding's norm.
    """
    if classifier:
        logits = out["logits"]
        chosen = ops.where(targets >= 0, targets, ops.cast(ops.argmax(logits, axis=-1), targets.dtype))
        return ops.sum(logits * ops.one_hot(chosen, logits.shape[-1], dtype=logits.dtype), axis=-1), chosen
    embedding = out["embedding"] if "embedding" in out else out["features"]
    norm = ops.sqrt(ops.sum(ops.square(embedding), axis=-1))
    concept_norm = ops.sqrt(ops.sum(ops.square(concepts), axis=-1))
    given = concept_norm > 0
    own = ops.stop_gradient(embedding / ops.expand_dims(norm, -1))
    direction = ops.where(ops.expand_dims(given, -1), concepts / ops.expand_dims(ops.where(given, concept_norm, 1), -1), own)
    score = ops.sum(embedding * direction, axis=-1) / ops.where(given, norm, 1)
    return score, ops.full_like(targets, -1)
