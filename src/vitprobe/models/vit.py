"""One Keras 3 Vision Transformer for the whole family, built from a `ViTSpec`.

Only `keras.ops` is used, so the same code runs on the tensorflow, jax and torch
backends. Every weight is named after its timm state-dict key (``blocks.3.attn.qkv.weight``)
and stored in Keras layout (dense kernels as (in, out)); `vitprobe.weights` converts.
The forward pass returns the logits and the softmax attention of every block, and on request
every block's output tokens.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from ..hardware import bfloat16_matmul_dtype
from .spec import ViTSpec


def _zeros(layer: keras.layers.Layer, registry: dict, name: str, shape, dtype: str = "float32") -> keras.Variable:
    var = layer.add_weight(shape=tuple(shape), initializer="zeros", name=name.replace(".", "_"), dtype=dtype)
    registry[name] = var
    return var


class _Dense:
    """Weights of a dense projection; the layer that owns them runs the matmul.

    ``compute_dtype`` bfloat16 stores the kernel in bfloat16 and rounds the input to it; the
    bias add and everything after stay float32. The product runs in bfloat16 (float32
    accumulation, output rounded once) where the hardware has it (AMX or AVX512_BF16 CPUs,
    GPUs); elsewhere the rounded operands are multiplied in float32, which gives the same
    products exactly, is faster than emulated bfloat16 kernels and avoids TensorFlow's Eigen
    fallback, which truncates the output to bfloat16 (see `vitprobe.hardware`)."""

    def __init__(self, layer, registry, name, d_in, d_out, bias=True, compute_dtype="float32"):
        self.kernel = _zeros(layer, registry, f"{name}.weight", (d_in, d_out), compute_dtype)
        self.bias = _zeros(layer, registry, f"{name}.bias", (d_out,)) if bias else None
        self.compute_dtype = compute_dtype
        self.matmul_dtype = "float32" if compute_dtype == "float32" else bfloat16_matmul_dtype()

    def __call__(self, x):
        x, kernel = ops.cast(x, self.compute_dtype), self.kernel
        if self.matmul_dtype != self.compute_dtype:
            x, kernel = ops.cast(x, self.matmul_dtype), ops.cast(kernel, self.matmul_dtype)
        y = ops.matmul(x, kernel)
        y = ops.cast(y, "float32")
        return y + self.bias if self.bias is not None else y


class _LayerNorm:
    def __init__(self, layer, registry, name, dim, eps):
        self.gamma = _zeros(layer, registry, f"{name}.weight", (dim,))
        self.beta = _zeros(layer, registry, f"{name}.bias", (dim,))
        self.eps = eps

    def __call__(self, x):
        mean = ops.mean(x, axis=-1, keepdims=True)
        var = ops.mean(ops.square(x - mean), axis=-1, keepdims=True)
        return (x - mean) * ops.rsqrt(var + self.eps) * self.gamma + self.beta


class TransformerBlock(keras.layers.Layer):
    """Pre-norm block: x + ls1(attn(norm1(x))), then x + ls2(mlp(norm2(x)))."""

    def __init__(self, spec: ViTSpec, index: int, registry: dict, precision: str = "float32", **kwargs):
        super().__init__(name=f"block_{index}", **kwargs)
        p, d = f"blocks.{index}", spec.embed_dim
        self.num_heads, self.head_dim = spec.num_heads, spec.head_dim
        self.scale = spec.head_dim**-0.5
        self.norm1 = _LayerNorm(self, registry, f"{p}.norm1", d, spec.norm_eps)
        self.qkv = _Dense(self, registry, f"{p}.attn.qkv", d, 3 * d, bias=spec.qkv_bias, compute_dtype=precision)
        self.proj = _Dense(self, registry, f"{p}.attn.proj", d, d, compute_dtype=precision)
        self.norm2 = _LayerNorm(self, registry, f"{p}.norm2", d, spec.norm_eps)
        self.fc1 = _Dense(self, registry, f"{p}.mlp.fc1", d, spec.mlp_dim, compute_dtype=precision)
        self.fc2 = _Dense(self, registry, f"{p}.mlp.fc2", spec.mlp_dim, d, compute_dtype=precision)
        if spec.layer_scale:
            self.ls1 = _zeros(self, registry, f"{p}.ls1.gamma", (d,))
            self.ls2 = _zeros(self, registry, f"{p}.ls2.gamma", (d,))
        else:
            self.ls1 = self.ls2 = None

    def call(self, x, attend=None):
        """``(x, attention)``; ``attend(q, k, v) -> (heads, attention)`` replaces the softmax
        attention (a fused kernel that returns statistics instead of the probabilities)."""
        n = ops.shape(x)[1]
        qkv = ops.reshape(self.qkv(self.norm1(x)), (-1, n, 3, self.num_heads, self.head_dim))
        qkv = ops.transpose(qkv, (2, 0, 3, 1, 4))  # (3, B, heads, N, head_dim)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        if attend is None:
            attn = ops.softmax(ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))), axis=-1)
            heads = ops.matmul(attn, v)
        else:
            heads, attn = attend(q, k, v)
        y = ops.reshape(ops.transpose(heads, (0, 2, 1, 3)), (-1, n, self.num_heads * self.head_dim))
        y = self.proj(y)
        x = x + (y * self.ls1 if self.ls1 is not None else y)
        y = self.fc2(ops.gelu(self.fc1(self.norm2(x)), approximate=False))
        x = x + (y * self.ls2 if self.ls2 is not None else y)
        return x, attn


class VisionTransformer(keras.Model):
    """The ViT family. ``call(images)`` takes (B, H, W, 3) float images, already normalised,
    and returns ``{"attentions": [(B, heads, N, N)] * depth, "logits": (B, classes),
    "head_logits": [(B, classes)] per head}`` (the logit keys only with a head).
    ``call(images, return_block_outputs=True)`` adds ``"block_outputs": [(B, N, dim)] * depth``,
    each block's output tokens (the residual stream after the block, before the final norm: what
    timm's ``forward_intermediates`` returns). Off by default: a compiled program that returns
    them copies them off the device.

    ``precision``: the dtype of the blocks' four projections (qkv, proj, fc1, fc2: nearly all of
    the FLOPs). The patch embedding, attention logits, softmax, norms and heads stay float32."""

    def __init__(self, spec: ViTSpec, precision: str = "float32", **kwargs):
        super().__init__(**kwargs)
        self.spec = spec
        self.precision = precision
        # timm state-dict key -> Keras variable; filled as the layers create weights.
        self.weights_by_name: dict[str, keras.Variable] = {}
        reg, d, p = self.weights_by_name, spec.embed_dim, spec.patch_size
        self.stem = keras.layers.Layer(name="stem")
        self.patch_kernel = _zeros(self.stem, reg, "patch_embed.proj.weight", (p * p * 3, d))
        self.patch_bias = _zeros(self.stem, reg, "patch_embed.proj.bias", (d,))
        self.cls_token = _zeros(self.stem, reg, "cls_token", (1, 1, d)) if spec.class_token else None
        self.dist_token = _zeros(self.stem, reg, "dist_token", (1, 1, d)) if spec.distill_token else None
        self.reg_token = (
            _zeros(self.stem, reg, "reg_token", (1, spec.num_register_tokens, d))
            if spec.num_register_tokens
            else None
        )
        self.pos_embed = _zeros(self.stem, reg, "pos_embed", (1, spec.num_pos_prefix + spec.num_patches, d))
        self.blocks = [TransformerBlock(spec, i, reg, precision) for i in range(spec.depth)]
        self.top = keras.layers.Layer(name="top")
        self.norm = _LayerNorm(self.top, reg, "norm", d, spec.norm_eps) if spec.final_norm else None
        self.heads = []
        if spec.num_classes:
            self.heads.append(_Dense(self.top, reg, "head", d, spec.num_classes))
            if spec.distill_token:
                self.heads.append(_Dense(self.top, reg, "head_dist", d, spec.num_classes))
        self.build((None, spec.image_size, spec.image_size, 3))

    def build(self, input_shape):
        self.built = True

    def _embed_patches(self, images):
        s = self.spec
        g, p = s.grid_size, s.patch_size
        # (B, g*p, g*p, 3) -> (B, g*g, p*p*3) in (row, col, channel) order, then one matmul:
        # the same as a stride-p convolution, and cheaper on every backend.
        x = ops.reshape(images, (-1, g, p, g, p, 3))
        x = ops.reshape(ops.transpose(x, (0, 1, 3, 2, 4, 5)), (-1, g * g, p * p * 3))
        return ops.matmul(x, self.patch_kernel) + self.patch_bias

    def _add_prefix_and_positions(self, x):
        batch = ops.shape(x)[0]
        prefix = [t for t in (self.cls_token, self.dist_token, self.reg_token) if t is not None]
        prefix = [ops.broadcast_to(t, (batch, t.shape[1], self.spec.embed_dim)) for t in prefix]
        if self.spec.pos_embed_covers_prefix:
            return ops.concatenate(prefix + [x], axis=1) + self.pos_embed
        return ops.concatenate(prefix + [x + self.pos_embed], axis=1)

    def call(self, images, attend=None, return_block_outputs: bool = False):
        """``attend``: see `TransformerBlock.call`; with it, ``attentions`` holds what it returns."""
        x = self._add_prefix_and_positions(self._embed_patches(images))
        attentions, block_outputs = [], []
        for block in self.blocks:
            x, attn = block(x, attend=attend)
            attentions.append(attn)
            block_outputs.append(x)
        out = {"attentions": attentions}
        if return_block_outputs:
            out["block_outputs"] = block_outputs
        if self.norm is not None:
            x = self.norm(x)
        if self.heads:
            # Token pooling: head i reads prefix token i (CLS, then the distillation token).
            head_logits = [head(x[:, i]) for i, head in enumerate(self.heads)]
            out["head_logits"] = head_logits
            out["logits"] = head_logits[0] if len(head_logits) == 1 else ops.mean(ops.stack(head_logits), axis=0)
        return out


def init_random(model: VisionTransformer, seed: int) -> None:
    """Seeded random initialisation (the untrained baseline), the same on every backend.

    Follows timm's scheme: truncated normal (std 0.02) for projections and position
    embeddings, unit LayerNorm, zero biases, tiny class tokens, layer-scale 1e-5.
    """
    rng = np.random.default_rng(seed)
    for name in sorted(model.weights_by_name):
        var = model.weights_by_name[name]
        shape = tuple(var.shape)
        if name.endswith(("norm1.weight", "norm2.weight")) or name == "norm.weight":
            value = np.ones(shape)
        elif name.endswith(".bias"):
            value = np.zeros(shape)
        elif name.endswith(".gamma"):
            value = np.full(shape, 1e-5)
        elif name in ("cls_token", "dist_token", "reg_token"):
            value = rng.normal(0.0, 1e-6, shape)
        else:
            value = np.clip(rng.normal(0.0, 0.02, shape), -0.04, 0.04)
        var.assign(value.astype(np.float32))
