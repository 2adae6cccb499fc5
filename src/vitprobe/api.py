"""The public entry point: `load_model` and the `ProbeModel` it returns."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import keras
import numpy as np

from .compiled import (
    AttributionProgram,
    ForwardProgram,
    ReducingProgram,
    ScoringProgram,
    attention_kernel_is_fused,
    compile_for_backend,
    final_patch_tokens,
)
from .data.preprocess import Preprocess, crop, default_preprocess, normalize
from .hardware import accelerator, warn_if_slow_bfloat16
from .metrics.attention import AttentionReducer, check_rollout_settings
from .metrics.representations import RepresentationReducer
from .models.spec import ViTSpec, get_spec
from .models.vit import VisionTransformer, init_random
from .weights.loader import load_weights
from .weights.metadata import checkpoint_arch

PRECISIONS = ("float32", "bfloat16")


@dataclass
class ForwardOutput:
    # One (B, heads, N, N) per block; an attention-pooling model (SigLIP) adds its pooling
    # query's (B, heads, 1, N) last.
    attentions: list[np.ndarray]
    logits: np.ndarray | None  # (B, classes); a distilled DeiT: the mean of its two heads
    head_logits: list[np.ndarray] | None  # each head's logits (two for a distilled DeiT)
    block_outputs: list[np.ndarray] | None = None  # one (B, N, dim) per block, when asked
    representations: dict[str, np.ndarray] | None = None  # `RepresentationReducer`'s outputs, when asked
    features: np.ndarray | None = None  # (B, D) pooled representation before any head
    embedding: np.ndarray | None = None  # (B, E) a projection head's output (CLIP's image embedding)


@dataclass
class ReducedOutput:
    reductions: dict[str, np.ndarray]  # `AttentionReducer`'s outputs, one row per image
    logits: np.ndarray | None
    representations: dict[str, np.ndarray] | None = None  # `RepresentationReducer`'s outputs, when asked
    map_features: np.ndarray | None = None  # (k, patches, dim) of the first k images, when asked (`patch_features`)
    map_attention: np.ndarray | None = None  # (k, blocks, heads, N, N) of the first k images, when asked


@dataclass
class Attribution:
    maps: dict[str, np.ndarray]  # method -> (B, grid, grid), `vitprobe.metrics.attribution.METHODS`
    score: np.ndarray  # (B,) the target's score (a logit, or the embedding target's similarity)
    target: np.ndarray  # (B,) the class explained; -1 for an embedding target


@dataclass
class TargetScores:
    score: np.ndarray  # (B,) as `Attribution.score`
    probability: np.ndarray  # (B,) the target class's softmax probability; NaN for an embedding target
    top1: np.ndarray  # (B,) the predicted class; -1 without a classifier head
    target: np.ndarray  # (B,) as `Attribution.target`
    embedding: np.ndarray  # (B, E) the pooled vector an embedding target compares


class ProbeModel:
    """A loaded ViT with its preprocessing and a compiled forward pass returning attentions.

    Made by `load_model`, which also loads the weights; the constructor builds and compiles
    the Keras model with its initial (unloaded) weights.

    Args:
        arch: the architecture's name (a name `vitprobe.get_spec` resolves), used for the Keras model's name.
        spec: the architecture, overrides applied.
        preprocessing: how images become model input (`crop`, `preprocess`).
        weights: the weights source as given (``None`` or ``"random"``: seeded initialisation).
        weights_file: the local file the weights were read from, once loaded.
        precision: ``"float32"`` or ``"bfloat16"`` for the blocks' projections (see `VisionTransformer`).
        compile_mode: how the backend compiles the forward passes (`vitprobe.backends.compile_modes`;
            None: the backend's default).
    """

    def __init__(
        self,
        arch: str,
        spec: ViTSpec,
        preprocessing: Preprocess,
        weights: str | None,
        weights_file: Path | None,
        precision: str = "float32",
        compile_mode: str | None = None,
    ):
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
        self.compile_mode = compile_mode
        self.keras_model = VisionTransformer(spec, precision, name=arch.replace(".", "_"))
        compile_for_backend(self.keras_model, compile_mode)
        self._reducing: dict[tuple, ReducingProgram] = {}
        self._forward: dict[tuple[bool, int | None], ForwardProgram] = {}
        self._attribution: dict[tuple, AttributionProgram] = {}
        self._scoring: dict[bool, ScoringProgram] = {}

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
        """Resize and centre-crop PIL images or uint8 HWC arrays to (B, S, S, 3) uint8.

        Args:
            images: PIL images (any mode) or uint8 (H, W, 3) arrays, of any size.
        """
        return np.stack([crop(image, self.image_size, self.preprocessing) for image in images])

    def preprocess(self, images: Sequence) -> np.ndarray:
        """PIL images or uint8 HWC arrays of any size and mode -> float32 (B, S, S, 3).

        Args:
            images: PIL images (any mode) or uint8 (H, W, 3) arrays, of any size.
        """
        return normalize(self.crop(images), self.preprocessing)

    def _checked(self, x: np.ndarray, program_normalizes: bool = False) -> np.ndarray:
        """A batch for a compiled program, its shape checked: float32 images as given; uint8 crops
        normalised here, or left to the program (``program_normalizes``)."""
        x = np.asarray(x)
        if x.dtype == np.uint8 and not program_normalizes:
            x = normalize(x, self.preprocessing)
        elif x.dtype != np.uint8:
            x = x.astype(np.float32, copy=False)
        expected = (self.image_size, self.image_size, 3)
        if x.ndim != 4 or x.shape[1:] != expected:
            raise ValueError(f"{self.arch}: expected input (B, {', '.join(map(str, expected))}), got {x.shape}")
        return x

    def reducer(self, **settings) -> AttentionReducer:
        """An `AttentionReducer` for this model's tokens.

        Args:
            **settings: ``renormalize``, ``head_fusion``, ``discard_ratio`` (see `AttentionReducer`).
        """
        return AttentionReducer(self.num_prefix_tokens, self.grid_size, self.patch_size, **settings)

    def uses_fused_kernel(self, attention_kernel: str, reducer: AttentionReducer) -> bool:
        """`attention_kernel_is_fused` for this model: the fused kernel also needs a class token, no
        attention bias and no pooling query (`ViTSpec.supports_fused_attention`); ``"auto"``
        falls back to the unfused path where it does not apply."""
        if not self.spec.supports_fused_attention:
            if attention_kernel == "fused":
                raise ValueError(
                    f"{self.arch}: attention_kernel 'fused' needs a class token, no relative position bias "
                    "and no attention-pooling head; use 'auto' or 'unfused'"
                )
            attention_kernel = "unfused" if attention_kernel == "auto" else attention_kernel
        return attention_kernel_is_fused(attention_kernel, reducer)

    def representation_reducer(self, group_size: int | None = None) -> RepresentationReducer:
        """A `RepresentationReducer` for this model's tokens: every block's token norms and, with a
        ``group_size``, the Gram matrices per group of that many images.

        Args:
            group_size: images per CKA group; None computes the token norms only.
        """
        return RepresentationReducer(self.num_prefix_tokens, group_size)

    def forward_reduced(
        self,
        x: np.ndarray,
        attention_kernel: str = "auto",
        representations: bool = True,
        group_size: int | None = None,
        map_images: int = 0,
        **settings,
    ) -> ReducedOutput:
        """Run the model and `reducer(**settings)` as one compiled program on a preprocessed
        batch: per-image distances, entropies, rollout and CLS maps, not the attention.

        Args:
            x: a preprocessed float32 batch (B, S, S, 3), as `preprocess` returns, or uint8 crops
                (B, S, S, 3), as `crop` returns: where a GPU runs the program it normalises them
                itself (`vitprobe.compiled.normalize_pixels`: a quarter of the bytes to the device,
                no work on the host), on a CPU the host does (numpy is faster there than the
                program's table lookup); the same values either way.
            attention_kernel: ``"unfused"`` (softmax probabilities, then the reducer), ``"fused"``
                (the Pallas kernel that never materialises them: jax backend, mean head fusion, no
                discarding; in Pallas' interpreter on a CPU, for tests) or ``"auto"`` (fused where it
                applies and a GPU runs it, else unfused).
            representations: run `representation_reducer(group_size)` in the same program (its
                token norms; with a group size, the Gram matrices of its groups too).
            group_size: images per CKA group (with ``representations``).
            map_images: also return the first this many images' patch features (as `patch_features`)
                and every block's attention (as `forward`), from the same program.
            **settings: the `AttentionReducer` settings; each distinct set is compiled once.
        """
        reducer = self.reducer(**settings)
        fused = self.uses_fused_kernel(attention_kernel, reducer)
        x = self._checked(x, program_normalizes=accelerator())
        pixels = x.dtype == np.uint8
        key = (fused, representations, group_size, pixels, map_images, *sorted(settings.items()))
        if key not in self._reducing:
            interpret = fused and not accelerator()
            self._reducing[key] = ReducingProgram(
                reducer,
                self.keras_model,
                self.representation_reducer(group_size) if representations else None,
                fused=fused,
                interpret=interpret,
                pixels=(self.preprocessing.mean, self.preprocessing.std) if pixels else None,
                compile_mode=self.compile_mode,
                map_images=map_images,
                name="reducing",
            )
        out = self._reducing[key].predict_on_batch(x)
        reductions = {name: np.asarray(value) for name, value in out["reductions"].items()}
        optional = {key: np.asarray(out[key]) if key in out else None for key in ("logits", "map_features", "map_attention")}
        return ReducedOutput(
            reductions,
            optional["logits"],
            _numpy_dict(out.get("representations")),
            optional["map_features"],
            optional["map_attention"],
        )

    def forward(
        self, x: np.ndarray, block_outputs: bool = False, representations: bool = False, group_size: int | None = None
    ) -> ForwardOutput:
        """Run the compiled model on a preprocessed batch; returns every block's attention and the logits.

        Args:
            x: a preprocessed float32 batch (B, S, S, 3), as `preprocess` returns, or uint8 crops
                (B, S, S, 3), as `crop` returns (normalised on the host).
            block_outputs: also return every block's output tokens.
            representations: also return `representation_reducer(group_size)`'s statistics (token
                norms; with a ``group_size`` the Gram matrices too). These and ``block_outputs`` run a
                second compiled program: the default pass leaves the block outputs on the device.
            group_size: images per CKA group; implies ``representations``.
        """
        representations = representations or group_size is not None
        if block_outputs or representations:
            key = (representations, group_size)
            if key not in self._forward:
                reducer = self.representation_reducer(group_size) if representations else None
                self._forward[key] = ForwardProgram(self.keras_model, reducer, name="forward")
            out = self._forward[key].predict_on_batch(self._checked(x))
        else:
            out = self.keras_model.predict_on_batch(self._checked(x))
        attentions = [np.asarray(a) for a in out["attentions"]]
        blocks = [np.asarray(b) for b in out["block_outputs"]] if block_outputs else None
        representations = _numpy_dict(out.get("representations"))
        optional = {key: np.asarray(out[key]) if key in out else None for key in ("logits", "features", "embedding")}
        head_logits = [np.asarray(h) for h in out["head_logits"]] if "head_logits" in out else None
        return ForwardOutput(
            attentions, optional["logits"], head_logits, blocks, representations, optional["features"], optional["embedding"]
        )

    def _target_inputs(self, x: np.ndarray, targets, concepts) -> dict:
        batch = len(x)
        targets = np.full(batch, -1, np.int32) if targets is None else np.asarray(targets, np.int32).reshape(batch)
        if self.spec.has_classifier:
            concepts = np.zeros((batch, 1), np.float32)
        elif concepts is None:
            concepts = np.zeros((batch, self.embedding_dim), np.float32)
        return {"images": x, "targets": targets, "concepts": np.asarray(concepts, np.float32)}

    @property
    def embedding_dim(self) -> int:
        """Length of the pooled vector an embedding target compares (CLIP: its projection's)."""
        return self.spec.num_classes if self.spec.head_is_projection else self.spec.embed_dim

    def attribute(
        self,
        x: np.ndarray,
        targets=None,
        concepts=None,
        methods: Sequence[str] = ("grad_rollout", "gae", "gradcam", "rollout", "cls"),
        discard_ratio: float = 0.9,
        head_fusion: str = "mean",
        rollout_discard_ratio: float = 0.0,
    ) -> Attribution:
        """Class-specific attribution maps (`vitprobe.metrics.attribution`) of a batch, in one
        compiled forward and backward pass.

        Args:
            x: a preprocessed float32 batch (B, S, S, 3) or uint8 crops, as `forward_reduced` takes.
            targets: (B,) class indices to explain; negative or None: the predicted class. Ignored
                without a classifier head.
            concepts: without a classifier head, (B, `embedding_dim`) concept vectors the score
                compares the embedding with (a zero row or None: the image's own embedding; see
                `vitprobe.metrics.attribution.target_scores`).
            methods: which maps, of `vitprobe.metrics.attribution.METHODS` less ``random``.
            discard_ratio: the gradient rollout's discarded fraction, in [0, 1).
            head_fusion, rollout_discard_ratio: the plain rollout baseline's settings.
        """
        check_rollout_settings(head_fusion, rollout_discard_ratio)
        check_rollout_settings("mean", discard_ratio)
        x = self._checked(x, program_normalizes=accelerator())
        pixels = x.dtype == np.uint8
        key = (tuple(methods), discard_ratio, head_fusion, rollout_discard_ratio, pixels)
        if key not in self._attribution:
            self._attribution[key] = AttributionProgram(
                self.keras_model,
                tuple(methods),
                discard_ratio,
                (head_fusion, rollout_discard_ratio),
                pixels=(self.preprocessing.mean, self.preprocessing.std) if pixels else None,
                compile_mode=self.compile_mode,
                name="attribution",
            )
        out = self._attribution[key].predict_on_batch(self._target_inputs(x, targets, concepts))
        maps = {name: np.asarray(value) for name, value in out["maps"].items()}
        return Attribution(maps, np.asarray(out["score"]), np.asarray(out["target"]))

    def target_scores(self, x: np.ndarray, targets=None, concepts=None) -> TargetScores:
        """The target scores of a batch, forward only (see `attribute` for the arguments)."""
        x = self._checked(x, program_normalizes=accelerator())
        pixels = x.dtype == np.uint8
        if pixels not in self._scoring:
            self._scoring[pixels] = ScoringProgram(
                self.keras_model,
                pixels=(self.preprocessing.mean, self.preprocessing.std) if pixels else None,
                compile_mode=self.compile_mode,
                name="scoring",
            )
        out = {
            k: np.asarray(v) for k, v in self._scoring[pixels].predict_on_batch(self._target_inputs(x, targets, concepts)).items()
        }
        return TargetScores(out["score"], out["probability"], out["top1"], out["target"], out["embedding"])

    def patch_features(self, x: np.ndarray) -> np.ndarray:
        """(B, patches, dim) the last block's patch tokens after the model's final LayerNorm, where
        it has one (what timm's ``forward_features`` returns, less the prefix tokens; BEiT and
        EVA-02 have none and return the last block's output): the features the DINOv2 PCA
        visualisation reads.

        Args:
            x: a preprocessed float32 batch (B, S, S, 3), as `preprocess` returns, or uint8 crops.
        """
        return self.final_patch_tokens(self.forward(x, block_outputs=True).block_outputs[-1])

    def final_patch_tokens(self, last_block_output: np.ndarray) -> np.ndarray:
        """`patch_features` from the last block's (B, N, dim) output tokens (`compiled.final_patch_tokens`)."""
        return np.asarray(keras.ops.convert_to_numpy(final_patch_tokens(self.keras_model, last_block_output)))

    @property
    def has_final_norm(self) -> bool:
        """Whether `patch_features` are normed by a final LayerNorm (timm's ``norm``)."""
        return self.keras_model.norm is not None

    def state(self, name: str) -> np.ndarray:
        """A weight by its timm name, in Keras layout.

        Args:
            name: a timm state-dict name, e.g. ``pos_embed``, ``patch_embed.proj.weight``.
        """
        return keras.ops.convert_to_numpy(self.keras_model.weights_by_name[name])


def _numpy_dict(tensors: dict | None) -> dict[str, np.ndarray] | None:
    return None if tensors is None else {name: np.asarray(value) for name, value in tensors.items()}


def load_model(
    arch: str | None,
    weights: str | None = None,
    *,
    image_size: int | None = None,
    preprocess: Preprocess | dict | None = None,
    seed: int = 0,
    precision: str = "float32",
    compile_mode: str | None = None,
    **spec_overrides,
) -> ProbeModel:
    """Build ``arch`` and load ``weights``.

    Args:
        arch: a timm architecture name, a name `vitprobe.get_spec` resolves (``deit_base_patch16_224``).
        weights: ``None`` or ``"random"`` (seeded initialisation), ``hf-hub:timm/<name>``, an
            ``https://`` URL to an ``.npz``, ``package:<module>/<file>``, or a local
            ``.safetensors`` / ``.npz`` / ``.onnx`` file.
        image_size: input side in pixels, if not the architecture's; the checkpoint's position
            grid is resampled to it.
        preprocess: a `Preprocess`, or a dict overriding fields of the architecture's default
            preprocessing (that of its published weights, `vitprobe.models.presets`).
        seed: seed of the random initialisation (``weights`` None or ``"random"``).
        precision: ``"float32"``, or ``"bfloat16"`` to run the blocks' projections in bfloat16
            (see `VisionTransformer`).
        compile_mode: how the backend compiles the model (``"graph"`` or ``"xla"`` on tensorflow;
            see `vitprobe.backends.compile_modes`); None: the backend's default.
        **spec_overrides: `ViTSpec` fields to change (``depth=2``, ``num_classes=0``...).
    """
    if arch is None:  # the checkpoint names it (a config.json beside a local file)
        arch, described = checkpoint_arch(str(weights))
        spec_overrides = {**described, **spec_overrides}
    if image_size:
        spec_overrides["image_size"] = image_size
    spec = get_spec(arch, **spec_overrides)
    base = default_preprocess(arch)
    if isinstance(preprocess, dict):
        preprocess = Preprocess(**{**base.as_dict(), **preprocess})
    model = ProbeModel(arch, spec, preprocess or base, weights, None, precision, compile_mode)
    if weights in (None, "random"):
        init_random(model.keras_model, seed)
    else:
        model.weights_file = load_weights(model.keras_model, str(weights))
    return model
