"""Compiled programs: how each backend compiles a Keras model, the program that runs an
`AttentionReducer` (and a `RepresentationReducer`), either after a ViT (the attention and the block
outputs never leave the device) or over stored attention, and the plain forward pass that also
returns what the reducers would read. Imports Keras but not the model stack."""

from __future__ import annotations

import keras

from .metrics.attention import AttentionReducer
from .metrics.representations import RepresentationReducer


def compile_for_backend(model: keras.Model) -> None:
    # jax.jit on jax; a tf.function graph on tensorflow (its bfloat16 matmuls use oneDNN's AMX
    # kernels, which XLA's CPU backend does not, and float32 runs as fast as under XLA); the
    # torch backend runs eagerly.
    model.compile(jit_compile=keras.backend.backend() == "jax")


class ReducingProgram(keras.Model):
    """``reducer`` over the attention of ``backbone(images)`` (with the backbone's logits), or,
    without a backbone, over a stored (B, blocks, heads, N, N) attention array; with
    ``representations`` (a backbone only), that reducer over the blocks' output tokens too.
    Returns ``{"reductions": ..., "representations": ..., "logits": ...}`` (representations only
    when asked, logits only from a backbone with a head)."""

    def __init__(self, reducer: AttentionReducer, backbone: keras.Model | None = None,
                 representations: RepresentationReducer | None = None, **kwargs):
        super().__init__(**kwargs)
        if representations is not None and backbone is None:
            raise ValueError("representations need a backbone: stored attention holds no block outputs")
        self.reducer, self.backbone, self.representations = reducer, backbone, representations
        compile_for_backend(self)

    def call(self, inputs):
        if self.backbone is None:
            attention = keras.ops.cast(inputs, "float32")
            return {"reductions": self.reducer([attention[:, block] for block in range(attention.shape[1])])}
        out = self.backbone(inputs, return_block_outputs=self.representations is not None)
        result = {"reductions": self.reducer(out["attentions"])}
        if self.representations is not None:
            result["representations"] = self.representations(out["block_outputs"])
        if "logits" in out:
            result["logits"] = out["logits"]
        return result


class ForwardProgram(keras.Model):
    """``backbone(images)`` with every block's output tokens, and with ``representations`` that
    reducer's statistics of them (``"representations"``): the plain forward pass of a ViT whose
    default call leaves the block outputs on the device."""

    def __init__(self, backbone: keras.Model, representations: RepresentationReducer | None = None, **kwargs):
        super().__init__(**kwargs)
        self.backbone, self.representations = backbone, representations
        compile_for_backend(self)

    def call(self, inputs):
        out = dict(self.backbone(inputs, return_block_outputs=True))
        if self.representations is not None:
            out["representations"] = self.representations(out["block_outputs"])
        return out
