"""One Keras 3 Vision Transformer for the whole family, built from a `ViTSpec`.

Only `keras.ops` is used, so the same code runs on the tensorflow, jax and torch
backends. Every weight is named after its timm state-dict key (``blocks.3.attn.qkv.weight``)
and stored in Keras layout (dense kernels as (in, out)); `vitprobe.weights` converts.
The forward pass returns the logits and the softmax attention of every block, and on request
every block's output tokens.
"""

from __future__ import annotations

import keras
from keras import ops

from ..hardware import bfloat16_matmul_dtype
from .pos_embed import relative_position_index, relative_position_table_size, rotary_sin_cos
from .random_init import random_weight
from .spec import ViTSpec


def _zeros(layer: keras.layers.Layer, registry: dict, name: str, shape, dtype: str = "float32") -> keras.Variable:
    var = layer.add_weight(shape=tuple(shape), initializer="zeros", name=name.replace(".", "_"), dtype=dtype)
    registry[name] = var
    return var


def _add_bias(y, bias):
    """``y + bias``. On TensorFlow as a BiasAdd op: its graph optimizer fuses MatMul + BiasAdd (+ the
    GELU after it) into one oneDNN kernel only in that form, which saves the GELU's passes over
    the (tokens, mlp_dim) activation (about 4% of a ViT-B/16 forward on an Ice Lake Xeon); an
    ordinary add leaves them unfused. The sums are the same float32 additions either way."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.nn.bias_add(y, bias)
    return y + bias


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
        """x @ kernel + bias over the last axis; the matmul runs on the tokens flattened to 2-D
        (a plain matrix product, which the bias add and an activation after it can fuse with)."""
        shape = ops.shape(x)
        x, kernel = ops.cast(x, self.compute_dtype), self.kernel
        if len(shape) != 2:
            x = ops.reshape(x, (-1, shape[-1]))
        if self.matmul_dtype != self.compute_dtype:
            x, kernel = ops.cast(x, self.matmul_dtype), ops.cast(kernel, self.matmul_dtype)
        y = ops.cast(ops.matmul(x, kernel), "float32")
        if self.bias is not None:
            y = _add_bias(y, self.bias)
        return y if len(shape) == 2 else ops.reshape(y, (*shape[:-1], -1))


class _LayerNorm:
    def __init__(self, layer, registry, name, dim, eps):
        self.gamma = _zeros(layer, registry, f"{name}.weight", (dim,))
        self.beta = _zeros(layer, registry, f"{name}.bias", (dim,))
        self.eps = eps

    def __call__(self, x):
        mean = ops.mean(x, axis=-1, keepdims=True)
        var = ops.mean(ops.square(x - mean), axis=-1, keepdims=True)
        return (x - mean) * ops.rsqrt(var + self.eps) * self.gamma + self.beta


def _activation(x, kind: str):
    if kind == "quick_gelu":  # OpenAI CLIP's approximation, which its weights were trained with
        return x * ops.sigmoid(1.702 * x)
    return ops.gelu(x, approximate=kind == "gelu_tanh")


class _Mlp:
    """fc2(act(fc1(x))); EVA-02's SwiGLU: fc2(norm(silu(fc1_g(x)) * fc1_x(x))); the packed SwiGLU
    (DINOv2-g, EVA-02 Ti/S): fc1 of twice the hidden width, its first half the gate g and its
    second the value v, fc2(silu(g) * v)."""

    def __init__(self, layer, registry, name, spec: ViTSpec, precision: str):
        d, hidden, self.kind = spec.embed_dim, spec.mlp_dim, spec.mlp
        if self.kind == "swiglu":
            self.gate = _Dense(layer, registry, f"{name}.fc1_g", d, hidden, compute_dtype=precision)
            self.fc1 = _Dense(layer, registry, f"{name}.fc1_x", d, hidden, compute_dtype=precision)
            self.norm = _LayerNorm(layer, registry, f"{name}.norm", hidden, spec.norm_eps)
        else:
            packed = 2 if self.kind == "swiglu_packed" else 1
            self.fc1 = _Dense(layer, registry, f"{name}.fc1", d, packed * hidden, compute_dtype=precision)
        self.fc2 = _Dense(layer, registry, f"{name}.fc2", hidden, d, compute_dtype=precision)
        self.hidden = hidden

    def __call__(self, x):
        shape = ops.shape(x)
        x = ops.reshape(x, (-1, shape[-1]))  # 2-D throughout: fc1, its bias and the GELU fuse (`_add_bias`)
        if self.kind == "swiglu":
            y = self.fc2(self.norm(ops.silu(self.gate(x)) * self.fc1(x)))
        elif self.kind == "swiglu_packed":
            h = self.fc1(x)
            y = self.fc2(ops.silu(h[:, : self.hidden]) * h[:, self.hidden :])
        else:
            y = self.fc2(_activation(self.fc1(x), self.kind))
        return ops.reshape(y, shape)


class TransformerBlock(keras.layers.Layer):
    """Pre-norm block: x + ls1(attn(norm1(x))), then x + ls2(mlp(norm2(x))).

    The spec decides how q, k and v are projected (`ViTSpec.qkv_layout`), whether the patch
    queries and keys are rotated (EVA-02's rotary embedding) and whether a learned relative
    position bias is added to the attention logits (BEiT); the returned attention is the
    softmax of the logits with that bias, i.e. what the block really attends with."""

    def __init__(self, spec: ViTSpec, index: int, registry: dict, precision: str = "float32", **kwargs):
        super().__init__(name=f"block_{index}", **kwargs)
        self.index = index
        p, d = f"blocks.{index}", spec.embed_dim
        self.num_heads, self.head_dim, self.num_prefix = spec.num_heads, spec.head_dim, spec.num_prefix_tokens
        self.scale = spec.head_dim**-0.5
        self.qkv_layout = spec.qkv_layout
        self.norm1 = _LayerNorm(self, registry, f"{p}.norm1", d, spec.norm_eps)
        if spec.qkv_layout == "separate":
            self.q_proj = _Dense(self, registry, f"{p}.attn.q_proj", d, d, bias=spec.qkv_bias, compute_dtype=precision)
            self.k_proj = _Dense(self, registry, f"{p}.attn.k_proj", d, d, bias=False, compute_dtype=precision)
            self.v_proj = _Dense(self, registry, f"{p}.attn.v_proj", d, d, bias=spec.qkv_bias, compute_dtype=precision)
        else:
            fused_bias = spec.qkv_bias and spec.qkv_layout == "fused"
            self.qkv = _Dense(self, registry, f"{p}.attn.qkv", d, 3 * d, bias=fused_bias, compute_dtype=precision)
            if spec.qkv_layout == "qv_bias":  # BEiT: the key has no bias
                self.q_bias = _zeros(self, registry, f"{p}.attn.q_bias", (d,))
                self.v_bias = _zeros(self, registry, f"{p}.attn.v_bias", (d,))
        self.proj = _Dense(self, registry, f"{p}.attn.proj", d, d, compute_dtype=precision)
        self.norm2 = _LayerNorm(self, registry, f"{p}.norm2", d, spec.norm_eps)
        self.mlp = _Mlp(self, registry, f"{p}.mlp", spec, precision)
        if spec.layer_scale:
            self.ls1, self.ls2 = (_zeros(self, registry, f"{p}.{key}", (d,)) for key in spec.layer_scale_keys)
        else:
            self.ls1 = self.ls2 = None
        self.rel_pos_table = None
        if spec.rel_pos_bias:
            size = relative_position_table_size(spec.grid_size)
            self.rel_pos_table = _zeros(self, registry, f"{p}.attn.relative_position_bias_table", (size, spec.num_heads))
            self.rel_pos_index = relative_position_index(spec.grid_size).reshape(-1)
        self.rope = rotary_sin_cos(spec.grid_size, spec.rope_grid or spec.grid_size, spec.head_dim) if spec.rope else None

    def _heads(self, x, n):
        return ops.transpose(ops.reshape(x, (-1, n, self.num_heads, self.head_dim)), (0, 2, 1, 3))

    def _project_qkv(self, x, n):
        """q, k, v as (B, heads, N, head_dim), unscaled."""
        if self.qkv_layout == "separate":
            return self._heads(self.q_proj(x), n), self._heads(self.k_proj(x), n), self._heads(self.v_proj(x), n)
        qkv = self.qkv(x)
        if self.qkv_layout == "qv_bias":
            qkv = qkv + ops.concatenate([self.q_bias, ops.zeros_like(self.q_bias), self.v_bias])
        qkv = ops.transpose(ops.reshape(qkv, (-1, n, 3, self.num_heads, self.head_dim)), (2, 0, 3, 1, 4))
        return qkv[0], qkv[1], qkv[2]

    def _rotate(self, x):
        """Rotary embedding of the patch tokens: x * cos + rot(x) * sin, rot(x) = (-x1, x0, -x3, x2, ...)."""
        sin, cos = (ops.convert_to_tensor(t) for t in self.rope)
        prefix, patches = x[:, :, : self.num_prefix], x[:, :, self.num_prefix :]
        pairs = ops.reshape(patches, (*ops.shape(patches)[:-1], self.head_dim // 2, 2))
        rotated = ops.reshape(ops.stack([-pairs[..., 1], pairs[..., 0]], axis=-1), ops.shape(patches))
        return ops.concatenate([prefix, patches * cos + rotated * sin], axis=2)

    def call(self, x, attend=None, return_logits: bool = False, probe=None):
        """``(x, attention)``; ``attend(q, k, v) -> (heads, attention)`` replaces the softmax
        attention (a fused kernel that returns statistics instead of the probabilities).
        ``return_logits`` (without ``attend``): ``(x, attention, logits)``, the logits the
        softmax took (bias included), from which the entropy follows without a logarithm per weight.
        ``probe(kind, block, tensor) -> tensor`` sees (and may replace) the block's input
        (``"input"``), the attention's input tokens (``"tokens"``, after norm1) and the softmax
        attention (``"attention"``): gradient methods add zeros there and differentiate with
        respect to them (`vitprobe.gradients`); relevance propagation reads the block's input."""
        n = ops.shape(x)[1]
        if probe is not None:
            x = probe("input", self.index, x)
        tokens = self.norm1(x)
        if probe is not None:
            tokens = probe("tokens", self.index, tokens)
        q, k, v = self._project_qkv(tokens, n)
        if self.rope is not None:
            q, k = self._rotate(q), self._rotate(k)
        q = q * self.scale
        if attend is None:
            logits = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2)))
            if self.rel_pos_table is not None:
                bias = ops.take(self.rel_pos_table, self.rel_pos_index, axis=0)  # (N*N, heads)
                logits = logits + ops.reshape(ops.transpose(bias), (1, self.num_heads, n, n))
            attn = ops.softmax(logits, axis=-1)
            if probe is not None:
                attn = probe("attention", self.index, attn)
            heads = ops.matmul(attn, v)
        elif self.rel_pos_table is not None:
            raise ValueError(
                "the fused attention kernel has no additive bias; BEiT's relative position bias needs the unfused path"
            )
        else:
            heads, attn = attend(q, k, v)
            logits = None
        y = ops.reshape(ops.transpose(heads, (0, 2, 1, 3)), (-1, n, self.num_heads * self.head_dim))
        y = self.proj(y)
        x = x + (y * self.ls1 if self.ls1 is not None else y)
        y = self.mlp(self.norm2(x))
        x = x + (y * self.ls2 if self.ls2 is not None else y)
        return (x, attn, logits) if return_logits else (x, attn)


class _AttentionPool:
    """SigLIP's attention-pooling (MAP) head, timm's ``attn_pool``: one learned query (``latent``)
    attends over all tokens with the model's heads; then proj, and x + mlp(norm(x)) (no
    residual around the attention: the latent is a query, not a token of the stream).
    Returns the pooled (B, D) features and the query's attention (B, heads, 1, N)."""

    def __init__(self, layer, registry, spec: ViTSpec):
        d, self.num_heads, self.head_dim = spec.embed_dim, spec.num_heads, spec.head_dim
        self.latent = _zeros(layer, registry, "attn_pool.latent", (1, 1, d))
        self.q = _Dense(layer, registry, "attn_pool.q", d, d)
        self.kv = _Dense(layer, registry, "attn_pool.kv", d, 2 * d)
        self.proj = _Dense(layer, registry, "attn_pool.proj", d, d)
        self.norm = _LayerNorm(layer, registry, "attn_pool.norm", d, spec.norm_eps)
        self.mlp = _Mlp(layer, registry, "attn_pool.mlp", spec, "float32")  # the blocks' activation, as timm's

    def __call__(self, x, probe=None):
        n = ops.shape(x)[1]
        q = ops.reshape(self.q(self.latent), (1, self.num_heads, 1, self.head_dim)) * self.head_dim**-0.5
        kv = ops.transpose(ops.reshape(self.kv(x), (-1, n, 2, self.num_heads, self.head_dim)), (2, 0, 3, 1, 4))
        attn = ops.softmax(ops.matmul(q, ops.transpose(kv[0], (0, 1, 3, 2))), axis=-1)  # (B, heads, 1, N)
        if probe is not None:
            attn = probe("attention", "pool", attn)
        pooled = self.proj(
            ops.reshape(ops.transpose(ops.matmul(attn, kv[1]), (0, 2, 1, 3)), (-1, self.num_heads * self.head_dim))
        )
        return pooled + self.mlp(self.norm(pooled)), attn


class VisionTransformer(keras.Model):
    """The ViT family. ``call(images)`` takes (B, H, W, 3) float images, already normalised,
    and returns ``{"attentions": [(B, heads, N, N)] * depth, "features": (B, D), "logits":
    (B, classes), "head_logits": [(B, classes)] per head, "embedding": (B, E)}``:

    - ``features``: the pooled representation before any head (timm's pre-logits: the class
      token, the mean of the patch tokens or the attention pool, after ``fc_norm``).
    - ``logits`` / ``head_logits``: only with a classifier head.
    - ``embedding``: only with a projection head (CLIP's image embedding).
    - A model with an attention-pooling head (SigLIP, `ViTSpec.has_pool_query`) appends its
      pooling query's attention, (B, heads, 1, N), to ``attentions`` after the blocks.
    - ``call(images, return_block_outputs=True)`` adds ``"block_outputs": [(B, N, dim)] * depth``,
      each block's output tokens (the residual stream after the block, before the final norm: what
      timm's ``forward_intermediates`` returns). Off by default: a compiled program that returns
      them copies them off the device.
    - ``call(images, return_attention_logits=True)`` adds ``"attention_logits": [(B, heads, N, N)] *
      depth``, the logits each block's softmax took (not with ``attend``; not the pooling query's).

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
        self.patch_bias = _zeros(self.stem, reg, "patch_embed.proj.bias", (d,)) if spec.patch_bias else None
        self.cls_token = _zeros(self.stem, reg, "cls_token", (1, 1, d)) if spec.class_token else None
        self.dist_token = _zeros(self.stem, reg, "dist_token", (1, 1, d)) if spec.distill_token else None
        self.reg_token = (
            _zeros(self.stem, reg, "reg_token", (1, spec.num_register_tokens, d)) if spec.num_register_tokens else None
        )
        self.pos_embed = (
            _zeros(self.stem, reg, "pos_embed", (1, spec.num_pos_prefix + spec.num_patches, d)) if spec.abs_pos_embed else None
        )
        self.norm_pre = _LayerNorm(self.stem, reg, "norm_pre", d, spec.norm_eps) if spec.pre_norm else None
        self.blocks = [TransformerBlock(spec, i, reg, precision) for i in range(spec.depth)]
        self.top = keras.layers.Layer(name="top")
        self.norm = _LayerNorm(self.top, reg, "norm", d, spec.norm_eps) if spec.final_norm else None
        self.attn_pool = _AttentionPool(self.top, reg, spec) if spec.pool == "map" else None
        self.fc_norm = _LayerNorm(self.top, reg, "fc_norm", d, spec.norm_eps) if spec.fc_norm else None
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
        x = ops.matmul(x, self.patch_kernel)
        return x + self.patch_bias if self.patch_bias is not None else x

    def _add_prefix_and_positions(self, x):
        batch = ops.shape(x)[0]
        prefix = [t for t in (self.cls_token, self.dist_token, self.reg_token) if t is not None]
        prefix = [ops.broadcast_to(t, (batch, t.shape[1], self.spec.embed_dim)) for t in prefix]
        if self.pos_embed is None:
            return ops.concatenate(prefix + [x], axis=1)
        if self.spec.pos_embed_covers_prefix:
            return ops.concatenate(prefix + [x], axis=1) + self.pos_embed
        return ops.concatenate(prefix + [x + self.pos_embed], axis=1)

    def _embed(self, images):
        x = self._add_prefix_and_positions(self._embed_patches(images))
        return self.norm_pre(x) if self.norm_pre is not None else x

    def _pool_and_heads(self, x, out: dict, probe=None) -> None:
        """Final norm, pooling and heads on the last block's tokens, into ``out``."""
        s = self.spec
        if self.norm is not None:
            x = self.norm(x)
        if s.pool == "map":
            pooled, pool_attention = self.attn_pool(x, probe)
            out["attentions"].append(pool_attention)
        elif s.pool == "avg":
            pooled = ops.mean(x[:, s.num_prefix_tokens :], axis=1)
        else:
            pooled = x[:, 0]
        out["features"] = self.fc_norm(pooled) if self.fc_norm is not None else pooled
        if s.head_is_projection:
            out["embedding"] = self.heads[0](out["features"])
        elif self.heads:
            # Head i reads prefix token i (CLS, then the distillation token); a pooled model has one head.
            inputs = [out["features"]] + [x[:, i] for i in range(1, len(self.heads))]
            head_logits = [head(t) for head, t in zip(self.heads, inputs)]
            out["head_logits"] = head_logits
            out["logits"] = head_logits[0] if len(head_logits) == 1 else ops.mean(ops.stack(head_logits), axis=0)

    def call(self, images, attend=None, return_block_outputs: bool = False, return_attention_logits: bool = False, probe=None):
        """``attend``: see `TransformerBlock.call`; with it, ``attentions`` holds what it returns.
        ``probe``: see `TransformerBlock.call`; the pooling query's attention reaches it as block
        ``"pool"``."""
        if attend is not None and return_attention_logits:
            raise ValueError("attention logits come from the unfused attention only, not with attend")
        x = self._embed(images)
        attentions, block_outputs, logits = [], [], []
        for block in self.blocks:
            if return_attention_logits:
                x, attn, block_logits = block(x, return_logits=True, probe=probe)
                logits.append(block_logits)
            else:
                x, attn = block(x, attend=attend, probe=probe)
            attentions.append(attn)
            block_outputs.append(x)
        out = {"attentions": attentions}
        if return_block_outputs:
            out["block_outputs"] = block_outputs
        if return_attention_logits:
            out["attention_logits"] = logits
        self._pool_and_heads(x, out, probe)
        return out


def init_random(model: VisionTransformer, seed: int) -> None:
    """Seeded random initialisation (the untrained baseline), the same on every backend: each
    weight from `random_weight`."""
    for name, var in model.weights_by_name.items():
        var.assign(random_weight(name, tuple(var.shape), seed, model.spec.layer_scale_keys))
