"""Compiled programs: how each backend compiles a Keras model, the program that runs an
`AttentionReducer` (and a `RepresentationReducer`), either after a ViT (the attention and the block
outputs never leave the device) or over stored attention, and the plain forward pass that also
returns what the reducers would read. Imports Keras but not the model stack."""

from __future__ import annotations

import keras
import numpy as np

from .backends import compile_modes
from .data.preprocess import Preprocess, normalize
from .gradients import value_and_offset_gradients
from .hardware import accelerator
from .metrics.attention import AttentionReducer, rollout_cls_row
from .metrics.attribution import (
    METHODS,
    cls_attention_row,
    gae_row,
    grad_rollout_row,
    gradcam_map,
    patch_map,
    target_scores,
)
from .metrics.relevance import transformer_attribution_row
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


class AttributionProgram(keras.Model):
    """Class-specific attribution maps (`vitprobe.metrics.attribution`) of ``backbone`` for a batch,
    in one forward and one backward pass: the gradient of each image's target score (summed over
    the batch: an image's score depends on its own input only) with respect to every block's
    softmax attention and, for ``gradcam``, the last block's input tokens. Inputs: ``{"images",
    "targets", "concepts"}`` (see `vitprobe.metrics.attribution.target_scores`); returns the
    ``methods``' (B, gh, gw) maps (``random`` excepted: the host draws it), ``"score"`` and
    ``"target"``. No attention leaves the program.

    ``rollout``: the plain rollout's (head_fusion, discard_ratio); ``discard_ratio``: the gradient
    rollout's. ``pixels``, ``compile_mode``: as `ReducingProgram`'s."""

    def __init__(
        self,
        backbone: keras.Model,
        methods: tuple[str, ...],
        discard_ratio: float,
        rollout: tuple[str, float] = ("mean", 0.0),
        *,
        pixels: tuple | None = None,
        compile_mode: str | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        unknown = sorted(set(methods) - set(METHODS))
        if unknown:
            raise ValueError(f"unknown attribution methods {', '.join(unknown)}; known: {', '.join(METHODS)}")
        refusal = backbone.spec.transformer_attribution_refusal if "transformer_attribution" in methods else None
        if refusal:
            raise ValueError(f"transformer_attribution does not apply to {backbone.name}: {refusal}")
        self.backbone, self.methods, self.discard_ratio, self.rollout = backbone, tuple(methods), discard_ratio, rollout
        self.pixels = pixels
        compile_for_backend(self, compile_mode)

    def _offset_shapes(self, batch) -> list[tuple]:
        """Zeros added to each block's attention, the pooling query's, then the last block's input tokens."""
        s = self.backbone.spec
        n = s.num_tokens
        shapes = [(batch, s.num_heads, n, n)] * s.depth
        if s.has_pool_query:
            shapes.append((batch, s.num_heads, 1, n))
        return shapes + [(batch, n, s.embed_dim)]

    def _gradients(self, images, targets, concepts):
        spec = self.backbone.spec
        depth = spec.depth
        offsets = [keras.ops.zeros(shape) for shape in self._offset_shapes(keras.ops.shape(images)[0])]

        def forward(offsets):
            seen, inputs = {}, {}

            def probe(kind, block, tensor):
                if kind == "input":  # read by the relevance propagation, not differentiated
                    inputs[block] = tensor
                    return tensor
                if kind == "attention":
                    index = depth if block == "pool" else block
                elif block == depth - 1:  # the last block's input tokens (Grad-CAM's activations)
                    index = len(offsets) - 1
                else:
                    return tensor
                seen[index] = tensor
                return tensor + offsets[index]

            out = self.backbone(images, probe=probe)
            score, target = target_scores(out, targets, concepts, spec.has_classifier)
            aux = {"seen": [seen[i] for i in range(len(offsets))], "score": score, "target": target}
            aux.update(inputs=[inputs[i] for i in range(depth)], features=out["features"])
            return keras.ops.sum(score), aux

        aux, gradients = value_and_offset_gradients(forward, offsets)
        return aux, gradients

    def call(self, inputs):
        images = inputs["images"]
        if self.pixels is not None:
            images = normalize_pixels(images, *self.pixels)
        spec = self.backbone.spec
        p, grid = spec.num_prefix_tokens, (spec.grid_size, spec.grid_size)
        aux, gradients = self._gradients(images, inputs["targets"], inputs["concepts"])
        seen, score, target = aux["seen"], aux["score"], aux["target"]
        attentions, attention_gradients = seen[:-1], gradients[:-1]
        rows = {
            "grad_rollout": lambda: grad_rollout_row(attentions, attention_gradients, self.discard_ratio, p),
            "gae": lambda: gae_row(attentions, attention_gradients),
            "rollout": lambda: rollout_cls_row(attentions, *self.rollout, num_prefix=p),
            "cls": lambda: cls_attention_row(attentions),
            "transformer_attribution": lambda: transformer_attribution_row(
                self.backbone, aux["inputs"], attentions, attention_gradients, aux["features"], target
            ),
        }
        maps = {name: patch_map(rows[name](), p, grid) for name in self.methods if name in rows}
        if "gradcam" in self.methods:
            maps["gradcam"] = gradcam_map(seen[-1], gradients[-1], p, grid)
        return {"maps": maps, "score": score, "target": target}


class ScoringProgram(keras.Model):
    """The target scores of a batch without gradients (the faithfulness curves' forward passes):
    ``"score"`` and ``"target"`` as `AttributionProgram`'s, ``"probability"`` (the target's
    softmax probability; NaN for an embedding target) and ``"top1"`` (-1 without a classifier),
    and ``"embedding"``, the pooled vector the embedding targets compare."""

    def __init__(self, backbone: keras.Model, *, pixels: tuple | None = None, compile_mode: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.backbone, self.pixels = backbone, pixels
        compile_for_backend(self, compile_mode)

    def call(self, inputs):
        images = inputs["images"]
        if self.pixels is not None:
            images = normalize_pixels(images, *self.pixels)
        spec = self.backbone.spec
        out = self.backbone(images)
        targets = inputs["targets"]
        score, target = target_scores(out, targets, inputs["concepts"], spec.has_classifier)
        result = {"score": score, "target": target}
        if spec.has_classifier:
            probabilities = keras.ops.softmax(out["logits"], axis=-1)
            result["probability"] = keras.ops.sum(probabilities * keras.ops.one_hot(target, probabilities.shape[-1]), axis=-1)
            result["top1"] = keras.ops.cast(keras.ops.argmax(out["logits"], axis=-1), target.dtype)
        else:
            result["probability"] = keras.ops.full_like(score, float("nan"))
            result["top1"] = keras.ops.full_like(target, -1)
        result["embedding"] = out["embedding"] if "embedding" in out else out["features"]
        return result
