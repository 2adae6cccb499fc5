"""The public entry point: `load_model` and the `ProbeModel` it returns."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import keras
import numpy as np

from .compiled import ForwardProgram, ReducingProgram, compile_for_backend
from .data.preprocess import Preprocess, crop, default_preprocess, normalize
from .metrics.attention import AttentionReducer
from .metrics.representations import RepresentationReducer
from .models.spec import ViTSpec, get_spec
from .models.vit import VisionTransformer, init_random
from .weights.loader import load_weights

PRECISIONS = ("float32", "bfloat16")


@dataclass
class ForwardOutput:
    attentions: list[np.ndarray]  # one (B, heads, N, N) per block
    logits: np.ndarray | None  # (B, classes); a distilled DeiT: the mean of its two heads
    head_logits: list[np.ndarray] | None  # each head's logits (two for a distilled DeiT)
    block_outputs: list[np.ndarray] | None = None  # one (B, N, dim) per block, when asked
    representations: dict[str, np.ndarray] | None = None  # `RepresentationReducer`'s outputs, when asked


@dataclass
class ReducedOutput:
    reductions: dict[str, np.ndarray]  # `AttentionReducer`'s outputs, one row per image
    logits: np.ndarray | None
    representations: dict[str, np.ndarray] | None = None  # `RepresentationReducer`'s outputs, when asked


class ProbeModel:
    """A loaded ViT with its preprocessing and a compiled forward pass returning attentions."""

    def __init__(self, arch: str, spec: ViTSpec, preprocessing: Preprocess, weights: str | None,
                 weights_file: Path | None, precision: str = "float32"):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.arch = arch
        self.spec = spec
        self.preprocessing = preprocessing
        self.weights = weights
        self.weights_file = weights_file
        self.precision = precision
        self.keras_model = VisionTransformer(spec, precision, name=arch.replace(".", "_"))
        compile_for_backend(self.keras_model)
        self._reducing: dict[tuple, ReducingProgram] = {}
        self._forward: dict[int | None, ForwardProgram] = {}

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

    def representation_reducer(self, group_size: int) -> RepresentationReducer:
        """A `RepresentationReducer` for this model's tokens: Gram matrices per group of ``group_size``
        images, token norms, the last block's patch tokens."""
        return RepresentationReducer(self.num_prefix_tokens, group_size)

    def forward_reduced(self, x: np.ndarray, group_size: int | None = None, **settings) -> ReducedOutput:
        """Run the model and `reducer(**settings)` as one compiled program on a preprocessed
        batch: per-image distances, entropies, rollout and CLS maps, not the attention. With
        ``group_size``, `representation_reducer(group_size)` runs in the same program."""
        key = (group_size, *sorted(settings.items()))
        if key not in self._reducing:
            representations = self.representation_reducer(group_size) if group_size else None
            self._reducing[key] = ReducingProgram(self.reducer(**settings), self.keras_model, representations, name="reducing")
        out = self._reducing[key].predict_on_batch(self._checked(x))
        reductions = {name: np.asarray(value) for name, value in out["reductions"].items()}
        return ReducedOutput(reductions, np.asarray(out["logits"]) if "logits" in out else None, _numpy_dict(out.get("representations")))

    def forward(self, x: np.ndarray, block_outputs: bool = False, group_size: int | None = None) -> ForwardOutput:
        """Run the compiled model on a preprocessed batch. ``block_outputs``: also return every
        block's output tokens; ``group_size``: also `representation_reducer(group_size)`'s statistics
        (both run a second compiled program; the default pass leaves the block outputs on the device)."""
        if block_outputs or group_size:
            if group_size not in self._forward:
                representations = self.representation_reducer(group_size) if group_size else None
                self._forward[group_size] = ForwardProgram(self.keras_model, representations, name="forward")
            out = self._forward[group_size].predict_on_batch(self._checked(x))
        else:
            out = self.keras_model.predict_on_batch(self._checked(x))
        attentions = [np.asarray(a) for a in out["attentions"]]
        blocks = [np.asarray(b) for b in out["block_outputs"]] if block_outputs else None
        representations = _numpy_dict(out.get("representations"))
        if "logits" not in out:
            return ForwardOutput(attentions, None, None, blocks, representations)
        heads = [np.asarray(h) for h in out["head_logits"]]
        return ForwardOutput(attentions, np.asarray(out["logits"]), heads, blocks, representations)

    def state(self, name: str) -> np.ndarray:
        """A weight by its timm name, in Keras layout (e.g. ``pos_embed``, ``patch_embed.proj.weight``)."""
        return keras.ops.convert_to_numpy(self.keras_model.weights_by_name[name])


def _numpy_dict(tensors: dict | None) -> dict[str, np.ndarray] | None:
    return None if tensors is None else {name: np.asarray(value) for name, value in tensors.items()}


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
