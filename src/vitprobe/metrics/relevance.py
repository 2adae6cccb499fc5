"""Chefer et al.'s (CVPR 2021, "Transformer Interpretability Beyond Attention Visualization")
transformer attribution: layer-wise relevance propagation (LRP) from the explained class down
through every block, each block's attention relevance weighted by its gradient, then rolled out.

The propagation rules are those of their ViT (facts, re-expressed here in `keras.ops`):
- a linear layer passes relevance by the alpha-beta rule with alpha 1, beta 0 on positive and
  negative inputs and weights, bias ignored (`linear_relevance`);
- LayerNorm, GELU, softmax and the class-token selection pass it unchanged (the selection puts
  it on the class token);
- a residual sum splits it in proportion to each input's share, then rescales the two parts
  so that their totals keep the proportion of their absolute sums (`add_relevance`), per image;
- the attention's two products (q k^T and attention x v) split it by gradient x input, each
  share halved, and the relevance of the attention probabilities is the one kept (its "cam");
- the two branches of a residual stream's fork add up.
The map: per block, A_bar = mean over heads of max(0, gradient x cam); the product
(A_bar_L + I) ... (A_bar_1 + I), not renormalised; the class token's row over the patches.

Defined for the layout of their ViT: fused qkv, a GELU MLP, no layer scale, class-token pooling
into one classifier head (`ViTSpec.transformer_attribution_refusal` says why another layout is not).
"""

from __future__ import annotations

from keras import ops

from ..models.vit import _activation


def safe_divide(a, b):
    """a / b, 0 where b is 0 (their stabiliser: b + 1e-9 in the denominator)."""
    den = b + 1e-9
    den = den + ops.cast(ops.equal(den, 0), den.dtype) * 1e-9
    return ops.where(ops.not_equal(b, 0), a / den, 0.0)


def linear_relevance(relevance, x, kernel):
    """Relevance of the input ``x`` (..., in) of a dense layer with ``kernel`` (in, out): alpha 1, beta 0."""
    kernel = ops.cast(kernel, "float32")
    px, nx = ops.relu(x), ops.minimum(x, 0.0)
    pk, nk = ops.relu(kernel), ops.minimum(kernel, 0.0)
    s = safe_divide(relevance, ops.matmul(px, pk) + ops.matmul(nx, nk))
    return px * ops.matmul(s, ops.transpose(pk)) + nx * ops.matmul(s, ops.transpose(nk))


def _per_image_sum(t):
    return ops.sum(ops.reshape(t, (ops.shape(t)[0], -1)), axis=-1)


def add_relevance(relevance, a, b):
    """(relevance of a, relevance of b) for the sum a + b, each rescaled per image."""
    s = safe_divide(relevance, a + b)
    ra, rb = a * s, b * s
    a_sum, b_sum, total = _per_image_sum(ra), _per_image_sum(rb), _per_image_sum(relevance)
    both = ops.abs(a_sum) + ops.abs(b_sum)
    shape = (-1,) + (1,) * (len(relevance.shape) - 1)
    ra = ra * ops.reshape(safe_divide(safe_divide(ops.abs(a_sum), both) * total, a_sum), shape)
    rb = rb * ops.reshape(safe_divide(safe_divide(ops.abs(b_sum), both) * total, b_sum), shape)
    return ra, rb


def fork_relevance(x, r1, r2):
    """The relevance of ``x`` that fed two branches with relevances r1 and r2."""
    return x * (safe_divide(r1, x) + safe_divide(r2, x))


def _heads(t, num_heads):
    b, n, d = ops.shape(t)[0], t.shape[1], t.shape[2]
    return ops.transpose(ops.reshape(t, (b, n, num_heads, d // num_heads)), (0, 2, 1, 3))


def _merge(t):
    b, h, n, d = ops.shape(t)[0], t.shape[1], t.shape[2], t.shape[3]
    return ops.reshape(ops.transpose(t, (0, 2, 1, 3)), (b, n, h * d))


def block_relevance(block, x, attention, relevance):
    """(relevance of the block's input, relevance of its attention probabilities) from the
    relevance of its output, recomputing its activations from its input ``x``."""
    n = x.shape[1]
    tokens = block.norm1(x)
    q, k, v = block._project_qkv(tokens, n)
    heads_out = ops.matmul(attention, v)
    merged = _merge(heads_out)
    attended = block.proj(merged)
    middle = x + attended
    normed = block.norm2(middle)
    hidden = block.mlp.fc1(normed)
    activated = _activation(hidden, block.mlp.kind)
    out_mlp = block.mlp.fc2(activated)
    # second residual: middle + mlp(norm2(middle))
    r_middle, r_mlp = add_relevance(relevance, middle, out_mlp)
    r_mlp = linear_relevance(r_mlp, activated, block.mlp.fc2.kernel)
    r_mlp = linear_relevance(r_mlp, normed, block.mlp.fc1.kernel)
    relevance = fork_relevance(middle, r_middle, r_mlp)
    # first residual: x + attn(norm1(x))
    r_x, r_attended = add_relevance(relevance, x, attended)
    r_heads = _heads(linear_relevance(r_attended, merged, block.proj.kernel), block.num_heads)
    s = safe_divide(r_heads, heads_out)
    r_attention = attention * ops.matmul(s, ops.transpose(v, (0, 1, 3, 2))) / 2
    r_v = v * ops.matmul(ops.transpose(attention, (0, 1, 3, 2)), s) / 2
    s = safe_divide(r_attention, ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))))
    r_q = q * ops.matmul(s, k) / 2
    r_k = k * ops.matmul(ops.transpose(s, (0, 1, 3, 2)), q) / 2
    r_qkv = ops.concatenate([_merge(r_q), _merge(r_k), _merge(r_v)], axis=-1)
    r_tokens = linear_relevance(r_qkv, tokens, block.qkv.kernel)
    return fork_relevance(x, r_x, r_tokens), r_attention


def transformer_attribution_row(model, block_inputs, attentions, gradients, features, target):
    """(B, N): the class token's row of the transformer attribution (see the module docstring).

    Args:
        model: the `VisionTransformer` (its blocks' and head's weights).
        block_inputs: each block's input tokens (B, N, D), first block first.
        attentions, gradients: each block's softmax attention and its gradient (B, heads, N, N).
        features: (B, D) the class token after the final norm (the head's input).
        target: (B,) the explained class.
    """
    head = model.heads[0]
    relevance = ops.one_hot(target, head.kernel.shape[-1], dtype="float32")
    relevance = linear_relevance(relevance, features, head.kernel)
    n = block_inputs[0].shape[1]
    relevance = ops.concatenate(  # the class-token selection; the final norm passes it unchanged
        [ops.expand_dims(ops.where(ops.not_equal(features, 0), relevance, 0.0), 1), ops.zeros_like(block_inputs[-1][:, 1:])],
        axis=1,
    )
    cams = [None] * len(model.blocks)
    for i in reversed(range(len(model.blocks))):
        relevance, cams[i] = block_relevance(model.blocks[i], block_inputs[i], attentions[i], relevance)
    eye = ops.eye(n, dtype="float32")
    row = ops.broadcast_to(ops.one_hot(0, n, dtype="float32"), (ops.shape(features)[0], n))
    for cam, grad in zip(reversed(cams), reversed(gradients)):
        row = ops.squeeze(ops.matmul(ops.expand_dims(row, 1), ops.mean(ops.relu(grad * cam), axis=1) + eye), 1)
    return row
