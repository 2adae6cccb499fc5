"""Compiled programs: how each backend compiles a Keras model, and the one program that runs an
`AttentionReducer`, either after a ViT (the attention never leaves the device) or over stored
attention. Imports Keras but not the model stack."""

from __future__ import annotations

import keras

from .metrics.attention import AttentionReducer


def compile_for_backend(model: keras.Model) -> None:
    # jax.jit on jax; a tf.function graph on tensorflow (its bfloat16 matmuls use oneDNN's AMX
    # kernels, which XLA's CPU backend does not, and float32 runs as fast as under XLA); the
    # torch backend runs eagerly.
    model.compile(jit_compile=keras.backend.backend() == "jax")


class ReducingProgram(keras.Model):
    """``reducer`` over the attention of ``backbone(images)`` (with the backbone's logits), or,
    without a backbone, over a stored (B, blocks, heads, N, N) attention array.
    Returns ``{"reductions": ..., "logits": ...}`` (logits only from a backbone with a head)."""

    def __init__(self, reducer: AttentionReducer, backbone: keras.Model | None = None, **kwargs):
        super().__init__(**kwargs)
        self.reducer, self.backbone = reducer, backbone
        compile_for_backend(self)

    def call(self, inputs):
        if self.backbone is None:
            attention = keras.ops.cast(inputs, "float32")
            return {"reductions": self.reducer([attention[:, block] for block in range(attention.shape[1])])}
        out = self.backbone(inputs)
        result = {"reductions": self.reducer(out["attentions"])}
        if "logits" in out:
            result["logits"] = out["logits"]
        return result
