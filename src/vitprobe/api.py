"""The public entry point: `load_model` and the `ProbeModel` it returns."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import keras
import numpy as np

from .compiled import ReducingProgram, attention_kernel_is_fused, compile_for_backend
from .data.preprocess import Preprocess, crop, default_preprocess, normalize
from .hardware import accelerator, warn_if_slow_bfloat16
from .metrics.attention import AttentionReducer
from .models.spec import ViTSpec, get_spec
from .models.vit import VisionTransformer, init_random
from .weights.loader import load_weights

PRECISIONS = ("float32", "bfloat16")


@dataclass
class ForwardOutput:
    # One (B, heads, N, N) per block; an attention-pooling model (SigLIP) adds its pooling
    # query's (B, heads, 1, N) last.
    attentions: list[np.ndarray]
    logits: np.ndarray | None  # (B, classes); a distilled DeiT: the mean of its two heads
    head_logits: list[np.ndarray] | None  # each head's logits (two for a distilled DeiT)
    features: np.ndarray | None = None  # (B, D) pooled representation before any head
    embedding: np.ndarray | None = None  # (B, E) a projection head's output (CLIP's image embedding)


@dataclass
class ReducedOutput:
    reductions: dict[str, np.ndarray]  # `AttentionReducer`'s outputs, one row per image
    logits: np.ndarray | None


class ProbeModel:
    """A loaded ViT with its preprocessing and a compiled forward pass returning attentions."""

    def __init__(self, arch: str, spec: ViTSpec, preprocessing: Preprocess, weights: str | None,
                 weights_file: Path | None, precision: str = "float32"):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if precision == "bfloat16":
            warn_if_slow_bfloat16()
        self.arch = arch
        self.spec = spec
        self.preprocessing = preprocessing
        self.weights = weights
        self.weights_file = weights_file
        self.precision = precision
        self.keras_model = VisionTransformer(spec, precision, name=arch.replace(".", "_"))
        compile_for_backend(self.keras_model)
        self._reducing: dict[tuple, ReducingProgram] = {}

    @property
    def patch_size(self) -> int:
        return self.spec.patch_size

    @property
    def image_size(self) -> int:
        return self.spec.image_size

    @property
    def grid_size(self) -> int:
        return self.spec.grid_size

    @property
    def num_prefix_tokens(self) -> int:
        return self.spec.num_prefix_tokens

    def crop(self, images: Sequence) -> np.ndarray:
        """Resize and centre-crop PIL images or uint8 HWC arrays to (B, S, S, 3) uint8."""
        return np.stack([crop(image, self.image_size, self.preprocessing) for image in images])

    def preprocess(self, images: Sequence) -> np.ndarray:
        """PIL images or uint8 HWC arrays of any size and mode -> float32 (B, S, S, 3)."""
        return normalize(self.crop(images), self.preprocessing)

    def _checked(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        expected = (self.image_size, self.image_size, 3)
        if x.ndim != 4 or x.shape[1:] != expected:
            raise ValueError(f"{self.arch}: expected input (B, {', '.join(map(str, expected))}), got {x.shape}")
        return x

    def reducer(self, **settings) -> AttentionReducer:
        """An `AttentionReducer` for this model's tokens (settings: renormalize, head_fusion, discard_ratio)."""
        return AttentionReducer(self.num_prefix_tokens, self.grid_size, self.patch_size, **settings)

    def uses_fused_kernel(self, attention_kernel: str, reducer: AttentionReducer) -> bool:
        """`attention_kernel_is_fused` for this model: the fused kernel also needs a class token, no
        attention bias and no pooling query (`ViTSpec.supports_fused_attention`); ``"auto"``
        falls back to the unfused path where it does not apply."""
        if not self.spec.supports_fused_attention:
            if attention_kernel == "fused":
                raise ValueError(f"{self.arch}: attention_kernel 'fused' needs a class token, no relative position bias "
                                 "and no attention-pooling head; use 'auto' or 'unfused'")
            attention_kernel = "unfused" if attention_kernel == "auto" else attention_kernel
        return attention_kernel_is_fused(attention_kernel, reducer)

    def forward_reduced(self, x: np.ndarray, attention_kernel: str = "auto", **settings) -> ReducedOutput:
        """Run the model and `reducer(**settings)` as one compiled program on a preprocessed
        batch: per-image distances, entropies, rollout and CLS maps, not the attention.

        ``attention_kernel``: ``"unfused"`` (softmax probabilities, then the reducer), ``"fused"``
        (the Pallas kernel that never materialises them: jax backend, mean head fusion, no
        discarding; in Pallas' interpreter on a CPU, for tests) or ``"auto"`` (fused where it
        applies and a GPU runs it, else unfused)."""
        reducer = self.reducer(**settings)
        fused = self.uses_fused_kernel(attention_kernel, reducer)
        key = (fused, *sorted(settings.items()))
        if key not in self._reducing:
            interpret = fused and not accelerator()
            self._reducing[key] = ReducingProgram(reducer, self.keras_model, fused=fused, interpret=interpret, name="reducing")
        out = self._reducing[key].predict_on_batch(self._checked(x))
        reductions = {name: np.asarray(value) for name, value in out["reductions"].items()}
        return ReducedOutput(reductions, np.asarray(out["logits"]) if "logits" in out else None)

    def forward(self, x: np.ndarray) -> ForwardOutput:
        """Run the compiled model on a preprocessed batch."""
        out = self.keras_model.predict_on_batch(self._checked(x))
        attentions = [np.asarray(a) for a in out["attentions"]]
        optional = {key: np.asarray(out[key]) if key in out else None for key in ("logits", "features", "embedding")}
        head_logits = [np.asarray(h) for h in out["head_logits"]] if "head_logits" in out else None
        return ForwardOutput(attentions, optional["logits"], head_logits, optional["features"], optional["embedding"])

    def state(self, name: str) -> np.ndarray:
        """A weight by its timm name, in Keras layout (e.g. ``pos_embed``, ``patch_embed.proj.weight``)."""
        return keras.ops.convert_to_numpy(self.keras_model.weights_by_name[name])


def load_model(
    arch: str,
    weights: str | None = None,
    *,
    image_size: int | None = None,
    preprocess: Preprocess | dict | None = None,
    seed: int = 0,
    precision: str = "float32",
    **spec_overrides,
) -> ProbeModel:
    """Build ``arch`` (a timm name, see `vitprobe.models.SPECS`) and load ``weights``.

    ``weights``: ``None`` or ``"random"`` (seeded initialisation), ``hf-hub:timm/<name>``,
    an ``https://`` URL to an ``.npz``, or a local ``.safetensors`` / ``.npz`` / ``.onnx`` file.
    ``preprocess`` overrides fields of the family's default preprocessing; other keyword
    arguments override `ViTSpec` fields (``depth=2``, ``num_classes=0``...). ``precision``
    ``"bfloat16"`` runs the blocks' projections in bfloat16 (see `VisionTransformer`).
    """
    if image_size:
        spec_overrides["image_size"] = image_size
    spec = get_spec(arch, **spec_overrides)
    base = default_preprocess(arch)
    if isinstance(preprocess, dict):
        preprocess = Preprocess(**{**base.as_dict(), **preprocess})
    model = ProbeModel(arch, spec, preprocess or base, weights, None, precision)
    if weights in (None, "random"):
        init_random(model.keras_model, seed)
    else:
        model.weights_file = load_weights(model.keras_model, str(weights))
    return model
