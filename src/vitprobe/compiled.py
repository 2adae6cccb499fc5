"""Compiled programs: how each backend compiles a Keras model, the program that runs an
`AttentionReducer` (and a `RepresentationReducer`), either after a ViT (the attention and the block
outputs never leave the device) or over stored attention, and the plain forward pass that also
returns what the reducers would read. Imports Keras but not the model stack."""

from __future__ import annotations

import keras
import numpy as np

from .backends import compile_modes
from .data.preprocess import Preprocess, normalize
from .hardware import accelerator
from .metrics.attention import AttentionReducer
from .metrics.representations import RepresentationReducer


def compile_for_backend(model: keras.Model, mode: str | None = None) -> None:
    """Compile ``model`` for prediction in ``mode`` (one of `vitprobe.backends.compile_modes`;
    None: the backend's default)."""
    modes = compile_modes(keras.backend.backend())
    mode = mode or modes[0]
    if mode not in modes:
        raise ValueError(f"compile mode {mode!r} is not one of the {keras.backend.backend()} backend's: {', '.join(modes)}")
    model.compile(jit_compile=mode in ("xla", "jit"))


def fused_attention_applies(reducer: AttentionReducer) -> bool:
    """Whether the fused attention kernel computes this reducer's outputs: on the jax backend, for
    mean head fusion without discarding (other settings need every attention matrix)."""
    return keras.backend.backend() == "jax" and reducer.head_fusion == "mean" and reducer.discard_ratio == 0


ATTENTION_KERNELS = ("auto", "unfused", "fused")


def attention_kernel_is_fused(choice: str, reducer: AttentionReducer) -> bool:
    """Resolve ``extract.attention_kernel`` (`ATTENTION_KERNELS`) for this reducer and machine;
    ``"fused"`` where it cannot apply is a ValueError naming why."""
    if choice not in ATTENTION_KERNELS:
        raise ValueError(f"attention_kernel must be one of {', '.join(ATTENTION_KERNELS)}, got {choice!r}")
    if choice == "fused" and not fused_attention_applies(reducer):
        raise ValueError(
            "attention_kernel 'fused' needs KERAS_BACKEND=jax, head_fusion 'mean' and discard_ratio 0 "
            f"(backend {keras.backend.backend()}, head_fusion {reducer.head_fusion!r}, discard_ratio {reducer.discard_ratio})"
        )
    return choice == "fused" or (choice == "auto" and fused_attention_applies(reducer) and accelerator())


def normalize_pixels(pixels, mean, std):
    """uint8 (B, H, W, 3) crops -> float32 model input inside a compiled program, looked up in a
    table of `vitprobe.data.preprocess.normalize`'s own values (256 per channel): bit-identical to
    the host's normalisation on every backend and compile mode, where the same arithmetic in the
    program is rewritten by the graph optimizers (1-2 ulp apart in TensorFlow's graph and XLA).
    The host then sends a quarter of the bytes and does no per-pixel work (on a GPU it could not
    keep up)."""
    levels = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)[None, None]  # (1, 1, 256, 3)
    table = normalize(levels, Preprocess(mean=mean, std=std)).reshape(-1)  # index: value * 3 + channel
    index = keras.ops.cast(pixels, "int32") * 3 + keras.ops.arange(3, dtype="int32")
    return keras.ops.take(keras.ops.convert_to_tensor(table), index)


def final_patch_tokens(backbone: keras.Model, last_block_output):
    """(B, patches, dim) the last block's patch tokens after the model's final LayerNorm, where it
    has one (what timm's ``forward_features`` returns, less the prefix tokens; BEiT and EVA-02
    have none): the features the DINOv2 PCA views read."""
    tokens = backbone.norm(last_block_output) if backbone.norm is not None else last_block_output
    return tokens[:, backbone.spec.num_prefix_tokens :]


class ReducingProgram(keras.Model):
    """``reducer`` over the attention of ``backbone(images)`` (with the backbone's logits), or,
    without a backbone, over a stored (B, blocks, heads, N, N) attention array; with
    ``representations`` (a backbone only), that reducer over the blocks' output tokens too.
    Returns ``{"reductions": ..., "representations": ..., "logits": ...}`` (representations only
    when asked, logits only from a backbone with a head).

    ``map_images`` k > 0 (a backbone only): the first k images of every batch are also returned
    as what the map-image stages read, ``"map_features"`` (k, patches, dim; `final_patch_tokens`)
    and ``"map_attention"`` (k, blocks, heads, N, N), so that the extract job holding the map
    images needs no second program (a job whose batches hold fewer ignores the rest).

    ``fused`` (jax only, see `fused_attention_applies`): the backbone's attention runs as the
    fused Pallas kernel of `vitprobe.kernels.fused_attention`, which returns the reductions'
    row statistics instead of the probabilities; ``interpret`` runs that kernel in Pallas'
    interpreter (the CPU tests). ``pixels``: the (mean, std) with which the program normalises
    uint8 crops itself (`normalize_pixels`); None: it takes normalised float32 images.
    ``compile_mode``: see `compile_for_backend`."""

    def __init__(
        self,
        reducer: AttentionReducer,
        backbone: keras.Model | None = None,
        representations: RepresentationReducer | None = None,
        *,
        fused: bool = False,
        interpret: bool = False,
        pixels: tuple | None = None,
        compile_mode: str | None = None,
        map_images: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if (representations is not None or map_images) and backbone is None:
            raise ValueError("representations and map images need a backbone: stored attention holds no block outputs")
        if fused and not (backbone is not None and fused_attention_applies(reducer)):
            raise ValueError("the fused attention kernel needs the jax backend, a backbone, mean head fusion and no discarding")
        self.reducer, self.backbone, self.representations = reducer, backbone, representations
        self.fused, self.interpret, self.pixels, self.map_images = fused, interpret, pixels, map_images
        compile_for_backend(self, compile_mode)

    def call(self, inputs):
        if self.pixels is not None:
            inputs = normalize_pixels(inputs, *self.pixels)
        if self.backbone is None:
            attention = keras.ops.cast(inputs, "float32")
            return {"reductions": self.reducer([attention[:, block] for block in range(attention.shape[1])])}
        k = self.map_images
        blocks = self.representations is not None or k > 0
        if self.fused:
            from .kernels.fused_attention import FusedReductions  # jax only

            r = self.reducer
            attend = FusedReductions(r.num_prefix, r.grid, r.patch_size, r.renormalize, self.interpret, map_images=k)
            out = self.backbone(inputs, attend=attend, return_block_outputs=blocks)
            result = {"reductions": attend.reductions()}
            map_attention = attend.map_attention
        else:
            out = self.backbone(inputs, return_block_outputs=blocks, return_attention_logits=True)
            result = {"reductions": self.reducer(out["attentions"], out["attention_logits"])}
            map_attention = [a[:k] for a in out["attentions"][: len(out["block_outputs"])]] if k else []
        if self.representations is not None:
            result["representations"] = self.representations(out["block_outputs"])
        if k:
            result["map_features"] = final_patch_tokens(self.backbone, out["block_outputs"][-1][:k])
            result["map_attention"] = keras.ops.stack(map_attention, axis=1)
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
